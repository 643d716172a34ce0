# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The compare report as one HTML page that needs nothing but itself.

It opens with what differs between the runs (model, dtype, quantization, options, layout,
versions: :mod:`.provenance`), then the gate's verdict, the totals in plain words, latency (or
why it does not compare), the changes by bag, topic and phrase, and the largest changes spread
across bags, each frame shown twice, read back from the bag: run A's boxes on the left, run
B's on the right. Plots (:mod:`.plots`, matplotlib) and thumbnails are embedded as data URIs;
every text that comes from a run (paths, topics, phrases, captions, option values) is escaped.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
import html
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.compare import Comparison, FrameDiff
from kosmos_ros.corpus.gate import GATE_LABELS, Thresholds
from kosmos_ros.corpus.labels import COLUMN_LABELS, fmt
from kosmos_ros.corpus.provenance import show

A_COLOUR = (40, 110, 255)  # RGB: run A's boxes
B_COLOUR = (255, 140, 0)  # run B's boxes
LOST_COLOUR = (214, 39, 40)  # on A's frame: boxes B lost
ADDED_COLOUR = (44, 160, 44)  # on B's frame: boxes B added
MOVED_COLOUR = (200, 0, 200)  # on both: a box that moved
TABLE_ROWS = 200  # rows of a table by bag, topic or phrase; the JSON report has them all

# Checked by the tests in a headless browser: every image decodes, and no script error.
PAGE_CHECK = ('<script>window.__errors=[];window.addEventListener("error",function(e){'
              'window.__errors.push(String(e.message||e.type));},true);'
              'window.addEventListener("load",function(){var imgs=document.images,ok=0;'
              'for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}'
              'document.body.setAttribute("data-images",imgs.length);'
              'document.body.setAttribute("data-images-ok",ok);'
              'document.body.setAttribute("data-errors",window.__errors.length);});</script>')

_STYLE = ('body{font-family:sans-serif;margin:1em;max-width:1400px}'
          'table{border-collapse:collapse;margin:.4em 0}'
          'td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top;'
          'max-width:40em;overflow-wrap:break-word}th{background:#f0f0f0}'
          'td.n{text-align:right}'
          '.fail,.fail .small{color:#fff;background:#c00}.ok{color:#fff;background:#080}'
          '.banner{padding:.4em .8em;font-size:1.2em;display:inline-block}'
          'tr.differs td{background:#fff3cd}.warn{color:#c00;font-weight:bold}'
          '.change{display:inline-block;vertical-align:top;margin:.5em;padding:.4em;'
          'border:1px solid #ccc}.change figure{display:inline-block;margin:0 .3em;'
          'vertical-align:top}figcaption{font-size:.85em}.a{color:rgb(40,110,255)}'
          '.b{color:rgb(255,140,0)}.missing{color:#c00}.small{font-size:.85em;color:#555}'
          'ul.summary li{margin:.2em 0}details{margin:.4em 0}'
          '.row{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}'
          '.row>*{margin-top:0}')


@dataclass(frozen=True)
class Written:
    """What a written report holds."""

    changes: int  # largest changes shown
    thumbnails: int  # frames drawn (two per change whose frame could be read)
    plots: int


esc = html.escape  # quote=True: safe in text and in quoted attributes


def write_html(comparison: Comparison, thresholds: Thresholds, path: Path) -> Written:
    """Write the report to ``path``; return what it holds."""
    from kosmos_ros.corpus import plots  # matplotlib: only for an HTML report

    c = comparison
    names = bag_names([f.bag for f in c.frames])
    images = _Images()
    by_bag = c.by_bag()
    parts = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
             f'<title>kosmos_corpus compare: {esc(c.run_a)} vs {esc(c.run_b)}</title>',
             PAGE_CHECK, f'<style>{_STYLE}</style></head><body>',
             '<h1>kosmos_corpus compare</h1>',
             f'<p><b class="a">A</b> (reference): {esc(c.run_a)}<br>'
             f'<b class="b">B</b> (with the change): {esc(c.run_b)}</p>']
    parts += _differences(c)
    parts += _gate(c, thresholds)
    parts += _totals(c, images.png(plots.score_shifts(
        [s for f in c.frames for s in f.score_shifts], c.settings.score_tolerance),
        'histogram of score shifts'))
    parts += _latency(c, images, plots)
    parts += ['<section id="by-bag"><h2>Changes by bag</h2><div class="row">',
              _table(by_bag, 'bag', names),
              images.png(plots.changes_by_bag(by_bag, [names[r['bag']] for r in by_bag]),
                         'changes by bag'), '</div></section>',
              '<section id="by-topic"><h2>Changes by topic</h2>',
              _table(c.by_topic(), 'topic'), '</section>',
              '<section id="by-phrase"><h2>Changes by phrase</h2>'
              '<p class="small">Boxes of the frames both runs grounded.</p>',
              _table(c.by_phrase(), 'phrase'), '</section>']
    shown, thumbnails = _changes(c, names, parts)
    parts.append(f'<p class="small">Boxes are matched per phrase by IoU (at least '
                 f'{c.settings.match_iou:g}; moved under {c.settings.moved_iou:g}); score '
                 f'shifts up to {c.settings.score_tolerance:g} do not make a frame changed.</p>'
                 '</body></html>')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(p for p in parts if p), encoding='utf-8')
    return Written(shown, thumbnails, images.plots)


