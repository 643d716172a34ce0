# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a corpus run did: :class:`CorpusSummary`, printed at its end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kosmos_ros.datatypes import Query


@dataclass
class CorpusSummary:
    """What a run did (this invocation, and the run folder as a whole)."""

    output: Path
    model: str = ''
    model_label: str = ''
    query: Query | None = None
    bags: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    chunks_reused: int = 0
    chunks_now: int = 0
    frames_now: int = 0
    ground_s: float = 0.0  # from the first task handed out to the last result
    writing_cpu_s: float = 0.0  # CPU time spent writing the bags (on the workers with Ray)
    grounding_cpu_s: float = 0.0  # this process's CPU time over the grounding (the driver's)
    per_worker: Counter = field(default_factory=Counter)
    workers: str = ''
    elapsed_s: float = 0.0
    interrupted: bool = False
    index_rows: int = 0
    # What the run found changed or damaged in the folder, and what it did about it.
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for b in self.bags if b.get('status') == status)

    @property
    def grounded(self) -> int:
        return sum(int(b.get('grounded', 0)) for b in self.bags if b.get('status') == 'done')

    @property
    def complete(self) -> bool:
        return not self.interrupted and all(b.get('status') in ('done', 'duplicate', 'failed')
                                            for b in self.bags)

    def describe(self) -> str:
        label = f' [{self.model_label}]' if self.model_label else ''
        lines = [f'kosmos_corpus: {len(self.bags)} bags -> {self.output} '
                 f'(index.parquet: {self.index_rows} rows; manifest.json)',
                 f'model: {self.model}{label}']
        if self.query is not None:
            lines.append(f'task {self.query.task.name.lower()}, prompt {self.query.prompt!r}')
        lines.append(f'bags: {self.count("done")} done, {self.count("failed")} failed, '
                     f'{self.count("duplicate")} duplicates, {self.count("pending")} pending')
        for b in self.bags:
            if b.get('status') in ('failed', 'duplicate'):
                lines.append(f'  {b["status"]}: {b["path"]}: {b.get("reason", "")}')
        for p in self.problems:
            lines.append(f'  not a bag: {p["input"]}: {p["reason"]}')
        lines.extend(f'  {note}' for note in self.notes)
        skipped: Counter = Counter()
        for b in self.bags:
            skipped.update(b.get('skipped', {}))
        lines.append(f'frames: {self.grounded} grounded, {sum(skipped.values())} skipped')
        for reason, n in skipped.most_common(5):
            lines.append(f'  skipped {n}x: {reason}')
        speed = self.frames_now / self.ground_s if self.ground_s > 0 else 0.0
        lines.append(f'this run: {self.frames_now} frames in {self.chunks_now} chunks '
                     f'({self.chunks_reused} of {self.chunks} chunks done before); grounding '
                     f'{self.ground_s:.1f} s, {speed:.2f} frames/s; {self.elapsed_s:.1f} s in '
                     f'all (hashing, planning, loading, writing){label}')
        if self.workers:
            lines.append(f'workers: {self.workers}')
        for name, n in sorted(self.per_worker.items()):
            lines.append(f'  {name}: {n} frames')
        if self.interrupted:
            lines.append('interrupted: run the same command again to resume; finished chunks '
                         'and bags are kept')
        return '\n'.join(lines)
