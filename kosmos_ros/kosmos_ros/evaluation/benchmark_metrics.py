# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The article's grounding figures: IoU, recall@k of phrases, accuracy@0.5 of expressions.

Boxes are ``(x1, y1, x2, y2)`` pixel corners. The rules follow the KOSMOS-2 article's own
evaluation (microsoft/unilm ``kosmos-2/evaluation``):

- *Phrase grounding* (Flickr30k Entities), **recall@k**: the first ``k`` boxes the model gave
  the phrase, in the order it generated them, hit when one of them overlaps *any* ground-truth
  box of the phrase at IoU >= 0.5 (the "separate boxes" protocol: a phrase naming two people
  has two boxes, and finding either is a hit; boxes are not merged into one). A phrase the
  model gave no box is a miss. Each phrase counts once in ``all`` and once under each of its
  types.
- *Referring expressions* (RefCOCO, RefCOCO+, RefCOCOg), **accuracy@0.5**: the first box the
  model gave the expression hits the one ground-truth box at IoU >= 0.5; no box is a miss.

The order is the model's, not its score's: the article takes the boxes as generated.
Results are plain dicts ready for JSON (a ratio of nothing is None, never NaN).
"""

from __future__ import annotations

from collections import defaultdict
import math
from typing import Any, Iterable, Sequence

Box = Sequence[float]
IOU_THRESHOLD = 0.5
RECALL_KS = (1, 5, 10)


def iou(a: Box, b: Box) -> float:
    """Return the intersection over union of two boxes (0.0 when either has no area)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    if not all(math.isfinite(v) for v in (ax1, ay1, ax2, ay2, bx1, by1, bx2, by2)):
        return 0.0
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return inter / (area_a + area_b - inter)


def best_iou(predicted: Sequence[Box], truths: Sequence[Box], k: int | None = 1) -> float | None:
    """Return the best IoU of the first ``k`` predicted boxes (all: None) with any truth box.

    None when the model gave no box.
    """
    shown = list(predicted) if k is None else list(predicted)[:k]
    if not shown or not truths:
        return None
    return max(iou(p, t) for p in shown for t in truths)


def hit(predicted: Sequence[Box], truths: Sequence[Box], k: int | None = 1,
        threshold: float = IOU_THRESHOLD) -> bool:
    """Whether one of the first ``k`` predicted boxes overlaps a truth box at ``threshold``."""
    best = best_iou(predicted, truths, k)
    return best is not None and best >= threshold


def ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def phrase_grounding(rows: Iterable[dict[str, Any]], ks: Sequence[int] = RECALL_KS
                     ) -> dict[str, Any]:
    """Return recall@k of phrase rows, over all and by phrase type.

    Each row holds ``predicted`` (boxes in generation order), ``truth`` (boxes) and ``types``.
    ``upper_bound`` counts a phrase hit by any of its predicted boxes.
    """
    hits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        groups = ['all', *row.get('types', ())]
        for group in groups:
            totals[group] += 1
        for name, k in [(f'recall@{k}', k) for k in ks] + [('upper_bound', None)]:
            if hit(row['predicted'], row['truth'], k):
                for group in groups:
                    hits[group][name] += 1
    names = [f'recall@{k}' for k in ks] + ['upper_bound']

    def figures(group: str) -> dict[str, Any]:
        out: dict[str, Any] = {'phrases': totals[group]}
        out.update({name: ratio(hits[group][name], totals[group]) for name in names})
        return out

    overall = figures('all') if totals['all'] else {'phrases': 0, **dict.fromkeys(names)}
    return {'metric': 'recall@1', 'iou_threshold': IOU_THRESHOLD, 'overall': overall,
            'by_type': {g: figures(g) for g in sorted(totals) if g != 'all'}}


def referring_expressions(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Return accuracy@0.5 of expression rows (first box), and with any box (upper bound)."""
    total = first = anywhere = 0
    ious: list[float] = []
    for row in rows:
        total += 1
        first += hit(row['predicted'], row['truth'], 1)
        anywhere += hit(row['predicted'], row['truth'], None)
        best = best_iou(row['predicted'], row['truth'], 1)
        ious.append(0.0 if best is None else best)
    return {'metric': 'accuracy@0.5', 'iou_threshold': IOU_THRESHOLD,
            'overall': {'expressions': total, 'accuracy@0.5': ratio(first, total),
                        'upper_bound': ratio(anywhere, total),
                        'mean_iou': sum(ious) / total if total else None}}


def box_in_image(box: Box, width: float, height: float, tolerance: float = 1.0
                 ) -> tuple[float, float, float, float] | None:
    """Return ``box`` clipped to a width x height image, or None when it does not fit.

    A box that reaches at most ``tolerance`` pixels past an edge (annotations in 1-based
    pixels end on the last one) is clipped; one that reaches further, is empty, or has a
    coordinate that is not a finite number does not fit.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return None
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
