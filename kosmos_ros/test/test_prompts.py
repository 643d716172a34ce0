# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Prompt templates, control-token neutralisation, regions and prompt limits."""

import math

import pytest

from kosmos_ros.datatypes import PixelBox, Query, Task
from kosmos_ros.errors import PromptError, RegionError
from kosmos_ros.prompts import build_prompt, neutralize, TAG_TOKENS

W, H = 451, 300


def test_templates_of_every_task():
    assert build_prompt(Query(Task.CAPTION), W, H) == '<grounding>An image of'
    assert build_prompt(Query(Task.DETAILED_CAPTION, 'ignored'), W, H) == \
        '<grounding>Describe this image in detail:'
    assert build_prompt(Query(Task.FIND, '  the red   cup '), W, H) == \
        '<grounding><phrase> the red cup</phrase>'
    assert build_prompt(Query(Task.QUESTION, 'What is [this character]?'), W, H) == \
        '<grounding> Question: What is<phrase> this character</phrase>? Answer:'
    assert build_prompt(Query(Task.RAW, '<grounding> An image of'), W, H) == \
        '<grounding> An image of'
    assert Task.parse('find') is Task.FIND and Task.parse(' Detailed caption') is \
        Task.DETAILED_CAPTION and Task.parse(3) is Task.QUESTION and Task.parse('4') is Task.RAW
    with pytest.raises(ValueError, match='unknown task'):
        Task.parse('segment')
    with pytest.raises(ValueError, match='unknown task number 9'):
        Task.parse(9)


def test_question_region_gives_the_reference_location_tokens(engine, reference, photos):
    """The model card's referring question yields the processor's own input ids."""
    processor, _ = reference
    image = photos['chelsea']
    h, w = image.shape[:2]
    box = (0.04182509505703422, 0.39244186046511625, 0.38783269961977185, 1.0)
    expected = processor(
        text='<grounding> Question: What is<phrase> this character</phrase>? Answer:',
        images=image, bboxes=[box], return_tensors='pt')['input_ids'][0].tolist()
    region = PixelBox(box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    ids, _ = engine.prepare(Query(Task.QUESTION, 'What is [this character]?', (region,)), w, h)
    assert ids == expected
    tokens = engine.tokenizer.convert_ids_to_tokens(ids)
    assert '<object>' in tokens and '</object>' in tokens


@pytest.mark.parametrize('task', [Task.CAPTION, Task.DETAILED_CAPTION, Task.FIND,
                                  Task.QUESTION, Task.RAW])
def test_prompt_ids_equal_the_reference_processor(engine, reference, photos, task):
    processor, _ = reference
    image = photos['coffee']
    h, w = image.shape[:2]
    prompts = {Task.FIND: 'a cup of coffee', Task.QUESTION: 'What is on the table?',
               Task.RAW: '<grounding> A photo of'}
    query = Query(task, prompts.get(task, ''))
    text = build_prompt(query, w, h)
    expected = processor(text=text, images=image, return_tensors='pt')['input_ids'][0].tolist()
    assert engine.prepare(query, w, h)[0] == expected


INJECTED = TAG_TOKENS + ('<patch_index_0001>', '<patch_index_1023>', '<s>', '</s>')


@pytest.mark.parametrize('token', INJECTED)
def test_user_text_cannot_inject_control_tokens(engine, token):
    template_ids = set(engine.prepare(Query(Task.FIND, 'cup'), W, H)[0])
    for task, text in ((Task.FIND, f'the {token} cup'), (Task.QUESTION, f'is {token} here?')):
        ids, _ = engine.prepare(Query(task, text), W, H)
        added = {i for i in ids if i >= 64000} - template_ids
        assert not added, (token, engine.tokenizer.convert_ids_to_tokens(sorted(added)))
        assert ids.count(0) == 1  # only the template's BOS
    assert '<' not in neutralize(f'a {token} b') and '>' not in neutralize(f'a {token} b')


def test_neutralize_rules():
    assert neutralize('a<b>c') == 'a\u2039b\u203ac'
    assert neutralize('a\x00b\x1bc\td\ne') == 'a b c\td\ne'
    with pytest.raises(PromptError, match='not valid Unicode'):
        neutralize('bad \udcff byte')


@pytest.mark.parametrize('task', [Task.FIND, Task.QUESTION, Task.RAW])
@pytest.mark.parametrize('text', ['', '   ', '\n\t'])
def test_empty_prompts_are_refused(task, text):
    with pytest.raises(PromptError, match='empty prompt'):
        build_prompt(Query(task, text), W, H)


def test_over_long_prompts_are_refused_with_the_limit(engine):
    with pytest.raises(PromptError, match='limit of 256 tokens'):
        engine.prepare(Query(Task.FIND, 'cup ' * 25000), W, H)
    with pytest.raises(PromptError, match=r'is 3\d\d tokens; the limit is 256 tokens'):
        engine.prepare(Query(Task.QUESTION, 'why ' * 300 + '?'), W, H)
    with pytest.raises(PromptError, match='max_new_tokens must be at least 1'):
        engine.prepare(Query(Task.CAPTION, max_new_tokens=0), W, H)
    with pytest.raises(PromptError, match='exceeds the model limit of 2048'):
        engine.prepare(Query(Task.CAPTION, max_new_tokens=5000), W, H)


@pytest.mark.parametrize('question, message', [
    ('What is [this?', 'unbalanced'), ('What is this]?', 'unbalanced'),
    ('What [is [this]]?', 'unbalanced'), ('What is [ ]?', r'empty \[\] phrase'),
])
def test_malformed_question_brackets(question, message):
    with pytest.raises(PromptError, match=message):
        build_prompt(Query(Task.QUESTION, question), W, H)


@pytest.mark.parametrize('region, message', [
    (PixelBox(math.nan, 0, 10, 10), 'not a finite number'),
    (PixelBox(0, 0, math.inf, 10), 'not a finite number'),
    (PixelBox(10, 10, 5, 20), 'degenerate'),
    (PixelBox(10, 10, 20, 10), 'degenerate'),
    (PixelBox(-5, 0, 10, 10), 'outside the 451x300 image'),
    (PixelBox(400, 250, 460, 290), 'outside the 451x300 image'),
    (PixelBox(0, 0, 10, 301), 'outside'),
])
def test_bad_regions(region, message):
    with pytest.raises(RegionError, match=message):
        build_prompt(Query(Task.QUESTION, 'What is [this]?', (region,)), W, H)


def test_region_binding_rules():
    box = PixelBox(10, 20, 110, 220)
    with pytest.raises(RegionError, match='2 regions given but the prompt has 1'):
        build_prompt(Query(Task.QUESTION, 'What is [this]?', (box, box)), W, H)
    with pytest.raises(RegionError, match='0 <phrase> spans'):
        build_prompt(Query(Task.RAW, '<grounding> An image of', (box,)), W, H)
    with pytest.raises(RegionError, match='find takes no regions'):
        build_prompt(Query(Task.FIND, 'cup', (box,)), W, H)
    with pytest.raises(RegionError, match='caption takes no regions'):
        build_prompt(Query(Task.CAPTION, '', (box,)), W, H)
    two = build_prompt(Query(Task.QUESTION, 'Is [this] left of [that]?', (box,)), W, H)
    assert two.count('<object>') == 1 and two.count('<phrase>') == 2
    raw = build_prompt(Query(Task.RAW, '<grounding><phrase> it</phrase> is', (box,)), W, H)
    assert raw.startswith('<grounding><phrase> it</phrase><object> <patch_index_')
