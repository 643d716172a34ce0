# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The evaluation report's plots: precision-recall curves and score histograms, as PNG bytes.

Drawn as the corpus report draws its plots (:func:`kosmos_ros.corpus.plots.render`: a
matplotlib ``Figure`` on the Agg canvas, no pyplot, no mathtext, so a phrase named ``$x^$`` is
drawn as written; matplotlib's cache in a private temporary folder, not the home folder).
Imported only when a report is written. Each function takes the data its figure shows (the
report writes the same data into ``.figures.json``) and returns None when there is nothing
to draw.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from kosmos_ros.corpus.plots import render, WIDTH

TRUE_COLOUR = '#2ca02c'
FALSE_COLOUR = '#d62728'
CURVE_COLOUR = '#286eff'
COLUMNS = 4  # per-phrase curves in a row


def points(curve: dict[str, Any]) -> list[tuple[float, float, float]]:
    """Return the (recall, precision, score) points of a curve record that are numbers."""
    out = []
    score, precision, recall = (curve.get(k) or [] for k in ('score', 'precision', 'recall'))
    for s, p, r in zip(score, precision, recall):
        values = (r, p, s)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
            out.append((float(r), float(p), float(s)))
    return out


def short(text: str, most: int = 32) -> str:
    return text if len(text) <= most else text[:most - 1] + '…'


def _curve(ax: Any, pts: list[tuple[float, float, float]], min_score: float | None,
           title: str) -> None:
    ax.plot([r for r, _, _ in pts], [p for _, p, _ in pts], color=CURVE_COLOUR,
            drawstyle='steps-post', linewidth=1.5)
    if min_score is not None:
        kept = [(r, p) for r, p, s in pts if s >= min_score]
        if kept:
            r, p = kept[-1]
            ax.plot([r], [p], 'o', color='#000000', markersize=5,
                    label=f'min_score {min_score:.3g}')
            ax.legend(loc='lower left', frameon=False)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)


def pr_overall(curve: dict[str, Any], min_score: float | None) -> bytes | None:
    """Return the overall precision-recall curve; the point at ``min_score`` is marked."""
    pts = points(curve)
    if not pts:
        return None

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        _curve(ax, pts, min_score, f'Precision and recall, all phrases ({len(pts)} scores)')
        ax.set_xlabel('recall')
        ax.set_ylabel('precision')

    return render(draw, WIDTH, 3.2)


def pr_phrases(curves: Sequence[tuple[str, dict[str, Any], float | None]]) -> bytes | None:
    """Return small precision-recall plots, one per (phrase, curve, min_score) with points."""
    drawn = [(name, points(curve), score) for name, curve, score in curves]
    drawn = [d for d in drawn if d[1]]
    if not drawn:
        return None
    rows = math.ceil(len(drawn) / COLUMNS)

    def draw(figure: Any) -> None:
        for index, (name, pts, score) in enumerate(drawn):
            ax = figure.add_subplot(rows, COLUMNS, index + 1)
            _curve(ax, pts, score, short(name))
            ax.tick_params(labelsize=7)
            if index % COLUMNS == 0:
                ax.set_ylabel('precision')
            if index >= len(drawn) - COLUMNS:
                ax.set_xlabel('recall')

    return render(draw, WIDTH * 1.4, 0.4 + 2.0 * rows)


def histogram_counts(values: Sequence[Any], bins: int) -> list[int]:
    """Count the scores in [0, 1] into ``bins`` equal bins (1.0 in the last; others dropped)."""
    counts = [0] * bins
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0:
            counts[min(bins - 1, int(v * bins))] += 1
    return counts


def score_histogram(true_counts: Sequence[int], false_counts: Sequence[int],
                    min_score: float | None) -> bytes | None:
    """Return the histogram of true- and false-positive scores (bins over [0, 1])."""
    if not any(true_counts) and not any(false_counts):
        return None
    bins = len(true_counts)
    edges = [i / bins for i in range(bins)]

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        ax.bar(edges, true_counts, width=1 / bins, align='edge', color=TRUE_COLOUR, alpha=0.6,
               label=f'true positives ({sum(true_counts)})')
        ax.bar(edges, false_counts, width=1 / bins, align='edge', color=FALSE_COLOUR,
               alpha=0.6, label=f'false positives ({sum(false_counts)})')
        if min_score is not None:
            ax.axvline(min_score, color='#000000', linestyle='--', linewidth=1,
                       label=f'min_score {min_score:.3g}')
        ax.set_xlim(0, 1)
        ax.set_xlabel('score of a detection')
        ax.set_ylabel('detections')
        ax.set_title('Scores of true and false positives')
        ax.legend(loc='upper center', frameon=False)

    return render(draw, WIDTH, 2.8)
