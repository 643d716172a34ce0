# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Depth for one camera: subscriptions, stamp matching and 3D lifting.

The 3D messages are built by :mod:`kosmos_ros.messages`; the settings are
:class:`kosmos_ros.depth.DepthSettings`.
"""

from __future__ import annotations

from collections import deque
import threading
from typing import Any, Sequence

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from kosmos_ros.admission import stamp_seconds
from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.depth import (closest_by_stamp, depth_from_message, DepthSettings, Intrinsics,
                              lift_box, lift_result, Lifted, without_3d)
from kosmos_ros.errors import ImageError

DEPTH_QUEUE = 10  # depth frames DDS keeps between two takes
DEPTH_BUFFER = 30  # depth frames kept for stamp matching (one second at 30 Hz)


class DepthSource:
    """The registered depth image and camera info of one camera, matched by stamp.

    Like colour frames, depth frames stay in DDS (keep last ``DEPTH_QUEUE``) on the helper
    node that no executor spins; they are taken only when a result needs 3D, and only the
    matching one is decoded.
    """

    def __init__(self, node: Any, depth_topic: str, info_topic: str, subscribe: bool = True):
        self._lock = threading.Lock()
        self._depth: deque[tuple[float, Any]] = deque(maxlen=DEPTH_BUFFER)
        self._info: Any = None  # kept across release(): the intrinsics do not change
        self._node = node
        self._topics = (depth_topic, info_topic)
        self.depth_topic = node.resolve_topic_name(depth_topic)
        self.info_topic = node.resolve_topic_name(info_topic)
        self.depth_sub: Any = None
        self.info_sub: Any = None
        self._closed = False
        if subscribe:
            self.acquire()

    def acquire(self) -> None:
        """Subscribe to the depth image and camera info (no-op when subscribed)."""
        with self._lock:
            if self.depth_sub is not None or self._closed:
                return
            no_events = SubscriptionEventCallbacks(use_default_callbacks=False)
            self.depth_sub = self._node.create_subscription(
                Image, self._topics[0], lambda msg: None,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH_QUEUE,
                           reliability=ReliabilityPolicy.BEST_EFFORT),
                event_callbacks=no_events)
            self.info_sub = self._node.create_subscription(
                CameraInfo, self._topics[1], lambda msg: None,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.BEST_EFFORT),
                event_callbacks=no_events)

    def release(self) -> None:
        """Drop both subscriptions and the buffered depth frames (they would be stale)."""
        with self._lock:
            for sub in (self.depth_sub, self.info_sub):
                if sub is not None:
                    self._node.destroy_subscription(sub)
            self.depth_sub = self.info_sub = None
            self._depth.clear()

    @staticmethod
    def _take(sub: Any) -> Any:
        if sub is None:
            return None
        with sub.handle:
            info = sub.handle.take_message(sub.msg_type, sub.raw)
        return None if info is None else info[0]

    def _drain(self) -> None:
        while (msg := self._take(self.depth_sub)) is not None:
            self._depth.append((stamp_seconds(msg), msg))
        while (msg := self._take(self.info_sub)) is not None:
            self._info = msg

    def destroy(self) -> None:
        """Release for good: later :meth:`acquire` calls do nothing."""
        with self._lock:
            self._closed = True
        self.release()

    def lift(self, stamp: float, result: GroundingResult,
             settings: DepthSettings) -> tuple[tuple[Lifted, ...], ...]:
        """Return 3D per box of every phrase (or why none) for a colour frame's stamp."""
        depth, intrinsics, reason = self._depth_at(stamp, settings)
        if depth is None:
            return without_3d(result, reason)
        return lift_result(result, depth, intrinsics, settings)

    def lift_boxes(self, stamp: float, boxes: Sequence[PixelBox], image_size: tuple[int, int],
                   settings: DepthSettings) -> list[Lifted]:
        """Return 3D (or why none) of each pixel box of a ``image_size`` colour frame."""
        if not boxes:
            return []
        depth, intrinsics, reason = self._depth_at(stamp, settings)
        if depth is None:
            return [Lifted(None, reason)] * len(boxes)
        return [lift_box(box, depth, intrinsics, image_size, settings.depth_min,
                         settings.depth_max, settings.depth_inner_fraction) for box in boxes]

    def _depth_at(self, stamp: float, settings: DepthSettings) -> tuple[Any, Any, str]:
        """Return the depth (metres) and intrinsics matching ``stamp``, or None and why not."""
        with self._lock:
            self._drain()
            candidates, info = list(self._depth), self._info
        if info is None:
            return None, None, f'no camera_info received on {self.info_topic}'
        msg, reason = closest_by_stamp(stamp, candidates, settings.depth_tolerance)
        if msg is None:
            return None, None, f'{reason} ({self.depth_topic})'
        try:
            return depth_from_message(msg), Intrinsics.from_camera_info(info), ''
        except ImageError as exc:
            return None, None, str(exc)
