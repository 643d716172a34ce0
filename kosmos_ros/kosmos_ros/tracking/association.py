# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which detection belongs to which track: overlap, phrases and an optimal assignment.

The pairs come from ``scipy.optimize.linear_sum_assignment`` (the Hungarian method's job, done
by a maintained solver) on a cost of ``1 - IoU`` (a predicted box may also match by the
distance of the centres, within a reach), never from a greedy pass: a greedy pass gives
a detection to the track it overlaps most even when another track has no other match, and so
breaks identities exactly where two look-alike objects pass each other.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from kosmos_ros.datatypes import PixelBox

# Cost of a pair that must not match; finite, so that linear_sum_assignment always has a
# solution, and larger than any sum of real costs (each at most 1).
_FORBIDDEN = 1e6


def iou_matrix(first: Sequence[PixelBox], second: Sequence[PixelBox]) -> np.ndarray:
    """Return the (len(first), len(second)) intersection-over-union of every pair of boxes."""
    a = np.array([[p.x1, p.y1, p.x2, p.y2] for p in first], np.float64).reshape(-1, 1, 4)
    b = np.array([[p.x1, p.y1, p.x2, p.y2] for p in second], np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0,
                     None)
    inter = width * height
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def associate(tracks: Sequence[tuple[str, PixelBox]], detections: Sequence[tuple[str, PixelBox]],
              iou_threshold: float, reach: Sequence[float] | None = None
              ) -> list[tuple[int, int]]:
    """Pair tracks with detections, both given as (phrase key, box); return (track, detection).

    Only pairs of equal phrase keys may match: those overlapping by at least
    ``iou_threshold``, and, for track ``i`` with ``reach[i] > 0`` (a box the motion model
    predicted, which drifts from its object), those whose centres lie within ``reach[i]``
    pixels and whose areas differ by less than a factor of 4. Among those,
    ``scipy.optimize.linear_sum_assignment`` finds the most pairs and, of such assignments,
    the one of least summed ``1 - IoU`` (plus, for a pair allowed by its reach alone, its
    distance over the reach; a forbidden pair costs more than every allowed pair together):
    one high overlap does not take a detection that two tracks need.
    """
    if not tracks or not detections:
        return []
    first, second = [box for _, box in tracks], [box for _, box in detections]
    overlap = iou_matrix(first, second)
    same = np.array([[t == d for d, _ in detections] for t, _ in tracks], bool)
    near = overlap >= iou_threshold
    cost = 1.0 - overlap
    if reach is not None and any(r > 0.0 for r in reach):
        limit = np.asarray(reach, np.float64).reshape(-1, 1)
        a, b = _centres_and_areas(first), _centres_and_areas(second)
        distance = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        ratio = a[:, None, 2] / np.maximum(b[None, :, 2], 1e-9)
        reached = (limit > 0.0) & (distance <= limit) & (ratio > 0.25) & (ratio < 4.0)
        cost = np.where(near, cost, cost + distance / np.maximum(limit, 1e-9))
        near = near | reached
    allowed = same & near
    cost = np.where(allowed, cost, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


def _centres_and_areas(boxes: Sequence[PixelBox]) -> np.ndarray:
    """Return (N, 3): each box's centre x, centre y and area."""
    return np.array([[(b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, b.width * b.height] for b in boxes],
                    np.float64).reshape(-1, 3)


def phrase_key(text: str) -> str:
    """Return the form of a phrase that association compares (case and spacing ignored)."""
    return ' '.join(text.lower().split())
