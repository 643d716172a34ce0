# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which detection belongs to which track: overlap, phrases and an optimal assignment.

The pairs come from ``scipy.optimize.linear_sum_assignment`` (the Hungarian method's job, done
by a maintained solver) on a cost of ``1 - IoU``, never from a greedy pass: a greedy pass gives
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
              iou_threshold: float) -> list[tuple[int, int]]:
    """Pair tracks with detections, both given as (phrase key, box); return (track, detection).

    Only pairs of equal phrase keys overlapping by at least ``iou_threshold`` may match. Among
    those, ``scipy.optimize.linear_sum_assignment`` finds the most pairs and, of such
    assignments, the one of least summed ``1 - IoU`` (a forbidden pair costs more than every
    allowed pair together): one high overlap does not take a detection that two tracks need.
    """
    if not tracks or not detections:
        return []
    overlap = iou_matrix([box for _, box in tracks], [box for _, box in detections])
    same = np.array([[t == d for d, _ in detections] for t, _ in tracks], bool)
    allowed = same & (overlap >= iou_threshold)
    cost = np.where(allowed, 1.0 - overlap, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


def phrase_key(text: str) -> str:
    """Return the form of a phrase that association compares (case and spacing ignored)."""
    return ' '.join(text.lower().split())
