# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A ``rosbags`` typestore with the project's messages, and engine results as bag messages.

The typestore is the ROS 2 base store of the running distro (``ROS_DISTRO``; Jazzy by
default) plus ``kosmos_ros_interfaces/msg/{GroundedPhrase,Grounding}`` and the
``vision_msgs`` 4.x detection messages, parsed from their ``.msg`` files: first those of the
installed packages (``share/<package>/msg`` found through the ament index), else the source
tree (``kosmos_ros_interfaces/msg`` and ``test_support/vision_msgs/msg``). Nothing here
imports rclpy.

The message builders mirror :mod:`kosmos_ros.node.conversions` and
:mod:`kosmos_ros.node.spatial` field for field, so a bag written offline holds what the node
would have published: ``Grounding`` (with each phrase's 3D position when its boxes were lifted
with depth), ``Detection2DArray`` and ``Detection3DArray``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kosmos_ros.bag import BagError
from kosmos_ros.datatypes import GroundedPhrase, GroundingResult, PixelBox
from kosmos_ros.depth import Lifted

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
GROUNDING = 'kosmos_ros_interfaces/msg/Grounding'
DETECTION_2D_ARRAY = 'vision_msgs/msg/Detection2DArray'
DETECTION_3D_ARRAY = 'vision_msgs/msg/Detection3DArray'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

# The messages registered, per package, in dependency order.
MESSAGES = {
    'vision_msgs': ('Point2D', 'Pose2D', 'BoundingBox2D', 'ObjectHypothesis',
                    'ObjectHypothesisWithPose', 'Detection2D', 'Detection2DArray',
                    'BoundingBox3D', 'Detection3D', 'Detection3DArray'),
    'kosmos_ros_interfaces': ('GroundedPhrase', 'Grounding'),
}
_REPOSITORY = Path(__file__).resolve().parents[3]
SOURCE_FOLDERS = {
    'vision_msgs': _REPOSITORY / 'test_support' / 'vision_msgs' / 'msg',
    'kosmos_ros_interfaces': _REPOSITORY / 'kosmos_ros_interfaces' / 'msg',
}


def _installed_folder(package: str) -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(package)) / 'msg'
    except (ImportError, LookupError, ValueError):
        return None


def find_message_folder(package: str) -> Path:
    """Return the folder holding the ``.msg`` files of ``package`` that the store needs.

    The installed package (ament index) wins over the source tree; raises BagError naming
    every place looked in when neither holds all the files.
    """
    needed = [f'{name}.msg' for name in MESSAGES[package]]
    tried = []
    for folder in (_installed_folder(package), SOURCE_FOLDERS[package]):
        if folder is None:
            continue
        tried.append(str(folder))
        if all((folder / name).is_file() for name in needed):
            return folder
    raise BagError(f'message definitions of {package} ({", ".join(needed)}) not found; '
                   f'looked in: {", ".join(tried) or "nothing (no ament index)"}; install '
                   f'{package} or run from the kosmos_ros source tree')


def message_definitions() -> dict[str, str]:
    """Return ``{'pkg/msg/Name': msg text}`` for every registered project message."""
    definitions = {}
    for package, names in MESSAGES.items():
        folder = find_message_folder(package)
        for name in names:
            definitions[f'{package}/msg/{name}'] = (folder / f'{name}.msg').read_text()
    return definitions


def _base_store(distro: str) -> Any:
    from rosbags.typesys import Stores
    return getattr(Stores, f'ROS2_{distro.upper()}', Stores.ROS2_JAZZY)


@functools.lru_cache(maxsize=4)
def project_typestore(distro: str | None = None) -> Any:
    """Return the typestore of ``distro`` (default ``$ROS_DISTRO`` or jazzy) with our types.

    The store is shared (cached): treat it as read-only.
    """
    from rosbags.typesys import get_types_from_msg, get_typestore

    store = get_typestore(_base_store(distro or os.environ.get('ROS_DISTRO') or 'jazzy'))
    types: dict[str, Any] = {}
    for name, text in message_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


# -- engine results as typestore messages ------------------------------------------------------

