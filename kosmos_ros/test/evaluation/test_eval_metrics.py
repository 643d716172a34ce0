# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Metrics of kosmos_eval on detections placed by hand: figures known by construction.

Precision, recall, AP@0.5 and AP@[.5:.95] (COCO's 101-point interpolation worked out by hand),
curves, calibration, the confusion of phrases and the worst cases, each checked against the
figure the construction gives, and against ``pycocotools`` run independently on the files a
run writes (label file and ``predictions.json``), to 1e-6. The matching is checked detection
by detection against ``COCOeval``'s own on random boxes with tied scores.
"""

from collections import Counter
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from kosmos_ros.evaluation.calibration import calibrate, params_fragment, Target, threshold
from kosmos_ros.evaluation.labels import Category, LabelBox, LabelledImage, LabelSet
from kosmos_ros.evaluation.matching import match
from kosmos_ros.evaluation.metrics import curve, summarize, thin
from kosmos_ros.evaluation.record import evaluate, write
from kosmos_ros.evaluation.run import Detection, EvaluatedImage, GroundedSet
from kosmos_ros.options import check_value, SPECS

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

CAT, CUP, DOG = 1, 2, 3
CATEGORIES = (Category(CAT, 'cat', 'cat'), Category(CUP, 'cup', 'cup'),
              Category(DOG, 'dog', 'dog'))
CONTRACT = {'schema', 'task', 'model', 'labels', 'images', 'skipped', 'iou_threshold',
            'overall', 'phrases', 'pr_curves', 'scores', 'confusion', 'calibration', 'worst'}


def grounded(images, detections, categories=CATEGORIES, path='/data/labels.json'):
    """Return a GroundedSet of evaluated images and detections, as a run gives it."""
    labelled = tuple(LabelledImage(i.image_id, i.path.name, i.width, i.height, i.boxes)
                     for i in images)
    return GroundedSet(LabelSet(Path(path), labelled, categories, Counter()), list(images),
                       list(detections))


def image(image_id, *boxes, size=(200, 200)):
    return EvaluatedImage(image_id, Path(f'/data/{image_id}.png'), size[0], size[1],
                          tuple(LabelBox(c, b) for c, b in boxes))


# One 200x200 image. cat: two label boxes, found by detections scoring 0.9 and 0.7 (IoU 1),
# a false positive at 0.8 between them. cup: one label box, found at IoU 0.72 by a detection
# scoring 0.6 (a match at the IoU thresholds 0.5 to 0.7, five of ten). dog: no label box, one
# false positive scoring 0.95 on the first cat.
L1, L2, L3 = (0.0, 0.0, 100.0, 100.0), (100.0, 100.0, 200.0, 200.0), (0.0, 100.0, 100.0, 200.0)
KNOWN = grounded([image(1, (CAT, L1), (CAT, L2), (CUP, L3))], [
    Detection(1, CAT, L1, 0.9), Detection(1, CAT, (150.0, 0.0, 200.0, 50.0), 0.8),
    Detection(1, CAT, L2, 0.7), Detection(1, CUP, (0.0, 100.0, 100.0, 172.0), 0.6),
    Detection(1, DOG, (0.0, 0.0, 50.0, 50.0), 0.95)])
# cat: precision 1 up to recall 0.5 (51 of COCO's 101 recall points), then 2/3.
CAT_AP = (51 + 50 * 2 / 3) / 101


def pycocotools_figures(tmp_path, labels_doc, predictions, category=None):
    """Return (AP, AP50) that pycocotools gives on these files, overall or for one category."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = tmp_path / 'truth.json'
    labels.write_text(json.dumps(labels_doc))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(labels))
        found = truth.loadRes(str(predictions))
        evaluation = COCOeval(truth, found, 'bbox')
        if category is not None:
            evaluation.params.catIds = [category]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats[0], evaluation.stats[1]


