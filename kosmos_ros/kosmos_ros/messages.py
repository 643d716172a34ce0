# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Engine results as ROS messages, written once for the live node and the offline bag tool.

The node publishes rclpy messages, ``ground_bag`` writes rosbags messages into a bag; both
build them here, over a :class:`MessageTypes` backend that makes a message of a type named
``pkg/msg/Name``: :class:`kosmos_ros.node.conversions.RclpyTypes` (rclpy classes) and
:class:`kosmos_ros.bag.typestore.RosbagsTypes` (a rosbags typestore). This module imports
neither rclpy nor rosbags. Fields a builder does not set keep ROS's default values, so every
non-zero value (an identity orientation included) is set here explicitly.

The rules, the same live and offline:

- **Detections** are :meth:`GroundingResult.detections` (boxes the model found, not the
  caller's regions, scoring at least ``min_score``); a detection's ``id`` is
  ``'<phrase index>.<box index>'``, ``class_id`` the phrase, ``score`` the box's score.
  ``Grounding`` carries every phrase and box whatever ``min_score`` says.
- **Headers**: every message, and every detection in it, carries the source image's header.
- **Phrase positions** (``Grounding.phrases[i].has_position``, ``position``,
  ``position_note``; :func:`phrase_position`): the 3D centre of the phrase's best-scoring box
  that has 3D. Without one, ``position_note`` says why: ``'the phrase has no box'`` for a
  phrase without boxes, else the reason of its **best-scoring** box (the first such box in
  box order when scores tie). Without 3D for the whole frame (``lifted`` None) the note is the
  caller's ``note``; with neither ``lifted`` nor a note, 3D is not in question and every note
  is empty.
- **Shapes**: ``lifted`` holds one :class:`~kosmos_ros.depth.Lifted` per box of every phrase;
  any other shape raises ValueError naming the phrase (never truncated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from kosmos_ros.datatypes import GroundedPhrase, GroundingResult, PixelBox
from kosmos_ros.depth import Lifted

GROUNDING = 'kosmos_ros_interfaces/msg/Grounding'
GROUNDED_PHRASE = 'kosmos_ros_interfaces/msg/GroundedPhrase'
TRACK = 'kosmos_ros_interfaces/msg/Track'
TRACK_ARRAY = 'kosmos_ros_interfaces/msg/TrackArray'
# Track.state by tracking.Track.motion.
TRACK_STATES = {'tracked': 0, 'predicted': 1, 'lost': 2}
DETECTION_2D_ARRAY = 'vision_msgs/msg/Detection2DArray'
DETECTION_3D_ARRAY = 'vision_msgs/msg/Detection3DArray'
MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'
IMAGE = 'sensor_msgs/msg/Image'
MARKER = 'visualization_msgs/msg/Marker'


@dataclass(frozen=True)
class OutputSpec:
    """One output topic of a camera: ``NAME/<name>`` on the node, ``<base>/<name>`` in bags.

    Attributes:
        name: the topic's last name.
        type_name: its message type (``pkg/msg/Name``).
        builder: the function of this module that builds it.
        per: what gives one message: ``result`` (a grounded frame), ``frame`` (a tracked
            frame) or ``debug`` (the node's annotated image, newest result).
        needs_depth: only for a camera (image topic) with depth.
        lazy: the node publishes it only while someone subscribes.
        offline: ``ground_bag`` (and the corpus) write it into the output bag; ``per ==
            'frame'`` ones with ``--track``.
        qos_depth: the node's publisher queue depth.
    """

    name: str
    type_name: str
    builder: str
    per: str
    needs_depth: bool = False
    lazy: bool = False
    offline: bool = True
    qos_depth: int = 10


# Every output, in the order they are documented. The node's cameras create their publishers
# from it, ground_bag its connections, the typestore the types it loads; a test checks the
# node reference's topic table against it.
OUTPUTS = (
    OutputSpec('detections', DETECTION_2D_ARRAY, 'detections_msg', 'result'),
    OutputSpec('grounding', GROUNDING, 'grounding_msg', 'result'),
    OutputSpec('debug_image', IMAGE, 'image_msg', 'debug', lazy=True, offline=False,
               qos_depth=1),
    OutputSpec('detections_3d', DETECTION_3D_ARRAY, 'detections_3d_msg', 'result',
               needs_depth=True),
    OutputSpec('markers', MARKER_ARRAY, 'markers_msg', 'result', needs_depth=True, lazy=True,
               offline=False, qos_depth=1),
    OutputSpec('tracks', DETECTION_2D_ARRAY, 'tracks_msg', 'frame', lazy=True),
    OutputSpec('track_states', TRACK_ARRAY, 'track_states_msg', 'frame', lazy=True),
    OutputSpec('tracks_3d', DETECTION_3D_ARRAY, 'tracks_3d_msg', 'frame', needs_depth=True,
               lazy=True),
)


def outputs_for(depth: bool, per: tuple[str, ...] = ('result', 'frame', 'debug'),
                offline: bool = False) -> tuple[OutputSpec, ...]:
    """Return the outputs of a camera with or without depth (``offline``: a bag's only)."""
    return tuple(o for o in OUTPUTS if o.per in per and (depth or not o.needs_depth)
                 and (o.offline or not offline))


NO_BOX_NOTE = 'the phrase has no box'
NO_3D_NOTE = 'no 3D for the box'
MARKER_NS = 'kosmos_grounding'
# visualization_msgs/Marker constants (fixed since ROS 1).
ARROW, CUBE, TEXT_VIEW_FACING = 0, 1, 9
ADD, DELETEALL = 0, 3

Lifts = Sequence[Sequence[Lifted]]


class MessageTypes(Protocol):
    """Makes messages of one ROS message implementation (rclpy classes, rosbags types)."""

    def new(self, type_name: str, **fields: Any) -> Any:
        """Return a ``type_name`` (``'pkg/msg/Name'``) message; other fields keep defaults."""

    def array(self, dtype: str, values: Any) -> Any:
        """Return ``values`` as the value of a ``dtype[]`` field (float32, float64, uint8)."""


# -- small pieces ------------------------------------------------------------------------------

def header_msg(types: MessageTypes, header: Any) -> Any:
    """Copy a header (rclpy, rosbags or any object with its fields) into ``types``."""
    stamp = types.new('builtin_interfaces/msg/Time', sec=int(header.stamp.sec),
                      nanosec=int(header.stamp.nanosec))
    return types.new('std_msgs/msg/Header', stamp=stamp, frame_id=str(header.frame_id))


def duration_msg(types: MessageTypes, seconds: float) -> Any:
    """Return a builtin_interfaces/Duration of ``seconds`` (rounded to ns, at least 0)."""
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return types.new('builtin_interfaces/msg/Duration', sec=nanoseconds // 1_000_000_000,
                     nanosec=nanoseconds % 1_000_000_000)


def point_msg(types: MessageTypes, xyz: Sequence[float]) -> Any:
    x, y, z = (float(v) for v in xyz)
    return types.new('geometry_msgs/msg/Point', x=x, y=y, z=z)


def vector3_msg(types: MessageTypes, xyz: Sequence[float]) -> Any:
    x, y, z = (float(v) for v in xyz)
    return types.new('geometry_msgs/msg/Vector3', x=x, y=y, z=z)


def pose_msg(types: MessageTypes, position: Sequence[float] = (0.0, 0.0, 0.0),
             orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> Any:
    """Return a geometry_msgs/Pose; the orientation (x, y, z, w) is the identity by default."""
    x, y, z, w = (float(v) for v in orientation)
    return types.new('geometry_msgs/msg/Pose', position=point_msg(types, position),
                     orientation=types.new('geometry_msgs/msg/Quaternion', x=x, y=y, z=z, w=w))


def bbox_msg(types: MessageTypes, box: PixelBox) -> Any:
    """Return a vision_msgs/BoundingBox2D: centre and size in pixels, theta 0."""
    cx, cy = box.center
    center = types.new('vision_msgs/msg/Pose2D', theta=0.0, position=types.new(
        'vision_msgs/msg/Point2D', x=float(cx), y=float(cy)))
    return types.new('vision_msgs/msg/BoundingBox2D', center=center, size_x=float(box.width),
                     size_y=float(box.height))


def _hypothesis(types: MessageTypes, class_id: str, score: float, pose: Any) -> Any:
    return types.new(
        'vision_msgs/msg/ObjectHypothesisWithPose',
        hypothesis=types.new('vision_msgs/msg/ObjectHypothesis', class_id=class_id,
                             score=float(score)),
        pose=types.new('geometry_msgs/msg/PoseWithCovariance', pose=pose))


# -- positions ---------------------------------------------------------------------------------

def check_lifted(result: GroundingResult, lifted: Lifts | None) -> None:
    """Raise ValueError unless ``lifted`` (or None) has one entry per box of every phrase."""
    if lifted is None:
        return
    if len(lifted) != len(result.phrases):
        raise ValueError(f'{len(lifted)} lifted phrases for {len(result.phrases)} phrases')
    for phrase, boxes in zip(result.phrases, lifted):
        _check_boxes(phrase, boxes)


def _check_boxes(phrase: GroundedPhrase, lifted: Sequence[Lifted]) -> None:
    if len(lifted) != len(phrase.boxes):
        raise ValueError(f'phrase {phrase.text!r} has {len(phrase.boxes)} boxes but '
                         f'{len(lifted)} lifted boxes')


def phrase_position(phrase: GroundedPhrase, lifted: Sequence[Lifted] | None, note: str = ''
                    ) -> tuple[tuple[float, float, float] | None, str]:
    """Return the 3D centre of the phrase's best-scoring box that has 3D, or None and why.

    ``lifted``: one :class:`~kosmos_ros.depth.Lifted` per box of the phrase, or None when the
    frame has no 3D, then ``note`` says why (see the module's rules).
    """
    if lifted is None and not note:
        return None, ''
    if lifted is not None:
        _check_boxes(phrase, lifted)
    if not phrase.boxes:
        return None, NO_BOX_NOTE
    if lifted is None:
        return None, note
    ranked = sorted(zip(phrase.boxes, lifted), key=lambda pair: -pair[0].score)
    for _, item in ranked:
        if item.box is not None:
            x, y, z = (float(v) for v in item.box.center)
            return (x, y, z), ''
    return None, ranked[0][1].reason or note or NO_3D_NOTE


def apply_positions(types: MessageTypes, grounding: Any, result: GroundingResult,
                    lifted: Lifts | None, note: str = '') -> None:
    """Set each phrase's ``has_position``/``position``/``position_note`` in ``grounding``."""
    check_lifted(result, lifted)
    for index, (item, phrase) in enumerate(zip(grounding.phrases, result.phrases)):
        position, item.position_note = phrase_position(
            phrase, None if lifted is None else lifted[index], note)
        item.has_position = position is not None
        item.position = point_msg(types, position or (0.0, 0.0, 0.0))


# -- the published messages --------------------------------------------------------------------

def grounding_msg(types: MessageTypes, result: GroundingResult, header: Any, camera: str,
                  lifted: Lifts | None = None, note: str = '') -> Any:
    """Return a kosmos_ros_interfaces/Grounding: text, every phrase with its boxes and scores.

    ``lifted`` and ``note`` give the phrases' positions (:func:`phrase_position`).
    """
    check_lifted(result, lifted)
    phrases = [types.new(GROUNDED_PHRASE, text=phrase.text, start=int(phrase.start),
                         end=int(phrase.end),
                         boxes=[bbox_msg(types, b.pixels) for b in phrase.boxes],
                         box_scores=types.array('float32', [float(b.score)
                                                            for b in phrase.boxes]),
                         score=float(phrase.score), given=phrase.given)
               for phrase in result.phrases]
    width, height = (int(v) for v in result.image_size)
    msg = types.new(GROUNDING, header=header_msg(types, header), camera=camera,
                    task=int(result.task), prompt=result.prompt, text=result.text,
                    answer=result.answer, phrases=phrases, image_width=width,
                    image_height=height,
                    inference_time=duration_msg(types, result.timings.total))
    apply_positions(types, msg, result, lifted, note)
    return msg


def detections_msg(types: MessageTypes, result: GroundingResult, header: Any,
                   min_score: float = 0.0) -> Any:
    """Return a vision_msgs/Detection2DArray: one Detection2D per detection, in pixels."""
    head = header_msg(types, header)
    detections = [types.new('vision_msgs/msg/Detection2D', header=head, id=f'{p}.{b}',
                            bbox=bbox_msg(types, box.pixels),
                            results=[_hypothesis(types, phrase.text, box.score, pose_msg(types))])
                  for p, b, phrase, box in result.detections(min_score)]
    return types.new(DETECTION_2D_ARRAY, header=head, detections=detections)


def detections_3d_msg(types: MessageTypes, result: GroundingResult, lifted: Lifts,
                      header: Any, min_score: float = 0.0) -> Any:
    """Return a vision_msgs/Detection3DArray: one Detection3D per detection that has 3D.

    ``bbox``: centre and size in metres in the camera's optical frame, orientation identity;
    the hypothesis pose is the box centre.
    """
    check_lifted(result, lifted)
    head = header_msg(types, header)
    detections = []
    for p, b, phrase, box in result.detections(min_score):
        item = lifted[p][b].box
        if item is None:
            continue
        bbox = types.new('vision_msgs/msg/BoundingBox3D', center=pose_msg(types, item.center),
                         size=vector3_msg(types, item.size))
        detections.append(types.new(
            'vision_msgs/msg/Detection3D', header=head, id=f'{p}.{b}', bbox=bbox,
            results=[_hypothesis(types, phrase.text, box.score, pose_msg(types, item.center))]))
    return types.new(DETECTION_3D_ARRAY, header=head, detections=detections)


def tracks_msg(types: MessageTypes, tracks: Sequence[Any], header: Any) -> Any:
    """Return a vision_msgs/Detection2DArray of tracks (``kosmos_ros.tracking.tracker.Track``).

    ``id`` is the track id (decimal), ``class_id`` the phrase of the model result that last
    confirmed it, ``score`` that result's score; ``header`` is the frame the boxes were moved
    to.
    """
    head = header_msg(types, header)
    detections = [types.new('vision_msgs/msg/Detection2D', header=head, id=str(t.track_id),
                            bbox=bbox_msg(types, t.box),
                            results=[_hypothesis(types, t.phrase, t.score, pose_msg(types))])
                  for t in tracks]
    return types.new(DETECTION_2D_ARRAY, header=head, detections=detections)


def track_states_msg(types: MessageTypes, tracks: Sequence[Any], header: Any,
                     stamp: float) -> Any:
    """Return a kosmos_ros_interfaces/TrackArray: every track with its state (lost ones too).

    ``stamp`` is the frame's (message time, seconds), from which the tracks' ages are counted.
    """
    out = []
    for t in tracks:
        coasted = float(getattr(t, 'coasted', 0.0) or 0.0)
        out.append(types.new(
            TRACK, track_id=int(t.track_id), phrase=t.phrase,
            state=TRACK_STATES.get(str(getattr(t, 'motion', 'tracked')), 2),
            box=bbox_msg(types, t.box), score=float(t.score), hits=int(t.hits),
            since_confirmed=duration_msg(types, stamp - t.last_confirmed),
            predicted_for=duration_msg(types, coasted)))
    return types.new(TRACK_ARRAY, header=header_msg(types, header), tracks=out)


def tracks_3d_msg(types: MessageTypes, tracks: Sequence[Any], lifted: Sequence[Lifted],
                  header: Any) -> Any:
    """Return a vision_msgs/Detection3DArray of the tracks that have 3D (one Lifted each).

    As :func:`detections_3d_msg`: metres in the camera's optical frame, identity orientation;
    ``id`` the track id.
    """
    if len(lifted) != len(tracks):
        raise ValueError(f'{len(lifted)} 3D boxes for {len(tracks)} tracks')
    head = header_msg(types, header)
    detections = []
    for track, item in zip(tracks, lifted):
        if item.box is None:
            continue
        bbox = types.new('vision_msgs/msg/BoundingBox3D', center=pose_msg(types, item.box.center),
                         size=vector3_msg(types, item.box.size))
        detections.append(types.new(
            'vision_msgs/msg/Detection3D', header=head, id=str(track.track_id), bbox=bbox,
            results=[_hypothesis(types, track.phrase, track.score,
                                 pose_msg(types, item.box.center))]))
    return types.new(DETECTION_3D_ARRAY, header=head, detections=detections)


def markers_msg(types: MessageTypes, detections: Any, lifetime_s: float = 1.0) -> Any:
    """Return a labelled cube per 3D detection of ``detections``, replacing earlier markers.

    ``detections`` is a Detection3DArray of any implementation (its fields are read).
    """
    head = header_msg(types, detections.header)
    lifetime = types.new('builtin_interfaces/msg/Duration', sec=int(lifetime_s),
                         nanosec=int((lifetime_s % 1) * 1e9))
    markers = [types.new(MARKER, header=head, ns=MARKER_NS, type=ARROW, action=DELETEALL,
                         pose=pose_msg(types))]
    for i, det in enumerate(detections.detections):
        center, size = det.bbox.center, det.bbox.size
        x, y, z = center.position.x, center.position.y, center.position.z
        turn = (center.orientation.x, center.orientation.y, center.orientation.z,
                center.orientation.w)
        hypothesis = det.results[0].hypothesis
        markers.append(types.new(
            MARKER, header=head, ns=MARKER_NS, id=2 * i, type=CUBE, action=ADD,
            pose=pose_msg(types, (x, y, z), turn), lifetime=lifetime,
            scale=vector3_msg(types, (max(size.x, 0.01), max(size.y, 0.01),
                                      max(size.z, 0.01))),
            color=types.new('std_msgs/msg/ColorRGBA', r=0.1, g=0.8, b=0.3, a=0.4)))
        markers.append(types.new(
            MARKER, header=head, ns=MARKER_NS, id=2 * i + 1, type=TEXT_VIEW_FACING,
            action=ADD, pose=pose_msg(types, (x, y - (size.y / 2 + 0.05), z), turn),
            lifetime=lifetime, scale=vector3_msg(types, (0.0, 0.0, 0.08)),
            color=types.new('std_msgs/msg/ColorRGBA', r=1.0, g=1.0, b=1.0, a=1.0),
            text=f'{hypothesis.class_id} {hypothesis.score:.2f}'))
    return types.new(MARKER_ARRAY, markers=markers)


def image_msg(types: MessageTypes, rgb: np.ndarray, header: Any) -> Any:
    """Return a sensor_msgs/Image (rgb8) of an RGB uint8 array (the annotated debug image)."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    return types.new(IMAGE, header=header_msg(types, header), height=height, width=width,
                     encoding='rgb8', is_bigendian=0, step=width * 3,
                     data=types.array('uint8', pixels.reshape(-1)))
