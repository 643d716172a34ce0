# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The run's columnar index (Parquet, through pyarrow): one row per box of every grounded frame.

A grounded frame without any box has one row with null phrase and box columns, so every
caption is in the index. Columns (:data:`SCHEMA`): the bag (path, id, SHA-256), topic, bag
time (ns), header stamp (s) and frame_id, the frame's size, the task and prompt, the generated
text (and answer), the phrase and its index, the box's index and pixel corners, its score,
whether it was given in the prompt, its 3D centre in metres in the camera's optical frame
when the topic has depth (null otherwise), the frame's inference time and generated tokens, the
model, its revision, and the run's options (JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from kosmos_ros.bag.records import FrameOutcome
from kosmos_ros.corpus import CorpusError

COLUMNS = (
    ('bag', 'string'), ('bag_id', 'string'), ('bag_sha256', 'string'), ('topic', 'string'),
    ('bag_time_ns', 'int64'), ('stamp', 'float64'), ('frame_id', 'string'),
    ('width', 'int32'), ('height', 'int32'), ('task', 'string'), ('prompt', 'string'),
    ('text', 'string'), ('answer', 'string'), ('phrase', 'string'), ('phrase_index', 'int32'),
    ('box_index', 'int32'), ('x1', 'float64'), ('y1', 'float64'), ('x2', 'float64'),
    ('y2', 'float64'), ('score', 'float64'), ('given', 'bool_'), ('x', 'float64'),
    ('y', 'float64'), ('z', 'float64'), ('latency_s', 'float64'), ('tokens', 'int32'),
    ('model', 'string'), ('revision', 'string'), ('options', 'string'))

SORT_KEYS = [('bag_sha256', 'ascending'), ('topic', 'ascending'),
             ('bag_time_ns', 'ascending'), ('phrase_index', 'ascending'),
             ('box_index', 'ascending')]


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


def frame_rows(outcome: FrameOutcome, bag: dict[str, Any], model: str, revision: str,
               options: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the index rows of a grounded frame (none for a throttled or skipped one)."""
    result = outcome.result
    if result is None:
        return []
    base = {'bag': bag['path'], 'bag_id': bag['bag_id'], 'bag_sha256': bag['sha256'],
            'topic': outcome.topic, 'bag_time_ns': outcome.bag_time_ns,
            'stamp': outcome.stamp, 'frame_id': outcome.frame_id,
            'width': result.image_size[0], 'height': result.image_size[1],
            'task': result.task.name.lower(), 'prompt': result.prompt, 'text': result.text,
            'answer': result.answer, 'latency_s': result.timings.total,
            'tokens': result.num_generated_tokens, 'model': model, 'revision': revision,
            'options': json.dumps(options, sort_keys=True)}
    rows = []
    for p, phrase in enumerate(result.phrases):
        for b, box in enumerate(phrase.boxes):
            row = dict(base, phrase=phrase.text, phrase_index=p, box_index=b,
                       x1=box.pixels.x1, y1=box.pixels.y1, x2=box.pixels.x2, y2=box.pixels.y2,
                       score=box.score, given=box.given)
            lifted = _lifted(outcome, p, b)
            if lifted is not None:
                row.update(x=lifted[0], y=lifted[1], z=lifted[2])
            rows.append(row)
    return rows or [base]


def _lifted(outcome: FrameOutcome, p: int, b: int) -> tuple[float, float, float] | None:
    try:
        box = outcome.lifted[p][b].box if outcome.lifted is not None else None
    except (IndexError, TypeError, AttributeError):
        return None
    return None if box is None else tuple(float(v) for v in box.center)


def to_table(rows: Iterable[dict[str, Any]]) -> Any:
    import pyarrow as pa

    names = [name for name, _ in COLUMNS]
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in names}
    table = pa.table(columns, schema=schema())
    return table.sort_by(SORT_KEYS) if table.num_rows else table


def write_table(table: Any, path: Path) -> None:
    """Write a Parquet file atomically (a temporary file renamed into place)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + '.tmp')
    pq.write_table(table, tmp, compression='zstd')
    os.replace(tmp, path)


class DamagedIndex(CorpusError):
    """An index file that cannot be read, or is not a kosmos_ros index."""


def read_part(path: Path) -> Any:
    """Return a Parquet file's table; DamagedIndex when it cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DamagedIndex(f'cannot read the index {path}: {exc}') from None


def check_part(table: Any) -> None:
    """Raise DamagedIndex unless ``table`` has exactly the index's columns and types."""
    if not table.schema.equals(schema()):
        got = {field.name: field.type for field in table.schema}
        wrong = [f'{f.name} is {got[f.name]}, not {f.type}' if f.name in got else
                 f'{f.name} is missing' for f in schema() if got.get(f.name) != f.type]
        detail = f': {"; ".join(wrong)}' if wrong else ''
        raise DamagedIndex(f'its columns are not those of a kosmos_ros index{detail}')


def read_table(path: Path) -> Any:
    """Read an index: a Parquet file, or a run folder's ``index.parquet``; CorpusError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        path = path / 'index.parquet'
    if not path.is_file():
        raise CorpusError(f'no index at {path}: not a finished run folder or Parquet file')
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f'cannot read the index {path}: {exc}') from None
    missing = [name for name, _ in COLUMNS if name not in table.column_names]
    if missing:
        raise CorpusError(f'{path} is not a kosmos_ros index: it lacks {", ".join(missing)}')
    return table


def run_status(path: Path) -> str | None:
    """Return the status in a run folder's manifest ('running' when it has none yet).

    None for an index file given on its own (no manifest to tell).
    """
    from kosmos_ros.corpus import manifest

    if not Path(path).is_dir():
        return None
    data = manifest.read(Path(path))
    return str(data.get('status', 'running')) if data is not None else 'running'


def merge(parts: Iterable[Path]) -> Any:
    """Return the index of all parts (per bag Parquet files), sorted; DamagedIndex."""
    import pyarrow as pa

    tables = []
    for part in parts:
        table = read_part(part)
        check_part(table)
        tables.append(table)
    if not tables:
        return to_table([])
    return pa.concat_tables(tables).sort_by(SORT_KEYS)
