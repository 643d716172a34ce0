# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A corpus run: find and hash the bags, plan them, ground their chunks, write each bag.

The run folder is the state: ``plans/`` (each bag's chunks), ``chunks/`` (each finished
chunk's results, written atomically), ``bags/`` and ``index/`` (each finished bag's output and
index rows, renamed into place whole), ``manifest.json``, and ``index.parquet`` (the merged
index, rewritten at the end of every run, interrupted or not). Running again with the same
options resumes: finished bags are left alone, finished chunks are not grounded again, and
partial outputs of a killed run are removed. Inputs are only read.

A bag that cannot be found, hashed, opened or read is recorded with its reason in the
manifest and the run goes on; frames that cannot be used are counted with their reason
by ``ground_bag``'s own loop, which writes every bag (:class:`~.work.ReplayEngine`).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
import fcntl
import itertools
import json
import os
from pathlib import Path
import pickle
import shutil
import sys
import threading
import time
from typing import Any, Callable

from kosmos_ros.bag import BagError
from kosmos_ros.bag.safety import SigintGuard
from kosmos_ros.corpus import CorpusError, index, manifest
from kosmos_ros.corpus.inputs import BagInput, describe_bag, find_bags, inside
from kosmos_ros.corpus.options import CorpusOptions, WorkerSpec
from kosmos_ros.corpus.plan import BagPlan, Chunk, plan_bag
from kosmos_ros.corpus.work import ChunkResult, ReplayEngine, ReplayMismatch
from kosmos_ros.corpus.workers import EngineInfo, open_pool
from kosmos_ros.datatypes import Query, Task


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
    per_worker: Counter = field(default_factory=Counter)
    workers: str = ''
    elapsed_s: float = 0.0
    interrupted: bool = False
    index_rows: int = 0

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


class _Lock:
    """An exclusive lock on the run folder (released by the OS if the process dies)."""

    def __init__(self, folder: Path):
        self.path = folder / '.lock'
        self.file: Any = None

    def __enter__(self) -> _Lock:
        self.file = open(self.path, 'a+')
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise CorpusError(f'another run is using {self.path.parent}') from None
        return self

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


# What a run creates before its manifest (a run that stopped there, e.g. on a model that
# could not be loaded, leaves only these, and may be run again).
_SKELETON = {'plans', 'chunks', 'bags', 'index', '.lock'}


