# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Comparing two runs' indexes: what a change (model, dtype, prompt, threshold) changed.

Frames are matched by the bag's content hash, the topic and the bag time, so runs of the same
bags at other paths compare. Within a frame, boxes are matched per phrase by IoU (the
assignment maximising it, pairs under ``match_iou`` left unmatched): a box of run B without a
partner is *added*, one of run A *lost*, a matched pair under ``moved_iou`` *moved*; matched
pairs give the score shifts (a frame whose only change is score shifts within
``score_tolerance`` is unchanged: batching alone moves scores by float rounding). Captions are
compared as text; latency is the frames' inference time, compared only between runs with the
same batch layout (:func:`.provenance.latency_check`). :class:`~.gate.Thresholds` turn the
totals into a verdict for CI (exit status 1).

A :class:`Comparison` also holds what each run was made with and what differs
(:mod:`.provenance`), the changes by bag, topic and phrase, and the largest changes spread
across bags; :meth:`Comparison.record` is the JSON report, :mod:`.report` writes the HTML one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import itertools
import math
from typing import Any, Callable

import numpy as np

from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.gate import GATE_LABELS, Thresholds
from kosmos_ros.corpus.labels import COLUMN_LABELS, finite, fmt, plain, TOTAL_LABELS
from kosmos_ros.corpus.provenance import (Differences, differences, latency_check, LatencyCheck,
                                          RunInfo)


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
    phrase_shifts: dict[str, list[float]] = field(default_factory=dict)  # score_shifts by phrase

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
        del out['phrase_shifts']
        out.update(caption_changed=self.caption_changed, missing_in=self.missing,
                   magnitude=self.magnitude)
        return out


def _rank(frame: FrameDiff) -> tuple:
    return (-frame.magnitude, frame.bag, frame.topic, frame.bag_time_ns)


