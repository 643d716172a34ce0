# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounded boxes as tracks with lasting ids, followed on every frame between model results.

One :class:`Tracker` per camera, plain data in and out (no ROS, no torch), driven by two calls
in message time (the frames' header stamps, so a bag replays as it ran live):

- ``update(stamp, result.detections(min_score))`` after each model result: detections are
  assigned to tracks of the same phrase by overlap, with ``scipy.optimize.linear_sum_assignment``
  on a cost of ``1 - IoU`` (pairs of different phrases or below ``iou_threshold`` cannot
  match). A matched track takes the model's box and new flow points; a detection left over
  starts a track with the next id; a track left over keeps its box and ages.
- ``propagate(stamp, gray)`` on each camera frame: every followed track's box moves with the
  Lucas-Kanade flow of points inside it (``flow.py``). A track whose points are lost is
  ``LOST``: its box stays where it was seen last and it is left out of ``tracks()`` until a
  model result confirms it again.

A track is removed ``track_max_age`` seconds (message time) after its last confirming model
result.

Model results come late: the result for the frame at ``stamp`` arrives after the tracker has
followed later frames. Over the last ``replay_seconds`` the tracker keeps its frames (grey,
downscaled for the flow: 18 MB at 30 Hz 640x480 and the default 2 s) and each track its boxes.
A result is compared with where the tracks were at ``stamp``; a matched track takes the
model's box moved on by the motion the track made since (no flow to run again); a new track
is seeded on the frame at ``stamp`` and followed through the kept frames to the latest one
(one Lucas-Kanade pair per kept frame, once). Measured on the benchmark's scenes
(``benchmarks/tracking_bench.py --latency 0.3``), a new track seeded on the latest frame
instead followed the background for seconds while its object moved away.

Nothing runs between calls. ``propagate`` without tracks only keeps the frame (downscaled
when wider than ``flow.max_width``).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field, replace
import enum
import math
from typing import Iterable

import numpy as np

from kosmos_ros.association import associate, iou_matrix, phrase_key
from kosmos_ros.datatypes import GroundedBox, GroundedPhrase, PixelBox
from kosmos_ros.flow import (check_gray, downscale, fit_motion, FlowSettings, follow_points,
                             gray_for_tracking, moved_box, scaled_box, seed_points,
                             TrackingError)

__all__ = ['associate', 'FlowSettings', 'gray_for_tracking', 'iou_matrix', 'phrase_key',
           'Track', 'Tracker', 'TrackerSettings', 'TrackingError', 'TrackState']


class TrackState(enum.Enum):
    """Where a track stands."""

    TENTATIVE = 'tentative'  # one model result so far; followed by the flow
    CONFIRMED = 'confirmed'  # two model results or more; followed by the flow
    LOST = 'lost'  # the flow lost it; its box is where it was last seen


@dataclass(frozen=True)
class TrackerSettings:
    """Identity and ageing of tracks; ``flow`` says how boxes are followed between results.

    Attributes:
        track_max_age: seconds (message time) a track lives after its last confirming model
            result.
        iou_threshold: least overlap (IoU) of a detection with a track's box for the two to
            match.
        replay_seconds: how long the tracker keeps its frames and each track its boxes, to
            place late model results (at least the model's latency; 0 keeps only the latest
            frame).
        flow: the optical-flow settings.
    """

    track_max_age: float = 3.0
    iou_threshold: float = 0.2
    replay_seconds: float = 2.0
    flow: FlowSettings = field(default_factory=FlowSettings)

    def __post_init__(self) -> None:
        if not (self.track_max_age > 0.0 and math.isfinite(self.track_max_age)):
            raise TrackingError(f'track_max_age must be positive; got {self.track_max_age}')
        if not 0.0 < self.iou_threshold <= 1.0:
            raise TrackingError(f'iou_threshold must be in (0, 1]; got {self.iou_threshold}')
        if not (self.replay_seconds >= 0.0 and math.isfinite(self.replay_seconds)):
            raise TrackingError(
                f'replay_seconds must not be negative; got {self.replay_seconds}')


@dataclass(frozen=True)
class Track:
    """What a tracker knows about one grounded object, as of ``last_update``.

    Attributes:
        track_id: the track's id, unique within its tracker, increasing from 1.
        phrase: the phrase of the last model result that confirmed the track.
        box: the box in the camera frame's pixels, clamped to the frame.
        score: the score of the last confirming model box.
        state: see :class:`TrackState`.
        hits: how many model results confirmed the track.
        first_confirmed: stamp (seconds) of the model result that started the track.
        last_confirmed: stamp of the last model result that confirmed it.
        last_update: stamp of the frame ``box`` belongs to.
        lost_since: stamp of the frame on which the flow lost the track, or None.
    """

    track_id: int
    phrase: str
    box: PixelBox
    score: float
    state: TrackState
    hits: int
    first_confirmed: float
    last_confirmed: float
    last_update: float
    lost_since: float | None = None

    @property
    def followed(self) -> bool:
        """Whether the flow follows the track (it is not lost)."""
        return self.state is not TrackState.LOST

    def confirmation_age(self, stamp: float) -> float:
        """Return the seconds from the last confirming model result to ``stamp``."""
        return stamp - self.last_confirmed


@dataclass
class _Entry:
    """A tracker's state of one track; ``box`` and ``points`` are not clamped or published."""

    track: Track
    box: PixelBox  # frame pixels, unclamped
    points: np.ndarray  # (N, 2) float32 in flow pixels of the tracker's latest frame
    stamps: list[float]  # with boxes: the box on each recent frame, oldest first
    boxes: list[PixelBox]
    seed_pending: bool = False  # seed points on the next frame (the box is not on this one)
    velocity: tuple[float, float] | None = None  # of the centre, flow pixels per second


@dataclass(frozen=True)
class _FlowFrame:
    """A frame as the flow sees it: grey, no wider than ``max_width``."""

    stamp: float
    size: tuple[int, int]  # (width, height) of the camera frame
    small: np.ndarray
    factor: float  # flow pixels per frame pixel

    @classmethod
    def of(cls, stamp: float, gray: np.ndarray, max_width: int) -> _FlowFrame:
        small, factor = downscale(gray, max_width)
        return cls(stamp, (int(gray.shape[1]), int(gray.shape[0])), small, factor)


def _clamped(box: PixelBox, size: tuple[int, int] | None) -> PixelBox:
    if size is None:
        return box
    width, height = size
    return PixelBox(min(max(box.x1, 0.0), width), min(max(box.y1, 0.0), height),
                    min(max(box.x2, 0.0), width), min(max(box.y2, 0.0), height))


def _carried(detected: PixelBox, then: PixelBox, now: PixelBox) -> PixelBox:
    """Move a box detected when a track was at ``then`` as the track moved to ``now``."""
    scale = math.sqrt(max(now.width * now.height, 1e-9) / max(then.width * then.height, 1e-9))
    (cx, cy), (tx, ty), (nx, ny) = detected.center, then.center, now.center
    return PixelBox.from_center(cx + nx - tx, cy + ny - ty, detected.width * scale,
                                detected.height * scale)


class Tracker:
    """Tracks of one camera: ids from model results, boxes carried by optical flow.

    Not thread-safe: one caller at a time (the node's tracking callback, or a bag loop).
    """

    def __init__(self, settings: TrackerSettings | None = None):
        self.settings = settings or TrackerSettings()
        self._entries: dict[int, _Entry] = {}
        self._next_id = 1
        self._frames: deque[_FlowFrame] = deque()  # oldest first; the last is the latest

    def reset(self) -> None:
        """Forget every track and frame; ids go on increasing."""
        self._entries.clear()
        self._frames.clear()

    def tracks(self, include_lost: bool = False) -> list[Track]:
        """Return the live tracks by id; lost ones (box held, not followed) only if asked."""
        return [e.track for e in self._entries.values() if include_lost or e.track.followed]

    def get(self, track_id: int) -> Track | None:
        """Return the live track ``track_id`` (lost or not), or None once it aged out."""
        entry = self._entries.get(track_id)
        return entry.track if entry else None

    def update(self, stamp: float,
               detections: Iterable[tuple[int, int, GroundedPhrase, GroundedBox]]
               ) -> list[Track]:
        """Take a model result for the frame at ``stamp``; return each detection's track.

        ``detections`` is ``GroundingResult.detections(min_score)``. The returned list holds,
        in the order of the detections, the track each one confirmed or started.
        """
        found = [(phrase_key(phrase.text), phrase.text, box.pixels, float(box.score))
                 for _, _, phrase, box in detections]
        latest = self._frames[-1] if self._frames else None
        self._expire(max(stamp, latest.stamp) if latest else stamp)
        entries = list(self._entries.values())
        then = [_box_at(entry, stamp) for entry in entries]
        pairs = associate([(phrase_key(e.track.phrase), box) for e, box in zip(entries, then)],
                          [(key, box) for key, _, box, _ in found], self.settings.iou_threshold)
        result: list[Track | None] = [None] * len(found)
        for row, col in pairs:
            _, text, box, score = found[col]
            result[col] = self._confirm(entries[row], stamp, text, box, then[row], score)
        for col, (_, text, box, score) in enumerate(found):
            if result[col] is None:
                result[col] = self._start(stamp, text, box, score)
        return result

    def propagate(self, stamp: float, gray: np.ndarray) -> list[Track]:
        """Move the followed tracks' boxes onto the frame at ``stamp``; return ``tracks()``.

        ``gray`` is the camera frame as a (height, width) uint8 array (``gray_for_tracking``);
        the tracker keeps it (or its downscaled copy) for ``replay_seconds``, so it must not
        be changed in place meanwhile. A frame older than the last one (a bag started over, a
        camera driver restarted) resets the tracker; a frame with the last one's stamp is
        ignored.
        """
        gray = check_gray(gray)
        previous = self._frames[-1] if self._frames else None
        if previous is not None and stamp < previous.stamp:
            self.reset()
            previous = None
        if previous is not None and stamp == previous.stamp:
            return self.tracks()
        frame = _FlowFrame.of(stamp, gray, self.settings.flow.max_width)
        if previous is not None and previous.size != frame.size:
            self._frames.clear()
            previous = None
            for entry in self._entries.values():
                entry.seed_pending = True
        self._keep(frame)
        self._expire(stamp)
        followed = [e for e in self._entries.values()
                    if e.track.followed and not e.seed_pending]
        if followed and previous is not None:
            self._follow(previous, frame, followed)
        for entry in self._entries.values():
            if entry.seed_pending:
                self._seed(entry, frame)
        return self.tracks()

    # -- model results ---------------------------------------------------------------------

    def _confirm(self, entry: _Entry, stamp: float, phrase: str, box: PixelBox,
                 then: PixelBox, score: float) -> Track:
        """Give a track the model's ``box`` of the frame at ``stamp``, when it was at ``then``.

        A followed track takes the box moved on by its own motion since ``stamp``; a lost one
        is seeded again on the frame of ``stamp`` and followed to the latest frame.
        """
        old = entry.track
        entry.track = replace(old, phrase=phrase, score=score, state=TrackState.CONFIRMED,
                              hits=old.hits + 1, last_confirmed=max(old.last_confirmed, stamp),
                              lost_since=None)
        if not self._frames or stamp > self._frames[-1].stamp:
            entry.box = box
            self._defer(entry, stamp)
        elif old.followed:
            entry.box = _carried(box, then, entry.box)
            self._seed(entry, self._frames[-1])
        else:
            entry.box = box
            self._replay(entry, stamp)
        return entry.track

    def _start(self, stamp: float, phrase: str, box: PixelBox, score: float) -> Track:
        track = Track(self._next_id, phrase, box, score, TrackState.TENTATIVE, 1, stamp, stamp,
                      stamp)
        self._next_id += 1
        entry = _Entry(track, box, np.empty((0, 2), np.float32), [], [])
        self._entries[track.track_id] = entry
        if not self._frames or stamp > self._frames[-1].stamp:
            self._defer(entry, stamp)
        else:
            self._replay(entry, stamp)
        return entry.track

    def _defer(self, entry: _Entry, stamp: float) -> None:
        """Hold a box of a frame not seen yet; its points are seeded on the next frame."""
        entry.seed_pending = True
        entry.points = np.empty((0, 2), np.float32)
        self._record(entry, stamp)

    def _replay(self, entry: _Entry, stamp: float) -> None:
        """Seed a new track on the kept frame of ``stamp`` and follow it to the latest frame.

        The frame of ``stamp`` is the latest kept frame at or before it; a result older than
        every kept frame is seeded on the oldest one.
        """
        frames = list(self._frames)
        start = max(bisect.bisect_right([f.stamp for f in frames], stamp) - 1, 0)
        self._seed(entry, frames[start])
        for previous, frame in zip(frames[start:], frames[start + 1:]):
            if not entry.track.followed:
                break
            self._follow(previous, frame, [entry])

    # -- frames ----------------------------------------------------------------------------

    def _keep(self, frame: _FlowFrame) -> None:
        self._frames.append(frame)
        oldest = frame.stamp - self.settings.replay_seconds
        while len(self._frames) > 1 and self._frames[0].stamp < oldest:
            self._frames.popleft()

    def _seed(self, entry: _Entry, frame: _FlowFrame) -> None:
        """Take fresh points in the entry's box on ``frame`` (the track is lost if too few)."""
        entry.points = seed_points(frame.small, scaled_box(entry.box, frame.factor),
                                   self.settings.flow)
        entry.seed_pending = False
        if len(entry.points) < self.settings.flow.min_points:
            self._lose(entry, frame.stamp)
        else:
            self._record(entry, frame.stamp)

    def _follow(self, previous: _FlowFrame, frame: _FlowFrame, entries: list[_Entry]) -> None:
        """Move every entry's points and box from ``previous`` onto ``frame``, in one LK call."""
        settings = self.settings.flow
        points = np.concatenate([e.points for e in entries])
        moved, held = follow_points(previous.small, frame.small, points, settings)
        start = 0
        for entry in entries:
            end = start + len(entry.points)
            old, new = points[start:end][held[start:end]], moved[start:end][held[start:end]]
            start = end
            if len(old) < settings.min_points:
                self._lose(entry, frame.stamp)
                continue
            box = scaled_box(entry.box, previous.factor)
            elapsed = frame.stamp - previous.stamp
            expected = None if entry.velocity is None else (
                entry.velocity[0] * elapsed, entry.velocity[1] * elapsed)
            motion = fit_motion(old, new, box.center, settings.max_scale_step, expected)
            entry.velocity = ((motion.center[0] - box.center[0]) / elapsed,
                              (motion.center[1] - box.center[1]) / elapsed)
            entry.box = scaled_box(moved_box(box, motion), 1.0 / frame.factor)
            entry.points = new[motion.inliers]
            if len(entry.points) < settings.min_points:
                self._lose(entry, frame.stamp)
            elif len(entry.points) < settings.redetect_below:
                self._seed(entry, frame)
            else:
                self._record(entry, frame.stamp)

    def _lose(self, entry: _Entry, stamp: float) -> None:
        """Stop following the entry: its box stays where it was seen last."""
        entry.points = np.empty((0, 2), np.float32)
        entry.velocity = None
        self._record(entry, stamp)
        entry.track = replace(entry.track, state=TrackState.LOST, lost_since=stamp)

    def _record(self, entry: _Entry, stamp: float) -> None:
        """Publish the entry's box as of ``stamp`` and remember it for late model results."""
        size = self._frames[-1].size if self._frames else None
        entry.track = replace(entry.track, box=_clamped(entry.box, size), last_update=stamp)
        while entry.stamps and entry.stamps[-1] >= stamp:
            entry.stamps.pop()
            entry.boxes.pop()
        entry.stamps.append(stamp)
        entry.boxes.append(entry.box)
        keep_from = bisect.bisect_left(entry.stamps, stamp - self.settings.replay_seconds)
        del entry.stamps[:keep_from], entry.boxes[:keep_from]

    def _expire(self, now: float) -> None:
        limit = self.settings.track_max_age
        for track_id in [i for i, e in self._entries.items()
                         if now - e.track.last_confirmed > limit]:
            del self._entries[track_id]


def _box_at(entry: _Entry, stamp: float) -> PixelBox:
    """Return the track's box on the latest frame at or before ``stamp`` that it remembers."""
    index = bisect.bisect_right(entry.stamps, stamp) - 1
    return entry.boxes[max(index, 0)] if entry.boxes else entry.box