def _prepare_folder(out: Path) -> dict[str, Any] | None:
    if out.exists() and not out.is_dir():
        raise CorpusError(f'the run folder {out} exists and is not a folder')
    existing = manifest.read(out) if out.is_dir() else None
    if out.is_dir() and existing is None and \
            any(p.name not in _SKELETON for p in out.iterdir()):
        raise CorpusError(f'{out} exists, is not empty and holds no corpus run; choose a new '
                          'run folder')
    out.mkdir(parents=True, exist_ok=True)
    for name in ('plans', 'chunks', 'bags', 'index'):
        (out / name).mkdir(exist_ok=True)
    return existing


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_corpus(options: CorpusOptions, spec: WorkerSpec | None = None, *, engine: Any = None,
               progress: bool = False,
               on_chunk: Callable[[ChunkResult], None] | None = None,
               echo: Callable[[str], None] | None = None) -> CorpusSummary:
    """Ground the corpus into the run folder; return the summary.

    ``spec`` says what each Ray worker loads; with ``workers`` 0 the run uses ``engine`` (or
    loads ``spec`` here). ``on_chunk`` is called after each chunk is saved (tests stop a run
    with it). KeyboardInterrupt (Ctrl-C, SIGTERM, or raised by ``on_chunk``) ends the run
    with ``interrupted`` set, its finished work kept. Raises CorpusError (bad options, a run
    folder that cannot be used, a query that cannot run, a worker that fails), PromptError
    or ModelLoadError before any bag is grounded.
    """
    options.check()
    query = Query(Task.parse(options.task), options.prompt,
                  max_new_tokens=options.max_new_tokens)
    out = Path(options.output).absolute()
    paths, problems = find_bags(options.inputs, exclude=out)  # before anything is written
    for path in paths:
        if inside(out, path):
            raise CorpusError(f'the run folder {out} lies inside the bag {path}')
    existing = _prepare_folder(out)
    if existing is not None and existing.get('options') != options.fingerprint():
        raise CorpusError(f'{out} holds a run with other options ({existing.get("options")}); '
                          'resume it with the same options or choose a new run folder')
    with _Lock(out), SigintGuard() as sigint:
        run = _Run(options, query, out, existing, echo or _stderr, sigint)
        run.summary.problems = [{'input': i, 'reason': r} for i, r in problems]
        return run.execute(paths, spec, engine, progress, on_chunk)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Run:
    def __init__(self, options: CorpusOptions, query: Query, out: Path,
                 existing: dict[str, Any] | None, echo: Callable[[str], None],
                 sigint: SigintGuard):
        self.options, self.query, self.out, self.echo = options, query, out, echo
        self.sigint = sigint
        self.lock = threading.Lock()
        self.summary = CorpusSummary(out, model_label=options.model_label, query=query)
        self.manifest = existing or {
            'format': manifest.FORMAT, 'tool': 'kosmos_corpus', 'created': manifest.now(),
            'options': options.fingerprint()}
        self.records: dict[str, dict[str, Any]] = {}  # bag_id -> record
        self.plans: dict[str, BagPlan] = {}
        self.results_left: dict[str, int] = {}  # bag_id -> chunks still to ground
        self.info: EngineInfo | None = None

    # -- inputs and plans ----------------------------------------------------------------------

    def _inputs(self, paths: list[Path]) -> list[BagInput]:
        known = {r['path']: r for r in self.manifest.get('inputs', [])}
        bags: list[BagInput] = []
        for path in paths:
            try:
                bags.append(describe_bag(path, known))
            except OSError as exc:
                self.records[str(path)] = {'path': str(path), 'status': 'failed',
                                           'reason': f'cannot read: {exc}'}
        return bags

    def _plan(self, bag: BagInput) -> BagPlan | None:
        record = self.records[bag.bag_id]
        cached = self.out / 'plans' / f'{bag.bag_id}.json'
        if cached.is_file():
            try:
                return BagPlan.from_record(json.loads(cached.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                cached.unlink(missing_ok=True)
        try:
            plan = plan_bag(bag.bag_id, bag.path, self.options)
        except BagError as exc:
            record.update(status='failed', reason=str(exc))
            return None
        _atomic_bytes(cached, json.dumps(plan.record()).encode())
        return plan

    # -- the run -------------------------------------------------------------------------------

    def execute(self, paths: list[Path], spec: WorkerSpec | None, engine: Any, progress: bool,
                on_chunk: Callable[[ChunkResult], None] | None) -> CorpusSummary:
        started = time.monotonic()
        bags = self._inputs(paths)
        first: dict[str, BagInput] = {}
        for bag in bags:
            record = bag.record()
            if bag.sha256 in first:
                record.update(status='duplicate',
                              reason=f'the same content as {first[bag.sha256].path}')
                self.records[f'{bag.path}#dup'] = record
                continue
            first[bag.sha256] = bag
            old = self._old_record(bag)
            self.records[bag.bag_id] = old if old else dict(record, status='pending')
            self.records[bag.bag_id].update(bag.record())
        self._keep_earlier_bags()
        pool = open_pool(spec, self.options.workers, self.options.ray_address, engine,
                         on_status=self.echo)
        finisher = ThreadPoolExecutor(1, thread_name_prefix='kosmos_corpus_finish') \
            if self.options.workers != 0 else None
        futures: list[Future] = []
        try:
            self.info = pool.info()
            self._check_model()
            reason = pool.check(self.query)
            if reason:
                raise CorpusError(f'the query cannot run: {reason}')
            self.summary.model = self.info.description
            self.summary.workers = (f'{pool.workers} Ray workers' if self.options.workers != 0
                                    else 'this process (no Ray)')
            self._save_manifest('running')
            tasks = self._pending_tasks(first.values())
            total = sum(len(c.frames) for task in tasks for c in task)
            self.echo(f'kosmos_corpus: {len(first)} bags, {self.summary.chunks} chunks '
                      f'({self.summary.chunks_reused} done before), {total} frames to ground')
            for bag_id in [b for b, n in self.results_left.items() if n == 0]:
                self._finish_bag(bag_id, finisher, futures)
            self._ground(pool, tasks, total, progress, on_chunk, finisher, futures)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            with self.sigint.shield():
                try:
                    for future in futures:
                        future.result()
                    if finisher is not None:
                        finisher.shutdown()
                finally:
                    pool.close()
                    self.summary.elapsed_s = time.monotonic() - started
                    self._end()
        return self.summary

    def _keep_earlier_bags(self) -> None:
        """Keep the finished bags of earlier invocations that this one was not given.

        A run folder only grows: grounding more bags into it (``search --find`` on new bags)
        keeps what it holds, whose outputs and index rows stay where they are.
        """
        for record in self.manifest.get('inputs', []):
            bag_id = record.get('bag_id')
            if bag_id and bag_id not in self.records and record.get('status') == 'done' and \
                    (self.out / 'index' / f'{bag_id}.parquet').is_file():
                self.records[bag_id] = dict(record)

    def _old_record(self, bag: BagInput) -> dict[str, Any] | None:
        """Return the bag's record from before when it is done and its outputs are whole."""
        for record in self.manifest.get('inputs', []):
            if record.get('bag_id') == bag.bag_id and record.get('status') == 'done' and \
                    (self.out / 'index' / f'{bag.bag_id}.parquet').is_file() and \
                    (self.out / 'bags' / bag.bag_id).is_dir():
                return dict(record)
        return None

    def _check_model(self) -> None:
        before = self.manifest.get('model')
        now = {'description': self.info.description, 'revision': self.info.revision,
               'label': self.options.model_label}
        if before and before.get('description') != now['description']:
            raise CorpusError(f'{self.out} was grounded with {before.get("description")}; '
                              f'this run loads {now["description"]}: resume with the same '
                              'model or choose a new run folder')
        self.manifest['model'] = now

    def _pending_tasks(self, bags: Any) -> list[list[Chunk]]:
        """Plan the bags; return the chunks to ground, interleaved across bags, in tasks."""
        queues: list[list[Chunk]] = []
        for bag in bags:
            record = self.records[bag.bag_id]
            if record['status'] == 'done':
                self.summary.chunks += int(record.get('chunks', 0))
                self.summary.chunks_reused += int(record.get('chunks', 0))
                continue
            plan = self._plan(bag)
            if plan is None:
                continue
            self.plans[bag.bag_id] = plan
            record['chunks'] = len(plan.chunks)
            record['admitted'] = plan.frames
            self._clear_partial(bag.bag_id)
            todo = [c for c in plan.chunks if not self._chunk_path(c).is_file()]
            self.summary.chunks += len(plan.chunks)
            self.summary.chunks_reused += len(plan.chunks) - len(todo)
            self.results_left[bag.bag_id] = len(todo)
            queues.append(todo)
        order = [c for group in itertools.zip_longest(*queues) for c in group if c is not None]
        size = self.options.chunks_per_task
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _clear_partial(self, bag_id: str) -> None:
        """Remove what a killed run left half written for a bag."""
        for path in (self.out / 'bags' / f'{bag_id}.partial', self.out / 'bags' / bag_id):
            if path.exists():
                shutil.rmtree(path)
        (self.out / 'index' / f'{bag_id}.parquet').unlink(missing_ok=True)

    def _chunk_path(self, chunk: Chunk) -> Path:
        return self.out / 'chunks' / chunk.bag_id / f'{chunk.index:06d}.pkl'

    def _ground(self, pool: Any, tasks: list[list[Chunk]], total: int, progress: bool,
                on_chunk: Callable[[ChunkResult], None] | None, finisher: Any,
                futures: list[Future]) -> None:
        from tqdm import tqdm

        label = ' [TINY MODEL]' if self.options.model_label else ''
        bar = tqdm(total=total, unit=' frames', desc=f'corpus{label}', disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        chunks = {(c.bag_id, c.index): c for task in tasks for c in task}
        started = time.monotonic()
        try:
            for results in pool.run(tasks, self.query, self.options.batch_size):
                for result in results:
                    chunk = chunks[(result.bag_id, result.index)]
                    self._save_chunk(chunk, result, finisher, futures)
                    bar.update(len(chunk.frames))
                    self.summary.chunks_now += 1
                    self.summary.frames_now += len(chunk.frames)
                    self.summary.ground_s = time.monotonic() - started
                    self.summary.per_worker[result.worker] += len(chunk.frames)
                    bar.set_postfix_str(self._per_worker(), refresh=False)
                    if on_chunk is not None:
                        on_chunk(result)
                self.sigint.check()
        finally:
            bar.close()

    def _per_worker(self) -> str:
        """Return the frames each worker grounded so far, for the progress bar."""
        counts = self.summary.per_worker
        return 'workers ' + ' '.join(f'{i + 1}:{counts[name]}'
                                     for i, name in enumerate(sorted(counts)))

    def _save_chunk(self, chunk: Chunk, result: ChunkResult, finisher: Any,
                    futures: list[Future]) -> None:
        record = self.records[chunk.bag_id]
        if result.error:
            with self.lock:
                record.update(status='failed', reason=result.error)
            return
        path = self._chunk_path(chunk)
        path.parent.mkdir(exist_ok=True)
        with self.sigint.shield():
            _atomic_bytes(path, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        self.results_left[chunk.bag_id] -= 1
        if self.results_left[chunk.bag_id] == 0 and record['status'] != 'failed':
            self._finish_bag(chunk.bag_id, finisher, futures)

    def _finish_bag(self, bag_id: str, finisher: Any, futures: list[Future]) -> None:
        if finisher is None:
            self._write_bag(bag_id)
        else:
            futures.append(finisher.submit(self._write_bag, bag_id))

    # -- writing a bag -------------------------------------------------------------------------

    def _write_bag(self, bag_id: str) -> None:
        """Write a bag's output and index rows with ground_bag's loop and the chunk results."""
        from kosmos_ros.bag.offline import ground_bag

        record = self.records[bag_id]
        plan = self.plans[bag_id]
        results: dict = {}
        for chunk in plan.chunks:
            try:
                results.update(pickle.loads(self._chunk_path(chunk).read_bytes()).results)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
                self._chunk_path(chunk).unlink(missing_ok=True)
                self._fail(record, f'the results of chunk {chunk.index} are unreadable ({exc}); '
                                   'they were removed: run again to ground it again')
                return
        partial = self.out / 'bags' / f'{bag_id}.partial'
        final = self.out / 'bags' / bag_id
        rows: list[dict[str, Any]] = []
        bag_info = {'path': record['path'], 'bag_id': bag_id, 'sha256': record['sha256']}
        fingerprint = self.options.fingerprint()

        def on_frame(outcome: Any) -> None:
            rows.extend(index.frame_rows(outcome, bag_info, self.info.description,
                                         self.info.revision, fingerprint))

        replay = ReplayEngine(results, self.info.description, self.info.max_pixels)
        guard = SigintGuard() if threading.current_thread() is not threading.main_thread() \
            else self.sigint
        try:
            summary = ground_bag(self.options.bag_options(Path(record['path']), partial),
                                 replay, on_frame=on_frame, guard=guard)
        except (BagError, ReplayMismatch) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(exc, ReplayMismatch):
                shutil.rmtree(self.out / 'chunks' / bag_id, ignore_errors=True)
                (self.out / 'plans' / f'{bag_id}.json').unlink(missing_ok=True)
            self._fail(record, str(exc))
            return
        if summary.interrupted:
            shutil.rmtree(partial, ignore_errors=True)
            raise KeyboardInterrupt
        with self.sigint.shield():
            os.replace(partial, final)
            index.write_table(index.to_table(rows), self.out / 'index' / f'{bag_id}.parquet')
            skipped: Counter = Counter()
            for s in summary.topics.values():
                skipped.update(s.skipped)
            with self.lock:
                record.update(status='done', reason='', output=str(final),
                              messages=sum(s.messages for s in summary.topics.values()),
                              grounded=summary.grounded,
                              throttled=sum(s.throttled for s in summary.topics.values()),
                              skipped=dict(skipped), rows=len(rows),
                              topics={t: s.outputs for t, s in summary.topics.items()})
                self._save_manifest('running')

    def _fail(self, record: dict[str, Any], reason: str) -> None:
        with self.lock:
            record.update(status='failed', reason=reason)
            self._save_manifest('running')

    # -- the end -------------------------------------------------------------------------------

    def _save_manifest(self, status: str) -> None:
        self.manifest.update(status=status, versions=manifest.versions(),
                             run={'inputs': list(self.options.inputs),
                                  'workers': self.options.workers,
                                  'ray_address': self.options.ray_address,
                                  'batch_size': self.options.batch_size,
                                  'chunks_per_task': self.options.chunks_per_task},
                             inputs=list(self.records.values()),
                             problems=self.summary.problems)
        manifest.write(self.out, self.manifest)

    def _end(self) -> None:
        """Merge the finished bags' index parts into index.parquet; write the manifest."""
        with self.lock:
            done = [r['bag_id'] for r in self.records.values() if r.get('status') == 'done']
            parts = [self.out / 'index' / f'{b}.parquet' for b in sorted(done)]
            table = index.merge(parts)
            index.write_table(table, self.out / 'index.parquet')
            self.summary.index_rows = table.num_rows
            self.summary.bags = list(self.records.values())
            if self.info is not None:
                status = 'interrupted' if self.summary.interrupted else \
                    'complete' if self.summary.complete else 'incomplete'
                self._save_manifest(status)
