# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What each run of a comparison was made with, what differs, and whether latencies compare.

A run folder's ``manifest.json`` tells it all: the options that change results (the
fingerprint: task, prompt, min_score, rate, topics, depth, ...), the model (its description
names the weights, device, dtype and quantization; its revision; its label), the package
versions, the run's layout (batch size, workers, Ray address, chunks per task) and its status.
An index file given on its own carries the options, the model description and its revision in
its rows; its versions, layout, label and status are *not known*.

Latency is a frame's inference time, and a batch's generation time counts for each of its
frames (:mod:`.index`), so it compares only between runs that batched alike on the same kind of
device: the same batch size, workers, Ray address, chunks per task, chunk size and device
(:data:`LAYOUT`). The dtype, quantization and weights are not part of the layout: they are the
change a comparison usually measures (``runs/base`` against ``runs/fp16``), and the report
names them beside the ratio. A run resumed with another layout records only the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
import re
from typing import Any

UNKNOWN = object()  # a field a run does not record (an index file has no manifest)
NOT_KNOWN = 'not known'

# The sections of the differences, in the order the report shows them.
SECTIONS = ('model', 'options', 'run layout', 'versions', 'run')
# What a frame's latency depends on besides the change under test: (section, field).
LAYOUT = (('run layout', 'batch_size'), ('run layout', 'workers'),
          ('run layout', 'ray_address'), ('run layout', 'chunks_per_task'),
          ('options', 'chunk_frames'), ('model', 'device'))
# loading.LoadedModel.describe(): '<weights> on <device> (<dtype>, quantization <q>)'.
_DESCRIPTION = re.compile(r'(?P<weights>.+) on (?P<device>\S+) \((?P<dtype>[^,()]+), '
                          r'quantization (?P<quantization>[^()]*)\)')

LABELS = {
    'weights': 'model weights', 'device': 'device', 'dtype': 'dtype',
    'quantization': 'quantization', 'revision': 'model revision', 'label': 'model label',
    'description': 'model (as loaded)',
    'task': 'task (--task)', 'prompt': 'prompt (--prompt)',
    'min_score': 'least box score in the detections (--min-score)',
    'max_new_tokens': 'most generated tokens (--max-new-tokens)',
    'rate_hz': 'frames grounded per second of bag time (--rate-hz, 0: all)',
    'topics': 'image topics (--topic)', 'copy_input': 'input topics copied (--copy-input)',
    'depth_topics': 'depth topics', 'camera_info_topics': 'camera info topics',
    'use_depth': 'depth used', 'chunk_frames': 'frames per chunk (--chunk-frames)',
    'batch_size': 'frames decoded together (--batch-size)',
    'workers': 'inference workers (--workers; none: auto)',
    'ray_address': 'Ray cluster (--ray-address; none: embedded local Ray)',
    'chunks_per_task': 'chunks per worker task (--chunks-per-task)',
    'inputs': 'inputs given', 'status': 'run status', 'source': 'read from',
    'packages': 'package versions',
}


@dataclass(frozen=True)
class RunInfo:
    """What one run was made with; None where it is not known.

    ``source`` is 'manifest' (a run folder) or 'index' (an index file on its own, or a run
    folder without a manifest yet).
    """

    path: str
    source: str
    status: str | None = None
    options: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    layout: dict[str, Any] | None = None

    @classmethod
    def from_index(cls, path: str, table: Any, status: str | None = None) -> RunInfo:
        """Return what an index's rows tell: options, model description and revision."""
        options = None
        texts = _distinct(table, 'options')
        if len(texts) == 1:
            try:
                options = json.loads(texts[0])
            except ValueError:
                options = None
            options = options if isinstance(options, dict) else {'options': texts[0]}
        elif texts:
            options = {'options': 'several: ' + '; '.join(texts)}
        model: dict[str, Any] = {}
        for name, column in (('description', 'model'), ('revision', 'revision')):
            values = _distinct(table, column)
            if values:
                model[name] = values[0] if len(values) == 1 else 'several: ' + '; '.join(values)
        return cls(str(path), 'index', status, options, model or None)


def _distinct(table: Any, column: str) -> list[str]:
    return sorted({v for v in table[column].to_pylist() if v is not None})


