# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""How the compare reports say things: plain-language labels, numbers, strict JSON values."""

from __future__ import annotations

import math
from typing import Any

# Plain-language names of the totals, in the order the reports show them.
TOTAL_LABELS = {
    'frames_a': 'frames A grounded', 'frames_b': 'frames B grounded',
    'frames_both': 'frames grounded by both',
    'only_a': 'frames only A grounded (missing from B)',
    'only_b': 'frames only B grounded (new in B)',
    'changed_frames': 'frames that changed',
    'boxes_a': 'boxes in A (frames grounded by both)',
    'boxes_b': 'boxes in B (frames grounded by both)',
    'matched': 'boxes found by both (matched by IoU)', 'added': 'boxes added in B',
    'lost': 'boxes lost in B (A had them)', 'moved': 'boxes moved (found by both, shifted)',
    'caption_changes': 'captions changed',
    'score_shift_max': 'largest score shift of a matched box',
    'score_shift_mean': 'mean size of the score shifts',
    'score_shift_signed_mean': 'mean score change, B minus A',
    'missing_frames': 'frames of A missing from B (gate)',
    'nan_values': 'NaN or infinite scores, boxes or latencies',
    'status_a': 'run A status', 'status_b': 'run B status',
    'latency_comparable': 'latency comparable (same batch layout and device)',
    'latency_not_comparable': 'why latency is not comparable',
    'latency_mean_a': 'mean latency per frame, A (s)', 'latency_mean_b': 'mean latency per '
    'frame, B (s)', 'latency_median_a': 'median latency per frame, A (s)',
    'latency_median_b': 'median latency per frame, B (s)',
    'latency_p95_a': '95th percentile latency per frame, A (s)',
    'latency_p95_b': '95th percentile latency per frame, B (s)',
    'latency_ratio': 'mean latency, B over A'}
# Plain-language names of the columns of the tables by bag, topic and phrase.
COLUMN_LABELS = {
    'bag': 'bag', 'topic': 'topic', 'phrase': 'phrase',
    'frames_a': 'frames A grounded', 'frames_b': 'frames B grounded',
    'frames_both': 'grounded by both', 'only_a': 'only A (missing from B)',
    'only_b': 'only B (new)', 'changed_frames': 'frames changed',
    'boxes_a': 'boxes in A', 'boxes_b': 'boxes in B', 'matched': 'found by both',
    'added': 'added', 'lost': 'lost', 'moved': 'moved', 'caption_changes': 'captions changed',
    'score_shift_signed_mean': 'mean score change (B - A)',
    'score_shift_max': 'largest score shift'}


def finite(value: Any) -> Any:
    """Return None for a NaN or infinite float (JSON has no NaN), else the value."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plain(value: Any) -> Any:
    """Return a report record with every NaN or infinite float as None (valid JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return finite(value)


def fmt(value: Any) -> str:
    """Return a total as text: 4 significant digits for a float, 'n/a' for none."""
    if value is None:
        return 'n/a'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    return f'{value:.4g}' if isinstance(value, float) else str(value)
