# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Depth for ``ground_bag``: lift the boxes of grounded frames to 3D with a bag's depth images.

Each grounded frame's boxes are lifted with the depth image closest to it in stamp
(:func:`kosmos_ros.depth.lift_result`, the node's lifting), with the depth and camera_info
topics paired to its image topic (:mod:`kosmos_ros.bag.pairing`). The depth image must be
registered to the colour image (same optical frame; ``16UC1`` in millimetres or ``32FC1`` in
metres) and the images rectified, as :mod:`kosmos_ros.depth` says.

Matching: a first pass over the depth topic indexes the header stamps (and bag times) of its
messages; for each grounded frame the depth message closest in header stamp is looked up in
that index and must lie within the tolerance; only then is that one message read back (a
``start``/``stop`` window of the bag), so memory stays bounded however long the bag is. The
camera_info in effect is the latest one stamped at or before the colour image (the first one
when all are later). A frame without a match, or whose boxes have too few valid depth pixels,
gets no 3D and a counted reason; nothing is made up.

With ``--track``, the boxes of each tracked frame's tracks are lifted the same way
(:meth:`Lifter.lift_boxes`: the same depth lookup and :func:`kosmos_ros.depth.lift_box`, one
:class:`~kosmos_ros.depth.Lifted` per track), for ``<base>/tracks_3d``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from kosmos_ros.admission import stamp_nanoseconds
from kosmos_ros.bag.pairing import DepthPairing
from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.depth import (closest_by_stamp, depth_from_message, DepthSettings, Intrinsics,
                              lift_box, lift_result, Lifted, without_3d)
from kosmos_ros.errors import ImageError


def stamp_ns(msg: Any, bag_time_ns: int) -> int:
    """Return a message's (or header's) stamp in ns; its bag time when it is unstamped (0)."""
    return stamp_nanoseconds(msg) or bag_time_ns


class DepthStream:
    """The depth images of one topic: stamps indexed in one pass, images read on demand."""

    def __init__(self, reader: Any, topic: str):
        from rosbags.highlevel import AnyReaderError

        self.reader = reader
        self.topic = topic
        self.connections = [c for c in reader.connections if c.topic == topic]
        entries = []
        self.unreadable = 0
        self.frame_ids: Counter = Counter()
        for conn, bag_time, raw in reader.messages(connections=self.connections):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except AnyReaderError:
                self.unreadable += 1
                continue
            entries.append((stamp_ns(msg, bag_time), bag_time))
            self.frame_ids[str(msg.header.frame_id)] += 1
        entries.sort()
        self.stamps = [s for s, _ in entries]
        self.bag_times = [t for _, t in entries]
        self._cached: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.stamps)

    def closest(self, stamp: int, tolerance: float) -> tuple[int | None, str]:
        """Return the index of the nearest depth image within ``tolerance``, or why none."""
        if not self.stamps:
            return None, f'no depth image on {self.topic}'
        i = bisect_left(self.stamps, stamp)
        # Stamps relative to the colour image's, so that float seconds lose no precision.
        near = [((self.stamps[k] - stamp) * 1e-9, k) for k in (i - 1, i)
                if 0 <= k < len(self.stamps)]
        return closest_by_stamp(0.0, near, tolerance)

    def depth(self, index: int) -> Any:
        """Return the depth image ``index`` in metres (the last one is kept); ImageError."""
        if self._cached is not None and self._cached[0] == index:
            value = self._cached[1]
        else:
            value = self._read(index)
            self._cached = (index, value)
        if isinstance(value, ImageError):
            raise value
        return value

    def _read(self, index: int) -> Any:
        from rosbags.highlevel import AnyReaderError

        stamp, bag_time = self.stamps[index], self.bag_times[index]
        for conn, t, raw in self.reader.messages(connections=self.connections, start=bag_time,
                                                 stop=bag_time + 1):
            try:
                msg = self.reader.deserialize(raw, conn.msgtype)
            except AnyReaderError:
                continue
            if stamp_ns(msg, t) == stamp:
                try:
                    return depth_from_message(msg)
                except ImageError as exc:
                    return exc
        return ImageError(f'depth image at bag time {bag_time} ns could not be read again')


class CameraInfoTrack:
    """The intrinsics of one camera_info topic over time (only their changes are kept)."""

    def __init__(self, reader: Any, topic: str):
        from rosbags.highlevel import AnyReaderError

        self.topic = topic
        changes: list[tuple[int, Intrinsics | None, str]] = []
        connections = [c for c in reader.connections if c.topic == topic]
        for conn, bag_time, raw in reader.messages(connections=connections):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except AnyReaderError as exc:
                changes.append((bag_time, None, f'cannot deserialize {topic}: {exc}'))
                continue
            try:
                intrinsics, reason = Intrinsics.from_camera_info(msg), ''
            except ImageError as exc:
                intrinsics, reason = None, f'{topic}: {exc}'
            changes.append((stamp_ns(msg, bag_time), intrinsics, reason))
        changes.sort(key=lambda c: c[0])
        self.changes = [c for i, c in enumerate(changes) if i == 0 or c[1:] != changes[i - 1][1:]]
        self._stamps = [c[0] for c in self.changes]

    def at(self, stamp: int) -> tuple[Intrinsics | None, str]:
        """Return the intrinsics in effect at ``stamp`` (ns), or why there are none."""
        if not self.changes:
            return None, f'no camera_info on {self.topic}'
        i = bisect_left(self._stamps, stamp + 1) - 1
        _, intrinsics, reason = self.changes[max(i, 0)]
        return intrinsics, reason


