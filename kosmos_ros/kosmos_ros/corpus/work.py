# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference on chunks, and the replay of their results into ``ground_bag``'s loop.

A worker (this process, or a Ray actor) reads each chunk's admitted frames from its bag,
converts them as the node does (:func:`~kosmos_ros.images.frame_from_message`), and grounds
them with the engine in batches that span chunks and bags: one vision pass per frame
(``encode``) and one batched generation (``run``), which equals ``ground`` frame by frame
(the engine's tests). A failed batch is retried frame by frame, so one bad frame fails alone.

Results are keyed by the frame's content (size and CRC-32 of its pixels): equal pixels give
equal results, so the key needs no bag position. :class:`ReplayEngine` then stands in for the
engine in :func:`kosmos_ros.bag.offline.ground_bag`, which writes the output bag and yields the
index rows with its own admission, conversion, lifting and writing code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import socket
from typing import Any, Sequence

from kosmos_ros.corpus.chunks import ChunkResult, frame_key, FrameKey
from kosmos_ros.corpus.plan import Chunk
from kosmos_ros.datatypes import GroundingResult, Query
from kosmos_ros.errors import ImageError, InferenceError, KosmosError


def worker_name() -> str:
    return f'{socket.gethostname()}:{os.getpid()}'


def read_chunk(chunk: Chunk, max_pixels: int) -> list[tuple[FrameKey, Any]]:
    """Return the chunk's admitted frames, converted; unusable ones are left out.

    ``ground_bag`` meets the same frames when it writes the bag and counts each unusable one
    with its reason. BagError when the bag cannot be read.
    """
    from rosbags.highlevel import AnyReaderError

    from kosmos_ros.bag.reading import open_reader
    from kosmos_ros.images import frame_from_message

    wanted = set(chunk.frames)
    topics = {topic for topic, _ in chunk.frames}
    frames: list[tuple[FrameKey, Any]] = []
    reader = open_reader(Path(chunk.path))
    try:
        connections = [c for c in reader.connections if c.topic in topics]
        for conn, timestamp, raw in reader.messages(connections=connections,
                                                    start=chunk.start_ns,
                                                    stop=chunk.stop_ns + 1):
            if (conn.topic, timestamp) not in wanted:
                continue
            try:
                frame = frame_from_message(reader.deserialize(raw, conn.msgtype), max_pixels)
            except (AnyReaderError, ImageError):
                continue
            frames.append((frame_key(frame), frame))
    finally:
        reader.close()
    return frames


def ground_chunks(engine: Any, chunks: Sequence[Chunk], query: Query,
                  batch_size: int) -> list[ChunkResult]:
    """Ground the frames of ``chunks`` in batches of ``batch_size`` across them.

    A chunk whose bag cannot be read gets its reason in ``error`` and no results.
    """
    from kosmos_ros.bag import BagError

    name = worker_name()
    out = [ChunkResult(c.bag_id, c.index, worker=name) for c in chunks]
    pending: list[tuple[int, FrameKey, Any]] = []
    for i, chunk in enumerate(chunks):
        try:
            frames = read_chunk(chunk, engine.options.max_pixels)
        except BagError as exc:
            out[i].error = str(exc)
            continue
        out[i].frames = len(frames)
        pending.extend((i, key, frame) for key, frame in frames)
    size = max(1, batch_size)
    for start in range(0, len(pending), size):
        batch = pending[start:start + size]
        results = _ground_batch(engine, [frame for _, _, frame in batch], query)
        for (i, key, _), result in zip(batch, results):
            out[i].results[key] = result
    return out


def _ground_batch(engine: Any, frames: list[Any], query: Query) -> list[GroundingResult | str]:
    """Ground frames as one batch; when it fails, frame by frame (an error is its text)."""
    try:
        encoded = [engine.encode([frame])[0] for frame in frames]
        return list(engine.run([(e, query) for e in encoded]))
    except KosmosError:
        pass
    results: list[GroundingResult | str] = []
    for frame in frames:
        try:
            results.append(engine.ground(frame, query))
        except KosmosError as exc:
            results.append(str(exc))
    return results


@dataclass(frozen=True)
class BagJob:
    """A bag whose chunks are all grounded: what a worker needs to write its outputs.

    The worker reads the chunks' results back from the run folder (shared storage on a
    cluster), writes the output bag and the index part into ``bags/.partial/`` and says what
    it did; the driver then renames both into place.
    """

    bag_id: str
    path: str
    sha256: str
    run_folder: str
    options: Any  # CorpusOptions
    chunks: tuple[Chunk, ...]
    model: str  # the engine's description, as the run records it
    revision: str
    max_pixels: int


@dataclass
class BagWritten:
    """What writing one bag did (``error``: why it could not be written, nothing written)."""

    bag_id: str
    error: str = ''
    chunk_damaged: bool = False  # a chunk's results were unreadable: ground them again
    lost: bool = False  # the workers writing it were lost: the next run writes it
    messages: int = 0
    grounded: int = 0
    throttled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    topics: dict[str, list[str]] = field(default_factory=dict)
    tracks: int = 0
    cpu_s: float = 0.0  # CPU time the writer spent (process time)
    worker: str = ''


def write_bag(job: BagJob, guard: Any = None) -> BagWritten:
    """Write a bag's output and index rows with ground_bag's loop and the chunks' results.

    Runs on a worker (or in the driver without Ray). KeyboardInterrupt when interrupted (the
    partial output removed); every other failure is the returned record's ``error``.
    """
    import shutil
    import time

    from kosmos_ros.bag import BagError
    from kosmos_ros.bag.offline import ground_bag
    from kosmos_ros.corpus import index
    from kosmos_ros.corpus.folder import RunFolder

    started = time.process_time()
    folder = RunFolder(Path(job.run_folder))
    out = BagWritten(job.bag_id, worker=worker_name())
    results: dict = {}
    for chunk in job.chunks:
        saved = folder.chunk(chunk)
        if saved is None:
            out.error, out.chunk_damaged = (f'the results of chunk {chunk.index} went missing '
                                            'or were damaged after they were saved; run again '
                                            'to ground it again'), True
            return out
        results.update(saved.results)
    partial = folder.partial(job.bag_id)
    partial.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    bag_info = {'path': job.path, 'bag_id': job.bag_id, 'sha256': job.sha256}
    fingerprint = job.options.fingerprint()

    def on_frame(outcome: Any) -> None:
        rows.extend(index.frame_rows(outcome, bag_info, job.model, job.revision, fingerprint))

    replay = ReplayEngine(results, job.model, job.max_pixels)
    try:
        summary = ground_bag(job.options.bag_options(Path(job.path), partial), replay,
                             on_frame=on_frame, guard=guard)
    except (BagError, ReplayMismatch) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        out.error, out.chunk_damaged = str(exc), isinstance(exc, ReplayMismatch)
        return out
    if summary.interrupted:
        shutil.rmtree(partial, ignore_errors=True)
        raise KeyboardInterrupt
    index.write_table(index.to_table(rows), folder.partial_part(job.bag_id))
    skipped: dict[str, int] = {}
    for stats in summary.topics.values():
        for reason, n in stats.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    out.messages = sum(t.messages for t in summary.topics.values())
    out.grounded = summary.grounded
    out.throttled = sum(t.throttled for t in summary.topics.values())
    out.skipped, out.rows = skipped, len(rows)
    out.topics = {t: list(st.outputs) for t, st in summary.topics.items()}
    out.tracks = sum(t.tracks for t in summary.topics.values())
    out.cpu_s = time.process_time() - started
    return out


class ReplayMismatch(RuntimeError):
    """A frame met while writing a bag has no result: the bag changed after it was grounded."""


class ReplayEngine:
    """Stands in for the engine in ``ground_bag``: answers each frame with its chunk result.

    ``prepare`` is the real engine's check (the worker's), done before the run; ``describe``
    and ``options.max_pixels`` are the worker engine's. A result that was an inference error
    is raised again as InferenceError, which ``ground_bag`` counts as it counts any.
    """

    def __init__(self, results: dict[FrameKey, GroundingResult | str], description: str,
                 max_pixels: int):
        from kosmos_ros.model.engine import EngineOptions

        self.results = results
        self.description = description
        self.options = EngineOptions(max_pixels=max_pixels)

    def describe(self) -> str:
        return self.description

    def prepare(self, query: Query, width: int, height: int) -> None:
        return None

    def ground(self, frame: Any, query: Query, *args: Any, **kwargs: Any) -> GroundingResult:
        key = frame_key(frame)
        result = self.results.get(key)
        if result is None:
            raise ReplayMismatch(f'a {frame.width}x{frame.height} frame has no grounded result; '
                                 'the bag changed after its chunks were grounded')
        if isinstance(result, str):
            raise InferenceError(result)
        return result
