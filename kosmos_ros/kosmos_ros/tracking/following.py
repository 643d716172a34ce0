# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Each track's box from frame to frame: the flow, the motion model's prediction, loss.

The per-frame half of ``tracking.py`` (whose docstring gives the rules): an :class:`Entry`
holds what a tracker knows of one track (its points on the last frame the flow followed it
on, its motion model, its recent boxes), and a :class:`Follower` moves entries onto a new
frame (one Lucas-Kanade call per frame the points belong to), predicts the ones the flow
lost, and loses those predicted for ``coast_seconds``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
import math

import numpy as np

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.tracking.flow import (downscale, fit_motion, follow_points, moved_box, scaled_box,
                                      seed_points)
from kosmos_ros.tracking.motion import BoxFilter
from kosmos_ros.tracking.track import Track, TrackerSettings, TrackState

# A predicted box matches a detection whose centre lies within this many of its larger side
# beyond the way it was predicted to go (``Entry.reach``).
_COAST_REACH = 1.0
# Stamps closer than this (seconds) are one instant (8/30 - 2/30 < 0.2 in floating point).
_STAMP_TOLERANCE = 1e-6
# The largest change of size the flow may find after frames it did not follow.
_MAX_SCALE_CHANGE = 0.9
_NO_POINTS = np.empty((0, 2), np.float32)


@dataclass(frozen=True)
class FlowFrame:
    """A frame as the flow sees it: grey, no wider than ``max_width``."""

    stamp: float
    size: tuple[int, int]  # (width, height) of the camera frame
    small: np.ndarray
    factor: float  # flow pixels per frame pixel

    @classmethod
    def of(cls, stamp: float, gray: np.ndarray, max_width: int) -> FlowFrame:
        small, factor = downscale(gray, max_width)
        return cls(stamp, (int(gray.shape[1]), int(gray.shape[0])), small, factor)


@dataclass
class Entry:
    """A tracker's state of one track; boxes are in frame pixels, not clamped."""

    track: Track
    box: PixelBox  # published (flow, model or prediction)
    motion: BoxFilter
    seen: PixelBox  # where the flow (or the model) saw it last: on ``anchor`` when there is one
    points: np.ndarray = field(default_factory=lambda: _NO_POINTS)  # flow pixels of anchor
    anchor: FlowFrame | None = None  # the last frame the flow followed it on
    stamps: list[float] = field(default_factory=list)  # with boxes: its recent boxes
    boxes: list[PixelBox] = field(default_factory=list)
    predicted: list[bool] = field(default_factory=list)  # whether each box was predicted
    seed_pending: bool = False  # seed points on the next frame (not on this one)
    misses: int = 0  # frames predicted since the anchor
    moving: bool = False  # the motion model's velocity comes from the flow
    confirm_at: float | None = None  # a result stamped ahead of the frames

    def box_at(self, stamp: float) -> tuple[PixelBox, bool]:
        """Return the remembered box at ``stamp`` and whether it was predicted.

        The box of the latest frame at or before ``stamp`` (the oldest one kept if none).
        """
        if not self.boxes:
            return self.box, self.track.state is TrackState.PREDICTED
        index = max(bisect.bisect_right(self.stamps, stamp) - 1, 0)
        return self.boxes[index], self.predicted[index]

    def reach(self, predicted: PixelBox) -> float:
        """Return how far from a predicted box a detection may lie and still match.

        The object is somewhere between where the flow saw it last and where it would be had
        it kept its velocity (it may have stopped while hidden), give or take its size.
        """
        (px, py), (sx, sy) = predicted.center, self.seen.center
        return _COAST_REACH * max(predicted.width, predicted.height) + math.hypot(px - sx,
                                                                                  py - sy)

    def guess(self, predicted: PixelBox, factor: float) -> np.ndarray:
        """Return where the points should be (flow pixels) if the box is at ``predicted``."""
        seen = self.seen
        scale = np.float32([predicted.width / max(seen.width, 1e-6),
                            predicted.height / max(seen.height, 1e-6)])
        return ((self.points - np.float32(seen.center) * factor) * scale
                + np.float32(predicted.center) * factor).astype(np.float32)


