# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference workers as Ray actors: an embedded local Ray, or a cluster (``--ray-address``).

:class:`RayPool` hands each task to a free actor, and a task lost with its actor's process or
node to the next (:meth:`RayPool.run`); bags are written by the actors too
(:meth:`RayPool.write`).

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

import os
from typing import Any, Callable, Iterator, Sequence

from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.chunks import ChunkResult
from kosmos_ros.corpus.options import WorkerSpec
from kosmos_ros.corpus.plan import Chunk
from kosmos_ros.corpus.ray_env import PrivateRay, signals_held
from kosmos_ros.corpus.work import BagJob, BagWritten
from kosmos_ros.corpus.workers import EngineInfo, Worker
from kosmos_ros.datatypes import Query
from kosmos_ros.errors import ModelLoadError


class RayPool:
    """``workers`` Ray actors, each holding an engine, each given one task at a time."""

    workers_elsewhere = True  # bags are written (by the actors) while the actors ground

    def __init__(self, spec: WorkerSpec, workers: int | None, address: str | None,
                 on_status: Callable[[str], None] | None = None):
        self.ray: Any = None
        self.private: PrivateRay | None = None
        self._processes: list[Any] = []
        self._on_status = on_status or (lambda line: None)
        self._writes = 0
        try:
            self._start(spec, workers, address, on_status)
        except BaseException:  # KeyboardInterrupt too: nothing of the cluster may stay
            self.close()
            raise

    def _start(self, spec: WorkerSpec, workers: int | None, address: str | None,
               on_status: Callable[[str], None] | None) -> None:
        if address is None:
            self.private = PrivateRay()
        else:
            _prepare_join(address)
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
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                if address is None:
                    raise CorpusError(f'cannot start Ray (local): {exc}') from None
                # A missing or wrong token: Ray 2.60 raises AuthenticationError at once when it
                # has none, and retries for 20 s before a ConnectionError when it is wrong.
                raise CorpusError(f'cannot join Ray at {address}: {_first_line(exc)} (a '
                                  'cluster with token authentication needs its token here '
                                  'too: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH or '
                                  'RAY_AUTH_TOKEN)') from None
        gpus = int(ray.cluster_resources().get('GPU', 0))
        device = str(getattr(spec.model, 'device', 'auto')).lower()
        use_gpu = device.startswith('cuda') or (device == 'auto' and gpus > 0)
        if workers is None:
            workers = max(1, gpus) if use_gpu else 1
        self.workers = workers
        if use_gpu and gpus < workers:
            raise CorpusError(f'{workers} workers need {workers} GPUs; the Ray cluster has '
                              f'{gpus}')
        cpus = int(ray.cluster_resources().get('CPU', 0))
        if cpus < workers:  # the actors without room would wait for it for ever
            raise CorpusError(f'{workers} workers need {workers} CPUs; the Ray cluster has '
                              f'{cpus}')
        resources = {'num_gpus': 1, 'num_cpus': 1} if use_gpu else {'num_cpus': 1}
        # Ray starts an actor whose process or node died again on a node with room (at most
        # _RESTARTS times; it loads the model again) and runs the calls it lost again there
        # (max_task_retries -1). Not the grounding: run() gives a lost task to the next free
        # actor at once rather than wait for the restart, which comes only once the node's
        # death is noticed (about 15 s by default), or never when no node has room.
        actor = ray.remote(**resources, max_restarts=_RESTARTS, max_task_retries=-1)(Worker)
        self.actors = [actor.remote(spec, None, True) for _ in range(workers)]
        try:
            infos = ray.get([_when_back(a) for a in self.actors])
        except ray.exceptions.RayError as exc:
            raise CorpusError(f'a worker could not load the model: {_ray_reason(exc)}') from None
        failed = [i.load_error for i in infos if i.load_error]
        if failed:
            raise ModelLoadError(failed[0])
        if len({i.description for i in infos}) > 1:
            raise CorpusError('the workers loaded different models: '
                              + '; '.join(sorted({i.description for i in infos})))
        self._info = infos[0]
        self._description = (f'{workers} Ray workers ({"GPU" if use_gpu else "CPU"}) on '
                             f'{address or "a local Ray bound to 127.0.0.1"}')
        if on_status:
            on_status(self._description)

    def describe(self) -> str:
        return self._description

    def info(self) -> EngineInfo:
        return self._info

    def check(self, query: Query) -> str:
        return self.ray.get(self.actors[0].check.remote(query))

    def run(self, tasks: Sequence[Sequence[Chunk]], query: Query,
            batch_size: int) -> Iterator[list[ChunkResult]]:
        """Yield each task's results as it finishes (any order), each task on a free actor.

        A task lost with its actor (the actor's process or node died: Ray raises
        ``ActorUnavailableError`` or ``ActorDiedError``, both ``RayActorError``; or
        ``ObjectLostError`` for a result lost with its node) goes to the next free actor, at
        most ``_TRIES`` tries in all. The actor takes tasks again once it answers after Ray's
        restart with the same model, and is given up when Ray gives it up. CorpusError when
        the engine raises in a task, a task was lost ``_TRIES`` times, or no actor is left.
        """
        from collections import deque

        ray, errors = self.ray, self.ray.exceptions
        todo = deque((list(task), 1) for task in tasks)  # (chunks, try)
        free = list(self.actors)
        waiting: dict[Any, tuple[Any, list[Chunk] | None, int]] = {}  # ref: actor, chunks, try
        given_up: list[str] = []
        while todo or any(chunks is not None for _, chunks, _ in waiting.values()):
            while todo and free:
                chunks, attempt = todo.popleft()
                actor = free.pop()
                ref = actor.ground.options(max_task_retries=0).remote(chunks, query, batch_size)
                waiting[ref] = (actor, chunks, attempt)
            if not waiting:
                raise CorpusError(f'no Ray worker is left: {"; ".join(given_up)}')
            [ref], _ = ray.wait(list(waiting), num_returns=1)
            actor, chunks, attempt = waiting.pop(ref)
            try:
                answer = ray.get(ref)
            except errors.RayTaskError as exc:  # the engine raised: as it would in this process
                raise CorpusError(f'a worker failed: {_ray_reason(exc)}') from None
            except (errors.RayActorError, errors.ObjectLostError) as exc:
                if chunks is None:  # its restarts are used up, or it cannot be created
                    given_up.append(f'a worker is gone: {_ray_reason(exc)}')
                    self._on_status(given_up[-1])
                    continue
                if attempt >= _TRIES:
                    raise CorpusError(f'chunks {_names(chunks)} were lost with their worker '
                                      f'{attempt} times (the last: {_ray_reason(exc)}); the '
                                      'chunks done are kept: run again to resume') from None
                self._on_status(f'a worker was lost ({type(exc).__name__}); its chunks go to '
                                'the next free worker')
                todo.appendleft((chunks, attempt + 1))
                waiting[_when_back(actor)] = (actor, None, 0)
                continue
            if chunks is None:  # back after a restart
                changed = _changed(answer, self._info)
                if changed:
                    given_up.append(changed)
                else:
                    free.append(actor)
                self._on_status(changed or 'a lost worker answers again')
                continue
            free.append(actor)
            yield answer

    def write(self, job: BagJob, guard: Any = None) -> BagWritten:
        """Have an actor write a bag's outputs (blocks; run from the writing thread).

        The actors take turns; a write waits behind the grounding already handed to its
        actor. A write lost with its actor (process or node gone) goes to the next actor, at
        most ``_TRIES`` times; then the bag is left for the next run (``lost``).
        """
        errors = self.ray.exceptions
        reason = ''
        for _ in range(_TRIES):
            actor = self.actors[self._writes % len(self.actors)]
            self._writes += 1
            try:
                return self.ray.get(actor.write.options(max_task_retries=0).remote(job))
            except errors.RayTaskError as exc:  # write_bag itself raised
                return BagWritten(job.bag_id, error=f'writing failed: {_ray_reason(exc)}')
            except (errors.RayActorError, errors.ObjectLostError) as exc:
                reason = _ray_reason(exc)
                self._on_status(f'a worker was lost while writing a bag ({type(exc).__name__});'
                                ' the next one writes it')
        return BagWritten(job.bag_id, lost=True, error=f'writing was lost with its worker '
                          f'{_TRIES} times (the last: {reason}); run again to write it')

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


