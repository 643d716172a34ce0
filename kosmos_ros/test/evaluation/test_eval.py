# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_eval on the tiny model: the grounding loop, the figures of a run, the command.

The tiny random model is steered per phrase (:class:`PhraseSteer`) to give known boxes, so a
label file with boxes placed on them, beside them or nowhere near has precision, recall and
AP known by construction; the photographs the project ships are the images. The same run's
files are scored again by ``pycocotools`` on its own (equal to 1e-6). The command is run end
to end on a label file full of entries it must skip, each counted under its reason.
"""

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys

import cv2
import pytest
from transformers import LogitsProcessor

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation import labels as L
from kosmos_ros.evaluation import run as R
from kosmos_ros.evaluation.calibration import Target
from kosmos_ros.evaluation.cli import main
from kosmos_ros.evaluation.labels import read_labels
from kosmos_ros.evaluation.record import evaluate, write
from kosmos_ros.evaluation.run import ground_labels
from kosmos_ros.images import frame_from_array

from helpers import Steer  # noqa: I100

TARGETS = {  # what the model is steered to answer for each phrase, after the FIND prompt
    'cat': '<object><patch_index_0044><patch_index_0863></object></s>',
    'cup': '<object><patch_index_0100><patch_index_0300></delimiter_of_multi_objects/>'
           '<patch_index_0520><patch_index_0990></object></s>',
    'dog': '</s>',  # no box
}
SIZE = (160, 120)
CONTRACT = {'schema', 'task', 'model', 'labels', 'images', 'skipped', 'iou_threshold',
            'overall', 'phrases', 'pr_curves', 'scores', 'confusion', 'calibration', 'worst'}


class PhraseSteer(LogitsProcessor):
    """Steer each row to the target of the phrase its FIND prompt asks (see :class:`Steer`)."""

    def __init__(self, tokenizer, targets):
        def ids(text):
            return tokenizer(text, add_special_tokens=False)['input_ids']
        self.rules = [(ids(f'<phrase> {phrase}</phrase>'), Steer(ids(target)))
                      for phrase, target in targets.items()]

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for b, row in enumerate(input_ids.tolist()):
            for marker, steer in self.rules:
                if any(row[i:i + len(marker)] == marker for i in range(len(row))):
                    scores[b:b + 1] = steer(input_ids[b:b + 1], scores[b:b + 1])
                    break
        return scores


def phrase_steered(engine):
    """Return ``engine`` steered to give each phrase of TARGETS its boxes."""
    return engine.with_options(logits_processors=(PhraseSteer(engine.tokenizer, TARGETS),),
                               max_new_tokens=16)


@pytest.fixture(scope='module')
def steered(engine):
    return phrase_steered(engine)


@pytest.fixture(scope='module')
def boxes(steered, photos):
    """Return the steered boxes of 'cat' (one) and 'cup' (two) on a 160x120 frame."""
    frame = frame_from_array(cv2.resize(photos['coffee'], SIZE))
    out = {}
    for phrase in ('cat', 'cup', 'dog'):
        result = steered.ground(frame, Query(Task.FIND, phrase))
        out[phrase] = [(b.pixels.x1, b.pixels.y1, b.pixels.x2, b.pixels.y2)
                       for _, _, p, b in result.detections() if p.text == phrase]
    assert len(out['cat']) == 1 and len(out['cup']) == 2 and not out['dog'], out
    assert out['cat'][0][0] >= 50  # the misses below lie left of it
    return out


def write_images(folder, photos):
    """Write three photographs as 160x120 PNG and JPEG files; return their names."""
    folder.mkdir(exist_ok=True)
    names = {'a.png': 'coffee', 'b.png': 'chelsea', 'c.jpg': 'astronaut'}
    for name, photo in names.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(cv2.resize(photos[photo], SIZE),
                                                     cv2.COLOR_RGB2BGR))
    return list(names)


def xywh(box):
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def label_file(path, names, boxes_per_image, categories=('cat', 'cup', 'dog')):
    """Write a COCO label file: image i holds boxes_per_image[i], [(category, box), ...]."""
    ids = {name: n + 1 for n, name in enumerate(categories)}
    annotations = []
    for image_id, boxes in enumerate(boxes_per_image, 1):
        for category, box in boxes:
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                                'category_id': ids[category], 'bbox': xywh(box),
                                'area': (box[2] - box[0]) * (box[3] - box[1]), 'iscrowd': 0})
    path.write_text(json.dumps({
        'images': [{'id': n + 1, 'file_name': name, 'width': SIZE[0], 'height': SIZE[1]}
                   for n, name in enumerate(names)],
        'annotations': annotations,
        'categories': [{'id': n, 'name': name} for name, n in ids.items()]}))
    return path


MISSES = [(0.0, 0.0, 40.0, 40.0), (0.0, 60.0, 45.0, 110.0), (5.0, 45.0, 30.0, 58.0)]


def test_figures_known_by_construction_and_equal_to_pycocotools(
        steered, boxes, photos, tmp_path):
    """cat: 3 found, 3 missed; cup: 1 of 6 detections labelled; dog: labelled, never found."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = write_images(tmp_path / 'images', photos)
    cat, (cup1, _) = boxes['cat'][0], boxes['cup']
    path = label_file(tmp_path / 'images' / 'labels.json', names, [
        [('cat', cat), ('cup', cup1), ('dog', (5.0, 5.0, 20.0, 20.0))],
        [('cat', cat), ('cat', MISSES[0])],
        [('cat', cat), ('cat', MISSES[1]), ('cat', MISSES[2])]])
    grounded = ground_labels(read_labels(path), tmp_path / 'images', steered)
    assert len(grounded.images) == 3 and grounded.queries == 9 and not grounded.skipped
    evaluation = evaluate(grounded, 'tiny', 0.0, Target('precision', 1.0))
    r = evaluation.record
    assert set(r) == CONTRACT and r['images'] == 3
    c, u, d = r['phrases']['cat'], r['phrases']['cup'], r['phrases']['dog']
    assert (c['labels'], c['detections'], c['precision'], c['recall']) == (6, 3, 1.0, 0.5)
    assert c['ap50'] == pytest.approx(51 / 101, abs=1e-12)  # precision 1 to recall 0.5
    assert c['ap'] == pytest.approx(51 / 101, abs=1e-12)  # the boxes exactly: IoU 1
    cup_scores = [p['score'] for p in evaluation.predictions if p['category_id'] == 2]
    found = cup_scores[0]  # image 1's first cup box, the labelled one
    rank = 1 + sum(s > found for s in cup_scores)
    assert (u['labels'], u['detections'], u['precision'], u['recall']) == (1, 6, 1 / 6, 1.0)
    assert u['ap50'] == pytest.approx(1 / rank, abs=1e-12)  # recall 1 at that rank only
    assert (d['labels'], d['detections'], d['precision'], d['recall'], d['ap']) == \
        (1, 0, None, 0.0, 0.0)
    o = r['overall']
    assert (o['labels'], o['detections'], o['precision'], o['recall']) == (8, 9, 4 / 9, 0.5)
    assert o['ap'] == pytest.approx((51 / 101 + 1 / rank + 0.0) / 3, abs=1e-12)
    cat_scores = [p['score'] for p in evaluation.predictions if p['category_id'] == 1]
    assert r['calibration']['per_phrase']['cat'] == min(cat_scores)  # all true positives
    assert r['calibration']['per_phrase']['dog'] is None
    assert r['confusion']['matrix'] == [[3, 0, 0, 3], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert {m['label_box'][0] for m in r['worst']['misses']} == {0.0, 5.0}
    assert r['worst']['misses'][0]['image'] == str(tmp_path / 'images' / 'c.jpg')
    # pycocotools on its own, on the label file and the predictions the run wrote
    written = write(tmp_path / 'out', evaluation)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(path))
        coco = COCOeval(truth, truth.loadRes(str(written[1])), 'bbox')
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    assert abs(o['ap'] - coco.stats[0]) < 1e-6 and abs(o['ap50'] - coco.stats[1]) < 1e-6
    record = json.loads(written[0].read_text())
    assert record['overall'] == o and record['phrases'] == r['phrases']


