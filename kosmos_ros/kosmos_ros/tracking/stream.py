# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One camera's tracking as the node and ``ground_bag --track`` both run it.

A :class:`TrackStream` wraps a :class:`~kosmos_ros.tracking.tracker.Tracker` with the two rules the
live node and the offline tool share: which frames are tracked (every frame, or at most
``rate_hz`` of them per second of message time: the same throttle as grounding,
:func:`kosmos_ros.admission.rate_allows`), and which model boxes feed the tracks (the
detections of a result scoring at least ``min_score``, as on ``NAME/detections``). Frames and
results may come from different threads (the node's tracking thread and its inference worker):
every call takes the stream's lock.
"""

from __future__ import annotations

import threading

from kosmos_ros.admission import rate_allows
from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.images import Frame
from kosmos_ros.tracking.tracker import (gray_for_tracking, phrase_key, Track, Tracker,
                                         TrackerSettings)


class TrackStream:
    """Frames in, tracks out, for one camera; model results give the tracks their ids."""

    def __init__(self, settings: TrackerSettings | None = None, rate_hz: float = 0.0):
        """``rate_hz``: track at most this many frames per second of message time; 0: all."""
        self._lock = threading.Lock()
        self.tracker = Tracker(settings)
        self.rate_hz = float(rate_hz)
        self._last_tracked: float | None = None
        self.frames_tracked = 0

    def configure(self, settings: TrackerSettings, rate_hz: float) -> None:
        """Take new settings (a parameter changed); tracks and ids are kept."""
        with self._lock:
            self.tracker.settings = settings
            self.rate_hz = float(rate_hz)

    def reset(self) -> None:
        """Forget every track and kept frame (tracking stopped); ids go on increasing."""
        with self._lock:
            self.tracker.reset()
            self._last_tracked = None

    def wants(self, stamp: float) -> bool:
        """Tell whether the frame stamped ``stamp`` would be tracked (the rate cap)."""
        return self.rate_hz <= 0 or rate_allows(stamp, self._last_tracked, self.rate_hz)

    def on_frame(self, stamp: float, frame: Frame) -> list[Track] | None:
        """Move the tracks onto ``frame``; return them, or None when the rate cap skips it.

        Raises :class:`~kosmos_ros.tracking.tracker.TrackingError` for a frame the flow cannot use.
        """
        if not self.wants(stamp):
            return None
        gray = gray_for_tracking(frame)
        with self._lock:
            tracks = self.tracker.propagate(stamp, gray)
            self._last_tracked = stamp
            self.frames_tracked += 1
        return tracks

    def on_result(self, stamp: float, result: GroundingResult, min_score: float,
                  phrase: str | None = None) -> list[Track]:
        """Feed a model result for the frame at ``stamp``; return each detection's track.

        Only detections scoring at least ``min_score`` count (and, with ``phrase``, only
        those of that phrase, compared as association does).
        """
        detections = list(result.detections(min_score))
        if phrase is not None:
            key = phrase_key(phrase)
            detections = [d for d in detections if phrase_key(d[2].text) == key]
        with self._lock:
            return self.tracker.update(stamp, detections)

    def tracks(self, include_lost: bool = False) -> list[Track]:
        with self._lock:
            return self.tracker.tracks(include_lost)

    def get(self, track_id: int) -> Track | None:
        with self._lock:
            return self.tracker.get(track_id)