def label_document(images, categories=CATEGORIES):
    """Return the COCO label file of evaluated images, as a labelling tool writes it."""
    annotations = [{'id': n + 1, 'image_id': i.image_id, 'category_id': b.category_id,
                    'bbox': [b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]],
                    'area': (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]), 'iscrowd': 0}
                   for n, (i, b) in enumerate((i, b) for i in images for b in i.boxes)]
    return {'images': [{'id': i.image_id, 'file_name': i.path.name, 'width': i.width,
                        'height': i.height} for i in images],
            'annotations': annotations,
            'categories': [{'id': c.category_id, 'name': c.name} for c in categories]}


def test_figures_known_by_construction():
    r = evaluate(KNOWN, 'model', 0.0, Target('precision', 0.5)).record
    assert set(r) == CONTRACT
    cat, cup, dog = r['phrases']['cat'], r['phrases']['cup'], r['phrases']['dog']
    assert (cat['labels'], cat['detections'], cat['precision']) == (2, 3, 2 / 3)
    assert cat['recall'] == 1.0
    assert cat['ap50'] == pytest.approx(CAT_AP, abs=1e-12)
    assert cat['ap'] == pytest.approx(CAT_AP, abs=1e-12)  # IoU 1: every threshold alike
    assert (cup['precision'], cup['recall']) == (1.0, 1.0)
    assert cup['ap50'] == pytest.approx(1.0, abs=1e-12)  # COCO adds np.spacing(1)
    assert cup['ap'] == pytest.approx(0.5, abs=1e-12)  # matched at 5 of the 10 IoU thresholds
    assert (dog['labels'], dog['detections'], dog['precision']) == (0, 1, 0.0)
    assert dog['recall'] is None and dog['ap'] is None and dog['ap50'] is None
    overall = r['overall']
    assert (overall['labels'], overall['detections'], overall['precision'],
            overall['recall']) == (3, 5, 0.6, 1.0)
    assert overall['ap50'] == pytest.approx((CAT_AP + 1.0) / 2, abs=1e-12)
    assert overall['ap'] == pytest.approx((CAT_AP + 0.5) / 2, abs=1e-12)
    assert r['pr_curves']['overall'] == {
        'score': [0.95, 0.9, 0.8, 0.7, 0.6], 'precision': [0.0, 0.5, 1 / 3, 0.5, 0.6],
        'recall': [0.0, 1 / 3, 1 / 3, 2 / 3, 1.0]}
    assert r['pr_curves']['dog'] == {'score': [0.95], 'precision': [0.0], 'recall': [None]}
    assert sorted(r['scores']['true_positive']) == [0.6, 0.7, 0.9]
    assert sorted(r['scores']['false_positive']) == [0.8, 0.95]
    assert r['confusion'] == {'phrases': ['cat', 'cup', 'dog', 'none'],
                              'matrix': [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]}
    assert r['calibration'] == {'target': {'precision': 0.5}, 'min_score': 0.6,
                                'per_phrase': {'cat': 0.7, 'cup': 0.6, 'dog': None}}
    assert [(f['phrase'], f['score']) for f in r['worst']['false_positives']] == [
        ('dog', 0.95), ('cat', 0.8)]
    assert r['worst']['misses'] == []


