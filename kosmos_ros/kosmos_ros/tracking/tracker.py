# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounded boxes as tracks with lasting ids, followed on every frame between model results.

One :class:`Tracker` per camera, plain data in and out (no ROS, no torch), driven by two calls
in message time (the frames' header stamps, so a bag replays as it ran live):

- ``update(stamp, result.detections(min_score))`` after each model result: detections are
  assigned to tracks of the same phrase by overlap, with ``scipy.optimize.linear_sum_assignment``
  on a cost of ``1 - IoU`` (pairs of different phrases or below ``iou_threshold`` cannot
  match; a predicted box also matches a detection whose centre is within the box's larger
  side of the way from where the flow saw the object last to the prediction: the object may
  have stopped or turned while hidden). A matched track takes the model's box and new flow
  points; a detection left over starts a track with the next id; a track left over keeps its
  box and ages. A track the flow follows takes the model's box blended with its own
  (``model_weight`` of the model's, default 0.4), which averages the model's noise: on the
  benchmark, whose model boxes overlap the truth by 0.88 on average, mean IoU rose from 0.88
  to 0.92 (clean scenes) and 0.93 (robot camera); 0.5 gave 0.92 and 0.93, 0.3 0.93 and 0.94.
- ``propagate(stamp, gray)`` on each camera frame: every followed track's box moves with the
  Lucas-Kanade flow of points inside it (``flow.py``), and corrects the track's motion model
  (a constant-velocity Kalman filter, ``motion.py``). The per-frame work is in
  ``following.py``; ``Track``, ``TrackState`` and ``TrackerSettings`` in ``track_types.py``.

Motion (``Track.motion``, ``Track.state``):

- ``'tracked'`` (``TENTATIVE``: one model result so far, ``CONFIRMED``: more): the flow
  placed the box on this frame.
- ``'predicted'`` (``PREDICTED``): the flow failed on this frame (a blurred frame, an
  exposure step, the object covered): the box is the motion model's prediction, still
  published by ``tracks()``; ``predicted_since`` is the first such frame and ``coasted`` the
  seconds since. On each later frame the flow tries again from the last frame it followed
  (its points kept), starting each point at the prediction (``cv2.OPTFLOW_USE_INITIAL_FLOW``)
  with one more pyramid level; when enough points hold, the track is tracked again with its
  id. Flow crops of two frames of different exposure are first brought to one mean and
  contrast (``flow._matched_exposure``). A model result also ends the prediction.
- ``'lost'`` (``LOST``): predicted for ``coast_seconds`` (``TrackerSettings``, default 1 s;
  0: lost as soon as the flow fails), or given a model box in which no corners can be
  seeded (a blank wall: the flow cannot follow it there at all): its box stays where it was
  last seen, it is left out of ``tracks()`` and ``lost_since`` says since when, until a model
  result confirms it. On the benchmark's robot scenes (two occlusions of 5 grey frames per
  scene) every coast from 0.2 to 2 s gave the same figures (the flow finds the object again
  within 6 frames); with 15 grey frames, 12 % blurred and 12 % re-exposed frames and results
  at 1 Hz, 0.3 s lost 194 frames and 5 ids where 1 s lost 31 and 1, and 2 s did no better
  than 1 s, which also bridges to the next result at the node's default 1 Hz.

A track is removed ``track_max_age`` seconds (message time) after its last confirming model
result. Stamps are taken as they come but never trusted ahead of the frames:
``last_confirmed`` is never later than the latest frame's stamp (a result stamped ahead of it
counts from that frame, and counts from its own stamp once frames reach it, unless it is more
than ``track_max_age`` ahead), so a result stamped hours in the future neither keeps a track
alive nor gives it a negative age. A frame older than the latest one (a bag started over, a
camera driver restarted, frames after one stamped in the future) starts the tracker over, and
so does, before any frame, a result older than the latest result by more than
``track_max_age``.

A frame of another size (a camera switching resolution) rescales every box, motion and kept
box when its aspect ratio is within 2 % of the last frame's (the points are seeded again on
it); otherwise the followed tracks are lost (their boxes belong to another view).

Model results come late: the result for the frame at ``stamp`` arrives after the tracker has
followed later frames. Over the last ``replay_seconds`` the tracker keeps its frames (grey,
downscaled for the flow: 18 MB at 30 Hz 640x480 and the default 2 s) and each track its boxes.
A result is compared with where the tracks were at ``stamp``; a matched tracked track takes
the model's box moved on by the motion the track made since (no flow to run again, then
blended); a new,
predicted or lost track is seeded on the frame at ``stamp`` and followed through the kept
frames to the latest one (one Lucas-Kanade pair per kept frame, once). Measured on the
benchmark's scenes (``benchmarks/tracking_bench.py --latency 0.3``), a new track seeded on the
latest frame instead followed the background for seconds while its object moved away.

Nothing runs between calls. ``propagate`` without tracks only keeps the frame (downscaled
when wider than ``flow.max_width``).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import replace
import math
from typing import Iterable

import numpy as np