def test_min_score_counts_the_boxes_the_node_keeps(steered, boxes, photos, tmp_path):
    names = write_images(tmp_path / 'images', photos)
    path = label_file(tmp_path / 'labels.json', names, [[('cat', boxes['cat'][0])], [], []])
    grounded = ground_labels(read_labels(path), tmp_path / 'images', steered)
    scores = sorted(d.score for d in grounded.detections)
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two
    r = evaluate(grounded, 'tiny', middle, Target('recall', 1.0)).record
    kept = 0
    for name in names:  # what the node publishes with min_score = middle
        frame = R.load_image(tmp_path / 'images' / name)
        for phrase in ('cat', 'cup', 'dog'):
            kept += len(list(steered.ground(frame, Query(Task.FIND, phrase)).detections(middle)))
    assert r['overall']['detections'] == kept == sum(s >= middle for s in scores)
    assert r['overall']['min_score'] == middle


def test_phrases_the_model_cannot_be_asked_are_refused_before_grounding(steered, tmp_path):
    for names, says in ((['cup', '\ud800'], 'cannot be asked'),
                        (['cup', '\x01\x02'], 'holds nothing the model can read|cannot be asked'),
                        (['cup', 'cup\x01'], 'read as the same phrase')):
        path = label_file(tmp_path / 'labels.json', ['none.png'], [[]], names)
        with pytest.raises(EvaluationError, match=says):
            ground_labels(read_labels(path), tmp_path, steered)


