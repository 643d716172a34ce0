# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Comparing two runs' indexes: what a change (model, dtype, prompt, threshold) changed.

Frames are matched by the bag's content hash, the topic and the bag time, so runs of the same
bags at other paths compare. Within a frame, boxes are matched per phrase by IoU (the
assignment maximising it, pairs under ``match_iou`` left unmatched): a box of run B without a
partner is *added*, one of run A *lost*, a matched pair under ``moved_iou`` *moved*; matched
pairs give the score shifts (a frame whose only change is score shifts within
``score_tolerance`` is unchanged: batching alone moves scores by float rounding). Captions are
compared as text; latency is the frames' inference time. :class:`Thresholds` turn the
totals into a verdict for CI (exit status 1).

The HTML report shows the totals, the verdict and the largest changes as thumbnails read back
from the bags, with run A's boxes in blue and run B's in orange.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from kosmos_ros.corpus import CorpusError

A_COLOUR = (40, 110, 255)  # RGB
B_COLOUR = (255, 140, 0)


@dataclass(frozen=True)
class CompareSettings:
    """How boxes are matched and how many changes the report shows."""

    match_iou: float = 0.5
    moved_iou: float = 0.9
    score_tolerance: float = 1e-4  # smaller score shifts do not make a frame changed
    top: int = 12
    thumbnail_width: int = 320

    def check(self) -> None:
        if not 0.0 < self.match_iou <= 1.0:
            raise CorpusError(f'match IoU must be in (0, 1]; got {self.match_iou}')
        if not self.match_iou <= self.moved_iou <= 1.0:
            raise CorpusError(f'moved IoU must be in [match IoU, 1]; got {self.moved_iou}')
        if not (math.isfinite(self.score_tolerance) and self.score_tolerance >= 0):
            raise CorpusError(f'score tolerance must be 0 or more; got {self.score_tolerance}')
        if self.top < 0 or self.thumbnail_width < 16:
            raise CorpusError('top must be 0 or more and thumbnails 16 pixels wide or more')


