# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ``min_score`` that reaches a target precision or recall, and its params-file fragment.

Read from the precision-recall curves (:mod:`.metrics`), one point per distinct detection
score, the score standing for ``min_score`` (the node keeps a box scoring at least that):

- target precision P: the lowest score at which precision is at least P, so the most recall
  that precision allows; None when no score reaches P;
- target recall R: the highest score at which recall is at least R, so the fewest detections
  that find that share of the label boxes; None when no score reaches R (or there are no
  label boxes).

The overall value, from the pooled curve, is what the node's single ``min_score`` can take:
:func:`params_fragment` writes it as a params file (the layout of ``config/grounding.yaml``).
The node has no parameter per phrase; each phrase's own threshold for the same target is
written beside it as a comment, for reference.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from typing import Any, Sequence

import numpy as np

from kosmos_ros.evaluation.labels import Category
from kosmos_ros.evaluation.metrics import Curve, Summary

MEASURES = ('precision', 'recall')


@dataclass(frozen=True)
class Target:
    """What the calibration must reach: ``precision`` or ``recall`` of at least ``value``."""

    measure: str
    value: float

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise ValueError(f'the target is precision or recall; got {self.measure!r}')
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f'a target {self.measure} is 0 to 1; got {self.value}')

    def record(self) -> dict[str, float]:
        return {self.measure: float(self.value)}


def threshold(points: Curve, target: Target) -> float | None:
    """Return the ``min_score`` that reaches ``target`` on a curve, or None if none does."""
    if target.measure == 'precision':
        reached = np.flatnonzero(points.precision >= target.value)
        return float(points.score[reached[-1]]) if reached.size else None
    if points.recall is None:
        return None
    reached = np.flatnonzero(points.recall >= target.value)
    return float(points.score[reached[0]]) if reached.size else None


def calibrate(summary: Summary, categories: Sequence[Category],
              target: Target) -> dict[str, Any]:
    """Return the ``calibration`` part of ``eval.json``: the overall and per-phrase values."""
    return {'target': target.record(),
            'min_score': threshold(summary.curves['overall'], target),
            'per_phrase': {c.phrase: threshold(summary.curves[c.category_id], target)
                           for c in categories}}


def yaml_float(value: float) -> str:
    """Return ``value`` in decimal digits that read back as the same double (YAML 1.1 too)."""
    return np.format_float_positional(float(value), unique=True, trim='0')


def _quoted(text: str) -> str:
    """Return text as a one-line JSON string (safe inside a YAML comment)."""
    return json.dumps(text)


def params_fragment(calibration: dict[str, Any], labels: str, images: int,
                    model: str) -> str | None:
    """Return the params file that sets the calibrated ``min_score``; None when unreachable.

    Layout of ``config/grounding.yaml`` (every node name, ``ros__parameters``): it sets
    ``min_score`` alone, so it can be given after another params file.
    """
    value = calibration['min_score']
    if value is None:
        return None
    (measure, goal), = calibration['target'].items()
    way = 'lowest' if measure == 'precision' else 'highest'
    lines = [
        f'# min_score calibrated by kosmos_eval: the {way} score at which {measure} reaches '
        f'{goal:g}',
        f'# on {_quoted(labels)} ({images} images), model {_quoted(model)}.',
        '# It sets min_score alone: give it after your own params file',
        '# (--ros-args --params-file robot.yaml --params-file min_score.yaml), or copy the line.',
        '# The node has one min_score for every phrase (no parameter per phrase). Each',
        f"# phrase's own threshold for the same {measure}, for reference (none: not reached):",
    ]
    for phrase, own in calibration['per_phrase'].items():
        lines.append(f'#   {_quoted(phrase)}: {"none" if own is None else yaml_float(own)}')
    lines += ['/**:', '  ros__parameters:', f'    min_score: {yaml_float(value)}']
    return '\n'.join(lines) + '\n'