def test_the_command_writes_its_files_and_counts_what_it_skips(
        tiny_model_dir, photos, tmp_path, capsys):
    folder = tmp_path / 'images'
    names = write_images(folder, photos)
    (folder / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'sub').mkdir()
    box = [10, 10, 30, 30]
    images = [{'id': n + 1, 'file_name': name, 'width': SIZE[0], 'height': SIZE[1]}
              for n, name in enumerate(names)] + [
        {'id': 10, 'file_name': 'missing.png'}, {'id': 11, 'file_name': '../a.png'},
        {'id': 12, 'file_name': 'corrupt.png'}, {'id': 13, 'file_name': 'notes.txt'},
        {'id': 14, 'file_name': 'a.png', 'width': 640, 'height': 480},
        {'id': 15, 'file_name': 'sub'}, {'id': 16, 'file_name': '/etc/passwd'}]
    annotations = [
        {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': box},
        {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [150, 100, 40, 40]},  # clipped
        {'id': 3, 'image_id': 2, 'category_id': 2, 'bbox': [200, 10, 10, 10]},  # outside
        {'id': 4, 'image_id': 99, 'category_id': 1, 'bbox': box},  # unknown image
        {'id': 5, 'image_id': 10, 'category_id': 1, 'bbox': box},  # of a missing image
        {'id': 6, 'image_id': 14, 'category_id': 2, 'bbox': box}]  # of a mismatched image
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({'images': images, 'annotations': annotations,
                                  'categories': [{'id': 1, 'name': 'cat'},
                                                 {'id': 2, 'name': 'cup'}]}))
    out = tmp_path / 'out'
    status = main(['coco', str(labels), '--images', str(folder), '-o', str(out),
                   '--model', str(tiny_model_dir), '--local-files-only', '--device', 'cpu',
                   '--max-new-tokens', '4', '--no-progress', '--target-recall', '0.5'])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert 'Traceback' not in captured.err and 'images/s' in captured.out
    record = json.loads((out / 'eval.json').read_text(),
                        parse_constant=lambda name: pytest.fail(f'{name} in eval.json'))
    assert set(record) == CONTRACT
    assert record['images'] == 3 and record['labels'] == str(labels)
    assert record['skipped'] == {
        L.CLIPPED: 1, L.SKIP_OUTSIDE: 1, L.SKIP_UNKNOWN_IMAGE: 1, R.SKIP_MISSING: 1,
        R.SKIP_OUTSIDE_FOLDER: 2, R.SKIP_UNDECODED: 2, R.SKIP_SIZE_MISMATCH: 1,
        R.SKIP_UNREADABLE: 1, R.SKIP_LABELS_OF_SKIPPED: 2}
    assert record['overall']['labels'] == 2 and record['calibration']['target'] == {
        'recall': 0.5}
    assert 'skipped image 10 (missing.png): image file missing' in captured.err
    predictions = json.loads((out / 'predictions.json').read_text())
    assert len(predictions) == record['overall']['detections']
    assert (out / 'min_score.yaml').exists() == (record['calibration']['min_score'] is not None)
    for value in (record['overall']['precision'], record['overall']['ap']):
        assert value is None or math.isfinite(value)
    assert main(['coco', str(labels), '--images', str(folder), '-o', str(out)]) == 2
    assert 'give --overwrite' in capsys.readouterr().err