def read_run(path: Path, table: Any) -> RunInfo:
    """Return what a run folder's manifest (or, for an index file, its rows) tells.

    A folder without a manifest is a run still starting ('running'); CorpusError when the
    manifest is damaged (:func:`.manifest.read`).
    """
    from kosmos_ros.corpus import manifest

    path = Path(path)
    if not path.is_dir():
        return RunInfo.from_index(str(path), table)
    data = manifest.read(path)
    if data is None:
        return RunInfo.from_index(str(path), table, status='running')
    return RunInfo(str(path), 'manifest', str(data.get('status', 'running')),
                   data.get('options'), data.get('model'), data.get('versions'),
                   data.get('run'))


def fields(run: RunInfo) -> dict[tuple[str, str], Any]:
    """Return every field a run could record, by (section, name); UNKNOWN where it does not."""
    out: dict[tuple[str, str], Any] = {}
    model = run.model or {}
    parsed = _DESCRIPTION.fullmatch(str(model.get('description', '')))
    for name in ('weights', 'device', 'dtype', 'quantization'):
        out[('model', name)] = parsed.group(name) if parsed else UNKNOWN
    for name in ('revision', 'label', 'description'):
        out[('model', name)] = model.get(name, UNKNOWN)
    for name, value in _flat(run.options or {}):
        out[('options', name)] = value
    for name in ('batch_size', 'workers', 'ray_address', 'chunks_per_task', 'inputs'):
        out[('run layout', name)] = (run.layout or {}).get(name, UNKNOWN)
    for name, value in sorted((run.versions or {}).items()):
        out[('versions', name)] = value
    if run.versions is None:
        out[('versions', 'packages')] = UNKNOWN
    out[('run', 'status')] = run.status if run.status is not None else UNKNOWN
    out[('run', 'source')] = {'manifest': 'run folder (manifest.json)',
                              'index': 'index rows (no manifest)'}.get(run.source, run.source)
    return out


def _flat(values: dict[str, Any], prefix: str = '') -> list[tuple[str, Any]]:
    out = []
    for name, value in sorted(values.items()):
        if isinstance(value, dict):
            out += _flat(value, f'{prefix}{name}.')
        else:
            out.append((f'{prefix}{name}', value))
    return out


def show(value: Any) -> str:
    """Return a field's value as a person reads it."""
    if value is UNKNOWN:
        return NOT_KNOWN
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, str):
        return value if value else '(empty)'
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _short(value: Any, most: int = 60) -> str:
    text = show(value)
    return text if len(text) <= most else text[:most - 1] + '…'


@dataclass(frozen=True)
class FieldDiff:
    section: str
    name: str
    a: Any
    b: Any

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def state(self) -> str:
        if self.a is UNKNOWN or self.b is UNKNOWN:
            return NOT_KNOWN
        return 'same' if self.a == self.b else 'differs'

    def record(self) -> dict[str, Any]:
        return {'section': self.section, 'field': self.name, 'label': self.label,
                'a': NOT_KNOWN if self.a is UNKNOWN else self.a,
                'b': NOT_KNOWN if self.b is UNKNOWN else self.b, 'state': self.state,
                'not_known_in': [r for r, v in (('A', self.a), ('B', self.b)) if v is UNKNOWN]}


@dataclass(frozen=True)
class Differences:
    """Every field of both runs, and the sentences that say what differs."""

    fields: list[FieldDiff]
    summary: list[str]

    def where(self, state: str) -> list[FieldDiff]:
        return [f for f in self.fields if f.state == state]

    def record(self) -> dict[str, Any]:
        return {'summary': self.summary,
                'differ': [f.record() for f in self.where('differs')],
                'not_known': [f.record() for f in self.where(NOT_KNOWN)],
                'same': [f.record() for f in self.where('same')]}


def differences(a: RunInfo, b: RunInfo) -> Differences:
    """Compare what two runs were made with, field by field."""
    fa, fb = fields(a), fields(b)
    keys = sorted(set(fa) | set(fb), key=lambda k: (SECTIONS.index(k[0]), _order(k)))
    rows = [FieldDiff(s, n, fa.get((s, n), UNKNOWN), fb.get((s, n), UNKNOWN)) for s, n in keys
            if (s, n) != ('run', 'source') or fa[(s, n)] != fb[(s, n)]]
    return Differences(rows, _summary(rows, a, b))


def _order(key: tuple[str, str]) -> tuple[int, str]:
    first = ('weights', 'device', 'dtype', 'quantization', 'revision', 'label', 'task', 'prompt',
             'min_score', 'batch_size', 'workers', 'ray_address')
    return (first.index(key[1]) if key[1] in first else len(first), key[1])


