# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The evaluation report: one HTML page a person reads, and the data of its every figure.

:func:`write_report` turns an ``eval.json`` (``kosmos_eval coco``) into a page that needs
nothing but itself: the figures in plain words, the precision-recall curves (all phrases,
then each phrase) and the scores of true and false positives (:mod:`.report_plots`, PNG data
URIs), a table of every phrase, the confusion of phrases as a table, and the worst misses and
false positives as thumbnails with the label box or the detection drawn on the image
(:func:`kosmos_ros.drawing.draw_box`, JPEG data URIs). The page holds no script and fetches
nothing (its Content-Security-Policy forbids both). Every text of the result (phrases, paths,
the model's name) is escaped: the result is data, and markup in it stays text. Beside the page,
``<stem>.figures.json`` holds the data each figure shows.

A null figure (nothing to divide) reads "n/a"; an empty list, a plot or table that says so; an
image that cannot be read, a placeholder that says why (and the count of them is in the JSON).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from kosmos_ros.corpus.labels import fmt, plain
from kosmos_ros.corpus.report import data_image, esc
from kosmos_ros.evaluation import EvaluationError

SCHEMA = 'kosmos_eval/1'
THUMBNAIL_WIDTH = 240
MAX_IMAGE_BYTES = 64 << 20
PHRASE_CURVES = 24  # phrases with a curve of their own (most labels first); the JSON has all
CONFUSION_PHRASES = 60  # rows and columns of the confusion table; the JSON has all
WORST_SHOWN = 24  # thumbnails of each kind
HISTOGRAM_BINS = 20
LABEL_COLOUR = (44, 160, 44)  # RGB: a label box (a miss)
DETECTION_COLOUR = (214, 39, 40)  # a false positive
POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
          "form-action 'none'")
_STYLE = ('body{font-family:sans-serif;margin:1em;max-width:1400px}'
          'table{border-collapse:collapse;margin:.4em 0}'
          'td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top;'
          'max-width:30em;overflow-wrap:anywhere}th{background:#f0f0f0}td.n{text-align:right}'
          '.thumb{display:inline-block;vertical-align:top;margin:.4em;width:250px;'
          'font-size:.85em;overflow-wrap:anywhere}.missing{color:#c00}.small{font-size:.85em;'
          'color:#555}table.confusion td{text-align:right;min-width:1.5em}')