@dataclass(frozen=True)
class Thresholds:
    """Limits on the totals; None leaves a total unchecked. Exceeding any fails the gate.

    Some checks hold unless asked otherwise: frames of run A that run B did not ground
    (``max_missing_frames`` 0), a run that is not complete (interrupted, incomplete, still
    running) unless ``allow_incomplete``, a run without a grounded frame unless
    ``allow_empty``, and any NaN or infinite score, box or latency (always).
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
            value = totals[total]
            out[name] = {'limit': limit, 'value': value,
                         'exceeded': value is not None and not value <= limit}
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


@dataclass
class FrameDiff:
    """The changes of one frame grounded by both runs, or by one only."""

    bag_sha256: str
    bag: str
    topic: str
    bag_time_ns: int
    stamp: float
    text_a: str | None
    text_b: str | None
    boxes_a: list[tuple] = field(default_factory=list)  # (phrase, x1, y1, x2, y2, score)
    boxes_b: list[tuple] = field(default_factory=list)
    added: list[tuple] = field(default_factory=list)
    lost: list[tuple] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)
    score_shifts: list[float] = field(default_factory=list)
    latency_a: float | None = None
    latency_b: float | None = None
    bag_b: str = ''  # where run B read the bag, when it differs from run A's path
    score_tolerance: float = 0.0

    @property
    def caption_changed(self) -> bool:
        return self.text_a is not None and self.text_b is not None and \
            self.text_a != self.text_b

    @property
    def missing(self) -> str:
        return 'B' if self.text_b is None else 'A' if self.text_a is None else ''

    @property
    def magnitude(self) -> float:
        return (len(self.added) + len(self.lost) + len(self.moved) + int(self.caption_changed)
                + 2 * int(bool(self.missing))
                + sum(abs(s) for s in self.score_shifts if abs(s) > self.score_tolerance))

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(caption_changed=self.caption_changed, missing_in=self.missing,
                   magnitude=self.magnitude)
        return out


@dataclass
class Comparison:
    run_a: str
    run_b: str
    settings: CompareSettings
    totals: dict[str, Any]
    frames: list[FrameDiff]
    models: tuple[list[str], list[str]]

    def changed(self) -> list[FrameDiff]:
        return sorted((f for f in self.frames if f.magnitude > 0),
                      key=lambda f: (-f.magnitude, f.bag, f.topic, f.bag_time_ns))

    def record(self, thresholds: Thresholds) -> dict[str, Any]:
        return plain({'run_a': self.run_a, 'run_b': self.run_b,
                      'settings': asdict(self.settings),
                      'models': {'a': self.models[0], 'b': self.models[1]},
                      'totals': self.totals, 'thresholds': thresholds.verdict(self.totals),
                      'passed': not self.failed(thresholds),
                      'changed_frames': [f.record() for f in self.changed()]})

    def failed(self, thresholds: Thresholds) -> list[str]:
        """Return the names of the checks the comparison fails."""
        return [n for n, v in thresholds.verdict(self.totals).items() if v['exceeded']]

    def describe(self, thresholds: Thresholds) -> str:
        t = self.totals
        lines = [f'compare: A {self.run_a}  B {self.run_b}',
                 f'runs: A {t["status_a"] or "an index file"}, B '
                 f'{t["status_b"] or "an index file"}',
                 f'frames: {t["frames_both"]} in both, {t["only_a"]} only in A (missing '
                 f'from B), {t["only_b"]} only in B; {t["nan_values"]} NaN or infinite '
                 'values',
                 f'boxes: {t["boxes_a"]} in A, {t["boxes_b"]} in B; {t["matched"]} matched, '
                 f'{t["added"]} added, {t["lost"]} lost, {t["moved"]} moved '
                 f'(match IoU {self.settings.match_iou:g}, moved under '
                 f'{self.settings.moved_iou:g})',
                 f'captions changed: {t["caption_changes"]}; score shift: max '
                 f'{_fmt(t["score_shift_max"])}, mean {_fmt(t["score_shift_mean"])}',
                 f'latency per frame: A {_fmt(t["latency_mean_a"])} s, B '
                 f'{_fmt(t["latency_mean_b"])} s (B/A {_fmt(t["latency_ratio"])})']
        for name, v in thresholds.verdict(self.totals).items():
            lines.append(f'{"FAIL" if v["exceeded"] else "ok"}: {name} {v["limit"]} '
                         f'(value {_fmt(v["value"])})')
        return '\n'.join(lines)


def _finite(value: Any) -> Any:
    """Return None for a NaN or infinite float (JSON has no NaN), else the value."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plain(value: Any) -> Any:
    """Return a report record with every NaN or infinite float as None (valid JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return _finite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return 'n/a'
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def _frames(table: Any) -> dict[tuple, dict[str, Any]]:
    frames: dict[tuple, dict[str, Any]] = {}
    for row in table.to_pylist():
        key = (row['bag_sha256'], row['topic'], row['bag_time_ns'])
        frame = frames.setdefault(key, {'bag': row['bag'], 'stamp': row['stamp'],
                                        'text': row['text'], 'latency': row['latency_s'],
                                        'boxes': []})
        if row['phrase'] is not None and row['x1'] is not None:
            frame['boxes'].append((row['phrase'], row['x1'], row['y1'], row['x2'], row['y2'],
                                   row['score']))
    return frames


def iou(a: tuple, b: tuple) -> float:
    """Return the IoU of two (phrase, x1, y1, x2, y2, ...) boxes."""
    ix = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    iy = max(0.0, min(a[4], b[4]) - max(a[2], b[2]))
    inter = ix * iy
    union = (a[3] - a[1]) * (a[4] - a[2]) + (b[3] - b[1]) * (b[4] - b[2]) - inter
    return inter / union if union > 0 else float(a[1:5] == b[1:5])


def _match(diff: FrameDiff, settings: CompareSettings) -> int:
    from scipy.optimize import linear_sum_assignment

    matched = 0
    for phrase in sorted({b[0] for b in diff.boxes_a} | {b[0] for b in diff.boxes_b}):
        a = [b for b in diff.boxes_a if b[0] == phrase]
        b = [x for x in diff.boxes_b if x[0] == phrase]
        pairs: list[tuple[int, int]] = []
        if a and b:
            scores = np.array([[iou(x, y) for y in b] for x in a])
            rows, cols = linear_sum_assignment(-scores)
            pairs = [(r, c) for r, c in zip(rows, cols) if scores[r, c] >= settings.match_iou]
        used_a, used_b = {r for r, _ in pairs}, {c for _, c in pairs}
        diff.lost += [a[i] for i in range(len(a)) if i not in used_a]
        diff.added += [b[i] for i in range(len(b)) if i not in used_b]
        for r, c in pairs:
            matched += 1
            overlap = iou(a[r], b[c])
            if overlap < settings.moved_iou:
                diff.moved.append({'phrase': phrase, 'a': a[r], 'b': b[c], 'iou': overlap})
            if a[r][5] is not None and b[c][5] is not None:
                diff.score_shifts.append(b[c][5] - a[r][5])
    return matched


_NUMBERS = ('score', 'x1', 'y1', 'x2', 'y2', 'latency_s')


def non_finite(table: Any) -> int:
    """Return how many scores, box corners and latencies of an index are NaN or infinite."""
    import pyarrow.compute as pc

    count = 0
    for name in _NUMBERS:
        column = table[name]
        bad = pc.or_(pc.is_nan(column), pc.is_inf(column))
        count += int(pc.sum(pc.fill_null(bad, False).cast('int64')).as_py() or 0)
    return count


def compare(table_a: Any, table_b: Any, settings: CompareSettings | None = None,
            names: tuple[str, str] = ('A', 'B'),
            statuses: tuple[str | None, str | None] = (None, None)) -> Comparison:
    """Compare two indexes (pyarrow tables) frame by frame.

    ``statuses``: each run's manifest status (None for an index without a run folder).
    """
    settings = settings or CompareSettings()
    settings.check()
    fa, fb = _frames(table_a), _frames(table_b)
    diffs: list[FrameDiff] = []
    matched = 0
    for key in sorted(set(fa) | set(fb)):
        a, b = fa.get(key), fb.get(key)
        some = a or b
        diff = FrameDiff(key[0], some['bag'], key[1], key[2], some['stamp'],
                         a['text'] if a else None, b['text'] if b else None,
                         list(a['boxes']) if a else [], list(b['boxes']) if b else [],
                         latency_a=a['latency'] if a else None,
                         latency_b=b['latency'] if b else None,
                         bag_b=b['bag'] if a and b and b['bag'] != a['bag'] else '',
                         score_tolerance=settings.score_tolerance)
        if a and b:
            matched += _match(diff, settings)
        diffs.append(diff)
    both = [d for d in diffs if not d.missing]
    shifts = [abs(s) for d in both for s in d.score_shifts if math.isfinite(s)]
    lat_a = [d.latency_a for d in both if d.latency_a is not None]
    lat_b = [d.latency_b for d in both if d.latency_b is not None]
    mean_a = float(np.mean(lat_a)) if lat_a else None
    mean_b = float(np.mean(lat_b)) if lat_b else None
    totals = {
        'frames_a': len(fa), 'frames_b': len(fb), 'frames_both': len(both),
        'only_a': sum(1 for d in diffs if d.missing == 'B'),
        'only_b': sum(1 for d in diffs if d.missing == 'A'),
        'missing_frames': sum(1 for d in diffs if d.missing == 'B'),  # A's frames B lacks
        'nan_values': non_finite(table_a) + non_finite(table_b),
        'status_a': statuses[0], 'status_b': statuses[1],
        'boxes_a': sum(len(d.boxes_a) for d in both), 'boxes_b': sum(len(d.boxes_b) for d in both),
        'matched': matched, 'added': sum(len(d.added) for d in both),
        'lost': sum(len(d.lost) for d in both), 'moved': sum(len(d.moved) for d in both),
        'caption_changes': sum(1 for d in both if d.caption_changed),
        'changed_frames': sum(1 for d in diffs if d.magnitude > 0),
        'score_shift_max': max(shifts) if shifts else 0.0,
        'score_shift_mean': float(np.mean(shifts)) if shifts else 0.0,
        'latency_mean_a': mean_a, 'latency_mean_b': mean_b,
        'latency_p95_a': float(np.percentile(lat_a, 95)) if lat_a else None,
        'latency_p95_b': float(np.percentile(lat_b, 95)) if lat_b else None,
        'latency_ratio': mean_b / mean_a if mean_a and mean_b is not None else None}
    totals = {k: _finite(v) for k, v in totals.items()}
    models = (sorted(set(table_a['model'].to_pylist())), sorted(set(table_b['model'].to_pylist())))
    return Comparison(names[0], names[1], settings, totals, diffs, models)


# -- the HTML report ---------------------------------------------------------------------------

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


def thumbnail(rgb: np.ndarray, diff: FrameDiff, width: int) -> bytes:
    """Return a JPEG of the frame scaled to ``width``, A's boxes blue, B's orange."""
    from kosmos_ros.threads import opencv

    cv2 = opencv()
    scale = width / rgb.shape[1]
    height = max(1, int(round(rgb.shape[0] * scale)))
    image = np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
    for boxes, colour, thickness in ((diff.boxes_a, A_COLOUR, 4), (diff.boxes_b, B_COLOUR, 2)):
        for box in boxes:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in box[1:5])
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise CorpusError('OpenCV could not encode a thumbnail')
    return jpeg.tobytes()


_STYLE = ('body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}'
          'td,th{border:1px solid #bbb;padding:.2em .5em;text-align:left}'
          '.fail{color:#fff;background:#c00}.ok{color:#fff;background:#080}'
          '.frame{display:inline-block;vertical-align:top;width:340px;margin:.5em}'
          '.a{color:rgb(40,110,255)}.b{color:rgb(255,140,0)}.missing{color:#c00}')

# Checked by the tests in a headless browser: every thumbnail decodes, and no script error.
_CHECK = ('<script>window.__errors=[];window.addEventListener("error",function(e){'
          'window.__errors.push(String(e.message||e.type));},true);'
          'window.addEventListener("load",function(){var imgs=document.images,ok=0;'
          'for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}'
          'document.body.setAttribute("data-images",imgs.length);'
          'document.body.setAttribute("data-images-ok",ok);'
          'document.body.setAttribute("data-errors",window.__errors.length);});</script>')


def write_html(comparison: Comparison, thresholds: Thresholds, path: Path) -> int:
    """Write the report; return how many thumbnails it holds."""
    esc = html.escape
    t = comparison.totals
    verdict = thresholds.verdict(t)
    failed = [n for n, v in verdict.items() if v['exceeded']]
    parts = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
             f'<title>kosmos_corpus compare: {esc(comparison.run_a)} vs '
             f'{esc(comparison.run_b)}</title>', _CHECK, f'<style>{_STYLE}</style></head><body>',
             '<h1>kosmos_corpus compare</h1>',
             f'<p><b class="a">A</b>: {esc(comparison.run_a)} '
             f'({esc(", ".join(comparison.models[0]))})'
             f'<br><b class="b">B</b>: {esc(comparison.run_b)} '
             f'({esc(", ".join(comparison.models[1]))})</p>']
    if verdict:
        cls, word = ('fail', 'FAILED: ' + ', '.join(failed)) if failed else ('ok', 'passed')
        parts.append(f'<p class="{cls}">Gate {esc(word)}</p><table><tr><th>threshold</th>'
                     '<th>limit</th><th>value</th></tr>')
        for name, v in verdict.items():
            parts.append(f'<tr class="{"fail" if v["exceeded"] else ""}"><td>{esc(name)}</td>'
                         f'<td>{esc(_fmt(v["limit"]))}</td><td>{esc(_fmt(v["value"]))}</td></tr>')
        parts.append('</table>')
    parts.append('<h2>Totals</h2><table>')
    for name, value in t.items():
        parts.append(f'<tr><th>{esc(name)}</th><td>{esc(_fmt(value))}</td></tr>')
    parts.append('</table>')
    changed = comparison.changed()
    shown = changed[:comparison.settings.top]
    parts.append(f'<h2>Largest changes ({len(shown)} of {len(changed)} changed frames)</h2>'
                 '<p>Boxes: <b class="a">A thick blue</b>, <b class="b">B thin orange</b> '
                 '(on top: a box both runs drew is orange lined with blue).</p>')
    thumbnails = 0
    for diff in shown:
        rgb, reason = read_frame(diff.bag, diff.topic, diff.bag_time_ns)
        if rgb is None and diff.bag_b:  # runs made on other machines: try B's path too
            rgb, reason_b = read_frame(diff.bag_b, diff.topic, diff.bag_time_ns)
            reason = f'{reason}; {reason_b}'
        if rgb is not None:
            data = base64.b64encode(thumbnail(rgb, diff, comparison.settings.thumbnail_width))
            image = f'<img src="data:image/jpeg;base64,{data.decode()}" alt="frame">'
            thumbnails += 1
        else:
            image = f'<p class="missing">frame not available: {esc(reason)}</p>'
        items = [f'<li>added: {esc(b[0])} {_box(b)}</li>' for b in diff.added]
        items += [f'<li>lost: {esc(b[0])} {_box(b)}</li>' for b in diff.lost]
        items += [f'<li>moved: {esc(m["phrase"])} {_box(m["a"])} → {_box(m["b"])} '
                  f'(IoU {m["iou"]:.2f})</li>' for m in diff.moved]
        if diff.missing:
            items.append(f'<li class="missing">grounded only in '
                         f'{"A" if diff.missing == "B" else "B"}</li>')
        parts.append(f'<div class="frame">{image}<br><b>{esc(Path(diff.bag).name)}</b> '
                     f'{esc(diff.topic)} {diff.stamp:.3f}<br>'
                     f'<span class="a">A: {esc(diff.text_a or "-")}</span><br>'
                     f'<span class="b">B: {esc(diff.text_b or "-")}</span>'
                     f'<ul>{"".join(items)}</ul></div>')
    parts.append('</body></html>')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(parts), encoding='utf-8')
    return thumbnails


def _box(b: tuple) -> str:
    score = '' if b[5] is None or (isinstance(b[5], float) and math.isnan(b[5])) \
        else f' {b[5]:.2f}'
    return f'[{b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f}, {b[4]:.0f}]{score}'
