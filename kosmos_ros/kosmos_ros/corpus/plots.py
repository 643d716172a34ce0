# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The compare report's plots, drawn with matplotlib's Agg renderer into PNG bytes.

Imported only when an HTML report is written (the report embeds each PNG as a data URI, so
the page needs nothing but itself). matplotlib is used without pyplot: a :class:`Figure` on a
``FigureCanvasAgg`` touches no global backend or display, and its text is never parsed as
mathtext (a bag or phrase named ``$x^$`` is drawn as written; mathtext would raise on it).
matplotlib keeps a font cache in ``MPLCONFIGDIR``; unless the user set one, it goes to a
private temporary folder removed at exit, not into the home folder.
"""

from __future__ import annotations

import io
import math
import os
import sys
from typing import Any, Sequence

A_COLOUR = '#286eff'  # the report's colours of run A and run B
B_COLOUR = '#ff8c00'
_RC = {'text.parse_math': False, 'text.usetex': False, 'font.size': 9,
       'axes.spines.top': False, 'axes.spines.right': False}
BAGS_SHOWN = 20  # bars of the changes-by-bag plot; the table lists every bag
WIDTH = 6.0  # inches, at 100 dots per inch


def _matplotlib() -> tuple[Any, Any, Any]:
    """Import matplotlib (once) with a private config folder unless the user chose one."""
    if 'matplotlib' not in sys.modules and not os.environ.get('MPLCONFIGDIR'):
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix='kosmos_corpus_matplotlib-')  # 0700
        atexit.register(shutil.rmtree, folder, True)
        os.environ['MPLCONFIGDIR'] = folder
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def render(draw: Any, width: float, height: float) -> bytes:
    """Return the PNG of a figure of width x height inches that ``draw(figure)`` fills."""
    matplotlib, figure_class, canvas_class = _matplotlib()
    with matplotlib.rc_context(_RC):
        figure = figure_class(figsize=(width, height), dpi=100, layout='constrained')
        canvas_class(figure)
        draw(figure)
        out = io.BytesIO()
        figure.savefig(out, format='png', metadata={'Software': None})
    return out.getvalue()


def _short(text: str, most: int = 40) -> str:
    return text if len(text) <= most else '…' + text[-(most - 1):]


def score_shifts(shifts: Sequence[float], tolerance: float) -> bytes | None:
    """Return a histogram of matched boxes' score changes (B minus A); None without any."""
    values = [s for s in shifts if math.isfinite(s)]
    if not values:
        return None
    beyond = sum(1 for s in values if abs(s) > tolerance)

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        reach = max(max(abs(s) for s in values), tolerance, 1e-9) * 1.05
        ax.axvspan(-tolerance, tolerance, color='#dddddd', label=f'within ±{tolerance:g} '
                   '(unchanged)')
        ax.hist(values, bins=41, range=(-reach, reach), color=B_COLOUR, edgecolor='#804600')
        ax.axvline(0.0, color='#444444', linewidth=0.8)
        ax.set_xlabel('score change of a box both runs found (B − A)')
        ax.set_ylabel('boxes')
        ax.set_title(f'Score shifts: {len(values)} boxes found by both, {beyond} shifted by '
                     f'more than {tolerance:g}')
        ax.legend(loc='upper right', frameon=False)

    return render(draw, WIDTH, 2.8)


_KINDS = (('added', 'boxes added', '#2ca02c'), ('lost', 'boxes lost', '#d62728'),
          ('moved', 'boxes moved', '#9467bd'), ('caption_changes', 'captions changed', '#8c8c8c'),
          ('only_a', 'frames missing from B', '#000000'), ('only_b', 'frames new in B',
                                                           '#17becf'))


def changes_by_bag(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bytes | None:
    """Return stacked bars of each bag's changes (the most changed first); None if none.

    ``rows``: :meth:`.compare.Comparison.by_bag`; ``names``: each row's bag as shown.
    """
    pairs = [(r, n) for r, n in zip(rows, names) if any(r[k] for k, _, _ in _KINDS)]
    pairs = pairs[:BAGS_SHOWN]
    if not pairs:
        return None

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        ys = list(range(len(pairs)))[::-1]
        left = [0] * len(pairs)
        for key, label, colour in _KINDS:
            counts = [r[key] for r, _ in pairs]
            if any(counts):
                ax.barh(ys, counts, left=left, color=colour, label=label, height=0.7)
                left = [a + b for a, b in zip(left, counts)]
        ax.set_yticks(ys, [_short(n) for _, n in pairs])
        ax.set_xlabel('changes (boxes, captions, frames)')
        more = len([r for r in rows if any(r[k] for k, _, _ in _KINDS)]) - len(pairs)
        note = f' (the {len(pairs)} most changed; {more} more in the table)' if more > 0 else ''
        ax.set_title('Changes by bag' + note)
        ax.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), frameon=False)

    return render(draw, WIDTH, 1.2 + 0.3 * len(pairs))


def latencies(a: Sequence[float], b: Sequence[float], comparable: bool,
              reason: str) -> bytes | None:
    """Return the per-frame latency distributions of A and B; None without latencies.

    When the runs' batch layouts differ, the title says the two are not comparable and why.
    """
    a = [v for v in a if math.isfinite(v)]
    b = [v for v in b if math.isfinite(v)]
    if not a and not b:
        return None

    def draw(figure: Any) -> None:
        ax = figure.add_subplot()
        low, high = min(a + b), max(a + b)
        high = high if high > low else low + 1e-3
        for values, colour, name in ((a, A_COLOUR, 'A'), (b, B_COLOUR, 'B')):
            if values:
                mean = sum(values) / len(values)
                ax.hist(values, bins=30, range=(low, high), histtype='step', linewidth=2,
                        color=colour, label=f'{name}: {len(values)} frames, mean {mean:.3g} s')
                ax.axvline(mean, color=colour, linestyle='--', linewidth=1)
        ax.set_xlabel('inference time of a frame (s; a batch counts for each of its frames)')
        ax.set_ylabel('frames')
        if comparable:
            ax.set_title('Latency per frame, A and B (same batch layout and device)')
        else:
            ax.set_title('NOT COMPARABLE: ' + _short(reason, 90), color='#c00000')
        ax.legend(loc='best', frameon=False)

    return render(draw, WIDTH, 2.8)