@dataclass
class Comparison:
    """Two runs compared: totals, every frame's changes, and what each run was made with."""

    run_a: str
    run_b: str
    settings: CompareSettings
    totals: dict[str, Any]
    frames: list[FrameDiff]
    models: tuple[list[str], list[str]]
    runs: tuple[RunInfo, RunInfo]
    latency: LatencyCheck
    differences: Differences

    def changed(self) -> list[FrameDiff]:
        return sorted((f for f in self.frames if f.magnitude > 0), key=_rank)

    def largest_changes(self, top: int | None = None) -> list[FrameDiff]:
        """Return the ``top`` largest changes, spread across bags.

        Each bag's changed frames are ranked by magnitude; the bags are then taken in turn
        (round-robin: every bag's largest change, then every bag's second, ...), each round
        largest first, so one bag with many changed frames cannot fill the report alone.
        """
        top = self.settings.top if top is None else top
        queues: dict[str, list[FrameDiff]] = {}
        for frame in self.changed():
            queues.setdefault(frame.bag_sha256, []).append(frame)
        order = sorted(queues.values(), key=lambda q: _rank(q[0]))
        out: list[FrameDiff] = []
        for turn in itertools.zip_longest(*order):
            if len(out) >= top:
                break
            out += sorted((f for f in turn if f is not None), key=_rank)
        return out[:top]

    def by_bag(self) -> list[dict[str, Any]]:
        """Return the changes of each bag (by content), most changed first."""
        return _grouped(self.frames, lambda f: f.bag_sha256,
                        lambda key, frames: {'bag': frames[0].bag, 'bag_sha256': key})

    def by_topic(self) -> list[dict[str, Any]]:
        """Return the changes of each image topic, most changed first."""
        return _grouped(self.frames, lambda f: f.topic, lambda key, _: {'topic': key})

    def by_phrase(self) -> list[dict[str, Any]]:
        """Return each phrase's boxes in the frames both runs grounded, most changed first.

        Boxes in A and in B, found by both, added, lost, moved, and the score shifts.
        """
        counts: dict[str, dict[str, Any]] = {}

        def row(phrase: str) -> dict[str, Any]:
            return counts.setdefault(phrase, {'phrase': phrase, 'boxes_a': 0, 'boxes_b': 0,
                                              'matched': 0, 'added': 0, 'lost': 0, 'moved': 0,
                                              'shifts': []})

        for frame in (f for f in self.frames if not f.missing):
            for key, boxes in (('boxes_a', frame.boxes_a), ('boxes_b', frame.boxes_b),
                               ('added', frame.added), ('lost', frame.lost)):
                for box in boxes:
                    row(box[0])[key] += 1
            for moved in frame.moved:
                row(moved['phrase'])['moved'] += 1
            for phrase, shifts in frame.phrase_shifts.items():
                row(phrase)['shifts'] += shifts
        out = []
        for r in counts.values():
            r['matched'] = r['boxes_a'] - r['lost']
            out.append(dict(r, **_shift_stats(r.pop('shifts'))))
        return sorted(out, key=lambda r: (-(r['added'] + r['lost'] + r['moved']),
                                          -r['boxes_a'], r['phrase']))

    def totals_labelled(self) -> list[dict[str, Any]]:
        return [{'key': k, 'label': TOTAL_LABELS.get(k, k), 'value': v}
                for k, v in sorted(self.totals.items(),
                                   key=lambda kv: list(TOTAL_LABELS).index(kv[0])
                                   if kv[0] in TOTAL_LABELS else len(TOTAL_LABELS))]

    def record(self, thresholds: Thresholds) -> dict[str, Any]:
        """Return the JSON report: what differs first, then the totals, tables and changes."""
        verdict = {name: dict(v, label=GATE_LABELS.get(name, name))
                   for name, v in thresholds.verdict(self.totals).items()}
        return plain({'run_a': self.run_a, 'run_b': self.run_b,
                      'differences': self.differences.record(),
                      'passed': not self.failed(thresholds), 'thresholds': verdict,
                      'totals_labelled': self.totals_labelled(), 'totals': self.totals,
                      'latency': self.latency.record(),
                      'by_bag': self.by_bag(), 'by_topic': self.by_topic(),
                      'by_phrase': self.by_phrase(), 'labels': COLUMN_LABELS,
                      'largest_changes': [dict(f.record(), rank=i + 1) for i, f in
                                          enumerate(self.largest_changes())],
                      'settings': asdict(self.settings),
                      'models': {'a': self.models[0], 'b': self.models[1]},
                      'changed_frames': [f.record() for f in self.changed()]})

    def failed(self, thresholds: Thresholds) -> list[str]:
        """Return the names of the checks the comparison fails."""
        return [n for n, v in thresholds.verdict(self.totals).items() if v['exceeded']]

    def describe(self, thresholds: Thresholds) -> str:
        t = self.totals
        if t['latency_comparable']:
            latency = f'B/A {fmt(t["latency_ratio"])}'
        else:
            latency = f'not comparable: {t["latency_not_comparable"]}'
        largest = self.largest_changes()
        lines = [f'compare: A {self.run_a}  B {self.run_b}',
                 *(f'  {line}' for line in self.differences.summary),
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
                 f'{fmt(t["score_shift_max"])}, mean {fmt(t["score_shift_mean"])}',
                 f'latency per frame: A {fmt(t["latency_mean_a"])} s, B '
                 f'{fmt(t["latency_mean_b"])} s ({latency})',
                 f'changed frames: {t["changed_frames"]}; the largest {len(largest)} come from '
                 f'{len({f.bag_sha256 for f in largest})} bags']
        for name, v in thresholds.verdict(self.totals).items():
            lines.append(f'{"FAIL" if v["exceeded"] else "ok"}: {name} {v["limit"]} '
                         f'(value {fmt(v["value"])})')
        return '\n'.join(lines)


def _shift_stats(shifts: list[float]) -> dict[str, Any]:
    shifts = [s for s in shifts if math.isfinite(s)]
    return {'score_shift_signed_mean': float(np.mean(shifts)) if shifts else None,
            'score_shift_max': max(abs(s) for s in shifts) if shifts else None}


