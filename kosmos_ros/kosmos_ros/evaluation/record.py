# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What an evaluation writes: ``eval.json``, ``predictions.json`` and ``min_score.yaml``.

``eval.json`` (schema ``kosmos_eval/1``) holds every figure of the run: the counts, precision,
recall and AP overall and per phrase, the precision-recall curves, the scores of true and false
positives, the confusion of phrases, the calibration and the worst misses and false positives
(:func:`evaluate`). Undefined figures (precision without detections, recall or AP without
label boxes) are null, never NaN. ``predictions.json`` is every detection in COCO's results
format, so ``pycocotools`` can be run on it again; ``min_score.yaml`` is the calibrated
``min_score`` as a params file (:func:`~.calibration.params_fragment`; not written when the
target is not reached). Files are written whole (a temporary file renamed into place).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
from typing import Any, Sequence

from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.average_precision import average_precision, results
from kosmos_ros.evaluation.calibration import calibrate, params_fragment, Target
from kosmos_ros.evaluation.matching import confusion, IOU_THRESHOLD, match, worst
from kosmos_ros.evaluation.metrics import summarize
from kosmos_ros.evaluation.run import GroundedSet

SCHEMA = 'kosmos_eval/1'
MAX_WORST = 20
EVAL_FILE = 'eval.json'
PREDICTIONS_FILE = 'predictions.json'
PARAMS_FILE = 'min_score.yaml'


@dataclass(frozen=True)
class Evaluation:
    """An evaluation's record (``eval.json``), predictions and params fragment (or None)."""

    record: dict[str, Any]
    predictions: list[dict[str, Any]]
    fragment: str | None


def evaluate(grounded: GroundedSet, model: str, min_score: float,
             target: Target) -> Evaluation:
    """Score the detections of a grounded label set; return what the run writes."""
    images, detections = grounded.images, grounded.detections
    categories = grounded.labels.categories
    matching = match(images, detections, IOU_THRESHOLD)
    summary = summarize(images, categories, matching, min_score)
    ap = average_precision(images, categories, detections)
    calibration = calibrate(summary, categories, target)
    labels = os.path.abspath(grounded.labels.path)
    record = {
        'schema': SCHEMA, 'task': 'find', 'model': model, 'labels': labels,
        'images': len(images), 'skipped': dict(sorted(grounded.skipped.items())),
        'iou_threshold': IOU_THRESHOLD,
        **summary.record(categories, ap, min_score),
        'scores': {
            'true_positive': [float(d.score) for d, hit in zip(detections,
                                                               matching.true_positive) if hit],
            'false_positive': [float(d.score) for d, hit in zip(detections,
                                                                matching.true_positive)
                               if not hit]},
        'confusion': confusion(images, detections, categories, min_score, IOU_THRESHOLD),
        'calibration': calibration,
        'worst': worst(images, matching, categories, min_score, MAX_WORST),
    }
    return Evaluation(record, results(detections),
                      params_fragment(calibration, labels, len(images), model))


def check_output(folder: Path, overwrite: bool) -> None:
    """Refuse an output folder that is a file, or holds an evaluation, unless ``overwrite``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EvaluationError(f'{folder}: the output is a file, not a folder')
    if (folder / EVAL_FILE).exists() and not overwrite:
        raise EvaluationError(f'{folder / EVAL_FILE} exists; give --overwrite to replace it')


def check_apart_from_inputs(folder: Path, inputs: Sequence[tuple[str, Path]],
                            extra: Sequence[str] = ()) -> None:
    """Refuse an output file that is an input (``(role, path)``), after links and ``..``.

    eval.json, predictions.json, min_score.yaml and the ``extra`` outputs (names in
    ``folder``: the frames folder of bag frames) must never replace, hold or lie inside the
    label file, the phrase map, a labelled image or a bag (``-o`` the labels' own folder, a
    label file named ``predictions.json``): the rule :mod:`kosmos_ros.bag.safety` keeps for
    every tool.
    """
    from kosmos_ros.bag import BagError
    from kosmos_ros.bag.safety import check_apart, Place

    places = [Place(role, Path(path)) for role, path in inputs]
    try:
        for name in (EVAL_FILE, PREDICTIONS_FILE, PARAMS_FILE, *extra):
            check_apart(Place('the output', Path(folder) / name), places,
                        '; outputs never replace what the command reads: choose another -o')
    except BagError as exc:
        raise EvaluationError(str(exc)) from None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)


def write(folder: Path, evaluation: Evaluation, overwrite: bool = False) -> list[Path]:
    """Write the evaluation's files into ``folder``; return their paths.

    EvaluationError when the folder cannot take them (:func:`check_output`) or a figure is
    not a finite number (never written as NaN).
    """
    folder = Path(folder)
    check_output(folder, overwrite)
    try:
        record = json.dumps(evaluation.record, indent=1, allow_nan=False) + '\n'
        predictions = json.dumps(evaluation.predictions, allow_nan=False) + '\n'
    except ValueError as exc:
        raise EvaluationError(f'a figure is not a finite number: {exc}') from None
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / PREDICTIONS_FILE]
    _write(written[0], predictions)
    params = folder / PARAMS_FILE
    if evaluation.fragment is None:
        params.unlink(missing_ok=True)  # a stale calibration must not pass for this one
    else:
        _write(params, evaluation.fragment)
        written.append(params)
    _write(folder / EVAL_FILE, record)  # last: the run is whole once it is there
    return [folder / EVAL_FILE] + written


def _figure(value: float | None) -> str:
    return '-' if value is None else f'{value:.3f}'


def describe(evaluation: Evaluation, elapsed_s: float, queries: int) -> str:
    """Return the run's summary for the terminal: a table of phrases, calibration, skips."""
    r = evaluation.record
    rate = r['images'] / elapsed_s if elapsed_s > 0 else 0.0
    lines = [f'{r["images"]} images, {r["overall"]["labels"]} label boxes, '
             f'{len(r["phrases"])} phrases: {queries} queries in {elapsed_s:.1f} s '
             f'({rate:.2f} images/s)',
             f'{"phrase":<24} {"labels":>7} {"detections":>10} {"precision":>9} {"recall":>7} '
             f'{"AP50":>6} {"AP":>6}']
    rows = [(name, p) for name, p in r['phrases'].items()] + [
        (f'overall (min_score {r["overall"]["min_score"]:g})', r['overall'])]
    for name, p in rows:
        lines.append(f'{name[:24]:<24} {p["labels"]:>7} {p["detections"]:>10} '
                     f'{_figure(p["precision"]):>9} {_figure(p["recall"]):>7} '
                     f'{_figure(p["ap50"]):>6} {_figure(p["ap"]):>6}')
    calibration = r['calibration']
    (measure, goal), = calibration['target'].items()
    value = calibration['min_score']
    lines.append(f'calibration: {measure} >= {goal:g}: ' + (
        f'min_score {value:.6g}' if value is not None else 'not reached at any min_score'))
    if r['skipped']:
        lines.append('skipped: ' + '; '.join(f'{n} {reason}'
                                             for reason, n in r['skipped'].items()))
    return '\n'.join(lines)
