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
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)
from visualization_msgs.msg import Marker, MarkerArray

from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.depth import closest_by_stamp, depth_from_message, Intrinsics, lift_box, Lifted
from kosmos_ros.errors import ImageError

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
    """The registered depth image and camera info of one camera, matched by stamp."""

    def __init__(self, node: Any, camera: str, depth_topic: str, info_topic: str,
                 callback_group: Any):
        self.camera = camera
        self._lock = threading.Lock()
        self._depth: deque[tuple[float, Any]] = deque(maxlen=DEPTH_BUFFER)
        self._info: Any = None
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs = [
            node.create_subscription(Image, depth_topic, self._on_depth, qos,
                                     callback_group=callback_group),
            node.create_subscription(CameraInfo, info_topic, self._on_info, qos,
                                     callback_group=callback_group),
        ]
        self._node = node

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._depth.append((_stamp(msg), msg))

    def _on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def destroy(self) -> None:
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []

    def lift(self, stamp: float, result: GroundingResult,
             settings: DepthSettings) -> tuple[list[list[Lifted]], str]:
        """Return 3D per box of every phrase (or why none) for a colour frame's stamp."""
        with self._lock:
            candidates, info = list(self._depth), self._info
        none = [[Lifted(None)] * len(p.boxes) for p in result.phrases]
        if info is None:
            return none, 'no camera_info received'
        msg, reason = closest_by_stamp(stamp, candidates, settings.tolerance)
        if msg is None:
            return none, reason
        try:
            intrinsics = Intrinsics.from_camera_info(info)
            depth = depth_from_message(msg)
        except ImageError as exc:
            return none, str(exc)
        lifted = [[lift_box(b.pixels, depth, intrinsics, result.image_size, settings.min_depth,
                            settings.max_depth, settings.inner_fraction) for b in p.boxes]
                  for p in result.phrases]
        return lifted, ''


def phrase_positions(result: GroundingResult, lifted: list[list[Lifted]]
                     ) -> list[Point | None]:
    """Return the 3D centre of each phrase's best box that has 3D, or None."""
    out: list[Point | None] = []
    for phrase, boxes in zip(result.phrases, lifted):
        ranked = sorted(zip(phrase.boxes, boxes), key=lambda pair: -pair[0].score)
        point = next((Point(x=lb.box.center[0], y=lb.box.center[1], z=lb.box.center[2])
                      for _, lb in ranked if lb.box is not None), None)
        out.append(point)
    return out


def detections_3d_msg(result: GroundingResult, lifted: list[list[Lifted]],
                      header: Any) -> Detection3DArray:
    """One Detection3D per box with 3D: class_id = phrase, score = box score, metres."""
    array = Detection3DArray()
    array.header = header
    for p_index, (phrase, boxes) in enumerate(zip(result.phrases, lifted)):
        for b_index, (box, lb) in enumerate(zip(phrase.boxes, boxes)):
            if lb.box is None:
                continue
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
