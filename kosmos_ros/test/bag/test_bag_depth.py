# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""ground_bag with depth: synthetic scenes of known geometry, written as real bags.

A colour stream, a registered depth stream (32FC1 or 16UC1) and CameraInfo with known
intrinsics: a plane at ``Z_PLANE`` and, over the box the steered model names for 'a cat', an
object at ``Z_OBJECT``. The 3D centres and sizes that ground_bag writes must equal the pinhole
values ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy`` (u, v: the box centre in pixel-centre
coordinates, i.e. box centre - 0.5), ``w Z / fx``, ``h Z / fy`` within ``TOLERANCE_M``.
"""

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from kosmos_ros.bag import BagError
from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.depth_lifting import DepthStream
from kosmos_ros.bag.pairing import camera_namespaces, is_depth_name, pair_depth_topics
from kosmos_ros.bag.sample import DEPTH_TOPIC, main as sample_main, make_sample_bag, SampleSpec
from kosmos_ros.bag.typestore import (CAMERA_INFO, DETECTION_3D_ARRAY, IMAGE, project_typestore,
                                      RosbagsTypes)
from kosmos_ros.datatypes import Query, Task
from kosmos_ros.depth import Box3D, DepthSettings, Lifted
from kosmos_ros.images import Frame
from kosmos_ros.messages import detections_3d_msg, grounding_msg
from kosmos_ros.model.boxes import patch_indices_to_normalized


WIDTH, HEIGHT = 320, 240
FX, FY, CX, CY = 300.0, 310.0, 158.3, 121.7
Z_PLANE, Z_OBJECT = 2.5, 1.234
# float32 depth (and 16UC1 mm / 1000 in float32) rounds Z to about 1e-7 relative: 0.01 mm.
TOLERANCE_M = 1e-5
T0 = 100 * 10**9  # first colour stamp (ns)
PERIOD = 10**9
# The steered model's boxes (helpers.STEERED): 'a cat' 44/863, 'two cups' 100/300 and 520/990.
CAT = patch_indices_to_normalized(44, 863)
CUPS = (patch_indices_to_normalized(100, 300), patch_indices_to_normalized(520, 990))
# Depth of each box by id: the cat and the second cup lie over the object, the first cup not.
EXPECTED_Z = {'0.0': Z_OBJECT, '1.0': Z_PLANE, '1.1': Z_OBJECT}


def pixels(box):
    x1, y1, x2, y2 = box
    return x1 * WIDTH, y1 * HEIGHT, x2 * WIDTH, y2 * HEIGHT


def scene(z_plane=Z_PLANE, z_object=Z_OBJECT):
    """Return the depth in metres: the plane, and the object over the cat's box."""
    depth = np.full((HEIGHT, WIDTH), z_plane, np.float32)
    x1, y1, x2, y2 = pixels(CAT)
    cols = (np.arange(WIDTH) + 0.5 >= x1) & (np.arange(WIDTH) + 0.5 <= x2)
    rows = (np.arange(HEIGHT) + 0.5 >= y1) & (np.arange(HEIGHT) + 0.5 <= y2)
    depth[np.ix_(rows, cols)] = z_object
    return depth


def analytic(box, z):
    """Return the pinhole centre and size of a pixel box (x1, y1, x2, y2) at depth z."""
    x1, y1, x2, y2 = box
    u, v = (x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5
    return ((u - CX) * z / FX, (v - CY) * z / FY, z), ((x2 - x1) * z / FX, (y2 - y1) * z / FY)


def make_header(store, stamp, frame_id):
    types = store.types
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id=frame_id)


