# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The message builders: one result through the rclpy and the rosbags backend, field by field.

No DDS, no model: rclpy messages need no running context, rosbags messages come from the
project's typestore. Both backends must give the same fields and the same message on the wire.
"""

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from kosmos_ros import messages
from kosmos_ros.bag.typestore import project_typestore, RosbagsTypes
from kosmos_ros.datatypes import (GroundedBox, GroundedPhrase, GroundingResult, PixelBox, Task,
                                  Timings)
from kosmos_ros.depth import Box3D, Lifted
from kosmos_ros.node import conversions
from kosmos_ros.node.conversions import RclpyTypes

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

PACKAGE = Path(__file__).resolve().parents[1] / 'kosmos_ros'


def _box(x1, y1, x2, y2, score, given=False):
    return GroundedBox(PixelBox(x1, y1, x2, y2), (x1 / 640, y1 / 480, x2 / 640, y2 / 480),
                       (0, 1023), score, given)


# A QUESTION's region, a phrase lifted to 3D on its weaker box only, a phrase whose boxes have
# no 3D (the weaker box first), and a phrase without a box.
RESULT = GroundingResult(
    task=Task.QUESTION, prompt='What is [this]?',
    text='Question: What is this? Answer: a cat on two cups and a dog, nothing.',
    phrases=(GroundedPhrase('this', 18, 22, (_box(10, 20, 110, 220, 0.9, given=True),)),
             GroundedPhrase('a cat', 32, 37, (_box(12.5, 40, 200, 180.25, 0.75),)),
             GroundedPhrase('two cups', 41, 49, (_box(0, 0, 64, 48, 0.2),
                                                 _box(300, 200, 640, 480, 0.6))),
             GroundedPhrase('a dog', 54, 59, (_box(5, 5, 20, 20, 0.3),
                                              _box(30, 30, 90, 70, 0.5))),
             GroundedPhrase('nothing', 61, 68, ())),
    image_size=(640, 480), raw_text='', num_generated_tokens=12,
    timings=Timings(0.01, 0.02, 0.3, 0.004), answer='a cat on two cups and a dog, nothing.')
LIFTED = ((Lifted(Box3D((0.5, -0.25, 2.0), (0.4, 0.5, 0.0), 30)),),
          (Lifted(Box3D((0.1, -0.2, 1.5), (0.3, 0.4, 0.05), 40)),),
          (Lifted(Box3D((-1.0, 0.5, 3.0), (0.2, 0.1, 0.02), 9)),
           Lifted(None, 'cups: too few pixels')),
          (Lifted(None, 'weaker box: too far'), Lifted(None, 'best box: too near')),
          ())
HEADER = SimpleNamespace(stamp=SimpleNamespace(sec=1_700_000_000, nanosec=123_456_789),
                         frame_id='camera_optical_frame')
TYPE_NAMES = {'grounding': messages.GROUNDING, 'detections': messages.DETECTION_2D_ARRAY,
              'detections_3d': messages.DETECTION_3D_ARRAY, 'markers': messages.MARKER_ARRAY,
              'image': messages.IMAGE}


@pytest.fixture(scope='module')
def store():
    return project_typestore()


def build(types):
    """Every message the node publishes for RESULT, built with ``types``."""
    rgb = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    detections_3d = messages.detections_3d_msg(types, RESULT, LIFTED, HEADER, 0.25)
    return {'grounding': messages.grounding_msg(types, RESULT, HEADER, 'front', LIFTED),
            'detections': messages.detections_msg(types, RESULT, HEADER, 0.25),
            'detections_3d': detections_3d,
            'markers': messages.markers_msg(types, detections_3d, 1.25),
            'image': messages.image_msg(types, rgb, HEADER)}


def field_names(msg):
    if hasattr(msg, 'get_fields_and_field_types'):
        return list(msg.get_fields_and_field_types())
    if hasattr(msg, '__msgtype__'):
        return [name for name, _ in project_typestore().fielddefs[msg.__msgtype__][1]]
    return None


def assert_same(a, b, path='msg'):
    """Compare an rclpy and a rosbags message (or value) field by field."""
    names = field_names(a)
    if names is not None:
        assert names == field_names(b), path
        for name in names:
            assert_same(getattr(a, name), getattr(b, name), f'{path}.{name}')
        return
    if isinstance(b, (list, tuple, np.ndarray)):
        a, b = list(a), list(b)
        assert len(a) == len(b), f'{path}: {len(a)} != {len(b)} items'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{path}[{i}]')
        return
    a, b = (v.item() if isinstance(v, np.generic) else v for v in (a, b))
    assert type(a) is type(b) and a == b, f'{path}: {a!r} != {b!r}'


@pytest.mark.parametrize('name', list(TYPE_NAMES))
def test_both_backends_build_the_same_message(name, store):
    live, offline = build(RclpyTypes())[name], build(RosbagsTypes(store))[name]
    assert type(live).__name__ == type(offline).__name__.split('__')[-1]
    assert_same(live, offline, name)
    # On the wire too (not byte for byte: rclpy's padding bytes are not always zero).
    cdr = bytes(store.serialize_cdr(offline, TYPE_NAMES[name]))
    assert deserialize_message(cdr, type(live)) == \
        deserialize_message(serialize_message(live), type(live))


def test_the_node_functions_are_the_builders_with_rclpy_types():
    built = build(RclpyTypes())
    assert_same(conversions.detections_msg(RESULT, HEADER, 0.25), built['detections'])
    assert_same(conversions.detections_3d_msg(RESULT, LIFTED, HEADER, 0.25),
                built['detections_3d'])
    assert_same(conversions.markers_msg(built['detections_3d'], 1.25), built['markers'])
    grounding = conversions.grounding_msg(RESULT, HEADER, 'front')
    assert not any(p.has_position or p.position_note for p in grounding.phrases)
    conversions.apply_positions(grounding, RESULT, LIFTED)
    assert_same(grounding, built['grounding'])
    assert type(grounding.phrases[0].box_scores).__name__ == 'array'


def test_contents():
    built = build(RosbagsTypes())
    detections = built['detections']
    # The region and the box below min_score (0.25) are no detections; ids are phrase.box.
    assert [d.id for d in detections.detections] == ['1.0', '2.1', '3.0', '3.1']
    first = detections.detections[0]
    assert first.results[0].hypothesis.class_id == 'a cat'
    assert first.results[0].hypothesis.score == 0.75
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (106.25, 110.125)
    assert (first.bbox.size_x, first.bbox.size_y) == (187.5, 140.25)
    assert first.results[0].pose.pose.orientation.w == 1.0
    assert (first.header.stamp.sec, first.header.stamp.nanosec, first.header.frame_id) == \
        (1_700_000_000, 123_456_789, 'camera_optical_frame')
    assert [d.id for d in built['detections_3d'].detections] == ['1.0']  # 2.0: below 0.25
    markers = built['markers'].markers
    assert [(m.type, m.action, m.id) for m in markers] == [
        (messages.ARROW, messages.DELETEALL, 0), (messages.CUBE, messages.ADD, 0),
        (messages.TEXT_VIEW_FACING, messages.ADD, 1)]
    assert markers[2].text == 'a cat 0.75' and markers[2].pose.position.y == -0.2 - 0.25
    assert (markers[1].lifetime.sec, markers[1].lifetime.nanosec) == (1, 250_000_000)
    grounding = built['grounding']
    assert grounding.inference_time.nanosec == 334_000_000 and grounding.camera == 'front'
    assert [p.given for p in grounding.phrases] == [True, False, False, False, False]
    assert list(grounding.phrases[2].box_scores) == [np.float32(0.2), np.float32(0.6)]
    image = built['image']
    assert (image.width, image.height, image.step, image.encoding) == (4, 6, 12, 'rgb8')


def test_phrase_positions():
    """The best-scoring box with 3D gives the position; without one, its reason is the note."""
    grounding = build(RosbagsTypes())['grounding']
    got = [(p.has_position, (p.position.x, p.position.y, p.position.z), p.position_note)
           for p in grounding.phrases]
    assert got == [(True, (0.5, -0.25, 2.0), ''), (True, (0.1, -0.2, 1.5), ''),
                   (True, (-1.0, 0.5, 3.0), ''),  # the weaker box: the better has no 3D
                   (False, (0.0, 0.0, 0.0), 'best box: too near'),  # not the first box's
                   (False, (0.0, 0.0, 0.0), messages.NO_BOX_NOTE)]
    dog, nothing = RESULT.phrases[3], RESULT.phrases[4]
    # Without 3D for the frame, the caller's note; without a note, no note at all.
    assert messages.phrase_position(dog, None, 'no depth') == (None, 'no depth')
    assert messages.phrase_position(nothing, None, 'no depth') == (None, messages.NO_BOX_NOTE)
    assert messages.phrase_position(dog, None) == messages.phrase_position(nothing, None) == \
        (None, '')
    assert messages.phrase_position(dog, (Lifted(None), Lifted(None))) == \
        (None, messages.NO_3D_NOTE)
    plain = messages.grounding_msg(RosbagsTypes(), RESULT, HEADER, 'front')
    assert not any(p.has_position or p.position_note for p in plain.phrases)


@pytest.mark.parametrize('types', [RclpyTypes(), RosbagsTypes()], ids=['rclpy', 'rosbags'])
def test_a_shape_mismatch_raises(types):
    with pytest.raises(ValueError, match='4 lifted phrases for 5 phrases'):
        messages.grounding_msg(types, RESULT, HEADER, 'front', LIFTED[:4])
    short = LIFTED[:2] + (LIFTED[2][:1],) + LIFTED[3:]
    with pytest.raises(ValueError, match="phrase 'two cups' has 2 boxes but 1 lifted boxes"):
        messages.detections_3d_msg(types, RESULT, short, HEADER)
    grounding = messages.grounding_msg(types, RESULT, HEADER, 'front')
    with pytest.raises(ValueError, match='4 lifted phrases for 5 phrases'):
        messages.apply_positions(types, grounding, RESULT, LIFTED[:4])
    with pytest.raises(ValueError, match="phrase 'a dog' has 2 boxes but 0 lifted boxes"):
        messages.phrase_position(RESULT.phrases[3], ())


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers():
    """The builders and the admission rule are core; the bag layer never imports the node."""
    for name in ('messages.py', 'admission.py', 'depth.py', 'datatypes.py'):
        imported = _imports(PACKAGE / name)
        assert not {n for n in imported if n.split('.')[0] in ('rclpy', 'rosbags')}, name
    for path in (PACKAGE / 'bag').glob('*.py'):
        assert not {n for n in _imports(path) if n.startswith('kosmos_ros.node')}, path.name
