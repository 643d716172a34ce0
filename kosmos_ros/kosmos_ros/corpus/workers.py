# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference workers: the engine in this process, or one Ray actor per GPU or CPU worker.

Both offer the same calls (:class:`Worker`): ``info`` (the engine's description, revision and
pixel limit), ``check`` (a query's PromptError, before any work), ``ground`` (chunks in,
:class:`~kosmos_ros.corpus.chunks.ChunkResult` out) and ``write`` (a grounded bag's outputs).
:class:`LocalPool` runs them here; :class:`~kosmos_ros.corpus.ray_pool.RayPool` on Ray actors;
:func:`kosmos_ros.corpus.pools.open_pool` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from kosmos_ros.corpus.chunks import ChunkResult
from kosmos_ros.corpus.options import WorkerSpec
from kosmos_ros.corpus.plan import Chunk
from kosmos_ros.corpus.work import BagJob, BagWritten, ground_chunks, write_bag
from kosmos_ros.datatypes import Query
from kosmos_ros.errors import KosmosError, ModelLoadError


@dataclass(frozen=True)
class EngineInfo:
    """What the run records of the workers' engine."""

    description: str
    revision: str
    max_pixels: int
    load_error: str = ''  # a Ray worker's ModelLoadError, returned rather than raised


class Worker:
    """One engine and the calls a corpus run makes on it (a Ray actor's class too).

    With ``keep_error`` (Ray actors), a ModelLoadError is kept and reported by :meth:`info`:
    an actor whose constructor raises dies without telling why.
    """

    def __init__(self, spec: WorkerSpec | None = None, engine: Any = None,
                 keep_error: bool = False):
        self.load_error = ''
        try:
            self.engine = engine if engine is not None else spec.load()
        except ModelLoadError as exc:
            if not keep_error:
                raise
            self.engine, self.load_error = None, str(exc)

    def info(self) -> EngineInfo:
        if self.engine is None:
            return EngineInfo('', '', 0, self.load_error)
        loaded = getattr(self.engine, 'loaded', None)
        return EngineInfo(self.engine.describe(), str(getattr(loaded, 'revision', '') or ''),
                          int(self.engine.options.max_pixels))

    def check(self, query: Query) -> str:
        """Return why the query cannot run ('' when it can)."""
        try:
            self.engine.prepare(query, 640, 480)
        except KosmosError as exc:
            return str(exc)
        return ''

    def ground(self, chunks: Sequence[Chunk], query: Query,
               batch_size: int) -> list[ChunkResult]:
        return ground_chunks(self.engine, chunks, query, batch_size)

    def write(self, job: BagJob) -> BagWritten:
        """Write a grounded bag's outputs (:func:`~kosmos_ros.corpus.work.write_bag`)."""
        return write_bag(job)


class LocalPool:
    """The engine in this process: tasks run one after the other, in order."""

    workers = 1
    workers_elsewhere = False  # results come back on this thread, one task after the other

    def __init__(self, spec: WorkerSpec | None, engine: Any = None):
        self.worker = Worker(spec, engine)

    def describe(self) -> str:
        return 'this process (no Ray)'

    def info(self) -> EngineInfo:
        return self.worker.info()

    def check(self, query: Query) -> str:
        return self.worker.check(query)

    def run(self, tasks: Sequence[Sequence[Chunk]], query: Query,
            batch_size: int) -> Iterator[list[ChunkResult]]:
        for task in tasks:
            yield self.worker.ground(task, query, batch_size)

    def write(self, job: BagJob, guard: Any = None) -> BagWritten:
        """Write a bag's outputs here, under the run's SIGINT ``guard``."""
        return write_bag(job, guard)

    def close(self) -> None:
        return None
