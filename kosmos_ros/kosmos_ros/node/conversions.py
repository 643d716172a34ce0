# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""rclpy messages: the :mod:`kosmos_ros.messages` backend, and request fields to engine inputs.

The message builders themselves are :mod:`kosmos_ros.messages`, shared with ``ground_bag``;
the functions here bind them to :data:`TYPES` (rclpy's generated classes) under the names and
calls the node has always used.
"""

from __future__ import annotations

import array
import importlib
from typing import Any, Sequence

import numpy as np

from kosmos_ros import messages
from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.depth import Lifted
from kosmos_ros.errors import RegionError

# array.array type codes of the ``dtype[]`` fields the builders fill.
_TYPECODES = {'float32': 'f', 'float64': 'd'}


class RclpyTypes:
    """:class:`kosmos_ros.messages.MessageTypes` over rclpy's generated message classes.

    ``pkg/msg/Name`` is ``pkg.msg.Name``, imported on first use. Primitive arrays are what
    the generated setters keep: ``array.array`` for float sequences, bytes for ``uint8[]``.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def message_class(self, type_name: str) -> type:
        cls = self._classes.get(type_name)
        if cls is None:
            package, kind, name = type_name.split('/')
            cls = getattr(importlib.import_module(f'{package}.{kind}'), name)
            self._classes[type_name] = cls
        return cls

    def new(self, type_name: str, **fields: Any) -> Any:
        return self.message_class(type_name)(**fields)

    def array(self, dtype: str, values: Any) -> Any:
        if dtype == 'uint8':
            return np.ascontiguousarray(values, dtype=np.uint8).tobytes()
        return array.array(_TYPECODES[dtype], [float(v) for v in values])


TYPES = RclpyTypes()


# -- engine results to messages (kosmos_ros.messages with rclpy types) ------------------------

def bbox_msg(box: PixelBox) -> Any:
    return messages.bbox_msg(TYPES, box)


def duration_msg(seconds: float) -> Any:
    return messages.duration_msg(TYPES, seconds)


def grounding_msg(result: GroundingResult, header: Any, camera: str) -> Any:
    """Return the Grounding message without positions (see :func:`apply_positions`)."""
    return messages.grounding_msg(TYPES, result, header, camera)


def apply_positions(grounding: Any, result: GroundingResult,
                    lifted: Sequence[Sequence[Lifted]] | None, note: str = '') -> None:
    """Fill each GroundedPhrase's position (:func:`kosmos_ros.messages.phrase_position`)."""
    messages.apply_positions(TYPES, grounding, result, lifted, note)


def detections_msg(result: GroundingResult, header: Any, min_score: float = 0.0) -> Any:
    """Return one Detection2D per detection: class_id = phrase, score = box score, pixels.

    The detections are :meth:`GroundingResult.detections`: not the caller's regions, at least
    ``min_score``.
    """
    return messages.detections_msg(TYPES, result, header, min_score)


def detections_3d_msg(result: GroundingResult, lifted: Sequence[Sequence[Lifted]],
                      header: Any, min_score: float = 0.0) -> Any:
    """One Detection3D per detection with 3D: class_id = phrase, score = box score, metres."""
    return messages.detections_3d_msg(TYPES, result, lifted, header, min_score)


def markers_msg(detections: Any, lifetime_s: float = 1.0) -> Any:
    """Return a labelled cube per 3D detection, replacing the previous markers."""
    return messages.markers_msg(TYPES, detections, lifetime_s)


def tracks_msg(tracks: Sequence[Any], header: Any) -> Any:
    """Return a Detection2DArray of tracks: id = track id, class_id = phrase, pixels."""
    return messages.tracks_msg(TYPES, tracks, header)


def track_states_msg(tracks: Sequence[Any], header: Any, stamp: float) -> Any:
    """Return a TrackArray: every track with its state (tracked, predicted, lost)."""
    return messages.track_states_msg(TYPES, tracks, header, stamp)


def tracks_3d_msg(tracks: Sequence[Any], lifted: Sequence[Lifted], header: Any) -> Any:
    """Return a Detection3DArray of the tracks with 3D: id = track id, metres."""
    return messages.tracks_3d_msg(TYPES, tracks, lifted, header)


def image_msg(rgb: np.ndarray, header: Any) -> Any:
    return messages.image_msg(TYPES, rgb, header)


# -- request fields to engine inputs -----------------------------------------------------------

def region_from_bbox(msg: Any, index: int = 0) -> PixelBox:
    """Turn a request region (centre and size in pixels, theta 0) into a PixelBox."""
    if msg.center.theta != 0.0:
        raise RegionError(f'region {index} is rotated (theta={msg.center.theta}); only '
                          'axis-aligned regions (theta 0) are supported')
    return PixelBox.from_center(msg.center.position.x, msg.center.position.y, msg.size_x,
                                msg.size_y)


def regions_from_bboxes(msgs: Sequence[Any]) -> tuple[PixelBox, ...]:
    return tuple(region_from_bbox(m, i) for i, m in enumerate(msgs))
