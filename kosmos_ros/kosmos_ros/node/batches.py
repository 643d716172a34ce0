# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One batch through the engine: convert, check, encode, decode, hand each result to its owner.

The worker thread forms a :class:`~.scheduling.Batch` (queries and camera frames) and gives it
to :meth:`BatchRunner.run`, on the same thread. Frames are converted only now, once each; a
camera frame's vision features are kept and reused by later queries on the same frame; every
row's failure (a bad frame, a bad prompt, the model) is answered to its owner alone, a failure
of the whole batch to every owner.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
import time
from typing import Any, Callable, TYPE_CHECKING

from kosmos_ros.datatypes import GroundingResult, Query
from kosmos_ros.errors import ImageError, InferenceCancelled, KosmosError, OutOfMemoryError
from kosmos_ros.images import Frame, frame_from_message
from kosmos_ros.node.scheduling import Batch, CameraState, QueryJob

if TYPE_CHECKING:  # the engine (and torch) load at configure, not with the node
    from kosmos_ros.model.engine import EncodedImage, GroundingEngine

UNLOADING = 'the model is being unloaded (cleanup or shutdown); retry once the node is active'

# (camera, message, result, frame, latency, the frame's admitted stamp)
ContinuousCallback = Callable[[str, Any, GroundingResult, Frame, float, float], None]
ErrorCallback = Callable[[str, Exception], None]


@dataclass
class _Row:
    """One row of a batch: a query on a frame, for a waiting request or a camera."""

    query: Query
    message: Any
    job: QueryJob | None = None
    camera: str | None = None  # continuous grounding of this camera (when job is None)
    frame: Frame | None = None
    stamp: float = 0.0  # the camera frame's admitted stamp


class BatchRunner:
    """Runs batches on the worker thread; the camera states are shared under ``lock``."""

    def __init__(self, engine: Callable[[], GroundingEngine], cameras: dict[str, CameraState],
                 lock: threading.Condition, stopped: Callable[[], bool],
                 on_result: ContinuousCallback, on_error: ErrorCallback):
        """``engine()`` gives the current engine; ``stopped()`` tells the worker is stopping."""
        self._engine, self._cameras, self._lock = engine, cameras, lock
        self._stopped, self._on_result, self._on_error = stopped, on_result, on_error

    def run(self, batch: Batch) -> None:
        """Convert, encode and decode one batch; hand every result to its owner."""
        started = time.monotonic()
        rows = self._rows(batch)
        if not rows:
            return
        encoded = self._encode(rows)
        jobs = [row.job for row in rows if row.job is not None]
        only_jobs = len(jobs) == len(rows)

        def should_stop() -> bool:
            return self._stopped() or (only_jobs and all(j.cancelled() for j in jobs))

        for job in jobs:
            if job.on_stage:
                job.on_stage('generating')
        try:
            pairs = [(encoded[id(row.message)], row.query) for row in rows]
            results = self._engine().run(pairs, should_stop=should_stop)
        except (KosmosError, InferenceCancelled) as exc:
            if isinstance(exc, InferenceCancelled) and self._stopped():
                exc = InferenceCancelled(UNLOADING)
            if isinstance(exc, OutOfMemoryError):
                self.drop_cached_features()
            for row in rows:
                self._fail_row(row, exc)
            return
        for row, result in zip(rows, results):
            self._deliver(row, result, time.monotonic() - started)

    def _rows(self, batch: Batch) -> list[_Row]:
        """Convert each frame once and check each query; failures are answered here."""
        engine, converted, rows = self._engine(), {}, []
        candidates = [_Row(job.query, job.message, job=job) for job in batch.jobs] + [
            _Row(batch.continuous, item.message, camera=item.camera, stamp=item.stamp)
            for item in batch.frames]
        for row in candidates:
            if row.job is not None:
                if row.job.cancelled():
                    row.job.done(None, InferenceCancelled('cancelled while queued'), None)
                    continue
                if row.job.on_stage:
                    row.job.on_stage('preprocessing')
            try:
                row.frame = self._frame(row.message, converted)
                engine.prepare(row.query, row.frame.width, row.frame.height)
            except KosmosError as exc:
                self._fail_row(row, exc)
                continue
            rows.append(row)
        return rows

    def _fail_row(self, row: _Row, error: Exception) -> None:
        if row.job is not None:
            row.job.done(None, error, None)
        else:
            self.count_error(row.camera, error)

    def _deliver(self, row: _Row, result: GroundingResult, latency: float) -> None:
        if row.job is not None:
            if row.job.cancelled():
                row.job.done(None, InferenceCancelled('cancelled'), None)
            else:
                row.job.done(result, None, row.frame)
            return
        with self._lock:
            state = self._cameras[row.camera]
            state.inferences += 1
            state.latencies.append(latency)
            state.last_result_wall = time.monotonic()
            state.result_times.append(state.last_result_wall)
        self._on_result(row.camera, row.message, result, row.frame, latency, row.stamp)

    def _frame(self, msg: Any, cache: dict) -> Frame:
        key = id(msg)
        if key not in cache:
            try:
                cache[key] = frame_from_message(msg, self._engine().options.max_pixels)
            except ImageError as exc:
                cache[key] = exc
        value = cache[key]
        if isinstance(value, Exception):
            raise value
        return value

    def _encode(self, rows: list[_Row]) -> dict[int, EncodedImage]:
        """Encode each distinct frame once, reusing a camera frame's cached features."""
        encoded: dict[int, EncodedImage] = {}
        owners: dict[int, str | None] = {}
        for row in rows:
            camera = row.camera if row.job is None else (
                row.job.camera if row.job.from_camera else None)
            owners.setdefault(id(row.message), camera)
        missing, seen = [], set()
        for row in rows:
            key = id(row.message)
            if key in seen:
                continue
            seen.add(key)
            state = self._cameras.get(owners[key]) if owners[key] else None
            if state is not None and state.encoded_msg is row.message:
                encoded[key] = state.encoded
            else:
                missing.append(row)
        features = self._engine().encode([row.frame for row in missing]) if missing else []
        for row, enc in zip(missing, features):
            encoded[id(row.message)] = enc
            state = self._cameras.get(owners[id(row.message)] or '')
            if state is not None:
                state.encoded_msg, state.encoded = row.message, enc
        return encoded

    def count_error(self, camera: str, error: Exception) -> None:
        with self._lock:
            if camera in self._cameras:
                self._cameras[camera].errors += 1
                self._cameras[camera].last_error = str(error)
        self._on_error(camera, error)

    def drop_cached_features(self) -> None:
        """After an out-of-memory error: free the vision features kept for reuse."""
        with self._lock:
            for state in self._cameras.values():
                state.encoded_msg, state.encoded = None, None
