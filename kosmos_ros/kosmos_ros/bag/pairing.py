# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which depth and camera_info topics of a bag belong to each image topic ``ground_bag`` grounds.

Explicit topics win: one ``--depth-topic`` (and ``--camera-info-topic``) serves every
selected image topic (one camera); N of them pair with the N selected image topics in order.
Otherwise pairing is automatic, by camera namespace: for the image topic's namespace ``NS``
(``/camera/image_raw`` and ``/camera/image_raw/compressed`` -> ``/camera``), then its parent
(``/camera/color`` -> ``/camera``), the depth topic is the first ``sensor_msgs/Image`` topic
of ``NS/aligned_depth_to_color/image_raw``, ``NS/depth_registered/image_rect``,
``NS/depth_registered/image_raw``, ``NS/depth/image_rect`` and ``NS/depth/image_raw`` in the
bag; the camera_info topic is the first ``sensor_msgs/CameraInfo`` topic of
``NS/camera_info`` (same namespaces, in the same order), then ``camera_info`` beside the depth
topic (``/camera/depth/camera_info``). Automatic image topic selection leaves out topics with
these depth names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kosmos_ros.admission import camera_namespace
from kosmos_ros.bag import BagError
from kosmos_ros.bag.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE

# Registered depth topics in a camera namespace, most specific first.
DEPTH_NAMES = ('aligned_depth_to_color/image_raw', 'depth_registered/image_rect',
               'depth_registered/image_raw', 'depth/image_rect', 'depth/image_raw')
CAMERA_INFO_NAME = 'camera_info'
PAIRING_RULE = (
    'Automatic pairing, by camera namespace NS of the image topic (/camera/image_raw -> '
    '/camera), then its parent: depth = the first of NS/' + ', NS/'.join(DEPTH_NAMES)
    + '; camera_info = NS/camera_info, else camera_info beside the depth topic.')


@dataclass(frozen=True)
class DepthPairing:
    """The depth and camera_info topics of one image topic, or why there are none."""

    image_topic: str
    depth_topic: str | None = None
    info_topic: str | None = None
    automatic: bool = True
    note: str = ''

    @property
    def enabled(self) -> bool:
        return bool(self.depth_topic and self.info_topic)

    def describe(self) -> str:
        if not self.enabled:
            return f'3D: off ({self.note})'
        how = 'automatic' if self.automatic else 'given'
        return f'3D: depth {self.depth_topic}, camera_info {self.info_topic} ({how})'


def camera_namespaces(topic: str, msgtype: str) -> list[str]:
    """Return the camera namespace of an image topic and its parent namespace, if any."""
    base = camera_namespace(topic, msgtype == COMPRESSED_IMAGE)
    spaces = [base]
    if base.count('/') > 1 or (base.count('/') == 1 and not base.startswith('/')):
        spaces.append(base.rsplit('/', 1)[0])
    return spaces


def is_depth_name(topic: str) -> bool:
    """Tell whether a topic's name is one of the depth names of the pairing rule."""
    name = topic.rstrip('/')
    return any(name == f'/{n}' or name.endswith(f'/{n}') for n in DEPTH_NAMES)


def _find_depth(topics: dict[str, str], topic: str, msgtype: str) -> str | None:
    for space in camera_namespaces(topic, msgtype):
        for name in DEPTH_NAMES:
            candidate = f'{space}/{name}'
            if candidate != topic and topics.get(candidate) == IMAGE:
                return candidate
    return None


def _find_info(topics: dict[str, str], topic: str, msgtype: str,
               depth_topic: str | None) -> str | None:
    spaces = camera_namespaces(topic, msgtype)
    if depth_topic:
        spaces += camera_namespaces(depth_topic, IMAGE)[:1]
    for space in spaces:
        candidate = f'{space}/{CAMERA_INFO_NAME}'
        if topics.get(candidate) == CAMERA_INFO:
            return candidate
    return None


def _explicit(names: Sequence[str], images: Sequence[tuple[str, str]], option: str,
              topics: dict[str, str], msgtype: str) -> list[str | None]:
    """Spread explicit topics over the image topics (one for all, or one each in order)."""
    for name in names:
        if name not in topics:
            raise BagError(f'{option} {name} is not in the bag; its {msgtype} topics: '
                           + (', '.join(sorted(t for t, m in topics.items() if m == msgtype))
                              or 'none'))
        if topics[name] != msgtype:
            raise BagError(f'{option} {name} has type {topics[name]}, not {msgtype}')
    if not names:
        return [None] * len(images)
    if len(names) == 1:
        return [names[0]] * len(images)
    if len(names) != len(images):
        raise BagError(f'{option} given {len(names)} times for {len(images)} image topics '
                       f'({", ".join(t for t, _ in images)}): give it once (one camera) or '
                       'once per image topic, in the same order')
    return list(names)


def pair_depth_topics(topics: dict[str, str], images: Sequence[tuple[str, str]],
                      depth_topics: Sequence[str] = (), info_topics: Sequence[str] = (),
                      enabled: bool = True) -> dict[str, DepthPairing]:
    """Return the pairing of every (image topic, msgtype) in ``images`` (see the module doc).

    ``topics`` maps every topic of the bag to its msgtype. Raises BagError when an explicit
    topic is missing, of the wrong type, given a wrong number of times, or lacks its partner.
    """
    if not enabled:
        if depth_topics or info_topics:
            raise BagError('depth is turned off, yet depth or camera_info topics were given')
        return {t: DepthPairing(t, note='turned off') for t, _ in images}
    depths = _explicit(depth_topics, images, '--depth-topic', topics, IMAGE)
    infos = _explicit(info_topics, images, '--camera-info-topic', topics, CAMERA_INFO)
    pairings = {}
    for (topic, msgtype), depth, info in zip(images, depths, infos):
        explicit = bool(depth or info)
        depth = depth or _find_depth(topics, topic, msgtype)
        info = info or _find_info(topics, topic, msgtype, depth)
        spaces = ' or '.join(camera_namespaces(topic, msgtype))
        if depth and info:
            pairings[topic] = DepthPairing(topic, depth, info, automatic=not explicit)
            continue
        missing = 'depth image' if not depth else 'camera_info'
        option = '--depth-topic' if not depth else '--camera-info-topic'
        if explicit:
            raise BagError(f'no {missing} topic for {topic} in {spaces}; name it with {option}')
        note = f'no {missing} topic in {spaces}; {option} names one'
        pairings[topic] = DepthPairing(topic, depth, info, note=note)
    return pairings