from kosmos_ros.datatypes import GroundedBox, GroundedPhrase, PixelBox
from kosmos_ros.tracking.association import associate, iou_matrix, phrase_key
from kosmos_ros.tracking.flow import check_gray, FlowSettings, gray_for_tracking, TrackingError
from kosmos_ros.tracking.following import Entry, FlowFrame, Follower
from kosmos_ros.tracking.motion import BoxFilter
from kosmos_ros.tracking.track import Track, TrackerSettings, TrackState

__all__ = ['associate', 'FlowSettings', 'gray_for_tracking', 'iou_matrix', 'phrase_key',
           'Track', 'Tracker', 'TrackerSettings', 'TrackingError', 'TrackState']

# A followed box overlapping a model box less than this has drifted: not blended with it.
_FUSE_IOU = 0.5
# Frame sizes whose aspect ratios differ by less than this fraction are one view resized.
_ASPECT_TOLERANCE = 0.02


class Tracker:
    """Tracks of one camera: ids from model results, boxes carried by optical flow.

    Not thread-safe: one caller at a time (the node's tracking callback, or a bag loop).
    """

    def __init__(self, settings: TrackerSettings | None = None):
        self._follower = Follower(settings or TrackerSettings())
        self._entries: dict[int, Entry] = {}
        self._next_id = 1
        self._frames: deque[FlowFrame] = deque()  # oldest first; the last is the latest
        self._clock: float | None = None  # the latest result's stamp, before any frame

    @property
    def settings(self) -> TrackerSettings:
        return self._follower.settings

    @settings.setter
    def settings(self, settings: TrackerSettings) -> None:
        self._follower.settings = settings

    def reset(self) -> None:
        """Forget every track and frame; ids go on increasing."""
        self._entries.clear()
        self._frames.clear()
        self._clock = self._follower.size = None

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
        if not self._frames:
            if self._clock is not None and stamp < self._clock - self.settings.track_max_age:
                self.reset()
            self._clock = stamp if self._clock is None else max(self._clock, stamp)
        self._expire(self._frames[-1].stamp if self._frames else self._clock)
        entries = list(self._entries.values())
        then = [entry.box_at(stamp) for entry in entries]
        reach = [entry.reach(box) if predicted else 0.0
                 for entry, (box, predicted) in zip(entries, then)]
        pairs = associate([(phrase_key(e.track.phrase), box) for e, (box, _) in
                           zip(entries, then)], [(key, box) for key, _, box, _ in found],
                          self.settings.iou_threshold, reach)
        result: list[Track | None] = [None] * len(found)
        for row, col in pairs:
            _, text, box, score = found[col]
            result[col] = self._confirm(entries[row], stamp, text, box, then[row][0], score)
        for col, (_, text, box, score) in enumerate(found):
            if result[col] is None:
                result[col] = self._start(stamp, text, box, score)
        return result

    def propagate(self, stamp: float, gray: np.ndarray) -> list[Track]:
        """Move the followed tracks' boxes onto the frame at ``stamp``; return ``tracks()``.

        ``gray`` is the camera frame as a (height, width) uint8 array (``gray_for_tracking``);
        the tracker keeps it (or its downscaled copy) for ``replay_seconds``, so it must not
        be changed in place meanwhile. A frame older than the last one resets the tracker; a
        frame with the last one's stamp is ignored.
        """
        gray = check_gray(gray)
        previous = self._frames[-1] if self._frames else None
        if previous is not None and stamp < previous.stamp:
            self.reset()
            previous = None
        if previous is not None and stamp == previous.stamp:
            return self.tracks()
        frame = FlowFrame.of(stamp, gray, self.settings.flow.max_width)
        if previous is not None and previous.size != frame.size:
            self._frames.clear()
            self._follower.size = None
            self._follower.resize(list(self._entries.values()), previous.size, frame.size,
                                  stamp, _ASPECT_TOLERANCE)
        self._keep(frame)
        self._settle(stamp)
        self._expire(stamp)
        pending = [e for e in self._entries.values() if e.seed_pending]
        followed = [e for e in self._entries.values()
                    if e.track.followed and not e.seed_pending]
        if followed:
            self._follower.follow(frame, followed)
        for entry in pending:
            if entry.track.state is TrackState.PREDICTED:  # resized while predicted
                entry.box = entry.motion.predict(frame.stamp)
            else:
                entry.motion.restart(entry.box, frame.stamp)
            self._follower.seed(entry, frame)
        return self.tracks()

    # -- model results ---------------------------------------------------------------------

    def _confirm(self, entry: Entry, stamp: float, phrase: str, box: PixelBox,
                 then: PixelBox, score: float) -> Track:
        """Give a track the model's ``box`` of the frame at ``stamp``, when it was at ``then``.

        A tracked track takes the box moved on by its own motion since ``stamp`` (blended with
        its own, ``_fused``); a predicted or lost one is seeded again on the frame of
        ``stamp`` and followed to the latest frame.
        """
        old = entry.track
        confirmed, entry.confirm_at = self._honest(stamp)
        entry.track = replace(old, phrase=phrase, score=score, state=TrackState.CONFIRMED,
                              hits=old.hits + 1,
                              last_confirmed=max(old.last_confirmed, confirmed),
                              lost_since=None, predicted_since=None)
        entry.seen, entry.misses = box, 0
        if not self._frames or stamp > self._frames[-1].stamp:
            entry.box = box
            self._defer(entry, stamp)
        elif old.motion == 'tracked':
            latest = self._frames[-1]
            entry.box = entry.seen = self._fused(_carried(box, then, entry.box), entry.box)
            entry.motion.restart(entry.box, latest.stamp)
            self._follower.seed(entry, latest)
        else:
            entry.box = box
            self._replay(entry, stamp)
        return entry.track

    def _fused(self, model: PixelBox, followed: PixelBox) -> PixelBox:
        """Return the model's box blended with the followed one (``model_weight``).

        The flow moves a box by what the object did, not where its edges are; each model box
        says where they are, with the model's noise (its 32x32 grid alone: 1/64 of the frame
        per edge). Blending averages that noise over results. A followed box far from the
        model's (IoU under ``_FUSE_IOU``) has drifted: the model's box is taken as it is.
        """
        weight = self.settings.model_weight
        if weight >= 1.0 or iou_matrix([model], [followed])[0, 0] < _FUSE_IOU:
            return model
        return PixelBox(*(weight * m + (1.0 - weight) * f for m, f in
                          zip((model.x1, model.y1, model.x2, model.y2),
                              (followed.x1, followed.y1, followed.x2, followed.y2))))

    def _start(self, stamp: float, phrase: str, box: PixelBox, score: float) -> Track:
        confirmed, pending = self._honest(stamp)
        track = Track(self._next_id, phrase, box, score, TrackState.TENTATIVE, 1, confirmed,
                      confirmed, stamp)
        self._next_id += 1
        entry = Entry(track, box, BoxFilter(box, stamp), box, confirm_at=pending)
        self._entries[track.track_id] = entry
        if not self._frames or stamp > self._frames[-1].stamp:
            self._defer(entry, stamp)
        else:
            self._replay(entry, stamp)
        return entry.track

    def _honest(self, stamp: float) -> tuple[float, float | None]:
        """Return when a result for ``stamp`` counts as confirming, and when it will.

        Never after the latest frame: a result stamped ahead counts from the latest frame's
        stamp, and (unless more than ``track_max_age`` ahead) from its own once frames reach
        it (``_settle``).
        """
        if not self._frames or stamp <= self._frames[-1].stamp:
            return stamp, None
        latest = self._frames[-1].stamp
        return latest, stamp if stamp - latest <= self.settings.track_max_age else None

    def _settle(self, stamp: float) -> None:
        """Bring every confirmation up to date with the frame at ``stamp``, never past it."""
        for entry in self._entries.values():
            track = entry.track
            confirmed = track.last_confirmed
            if entry.confirm_at is not None:
                confirmed = max(confirmed, min(entry.confirm_at, stamp))
                entry.confirm_at = None if entry.confirm_at <= stamp else entry.confirm_at
            confirmed = min(confirmed, stamp)
            if confirmed != track.last_confirmed:
                entry.track = replace(track, last_confirmed=confirmed,
                                      first_confirmed=min(track.first_confirmed, confirmed))

    def _defer(self, entry: Entry, stamp: float) -> None:
        """Hold a box of a frame not seen yet; its points are seeded on the next frame."""
        entry.seed_pending = True
        entry.points, entry.anchor = entry.points[:0], None
        entry.motion.restart(entry.box, stamp)
        self._follower.record(entry, stamp)

    def _replay(self, entry: Entry, stamp: float) -> None:
        """Seed a track on the kept frame of ``stamp`` and follow it to the latest frame.

        The frame of ``stamp`` is the latest kept frame at or before it; a result older than
        every kept frame is seeded on the oldest one.
        """
        frames = list(self._frames)
        start = max(bisect.bisect_right([f.stamp for f in frames], stamp) - 1, 0)
        entry.motion.restart(entry.box, frames[start].stamp)
        self._follower.seed(entry, frames[start])
        for frame in frames[start + 1:]:
            if not entry.track.followed:
                break
            self._follower.follow(frame, [entry])

    # -- frames ----------------------------------------------------------------------------

    def _keep(self, frame: FlowFrame) -> None:
        self._frames.append(frame)
        self._follower.size = frame.size
        oldest = frame.stamp - self.settings.replay_seconds
        while len(self._frames) > 1 and self._frames[0].stamp < oldest:
            self._frames.popleft()

    def _expire(self, now: float) -> None:
        limit = self.settings.track_max_age
        for track_id in [i for i, e in self._entries.items()
                         if now - e.track.last_confirmed > limit]:
            del self._entries[track_id]


def _carried(detected: PixelBox, then: PixelBox, now: PixelBox) -> PixelBox:
    """Move a box detected when a track was at ``then`` as the track moved to ``now``."""
    scale = math.sqrt(max(now.width * now.height, 1e-9) / max(then.width * then.height, 1e-9))
    (cx, cy), (tx, ty), (nx, ny) = detected.center, then.center, now.center
    return PixelBox.from_center(cx + nx - tx, cy + ny - ty, detected.width * scale,
                                detected.height * scale)