def _number(value: Any) -> float | None:
    """Return a finite number of the result, or None (null, a string, NaN: not a figure)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str:
    """Return a figure as escaped text ('n/a' for null or a value that is not a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return esc(fmt(value) if value is None or isinstance(value, (int, float)) else str(value))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def write_report(result: dict[str, Any], html_path: Path) -> None:
    """Write the HTML report of an ``eval.json`` result and ``<stem>.figures.json`` beside it.

    Raises EvaluationError when ``result`` is not a ``kosmos_eval/1`` record.
    """
    from kosmos_ros.evaluation import report_plots as plots  # matplotlib: only for a report

    if not isinstance(result, dict) or result.get('schema') != SCHEMA:
        schema = result.get('schema') if isinstance(result, dict) else type(result).__name__
        raise EvaluationError(f'not a kosmos_eval result (schema {str(schema)[:60]!r}; '
                              f'expected {SCHEMA!r}: the eval.json of kosmos_eval coco)')
    html_path = Path(html_path)
    figures: dict[str, Any] = {'source': SCHEMA}
    overall = _dict(result.get('overall'))
    calibration = _dict(result.get('calibration'))
    min_score = _number(calibration.get('min_score'))
    if min_score is None:
        min_score = _number(overall.get('min_score'))
    curves = _dict(result.get('pr_curves'))
    phrases = _dict(result.get('phrases'))
    per_phrase = _dict(calibration.get('per_phrase'))

    figures['pr_overall'] = {'curve': plots.points(_dict(curves.get('overall'))),
                             'min_score': min_score, 'columns': ['recall', 'precision', 'score']}
    ranked = sorted(phrases, key=lambda p: (-(_number(_dict(phrases[p]).get('labels')) or 0),
                                            str(p)))
    figures['pr_phrases'] = {str(p): {'curve': plots.points(_dict(curves.get(p))),
                                      'min_score': _number(per_phrase.get(p))} for p in ranked}
    scores = _dict(result.get('scores'))
    true_counts = plots.histogram_counts(_list(scores.get('true_positive')), HISTOGRAM_BINS)
    false_counts = plots.histogram_counts(_list(scores.get('false_positive')), HISTOGRAM_BINS)
    figures['score_histogram'] = {
        'bin_edges': [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)],
        'true_positive': true_counts, 'false_positive': false_counts, 'min_score': min_score}

    pr_png = plots.pr_overall(_dict(curves.get('overall')), min_score)
    shown = [(str(p), _dict(curves.get(p)), _number(per_phrase.get(p)))
             for p in ranked[:PHRASE_CURVES]]
    phrases_png = plots.pr_phrases(shown)
    histogram_png = plots.score_histogram(true_counts, false_counts, min_score)

    title = f'kosmos_eval: {result.get("model", "")} on {result.get("labels", "")}'
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{esc(POLICY)}">',
             f'<title>{esc(title)}</title>', f'<style>{_STYLE}</style></head><body>',
             '<h1>kosmos_eval report</h1>']
    parts += _summary(result, overall, calibration)
    parts += ['<section id="curves"><h2>Precision and recall</h2>',
              _plot(pr_png, 'precision-recall curve of all phrases',
                    'No curve: no detection with a score and label boxes.')]
    if phrases_png:
        more = len(ranked) - len(shown)
        parts.append(_plot(phrases_png, 'precision-recall curves of each phrase', ''))
        if more > 0:
            parts.append(f'<p class="small">The {len(shown)} phrases with the most label '
                         f'boxes; {more} more in the figures file.</p>')
    parts += ['</section><section id="scores"><h2>Scores</h2>',
              _plot(histogram_png, 'histogram of true and false positive scores',
                    'No detection scores to show.'), '</section>']
    parts += _phrase_table(phrases, per_phrase)
    confusion, figures['confusion'] = _confusion(_dict(result.get('confusion')))
    parts += confusion
    worst = _dict(result.get('worst'))
    figures['worst'] = {}
    for key, heading in (('misses', 'Worst misses (label boxes no detection found)'),
                         ('false_positives', 'Worst false positives')):
        html, record = _thumbnails(_list(worst.get(key)), key)
        parts += [f'<section id="{key.replace("_", "-")}"><h2>{heading}</h2>', *html,
                  '</section>']
        figures['worst'][key] = record
    parts.append(f'<p class="small">The data of every figure: '
                 f'{esc(_figures_path(html_path).name)}.</p></body></html>')
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text('\n'.join(p for p in parts if p), encoding='utf-8')
    _figures_path(html_path).write_text(
        json.dumps(plain(figures), indent=1, allow_nan=False) + '\n', encoding='utf-8')


def _figures_path(html_path: Path) -> Path:
    return html_path.with_name(html_path.stem + '.figures.json')


def _plot(png: bytes | None, alt: str, empty: str) -> str:
    if png is None:
        return f'<p>{esc(empty)}</p>' if empty else ''
    return f'<p>{data_image("png", png, alt, "plot")}</p>'


# -- tables --------------------------------------------------------------------------------------

_OVERALL = (('labels', 'label boxes'), ('detections', 'detections at min_score'),
            ('min_score', 'min_score'), ('precision', 'precision'), ('recall', 'recall'),
            ('ap50', 'AP at IoU 0.5'), ('ap', 'AP at IoU 0.5:0.95'))


