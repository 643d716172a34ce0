# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The inference worker: one thread owns the engine (and the GPU); everything else queues.

Camera frames stay in DDS (keep last) until the worker takes them (:mod:`.intake`): when a
query needs the camera's newest frame, when continuous grounding is due by the node's clock,
and at a slow heartbeat for liveness. A query on a camera with no frame yet (its subscription
was just made) waits here, polled by this thread, for the next frame or its deadline. A frame
taken but not yet grounded is replaced by a newer one, never queued. Queries queue with a
completion callback. Each cycle the worker takes the newest frame of each due camera and the
pending queries, up to the batch size, as :mod:`.scheduling` decides, and runs the batch
(:mod:`.batches`: frames converted only now, the vision encoder once per distinct frame, all
queries decoded together).

A camera is due when continuous grounding is on and its newest frame is at least
``1 / rate_hz`` seconds of message time after the frame it last grounded (or time went
backwards, as when a bag loops). This module does not import rclpy; the node adapts it.
"""

from __future__ import annotations

from collections import deque
import math
import threading
import time
from typing import Any, Callable, TYPE_CHECKING

from kosmos_ros.admission import rate_allows
from kosmos_ros.errors import InferenceCancelled, OutOfMemoryError
from kosmos_ros.node.batches import (BatchRunner, ContinuousCallback, ErrorCallback,
                                     UNLOADING)
from kosmos_ros.node.scheduling import (Batch, camera_places, CameraFrame, CameraState,
                                        choose_batch, ContinuousSettings, QueryJob)

if TYPE_CHECKING:  # the engine (and torch) load at configure, not with the node
    from kosmos_ros.model.engine import GroundingEngine


HOUSEKEEPING_PERIOD = 0.5


FrameCallback = Callable[[Any, float], None]


class InferenceWorker:
    """Owns the engine on one thread; safe to call from any executor thread."""

    def __init__(self, engine: GroundingEngine, cameras: list[str],
                 on_result: ContinuousCallback, on_error: ErrorCallback,
                 settings: ContinuousSettings,
                 clock: Callable[[], float] = time.time, heartbeat_s: float = 0.0):
        """Start the worker thread.

        Args:
            engine: the engine this thread owns.
            cameras: camera names.
            on_result: called with (camera, message, result, frame, latency, stamp: the
                frame's admitted stamp) per continuous
                result.
            on_error: called with (camera, error) when a camera's frame cannot be grounded.
            settings: what continuous grounding runs.
            clock: the node's clock in seconds (ROS time: follows /clock under use_sim_time).
            heartbeat_s: take each camera's newest frame at least this often (camera
                liveness for diagnostics); 0 takes frames only when inference needs them.
        """
        self.engine = engine
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._sources: dict[str, Callable[[bool], Any]] = {}
        self._waiters: dict[str, list[tuple[float, FrameCallback]]] = {}
        self._on_take: Callable[[str, Any], None] | None = None
        self._housekeeping: Callable[[], None] | None = None
        self._last_housekeeping = time.monotonic()
        self._last_heartbeat = time.monotonic()
        self.cameras = {name: CameraState(name) for name in cameras}
        self._settings = settings
        self._lock = threading.Condition()
        self._jobs: deque[QueryJob] = deque()
        self._stop = threading.Event()
        self._paused = True
        self._busy = False
        self._camera_went_last = False  # with a batch of one, cameras and queries alternate
        self._runner = BatchRunner(lambda: self.engine, self.cameras, self._lock,
                                   self._stop.is_set, on_result, on_error)
        self._thread = threading.Thread(target=self._loop, name='kosmos_inference',
                                        daemon=True)
        self._thread.start()

    # -- called from executor threads --------------------------------------------------------

    def set_settings(self, settings: ContinuousSettings) -> None:
        with self._lock:
            self._settings = settings
            self._lock.notify()

    def set_engine(self, engine: GroundingEngine) -> None:
        with self._lock:
            self.engine = engine

    def set_sources(self, sources: dict[str, Callable[[bool], Any]],
                    on_take: Callable[[str, Any], None] | None,
                    housekeeping: Callable[[], None] | None = None) -> None:
        """Set how to take each camera's newest message (None when nothing new).

        ``source(use)`` takes it; ``use`` is False for liveness takes, True when a query or
        continuous grounding needs the frame (the source may subscribe then). ``on_take(camera,
        msg)`` checks a taken message and calls :meth:`offer_frame`. ``housekeeping()`` runs on
        this thread about every :data:`HOUSEKEEPING_PERIOD` seconds between cycles.
        """
        with self._lock:
            self._sources = dict(sources)
            self._on_take = on_take
            self._housekeeping = housekeeping
            self._lock.notify()

    def poll(self, camera: str, use: bool = True) -> bool:
        """Take the newest message of ``camera`` from its source; True if there was one."""
        source, on_take = self._sources.get(camera), self._on_take
        if source is None or on_take is None:
            return False
        msg = source(use)
        if msg is None:
            return False
        on_take(camera, msg)
        return True

    def take_latest(self, camera: str) -> tuple[Any, float]:
        """Take the newest message of ``camera`` now; return the newest known and its stamp."""
        self.poll(camera)
        return self.latest(camera)

    def wait_for_frame(self, camera: str, timeout: float, done: FrameCallback) -> None:
        """Call ``done(msg, stamp)`` with the first frame of ``camera`` once there is one.

        ``done(None, 0.0)`` after ``timeout`` seconds without one, or when the worker stops.
        Called on the worker thread (or at once on this one when a frame is already there).
        """
        with self._lock:
            state = self.cameras[camera]
            if state.latest is None and not self._stop.is_set():
                self._waiters.setdefault(camera, []).append((time.monotonic() + timeout, done))
                self._lock.notify()
                return
            msg, stamp = state.latest, state.latest_stamp
        done(msg, stamp)

    def waiting(self, camera: str) -> bool:
        """Tell whether a query waits for a first frame of ``camera``."""
        with self._lock:
            return bool(self._waiters.get(camera))

    def forget_frames(self, camera: str) -> None:
        """Drop the newest frame of ``camera`` and its features (its subscription ended)."""
        with self._lock:
            state = self.cameras[camera]
            state.latest, state.latest_taken = None, True
            state.encoded_msg, state.encoded = None, None

    def set_paused(self, paused: bool) -> None:
        """Paused: no continuous grounding (queries are refused by the node meanwhile)."""
        with self._lock:
            self._paused = paused
            self._lock.notify()

    def offer_frame(self, camera: str, msg: Any, stamp: float) -> None:
        """Store the newest message of ``camera`` (message time ``stamp``); wake if due."""
        now = time.monotonic()
        with self._lock:
            state = self.cameras[camera]
            if not state.latest_taken:
                if self._due(state):
                    state.superseded += 1
                else:
                    state.throttled += 1
            state.latest, state.latest_stamp, state.latest_taken = msg, stamp, False
            state.last_received_wall = now
            state.frames_in += 1
            if self._due(state):
                self._lock.notify()

    def count_refused(self, camera: str, reason: str) -> None:
        """Count a frame the node refused before offering it (e.g. its encoding)."""
        with self._lock:
            self.cameras[camera].errors += 1
            self.cameras[camera].last_error = reason

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Copy the counters of every camera (for diagnostics)."""
        with self._lock:
            return {name: {
                'frames_in': s.frames_in, 'superseded': s.superseded, 'throttled': s.throttled,
                'inferences': s.inferences, 'errors': s.errors, 'last_error': s.last_error,
                'last_received_wall': s.last_received_wall,
                'last_result_wall': s.last_result_wall, 'latencies': list(s.latencies),
                'result_times': list(s.result_times),
            } for name, s in self.cameras.items()}

    def latest(self, camera: str) -> tuple[Any, float]:
        """Return the newest message of ``camera`` and its stamp (None if none yet)."""
        with self._lock:
            state = self.cameras[camera]
            return state.latest, state.latest_stamp

    def submit(self, job: QueryJob) -> None:
        """Queue a query; once the worker is stopped, answer it at once with the reason."""
        with self._lock:
            stopped = self._stop.is_set()
            if not stopped:
                self._jobs.append(job)
                self._lock.notify()
        if stopped:
            job.done(None, InferenceCancelled(UNLOADING), None)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread (cancelling a running generation); True if it ended in time."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._fail_pending(InferenceCancelled(UNLOADING))
        self._serve_waiters()
        return not alive

    @property
    def busy(self) -> bool:
        return self._busy

    def pending_jobs(self) -> int:
        with self._lock:
            return len(self._jobs)

    # -- the worker thread -------------------------------------------------------------------

    def _due(self, state: CameraState) -> bool:
        rate = self._settings.rate_hz
        if self._paused or rate <= 0 or self._settings.query is None:
            return False
        if state.latest is None or state.latest_taken:
            return False
        return rate_allows(state.latest_stamp, state.last_grounded_stamp, rate)

    def _continuous_on(self) -> bool:
        settings = self._settings
        return not self._paused and settings.rate_hz > 0 and settings.query is not None

    def _wants_frame(self, state: CameraState) -> float:
        """Seconds until ``state``'s camera may be grounded again by the clock (0: now).

        Frames are taken from DDS only from then on. When the frames' stamps are more than
        a second away from the clock (no use_sim_time while replaying, clock skew), the clock
        says nothing about them: every new frame is taken and the stamps alone decide.
        """
        last = state.last_grounded_stamp
        if last is None:
            return 0.0
        now = self._clock()
        if abs(now - state.latest_stamp) > 1.0 or now < last:
            return 0.0
        return max(0.0, last + 1.0 / self._settings.rate_hz - 0.005 - now)

    def _serve_waiters(self) -> None:
        """Hand waiting queries their camera's frame, or None once their time is up."""
        ready = []
        with self._lock:
            # When stopping, every deadline has passed.
            now = math.inf if self._stop.is_set() else time.monotonic()
            for camera, waiters in list(self._waiters.items()):
                state = self.cameras[camera]
                if state.latest is not None:
                    ready += [(done, state.latest, state.latest_stamp) for _, done in waiters]
                    waiters = []
                else:
                    ready += [(done, None, 0.0) for deadline, done in waiters if deadline <= now]
                    waiters = [w for w in waiters if w[0] > now]
                if waiters:
                    self._waiters[camera] = waiters
                else:
                    del self._waiters[camera]
        for done, msg, stamp in ready:
            done(msg, stamp)

    def _poll_sources(self) -> float:
        """Take the frames continuous grounding, waiting queries or the heartbeat need.

        Return how long to wait before the next look.
        """
        wait = HOUSEKEEPING_PERIOD
        housekeeping = self._housekeeping
        if housekeeping is not None:
            since = time.monotonic() - self._last_housekeeping
            if since >= HOUSEKEEPING_PERIOD:
                self._last_housekeeping = time.monotonic()
                housekeeping()
                since = 0.0
            wait = min(wait, HOUSEKEEPING_PERIOD - since)
        if self._waiters:
            for name in list(self._waiters):
                self.poll(name)
            self._serve_waiters()
            if self._waiters:
                wait = 0.005
        if self._continuous_on():
            for state in list(self.cameras.values()):
                remaining = self._wants_frame(state)
                if remaining <= 0.0:
                    self.poll(state.name)
                    remaining = 0.005  # keep looking until a new enough frame arrives
                wait = min(wait, remaining)
        if self._heartbeat_s > 0 and self._sources:
            since = time.monotonic() - self._last_heartbeat
            if since >= self._heartbeat_s:
                self._last_heartbeat = time.monotonic()
                for name in list(self.cameras):
                    self.poll(name, use=False)
                since = 0.0
            wait = min(wait, self._heartbeat_s - since)
        return max(wait, 0.001)

    def _take_work(self) -> Batch:
        """Wait for work; return the next batch (empty once stopping)."""
        while not self._stop.is_set():
            wait = self._poll_sources()  # outside the lock: takes convert messages
            with self._lock:
                if self._jobs or any(self._due(s) for s in self.cameras.values()):
                    break
                self._lock.wait(wait)
        with self._lock:
            due = [s for s in self.cameras.values() if self._due(s)]
            if self._stop.is_set() or not (self._jobs or due):
                return Batch([], [], None)
            size = max(1, self.engine.options.max_batch_size)
            places = camera_places(len(due), len(self._jobs), size, self._camera_went_last)
            self._camera_went_last = places > 0
            due.sort(key=lambda s: s.last_result_wall or 0.0)  # longest waiting first
            frames = []
            for state in due[:places]:
                frames.append(CameraFrame(state.name, state.latest, state.latest_stamp))
                state.latest_taken = True
                state.last_grounded_stamp = state.latest_stamp
            self._busy = True
            return Batch(self._pick_jobs(size - places), frames, self._settings.query)

    def _pick_jobs(self, count: int) -> list[QueryJob]:
        """Take the queries of the next batch off the queue (see :func:`choose_batch`)."""
        normal = self.engine.options.max_new_tokens
        queue = list(self._jobs)
        budgets = [normal if j.query.max_new_tokens is None else int(j.query.max_new_tokens)
                   for j in queue]
        chosen = set(choose_batch(budgets, [j.passed for j in queue], count, normal))
        self._jobs = deque(j for i, j in enumerate(queue) if i not in chosen)
        for job in self._jobs:
            job.passed += 1 if chosen else 0
        return [queue[i] for i in sorted(chosen)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take_work()
            if not batch:
                continue
            try:
                self._runner.run(batch)
            except Exception as exc:  # keep serving: report to every waiting caller
                if isinstance(exc, OutOfMemoryError):
                    self._runner.drop_cached_features()
                for job in batch.jobs:
                    job.done(None, exc, None)
                for item in batch.frames:
                    self._runner.count_error(item.camera, exc)
            finally:
                self._busy = False

    def _fail_pending(self, exc: Exception) -> None:
        with self._lock:
            jobs, self._jobs = list(self._jobs), deque()
        for job in jobs:
            job.done(None, exc, None)
