# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The article's benchmarks: Flickr30k Entities and RefCOCO readers, R@1 and accuracy@0.5.

The readers are checked field by field on small files the tests write in the published
formats: Flickr30k Entities' ``Sentences/*.txt``, ``Annotations/*.xml`` and split files (the
examples of its README among them), lmms-lab's RefCOCO Parquet, MDETR's refexp JSON and JSON
lines. The metrics are checked on hand-made predictions with known answers, and one run of each
benchmark goes through the tiny model, steered to a known box.
"""

import json
import math
import pickle
import subprocess

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_ros.evaluation import benchmark_cli, benchmarks
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation import flickr30k as fl
from kosmos_ros.evaluation import refcoco as rc
from kosmos_ros.evaluation.benchmark_metrics import (box_in_image, hit, iou, phrase_grounding,
                                                     referring_expressions)

from helpers import steer_for  # noqa: I100

ROOT = __import__('pathlib').Path(__file__).resolve().parents[3]
# The README of github.com/BryanPlummer/flickr30k_entities and its examples.
README_SENTENCE = ('[/EN#1/people Two young guys] with [/EN#2/bodyparts shaggy hair] look at '
                   '[/EN#3/bodyparts their hands] while hanging out in [/EN#8/scene the yard] .')
README_XML = '''<annotation>
\t<filename>1000092795.jpg</filename>
\t<size>
\t\t<width>333</width>
\t\t<height>500</height>
\t\t<depth>3</depth>
\t</size>
\t<object>
\t\t<name>1</name>
\t\t<bndbox>
\t\t\t<xmin>159</xmin>
\t\t\t<ymin>125</ymin>
\t\t\t<xmax>219</xmax>
\t\t\t<ymax>335</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox><xmin>1</xmin><ymin>220</ymin><xmax>211</xmax><ymax>473</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox><xmin>276</xmin><ymin>215</ymin><xmax>332</xmax><ymax>337</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>1</name>
\t\t<name>6</name>
\t\t<bndbox><xmin>197</xmin><ymin>110</ymin><xmax>261</xmax><ymax>373</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>10</name>
\t\t<scene>0</scene>
\t\t<nobndbox>1</nobndbox>
\t</object>
\t<object>
\t\t<name>8</name>
\t\t<scene>1</scene>
\t\t<nobndbox>0</nobndbox>
\t</object>
</annotation>
'''
# The steered box: cells 44 and 863 of the 32 x 32 grid, cell centres (x 12 to 31, y 1 to 26).
STEERED_BOX = '<object><patch_index_0044><patch_index_0863></object>'


def steered_box(width, height):
    return (12.5 / 32 * width, 1.5 / 32 * height, 31.5 / 32 * width, 26.5 / 32 * height)


def annotation_xml(width, height, objects):
    """Return an Annotations/<id>.xml: objects are (names, box or None, nobndbox, scene)."""
    parts = [f'<annotation><filename>x.jpg</filename><size><width>{width}</width>'
             f'<height>{height}</height><depth>3</depth></size>']
    for names, box, nobndbox, scene in objects:
        parts.append('<object>' + ''.join(f'<name>{n}</name>' for n in names))
        if box:
            parts.append('<bndbox>' + ''.join(f'<{t}>{v}</{t}>' for t, v in zip(
                ('xmin', 'ymin', 'xmax', 'ymax'), box)) + '</bndbox>')
        else:
            parts.append(f'<nobndbox>{nobndbox}</nobndbox><scene>{scene}</scene>')
        parts.append('</object>')
    return ''.join(parts) + '</annotation>\n'


@pytest.fixture(scope='module')
def flickr(tmp_path_factory, photos):
    """Write a Flickr30k Entities folder of two images: chelsea (a cat) and coffee (a cup)."""
    root = tmp_path_factory.mktemp('flickr30k_entities')
    for name in ('Sentences', 'Annotations', 'flickr30k-images'):
        (root / name).mkdir()
    cat = steered_box(451, 300)
    files = {
        '100': ('chelsea', [
            '[/EN#1/animals A ginger cat] looks at [/EN#2/other/bodyparts its paws] .',
            '[/EN#1/animals The cat] sits in [/EN#3/scene a room] near [/EN#0/notvisual '
            'nothing] .'],
            [(['1'], tuple(round(v) for v in cat), 0, 0),
             (['2', '4'], (10, 10, 60, 60), 0, 0), (['2'], (300, 200, 340, 240), 0, 0),
             (['3'], None, 0, 1)]),
        '200': ('coffee', ['[/EN#5/other A cup] of [/EN#6/other coffee] .'],
                [(['5'], (0, 0, 200, 150), 0, 0), (['6'], (700, 0, 900, 100), 0, 0)]),
    }
    for image_id, (photo, sentences, objects) in files.items():
        rgb = photos[photo]
        cv2.imwrite(str(root / 'flickr30k-images' / f'{image_id}.jpg'),
                    cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        (root / 'Sentences' / f'{image_id}.txt').write_text('\n'.join(sentences) + '\n')
        (root / 'Annotations' / f'{image_id}.xml').write_text(
            annotation_xml(rgb.shape[1], rgb.shape[0], objects))
    (root / 'test.txt').write_text('100\n200\n')
    (root / 'val.txt').write_text('200\n')
    return root


# -- Flickr30k Entities ------------------------------------------------------------------------

def test_a_sentence_reads_as_the_readme_describes_it():
    sentence = fl.parse_sentence(README_SENTENCE)
    assert sentence.text == ('Two young guys with shaggy hair look at their hands while '
                             'hanging out in the yard .')
    got = [(p.text, p.first_word, p.entity_id, p.types) for p in sentence.phrases]
    assert got == [('Two young guys', 0, '1', ('people',)),
                   ('shaggy hair', 4, '2', ('bodyparts',)),
                   ('their hands', 8, '3', ('bodyparts',)), ('the yard', 14, '8', ('scene',))]
    for p in sentence.phrases:
        assert sentence.text[p.start:p.end] == p.text
        assert sentence.text.split()[p.first_word] == p.text.split()[0]
    several = fl.parse_sentence('[/EN#10/other/people A crowd] and [/EN#0/notvisual it] .')
    assert several.phrases[0].types == ('other', 'people')
    assert several.phrases[1].entity_id == '0' and several.text == 'A crowd and it .'


def test_an_annotation_reads_as_the_readme_describes_it(tmp_path):
    path = tmp_path / '1000092795.xml'
    path.write_text(README_XML)
    a = fl.read_annotation(path)
    assert (a.width, a.height, a.depth) == (333, 500, 3)
    assert a.boxes == {'1': [(159, 125, 219, 335), (197, 110, 261, 373)],
                       '4': [(1, 220, 211, 473), (276, 215, 332, 337)],
                       '6': [(197, 110, 261, 373)]}
    assert a.no_box == {'10'} and a.scene == {'8'}


def test_samples_carry_every_box_of_their_chain_and_count_the_rest(flickr):
    data = fl.Flickr30kEntities(flickr)
    samples = list(data.samples('test'))
    got = [(s.image_id, s.sentence_index, s.phrase.text, s.phrase.entity_id, s.phrase.types,
            len(s.boxes)) for s in samples]
    assert got == [('100', 0, 'A ginger cat', '1', ('animals',), 1),
                   ('100', 0, 'its paws', '2', ('other', 'bodyparts'), 2),
                   ('100', 1, 'The cat', '1', ('animals',), 1),
                   ('200', 0, 'A cup', '5', ('other',), 1)]
    paws = samples[1]
    assert paws.boxes == ((10, 10, 60, 60), (300, 200, 340, 240))  # both, unmerged
    assert paws.sentence[paws.phrase.start:paws.phrase.end] == 'its paws'
    assert paws.image == flickr / 'flickr30k-images' / '100.jpg' and paws.image_size == (451, 300)
    assert paws.sample_id == '100/0/22'
    assert data.skipped == {fl.SKIP_NO_BOX: 1, fl.SKIP_NOT_VISUAL: 1, fl.SKIP_OUTSIDE: 1}
    assert [s.phrase.text for s in fl.Flickr30kEntities(flickr).samples('test', limit=2)] == \
        ['A ginger cat', 'its paws']
    assert fl.Flickr30kEntities(flickr).split_ids('val') == ['200']


@pytest.mark.parametrize('line, match', [
    ('[/EN#1/people A man] in [/EN#2/clothing a hat .', 'not closed by'),
    ('A man ] in a hat .', 'closes a phrase that was not opened'),
    ('[EN#1/people A man] .', 'does not open a phrase'),
    ('[/EN#x/people A man] .', 'does not open a phrase'),
    ('[/EN#1/people A [/EN#2/people man]] .', 'do not nest'),
    ('[/EN#1/people A ] .', 'empty word'),
])
def test_a_malformed_sentence_is_an_error_naming_the_line(line, match):
    with pytest.raises(EvaluationError, match=match):
        fl.parse_sentence(line, 'Sentences/1.txt line 3')


@pytest.mark.parametrize('text, match', [
    ('<annotation><size><width>5</width>', 'not well-formed XML'),
    ('<!DOCTYPE a [<!ENTITY x "y">]><annotation/>', 'document type or entities'),
    ('<boxes/>', 'not <annotation>'),
    ('<annotation><object><name>1</name></object></annotation>', '<size> is missing'),
    ('<annotation><size><width>5</width><height>x</height></size></annotation>',
     'not a whole number'),
    ('<annotation><size><width>5</width><height>5</height></size><object><name>1</name>'
     '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax></bndbox></object></annotation>',
     '<ymax> is missing'),
    ('<annotation><size><width>5</width><height>5</height></size><object><bndbox/></object>'
     '</annotation>', r'no <name>'),
    ('<annotation><size><width>5</width><height>5</height></size><object><name>1</name>'
     '</object></annotation>', 'neither <bndbox> nor'),
])
def test_malformed_annotations_are_errors_naming_the_file(tmp_path, text, match):
    path = tmp_path / '7.xml'
    path.write_text(text)
    with pytest.raises(EvaluationError, match=match):
        fl.read_annotation(path)


def test_missing_files_and_folders_are_clear_errors(flickr, tmp_path):
    with pytest.raises(EvaluationError, match='no Sentences or Annotations folder'):
        fl.Flickr30kEntities(tmp_path)
    with pytest.raises(EvaluationError, match='unknown split'):
        fl.Flickr30kEntities(flickr).split_ids('dev')
    with pytest.raises(EvaluationError, match=r'train.txt: no such file'):
        fl.Flickr30kEntities(flickr).split_ids('train')
    with pytest.raises(EvaluationError, match=r'Sentences/300.txt: no such file'):
        fl.Flickr30kEntities(flickr).image_samples('300')
    bad = tmp_path / 'split.txt'
    bad.write_text('100\n../etc/passwd\n')
    with pytest.raises(EvaluationError, match='line 2: .* is not an image id'):
        fl.read_split(bad)


# -- RefCOCO family ------------------------------------------------------------------------------

LMMS_SCHEMA = pa.schema([
    ('question_id', pa.string()),
    ('image', pa.struct([('bytes', pa.binary()), ('path', pa.string())])),
    ('question', pa.string()), ('answer', pa.list_(pa.string())),
    ('segmentation', pa.list_(pa.float32())), ('bbox', pa.list_(pa.float32())),
    ('iscrowd', pa.int8()), ('file_name', pa.string())])


def jpeg_bytes(rgb):
    return cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def write_lmms(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [r.get(name) for r in rows] for name in LMMS_SCHEMA.names}
    pq.write_table(pa.table(columns, schema=LMMS_SCHEMA), path)


def lmms_row(question_id, jpeg, answers, bbox):
    return {'question_id': question_id, 'image': {'bytes': jpeg, 'path': None},
            'question': 'Please carefully observe the area circled in the image and come up '
                        'with a caption for the area.', 'answer': answers,
            'segmentation': [1.0, 2.0, 3.0], 'bbox': bbox, 'iscrowd': 0,
            'file_name': f'COCO_train2014_{question_id}.jpg'}


def test_lmms_parquet_rows_become_one_sample_per_expression(tmp_path, photos):
    cat = jpeg_bytes(photos['chelsea'])
    folder = tmp_path / 'RefCOCOg'
    write_lmms(folder / 'data' / 'test-00000-of-00001.parquet', [
        lmms_row('1', cat, ['the ginger cat', ' the  cat on the left '],
                 [10.0, 20.0, 100.0, 50.0]),
        lmms_row('2', cat, [''], [0.0, 0.0, 5.0, 5.0]),
        lmms_row('3', cat, ['a cat'], [0.0, 0.0, 0.0, 5.0])])
    write_lmms(folder / 'data' / 'val-00000-of-00001.parquet',
               [lmms_row('9', cat, ['not this split'], [1.0, 1.0, 2.0, 2.0])])
    data = rc.RefCoco(folder, 'test')
    samples = list(data.samples())
    assert data.dataset == 'refcocog' and data.files == [folder / 'data' /
                                                         'test-00000-of-00001.parquet']
    got = [(s.sample_id, s.dataset, s.split, s.text, s.box, s.file_name) for s in samples]
    assert got == [('1/0', 'refcocog', 'test', 'the ginger cat', (10.0, 20.0, 110.0, 70.0),
                    'COCO_train2014_1.jpg'),
                   ('1/1', 'refcocog', 'test', 'the cat on the left', (10.0, 20.0, 110.0, 70.0),
                    'COCO_train2014_1.jpg')]
    assert samples[0].image_bytes == cat and samples[0].image is None
    assert data.skipped == {rc.SKIP_NO_TEXT: 1, rc.SKIP_BAD_BOX: 1}
    assert [s.text for s in rc.RefCoco(folder, 'test').samples(limit=1)] == ['the ginger cat']


def test_mdetr_json_and_json_lines_read_with_their_images(tmp_path):
    images = tmp_path / 'coco'
    (images / 'train2014').mkdir(parents=True)
    (images / 'train2014' / 'COCO_train2014_000000000042.jpg').write_bytes(b'')
    mdetr = {'images': [
        {'id': 0, 'file_name': 'COCO_train2014_000000000042.jpg', 'height': 300, 'width': 451,
         'caption': 'man on the left', 'dataset_name': 'refcoco+', 'original_id': 42},
        {'id': 1, 'file_name': 'COCO_train2014_000000000042.jpg', 'height': 300, 'width': 451,
         'caption': 'red shirt', 'dataset_name': 'refcoco+', 'original_id': 42}],
        'annotations': [{'id': 0, 'image_id': 0, 'bbox': [1, 2, 30, 40], 'category_id': 1},
                        {'id': 1, 'image_id': 1, 'bbox': [5, 5, 10, float('nan')]}]}
    folder = tmp_path / 'mdetr'
    folder.mkdir()
    (folder / 'finetune_refcoco+_testB.json').write_text(json.dumps(mdetr))
    data = rc.RefCoco(folder, 'testB', 'RefCOCOplus', images)
    (sample,) = list(data.samples())
    assert (sample.sample_id, sample.dataset, sample.text, sample.box, sample.image_size) == \
        ('0', 'refcoco+', 'man on the left', (1.0, 2.0, 31.0, 42.0), (451, 300))
    assert sample.image == images / 'train2014' / 'COCO_train2014_000000000042.jpg'
    assert data.skipped == {rc.SKIP_BAD_BOX: 1}
    lines = tmp_path / 'refs.jsonl'
    lines.write_text('\n'.join(json.dumps(r) for r in [
        {'ref_id': 7, 'split': 'val', 'file_name': 'a.jpg', 'bbox': [0, 0, 10, 10],
         'sentences': [{'sent': 'left dog', 'raw': 'Left dog.'}, {'raw': 'the dog'}]},
        {'ref_id': 8, 'split': 'train', 'file_name': 'b.jpg', 'bbox': [0, 0, 10, 10],
         'sentences': ['not val']}]) + '\n\n')
    data = rc.RefCoco(lines, 'val', 'refcoco', tmp_path)
    got = [(s.sample_id, s.text, s.image) for s in data.samples()]
    assert got == [('7/0', 'left dog', tmp_path / 'a.jpg'), ('7/1', 'the dog', tmp_path / 'a.jpg')]


def test_pickles_are_refused_unread(tmp_path):
    refs = tmp_path / 'refcoco' / 'refs(unc).p'
    refs.parent.mkdir()
    refs.write_bytes(pickle.dumps({'refs': []}, protocol=4))
    for path in (refs, refs.parent):
        with pytest.raises(EvaluationError, match=r'refs\(unc\).p is a Python pickle.*never '
                                                  r'reads pickles'):
            rc.RefCoco(path, 'val')
    disguised = tmp_path / 'val.json'
    disguised.write_bytes(pickle.dumps([1], protocol=2))
    with pytest.raises(EvaluationError, match='is a Python pickle'):
        rc.RefCoco(disguised, 'val')


def test_unusable_refcoco_inputs_are_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match='no such file or folder'):
        rc.RefCoco(tmp_path / 'nothing', 'val')
    with pytest.raises(EvaluationError, match="no file of split 'testA': looked for testA-"):
        rc.RefCoco(tmp_path, 'testA')
    with pytest.raises(EvaluationError, match='unknown dataset'):
        rc.RefCoco(tmp_path, 'val', 'flickr')
    other = tmp_path / 'val-0.parquet'
    pq.write_table(pa.table({'caption': ['a'], 'box': [[1.0, 2.0, 3.0, 4.0]]}), other)
    with pytest.raises(EvaluationError, match='not the lmms-lab RefCOCO layout'):
        list(rc.RefCoco(other, 'val').samples())
    broken = tmp_path / 'test.json'
    broken.write_text('{"images": [')
    with pytest.raises(EvaluationError, match='not JSON'):
        list(rc.RefCoco(broken, 'test').samples())
    both = tmp_path / 'both'
    both.mkdir()
    for name in ('finetune_refcoco_val.json', 'finetune_refcocog_val.json'):
        (both / name).write_text('{}')
    with pytest.raises(EvaluationError, match='name the dataset'):
        rc.RefCoco(both, 'val')
    with pytest.raises(EvaluationError, match='not the refexp layout of MDETR'):
        list(rc.RefCoco(both, 'val', 'refcocog').samples())


# -- metrics -------------------------------------------------------------------------------------

def test_iou_and_hits_on_known_boxes():
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 0, 5), (0, 0, 0, 5)) == 0.0  # no area
    assert iou((0, 0, math.nan, 1), (0, 0, 1, 1)) == 0.0
    assert hit([(0, 0, 2, 1)], [(0, 0, 1, 1)])  # IoU exactly 0.5 counts
    assert not hit([(0, 0, 2.01, 1)], [(0, 0, 1, 1)])
    assert not hit([], [(0, 0, 1, 1)])
    assert box_in_image((-0.5, 0, 10.9, 5), 10, 5) == (0.0, 0.0, 10.0, 5.0)
    assert box_in_image((0, 0, 12, 5), 10, 5) is None
    assert box_in_image((3, 3, 3, 4), 10, 5) is None


def test_recall_at_1_takes_the_first_box_against_any_truth_box():
    truth = [(0, 0, 10, 10), (50, 50, 60, 60)]
    rows = [{'predicted': [(50, 50, 60, 60), (0, 0, 1, 1)], 'truth': truth,
             'types': ['people']},  # first box hits the second truth box: a hit
            {'predicted': [(90, 90, 99, 99), (0, 0, 10, 10)], 'truth': truth,
             'types': ['people', 'other']},  # only the second box hits: R@5, not R@1
            {'predicted': [], 'truth': truth, 'types': ['other']},  # no box: a miss
            {'predicted': [(0, 0, 10, 10)], 'truth': [(0, 0, 10, 10)], 'types': ['scene']}]
    scores = phrase_grounding(rows)
    assert scores['overall'] == {'phrases': 4, 'recall@1': 0.5, 'recall@5': 0.75,
                                 'recall@10': 0.75, 'upper_bound': 0.75}
    assert scores['by_type']['people'] == {'phrases': 2, 'recall@1': 0.5, 'recall@5': 1.0,
                                           'recall@10': 1.0, 'upper_bound': 1.0}
    assert scores['by_type']['other']['recall@1'] == 0.0
    assert phrase_grounding([])['overall']['recall@1'] is None


def test_accuracy_takes_the_first_box():
    truth = [(0, 0, 10, 10)]
    scores = referring_expressions([
        {'predicted': [(0, 0, 10, 10)], 'truth': truth},
        {'predicted': [(20, 20, 30, 30), (0, 0, 10, 10)], 'truth': truth},
        {'predicted': [(0, 0, 10, 5)], 'truth': truth},  # IoU 0.5
        {'predicted': [], 'truth': truth}])['overall']
    assert scores == {'expressions': 4, 'accuracy@0.5': 0.5, 'upper_bound': 0.75,
                      'mean_iou': pytest.approx((1 + 0 + 0.5 + 0) / 4)}
    assert referring_expressions([])['overall']['accuracy@0.5'] is None


# -- prompts and runs ----------------------------------------------------------------------------

def test_phrase_prompts_give_the_articles_tokens(engine):
    sentence = 'A man in a blue hat <phrase> .'
    prompt = benchmarks.phrase_prompt(sentence, 9, 19)
    assert prompt == '<grounding> A man in<phrase> a blue hat</phrase>'
    assert benchmarks.phrase_prompt(sentence, 0, 5) == '<grounding><phrase> A man</phrase>'
    assert benchmarks.phrase_prompt(sentence, 20, 28) == \
        '<grounding> A man in a blue hat<phrase> \u2039phrase\u203a</phrase>'  # neutralised
    tokens = engine.tokenizer.convert_ids_to_tokens(
        engine.tokenizer(prompt, add_special_tokens=False)['input_ids'])
    assert tokens == ['<grounding>', '▁A', '▁man', '▁in', '<phrase>', '▁a', '▁blue', '▁hat',
                      '</phrase>']
    find = engine.tokenizer('<grounding><phrase> the man on the left</phrase>',
                            add_special_tokens=False)['input_ids']
    assert engine.tokenizer.convert_ids_to_tokens(find)[1:4] == ['<phrase>', '▁the', '▁man']


def test_flickr30k_through_the_steered_engine(engine, flickr):
    steered = engine.with_options(logits_processors=(steer_for(engine.tokenizer, STEERED_BOX),),
                                  max_new_tokens=5)
    data = fl.Flickr30kEntities(flickr)
    seen = []
    result = benchmarks.run_benchmark('flickr30k', data.samples('test'), steered, split='test',
                                      skipped=data.skipped,
                                      progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 4)]
    rows = {r['phrase']: r for r in result['rows']}
    assert rows['A ginger cat']['prompt'] == '<grounding><phrase> A ginger cat</phrase>'
    assert rows['its paws']['prompt'] == \
        '<grounding> A ginger cat looks at<phrase> its paws</phrase>'
    assert rows['A ginger cat']['predicted'][0] == pytest.approx(steered_box(451, 300))
    assert rows['A ginger cat']['hit'] and rows['The cat']['hit']  # the cat's box, IoU ~1
    assert not rows['its paws']['hit'] and not rows['A cup']['hit']
    assert result['overall']['recall@1'] == 0.5 and result['overall']['phrases'] == 4
    assert result['by_type']['animals']['recall@1'] == 1.0
    assert result['skipped'] == {fl.SKIP_NO_BOX: 1, fl.SKIP_NOT_VISUAL: 1, fl.SKIP_OUTSIDE: 1}
    assert result['article']['value'] == 0.787 and result['dataset'] == 'flickr30k_entities'


def test_refcoco_through_the_steered_engine(engine, photos, tmp_path):
    steered = engine.with_options(logits_processors=(steer_for(engine.tokenizer, STEERED_BOX),),
                                  max_new_tokens=5)
    x1, y1, x2, y2 = steered_box(451, 300)
    cat = jpeg_bytes(photos['chelsea'])
    folder = tmp_path / 'RefCOCO'
    write_lmms(folder / 'data' / 'testA-00000-of-00001.parquet', [
        lmms_row('1', cat, ['the cat'], [x1, y1, x2 - x1, y2 - y1]),
        lmms_row('2', cat, ['the wall'], [0.0, 0.0, 50.0, 50.0]),
        lmms_row('3', cat, ['far away'], [500.0, 0.0, 50.0, 50.0]),
        lmms_row('4', b'not an image', ['broken'], [0.0, 0.0, 5.0, 5.0])])
    data = rc.RefCoco(folder, 'testA')
    result = benchmarks.run_benchmark('refcoco', data.samples(), steered, split='testA',
                                      dataset=data.dataset, skipped=data.skipped)
    assert [(r['expression'], r['hit']) for r in result['rows']] == \
        [('the cat', True), ('the wall', False)]
    assert result['rows'][0]['prompt'] == 'the cat'
    assert result['overall']['accuracy@0.5'] == 0.5
    assert result['skipped'] == {benchmarks.SKIP_OUTSIDE: 1, benchmarks.SKIP_IMAGE: 1}
    assert result['article']['value'] == pytest.approx(0.5742)
    path = benchmarks.write_benchmark(result, tmp_path / 'out')
    written = json.loads(path.read_text())
    assert 'rows' not in written and written['schema'] == benchmarks.SCHEMA
    assert len((tmp_path / 'out' / 'rows.jsonl').read_text().splitlines()) == 2


def test_the_command_runs_a_benchmark_and_labels_the_tiny_model(flickr, tiny_model_dir,
                                                                tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    out = tmp_path / 'out'
    assert benchmark_cli.main(['flickr30k', str(flickr), '--split', 'val', '--tiny-model',
                               '--device', 'cpu', '--max-new-tokens', '3', '-o', str(out),
                               '--quiet']) == 0
    captured = capsys.readouterr()
    assert 'flickr30k_entities val: recall@1' in captured.out
    assert '[TINY RANDOM TEST MODEL]' in captured.out and 'TINY RANDOM' in captured.err
    written = json.loads((out / 'benchmark.json').read_text())
    assert written['overall']['phrases'] == 1 and written['split'] == 'val'
    assert written['model'].startswith('TINY RANDOM TEST MODEL')


def test_the_article_run_says_what_is_missing_before_loading_a_model(flickr, tmp_path, capsys):
    code = benchmark_cli.main(['article', '--flickr30k', str(flickr), '--refcoco',
                               str(tmp_path), '--model', str(tmp_path / 'no-weights'),
                               '-o', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert code == 2 and 'not all here (nothing is downloaded)' in err
    assert 'flickr30k-train' not in err and 'refcocog-test:' in err and 'cannot load' not in err
    make = subprocess.run(['make', '-s', 'eval-article', 'FLICKR30K_DIR=', 'REFCOCO_DIR='],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert make.returncode != 0 and 'set FLICKR30K_DIR' in make.stderr
