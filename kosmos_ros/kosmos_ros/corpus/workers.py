# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference workers: the engine in this process, or one Ray actor per GPU or CPU worker.

Both offer the same calls (:class:`Worker`): ``info`` (the engine's description, revision and
pixel limit), ``check`` (a query's PromptError, before any work) and ``ground`` (chunks in,
:class:`~kosmos_ros.corpus.work.ChunkResult` out). :class:`LocalPool` runs them here;
:class:`RayPool` hands the tasks to Ray's ``ActorPool`` (no scheduler of our own).

The embedded local Ray binds every server to loopback: before Ray is imported,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it take 127.0.0.1 as the node address (without
it, Ray 2.60 advertises and dials the machine's external address), and usage statistics are
off (``RAY_USAGE_STATS_ENABLED=0``: no report is sent anywhere). It keeps its sockets, logs and
token in a private folder and lets in only clients holding the token
(:class:`~kosmos_ros.corpus.ray_env.PrivateRay`), removed when the pool closes. SIGINT and
SIGTERM wait until ``ray.init`` and ``ray.shutdown`` are done
(:func:`~kosmos_ros.corpus.ray_env.signals_held`). ``ray_address`` joins an existing cluster
instead, whose network and authentication are then the cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Any, Callable, Iterator, Sequence

from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.options import WorkerSpec
from kosmos_ros.corpus.plan import Chunk
from kosmos_ros.corpus.ray_env import PrivateRay, signals_held
from kosmos_ros.corpus.work import ChunkResult, ground_chunks
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


class LocalPool:
    """The engine in this process: tasks run one after the other, in order."""

    workers = 1

    def __init__(self, spec: WorkerSpec | None, engine: Any = None):
        self.worker = Worker(spec, engine)

    def info(self) -> EngineInfo:
        return self.worker.info()

    def check(self, query: Query) -> str:
        return self.worker.check(query)

    def run(self, tasks: Sequence[Sequence[Chunk]], query: Query,
            batch_size: int) -> Iterator[list[ChunkResult]]:
        for task in tasks:
            yield self.worker.ground(task, query, batch_size)

    def close(self) -> None:
        return None


class RayPool:
    """``workers`` Ray actors, each holding an engine; tasks go to Ray's ``ActorPool``."""

    def __init__(self, spec: WorkerSpec, workers: int | None, address: str | None,
                 on_status: Callable[[str], None] | None = None):
        self.ray: Any = None
        self.private: PrivateRay | None = None
        self._processes: list[Any] = []
        try:
            self._start(spec, workers, address, on_status)
        except BaseException:  # KeyboardInterrupt too: nothing of the cluster may stay
            self.close()
            raise

    def _start(self, spec: WorkerSpec, workers: int | None, address: str | None,
               on_status: Callable[[str], None] | None) -> None:
        if address is None:
            self.private = PrivateRay()
        with signals_held():  # an interrupted import of Ray would be an ImportError
            self.ray = ray = _import_ray(local=address is None)
        with signals_held():  # Ray loaded: its SIGTERM handler stays out too
            try:
                if self.private is not None:
                    self.private.use_token()
                    ray.init(num_cpus=max(workers or 1, os.cpu_count() or 1),
                             include_dashboard=False, log_to_driver=False,
                             object_store_memory=256 * 2**20, logging_level='WARNING',
                             namespace='kosmos_ros_corpus', **self.private.init_args)
                    self._processes = self.private.processes()
                else:
                    ray.init(address=address, log_to_driver=False, logging_level='WARNING',
                             namespace='kosmos_ros_corpus')
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CorpusError(f'cannot start or join Ray ({address or "local"}): '
                                  f'{exc}') from None
        gpus = int(ray.cluster_resources().get('GPU', 0))
        device = str(getattr(spec.model, 'device', 'auto')).lower()
        use_gpu = device.startswith('cuda') or (device == 'auto' and gpus > 0)
        if workers is None:
            workers = max(1, gpus) if use_gpu else 1
        self.workers = workers
        if use_gpu and gpus < workers:
            raise CorpusError(f'{workers} workers need {workers} GPUs; the Ray cluster has '
                              f'{gpus}')
        resources = {'num_gpus': 1, 'num_cpus': 1} if use_gpu else {'num_cpus': 1}
        actor = ray.remote(**resources)(Worker)
        self.actors = [actor.remote(spec, None, True) for _ in range(workers)]
        try:
            infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            raise CorpusError(f'a worker could not load the model: {_ray_reason(exc)}') from None
        failed = [i.load_error for i in infos if i.load_error]
        if failed:
            raise ModelLoadError(failed[0])
        if len({i.description for i in infos}) > 1:
            raise CorpusError('the workers loaded different models: '
                              + '; '.join(sorted({i.description for i in infos})))
        self._info = infos[0]
        if on_status:
            on_status(f'{workers} Ray workers ({"GPU" if use_gpu else "CPU"}) on '
                      f'{address or "a local Ray bound to 127.0.0.1"}')

    def info(self) -> EngineInfo:
        return self._info

    def check(self, query: Query) -> str:
        return self.ray.get(self.actors[0].check.remote(query))

    def run(self, tasks: Sequence[Sequence[Chunk]], query: Query,
            batch_size: int) -> Iterator[list[ChunkResult]]:
        """Yield each task's results as it finishes (any order); CorpusError if a worker dies."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        for task in tasks:
            pool.submit(lambda a, chunks: a.ground.remote(chunks, query, batch_size), list(task))
        while pool.has_next():
            try:
                yield pool.get_next_unordered()
            except self.ray.exceptions.RayError as exc:
                raise CorpusError(f'a worker failed: {_ray_reason(exc)}') from None

    def close(self) -> None:
        """Shut Ray down; for the embedded one, stop what is left of it and remove its folder."""
        with signals_held():
            if self.ray is not None:
                self.ray, ray = None, self.ray
                if self.private is not None and ray.is_initialized():
                    self._processes += self.private.processes()
                ray.shutdown()
            if self.private is not None:
                self.private, private = None, self.private
                private.remove(self._processes)


def _import_ray(local: bool) -> Any:
    """Import Ray; for the local Ray, after PrivateRay has set its environment."""
    if not local:
        os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    try:
        import ray
    except ImportError as exc:
        raise CorpusError(f'Ray is not installed ({exc}); run the set-up command, or use '
                          '--workers 0 to ground in this process') from None
    if local:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise CorpusError('Ray was imported before the local run could bind it to '
                              'loopback; start the run in a fresh process')
    return ray


def _ray_reason(exc: BaseException) -> str:
    cause = getattr(exc, 'cause', None)
    if isinstance(cause, BaseException):
        return f'{type(cause).__name__}: {cause}'
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def open_pool(spec: WorkerSpec | None, workers: int | None, address: str | None,
              engine: Any = None,
              on_status: Callable[[str], None] | None = None) -> LocalPool | RayPool:
    """Return the workers: in this process for ``workers`` 0, else on Ray (None: auto)."""
    if workers == 0:
        return LocalPool(spec, engine)
    if spec is None:
        raise CorpusError('Ray workers load their own engine: give a WorkerSpec')
    return RayPool(spec, workers, address, on_status)