@dataclass
class DepthStats:
    """Per image topic: frames and boxes with 3D, and why others have none."""

    frames_3d: int = 0
    boxes_3d: int = 0
    boxes_without: int = 0
    without: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames_without(self) -> int:
        return sum(self.without.values())

    def lines(self) -> list[str]:
        out = [f'  frames: {self.frames_3d} with 3D, {self.frames_without} without; boxes: '
               f'{self.boxes_3d} with 3D, {self.boxes_without} without']
        out += [f'  no 3D {count}x: {reason}' for reason, count in self.without.most_common()]
        out += [f'  warning: {warning}' for warning in self.warnings]
        return out


@dataclass(frozen=True)
class FrameLift:
    """The 3D of one frame's boxes (per phrase, per box) and, when it has none, why."""

    lifted: tuple[tuple[Lifted, ...], ...]
    reason: str = ''


class Lifter:
    """Lift the boxes of grounded frames of one image topic with its depth and camera_info."""

    def __init__(self, pairing: DepthPairing, depth: DepthStream, info: CameraInfoTrack,
                 settings: DepthSettings, stats: DepthStats | None = None):
        self.pairing = pairing
        self.depth = depth
        self.info = info
        self.settings = settings
        self.stats = stats if stats is not None else DepthStats()
        self.frame_warning = ''
        self._frames_checked = False

    def _check_frame(self, frame_id: str) -> None:
        """Note once when the depth images are in another frame than the colour images."""
        if self._frames_checked or not frame_id:
            return
        self._frames_checked = True
        others = sorted(f for f in self.depth.frame_ids if f != frame_id)
        if others:
            self.frame_warning = (f'depth frame_id {others[0]!r} differs from the colour '
                                  f'frame_id {frame_id!r}: is {self.depth.topic} registered '
                                  'to the colour image?')
            self.stats.warnings.append(self.frame_warning)

    def lift(self, result: GroundingResult, stamp: int, frame_id: str = '') -> FrameLift:
        """Return the 3D of every box of ``result`` (a frame stamped ``stamp`` ns)."""
        self._check_frame(frame_id)
        s = self.settings
        boxes = sum(len(p.boxes) for p in result.phrases)
        depth, intrinsics, note, counted = self._frame(boxes > 0, stamp)
        if depth is None:
            lifted = without_3d(result, note)
            self.stats.without[counted] += 1
            self.stats.boxes_without += boxes
            return FrameLift(lifted, note)
        lifted = lift_result(result, depth, intrinsics, s)
        good = sum(1 for p in lifted for b in p if b.box is not None)
        self.stats.boxes_3d += good
        self.stats.boxes_without += boxes - good
        if good:
            self.stats.frames_3d += 1
            return FrameLift(lifted)
        reason = (f'too few valid depth pixels in every box (zero, NaN or outside '
                  f'{s.depth_min:g} to {s.depth_max:g} m)')
        self.stats.without[reason] += 1
        return FrameLift(lifted, reason)

    def lift_boxes(self, boxes: Sequence[PixelBox], image_size: tuple[int, int], stamp: int,
                   frame_id: str = '') -> tuple[Lifted, ...]:
        """Return the 3D (or why none) of each pixel box of a frame stamped ``stamp`` ns.

        ``image_size`` is the (width, height) of the colour frame the boxes lie on. The depth
        image and intrinsics are found as for :meth:`lift` (the same lookup, the same
        tolerance); the boxes are the tracks of ``ground_bag --track``, so nothing is counted
        in :attr:`stats`, which describes the grounded frames.
        """
        self._check_frame(frame_id)
        s = self.settings
        depth, intrinsics, note, _ = self._frame(bool(boxes), stamp)
        if depth is None:
            return tuple(Lifted(None, note) for _ in boxes)
        return tuple(lift_box(box, depth, intrinsics, image_size, s.depth_min, s.depth_max,
                              s.depth_inner_fraction) for box in boxes)

    def _frame(self, has_boxes: bool, stamp: int) -> tuple[Any, Any, str, str]:
        """Return (depth in metres, intrinsics, '', ''), or (None, None, note, counted reason).

        The note is the exact reason (it goes into the phrases' ``position_note``); the
        counted reason groups frames in the summary (stamp gaps without their milliseconds).
        """
        if not has_boxes:
            return None, None, 'no box to lift', 'no box to lift'
        index, reason = self.depth.closest(stamp, self.settings.depth_tolerance)
        if index is None:
            counted = (f'no depth image within {self.settings.depth_tolerance * 1e3:g} ms of the '
                       'colour image' if self.depth.stamps else reason)
            return None, None, reason, counted
        intrinsics, reason = self.info.at(stamp)
        if intrinsics is None:
            return None, None, reason, reason
        try:
            return self.depth.depth(index), intrinsics, '', ''
        except ImageError as exc:
            return None, None, f'depth image: {exc}', f'depth image: {exc}'


def make_lifters(reader: Any, pairings: dict[str, DepthPairing], settings: DepthSettings,
                 stats: dict[str, DepthStats] | None = None) -> dict[str, Lifter]:
    """Index the depth and camera_info topics of the enabled pairings (one pass each).

    ``stats`` (per image topic) receives the counts of each lifter when given.
    """
    streams: dict[str, DepthStream] = {}
    tracks: dict[str, CameraInfoTrack] = {}
    lifters = {}
    for topic, pairing in pairings.items():
        if not pairing.enabled:
            continue
        if pairing.depth_topic not in streams:
            streams[pairing.depth_topic] = DepthStream(reader, pairing.depth_topic)
        if pairing.info_topic not in tracks:
            tracks[pairing.info_topic] = CameraInfoTrack(reader, pairing.info_topic)
        lifters[topic] = Lifter(pairing, streams[pairing.depth_topic],
                                tracks[pairing.info_topic], settings,
                                None if stats is None else stats.get(topic))
    return lifters
