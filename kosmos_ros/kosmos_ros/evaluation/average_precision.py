# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""AP@0.5 and AP@[.5:.95], per category and overall, by ``pycocotools.cocoeval.COCOeval``.

The label boxes of the evaluated images (fitted to them) and every detection go to
``COCOeval`` as COCO's own files would (the ``predictions.json`` a run writes is exactly the
detections given here), with every image and category of the evaluation. The figures are read
from its accumulated precision table as its ``summarize`` reads them: area range ``all``, at
most 100 detections per image and category, the mean over the 101 recall points of every
IoU threshold where the category has labels. A category without label boxes has no AP (None),
and the overall AP is the mean over the categories that have some, as COCO's is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import io
from typing import Any, Sequence

import numpy as np

from kosmos_ros.evaluation.labels import Category
from kosmos_ros.evaluation.matching import xywh
from kosmos_ros.evaluation.run import Detection, EvaluatedImage


@dataclass(frozen=True)
class AveragePrecision:
    """AP@[.5:.95] and AP@0.5 overall and per category id; None where undefined."""

    ap: float | None
    ap50: float | None
    per_category: dict[int, tuple[float | None, float | None]]  # id -> (ap, ap50)


def ground_truth(images: Sequence[EvaluatedImage], categories: Sequence[Category]) -> dict:
    """Return the label boxes as a COCO label document (ids from 1, areas of the boxes)."""
    annotations = []
    for image in images:
        for label in image.boxes:
            box = xywh(label.box)
            annotations.append({'id': len(annotations) + 1, 'image_id': image.image_id,
                                'category_id': label.category_id, 'bbox': list(box),
                                'area': box[2] * box[3], 'iscrowd': 0})
    return {'images': [{'id': i.image_id, 'width': i.width, 'height': i.height}
                       for i in images],
            'categories': [{'id': c.category_id, 'name': c.phrase} for c in categories],
            'annotations': annotations}


def results(detections: Sequence[Detection]) -> list[dict[str, Any]]:
    """Return the detections in COCO's results format (image_id, category_id, bbox, score)."""
    return [{'image_id': d.image_id, 'category_id': d.category_id,
             'bbox': list(xywh(d.box)), 'score': float(d.score)} for d in detections]


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def average_precision(images: Sequence[EvaluatedImage], categories: Sequence[Category],
                      detections: Sequence[Detection]) -> AveragePrecision:
    """Run ``COCOeval`` (bbox) on the label boxes and detections; return its AP figures."""
    if not images:
        return AveragePrecision(None, None, {c.category_id: (None, None) for c in categories})
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = ground_truth(images, categories)
        truth.createIndex()
        if detections:
            found = truth.loadRes(results(detections))
        else:  # loadRes refuses an empty list; no detection is an empty result set
            found = COCO()
            found.dataset = {'images': truth.dataset['images'],
                             'categories': truth.dataset['categories'], 'annotations': []}
            found.createIndex()
        evaluation = COCOeval(truth, found, 'bbox')
        evaluation.params.imgIds = sorted(i.image_id for i in images)
        evaluation.params.catIds = sorted(c.category_id for c in categories)
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval['precision'][:, :, :, 0, -1]  # area all, 100 detections
    at_50 = int(np.argmin(np.abs(evaluation.params.iouThrs - 0.5)))
    per_category = {
        category_id: (_mean(precision[:, :, k]), _mean(precision[at_50, :, k]))
        for k, category_id in enumerate(evaluation.params.catIds)}
    return AveragePrecision(_mean(precision), _mean(precision[at_50]), per_category)