class SceneBag:
    """Write colour, depth and camera_info messages of a synthetic camera to a rosbag2."""

    def __init__(self, path, storage='mcap', image_topic='/camera/image_raw',
                 depth_topic='/camera/depth/image_raw', info_topic='/camera/camera_info',
                 frame_id='camera_optical_frame'):
        self.store = project_typestore()
        self.frame_id = frame_id
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.image = self.writer.add_connection(image_topic, IMAGE, typestore=self.store)
        self.depth = self.writer.add_connection(depth_topic, IMAGE, typestore=self.store)
        self.info = self.writer.add_connection(info_topic, CAMERA_INFO, typestore=self.store)
        rng = np.random.default_rng(7)
        self.rgb = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)

    def header(self, stamp, frame_id=None):
        return make_header(self.store, stamp, self.frame_id if frame_id is None else frame_id)

    def frame(self, stamp, depth=None, encoding='32FC1', depth_stamp=None, frame_id=None):
        """Write one colour image, its camera_info and (unless None) its depth image."""
        types = self.store.types
        header = self.header(stamp)
        k = np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1], np.float64)
        info = types[CAMERA_INFO](
            header=header, height=HEIGHT, width=WIDTH, distortion_model='plumb_bob',
            d=np.zeros(5), k=k, r=np.eye(3).reshape(-1),
            p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0], np.float64), binning_x=0,
            binning_y=0, roi=types['sensor_msgs/msg/RegionOfInterest'](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
        self.writer.write(self.info, stamp + 1000, self.store.serialize_cdr(info, CAMERA_INFO))
        image = types[IMAGE](header=header, height=HEIGHT, width=WIDTH, encoding='rgb8',
                             is_bigendian=0, step=WIDTH * 3, data=self.rgb.reshape(-1))
        self.writer.write(self.image, stamp + 2000, self.store.serialize_cdr(image, IMAGE))
        if depth is None:
            return
        if encoding == '16UC1':
            values = np.where(np.isfinite(depth), np.round(depth * 1000), 0).astype('<u2')
        else:
            values = depth.astype('<f4')
        depth_stamp = stamp if depth_stamp is None else depth_stamp
        msg = types[IMAGE](header=self.header(depth_stamp, frame_id), height=HEIGHT,
                           width=WIDTH, encoding=encoding, is_bigendian=0,
                           step=WIDTH * values.itemsize,
                           data=np.ascontiguousarray(values).view(np.uint8).reshape(-1))
        self.writer.write(self.depth, depth_stamp + 3000, self.store.serialize_cdr(msg, IMAGE))

    def close(self):
        self.writer.close()
        return self.path


def read_bag(path):
    """Return {topic: [message, ...]} of a bag, every message deserialized by rosbags."""
    out = {}
    with AnyReader([Path(path)], default_typestore=project_typestore()) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


def header_of(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)


def check_geometry(detections, groundings_msg):
    """Assert that every steered box's 3D equals the analytic pinhole values."""
    boxes = {'0.0': pixels(CAT), '1.0': pixels(CUPS[0]), '1.1': pixels(CUPS[1])}
    found = {d.id: d for d in detections.detections}
    assert set(boxes) <= set(found), sorted(found)
    for ident, box in boxes.items():
        det = found[ident]
        centre, size = analytic(box, EXPECTED_Z[ident])
        bbox = det.bbox
        position = (bbox.center.position.x, bbox.center.position.y, bbox.center.position.z)
        assert position == pytest.approx(centre, abs=TOLERANCE_M), ident
        assert (bbox.size.x, bbox.size.y) == pytest.approx(size, abs=TOLERANCE_M), ident
        assert bbox.center.orientation.w == 1.0
        hypothesis = det.results[0].hypothesis
        phrase = groundings_msg.phrases[int(ident[0])]
        assert hypothesis.class_id == phrase.text == ('a cat' if ident == '0.0' else 'two cups')
        assert hypothesis.score == pytest.approx(phrase.box_scores[int(ident[2])])
        assert det.results[0].pose.pose.position.z == pytest.approx(centre[2])
        assert header_of(det) == header_of(detections)
    # Boxes wholly on one surface have no depth extent.
    assert found['0.0'].bbox.size.z == pytest.approx(0.0, abs=TOLERANCE_M)
    assert found['1.0'].bbox.size.z == pytest.approx(0.0, abs=TOLERANCE_M)
    # Phrase positions: the centre of the phrase's best-scoring box.
    cat, cups = groundings_msg.phrases[:2]
    assert cat.has_position and cat.position_note == ''
    assert (cat.position.x, cat.position.y, cat.position.z) == \
        pytest.approx(analytic(boxes['0.0'], Z_OBJECT)[0], abs=TOLERANCE_M)
    best = f'1.{int(np.argmax(cups.box_scores))}'
    assert cups.has_position and (cups.position.x, cups.position.y, cups.position.z) == \
        pytest.approx(analytic(boxes[best], EXPECTED_Z[best])[0], abs=TOLERANCE_M)


def test_scene_is_what_the_steered_model_names(steered):
    """The geometry the other tests rely on: the steered boxes over the painted scene."""
    depth = scene()
    x1, y1, x2, y2 = pixels(CAT)
    assert depth[int(y1) + 1, int(x1) + 1] == np.float32(Z_OBJECT)
    assert depth[0, 0] == np.float32(Z_PLANE) and depth[-1, -1] == np.float32(Z_PLANE)
    cup_x2 = pixels(CUPS[0])[2]
    assert cup_x2 <= x1  # the first cup lies wholly on the plane
    result = steered.ground(Frame(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb'),
                            Query(Task.CAPTION))
    named = [(p.text, [(b.pixels.x1, b.pixels.y1, b.pixels.x2, b.pixels.y2) for b in p.boxes])
             for p in result.phrases[:2]]
    assert named == [('a cat', [pytest.approx(pixels(CAT))]),
                     ('two cups', [pytest.approx(pixels(CUPS[0])),
                                   pytest.approx(pixels(CUPS[1]))])]


# -- offline grounding with depth ----------------------------------------------------------------

def test_32fc1_scene_stale_and_invalid_depth(steered, tmp_path):
    bag = SceneBag(tmp_path / 'scene')
    depth = scene()
    bag.frame(T0, depth, depth_stamp=T0 + 20_000_000)             # 20 ms: within tolerance
    bag.frame(T0 + PERIOD, depth, depth_stamp=T0 + PERIOD + 80_000_000)  # 80 ms: stale
    bag.frame(T0 + 2 * PERIOD, np.zeros_like(depth))               # all zero
    bag.frame(T0 + 3 * PERIOD, np.full_like(depth, np.nan))        # all NaN
    bag.frame(T0 + 4 * PERIOD, np.full_like(depth, 25.0))          # beyond depth_max
    bag.close()
    out = tmp_path / 'out'
    summary = gb.ground_bag(gb.GroundBagOptions(bag=bag.path, output=out), steered)
    stats = summary.topics['/camera/image_raw']  # the depth topic is not grounded itself
    assert list(summary.topics) == ['/camera/image_raw'] and stats.grounded == 5
    assert (stats.pairing.depth_topic, stats.pairing.info_topic, stats.pairing.automatic) == \
        ('/camera/depth/image_raw', '/camera/camera_info', True)
    assert stats.depth.frames_3d == 1 and stats.depth.boxes_3d >= 3
    invalid = 'too few valid depth pixels in every box (zero, NaN or outside 0.1 to 10 m)'
    assert dict(stats.depth.without) == {'no depth image within 50 ms of the colour image': 1,
                                         invalid: 3}
    text = summary.describe()
    assert '-> /camera/detections, /camera/grounding, /camera/detections_3d' in text
    assert '3D: depth /camera/depth/image_raw, camera_info /camera/camera_info (automatic)' \
        in text
    assert 'frames: 1 with 3D, 4 without' in text
    assert f'no 3D 3x: {invalid}' in text
    assert 'no 3D 1x: no depth image within 50 ms of the colour image' in text

    content = read_bag(out)
    assert sorted(content) == ['/camera/detections', '/camera/detections_3d',
                               '/camera/grounding']
    groundings, det3d = content['/camera/grounding'], content['/camera/detections_3d']
    colour = [header_of(m) for m in read_bag(bag.path)['/camera/image_raw']]
    assert [header_of(m) for m in det3d] == [header_of(m) for m in groundings] == colour
    check_geometry(det3d[0], groundings[0])
    assert all(not m.detections for m in det3d[1:])  # no 3D is left out, never made up
    for msg in groundings[1:]:
        for phrase in msg.phrases:
            assert not phrase.has_position
            assert (phrase.position.x, phrase.position.y, phrase.position.z) == (0, 0, 0)
            assert phrase.position_note
    assert groundings[1].phrases[0].position_note == \
        'closest depth image is 80 ms from the colour image (tolerance 50 ms)'
    assert groundings[2].phrases[0].position_note.startswith(
        '0 valid depth pixels in the box centre (need 5; depth range 0.1 to 10 m)')

    # A wider range lifts the far frame; a tighter tolerance drops the 20 ms match.
    summary = gb.ground_bag(gb.GroundBagOptions(
        bag=bag.path, output=out, overwrite=True,
        depth=DepthSettings(depth_max=30.0, depth_tolerance=0.01)), steered, on_frame=None)
    stats = summary.topics['/camera/image_raw'].depth
    assert stats.frames_3d == 1 and stats.without[
        'no depth image within 10 ms of the colour image'] == 2
    far = read_bag(out)['/camera/detections_3d'][4]
    assert {d.id: d.bbox.center.position.z for d in far.detections}['0.0'] == \
        pytest.approx(25.0)


def test_16uc1_realsense_layout(steered, tmp_path):
    """Colour in /cam/color, depth aligned to it in /cam: paired through the parent namespace."""
    bag = SceneBag(tmp_path / 'rs', storage='sqlite3', image_topic='/cam/color/image_raw',
                   depth_topic='/cam/aligned_depth_to_color/image_raw',
                   info_topic='/cam/color/camera_info')
    bag.frame(T0, scene(), encoding='16UC1')
    bag.frame(T0 + PERIOD, np.zeros((HEIGHT, WIDTH), np.float32), encoding='16UC1')
    bag.frame(T0 + 2 * PERIOD, None)  # no depth image for this frame at all
    bag.close()
    out = tmp_path / 'out'
    seen = []
    html = tmp_path / 'report.html'
    summary = gb.ground_bag(gb.GroundBagOptions(bag=bag.path, output=out, html=html),
                            steered, on_frame=seen.append)
    stats = summary.topics['/cam/color/image_raw']
    assert (stats.pairing.depth_topic, stats.pairing.info_topic) == \
        ('/cam/aligned_depth_to_color/image_raw', '/cam/color/camera_info')
    assert stats.depth.frames_3d == 1 and stats.depth.frames_without == 2
    assert stats.depth.without['no depth image within 50 ms of the colour image'] == 1
    content = read_bag(out)
    det3d, groundings = content['/cam/color/detections_3d'], content['/cam/color/grounding']
    check_geometry(det3d[0], groundings[0])
    assert not det3d[1].detections and not groundings[1].phrases[0].has_position
    assert not det3d[2].detections and groundings[2].phrases[0].position_note == \
        'closest depth image is 1000 ms from the colour image (tolerance 50 ms)'
    assert seen[0].lifted is not None and seen[0].depth_note == ''
    assert seen[1].depth_note.startswith('too few valid depth pixels')
    page = html.read_text()
    assert 'a cat: [125, 11, 315, 199]' in page and '; at (' in page and '; no 3D: ' in page


def test_explicit_topics_and_the_command_line(steered, tiny_model_dir, tmp_path,
                                              monkeypatch, capsys):
    bag = SceneBag(tmp_path / 'odd', image_topic='/stereo/left/image_rect_color',
                   depth_topic='/stereo/depth_m', info_topic='/stereo/left/info',
                   frame_id='left_optical')
    bag.frame(T0, scene(), frame_id='depth_optical')
    bag.close()
    plain = gb.ground_bag(gb.GroundBagOptions(bag=bag.path, output=tmp_path / 'plain'),
                          steered)
    assert not plain.topics['/stereo/left/image_rect_color'].pairing.enabled
    assert '3D: off (no depth image topic in /stereo/left or /stereo; --depth-topic names ' \
        'one)' in plain.describe()
    assert '/stereo/left/detections_3d' not in read_bag(tmp_path / 'plain')
    # The depth topic is no depth name: automatic selection grounds it too (and skips it).
    assert '/stereo/depth_m' in plain.topics

    options = gb.GroundBagOptions(bag=bag.path, output=tmp_path / 'given',
                                  topics=('/stereo/left/image_rect_color',),
                                  depth_topics=('/stereo/depth_m',),
                                  camera_info_topics=('/stereo/left/info',))
    summary = gb.ground_bag(options, steered)
    stats = summary.topics['/stereo/left/image_rect_color']
    assert stats.pairing.enabled and not stats.pairing.automatic
    assert stats.depth.frames_3d == 1
    assert "depth frame_id 'depth_optical' differs from the colour frame_id 'left_optical'" \
        in summary.describe()
    content = read_bag(tmp_path / 'given')
    check_geometry(content['/stereo/left/detections_3d'][0],
                   content['/stereo/left/grounding'][0])

    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    code = gb.main([str(bag.path), '-o', str(tmp_path / 'cli'), '--tiny-model', '--device',
                    'cpu', '--max-new-tokens', '4', '--no-progress', '--depth-topic',
                    '/stereo/depth_m', '--camera-info-topic', '/stereo/left/info'])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert '3D: depth /stereo/depth_m, camera_info /stereo/left/info (given)' in out.out
    assert 'frames: ' in out.out
    code = gb.main([str(bag.path), '-o', str(tmp_path / 'cli2'), '--tiny-model',
                    '--depth-topic', '/nope'])
    assert code == 2 and '--depth-topic /nope is not in the bag' in capsys.readouterr().err
    code = gb.main([str(bag.path), '-o', str(tmp_path / 'cli3'), '--tiny-model',
                    '--depth-min', '5', '--depth-max', '1'])
    assert code == 2
    assert '--depth-min (5 m) must be below --depth-max (1 m)' in capsys.readouterr().err


def test_no_depth_option_and_errors_before_output(quick, tmp_path):
    bag = SceneBag(tmp_path / 'scene')
    bag.frame(T0, scene())
    bag.close()
    summary = gb.ground_bag(gb.GroundBagOptions(bag=bag.path, output=tmp_path / 'flat',
                                                use_depth=False), quick)
    assert '3D: off (turned off)' in summary.describe()
    assert sorted(read_bag(tmp_path / 'flat')) == ['/camera/detections', '/camera/grounding']

    def run(**kw):
        return gb.ground_bag(gb.GroundBagOptions(bag=bag.path, output=tmp_path / 'x', **kw),
                             quick)

    with pytest.raises(BagError, match='--depth-topic /camera/camera_info has type sensor_'):
        run(depth_topics=('/camera/camera_info',))
    with pytest.raises(BagError, match='--camera-info-topic /nope is not in the bag; its '
                                       'sensor_msgs/msg/CameraInfo topics: /camera/camera_info'):
        run(camera_info_topics=('/nope',))
    with pytest.raises(ValueError, match='depth_tolerance must be at least 0; got -1'):
        run(depth=DepthSettings(depth_tolerance=-1.0))
    with pytest.raises(BagError, match='depth is turned off, yet'):
        run(use_depth=False, depth_topics=('/camera/depth/image_raw',))
    assert not (tmp_path / 'x').exists()


# -- pairing and the pieces ----------------------------------------------------------------------

def test_pairing_rule():
    topics = {'/camera/image_raw': IMAGE, '/camera/image_raw/compressed':
              'sensor_msgs/msg/CompressedImage', '/camera/camera_info': CAMERA_INFO,
              '/camera/depth/image_raw': IMAGE, '/camera/depth/camera_info': CAMERA_INFO,
              '/rs/color/image_raw': IMAGE, '/rs/aligned_depth_to_color/image_raw': IMAGE,
              '/rs/depth/image_rect_raw': IMAGE, '/rs/depth/camera_info': CAMERA_INFO,
              '/rs/aligned_depth_to_color/camera_info': CAMERA_INFO,
              '/bare/image_raw': IMAGE, '/bare/depth/image_raw': IMAGE}
    images = [('/camera/image_raw', IMAGE),
              ('/camera/image_raw/compressed', 'sensor_msgs/msg/CompressedImage'),
              ('/rs/color/image_raw', IMAGE), ('/bare/image_raw', IMAGE)]
    pairs = pair_depth_topics(topics, images)
    assert {t: (p.depth_topic, p.info_topic) for t, p in pairs.items()} == {
        '/camera/image_raw': ('/camera/depth/image_raw', '/camera/camera_info'),
        '/camera/image_raw/compressed': ('/camera/depth/image_raw', '/camera/camera_info'),
        '/rs/color/image_raw': ('/rs/aligned_depth_to_color/image_raw',
                                '/rs/aligned_depth_to_color/camera_info'),
        '/bare/image_raw': ('/bare/depth/image_raw', None)}
    assert not pairs['/bare/image_raw'].enabled
    assert pairs['/bare/image_raw'].note == 'no camera_info topic in /bare; ' \
        '--camera-info-topic names one'
    assert camera_namespaces('/rs/color/image_raw', IMAGE) == ['/rs/color', '/rs']
    assert is_depth_name('/x/depth/image_raw') and not is_depth_name('/x/image_raw')
    # Explicit: one for all, one each in order, or an error.
    one = pair_depth_topics(topics, images[:2], ('/rs/depth/image_rect_raw',),
                            ('/camera/camera_info',))
    assert {p.depth_topic for p in one.values()} == {'/rs/depth/image_rect_raw'}
    each = pair_depth_topics(topics, images[2:], ('/rs/depth/image_rect_raw',
                                                  '/camera/depth/image_raw'))
    assert [(p.depth_topic, p.info_topic) for p in each.values()] == [
        ('/rs/depth/image_rect_raw', '/rs/depth/camera_info'),
        ('/camera/depth/image_raw', '/camera/depth/camera_info')]  # beside the depth
    with pytest.raises(BagError, match='--depth-topic given 2 times for 3 image topics'):
        pair_depth_topics(topics, images[:3], ('/camera/depth/image_raw',) * 2)
    with pytest.raises(BagError, match='no camera_info topic for /bare/image_raw in /bare; '
                                       'name it with --camera-info-topic'):
        pair_depth_topics(topics, images[3:], ('/bare/depth/image_raw',))


def test_depth_stream_indexes_and_fetches(tmp_path):
    bag = SceneBag(tmp_path / 'index')
    for i in range(4):
        bag.frame(T0 + i * PERIOD, scene(z_object=1.0 + i))
    bag.close()
    reader = gb.open_reader(bag.path)
    try:
        stream = DepthStream(reader, '/camera/depth/image_raw')
        assert len(stream) == 4 and stream.stamps == [T0 + i * PERIOD for i in range(4)]
        assert stream.closest(T0 + 2 * PERIOD + 40_000_000, 0.05) == (2, '')
        index, reason = stream.closest(T0 + 2 * PERIOD + 60_000_000, 0.05)
        assert index is None and reason.startswith('closest depth image is 60 ms')
        assert stream.depth(3)[int(pixels(CAT)[1]) + 2, int(pixels(CAT)[0]) + 2] == 4.0
        assert stream.depth(1)[0, 0] == np.float32(Z_PLANE)
    finally:
        reader.close()


def test_messages_without_and_with_lifted_boxes(steered):
    """grounding_msg keeps its old call; with lifted boxes, positions follow the best box."""
    store = project_typestore()
    types = RosbagsTypes(store)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    result = steered.ground(Frame(image, 'rgb'), Query(Task.CAPTION))
    header = make_header(store, T0, 'f')
    plain = grounding_msg(types, result, header, 'camera')
    assert all(not p.has_position and p.position_note == '' for p in plain.phrases)
    lifted = [[Lifted(None, 'why')] * len(p.boxes) for p in result.phrases]
    lifted[0] = [Lifted(Box3D((1.0, 2.0, 3.0), (0.1, 0.2, 0.0), 9))]
    msg = grounding_msg(types, result, header, 'camera', lifted)
    assert msg.phrases[0].has_position and msg.phrases[0].position.z == 3.0
    assert not msg.phrases[1].has_position and msg.phrases[1].position_note == 'why'
    array = detections_3d_msg(types, result, lifted, header)
    assert [d.id for d in array.detections] == ['0.0']
    raw = store.serialize_cdr(array, DETECTION_3D_ARRAY)
    back = store.deserialize_cdr(raw, DETECTION_3D_ARRAY)
    assert back.detections[0].bbox.size.y == pytest.approx(0.2)
    with pytest.raises(ValueError, match='lifted phrases for'):
        grounding_msg(types, result, header, 'camera', lifted[:1])


# -- the sample bag with depth -------------------------------------------------------------------

def test_sample_bag_with_depth(steered, tmp_path, capsys):
    spec = SampleSpec(rate_hz=10.0, duration_s=0.2, width=160, height=120,
                      photos=('chelsea',), depth='16UC1')
    sample = make_sample_bag(tmp_path / 'sample', spec)
    content = read_bag(sample.path)
    images, depths = content['/camera/image_raw'], content[DEPTH_TOPIC]
    assert [header_of(m) for m in depths] == [header_of(m) for m in images]
    assert depths[0].encoding == '16UC1' and (depths[0].width, depths[0].height) == (160, 120)
    info = content['/camera/camera_info'][0]
    assert (info.width, info.height) == (160, 120)
    assert (info.k[2], info.k[5]) == (79.5, 59.5) and info.k[0] == info.k[4] > 0
    millimetres = depths[0].data.view('<u2').reshape(120, 160)
    assert millimetres[60, 80] == 1200 and millimetres[60, 0] == 0  # subject; invalid band
    summary = gb.ground_bag(gb.GroundBagOptions(bag=sample.path, output=tmp_path / 'out'),
                            steered)
    stats = summary.topics['/camera/image_raw']
    assert stats.pairing.depth_topic == DEPTH_TOPIC and stats.depth.frames_3d == 2
    assert make_sample_bag(tmp_path / 'flat', SampleSpec(duration_s=0.1, width=32,
                                                         height=24)).spec.depth == ''
    assert DEPTH_TOPIC not in read_bag(tmp_path / 'flat')
    assert sample_main([str(tmp_path / 'cli'), '--duration', '0.1', '--width', '32',
                        '--height', '24', '--depth']) == 0
    assert f'depth (32FC1) on {DEPTH_TOPIC}' in capsys.readouterr().out
    assert read_bag(tmp_path / 'cli')[DEPTH_TOPIC][0].encoding == '32FC1'
    with pytest.raises(BagError, match="unknown depth encoding 'mono8'"):
        make_sample_bag(tmp_path / 'bad', SampleSpec(depth='mono8'))