def test_counts_at_a_min_score_are_the_detections_the_node_keeps():
    r = evaluate(KNOWN, 'model', 0.75, Target('recall', 2 / 3)).record
    overall, cat, cup = r['overall'], r['phrases']['cat'], r['phrases']['cup']
    assert (overall['min_score'], overall['detections'], overall['precision'],
            overall['recall']) == (0.75, 3, 1 / 3, 1 / 3)
    assert (cat['detections'], cat['precision'], cat['recall']) == (2, 0.5, 0.5)
    assert (cup['detections'], cup['precision'], cup['recall']) == (0, None, 0.0)
    assert overall['ap'] == pytest.approx((CAT_AP + 0.5) / 2, abs=1e-12)  # threshold-free
    assert r['calibration']['min_score'] == 0.7  # the highest score reaching recall 2/3
    assert r['calibration']['per_phrase'] == {'cat': 0.7, 'cup': 0.6, 'dog': None}
    misses = r['worst']['misses']
    assert [(m['phrase'], m['label_box']) for m in misses] == [('cat', list(L2)),
                                                               ('cup', list(L3))]
    assert misses[0] == {'image': '/data/1.png', 'image_id': 1, 'phrase': 'cat',
                         'label_box': list(L2)}
    assert r['confusion']['matrix'] == [[1, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_ap_equals_pycocotools_on_the_written_files(tmp_path):
    evaluation = evaluate(KNOWN, 'model', 0.0, Target('precision', 0.9))
    paths = write(tmp_path / 'out', evaluation)
    assert [p.name for p in paths] == ['eval.json', 'predictions.json']  # 0.9: not reached
    record = json.loads(paths[0].read_text())
    doc = label_document(KNOWN.images)
    ap, ap50 = pycocotools_figures(tmp_path, doc, paths[1])
    assert abs(record['overall']['ap'] - ap) < 1e-6 and abs(record['overall']['ap50'] - ap50) \
        < 1e-6
    for category in CATEGORIES[:2]:
        ap, ap50 = pycocotools_figures(tmp_path, doc, paths[1], category.category_id)
        figures = record['phrases'][category.phrase]
        assert abs(figures['ap'] - ap) < 1e-6 and abs(figures['ap50'] - ap50) < 1e-6


def random_set(seed=7, images=6):
    """Return random label boxes and detections (near them and anywhere), scores with ties."""
    rng = np.random.default_rng(seed)
    evaluated, detections = [], []
    for image_id in range(1, images + 1):
        boxes = []
        for category in (CAT, CUP, DOG):
            for _ in range(rng.integers(0, 4)):
                x, y = rng.uniform(0, 250), rng.uniform(0, 170)
                box = (x, y, x + rng.uniform(10, 70), y + rng.uniform(10, 70))
                boxes.append((category, box))
                if rng.random() < 0.8:  # found, more or less well
                    x1, y1, x2, y2 = np.add(box, rng.normal(0, 6, 4)).tolist()
                    detections.append(Detection(image_id, category,
                                                (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)),
                                                round(float(rng.random()), 1)))
            for _ in range(rng.integers(0, 3)):  # anywhere
                x, y = rng.uniform(0, 250), rng.uniform(0, 170)
                detections.append(Detection(image_id, category,
                                            (x, y, x + rng.uniform(10, 70),
                                             y + rng.uniform(10, 70)),
                                            round(float(rng.random()), 1)))
        evaluated.append(image(image_id, *boxes, size=(320, 240)))
    return grounded(evaluated, detections)


def test_matching_is_cocoevals_detection_by_detection(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = random_set()
    matching = match(data.images, data.detections)
    assert 10 < matching.true_positive.sum() < len(data.detections) - 10
    evaluation = evaluate(data, 'model', 0.0, Target('precision', 0.8))
    paths = write(tmp_path / 'out', evaluation)
    doc = label_document(data.images)
    (tmp_path / 'truth.json').write_text(json.dumps(doc))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(tmp_path / 'truth.json'))
        found = truth.loadRes(str(paths[1]))
        coco = COCOeval(truth, found, 'bbox')
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    matched = {}
    for entry in coco.evalImgs:
        if entry is not None and entry['aRng'] == [0, 1e10]:
            matched.update(zip(entry['dtIds'], entry['dtMatches'][0] > 0))
    assert [bool(matched[n + 1]) for n in range(len(data.detections))] == \
        matching.true_positive.tolist()
    record = evaluation.record
    assert abs(record['overall']['ap'] - coco.stats[0]) < 1e-6
    assert abs(record['overall']['ap50'] - coco.stats[1]) < 1e-6
    for k, category in enumerate(CATEGORIES):  # COCO's recall: every detection counted
        recall = coco.eval['recall'][0, k, 0, -1]
        mine = record['phrases'][category.phrase]['recall']
        assert mine is None if recall == -1 else mine == pytest.approx(recall, abs=1e-12)


def test_without_detections_figures_are_zero_or_null_never_nan(tmp_path):
    data = grounded([image(1, (CAT, L1)), image(2)], [])
    evaluation = evaluate(data, 'model', 0.0, Target('precision', 0.5))
    paths = write(tmp_path / 'out', evaluation)
    record = json.loads(paths[0].read_text())  # written with allow_nan=False
    cat, dog = record['phrases']['cat'], record['phrases']['dog']
    assert (cat['precision'], cat['recall'], cat['ap50'], cat['ap']) == (None, 0.0, 0.0, 0.0)
    assert (dog['precision'], dog['recall'], dog['ap']) == (None, None, None)
    assert record['overall']['ap'] == 0.0 and record['overall']['precision'] is None
    assert record['calibration']['min_score'] is None
    assert record['pr_curves']['overall'] == {'score': [], 'precision': [], 'recall': []}
    assert json.loads(paths[1].read_text()) == []


def test_the_confusion_matrix_names_the_phrase_detected_on_a_label_box():
    data = grounded([image(1, (CAT, L1), (CUP, L3))], [
        Detection(1, DOG, L1, 0.3), Detection(1, CAT, (0.0, 0.0, 100.0, 60.0), 0.9),
        Detection(1, CUP, (0.0, 100.0, 100.0, 190.0), 0.2), Detection(1, DOG, L3, 0.1)])
    record = evaluate(data, 'model', 0.0, Target('precision', 0.5)).record
    assert record['confusion']['matrix'] == [[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    record = evaluate(data, 'model', 0.25, Target('precision', 0.5)).record
    assert record['confusion']['matrix'] == [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


def test_worst_lists_hold_twenty_of_each_highest_first():
    boxes = [(CAT, (float(x), 0.0, float(x) + 5 + x / 10, 5.0)) for x in range(0, 300, 10)]
    data = grounded([image(1, *boxes, size=(400, 100))], [
        Detection(1, CUP, (0.0, 50.0, 10.0, 60.0), s / 100) for s in range(30)])
    worst = evaluate(data, 'model', 0.0, Target('precision', 0.5)).record['worst']
    assert len(worst['misses']) == 20 and len(worst['false_positives']) == 20
    assert [m['label_box'][0] for m in worst['misses']] == [float(x) for x in
                                                            range(290, 90, -10)]
    assert [f['score'] for f in worst['false_positives']] == [s / 100 for s in
                                                              range(29, 9, -1)]


def test_curves_have_a_point_per_distinct_score_and_thin_to_a_limit():
    points = curve(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, True, False, False]), 4)
    assert points.score.tolist() == [0.9, 0.5, 0.1]
    assert points.precision.tolist() == [1.0, 2 / 3, 0.5]
    assert points.recall.tolist() == [0.25, 0.5, 0.5]
    assert thin(5, 10).tolist() == [0, 1, 2, 3, 4]
    kept = thin(10_000, 1000)
    assert len(kept) == 1000 and kept[0] == 0 and kept[-1] == 9999
    assert threshold(points, Target('precision', 0.6)) == 0.5
    assert threshold(points, Target('precision', 1.0)) == 0.9
    assert threshold(points, Target('recall', 0.5)) == 0.5
    assert threshold(points, Target('recall', 0.75)) is None
    with pytest.raises(ValueError, match='a target precision is 0 to 1'):
        Target('precision', 1.5)


def test_the_params_fragment_sets_min_score_as_the_node_reads_it():
    """The fragment has config/grounding.yaml's layout; its value passes the node's check."""
    summary = summarize(KNOWN.images, CATEGORIES, match(KNOWN.images, KNOWN.detections), 0.0)
    calibration = calibrate(summary, CATEGORIES, Target('precision', 0.5))
    text = params_fragment(calibration, '/data/labels "x"\n.json', 1, 'tiny')
    params = yaml.safe_load(text)
    assert params == {'/**': {'ros__parameters': {'min_score': 0.6}}}
    assert check_value('min_score', SPECS['min_score'], 0.6) is None
    comments = [line for line in text.splitlines() if line.startswith('#')]
    assert len(comments) == len(text.splitlines()) - 3  # one line per comment, none broken
    assert '#   "cat": 0.7' in comments and '#   "dog": none' in comments
    assert 'no parameter per phrase' in text
    calibration['min_score'] = None
    assert params_fragment(calibration, 'labels.json', 1, 'tiny') is None
