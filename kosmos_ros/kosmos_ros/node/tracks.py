# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tracks at camera rate: the node's tracking thread, ``NAME/tracks`` and ``NAME/tracks_3d``.

A camera is *tracked* while ``NAME/tracks`` or ``NAME/tracks_3d`` has a subscriber or a follow
goal (:mod:`.follow`) uses it; otherwise tracking costs nothing: no frame is taken for it, the
tracker's kept frames are dropped, and the thread only wakes once a second to count the
subscribers (a new follow goal wakes it at once; a new subscriber is seen within a second).
While a camera is tracked, this module's thread (``kosmos_tracking``) takes each of its frames
from DDS in place of the inference worker and hands every one to the worker too
(:meth:`GroundingNode._admit`), so queries and continuous grounding still see the newest frame
and no frame is taken twice. Each frame is converted once, its tracks moved onto it
(:class:`kosmos_ros.tracking.stream.TrackStream`, shared with ``ground_bag --track``) and
published with the frame's header; with depth, the tracks are lifted to 3D. Model results
(continuous grounding, ``~/ground`` queries on the camera, follow goals' re-grounding) give the
tracks their ids (:meth:`TrackingPump.on_result`).

The inference worker is never blocked by tracking, and tracking never waits for the model: a
result that comes late is placed on the frame it was computed on (the tracker keeps the last
two seconds of frames).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.errors import KosmosError
from kosmos_ros.images import frame_from_message
from kosmos_ros.node.camera import Camera
from kosmos_ros.node.conversions import track_states_msg, tracks_3d_msg, tracks_msg
from kosmos_ros.node.parameter_table import NodeParams
from kosmos_ros.tracking.stream import TrackStream

WANTED_PERIOD = 0.2  # seconds between two looks at who subscribes, while tracking
IDLE_WAIT = 1.0  # the same while no camera is tracked (a follow goal wakes it at once)
FRAME_POLL = 0.003  # between two looks for a new frame while cameras are tracked


class TrackingPump:
    """The tracking thread of a configured node: one :class:`TrackStream` per camera."""

    def __init__(self, cameras: dict[str, Camera], params: Callable[[], NodeParams | None],
                 admit: Callable[[str, Any], float | None], active: Callable[[], bool],
                 follow: Any):
        """Start the thread.

        Args:
            cameras: the node's cameras (their intakes, depth and ``tracks`` publishers).
            params: the node's current parameters (None once cleaned up).
            admit: checks a taken frame and offers it to the inference worker; returns its
                stamp, or None when it is refused.
            active: whether the node is active (nothing is tracked otherwise).
            follow: the follow server (:class:`.follow.FollowServer`): which cameras it uses,
                its per-frame feedback and its periodic work.
        """
        self._cameras, self._params, self._admit = cameras, params, admit
        self._active_node, self._follow = active, follow
        p = params()
        self.streams = {name: TrackStream(p.tracker(), p.track_rate_hz) for name in cameras}
        self._settings = (p.track_max_age, p.track_coast_time, p.track_rate_hz)
        self._tracked: frozenset[str] = frozenset()
        # Per camera, as of the last refresh: (tracks read, tracks_3d read, followed,
        # track_states read).
        self._readers: dict[str, tuple[bool, bool, bool, bool]] = {}
        self._next_look: dict[str, float] = {}  # monotonic time of each camera's next take
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='kosmos_tracking', daemon=True)
        self._thread.start()

    @property
    def tracked(self) -> frozenset[str]:
        """The cameras tracked now."""
        return self._tracked

    def owns(self, camera: str) -> bool:
        """Whether this thread takes ``camera``'s frames now (the worker must not)."""
        return camera in self._tracked

    def wake(self) -> None:
        """Look again at once at which cameras are tracked (a follow goal came or went)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._tracked = frozenset()

    def on_result(self, camera: str, stamp: float, result: GroundingResult,
                  min_score: float) -> None:
        """Feed a model result on ``camera``'s frame admitted at ``stamp`` to its tracks.

        Any thread.
        """
        stream = self.streams.get(camera)
        if stream is not None and camera in self._tracked:
            stream.on_result(stamp, result, min_score)

    # -- the thread --------------------------------------------------------------------------

    def _loop(self) -> None:
        checked = 0.0
        while not self._stop.is_set():
            period = WANTED_PERIOD if self._tracked else IDLE_WAIT
            if time.monotonic() - checked >= period or self._wake.is_set():
                self._wake.clear()
                checked = time.monotonic()
                try:
                    self._refresh()
                except Exception as exc:  # a publisher destroyed under it, say: look again
                    if self._stop.is_set():
                        break
                    self._report(exc)
            if not self._tracked:
                self._wake.wait(IDLE_WAIT)
                continue
            now = time.monotonic()
            for name in self._tracked:
                if self._next_look.get(name, 0.0) > now:
                    continue
                try:
                    took = self._step(name)
                except Exception as exc:  # never end the thread over one frame
                    self._cameras[name].report(exc)
                    took = False
                self._next_look[name] = now + (self._frame_gap(name) if took else FRAME_POLL)
            try:
                self._follow.tick()
            except Exception as exc:  # reported; the thread goes on
                self._report(exc)
            wait = min((self._next_look.get(n, 0.0) for n in self._tracked), default=now)
            self._wake.wait(min(max(wait - time.monotonic(), 0.0005), WANTED_PERIOD))

    def _frame_gap(self, name: str) -> float:
        """Seconds to wait after a frame before looking for the next: 0.7 of its period.

        Looking every FRAME_POLL seconds between frames cost more than the tracking itself
        (a take finds nothing most of the time); the camera's measured input rate says when
        the next frame is due.
        """
        intake = self._cameras[name].intake
        rate = intake.rate_hz if intake is not None else None
        return 0.7 / rate if rate and rate > 0 else FRAME_POLL

    def _report(self, exc: Exception) -> None:
        for camera in list(self._cameras.values())[:1]:
            camera.report(exc)

    def _refresh(self) -> None:
        """Decide which cameras are tracked; drop the kept frames of those no longer tracked."""
        p = self._params()
        if p is None or not self._active_node():
            wanted: frozenset[str] = frozenset()
            self._readers = {}
        else:
            self._readers = {n: (_read(cam, 'tracks'), _read(cam, 'tracks_3d'),
                                 self._follow.uses(n), _read(cam, 'track_states'))
                             for n, cam in self._cameras.items()}
            wanted = frozenset(n for n, readers in self._readers.items() if any(readers))
            settings = (p.track_max_age, p.track_coast_time, p.track_rate_hz)
            if settings != self._settings:
                self._settings = settings
                for stream in self.streams.values():
                    stream.configure(p.tracker(), p.track_rate_hz)
        for name in self._tracked - wanted:
            self.streams[name].reset()
        self._tracked = wanted

    def _step(self, name: str) -> bool:
        """Take, hand over and track ``name``'s newest frame; False when there is none."""
        camera, stream, p = self._cameras[name], self.streams[name], self._params()
        msg = camera.take(True)
        if msg is None or p is None:
            return False
        stamp = self._admit(name, msg)
        if stamp is None or not stream.wants(stamp):
            return True
        try:
            frame = frame_from_message(msg, int(p.max_image_pixels))
            tracks = stream.on_frame(stamp, frame)
        except KosmosError as exc:
            camera.report(exc)
            return True
        if tracks is None:
            return True
        outputs, header = camera.outputs, msg.header
        # Who reads is counted at each refresh (0.2 s; at once when a follow goal comes), not
        # per frame.
        tracks_read, tracks_3d_read, followed, states_read = self._readers.get(
            name, (False, False, False, False))
        if tracks_read and 'tracks' in outputs:
            camera.send('tracks', tracks_msg(tracks, header))
        if states_read and 'track_states' in outputs:
            camera.send('track_states', track_states_msg(
                stream.tracks(include_lost=True), header, stamp))
        lifted = None
        if camera.depth is not None and (followed or tracks_3d_read):
            lifted = camera.depth.lift_boxes(stamp, [t.box for t in tracks],
                                             (frame.width, frame.height),
                                             p.depth())
            if 'tracks_3d' in outputs:
                camera.send('tracks_3d', tracks_3d_msg(tracks, lifted, header))
        self._follow.on_frame(name, header, stamp, stream,
                              dict(zip((t.track_id for t in tracks), lifted or ())))
        return True


def _read(camera: Camera, output: str) -> bool:
    """Return whether anyone subscribes to the camera's ``output`` topic."""
    publisher = camera.outputs.get(output)
    return publisher is not None and publisher.get_subscription_count() > 0