class _Images:
    """Counts the plots it embeds."""

    def __init__(self) -> None:
        self.plots = 0

    def png(self, data: bytes | None, alt: str) -> str:
        if data is None:
            return ''
        self.plots += 1
        return f'<p>{data_image("png", data, alt, "plot")}</p>'


def data_image(kind: str, data: bytes, alt: str, cls: str) -> str:
    """Return an ``<img>`` of ``data`` (``kind``: png, jpeg, svg+xml) as a data URI."""
    return (f'<img class="{esc(cls)}" src="data:image/{kind};base64,'
            f'{base64.b64encode(data).decode("ascii")}" alt="{esc(alt)}">')


def bag_names(paths: Iterable[str]) -> dict[str, str]:
    """Return each bag path as shown: relative to the folder all bags share."""
    paths = sorted(set(paths))
    try:
        common = os.path.commonpath(paths) if paths else ''
    except ValueError:  # absolute and relative paths mixed
        common = ''
    if common in paths:
        common = os.path.dirname(common)
    return {p: os.path.relpath(p, common) if common else p for p in paths}


# -- sections ------------------------------------------------------------------------------------

def _differences(c: Comparison) -> list[str]:
    d = c.differences
    out = ['<section id="differences"><h2>What differs between A and B</h2>',
           '<ul class="summary">' + ''.join(f'<li>{esc(line)}</li>' for line in d.summary)
           + '</ul>']
    differ = d.where('differs')
    if differ:
        out.append(_field_table(differ, 'differs'))
    else:
        out.append('<p>Nothing the runs record differs.</p>')
    for state, title in (('not known', 'Not known for one run or both'),
                         ('same', 'The same in both')):
        rows = d.where(state)
        if rows:
            out.append(f'<details><summary>{esc(title)} ({len(rows)})</summary>'
                       f'{_field_table(rows, "")}</details>')
    out.append('</section>')
    return out


def _field_table(rows: Sequence[Any], cls: str) -> str:
    body = ''.join(f'<tr class="{esc(cls)}"><td>{esc(r.section)}</td><td>{esc(r.label)}</td>'
                   f'<td>{esc(show(r.a))}</td><td>{esc(show(r.b))}</td></tr>' for r in rows)
    return ('<table><tr><th>what</th><th>field</th><th class="a">A</th><th class="b">B</th>'
            f'</tr>{body}</table>')


def _gate(c: Comparison, thresholds: Thresholds) -> list[str]:
    verdict = thresholds.verdict(c.totals)
    failed = [n for n, v in verdict.items() if v['exceeded']]
    cls, word = ('fail', 'Gate FAILED: ' + ', '.join(GATE_LABELS.get(n, n) for n in failed)) \
        if failed else ('ok', 'Gate passed')
    rows = ''.join(f'<tr class="{"fail" if v["exceeded"] else ""}">'
                   f'<td>{esc(GATE_LABELS.get(n, n))}</td><td class="small">{esc(_flag(n))}'
                   f'</td><td>{esc(fmt(v["limit"]))}</td><td>{esc(fmt(v["value"]))}</td></tr>'
                   for n, v in verdict.items())
    return ['<section id="gate"><h2>Verdict</h2>', f'<p class="banner {cls}">{esc(word)}</p>',
            '<table><tr><th>check</th><th>option</th><th>limit</th><th>value</th></tr>'
            f'{rows}</table></section>']


def _flag(name: str) -> str:
    if name.startswith('max_'):
        return '--' + name.replace('_', '-')
    return {'complete_runs': '--allow-incomplete', 'grounded_frames': '--allow-empty',
            'nan_values': '(always)'}.get(name, name)