def test_outputs_never_replace_an_input(photos, tmp_path, capsys):
    """An output over an input is refused before the model loads; the inputs stay unchanged.

    ``-o`` the labels' own folder with a label file named like an output, or a phrase map
    named min_score.yaml in the output folder.
    """
    folder = tmp_path / 'set'
    names = write_images(folder, photos)
    labels = folder / 'predictions.json'  # a label file named like an output
    labels.write_text(json.dumps({
        'images': [{'id': 1, 'file_name': names[0], 'width': SIZE[0], 'height': SIZE[1]}],
        'annotations': [], 'categories': [{'id': 1, 'name': 'cat'}]}))
    phrases = tmp_path / 'min_score.yaml'
    phrases.write_text('cat: a cat\n')
    before = {p: p.read_bytes() for p in (labels, phrases)}
    for argv, named in (
            (['coco', str(labels), '-o', str(folder), '--overwrite'], 'the label file'),
            (['coco', str(tmp_path / 'set' / '..' / 'set' / 'predictions.json'), '-o',
              str(folder), '--overwrite'], 'the label file'),
            (['coco', str(labels), '--images', str(folder), '--phrases', str(phrases), '-o',
              str(tmp_path), '--overwrite'], 'the phrase map')):
        assert main(argv + ['--tiny-model', '--no-progress']) == 2
        err = capsys.readouterr().err
        assert named in err and 'outputs never replace what the command reads' in err, err
        assert 'Traceback' not in err and 'using the' not in err  # no model loaded
    assert {p: p.read_bytes() for p in (labels, phrases)} == before
    assert not (folder / 'eval.json').exists() and not (tmp_path / 'eval.json').exists()


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_interrupts_it_with_130_and_nothing_written(
        tiny_model_dir, photos, tmp_path, signum):
    """SIGINT or SIGTERM while it grounds: exit 130, one line, no traceback, nothing written.

    Its SIGINT is ignored by the parent, as a background job's is: it still ends on it.
    """
    folder = tmp_path / 'set'
    names = write_images(folder, photos) * 40  # long enough to be stopped while grounding
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({
        'images': [{'id': i + 1, 'file_name': n} for i, n in enumerate(names)],
        'annotations': [], 'categories': [{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'cup'}]}))
    out = tmp_path / 'out'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'kosmos_ros.evaluation.cli', 'coco', str(labels), '--images',
         str(folder), '-o', str(out), '--model', str(tiny_model_dir), '--local-files-only',
         '--device', 'cpu', '--max-new-tokens', '8'],  # the progress bar shows it grounds
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        seen = ''
        while 'images' not in seen or '%' not in seen:  # the bar: grounding has begun
            char = proc.stderr.read(1)
            assert char, f'it ended first: {seen[-2000:]}'
            seen += char
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert 'kosmos_eval: interrupted; nothing written' in err and 'Traceback' not in err
    assert not (out / 'eval.json').exists() and not (out / 'predictions.json').exists()


def test_image_paths_stay_in_the_images_folder(tmp_path):
    assert R.image_path(tmp_path, 'a/b.png') == tmp_path / 'a' / 'b.png'
    assert R.image_path(tmp_path, 'a/../b.png') == tmp_path / 'b.png'
    for name in ('../b.png', 'a/../../b.png', '/etc/passwd', '..', 'a\\..\\..\\b.png'):
        assert R.image_path(tmp_path, name) is None, name
    assert os.path.isabs(R.image_path('relative', 'b.png'))
