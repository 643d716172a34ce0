#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The reference node of the node benchmarks: KOSMOS-2 the way its model card runs it.

A plain rclpy node, written the way a ROS user would wrap the model card: the image callback
converts every message with ``rosbags.image.message_to_cvimage(msg, 'rgb8')`` (cv_bridge's
job) and then either

- runs ``processor(...)`` + ``model.generate`` + ``post_process_generation`` in the callback and
  publishes a ``Detection2DArray`` (``inline: true``, the node-overhead benchmark), or
- keeps the converted frame, and a timer at ``rate_hz`` grounds the newest one (``rate_hz: 0``:
  nothing runs until asked, the on-demand mode of the idle-cost benchmark).

It records, per grounded frame, when the callback started, how long the processor,
``model.generate`` and the post-processing took (their sum is its "inference time", the
counterpart of the project's ``Grounding.inference_time``) and when the detections were
published, and reports the frames it received on
``/diagnostics`` (key ``frames in``), like the project's node.

Run: python benchmarks/reference_node.py --ros-args -p model:=DIR [-p rate_hz:=2.0]
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.image import message_to_cvimage
from sensor_msgs.msg import Image
import torch
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

PROMPT = '<grounding>An image of'


class ReferenceNode(Node):
    """Model-card KOSMOS-2 behind an image subscription (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__('reference_grounding', **kwargs)
        self.declare_parameter('model', '')
        self.declare_parameter('rate_hz', 0.0)
        self.declare_parameter('inline', False)
        self.declare_parameter('max_new_tokens', 8)
        self.declare_parameter('topic', 'camera/image_raw')
        from transformers import AutoModelForImageTextToText, AutoProcessor
        path = self.get_parameter('model').value
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
        self.model.eval()
        self.max_new_tokens = int(self.get_parameter('max_new_tokens').value)
        self.inline = bool(self.get_parameter('inline').value)
        self.records: list[dict[str, float]] = []
        self.frames_in = 0
        self._latest: tuple[Any, Any, int] | None = None
        self._lock = threading.Lock()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
        self.publisher = self.create_publisher(Detection2DArray, 'camera/detections', 10)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, self.get_parameter('topic').value, self._on_image, qos)
        rate = float(self.get_parameter('rate_hz').value)
        if rate > 0 and not self.inline:
            self.create_timer(1.0 / rate, self._on_timer)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_image(self, msg: Image) -> None:
        arrived = time.time_ns()
        rgb = message_to_cvimage(msg, 'rgb8')
        self.frames_in += 1
        if self.inline:
            self._ground(msg, rgb, arrived)
        else:
            with self._lock:
                self._latest = (msg, rgb, arrived)

    def _on_timer(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            self._ground(*latest)

    def _ground(self, msg: Image, rgb: Any, arrived: int) -> None:
        t0 = time.perf_counter()
        inputs = self.processor(text=PROMPT, images=rgb, return_tensors='pt')
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        t2 = time.perf_counter()
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
        _, entities = self.processor.post_process_generation(text)
        t3 = time.perf_counter()
        height, width = rgb.shape[:2]
        array = Detection2DArray(header=msg.header)
        for phrase, _, boxes in entities:
            for x1, y1, x2, y2 in boxes:
                det = Detection2D(header=msg.header)
                det.bbox = BoundingBox2D()
                det.bbox.center.position.x = (x1 + x2) / 2 * width
                det.bbox.center.position.y = (y1 + y2) / 2 * height
                det.bbox.size_x, det.bbox.size_y = (x2 - x1) * width, (y2 - y1) * height
                det.results.append(ObjectHypothesisWithPose(
                    hypothesis=ObjectHypothesis(class_id=phrase, score=1.0)))
                array.detections.append(det)
        self.publisher.publish(array)
        published = time.time_ns()
        stamp = msg.header.stamp
        self.records.append({'stamp_ns': stamp.sec * 10**9 + stamp.nanosec,
                             'arrived_ns': arrived, 'published_ns': published,
                             'model_s': t2 - t1, 'preprocess_s': t1 - t0,
                             'inference_s': t3 - t0})

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: camera camera',
                                  hardware_id='camera', level=DiagnosticStatus.OK, message='ok')
        status.values = [KeyValue(key='frames in', value=str(self.frames_in)),
                         KeyValue(key='inferences', value=str(len(self.records)))]
        array.status.append(status)
        self.diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    from rclpy.executors import ExternalShutdownException
    rclpy.init(args=sys.argv if args is None else args)
    node = ReferenceNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
