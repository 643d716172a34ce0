# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""COCO label files read as untrusted data: each bad case is a clear error or a counted skip.

Errors are checked through ``kosmos_eval`` itself (one ``kosmos_eval: error:`` line, exit
status 2, before any model loads); skips through the reader, each counted under its reason.
"""

from collections import Counter
import json
import os

import pytest

from kosmos_ros.evaluation import labels as L
from kosmos_ros.evaluation.cli import main
from kosmos_ros.evaluation.labels import (fit_boxes, LabelBox, LabelledImage, LabelsError,
                                          read_labels, read_phrase_map)

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model


def coco(images=None, annotations=None, categories=None, **extra):
    """Return a small valid label document, with the parts given replaced."""
    doc = {
        'images': [{'id': 1, 'file_name': 'a.png', 'width': 160, 'height': 120},
                   {'id': 2, 'file_name': 'b.png', 'width': 160, 'height': 120}]
        if images is None else images,
        'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 40, 30]},
                        {'id': 2, 'image_id': 2, 'category_id': 2, 'bbox': [0, 0, 20, 20]}]
        if annotations is None else annotations,
        'categories': [{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'cup'}]
        if categories is None else categories}
    doc.update(extra)
    return doc


def write(tmp_path, doc, name='labels.json'):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def refused(tmp_path, capsys, labels, *more):
    """Run kosmos_eval on ``labels``; return its one error line (exit status 2 asserted)."""
    status = main(['coco', str(labels), '-o', str(tmp_path / 'out'), '--no-progress', *more])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('kosmos_eval: error: '), err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out' / 'eval.json').exists()
    return lines[0]


def test_a_valid_file_reads_whole(tmp_path):
    labels = read_labels(write(tmp_path, coco()))
    assert [c.phrase for c in labels.categories] == ['cat', 'cup']
    assert [i.image_id for i in labels.images] == [1, 2]
    assert labels.images[0].boxes == (LabelBox(1, (10.0, 10.0, 50.0, 40.0)),)
    assert labels.images[0].width == 160 and labels.images[0].height == 120
    assert not labels.skipped


def test_a_label_file_over_the_size_limit_is_refused_unread(tmp_path, capsys):
    """A 2 GB file (sparse: nothing is written) is refused from its size alone."""
    path = tmp_path / 'huge.json'
    path.write_bytes(b'{')
    os.truncate(path, 2 * 1024 ** 3)
    line = refused(tmp_path, capsys, path)
    assert f'is {2 * 1024 ** 3} bytes, over the limit of {L.DEFAULT_MAX_LABELS_BYTES}' in line
    assert '--max-labels-bytes' in line
    small = write(tmp_path, coco(), 'small.json')
    line = refused(tmp_path, capsys, small, '--max-labels-bytes', '100')
    assert 'over the limit of 100 bytes' in line


@pytest.mark.parametrize('text, says', [
    ('{"images": [', 'not valid JSON'),
    (b'\xff\xfe{}', 'not UTF-8'),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]',
     'a list at the top level (COCO results'),
    ('"labels"', 'not a COCO object'),
    ('{"images": [], "annotations": []}', '"categories" is missing'),
    ('{"images": {}, "annotations": [], "categories": [{"id": 1, "name": "a"}]}',
     '"images" is a dict, not a list'),
    ('[' * 100000 + ']' * 100000, 'nested too deeply'),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}], "x": '
     + '1' * 5000 + '}', 'Python refuses'),
])
def test_a_file_that_is_not_coco_labels_is_refused(tmp_path, capsys, text, says):
    path = tmp_path / 'labels.json'
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    assert says in refused(tmp_path, capsys, path)


@pytest.mark.parametrize('doc, says', [
    (coco(categories=[]), 'no category has a name to ask'),
    (coco(categories=[{'id': 1, 'name': ''}, {'id': 2}]), 'no category has a name to ask'),
    (coco(categories=[{'id': 1, 'name': 'cat'}, {'id': 1, 'name': 'dog'}]),
     'category id 1 is given twice'),
    (coco(categories=[{'name': 'cat'}]), 'category entry 0 has no integer "id"'),
    (coco(categories=[{'id': 1, 'name': 'Cup'}, {'id': 2, 'name': ' cup '}]),
     "categories 1 and 2 both ask 'cup'"),
    (coco(images=[{'id': 1, 'file_name': 'a.png'}, {'id': 1, 'file_name': 'b.png'}]),
     'image id 1 is given twice'),
    (coco(annotations=[{'id': 4, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 9, 9]},
                       {'id': 4, 'image_id': 2, 'category_id': 1, 'bbox': [0, 0, 9, 9]}]),
     'annotation id 4 is given twice'),
])
def test_ambiguous_or_empty_labels_are_refused(tmp_path, capsys, doc, says):
    assert says in refused(tmp_path, capsys, write(tmp_path, doc))


def test_missing_files_and_folders_are_refused(tmp_path, capsys):
    assert 'cannot read the label file' in refused(tmp_path, capsys, tmp_path / 'none.json')
    assert 'not a regular file' in refused(tmp_path, capsys, tmp_path)
    labels = write(tmp_path, coco())
    line = refused(tmp_path, capsys, labels, '--images', str(tmp_path / 'nowhere'))
    assert 'the images folder is not a folder' in line
    (tmp_path / 'out').write_text('a file')
    line = refused(tmp_path, capsys, labels)
    assert 'the output is a file, not a folder' in line


def test_an_evaluation_is_not_overwritten_unless_asked(tmp_path, capsys):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'eval.json').write_text('{}')
    status = main(['coco', str(write(tmp_path, coco())), '-o', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert status == 2 and 'eval.json exists; give --overwrite to replace it' in err


@pytest.mark.parametrize('flags, says', [
    (['--target-precision', '1.5'], 'expected a number from 0 to 1'),
    (['--target-precision', '0.9', '--target-recall', '0.5'], 'not allowed with argument'),
    (['--limit', '0'], 'expected 1 or more'),
    (['--min-score', '2'], '--min-score must be at most 1'),
    (['--tiny-model', '--dtype', 'float16'], 'takes no --dtype'),
])
def test_bad_flags_are_refused(tmp_path, capsys, flags, says):
    labels = write(tmp_path, coco())
    try:
        status = main(['coco', str(labels), '-o', str(tmp_path / 'out'), *flags])
    except SystemExit as exc:  # argparse
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and says in err and 'Traceback' not in err, err


def test_entries_that_cannot_be_used_are_counted_skips(tmp_path):
    nan = float('nan')
    doc = coco(
        images=[{'id': 1, 'file_name': 'a.png', 'width': 160, 'height': 120},
                {'id': 2, 'file_name': 'b.png'},  # no size: taken from the file
                {'id': 3, 'file_name': 'c.png', 'width': -5, 'height': 120},
                {'id': 'x', 'file_name': 'd.png'}, {'id': 5}, 'not an object'],
        categories=[{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'cup'}, {'id': 3, 'name': ' '}],
        annotations=[
            {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 40, 30]},  # kept
            {'id': 2, 'image_id': 9, 'category_id': 1, 'bbox': [0, 0, 5, 5]},
            {'id': 3, 'image_id': 3, 'category_id': 1, 'bbox': [0, 0, 5, 5]},
            {'id': 4, 'image_id': 1, 'category_id': 7, 'bbox': [0, 0, 5, 5]},
            {'id': 5, 'image_id': 1, 'category_id': 3, 'bbox': [0, 0, 5, 5]},
            {'id': 6, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 5, 5], 'iscrowd': 1},
            {'id': 7, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 5]},
            {'id': 8, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, '5', 5]},
            {'id': 9, 'image_id': 1, 'category_id': 1, 'bbox': [0, nan, 5, 5]},
            {'id': 10, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 1e400, 5]},
            {'id': 11, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 0, 5]},
            {'id': 12, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 5, -1]},
            {'id': 13, 'image_id': 2, 'category_id': 2, 'bbox': [1, 2, 3, 4]},  # kept
            {'id': 14, 'image_id': True, 'category_id': 2, 'bbox': [1, 2, 3, 4]},
            [1, 2, 3],
        ])
    path = tmp_path / 'labels.json'
    path.write_text(json.dumps(doc))  # NaN and Infinity as Python writes them
    labels = read_labels(path)
    assert labels.skipped == Counter({
        L.SKIP_IMAGE_ENTRY: 3, L.SKIP_IMAGE_SIZE: 1, L.SKIP_CATEGORY: 1,
        L.SKIP_UNKNOWN_IMAGE: 2, L.SKIP_SKIPPED_IMAGE: 1, L.SKIP_UNKNOWN_CATEGORY: 1,
        L.SKIP_UNNAMED_CATEGORY: 1, L.SKIP_CROWD: 1, L.SKIP_BAD_BOX: 2, L.SKIP_NON_FINITE: 2,
        L.SKIP_EMPTY_BOX: 2, L.SKIP_NOT_OBJECT: 1})
    kept = [(i.image_id, i.width, len(i.boxes)) for i in labels.images]
    assert kept == [(1, 160, 1), (2, None, 1)]
    assert [c.phrase for c in labels.categories] == ['cat', 'cup']


def test_boxes_outside_their_image_are_clipped_or_skipped_and_counted():
    image = LabelledImage(1, 'a.png', None, None, (
        LabelBox(1, (10.0, 10.0, 50.0, 40.0)),  # inside
        LabelBox(1, (-10.0, 100.0, 30.0, 150.0)),  # partly outside: clipped
        LabelBox(2, (200.0, 10.0, 250.0, 40.0)),  # wholly outside: skipped
        LabelBox(2, (160.0, 0.0, 170.0, 10.0)),  # touching the edge only: skipped
    ))
    skipped = Counter()
    fitted = fit_boxes(image, 160, 120, skipped)
    assert fitted == (LabelBox(1, (10.0, 10.0, 50.0, 40.0)),
                      LabelBox(1, (0.0, 100.0, 30.0, 120.0)))
    assert skipped == Counter({L.CLIPPED: 1, L.SKIP_OUTSIDE: 2})


def test_a_phrase_map_gives_categories_other_wording(tmp_path, capsys):
    labels_path = write(tmp_path, coco())
    mapping = tmp_path / 'phrases.yaml'
    mapping.write_text('cat: a sleeping cat\n2: the red cup\n')
    labels = read_labels(labels_path, phrase_map=read_phrase_map(mapping))
    assert [(c.name, c.phrase) for c in labels.categories] == [('cat', 'a sleeping cat'),
                                                               ('cup', 'the red cup')]
    mapping.write_text('{"cat": "a cat", "dog": "a dog"}')  # JSON is YAML
    line = refused(tmp_path, capsys, labels_path, '--phrases', str(mapping))
    assert 'names categories the labels do not have: dog' in line
    mapping.write_text('cat: cup\n')
    assert "both ask 'cup'" in refused(tmp_path, capsys, labels_path, '--phrases', str(mapping))
    for text, says in (('- a\n- b\n', 'must map category names or ids'),
                       ('cat: ""\n', 'must be non-empty text'),
                       ('cat: [a, b]\n', 'must be non-empty text'),
                       ('cat: !!python/object:os.system x\n', 'not YAML or JSON'),
                       ('{', 'not YAML or JSON')):
        mapping.write_text(text)
        assert says in refused(tmp_path, capsys, labels_path, '--phrases', str(mapping))
    with pytest.raises(LabelsError, match='the phrase map is not a file'):
        read_phrase_map(tmp_path / 'none.yaml')
