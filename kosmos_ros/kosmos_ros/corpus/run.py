# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A corpus run: find and hash the bags, plan them, ground their chunks, write each bag.

The run folder is the state (:mod:`.folder`): each bag's plan, each finished chunk's results,
each finished bag's output and index rows, ``manifest.json``, and ``index.parquet`` (the merged
index, rewritten at the end of every run, interrupted or not). Running again with the same
options resumes: finished bags are left alone, finished chunks are not grounded again, and
partial outputs of a killed run are removed. What is read back is checked: a damaged chunk,
plan or index part is done again, a damaged manifest is one error naming the field.

The folder follows the content at each path: a bag of an earlier invocation whose path now
holds other content (re-recorded) has its rows and outputs dropped, and said so; its new
content is grounded when it is given again. Inputs are only read.

A bag that cannot be found, hashed, opened or read is recorded with its reason in the
manifest and the run goes on; frames that cannot be used are counted with their reason
by ``ground_bag``'s own loop, which writes every bag (:class:`~.work.ReplayEngine`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
import itertools
from pathlib import Path
import threading
import time
from typing import Any, Callable

from kosmos_ros.bag import BagError
from kosmos_ros.bag.safety import SigintGuard
from kosmos_ros.corpus import CorpusError, index, manifest
from kosmos_ros.corpus.bagset import BagSet
from kosmos_ros.corpus.chunks import ChunkResult
from kosmos_ros.corpus.folder import check_folder, FolderLock, RunFolder
from kosmos_ros.corpus.inputs import BagInput, find_bags, inside
from kosmos_ros.corpus.options import CorpusOptions, differences, WorkerSpec
from kosmos_ros.corpus.plan import BagPlan, Chunk, plan_bag
from kosmos_ros.corpus.pools import open_pool
from kosmos_ros.corpus.progress import Progress
from kosmos_ros.corpus.summary import CorpusSummary
from kosmos_ros.corpus.work import BagJob
from kosmos_ros.corpus.workers import EngineInfo
from kosmos_ros.datatypes import Query, Task


def run_corpus(options: CorpusOptions, spec: WorkerSpec | None = None, *, engine: Any = None,
               progress: Progress | None = None,
               on_chunk: Callable[[ChunkResult], None] | None = None) -> CorpusSummary:
    """Ground the corpus into the run folder; return the summary.

    ``spec`` says what each Ray worker loads; with ``workers`` 0 the run uses ``engine`` (or
    loads ``spec`` here). ``progress`` reports the phases and the grounding (None: quiet).
    ``on_chunk`` is called after each chunk is saved (tests stop a run with it).
    KeyboardInterrupt (Ctrl-C, SIGTERM, or raised by ``on_chunk``) ends the run with
    ``interrupted`` set, its finished work kept. Raises CorpusError (bad options, inputs
    that name no bag, a run folder that cannot be used, a query that cannot run, a worker
    that fails), PromptError or ModelLoadError before any bag is grounded.
    """
    options.check()
    query = Query(Task.parse(options.task), options.prompt,
                  max_new_tokens=options.max_new_tokens)
    out = Path(options.output).absolute()
    progress = progress or Progress('quiet')
    progress.phase(f'finding bags in {len(options.inputs)} inputs')
    paths, problems = find_bags(options.inputs, exclude=out)  # before anything is written
    skipped = f' ({len(problems)} entries are not bags: listed at the end)' if problems else ''
    progress.phase(f'found {len(paths)} bags{skipped}')
    if not paths:
        raise CorpusError('no bag found: ' + '; '.join(f'{i}: {r}' for i, r in problems))
    for path in paths:
        if inside(out, path):
            raise CorpusError(f'the run folder {out} lies inside the bag {path}')
    check_folder(out)
    folder = RunFolder(out)
    folder.make()
    with FolderLock(out), SigintGuard() as sigint:
        existing = manifest.read(out)
        if existing is not None and existing.get('options') != options.fingerprint():
            raise CorpusError(f'{out} holds a run with other options: '
                              f'{differences(existing.get("options"), options.fingerprint())}; '
                              'resume it with the same options or choose a new run folder')
        run = _Run(options, query, folder, existing, progress, sigint)
        run.summary.problems = [{'input': i, 'reason': r} for i, r in problems]
        return run.execute(paths, spec, engine, on_chunk)