def _grouped(frames: list[FrameDiff], key: Callable[[FrameDiff], str],
             head: Callable[[str, list[FrameDiff]], dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[FrameDiff]] = {}
    for frame in frames:
        groups.setdefault(key(frame), []).append(frame)
    out = []
    for name, group in groups.items():
        both = [f for f in group if not f.missing]
        out.append(dict(
            head(name, group),
            frames_a=sum(1 for f in group if f.missing != 'A'),
            frames_b=sum(1 for f in group if f.missing != 'B'), frames_both=len(both),
            only_a=sum(1 for f in group if f.missing == 'B'),
            only_b=sum(1 for f in group if f.missing == 'A'),
            changed_frames=sum(1 for f in group if f.magnitude > 0),
            added=sum(len(f.added) for f in both), lost=sum(len(f.lost) for f in both),
            moved=sum(len(f.moved) for f in both),
            caption_changes=sum(1 for f in both if f.caption_changed),
            **_shift_stats([s for f in both for s in f.score_shifts])))
    return sorted(out, key=lambda r: (-r['changed_frames'],
                                      -(r['added'] + r['lost'] + r['moved']),
                                      str(r.get('bag', r.get('topic')))))


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
                diff.phrase_shifts.setdefault(phrase, []).append(b[c][5] - a[r][5])
    return matched


_NUMBERS = ('score', 'x1', 'y1', 'x2', 'y2', 'latency_s')


def nonfinite(table: Any) -> int:
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
            runs: tuple[RunInfo | None, RunInfo | None] = (None, None)) -> Comparison:
    """Compare two indexes (pyarrow tables) frame by frame.

    ``runs``: what each run was made with (:func:`.provenance.read_run`: a run folder's
    manifest); None for what the index's own rows tell (no status, no batch layout).
    """
    settings = settings or CompareSettings()
    settings.check()
    runs = tuple(run if run is not None else RunInfo.from_index(name, table)
                 for run, name, table in zip(runs, names, (table_a, table_b)))
    latency = latency_check(*runs)
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
    signed = [s for d in both for s in d.score_shifts if math.isfinite(s)]
    shifts = [abs(s) for s in signed]
    lat_a = [d.latency_a for d in both if d.latency_a is not None]
    lat_b = [d.latency_b for d in both if d.latency_b is not None]
    mean_a = float(np.mean(lat_a)) if lat_a else None
    mean_b = float(np.mean(lat_b)) if lat_b else None
    totals = {
        'frames_a': len(fa), 'frames_b': len(fb), 'frames_both': len(both),
        'only_a': sum(1 for d in diffs if d.missing == 'B'),
        'only_b': sum(1 for d in diffs if d.missing == 'A'),
        'missing_frames': sum(1 for d in diffs if d.missing == 'B'),  # A's frames B lacks
        'nan_values': nonfinite(table_a) + nonfinite(table_b),
        'status_a': runs[0].status, 'status_b': runs[1].status,
        'boxes_a': sum(len(d.boxes_a) for d in both), 'boxes_b': sum(len(d.boxes_b) for d in both),
        'matched': matched, 'added': sum(len(d.added) for d in both),
        'lost': sum(len(d.lost) for d in both), 'moved': sum(len(d.moved) for d in both),
        'caption_changes': sum(1 for d in both if d.caption_changed),
        'changed_frames': sum(1 for d in diffs if d.magnitude > 0),
        'score_shift_max': max(shifts) if shifts else 0.0,
        'score_shift_mean': float(np.mean(shifts)) if shifts else 0.0,
        'score_shift_signed_mean': float(np.mean(signed)) if signed else 0.0,
        'latency_comparable': latency.comparable, 'latency_not_comparable': latency.reason,
        'latency_mean_a': mean_a, 'latency_mean_b': mean_b,
        'latency_median_a': float(np.median(lat_a)) if lat_a else None,
        'latency_median_b': float(np.median(lat_b)) if lat_b else None,
        'latency_p95_a': float(np.percentile(lat_a, 95)) if lat_a else None,
        'latency_p95_b': float(np.percentile(lat_b, 95)) if lat_b else None,
        'latency_ratio': mean_b / mean_a if latency.comparable and mean_a and mean_b is not None
        else None}
    totals = {k: finite(v) for k, v in totals.items()}
    models = (sorted(set(table_a['model'].to_pylist())), sorted(set(table_b['model'].to_pylist())))
    return Comparison(names[0], names[1], settings, totals, diffs, models, runs, latency,
                      differences(*runs))
