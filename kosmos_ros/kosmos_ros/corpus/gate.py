# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The gate of ``kosmos_corpus compare``: limits on a comparison's totals, and its verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What each gate checks, in plain words.
GATE_LABELS = {
    'max_added': 'boxes added in B', 'max_lost': 'boxes lost in B', 'max_moved': 'boxes moved',
    'max_caption_changes': 'captions changed',
    'max_score_shift': 'largest score shift of a matched box',
    'max_missing_frames': 'frames of A missing from B',
    'max_latency_ratio': 'mean latency, B over A (same batch layout only)',
    'nan_values': 'NaN or infinite values', 'complete_runs': 'both runs complete',
    'grounded_frames': 'both runs grounded frames'}


@dataclass(frozen=True)
class Thresholds:
    """Limits on the totals; None leaves a total unchecked. Exceeding any fails the gate.

    Some checks hold unless asked otherwise: frames of run A that run B did not ground
    (``max_missing_frames`` 0), a run that is not complete (interrupted, incomplete, still
    running) unless ``allow_incomplete``, a run without a grounded frame unless
    ``allow_empty``, and any NaN or infinite score, box or latency (always). A limit on a
    total that has no value fails: the latency ratio of runs whose batch layouts differ (or
    are not known) is *not comparable*, and ``max_latency_ratio`` then fails with the reason.
    """

    max_added: int | None = None
    max_lost: int | None = None
    max_moved: int | None = None
    max_caption_changes: int | None = None
    max_score_shift: float | None = None
    max_missing_frames: int | None = 0
    max_latency_ratio: float | None = None
    allow_incomplete: bool = False
    allow_empty: bool = False

    _TOTALS = {'max_added': 'added', 'max_lost': 'lost', 'max_moved': 'moved',
               'max_caption_changes': 'caption_changes', 'max_score_shift': 'score_shift_max',
               'max_missing_frames': 'missing_frames', 'max_latency_ratio': 'latency_ratio'}

    def verdict(self, totals: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, total in self._TOTALS.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = totals.get(total)
            if name == 'max_latency_ratio' and not totals.get('latency_comparable', False):
                value = 'not comparable: ' + (totals.get('latency_not_comparable') or
                                              'the batch layouts are not known')
            elif value is None:
                value = 'no value to check'
            out[name] = {'limit': limit, 'value': value,
                         'exceeded': isinstance(value, str) or not value <= limit}
        out['nan_values'] = {'limit': 0, 'value': totals['nan_values'],
                             'exceeded': totals['nan_values'] > 0}
        if not self.allow_incomplete:
            states = [f'{run} {totals[f"status_{run.lower()}"]}' for run in 'AB'
                      if totals[f'status_{run.lower()}'] not in (None, 'complete')]
            out['complete_runs'] = {'limit': 'A and B complete',
                                    'value': ', '.join(states) or 'both complete',
                                    'exceeded': bool(states)}
        if not self.allow_empty:
            empty = [run for run in 'AB' if not totals[f'frames_{run.lower()}']]
            out['grounded_frames'] = {'limit': 'some in A and in B',
                                      'value': ('none in ' + ' and '.join(empty)) if empty
                                      else f'{totals["frames_a"]} and {totals["frames_b"]}',
                                      'exceeded': bool(empty)}
        return out