def _type(store: Any, name: str) -> Any:
    return store.types[name]


def time_msg(store: Any, sec: int, nanosec: int) -> Any:
    return _type(store, 'builtin_interfaces/msg/Time')(sec=int(sec), nanosec=int(nanosec))


def header_msg(store: Any, header: Any) -> Any:
    """Copy a header (rclpy, rosbags or any object with its fields) into ``store``'s type."""
    return _type(store, 'std_msgs/msg/Header')(
        stamp=time_msg(store, header.stamp.sec, header.stamp.nanosec),
        frame_id=str(header.frame_id))


def duration_msg(store: Any, seconds: float) -> Any:
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return _type(store, 'builtin_interfaces/msg/Duration')(
        sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def bbox_msg(store: Any, box: PixelBox) -> Any:
    """Return a vision_msgs/BoundingBox2D: centre and size in pixels, theta 0."""
    cx, cy = box.center
    center = _type(store, 'vision_msgs/msg/Pose2D')(
        position=_type(store, 'vision_msgs/msg/Point2D')(x=float(cx), y=float(cy)), theta=0.0)
    return _type(store, 'vision_msgs/msg/BoundingBox2D')(
        center=center, size_x=float(box.width), size_y=float(box.height))


def _pose(store: Any, position: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    """Return a geometry_msgs/Pose at ``position`` with the identity orientation."""
    x, y, z = (float(v) for v in position)
    return _type(store, 'geometry_msgs/msg/Pose')(
        position=_type(store, 'geometry_msgs/msg/Point')(x=x, y=y, z=z),
        orientation=_type(store, 'geometry_msgs/msg/Quaternion')(x=0.0, y=0.0, z=0.0, w=1.0))


def _identity_pose(store: Any) -> Any:
    return _type(store, 'geometry_msgs/msg/PoseWithCovariance')(
        pose=_pose(store), covariance=np.zeros(36, dtype=np.float64))


NO_BOX_NOTE = 'the phrase has no box'


def phrase_position(phrase: GroundedPhrase, lifted: Sequence[Lifted] | None
                    ) -> tuple[tuple[float, float, float] | None, str]:
    """Return the 3D centre of the phrase's best-scoring box that has 3D, or why there is none.

    ``lifted`` holds one :class:`~kosmos_ros.depth.Lifted` per box of the phrase, or is None
    when the camera has no depth (no position and no note, as without depth). Without a
    position, the note is the reason of the best-scoring box.
    """
    if lifted is None:
        return None, ''
    if len(lifted) != len(phrase.boxes):
        raise ValueError(f'phrase {phrase.text!r} has {len(phrase.boxes)} boxes but '
                         f'{len(lifted)} lifted boxes')
    if not phrase.boxes:
        return None, NO_BOX_NOTE
    ranked = sorted(zip(phrase.boxes, lifted), key=lambda pair: -pair[0].score)
    for _, item in ranked:
        if item.box is not None:
            return tuple(float(v) for v in item.box.center), ''
    return None, ranked[0][1].reason or 'no 3D for the box'


def _check_lifted(result: GroundingResult, lifted: Sequence[Sequence[Lifted]] | None) -> None:
    if lifted is not None and len(lifted) != len(result.phrases):
        raise ValueError(f'{len(lifted)} lifted phrases for {len(result.phrases)} phrases')


def grounding_msg(store: Any, result: GroundingResult, header: Any, camera: str,
                  lifted: Sequence[Sequence[Lifted]] | None = None) -> Any:
    """Return a kosmos_ros_interfaces/Grounding with the source header, as the node does.

    ``lifted`` (per phrase, one :class:`~kosmos_ros.depth.Lifted` per box) fills each phrase's
    ``has_position``/``position``/``position_note`` (see :func:`phrase_position`); without it
    no phrase has a position and the notes are empty.
    """
    _check_lifted(result, lifted)
    phrase_type = _type(store, 'kosmos_ros_interfaces/msg/GroundedPhrase')
    point_type = _type(store, 'geometry_msgs/msg/Point')
    phrases = []
    for index, phrase in enumerate(result.phrases):
        position, note = phrase_position(phrase, None if lifted is None else lifted[index])
        x, y, z = position or (0.0, 0.0, 0.0)
        phrases.append(phrase_type(
            text=phrase.text, start=int(phrase.start), end=int(phrase.end),
            boxes=[bbox_msg(store, b.pixels) for b in phrase.boxes],
            box_scores=np.array([b.score for b in phrase.boxes], dtype=np.float32),
            score=float(phrase.score), given=phrase.given, has_position=position is not None,
            position=point_type(x=x, y=y, z=z), position_note=note))
    width, height = (int(v) for v in result.image_size)
    return _type(store, GROUNDING)(
        header=header_msg(store, header), camera=camera, task=int(result.task),
        prompt=result.prompt, text=result.text, answer=result.answer, phrases=phrases,
        image_width=width, image_height=height,
        inference_time=duration_msg(store, result.timings.total))


def detections_msg(store: Any, result: GroundingResult, header: Any,
                   min_score: float = 0.0) -> Any:
    """Return a vision_msgs/Detection2DArray: one Detection2D per detection, class_id = phrase.

    The detections are :meth:`GroundingResult.detections` (not the caller's regions, at least
    ``min_score``), as the node's.
    """
    hypothesis_type = _type(store, 'vision_msgs/msg/ObjectHypothesis')
    with_pose_type = _type(store, 'vision_msgs/msg/ObjectHypothesisWithPose')
    detection_type = _type(store, 'vision_msgs/msg/Detection2D')
    detections = []
    for p_index, b_index, phrase, box in result.detections(min_score):
        hypothesis = with_pose_type(
            hypothesis=hypothesis_type(class_id=phrase.text, score=float(box.score)),
            pose=_identity_pose(store))
        detections.append(detection_type(
            header=header_msg(store, header), results=[hypothesis],
            bbox=bbox_msg(store, box.pixels), id=f'{p_index}.{b_index}'))
    return _type(store, DETECTION_2D_ARRAY)(header=header_msg(store, header),
                                            detections=detections)


def detections_3d_msg(store: Any, result: GroundingResult,
                      lifted: Sequence[Sequence[Lifted]], header: Any,
                      min_score: float = 0.0) -> Any:
    """Return a vision_msgs/Detection3DArray: one Detection3D per box that has 3D.

    As the node's: ``id`` = ``phrase.box`` index, ``class_id`` = phrase, ``score`` = box score,
    ``bbox`` centre and size in metres in the camera's optical frame (orientation identity),
    the hypothesis pose = the box centre, every header = the source image's header.
    """
    _check_lifted(result, lifted)
    types = store.types
    hypothesis_type = types['vision_msgs/msg/ObjectHypothesis']
    with_pose_type = types['vision_msgs/msg/ObjectHypothesisWithPose']
    detection_type = types['vision_msgs/msg/Detection3D']
    for phrase, boxes in zip(result.phrases, lifted):
        if len(boxes) != len(phrase.boxes):
            raise ValueError(f'phrase {phrase.text!r} has {len(phrase.boxes)} boxes but '
                             f'{len(boxes)} lifted boxes')
    detections = []
    for p_index, b_index, phrase, box in result.detections(min_score):
        item = lifted[p_index][b_index]
        if item.box is None:
            continue
        bbox = types['vision_msgs/msg/BoundingBox3D'](
            center=_pose(store, item.box.center),
            size=types['geometry_msgs/msg/Vector3'](
                x=float(item.box.size[0]), y=float(item.box.size[1]),
                z=float(item.box.size[2])))
        pose = types['geometry_msgs/msg/PoseWithCovariance'](
            pose=_pose(store, item.box.center), covariance=np.zeros(36, dtype=np.float64))
        hypothesis = with_pose_type(
            hypothesis=hypothesis_type(class_id=phrase.text, score=float(box.score)),
            pose=pose)
        detections.append(detection_type(header=header_msg(store, header),
                                         results=[hypothesis], bbox=bbox,
                                         id=f'{p_index}.{b_index}'))
    return _type(store, DETECTION_3D_ARRAY)(header=header_msg(store, header),
                                            detections=detections)
