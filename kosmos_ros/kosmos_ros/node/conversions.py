# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Engine results to ROS messages and request fields to engine inputs."""

from __future__ import annotations

from typing import Sequence

from builtin_interfaces.msg import Duration
from kosmos_ros_interfaces.msg import GroundedPhrase as GroundedPhraseMsg
from kosmos_ros_interfaces.msg import Grounding
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.errors import RegionError


def bbox_msg(box: PixelBox) -> BoundingBox2D:
    msg = BoundingBox2D()
    msg.center.position.x, msg.center.position.y = box.center
    msg.center.theta = 0.0
    msg.size_x, msg.size_y = float(box.width), float(box.height)
    return msg


def region_from_bbox(msg: BoundingBox2D, index: int = 0) -> PixelBox:
    """Turn a request region (centre and size in pixels, theta 0) into a PixelBox."""
    if msg.center.theta != 0.0:
        raise RegionError(f'region {index} is rotated (theta={msg.center.theta}); only '
                          'axis-aligned regions (theta 0) are supported')
    return PixelBox.from_center(msg.center.position.x, msg.center.position.y, msg.size_x,
                                msg.size_y)


def regions_from_bboxes(msgs: Sequence[BoundingBox2D]) -> tuple[PixelBox, ...]:
    return tuple(region_from_bbox(m, i) for i, m in enumerate(msgs))


def duration_msg(seconds: float) -> Duration:
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def grounding_msg(result: GroundingResult, header: Header, camera: str) -> Grounding:
    msg = Grounding()
    msg.header = header
    msg.camera = camera
    msg.task = int(result.task)
    msg.prompt = result.prompt
    msg.text = result.text
    msg.answer = result.answer
    msg.image_width, msg.image_height = (int(v) for v in result.image_size)
    msg.inference_time = duration_msg(result.timings.total)
    for phrase in result.phrases:
        item = GroundedPhraseMsg()
        item.text = phrase.text
        item.start, item.end = int(phrase.start), int(phrase.end)
        item.boxes = [bbox_msg(b.pixels) for b in phrase.boxes]
        item.box_scores = [float(b.score) for b in phrase.boxes]
        item.score = float(phrase.score)
        item.given = phrase.given
        msg.phrases.append(item)
    return msg


def detections_msg(result: GroundingResult, header: Header,
                   min_score: float = 0.0) -> Detection2DArray:
    """Return one Detection2D per detection: class_id = phrase, score = box score, pixels.

    The detections are :meth:`GroundingResult.detections`: not the caller's regions, at least
    ``min_score``.
    """
    array = Detection2DArray()
    array.header = header
    for p_index, b_index, phrase, box in result.detections(min_score):
        det = Detection2D()
        det.header = header
        det.id = f'{p_index}.{b_index}'
        det.bbox = bbox_msg(box.pixels)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis = ObjectHypothesis(class_id=phrase.text, score=float(box.score))
        det.results.append(hypothesis)
        array.detections.append(det)
    return array


def image_msg(rgb: np.ndarray, header: Header) -> Image:
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg
