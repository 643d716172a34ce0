# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Precision, recall and precision-recall curves of the find task, per phrase and overall.

At a ``min_score``: the detections counted are those scoring at least that much (as the node
keeps them); precision is their true positives over their number (None without detections),
recall the true positives over the label boxes (None without label boxes). Overall figures pool
every phrase's detections and label boxes. AP (:mod:`.average_precision`) and the curves are
over every detection, threshold-free.

A curve has one point per distinct detection score, highest first: at that score as
``min_score``, the precision and recall (None without label boxes). :func:`thin` keeps at most
:data:`MAX_CURVE_POINTS` of them for the record; calibration reads the full curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kosmos_ros.evaluation.average_precision import AveragePrecision
from kosmos_ros.evaluation.labels import Category
from kosmos_ros.evaluation.matching import Matching
from kosmos_ros.evaluation.run import EvaluatedImage

MAX_CURVE_POINTS = 1000


@dataclass(frozen=True)
class Curve:
    """A precision-recall curve: one point per distinct score, highest score first."""

    score: np.ndarray
    precision: np.ndarray
    recall: np.ndarray | None  # None without label boxes
    labels: int

    def record(self, max_points: int = MAX_CURVE_POINTS) -> dict[str, list]:
        """Return the curve as lists (at most ``max_points`` points, :func:`thin`)."""
        keep = thin(len(self.score), max_points)
        recall = [None] * len(keep) if self.recall is None else self.recall[keep].tolist()
        return {'score': self.score[keep].tolist(), 'precision': self.precision[keep].tolist(),
                'recall': recall}


def thin(count: int, max_points: int) -> np.ndarray:
    """Return at most ``max_points`` indices of ``count`` points, evenly spread, ends kept."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, max_points)).astype(np.int64))


def curve(scores: np.ndarray, true_positive: np.ndarray, labels: int) -> Curve:
    """Return the precision-recall curve of detections (scores, outcomes) over ``labels``."""
    if not scores.size:
        empty = np.zeros(0, np.float64)
        return Curve(empty, empty, empty if labels else None, labels)
    order = np.argsort(-scores, kind='mergesort')
    ranked, hits = scores[order], np.cumsum(true_positive[order])
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # end of each score
    precision = hits[last] / (last + 1.0)
    recall = hits[last] / float(labels) if labels else None
    return Curve(ranked[last], precision, recall, labels)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Counts:
    """What a set of detections and label boxes comes to at a ``min_score``."""

    labels: int
    detections: int
    true_positives: int

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positives, self.detections)

    @property
    def recall(self) -> float | None:
        return _ratio(self.true_positives, self.labels)


def counts(scores: np.ndarray, true_positive: np.ndarray, labels: int,
           min_score: float) -> Counts:
    kept = scores >= min_score
    return Counts(labels, int(kept.sum()), int((true_positive & kept).sum()))


@dataclass(frozen=True)
class Summary:
    """The figures of an evaluation: counts, AP and curves, overall and per category id."""

    overall: Counts
    phrases: dict[int, Counts]
    curves: dict[Any, Curve]  # 'overall' and each category id

    def record(self, categories: Sequence[Category], ap: AveragePrecision,
               min_score: float) -> dict[str, Any]:
        """Return the ``overall``, ``phrases`` and ``pr_curves`` parts of ``eval.json``."""
        overall = {'labels': self.overall.labels, 'detections': self.overall.detections,
                   'min_score': float(min_score), 'precision': self.overall.precision,
                   'recall': self.overall.recall, 'ap50': ap.ap50, 'ap': ap.ap}
        phrases, curves = {}, {'overall': self.curves['overall'].record()}
        for category in categories:
            c = self.phrases[category.category_id]
            cat_ap, cat_ap50 = ap.per_category.get(category.category_id, (None, None))
            phrases[category.phrase] = {
                'category_id': category.category_id, 'labels': c.labels,
                'detections': c.detections, 'precision': c.precision, 'recall': c.recall,
                'ap50': cat_ap50, 'ap': cat_ap}
            curves[category.phrase] = self.curves[category.category_id].record()
        return {'overall': overall, 'phrases': phrases, 'pr_curves': curves}


def summarize(images: Sequence[EvaluatedImage], categories: Sequence[Category],
              matching: Matching, min_score: float) -> Summary:
    """Return the counts at ``min_score`` and the curves, per category and pooled."""
    labels_of = {c.category_id: 0 for c in categories}
    for image in images:
        for label in image.boxes:
            labels_of[label.category_id] += 1
    category_of = np.array([d.category_id for d in matching.detections], np.int64)
    scores, hits = matching.scores, matching.true_positive
    phrases, curves = {}, {}
    for category in categories:
        mine = category_of == category.category_id
        labels = labels_of[category.category_id]
        phrases[category.category_id] = counts(scores[mine], hits[mine], labels, min_score)
        curves[category.category_id] = curve(scores[mine], hits[mine], labels)
    total = sum(labels_of.values())
    curves['overall'] = curve(scores, hits, total)
    return Summary(counts(scores, hits, total, min_score), phrases, curves)