def _totals(c: Comparison, plot: str) -> list[str]:
    rows = ''.join(f'<tr><th>{esc(t["label"])}</th><td class="n">{esc(_total(t))}</td></tr>'
                   for t in c.totals_labelled()
                   if not t['key'].startswith('latency_') and t['key'] != 'missing_frames')
    return ['<section id="totals"><h2>Totals</h2><div class="row">', f'<table>{rows}</table>',
            plot, '</div></section>']


def _total(total: dict[str, Any]) -> str:
    if total['key'] in ('status_a', 'status_b') and total['value'] is None:
        return 'not known (an index file)'
    return fmt(total['value'])


def _latency(c: Comparison, images: _Images, plots: Any) -> list[str]:
    t, check = c.totals, c.latency
    if check.comparable:
        head = (f'<p>Latency compares: same batch layout and device. Mean latency per frame, '
                f'B over A: <b>{esc(fmt(t["latency_ratio"]))}</b>.</p>')
    else:
        head = ('<p class="warn">Latency is not comparable: '
                f'{esc(check.reason)}. The ratio is not given, and --max-latency-ratio fails '
                'with this reason when asked for.</p>')
    if check.measures:
        head += ('<p>The latencies include the change under test: '
                 f'{esc("; ".join(check.measures))}.</p>')
    layout = ''.join(f'<tr><td>{esc(name.replace("_", " "))}</td><td>{esc(check.layout_a[name])}'
                     f'</td><td>{esc(check.layout_b[name])}</td></tr>'
                     for name in check.layout_a)
    stats = ''.join(f'<tr><td>{esc(what)}</td><td class="n">{esc(fmt(t[f"latency_{k}_a"]))}</td>'
                    f'<td class="n">{esc(fmt(t[f"latency_{k}_b"]))}</td></tr>'
                    for k, what in (('mean', 'mean (s)'), ('median', 'median (s)'),
                                    ('p95', '95th percentile (s)')))
    both = [f for f in c.frames if not f.missing]
    plot = plots.latencies([f.latency_a for f in both if f.latency_a is not None],
                           [f.latency_b for f in both if f.latency_b is not None],
                           check.comparable, check.reason)
    return ['<section id="latency"><h2>Latency per frame</h2>', head, '<div class="row"><div>',
            '<table><tr><th>batch layout</th><th class="a">A</th><th class="b">B</th></tr>'
            f'{layout}</table>',
            '<table><tr><th>frames grounded by both</th><th class="a">A</th>'
            f'<th class="b">B</th></tr>{stats}</table></div>',
            images.png(plot, 'latency distributions of A and B'), '</div></section>']


def _table(rows: list[dict[str, Any]], key: str, names: dict[str, str] | None = None) -> str:
    if not rows:
        return '<p>None.</p>'
    columns = [k for k in rows[0] if k in COLUMN_LABELS]
    head = ''.join(f'<th>{esc(COLUMN_LABELS[k])}</th>' for k in columns)
    body = []
    for row in rows[:TABLE_ROWS]:
        cells = []
        for k in columns:
            if k == key:
                shown = names.get(row[k], row[k]) if names else row[k]
                cells.append(f'<td title="{esc(str(row[k]))}">{esc(str(shown))}</td>')
            else:
                cells.append(f'<td class="n">{esc(fmt(row[k]))}</td>')
        body.append('<tr>' + ''.join(cells) + '</tr>')
    more = len(rows) - TABLE_ROWS
    tail = f'<p class="small">{more} more rows in the JSON report.</p>' if more > 0 else ''
    return f'<table><tr>{head}</tr>{"".join(body)}</table>{tail}'


def _changes(c: Comparison, names: dict[str, str], parts: list[str]) -> tuple[int, int]:
    changed = c.changed()
    shown = c.largest_changes()
    bags = len({f.bag_sha256 for f in shown})
    parts.append(f'<section id="largest-changes"><h2>Largest changes ({len(shown)} of '
                 f'{len(changed)} changed frames, from {bags} bags)</h2>'
                 '<p>Ranked by size within each bag and taken from the bags in turn. Left: '
                 '<b class="a">A\'s boxes (blue)</b>, right: <b class="b">B\'s boxes '
                 '(orange)</b>; <span style="color:rgb(214,39,40)">red</span>: lost in B, '
                 '<span style="color:rgb(44,160,44)">green</span>: added in B, '
                 '<span style="color:rgb(200,0,200)">magenta</span>: moved.</p>')
    thumbnails = 0
    for rank, diff in enumerate(shown, 1):
        rgb, reason = read_frame(diff.bag, diff.topic, diff.bag_time_ns)
        if rgb is None and diff.bag_b:  # runs made on other machines: try B's path too
            rgb, reason_b = read_frame(diff.bag_b, diff.topic, diff.bag_time_ns)
            reason = f'{reason}; {reason_b}'
        figures = []
        for run, cls in (('A', 'a'), ('B', 'b')):
            if rgb is not None:
                jpeg = thumbnail(rgb, diff, run, c.settings.thumbnail_width)
                image = data_image('jpeg', jpeg, f'frame with the boxes of run {run}',
                                   f'thumb {cls}')
                thumbnails += 1
            else:
                image = f'<p class="missing">frame not available: {esc(reason)}</p>'
            text = diff.text_a if run == 'A' else diff.text_b
            figures.append(f'<figure class="{cls}">{image}<figcaption class="{cls}">{run}: '
                           f'{esc(text if text is not None else "not grounded")}'
                           '</figcaption></figure>')
        parts.append(f'<div class="change" data-rank="{rank}"><b>{rank}.</b> '
                     f'<b>{esc(names.get(diff.bag, diff.bag))}</b> {esc(diff.topic)} '
                     f'stamp {diff.stamp:.3f}<br>{"".join(figures)}'
                     f'<ul>{"".join(_items(diff, c.settings.score_tolerance))}</ul></div>')
    parts.append('</section>')
    return len(shown), thumbnails


