# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Detections paired with label boxes: true and false positives, misses, confused phrases.

The pairing is the one ``pycocotools.cocoeval.COCOeval`` makes at IoU 0.5, so the counts here
and its AP describe the same matches: per image and category, detections in order of
decreasing score (a stable sort: ties keep the order they came in) each take the unmatched
label box they overlap most, if that overlap is at least 0.5 (IoU of ``[x, y, w, h]`` boxes
computed as its ``bbIou`` does). A detection's match depends only on the detections scored
above it, so the matches at any ``min_score`` are the matches of all detections, cut there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kosmos_ros.evaluation.labels import Box, Category
from kosmos_ros.evaluation.run import Detection, EvaluatedImage

IOU_THRESHOLD = 0.5
NONE = 'none'  # the confusion matrix's column of label boxes no detection overlaps


def xywh(box: Box) -> tuple[float, float, float, float]:
    """Return (x1, y1, x2, y2) as COCO's [x, y, width, height]."""
    return (box[0], box[1], box[2] - box[0], box[3] - box[1])


def iou_xywh(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the IoU of every pair of ``[x, y, w, h]`` rows, computed as pycocotools does."""
    a = np.asarray(first, np.float64).reshape(-1, 1, 4)
    b = np.asarray(second, np.float64).reshape(1, -1, 4)
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - \
        np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - \
        np.maximum(a[..., 1], b[..., 1])
    inter = np.where((width > 0) & (height > 0), width * height, 0.0)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class Matching:
    """Each detection's outcome and each label box's, over all detections.

    ``true_positive[i]`` tells whether ``detections[i]`` matched a label box;
    ``label_scores[image_id][j]`` is the score of the detection that matched label box ``j``
    of that image (None: none did). At a ``min_score``, a detection counts when its score is
    at least ``min_score``, and a label box is found when its matching score is.
    """

    detections: Sequence[Detection]
    true_positive: np.ndarray
    scores: np.ndarray
    label_scores: dict[int, list[float | None]]


def match(images: Sequence[EvaluatedImage], detections: Sequence[Detection],
          iou_threshold: float = IOU_THRESHOLD) -> Matching:
    """Match every detection to the label boxes of its image and category (COCOeval's way)."""
    scores = np.array([d.score for d in detections], np.float64)
    true_positive = np.zeros(len(detections), bool)
    label_scores = {image.image_id: [None] * len(image.boxes) for image in images}
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, det in enumerate(detections):
        groups[det.image_id, det.category_id].append(index)
    for image in images:
        by_category: dict[int, list[int]] = defaultdict(list)
        for j, label in enumerate(image.boxes):
            by_category[label.category_id].append(j)
        for category_id, labels in by_category.items():
            dets = groups.get((image.image_id, category_id), [])
            if not dets:
                continue
            order = np.argsort(-scores[dets], kind='mergesort')
            ious = iou_xywh([xywh(detections[dets[i]].box) for i in order],
                            [xywh(image.boxes[j].box) for j in labels])
            taken = [False] * len(labels)
            for row, i in enumerate(order):
                best, best_iou = -1, min(iou_threshold, 1 - 1e-10)
                for g in range(len(labels)):
                    if taken[g] or ious[row, g] < best_iou:
                        continue
                    best, best_iou = g, ious[row, g]
                if best >= 0:
                    taken[best] = True
                    true_positive[dets[i]] = True
                    label_scores[image.image_id][labels[best]] = float(scores[dets[i]])
    return Matching(detections, true_positive, scores, label_scores)


def confusion(images: Sequence[EvaluatedImage], detections: Sequence[Detection],
              categories: Sequence[Category], min_score: float,
              iou_threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Return the confusion of phrases: label box phrase (row) by detected phrase (column).

    Each label box counts once: in the column of the detection (any phrase, scoring at least
    ``min_score``) that overlaps it most, if by IoU ``iou_threshold`` or more (equal overlaps:
    the higher score), else in the last column, ``none``.
    """
    column = {c.category_id: i for i, c in enumerate(categories)}
    matrix = np.zeros((len(categories), len(categories) + 1), np.int64)
    on_image: dict[int, list[Detection]] = defaultdict(list)
    for det in detections:
        if det.score >= min_score:
            on_image[det.image_id].append(det)
    for image in images:
        dets = on_image.get(image.image_id, [])
        ious = iou_xywh([xywh(b.box) for b in image.boxes], [xywh(d.box) for d in dets]) \
            if dets and image.boxes else np.zeros((len(image.boxes), 0))
        for j, label in enumerate(image.boxes):
            best = len(categories)
            candidates = [(ious[j, k], d.score, column[d.category_id])
                          for k, d in enumerate(dets) if ious[j, k] >= iou_threshold]
            if candidates:
                best = max(candidates, key=lambda c: (c[0], c[1]))[2]
            matrix[column[label.category_id], best] += 1
    return {'phrases': [c.phrase for c in categories] + [NONE],
            'matrix': matrix.tolist()}


def worst(images: Sequence[EvaluatedImage], matching: Matching,
          categories: Sequence[Category], min_score: float,
          count: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Return the ``count`` largest missed label boxes and highest-scoring false positives.

    Both at ``min_score``: a miss is a label box no detection scoring that much matched; a
    false positive, a detection scoring that much that matched no label box.
    """
    phrase = {c.category_id: c.phrase for c in categories}
    path = {image.image_id: str(image.path) for image in images}
    misses = []
    for image in images:
        for j, label in enumerate(image.boxes):
            found = matching.label_scores[image.image_id][j]
            if found is None or found < min_score:
                x1, y1, x2, y2 = label.box
                misses.append(((x2 - x1) * (y2 - y1), image.image_id, j, {
                    'image': path[image.image_id], 'image_id': image.image_id,
                    'phrase': phrase[label.category_id], 'label_box': [x1, y1, x2, y2]}))
    misses.sort(key=lambda m: (-m[0], m[1], m[2]))
    false_positives = [
        (-float(det.score), index, det) for index, det in enumerate(matching.detections)
        if det.score >= min_score and not matching.true_positive[index]]
    false_positives.sort(key=lambda f: (f[0], f[1]))
    return {
        'misses': [m[3] for m in misses[:count]],
        'false_positives': [
            {'image': path[det.image_id], 'image_id': det.image_id,
             'phrase': phrase[det.category_id], 'box': list(det.box), 'score': float(det.score)}
            for _, _, det in false_positives[:count]]}
