# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Prompt templates, control-token neutralisation, regions and prompt limits."""

import math
import re

from hypothesis import given, HealthCheck, settings
from hypothesis import strategies as st
import pytest

from kosmos_ros.datatypes import PixelBox, Query, Task
from kosmos_ros.errors import PromptError, RegionError
from kosmos_ros.model.prompts import build_prompt, neutralize, TAG_TOKENS

W, H = 451, 300


@pytest.mark.fast
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


LOOK_ALIKES = ('<', '>', '\uff1c', '\uff1e', '\ufe64', '\ufe65', '\u2039', '\u203a',
               '\u3008', '\u3009', '\u226e', '/')
NAMES = ('s', '/s', 'pad', 'unk', 'mask', 'image', '/image', 'grounding', 'phrase', '/phrase',
         'object', 'patch_index_0044', 'delimiter_of_multi_objects/')
# Text made of bracket look-alikes, token names, rare and control characters, and anything.
HOSTILE = st.lists(st.one_of(st.sampled_from(LOOK_ALIKES), st.sampled_from(NAMES),
                             st.sampled_from(('\U000e0000', '\u227a', '\x00', '\t', ' ', 'a')),
                             st.text(max_size=3)), max_size=12).map(''.join)


def _text_part(engine, prompt):
    """Token ids of a built prompt as the tokenizer gives them (after the image block)."""
    ids = engine.tokenizer(f'{engine.tokenizer.bos_token}{engine.tokens.image_prefix} {prompt}',
                           add_special_tokens=False)['input_ids']
    return ids[engine.num_image_tokens + 3:]


@pytest.mark.parametrize('text', ['\uff1cs\uff1e a cup \ufe64/s\ufe65', '\uff1cpad\uff1e',
                                  '\uff1cmask\uff1e', '\ufe64unk\ufe65 x', 'a \U000e0000 b'])
def test_look_alike_brackets_yield_no_special_token(engine, text):
    """Fullwidth and small-form brackets read as ASCII ones by the tokenizer: neutralised."""
    for task, prompt in ((Task.FIND, text), (Task.QUESTION, f'is {text} here?')):
        ids = engine.prepare(Query(task, prompt), W, H)[0][engine.num_image_tokens + 3:]
        special = set(ids) & set(engine.tokenizer.all_special_ids)
        assert not special, engine.tokenizer.convert_ids_to_tokens(sorted(special))


@pytest.mark.parametrize('token', ['<s>', '</s>', '<pad>', '<unk>', '<mask>', '<image>'])
@pytest.mark.parametrize('spell', [lambda t: t, lambda t: t.replace('<', '\uff1c').replace(
    '>', '\uff1e'), lambda t: t.replace('<', '\ufe64').replace('>', '\ufe65')])
def test_raw_refuses_structure_tokens_however_spelled(engine, token, spell):
    with pytest.raises(PromptError, match=re.escape(repr(token))):
        engine.prepare(Query(Task.RAW, f'<grounding> a {spell(token)} b'), W, H)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=HOSTILE, task=st.sampled_from([Task.FIND, Task.QUESTION]))
def test_property_user_text_yields_no_control_token(engine, text, task):
    """Whatever the text, FIND and QUESTION prompts hold the template's control tokens only."""
    text = text.replace('[', '(').replace(']', ')')  # brackets bind regions; tested apart
    try:
        prompt = build_prompt(Query(task, text), W, H, engine.tokens.reader)
    except PromptError as exc:
        assert 'empty prompt' in str(exc) or 'not valid Unicode' in str(exc), exc
        return
    ids = _text_part(engine, prompt)
    special = set(ids) & set(engine.tokenizer.all_special_ids)
    assert not special, (text, engine.tokenizer.convert_ids_to_tokens(sorted(special)))
    template = _text_part(engine, build_prompt(Query(task, 'x'), W, H))
    added = [i for i in ids if i >= 64002]
    assert added == [i for i in template if i >= 64002], (
        text, engine.tokenizer.convert_ids_to_tokens(added))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=HOSTILE)
def test_property_raw_prompts_yield_no_structure_token(engine, text):
    """A RAW prompt is refused, or its text yields no image or special token."""
    try:
        prompt = build_prompt(Query(Task.RAW, '<grounding>' + text), W, H, engine.tokens.reader)
    except (PromptError, RegionError):
        return
    special = set(_text_part(engine, prompt)) & (set(engine.tokenizer.all_special_ids) | {
        engine.tokenizer.convert_tokens_to_ids('<image>'), engine.tokens.eoi_id})
    assert not special, (text, engine.tokenizer.convert_ids_to_tokens(sorted(special)))


@pytest.mark.fast
def test_neutralize_rules():
    assert neutralize('a<b>c') == 'a\u2039b\u203ac'
    assert neutralize('a\x00b\x1bc\td\ne') == 'a b c\td\ne'
    with pytest.raises(PromptError, match='not valid Unicode'):
        neutralize('bad \udcff byte')


@pytest.mark.fast
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


@pytest.mark.fast
@pytest.mark.parametrize('question, message', [
    ('What is [this?', 'unbalanced'), ('What is this]?', 'unbalanced'),
    ('What [is [this]]?', 'unbalanced'), ('What is [ ]?', r'empty \[\] phrase'),
])
def test_malformed_question_brackets(question, message):
    with pytest.raises(PromptError, match=message):
        build_prompt(Query(Task.QUESTION, question), W, H)


@pytest.mark.fast
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


@pytest.mark.fast
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