def _summary(result: dict[str, Any], overall: dict[str, Any],
             calibration: dict[str, Any]) -> list[str]:
    rows = [('model', result.get('model')), ('labels', result.get('labels')),
            ('task', result.get('task')), ('images grounded', result.get('images')),
            ('IoU threshold', result.get('iou_threshold'))]
    rows += [(label, overall.get(key)) for key, label in _OVERALL]
    target = _dict(calibration.get('target'))
    for name, value in target.items():
        rows.append((f'calibration target: {name}', value))
    rows.append(('calibrated min_score (all phrases)', calibration.get('min_score')))
    body = ''.join(f'<tr><th>{esc(str(k))}</th><td>{_text(v)}</td></tr>' for k, v in rows)
    out = ['<section id="summary"><h2>Summary</h2>', f'<table>{body}</table>']
    skipped = _dict(result.get('skipped'))
    if skipped:
        out.append('<p>Skipped: ' + ', '.join(f'{_text(n)} × {esc(str(why))}'
                                              for why, n in skipped.items()) + '</p>')
    out.append('</section>')
    return out


_PHRASE_COLUMNS = (('category_id', 'category'), ('labels', 'label boxes'),
                   ('detections', 'detections'), ('precision', 'precision'),
                   ('recall', 'recall'), ('ap50', 'AP50'), ('ap', 'AP'))


def _phrase_table(phrases: dict[str, Any], per_phrase: dict[str, Any]) -> list[str]:
    out = ['<section id="phrases"><h2>By phrase</h2>']
    if not phrases:
        return out + ['<p>No phrases.</p></section>']
    head = ''.join(f'<th>{esc(label)}</th>' for _, label in _PHRASE_COLUMNS)
    rows = []
    for phrase in sorted(phrases, key=str):
        record = _dict(phrases[phrase])
        cells = ''.join(f'<td class="n">{_text(record.get(k))}</td>' for k, _ in _PHRASE_COLUMNS)
        rows.append(f'<tr><td>{esc(str(phrase))}</td>{cells}'
                    f'<td class="n">{_text(per_phrase.get(phrase))}</td></tr>')
    return out + [f'<table><tr><th>phrase</th>{head}<th>calibrated min_score</th></tr>'
                  f'{"".join(rows)}</table></section>']


