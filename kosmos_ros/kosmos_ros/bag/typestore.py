# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A ``rosbags`` typestore with the project's messages, and the message backend over it.

The typestore is the ROS 2 base store of the running distro (``ROS_DISTRO``; Jazzy by
default) plus ``kosmos_ros_interfaces/msg/{GroundedPhrase,Grounding}`` and the
``vision_msgs`` 4.x detection messages, parsed from their ``.msg`` files: first those of the
installed packages (``share/<package>/msg`` found through the ament index), else the source
tree (``kosmos_ros_interfaces/msg`` and ``test_support/vision_msgs/msg``). Nothing here
imports rclpy.

:class:`RosbagsTypes` makes the messages of a store for :mod:`kosmos_ros.messages`, the
builders the node uses too, so a bag written offline holds what the node would have published:
``Grounding`` (with each phrase's 3D position when its boxes were lifted with depth),
``Detection2DArray`` and ``Detection3DArray``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from kosmos_ros.bag import BagError
from kosmos_ros.messages import (DETECTION_2D_ARRAY, DETECTION_3D_ARRAY,  # noqa: F401
                                 GROUNDING, IMAGE, TRACK_ARRAY)

COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

# The messages registered, per package, in dependency order.
MESSAGES = {
    'vision_msgs': ('Point2D', 'Pose2D', 'BoundingBox2D', 'ObjectHypothesis',
                    'ObjectHypothesisWithPose', 'Detection2D', 'Detection2DArray',
                    'BoundingBox3D', 'Detection3D', 'Detection3DArray'),
    'kosmos_ros_interfaces': ('GroundedPhrase', 'Grounding', 'Track', 'TrackArray'),
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


# -- the rosbags backend of kosmos_ros.messages -------------------------------------------------

# numpy types of the primitive ROS types (strings are Python strings).
_NUMPY = {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'octet': np.uint8,
          'int8': np.int8, 'uint8': np.uint8, 'int16': np.int16, 'uint16': np.uint16,
          'int32': np.int32, 'uint32': np.uint32, 'int64': np.int64, 'uint64': np.uint64,
          'float32': np.float32, 'float64': np.float64}


class RosbagsTypes:
    """:class:`kosmos_ros.messages.MessageTypes` over a rosbags typestore.

    rosbags types have no defaults: the fields a builder leaves out get ROS's zero values
    (numbers 0, strings empty, primitive arrays as numpy arrays, nested messages likewise).
    rosbags drops the default values of ``.msg`` files (a Quaternion's ``w`` is 0 here, 1 in
    rclpy), so the builders set every non-zero value themselves.
    """

    def __init__(self, store: Any = None):
        self.store = store if store is not None else project_typestore()

    def new(self, type_name: str, **fields: Any) -> Any:
        _, definitions = self.store.fielddefs[type_name]
        for name, desc in definitions:
            if name not in fields:
                fields[name] = self._zero(desc)
        return self.store.types[type_name](**fields)

    def array(self, dtype: str, values: Any) -> Any:
        return np.array(values, dtype=_NUMPY[dtype])

    def _zero(self, desc: tuple[Any, Any]) -> Any:
        from rosbags.interfaces import Nodetype

        kind, spec = desc
        if kind == Nodetype.BASE:
            return '' if spec[0] not in _NUMPY else _NUMPY[spec[0]](0).item()
        if kind == Nodetype.NAME:
            return self.new(spec)
        item, length = spec
        if item[0] == Nodetype.BASE and item[1][0] in _NUMPY:
            return np.zeros(length if kind == Nodetype.ARRAY else 0, _NUMPY[item[1][0]])
        return [self._zero(item) for _ in range(length if kind == Nodetype.ARRAY else 0)]