class _Run:
    def __init__(self, options: CorpusOptions, query: Query, folder: RunFolder,
                 existing: dict[str, Any] | None, progress: Progress, sigint: SigintGuard):
        self.options, self.query, self.progress = options, query, progress
        self.folder, self.out = folder, folder.root
        self.sigint = sigint
        self.lock = threading.Lock()
        self.summary = CorpusSummary(self.out, model_label=options.model_label, query=query)
        self.manifest = existing or {
            'format': manifest.FORMAT, 'tool': manifest.TOOL, 'created': manifest.now(),
            'options': options.fingerprint()}
        self.earlier: list[dict[str, Any]] = list(self.manifest.get('inputs', []))
        self.records: dict[str, dict[str, Any]] = {}  # bag_id (or path) -> record
        self.plans: dict[str, BagPlan] = {}
        self.results_left: dict[str, int] = {}  # bag_id -> chunks still to ground
        self.info: EngineInfo | None = None
        self.pool: Any = None

    # -- plans ---------------------------------------------------------------------------------

    def _plan(self, bag: BagInput) -> BagPlan | None:
        record = self.records[bag.bag_id]
        plan = self.folder.plan(bag.bag_id, str(bag.path))
        if plan is not None:
            return plan
        try:
            plan = plan_bag(bag.bag_id, bag.path, self.options)
        except BagError as exc:
            record.update(status='failed', reason=str(exc))
            return None
        self.folder.save_plan(plan)
        return plan

    # -- the run -------------------------------------------------------------------------------

    def execute(self, paths: list[Path], spec: WorkerSpec | None, engine: Any,
                on_chunk: Callable[[ChunkResult], None] | None) -> CorpusSummary:
        started = time.monotonic()
        bags = BagSet(self.folder, self.earlier, self.records, self.summary.notes,
                      self.progress).collect(paths)
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
        self.progress.phase('starting the workers and loading the model' if
                            self.options.workers != 0 else 'loading the model')
        self.pool = pool = open_pool(spec, self.options.workers, self.options.ray_address,
                                     engine, on_status=self.progress.phase, auto=True)
        finisher = ThreadPoolExecutor(1, thread_name_prefix='kosmos_corpus_finish') \
            if pool.workers_elsewhere else None
        futures: list[Future] = []
        try:
            self.info = pool.info()
            self._check_model()
            reason = pool.check(self.query)
            if reason:
                raise CorpusError(f'the query cannot run: {reason}')
            self.summary.model = self.info.description
            self.summary.workers = pool.describe()
            self.progress.phase(f'model ready: {self.info.description}')
            self._save_manifest('running')
            self.progress.phase(f'planning {len(first)} bags')
            tasks = self._pending_tasks(first.values())
            total = sum(len(c.frames) for task in tasks for c in task)
            self.progress.phase(f'{len(first)} bags, {self.summary.chunks} chunks '
                                f'({self.summary.chunks_reused} done before), {total} frames '
                                'to ground')
            for bag_id in [b for b, n in self.results_left.items() if n == 0]:
                self._finish_bag(bag_id, finisher, futures)
            self._ground(pool, tasks, total, on_chunk, finisher, futures)
            if futures:
                self.progress.phase(f'writing the last of {len(futures)} bags')
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

    def _old_record(self, bag: BagInput) -> dict[str, Any] | None:
        """Return the bag's record from before when it is done and its outputs are whole."""
        for record in self.earlier:
            if record.get('bag_id') == bag.bag_id and record.get('status') == 'done':
                if self.folder.part_ok(bag.bag_id):
                    return dict(record)
                self.summary.notes.append(f'redone: {bag.path} ({bag.bag_id}): its index part '
                                          'or output bag was damaged or missing')
                self.folder.clear(bag.bag_id)
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
            self.folder.clear(bag.bag_id)  # what a killed run left half written
            todo = [c for c in plan.chunks if not self.folder.has_chunk(c)]
            self.summary.chunks += len(plan.chunks)
            self.summary.chunks_reused += len(plan.chunks) - len(todo)
            self.results_left[bag.bag_id] = len(todo)
            queues.append(todo)
        order = [c for group in itertools.zip_longest(*queues) for c in group if c is not None]
        size = self.options.chunks_per_task
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _ground(self, pool: Any, tasks: list[list[Chunk]], total: int,
                on_chunk: Callable[[ChunkResult], None] | None, finisher: Any,
                futures: list[Future]) -> None:
        self.progress.grounding(total, self.summary.workers)
        chunks = {(c.bag_id, c.index): c for task in tasks for c in task}
        started, cpu = time.monotonic(), time.process_time()
        try:
            for results in pool.run(tasks, self.query, self.options.batch_size):
                for result in results:
                    chunk = chunks[(result.bag_id, result.index)]
                    self._save_chunk(chunk, result, finisher, futures)
                    self.summary.chunks_now += 1
                    self.summary.frames_now += len(chunk.frames)
                    self.summary.ground_s = time.monotonic() - started
                    self.summary.per_worker[result.worker] += len(chunk.frames)
                    self.progress.advance(len(chunk.frames), self.summary.per_worker)
                    if on_chunk is not None:
                        on_chunk(result)
                self.sigint.check()
        finally:
            self.summary.grounding_cpu_s = time.process_time() - cpu
            self.progress.close()

    def _save_chunk(self, chunk: Chunk, result: ChunkResult, finisher: Any,
                    futures: list[Future]) -> None:
        record = self.records[chunk.bag_id]
        if result.error:
            with self.lock:
                record.update(status='failed', reason=result.error)
            return
        with self.sigint.shield():
            self.folder.save_chunk(chunk, result)
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
        """Have a worker write a bag's output and index part; put them in place."""
        record = self.records[bag_id]
        job = BagJob(bag_id, record['path'], record['sha256'], str(self.out), self.options,
                     self.plans[bag_id].chunks, self.info.description, self.info.revision,
                     self.info.max_pixels)
        guard = self.sigint if threading.current_thread() is threading.main_thread() else None
        written = self.pool.write(job, guard)
        self.summary.writing_cpu_s += written.cpu_s
        if written.error:
            if written.chunk_damaged:
                self.folder.clear(bag_id, everything=True)
            else:
                self.folder.clear(bag_id)
            if written.lost:  # not the bag's fault: pending, the run incomplete
                with self.lock:
                    record.update(status='pending', reason=written.error)
                    self._save_manifest('running')
                return
            self._fail(record, written.error)
            return
        with self.sigint.shield():
            final = self.folder.publish(bag_id)
            with self.lock:
                record.update(status='done', reason='', output=str(final),
                              messages=written.messages, grounded=written.grounded,
                              throttled=written.throttled, skipped=dict(written.skipped),
                              rows=written.rows, topics=written.topics)
                self._save_manifest('running')

    def _fail(self, record: dict[str, Any], reason: str) -> None:
        with self.lock:
            record.update(status='failed', reason=reason)
            self._save_manifest('running')

    # -- the end -------------------------------------------------------------------------------

    def _save_manifest(self, status: str) -> None:
        self.manifest.update(status=status, versions=manifest.versions(),
                             run={'inputs': list(self.options.inputs),
                                  'workers': self._workers(),
                                  'ray_address': self.options.ray_address,
                                  'batch_size': self.options.batch_size,
                                  'chunks_per_task': self.options.chunks_per_task},
                             inputs=list(self.records.values()),
                             problems=self.summary.problems)
        manifest.write(self.out, self.manifest)

    def _workers(self) -> int | None:
        """Return the inference workers as resolved (0: this process), for the manifest."""
        if self.pool is None:
            return self.options.workers
        return int(self.pool.workers) if self.pool.workers_elsewhere else 0

    def _end(self) -> None:
        """Merge the finished bags' index parts into index.parquet; write the manifest.

        A part found damaged now (after the run checked it) puts its bag back to pending.
        """
        with self.lock:
            self.folder.tidy()
            parts = []
            for record in sorted(self.records.values(), key=lambda r: r.get('bag_id', '')):
                if record.get('status') != 'done':
                    continue
                part = self.folder.part(record['bag_id'])
                try:
                    index.check_part(index.read_part(part))
                except index.DamagedIndex as exc:
                    self.folder.clear(record['bag_id'])
                    record.update(status='pending', reason=f'its index part was damaged ({exc})')
                    self.summary.notes.append(f'damaged: {record["path"]}: {exc}; run again '
                                              'to ground it again')
                    continue
                parts.append(part)
            table = index.merge(parts)
            index.write_table(table, self.out / 'index.parquet')
            self.summary.index_rows = table.num_rows
            self.summary.bags = list(self.records.values())
            if self.info is not None:
                status = 'interrupted' if self.summary.interrupted else \
                    'complete' if self.summary.complete else 'incomplete'
                self._save_manifest(status)