def _items(diff: FrameDiff, tolerance: float) -> list[str]:
    items = [f'<li>added: {esc(b[0])} {_box(b)}</li>' for b in diff.added]
    items += [f'<li>lost: {esc(b[0])} {_box(b)}</li>' for b in diff.lost]
    items += [f'<li>moved: {esc(m["phrase"])} {_box(m["a"])} → {_box(m["b"])} '
              f'(IoU {m["iou"]:.2f})</li>' for m in diff.moved]
    shifts = [s for s in diff.score_shifts if abs(s) > tolerance]
    if shifts:
        items.append(f'<li>score shifts: {", ".join(f"{s:+.3f}" for s in shifts)}</li>')
    if diff.caption_changed:
        items.append('<li>caption changed</li>')
    if diff.missing:
        items.append(f'<li class="missing">grounded only by '
                     f'{"A" if diff.missing == "B" else "B"}</li>')
    return items


def _box(b: tuple) -> str:
    score = '' if b[5] is None or not np.isfinite(b[5]) else f' {b[5]:.2f}'
    return f'[{b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f}, {b[4]:.0f}]{score}'


# -- frames ------------------------------------------------------------------------------------

def read_frame(bag: str, topic: str, bag_time_ns: int) -> tuple[np.ndarray | None, str]:
    """Return a frame of a bag as RGB, or None and why it cannot be read."""
    from kosmos_ros.bag.reading import open_reader
    from kosmos_ros.errors import KosmosError
    from kosmos_ros.images import frame_from_message

    try:
        reader = open_reader(Path(bag))
        try:
            connections = [c for c in reader.connections if c.topic == topic]
            for conn, _, raw in reader.messages(connections=connections, start=bag_time_ns,
                                                stop=bag_time_ns + 1):
                return frame_from_message(reader.deserialize(raw, conn.msgtype)).to_rgb(), ''
        finally:
            reader.close()
    except (KosmosError, OSError) as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: B902 - a damaged message: the report goes on without it
        return None, f'{type(exc).__name__}: {exc}'
    return None, f'no message on {topic} at {bag_time_ns} ns'


def thumbnail(rgb: np.ndarray, diff: FrameDiff, run: str, width: int) -> bytes:
    """Return a JPEG of the frame scaled to ``width`` with one run's boxes.

    Run A's boxes are blue, those B lost red; run B's are orange, those B added green; a box
    that moved is magenta on both.
    """
    from kosmos_ros.threads import opencv

    cv2 = opencv()
    scale = width / rgb.shape[1]
    height = max(1, int(round(rgb.shape[0] * scale)))
    image = np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
    if run == 'A':
        boxes, colour, marked = diff.boxes_a, A_COLOUR, [(b, LOST_COLOUR) for b in diff.lost]
    else:
        boxes, colour, marked = diff.boxes_b, B_COLOUR, [(b, ADDED_COLOUR) for b in diff.added]
    marked += [(m['a' if run == 'A' else 'b'], MOVED_COLOUR) for m in diff.moved]
    marks = {tuple(b): c for b, c in marked}
    for box in boxes:
        if not all(v is not None and np.isfinite(v) for v in box[1:5]):
            continue  # a NaN corner (the gate fails on it): nothing to draw
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box[1:5])
        cv2.rectangle(image, (x1, y1), (x2, y2), marks.get(tuple(box), colour),
                      3 if tuple(box) in marks else 2)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise CorpusError('OpenCV could not encode a thumbnail')
    return jpeg.tobytes()