def _confusion(confusion: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Return the confusion table (label phrase by detected phrase) and its figure data."""
    names = [str(p) for p in _list(confusion.get('phrases'))]
    matrix = _list(confusion.get('matrix'))
    out = ['<section id="confusion"><h2>Confusion of phrases</h2>',
           '<p class="small">A row is the phrase of a label box; a column, the phrase of the '
           'detection that overlaps it most (at the IoU threshold and min_score), or none.</p>']
    well_formed = bool(names) and all(
        isinstance(row, list) and len(row) == len(names) and
        all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
        for row in matrix) and len(matrix) in (len(names), len(names) - 1)
    if not well_formed:
        note = 'No confusion matrix.' if not names and not matrix else \
            'The confusion matrix of the result is malformed (rows or columns do not match ' \
            'its phrases); it is not shown.'
        return out + [f'<p>{esc(note)}</p></section>'], {'phrases': names, 'matrix': None}
    rows_shown, cols_shown = names[:min(len(matrix), CONFUSION_PHRASES)], names[:CONFUSION_PHRASES]
    if names[-1] not in cols_shown:
        cols_shown.append(names[-1])  # the 'none' column stays
    cols = [names.index(c) for c in cols_shown]
    head = ''.join(f'<th>{esc(c)}</th>' for c in cols_shown)
    body = []
    for i, name in enumerate(rows_shown):
        total = sum(matrix[i]) or 1
        cells = ''.join(
            f'<td style="background:rgba(40,110,255,{0.8 * matrix[i][j] / total:.2f})">'
            f'{matrix[i][j]}</td>' for j in cols)
        body.append(f'<tr><th>{esc(name)}</th>{cells}</tr>')
    if len(names) > CONFUSION_PHRASES:
        out.append(f'<p class="small">The first {CONFUSION_PHRASES} phrases; all '
                   f'{len(names)} are in the figures file.</p>')
    out += [f'<table class="confusion"><tr><th>label \\ detected</th>{head}</tr>'
            f'{"".join(body)}</table></section>']
    return out, {'phrases': names, 'matrix': matrix, 'rows': 'label phrase',
                 'columns': 'detected phrase'}


# -- thumbnails ----------------------------------------------------------------------------------

def _box(value: Any) -> tuple[float, float, float, float] | None:
    values = [_number(v) for v in _list(value)]
    if len(values) != 4 or any(v is None for v in values):
        return None
    return tuple(values)  # type: ignore[return-value]


def _thumbnails(items: list[Any], kind: str) -> tuple[list[str], dict[str, Any]]:
    """Return the thumbnails of the worst misses or false positives and what was shown."""
    if not items:
        return ['<p>None.</p>'], {'shown': 0, 'unavailable': 0, 'items': []}
    html, record, unavailable = [], [], 0
    for rank, raw in enumerate(items[:WORST_SHOWN], 1):
        item = _dict(raw)
        phrase = str(item.get('phrase', ''))
        box = _box(item.get('label_box' if kind == 'misses' else 'box'))
        score = _number(item.get('score'))
        label = phrase if kind == 'misses' else f'{phrase} {fmt(score)}'
        jpeg, why = _thumbnail(str(item.get('image', '')), box, label,
                               LABEL_COLOUR if kind == 'misses' else DETECTION_COLOUR)
        if jpeg is None:
            unavailable += 1
            image = f'<p class="missing">image not available: {esc(why)}</p>'
        else:
            image = data_image('jpeg', jpeg, f'{kind[:-2] if kind == "misses" else "detection"}'
                               f' {rank}', 'thumb-image')
        what = 'label box' if kind == 'misses' else f'detection, score {fmt(score)}'
        html.append(f'<div class="thumb" data-rank="{rank}">{image}<br><b>{rank}.</b> '
                    f'{esc(phrase)} ({esc(what)})<br><span class="small">'
                    f'{esc(str(item.get("image", "")))}</span></div>')
        record.append({'rank': rank, 'image': item.get('image'), 'phrase': phrase,
                       'box': list(box) if box else None, 'score': score,
                       'shown': jpeg is not None, 'why': why or None})
    if len(items) > WORST_SHOWN:
        html.append(f'<p class="small">{len(items) - WORST_SHOWN} more in the result.</p>')
    return html, {'shown': len(record) - unavailable, 'unavailable': unavailable,
                  'items': record}


def _thumbnail(path: str, box: tuple[float, float, float, float] | None, label: str,
               colour: tuple[int, int, int]) -> tuple[bytes | None, str]:
    """Return a JPEG of the image scaled to the thumbnail width with the box, or why not."""
    from kosmos_ros.datatypes import PixelBox
    from kosmos_ros.drawing import draw_box
    from kosmos_ros.errors import KosmosError
    from kosmos_ros.images import frame_from_compressed
    from kosmos_ros.threads import opencv

    cv2 = opencv()
    if box is None:
        return None, 'no box in the result'
    try:
        file = Path(path)
        if not file.is_file():
            return None, f'no file {path}'
        if file.stat().st_size > MAX_IMAGE_BYTES:
            return None, f'{path} is over {MAX_IMAGE_BYTES} bytes'
        frame = frame_from_compressed(SimpleNamespace(format='jpeg or png',
                                                      data=file.read_bytes()))
    except (OSError, KosmosError) as exc:
        return None, str(exc)
    rgb = frame.to_rgb()
    scale = THUMBNAIL_WIDTH / rgb.shape[1]
    height = max(1, int(round(rgb.shape[0] * scale)))
    small = np.ascontiguousarray(cv2.resize(rgb, (THUMBNAIL_WIDTH, height),
                                            interpolation=cv2.INTER_AREA))
    # Clipped to the thumbnail: a box of the result may lie anywhere (or be huge).
    x1, x2 = (min(max(v * scale, 0.0), float(THUMBNAIL_WIDTH)) for v in (box[0], box[2]))
    y1, y2 = (min(max(v * scale, 0.0), float(height)) for v in (box[1], box[3]))
    text = label if len(label) <= 40 else label[:39] + '...'
    draw_box(small, PixelBox(x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)), text, colour, 0.4)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return None, 'OpenCV could not encode the thumbnail'
    return jpeg.tobytes(), ''