def _summary(rows: list[FieldDiff], a: RunInfo, b: RunInfo) -> list[str]:
    by = {(r.section, r.name): r for r in rows}
    weights = by.get(('model', 'weights'))
    parsed = weights is not None and weights.a is not UNKNOWN and weights.b is not UNKNOWN
    model = ('weights', 'device', 'dtype', 'quantization') if parsed else ('description',)
    lines = []
    for section, names, same, differ in (
            ('model', model + ('revision', 'label'), 'Same model', 'Model differs'),
            ('options', None, 'Same options', 'Options differ'),
            ('run layout', None, 'Same run layout', 'Run layout differs'),
            ('versions', None, 'Same package versions', 'Package versions differ')):
        these = [r for r in rows if r.section == section and (names is None or r.name in names)]
        changed = [r for r in these if r.state == 'differs']
        if changed:
            lines.append(f'{differ}: ' + '; '.join(
                f'{r.label} {_short(r.a)} → {_short(r.b)}' for r in changed) + '.')
        elif section == 'model' and any(r.state == 'same' for r in these):
            description = by.get(('model', 'description'))
            revision = by.get(('model', 'revision'))
            text = _short(description.a, 120) if description and description.state == 'same' \
                else 'as far as recorded'
            if revision is not None and revision.state == 'same':
                text += f', revision {revision.a or "none (a local folder)"}'
            lines.append(f'{same}: {text}.')
        elif any(r.state == 'same' for r in these):
            lines.append(f'{same}.')
    for name, run in (('A', a), ('B', b)):
        unknown: list[str] = []
        for r in rows:
            if (r.a if name == 'A' else r.b) is UNKNOWN:
                what = r.label if r.section in ('model', 'options') else \
                    _SECTION_WORDS[r.section]
                unknown += [] if what in unknown else [what]
        if unknown:
            what = 'an index file without its run folder' if run.source == 'index' else \
                'a run folder whose manifest does not record them'
            lines.append(f'Not known for {name} ({what}): {", ".join(unknown)}.')
    return lines


_SECTION_WORDS = {'run layout': 'run layout (batch size, workers)',
                  'versions': 'package versions', 'run': 'run status'}


@dataclass(frozen=True)
class LatencyCheck:
    """Whether the two runs' latencies compare, and if not, why.

    ``measures``: the differences in weights, dtype, quantization or revision the latency
    ratio includes (the change under test).
    """

    comparable: bool
    reason: str
    layout_a: dict[str, str] = field(default_factory=dict)
    layout_b: dict[str, str] = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {'comparable': self.comparable, 'reason': self.reason,
                'layout_a': self.layout_a, 'layout_b': self.layout_b,
                'measures': self.measures}


def latency_check(a: RunInfo, b: RunInfo) -> LatencyCheck:
    """Return whether frames' latencies of two runs compare (same batch layout and device)."""
    fa, fb = fields(a), fields(b)
    why = []
    for name, run in (('A', a), ('B', b)):
        if run.source != 'manifest':
            why.append(f'{name} is an index file without its run folder: its batch layout is '
                       'not known')
    if not why:
        for key in LAYOUT:
            va, vb = fa.get(key, UNKNOWN), fb.get(key, UNKNOWN)
            label = _LAYOUT_WORDS[key[1]]
            if va is UNKNOWN or vb is UNKNOWN:
                missing = ' and '.join(n for n, v in (('A', va), ('B', vb)) if v is UNKNOWN)
                why.append(f'{label} not recorded for {missing}')
            elif va != vb:
                why.append(f'{label} {show(va)} in A, {show(vb)} in B')
    measures = [f'{LABELS[n]} {_short(fa.get(("model", n), UNKNOWN))} → '
                f'{_short(fb.get(("model", n), UNKNOWN))}'
                for n in ('weights', 'dtype', 'quantization', 'revision')
                if fa.get(('model', n), UNKNOWN) != fb.get(('model', n), UNKNOWN)]
    return LatencyCheck(not why, '; '.join(why),
                        {k[1]: show(fa.get(k, UNKNOWN)) for k in LAYOUT},
                        {k[1]: show(fb.get(k, UNKNOWN)) for k in LAYOUT}, measures)


_LAYOUT_WORDS = {'batch_size': 'batch size', 'workers': 'workers', 'ray_address': 'Ray address',
                 'chunks_per_task': 'chunks per task', 'chunk_frames': 'frames per chunk',
                 'device': 'device'}