# -- joining a cluster, and actors that come back ------------------------------------------

_RESTARTS = 3  # times Ray starts an actor again after its process or node died
_TRIES = 3  # times a task is given to an actor before a run fails (a chunk that kills it)


def _prepare_join(address: str, timeout_s: float = 5.0) -> None:
    """Check that something answers at a cluster's address; have Ray dial loopback as given.

    Given an address where nothing listens, ``ray.init`` of Ray 2.60 had not given up after
    200 s (20 tries, each waiting up to 35 s for the GCS). Unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before it is imported, Ray replaces
    ``127.0.0.1`` and ``localhost`` with the machine's external address
    (``ray._private.services.canonicalize_bootstrap_address``), where a cluster bound to
    loopback does not listen; a cluster listening on every address answers both ways.
    """
    import socket

    if address == 'auto':  # the cluster `ray start` last recorded on this machine
        return
    host, colon, port = address.split('://', 1)[-1].rpartition(':')
    host = host.strip('[]')
    if not colon or not host or not port.isdigit():
        raise CorpusError(f'the Ray address must be auto, HOST:PORT or ray://HOST:PORT; got '
                          f'{address!r}')
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise CorpusError(f'cannot join Ray at {address}: nothing answers there '
                          f'({exc.strerror or exc}); start the cluster (ray start --head) or '
                          'give its address') from None
    if host in ('127.0.0.1', 'localhost', '::1'):
        os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')


def _when_back(actor: Any) -> Any:
    """Return a reference to the actor's EngineInfo, waiting through its restarts."""
    return actor.info.options(max_task_retries=-1).remote()


def _changed(info: EngineInfo, first: EngineInfo) -> str:
    """Return why an actor back from a restart cannot take tasks ('' when it can)."""
    if info.load_error:
        return f'a worker started again by Ray could not load the model: {info.load_error}'
    if info.description != first.description:
        return f'a worker started again by Ray loaded {info.description}'
    return ''


def _names(chunks: Sequence[Chunk]) -> str:
    return ', '.join(f'{c.bag_id}#{c.index}' for c in chunks)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
