# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Depth for one camera: subscriptions, stamp matching, 3D lifting and 3D messages."""

from __future__ import annotations

from collections import deque
import copy
from dataclasses import dataclass
import threading
from typing import Any

from geometry_msgs.msg import Point
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)
from visualization_msgs.msg import Marker, MarkerArray

from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.depth import closest_by_stamp, depth_from_message, Intrinsics, lift_box, Lifted
from kosmos_ros.errors import ImageError

DEPTH_QUEUE = 10  # depth frames DDS keeps between two takes
DEPTH_BUFFER = 30  # depth frames kept for stamp matching (one second at 30 Hz)


@dataclass(frozen=True)
class DepthSettings:
    tolerance: float
    min_depth: float
    max_depth: float
    inner_fraction: float


def _stamp(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


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
            self._depth.append((_stamp(msg), msg))
        while (msg := self._take(self.info_sub)) is not None:
            self._info = msg

    def destroy(self) -> None:
        """Release for good: later :meth:`acquire` calls do nothing."""
        with self._lock:
            self._closed = True
        self.release()

    def lift(self, stamp: float, result: GroundingResult,
             settings: DepthSettings) -> list[list[Lifted]]:
        """Return 3D per box of every phrase (or why none) for a colour frame's stamp."""
        with self._lock:
            self._drain()
            candidates, info = list(self._depth), self._info
        if info is None:
            return _without(result, f'no camera_info received on {self.info_topic}')
        msg, reason = closest_by_stamp(stamp, candidates, settings.tolerance)
        if msg is None:
            return _without(result, f'{reason} ({self.depth_topic})')
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            depth = depth_from_message(msg)
        except ImageError as exc:
            return _without(result, str(exc))
        lifted = [[lift_box(b.pixels, depth, intrinsics, result.image_size, settings.min_depth,
                            settings.max_depth, settings.inner_fraction) for b in p.boxes]
                  for p in result.phrases]
        return lifted


def _without(result: GroundingResult, reason: str) -> list[list[Lifted]]:
    return [[Lifted(None, reason)] * len(p.boxes) for p in result.phrases]


def apply_positions(grounding: Any, result: GroundingResult,
                    lifted: list[list[Lifted]] | None, note: str = '') -> None:
    """Fill each GroundedPhrase's position from its best box that has 3D, or say why not."""
    for item, phrase, boxes in zip(grounding.phrases, result.phrases,
                                   lifted or [[] for _ in result.phrases]):
        ranked = sorted(zip(phrase.boxes, boxes), key=lambda pair: -pair[0].score)
        best = next((lb.box for _, lb in ranked if lb.box is not None), None)
        if best is not None:
            item.has_position = True
            item.position = Point(x=best.center[0], y=best.center[1], z=best.center[2])
            item.position_note = ''
        elif not phrase.boxes:
            item.position_note = 'the phrase has no box'
        else:
            reasons = [lb.reason for lb in boxes if lb.reason]
            item.position_note = reasons[0] if reasons else note


def detections_3d_msg(result: GroundingResult, lifted: list[list[Lifted]],
                      header: Any, min_score: float = 0.0) -> Detection3DArray:
    """One Detection3D per detection with 3D: class_id = phrase, score = box score, metres."""
    array = Detection3DArray()
    array.header = header
    for p_index, b_index, phrase, box in result.detections(min_score):
        lb = lifted[p_index][b_index]
        if lb.box is not None:
            det = Detection3D()
            det.header = header
            det.id = f'{p_index}.{b_index}'
            bbox = BoundingBox3D()
            bbox.center.position.x, bbox.center.position.y, bbox.center.position.z = \
                lb.box.center
            bbox.center.orientation.w = 1.0
            bbox.size.x, bbox.size.y, bbox.size.z = lb.box.size
            det.bbox = bbox
            hypothesis = ObjectHypothesisWithPose()
            hypothesis.hypothesis = ObjectHypothesis(class_id=phrase.text,
                                                     score=float(box.score))
            hypothesis.pose.pose = copy.deepcopy(bbox.center)
            det.results.append(hypothesis)
            array.detections.append(det)
    return array


def markers_msg(detections: Detection3DArray, lifetime_s: float = 1.0) -> MarkerArray:
    """Return a labelled cube per 3D detection, replacing the previous markers."""
    markers = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header = detections.header
    clear.ns = 'kosmos_grounding'
    markers.markers.append(clear)
    for i, det in enumerate(detections.detections):
        cube = Marker(type=Marker.CUBE, action=Marker.ADD, id=2 * i, ns='kosmos_grounding')
        cube.header = detections.header
        cube.pose = copy.deepcopy(det.bbox.center)
        cube.scale.x = max(det.bbox.size.x, 0.01)
        cube.scale.y = max(det.bbox.size.y, 0.01)
        cube.scale.z = max(det.bbox.size.z, 0.01)
        cube.color.r, cube.color.g, cube.color.b, cube.color.a = 0.1, 0.8, 0.3, 0.4
        cube.lifetime.sec = int(lifetime_s)
        cube.lifetime.nanosec = int((lifetime_s % 1) * 1e9)
        label = Marker(type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, id=2 * i + 1,
                       ns='kosmos_grounding')
        label.header = detections.header
        label.pose = copy.deepcopy(det.bbox.center)
        label.pose.position.y -= det.bbox.size.y / 2 + 0.05
        label.scale.z = 0.08
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        hypothesis = det.results[0].hypothesis
        label.text = f'{hypothesis.class_id} {hypothesis.score:.2f}'
        label.lifetime = cube.lifetime
        markers.markers.extend([cube, label])
    return markers