class Follower:
    """Moves a tracker's entries onto new frames under ``settings``.

    ``size``, the latest frame's (width, height) or None, is where published boxes are
    clamped; the tracker keeps it up to date.
    """

    def __init__(self, settings: TrackerSettings):
        self.settings = settings
        self.size: tuple[int, int] | None = None

    def seed(self, entry: Entry, frame: FlowFrame) -> None:
        """Take fresh points in the entry's box on ``frame``; lose it when there are too few.

        Too few corners at a model's box means that the flow cannot follow it there at all (a
        blank wall): the track is lost at once, not predicted.
        """
        points = seed_points(frame.small, scaled_box(entry.box, frame.factor),
                             self.settings.flow)
        entry.seed_pending = False
        if len(points) < self.settings.flow.min_points:
            self.lose(entry, frame.stamp)
            return
        entry.points, entry.anchor = points, frame
        entry.seen, entry.misses = entry.box, 0
        self._tracked(entry, frame.stamp)

    def follow(self, frame: FlowFrame, entries: list[Entry]) -> None:
        """Move the entries' points and boxes onto ``frame``: one LK call per anchor frame.

        Each point starts at the motion model's prediction; after frames not followed, the
        pyramid has one more level.
        """
        groups: dict[int, list[Entry]] = {}
        for entry in entries:
            groups.setdefault(id(entry.anchor), []).append(entry)
        settings = self.settings.flow
        for group in groups.values():
            anchor = group[0].anchor
            predicted = [entry.motion.predict(frame.stamp) for entry in group]
            points = np.concatenate([entry.points for entry in group])
            guess = np.concatenate([e.guess(box, anchor.factor)
                                    for e, box in zip(group, predicted)])
            levels = settings.levels + (1 if group[0].misses else 0)
            moved, held = follow_points(anchor.small, frame.small, points, settings, guess,
                                        levels)
            start = 0
            for entry, box in zip(group, predicted):
                end = start + len(entry.points)
                ok = held[start:end]
                self._measure(entry, frame, points[start:end][ok], moved[start:end][ok], box)
                start = end

    def lose(self, entry: Entry, stamp: float) -> None:
        """Stop following the entry: its box goes back to where it was seen last."""
        entry.points, entry.anchor, entry.seed_pending = _NO_POINTS, None, False
        entry.moving, entry.misses, entry.box = False, 0, entry.seen
        entry.motion = BoxFilter(entry.seen, stamp)  # its velocity is out of date
        self.record(entry, stamp)
        entry.track = replace(entry.track, state=TrackState.LOST, lost_since=stamp,
                              predicted_since=None)

    def record(self, entry: Entry, stamp: float, predicted: bool = False) -> None:
        """Publish the entry's box as of ``stamp`` and remember it for late model results."""
        entry.track = replace(entry.track, box=clamped(entry.box, self.size), last_update=stamp)
        index = bisect.bisect_left(entry.stamps, stamp)
        del entry.stamps[index:], entry.boxes[index:], entry.predicted[index:]
        entry.stamps.append(stamp)
        entry.boxes.append(entry.box)
        entry.predicted.append(predicted)
        keep_from = bisect.bisect_left(entry.stamps, stamp - self.settings.replay_seconds)
        del entry.stamps[:keep_from], entry.boxes[:keep_from], entry.predicted[:keep_from]

    def resize(self, entries: list[Entry], old: tuple[int, int], new: tuple[int, int],
               stamp: float, tolerance: float) -> None:
        """Carry entries onto frames of size ``new`` from frames of size ``old``.

        Rescaled when the aspect ratios agree within ``tolerance`` (a fraction), else lost.
        """
        sx, sy = new[0] / old[0], new[1] / old[1]
        same_view = abs(math.log(sx / sy)) <= tolerance
        for entry in entries:
            entry.points, entry.anchor, entry.misses = _NO_POINTS, None, 0
            if not same_view:
                if entry.track.followed:
                    self.lose(entry, stamp)
                continue
            entry.box, entry.seen = resized(entry.box, sx, sy), resized(entry.seen, sx, sy)
            entry.boxes = [resized(box, sx, sy) for box in entry.boxes]
            entry.motion.rescale(sx, sy)
            entry.seed_pending = entry.track.followed
            entry.track = replace(entry.track, box=clamped(entry.box, new))

    def _measure(self, entry: Entry, frame: FlowFrame, old: np.ndarray, new: np.ndarray,
                 predicted: PixelBox) -> None:
        """Place the entry's box from the points that held (``old`` on its anchor, ``new``)."""
        settings = self.settings.flow
        if len(old) < settings.min_points:
            self._coast(entry, frame, predicted)
            return
        box = scaled_box(entry.seen, entry.anchor.factor)
        expected = None
        if entry.moving:
            expected = (predicted.center[0] * frame.factor - box.center[0],
                        predicted.center[1] * frame.factor - box.center[1])
        step = (1.0 + settings.max_scale_step) ** (entry.misses + 1) - 1.0
        motion = fit_motion(old, new, box.center, min(step, _MAX_SCALE_CHANGE), expected)
        points = new[motion.inliers]
        if len(points) < settings.min_points:
            self._coast(entry, frame, predicted)
            return
        entry.box = entry.seen = scaled_box(moved_box(box, motion), 1.0 / frame.factor)
        entry.motion.correct(entry.box)
        entry.moving, entry.misses, entry.anchor = True, 0, frame
        if len(points) < settings.redetect_below:
            fresh = seed_points(frame.small, scaled_box(entry.box, frame.factor), settings)
            points = fresh if len(fresh) > len(points) else points
        entry.points = points
        self._tracked(entry, frame.stamp)

    def _tracked(self, entry: Entry, stamp: float) -> None:
        """Mark the entry followed by the flow (no longer predicted) and record its box."""
        track = entry.track
        if track.state is TrackState.PREDICTED:
            state = TrackState.CONFIRMED if track.hits > 1 else TrackState.TENTATIVE
            entry.track = replace(track, state=state, predicted_since=None)
        self.record(entry, stamp)

    def _coast(self, entry: Entry, frame: FlowFrame, predicted: PixelBox) -> None:
        """Publish the motion model's box for ``frame``, or lose the entry after coasting."""
        track = entry.track
        since = frame.stamp if track.predicted_since is None else track.predicted_since
        if frame.stamp - since >= self.settings.coast_seconds - _STAMP_TOLERANCE:
            self.lose(entry, frame.stamp)
            return
        entry.box, entry.misses = predicted, entry.misses + 1
        entry.track = replace(track, state=TrackState.PREDICTED, predicted_since=since)
        self.record(entry, frame.stamp, predicted=True)


def clamped(box: PixelBox, size: tuple[int, int] | None) -> PixelBox:
    """Return ``box`` clamped to a frame of ``size`` (unchanged for None)."""
    if size is None:
        return box
    width, height = size
    return PixelBox(min(max(box.x1, 0.0), width), min(max(box.y1, 0.0), height),
                    min(max(box.x2, 0.0), width), min(max(box.y2, 0.0), height))


def resized(box: PixelBox, sx: float, sy: float) -> PixelBox:
    """Return ``box`` in the pixels of a frame resized by ``sx`` and ``sy``."""
    return PixelBox(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)
