# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Searching a run's index: phrase or caption text, score, time range, topic, bag.

Text matches are case-insensitive substrings; ``topic`` takes a glob (``/front/*``); times
are header stamps, as seconds or ISO 8601 (``2026-11-30T07:00:00Z``; no zone means UTC).
Hits print as a table, or are written as CSV, JSON lines or Parquet (by the file's suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
import fnmatch
import json
import math
from pathlib import Path
from typing import Any

from kosmos_ros.corpus import CorpusError

EXPORTS = ('.csv', '.json', '.jsonl', '.parquet')


@dataclass(frozen=True)
class SearchQuery:
    """What to look for; every field given must hold (and)."""

    phrase: str | None = None
    text: str | None = None
    min_score: float | None = None
    topic: str | None = None
    bag: str | None = None
    since: float | None = None
    until: float | None = None


def parse_time(text: str) -> float:
    """Return seconds since the epoch from seconds or ISO 8601 text; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace('Z', '+00:00'))
        except ValueError:
            raise ValueError(f'{text!r} is neither seconds nor an ISO 8601 time') from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    if not math.isfinite(value):
        raise ValueError(f'{text!r} is not a finite time')
    return value


def search(table: Any, query: SearchQuery) -> Any:
    """Return the rows of ``table`` that match ``query``, in index order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pa.array([True] * table.num_rows, pa.bool_())

    def both(condition: Any) -> None:
        nonlocal mask
        mask = pc.and_(mask, pc.fill_null(condition, False))

    if query.phrase is not None:
        both(pc.match_substring(table['phrase'], query.phrase, ignore_case=True))
    if query.text is not None:
        both(pc.match_substring(table['text'], query.text, ignore_case=True))
    if query.min_score is not None:
        both(pc.greater_equal(table['score'], query.min_score))
    if query.topic is not None:
        topics = [t for t in pc.unique(table['topic']).to_pylist()
                  if t is not None and fnmatch.fnmatchcase(t, query.topic)]
        both(pc.is_in(table['topic'], value_set=pa.array(topics, pa.string())))
    if query.bag is not None:
        both(pc.or_(pc.match_substring(table['bag'], query.bag, ignore_case=True),
                    pc.starts_with(table['bag_sha256'], query.bag.lower())))
    if query.since is not None:
        both(pc.greater_equal(table['stamp'], query.since))
    if query.until is not None:
        both(pc.less_equal(table['stamp'], query.until))
    return table.filter(mask)


_SHOWN = ('bag', 'topic', 'stamp', 'phrase', 'score', 'x1', 'y1', 'x2', 'y2', 'text')


def format_table(hits: Any, limit: int = 50) -> str:
    """Return the hits as aligned text, the first ``limit`` of them."""
    rows = hits.select(list(_SHOWN)).slice(0, limit).to_pylist()
    cells = [list(_SHOWN)]
    for row in rows:
        box = [row[k] for k in ('x1', 'y1', 'x2', 'y2')]
        cells.append([Path(row['bag']).name, row['topic'], f'{row["stamp"]:.3f}',
                      row['phrase'] or '', '' if row['score'] is None else f'{row["score"]:.3g}',
                      *('' if v is None else f'{v:.0f}' for v in box),
                      (row['text'] or '')[:60]])
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(_SHOWN))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    more = hits.num_rows - len(rows)
    lines.append(f'{hits.num_rows} hits' + (f' ({more} not shown; --limit or --output)'
                                            if more > 0 else ''))
    return '\n'.join(lines)


def export(hits: Any, path: Path) -> None:
    """Write the hits to ``path``: .csv, .json / .jsonl (one object per line) or .parquet."""
    import pyarrow.csv as pacsv

    from kosmos_ros.corpus.index import write_table

    suffix = Path(path).suffix.lower()
    if suffix not in EXPORTS:
        raise CorpusError(f'cannot export to {path}: use a {", ".join(EXPORTS)} file')
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if suffix == '.parquet':
        write_table(hits, Path(path))
    elif suffix == '.csv':
        pacsv.write_csv(hits, path)
    else:
        with open(path, 'w', encoding='utf-8') as f:
            for row in hits.to_pylist():
                f.write(json.dumps(row) + '\n')
