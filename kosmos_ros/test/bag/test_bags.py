# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Bags: the sample stream, offline grounding, live replay under sim time, the demo.

Real bags written and read by rosbags, real photographs, the tiny random model.
"""

import itertools
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import cv2
from kosmos_ros_interfaces.msg import Grounding
from kosmos_ros_interfaces.srv import Ground
import numpy as np
import pytest
import rclpy
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from kosmos_ros.bag import BagError
from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.player import BagPlayer, main as player_main
from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.bag.typestore import (COMPRESSED_IMAGE, find_message_folder, IMAGE,
                                      project_typestore)
from kosmos_ros.datatypes import Query, Task
from kosmos_ros.demo import find_weights, main as demo_main, NO_WEIGHTS_EXIT, TINY_TAG
from kosmos_ros.errors import PromptError
from kosmos_ros.images import frame_from_message
from kosmos_ros.testing.tiny_model import TINY_LABEL

from helpers import read_bag, stamp_of, wait_for  # noqa: I100
from node_harness import NodeHarness  # noqa: I100


RAW = '/camera/image_raw'
JPEG = '/camera/image_raw/compressed'
FRAMES = 8  # 0.8 s at 10 Hz
_names = itertools.count()


def grounding_fields(msg):
    """Everything a Grounding carries except the measured inference time."""
    return (stamp_of(msg), msg.camera, int(msg.task), msg.prompt, msg.text,
            int(msg.image_width), int(msg.image_height),
            [(p.text, int(p.start), int(p.end),
              [(b.center.position.x, b.center.position.y, b.center.theta, b.size_x, b.size_y)
               for b in p.boxes], [float(s) for s in p.box_scores], float(p.score))
             for p in msg.phrases])


def detection_fields(msg):
    return (stamp_of(msg), [(stamp_of(d), d.id, d.bbox.center.position.x,
                             d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y,
                             [(r.hypothesis.class_id, r.hypothesis.score) for r in d.results])
                            for d in msg.detections])


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """Write the sample stream (8 frames of 320x240 at 10 Hz) as MCAP (rgb8), sqlite3 (bgr8)."""
    root = tmp_path_factory.mktemp('bags')
    spec = dict(rate_hz=10.0, duration_s=FRAMES / 10.0, width=320, height=240,
                photos=('chelsea', 'coffee', 'astronaut'))
    return {'mcap': make_sample_bag(root / 'mcap', SampleSpec(storage='mcap', **spec)),
            'sqlite3': make_sample_bag(root / 'sqlite3',
                                       SampleSpec(storage='sqlite3', encoding='bgr8', **spec))}


@pytest.fixture(scope='module')
def quick(engine):
    return engine.with_options(max_new_tokens=8)


def options(bag, out, **kw):
    return gb.GroundBagOptions(bag=Path(bag), output=Path(out), **kw)


# -- the sample bag and the typestore ------------------------------------------------------------

def test_sample_bag_is_a_camera_stream(bags):
    for storage, bag in bags.items():
        content = read_bag(bag.path)
        assert sorted(content) == ['/camera/camera_info', RAW, JPEG]
        assert len(bag.stamps_ns) == FRAMES
        assert np.all(np.diff(bag.stamps_ns) == 100_000_000)  # 10 Hz
        for topic, items in content.items():
            assert len(items) == FRAMES
            stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in items]
            assert stamps == list(bag.stamps_ns)
            assert all(m.header.frame_id == 'camera_optical_frame' for _, m in items)
            assert all(t > s for (t, _), s in zip(items, stamps))  # received after capture
        raws = [frame_from_message(m).to_rgb() for _, m in content[RAW]]
        jpegs = [frame_from_message(m).to_rgb() for _, m in content[JPEG]]
        assert content[RAW][0][1].encoding == ('rgb8' if storage == 'mcap' else 'bgr8')
        assert raws[0].shape == (240, 320, 3)
        for raw, jpeg in zip(raws, jpegs):
            assert np.abs(raw.astype(int) - jpeg.astype(int)).mean() < 8  # same picture
        assert not any(np.array_equal(a, b) for a, b in zip(raws, raws[1:]))  # it pans
        info = content['/camera/camera_info'][0][1]
        assert (info.width, info.height, info.distortion_model) == (320, 240, 'plumb_bob')
        assert info.k[2] == pytest.approx(159.5) and info.k[0] > 0
    assert np.array_equal(read_bag(bags['mcap'].path)[RAW][0][1].data.reshape(240, 320, 3),
                          read_bag(bags['sqlite3'].path)[RAW][0][1].data.reshape(
                              240, 320, 3)[:, :, ::-1])
    with pytest.raises(BagError, match='exists already'):
        make_sample_bag(bags['mcap'].path, SampleSpec())
    with pytest.raises(BagError, match="unknown storage 'zip'"):
        make_sample_bag(bags['mcap'].path.parent / 'x', SampleSpec(storage='zip'))


def test_typestore_finds_the_installed_definitions():
    for package in ('kosmos_ros_interfaces', 'vision_msgs'):
        folder = find_message_folder(package)
        assert (folder / ('Grounding.msg' if package != 'vision_msgs'
                          else 'Detection2DArray.msg')).is_file()
    store = project_typestore()
    share = find_message_folder('kosmos_ros_interfaces')
    expected = json.loads((share / 'Grounding.json').read_text())['type_hashes'][0]
    assert store.hash_rihs01('kosmos_ros_interfaces/msg/Grounding') == expected['hash_string']


# -- offline grounding ---------------------------------------------------------------------------

@pytest.mark.parametrize('storage,topic', [('mcap', RAW), ('mcap', JPEG), ('sqlite3', RAW),
                                           ('sqlite3', JPEG)])
def test_ground_bag_one_result_per_frame(bags, steered, tmp_path, storage, topic):
    bag = bags[storage]
    out = tmp_path / 'out'
    summary = gb.ground_bag(options(bag.path, out, topics=(topic,), rate_hz=5.0), steered)
    assert summary.grounded == FRAMES // 2 and summary.topics[topic].throttled == FRAMES // 2
    assert summary.skipped == 0 and not summary.interrupted
    source = read_bag(bag.path)[topic][::2]  # 5 Hz of a 10 Hz stream: every other frame
    result = read_bag(out)
    assert sorted(result) == ['/camera/detections', '/camera/grounding']
    groundings, detections = result['/camera/grounding'], result['/camera/detections']
    assert len(groundings) == len(detections) == FRAMES // 2
    triples = zip(source, groundings, detections)
    for index, ((t_src, src), (t_g, g), (t_d, d)) in enumerate(triples):
        assert t_src == t_g == t_d  # written at the source's bag time
        assert stamp_of(g) == stamp_of(d) == stamp_of(src)
        assert g.camera == 'camera' and g.task == 0 and (g.image_width, g.image_height) == \
            (320, 240)
        assert g.text.startswith('An image of a cat and two cups')
        assert [(p.text, len(p.boxes)) for p in g.phrases][:2] == [('a cat', 1), ('two cups', 2)]
        assert g.inference_time.sec > 0 or g.inference_time.nanosec > 0
        if index not in (0, len(source) - 1):
            continue  # the engine run directly on the first and the last frame
        expected = steered.ground(frame_from_message(src), Query(Task.CAPTION))
        assert g.text == expected.text
        boxes = [(b, p.text) for p in expected.phrases for b in p.boxes]
        assert len(d.detections) == len(boxes) >= 3
        for det, (box, phrase) in zip(d.detections, boxes):
            assert stamp_of(det) == stamp_of(src)
            assert det.results[0].hypothesis.class_id == phrase
            assert det.results[0].hypothesis.score == pytest.approx(box.score)
            assert 0.0 < box.score <= 1.0
            assert (det.bbox.center.position.x, det.bbox.center.position.y) == \
                pytest.approx(box.pixels.center)
            assert (det.bbox.size_x, det.bbox.size_y) == \
                pytest.approx((box.pixels.width, box.pixels.height))
        for phrase, msg in zip(expected.phrases, g.phrases):
            assert (msg.start, msg.end) == (phrase.start, phrase.end)
            assert g.text[msg.start:msg.end] == msg.text
            assert list(msg.box_scores) == pytest.approx([b.score for b in phrase.boxes])
            assert msg.score == pytest.approx(phrase.score)


def test_topics_are_picked_automatically_and_copied(bags, quick, tmp_path):
    bag = bags['mcap']
    reader = gb.open_reader(bag.path)
    try:
        picked = gb.select_image_topics(reader)
    finally:
        reader.close()
    assert [(s.topic, s.base, s.camera) for s in picked] == [(RAW, '/camera', 'camera')]
    both = tmp_path / 'both'
    summary = gb.ground_bag(options(bag.path, both, topics=(RAW, JPEG), rate_hz=5.0,
                                    copy_input=True), quick)
    assert {t: (s.base, s.grounded, s.throttled) for t, s in summary.topics.items()} == \
        {RAW: ('/camera', 4, 4), JPEG: ('/camera/image_raw/compressed', 4, 4)}
    content = read_bag(both)
    source = read_bag(bag.path)
    for topic in (RAW, JPEG, '/camera/camera_info'):  # copied unchanged, at the same times
        assert [t for t, _ in content[topic]] == [t for t, _ in source[topic]]
    assert np.array_equal(content[RAW][3][1].data, source[RAW][3][1].data)
    assert len(content['/camera/grounding']) == 4
    assert len(content['/camera/image_raw/compressed/grounding']) == 4


def test_ros1_bag(tmp_path, quick, photos):
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    path = tmp_path / 'old.bag'
    rgb = cv2.resize(photos['rocket'], (160, 120))
    with Ros1Writer(path) as writer:
        conn = writer.add_connection('/front/image_raw', IMAGE, typestore=store)
        for i in range(2):
            header = types['std_msgs/msg/Header'](
                seq=i, stamp=types['builtin_interfaces/msg/Time'](sec=50, nanosec=i * 1000),
                frame_id='front')
            msg = types[IMAGE](header=header, height=120, width=160, encoding='rgb8',
                               is_bigendian=0, step=480, data=rgb.reshape(-1))
            writer.write(conn, 50 * 10**9 + i * 1000, store.serialize_ros1(msg, IMAGE))
    out = tmp_path / 'out'
    summary = gb.ground_bag(options(path, out, copy_input=True), quick)
    assert summary.grounded == 2
    content = read_bag(out)
    assert [stamp_of(m) for _, m in content['/front/grounding']] == \
        [(50, 0, 'front'), (50, 1000, 'front')]
    assert np.array_equal(content['/front/image_raw'][1][1].data, rgb.reshape(-1))


def test_bad_bags_give_clear_errors(bags, quick, tmp_path):
    def run(bag, **kw):
        return gb.ground_bag(options(bag, tmp_path / f'out{next(_names)}', **kw), quick)

    with pytest.raises(BagError, match='no bag at .*nope: no such file or folder'):
        run(tmp_path / 'nope')
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(BagError, match='unknown storage for .*notes.txt'):
        run(tmp_path / 'notes.txt')
    (tmp_path / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(100))
    with pytest.raises(BagError, match='cannot read bag .*broken.mcap: Unexpected record'):
        run(tmp_path / 'broken.mcap')
    odd = tmp_path / 'odd'
    odd.mkdir()
    with pytest.raises(BagError, match='is not a rosbag2 folder: it has no metadata.yaml'):
        run(odd)
    metadata = (bags['mcap'].path / 'metadata.yaml').read_text()
    (odd / 'metadata.yaml').write_text(metadata.replace('storage_identifier: mcap',
                                                        'storage_identifier: foo'))
    with pytest.raises(BagError, match="unknown storage 'foo' in .*metadata.yaml"):
        run(odd)
    store = project_typestore()
    no_images = tmp_path / 'no_images'
    with Writer(no_images, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=store)
        writer.write(conn, 1, store.serialize_cdr(store.types['std_msgs/msg/String'](
            data='hi'), 'std_msgs/msg/String'))
    with pytest.raises(BagError, match=r'no image topic .* its topics: /chatter \(std_msgs'):
        run(no_images)
    with pytest.raises(BagError, match='topic /left is not in the bag; image topics: /camera'):
        run(bags['mcap'].path, topics=('/left',))
    with pytest.raises(BagError, match='/camera/camera_info has type sensor_msgs/msg/Camera'):
        run(bags['mcap'].path, topics=('/camera/camera_info',))
    with pytest.raises(BagError, match='exists already'):
        gb.ground_bag(options(bags['mcap'].path, bags['sqlite3'].path), quick)
    with pytest.raises(PromptError, match='empty prompt'):
        run(bags['mcap'].path, task='find', prompt=' ')
    assert not any(p.name.startswith('out') for p in tmp_path.iterdir())  # nothing written


def _image(store, sec, encoding='rgb8', data=None, size=(48, 64)):
    types = store.types
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=0), frame_id='cam')
    h, w = size
    data = np.full(h * w * 3, 128, np.uint8) if data is None else data
    return types[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                        step=w * 3, data=data)


def _jpeg(store, sec, payload):
    types = store.types
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=0), frame_id='cam2')
    return types[COMPRESSED_IMAGE](header=header, format='jpeg',
                                   data=np.frombuffer(payload, np.uint8))


def test_bad_frames_are_counted_skips(quick, tmp_path, photos):
    store = project_typestore()
    good = cv2.imencode('.jpg', cv2.resize(photos['coffee'], (64, 48)))[1].tobytes()
    raw = [_image(store, 1), _image(store, 2, encoding='32FC1'), _image(store, 3),
           _image(store, 4, data=np.zeros(10, np.uint8))]
    jpegs = [_jpeg(store, 1, good), _jpeg(store, 2, good[:len(good) // 2]),
             _jpeg(store, 3, b'not an image at all'), _jpeg(store, 4, good)]
    bag = tmp_path / 'bad'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        c_raw = writer.add_connection('/cam/image_raw', IMAGE, typestore=store)
        c_jpeg = writer.add_connection('/cam2/image_raw/compressed', COMPRESSED_IMAGE,
                                       typestore=store)
        for i, (r, j) in enumerate(zip(raw, jpegs), 1):
            writer.write(c_raw, i * 10**9, store.serialize_cdr(r, IMAGE))
            writer.write(c_jpeg, i * 10**9 + 1, store.serialize_cdr(j, COMPRESSED_IMAGE))
        writer.write(c_raw, 5 * 10**9, bytes(store.serialize_cdr(_image(store, 5), IMAGE))[:40])
    seen = []
    summary = gb.ground_bag(options(bag, tmp_path / 'out'), quick, on_frame=seen.append)
    cam, cam2 = summary.topics['/cam/image_raw'], summary.topics['/cam2/image_raw/compressed']
    assert (cam.messages, cam.grounded, cam2.messages, cam2.grounded) == (5, 2, 4, 2)
    reasons = sorted(cam.skipped) + sorted(cam2.skipped)
    assert reasons[0].startswith('cannot deserialize sensor_msgs/msg/Image')
    assert reasons[1].startswith('rgb8 image 64x48: data holds 10 bytes')
    assert reasons[2] == "unsupported image encoding '32FC1'"
    assert reasons[3].startswith('compressed image (format') and 'neither JPEG nor PNG' in \
        reasons[3]
    assert reasons[4].startswith('truncated JPEG')
    assert len(seen) == 9 and sum(1 for o in seen if o.reason) == 5
    assert 'skipped 1x: truncated JPEG' in summary.describe()
    content = read_bag(tmp_path / 'out')
    assert [m.header.stamp.sec for _, m in content['/cam/grounding']] == [1, 3]
    assert [m.header.stamp.sec for _, m in content['/cam2/grounding']] == [1, 4]


def test_interrupt_leaves_a_readable_bag(bags, quick, tmp_path):
    grounded = []

    def stop_after_three(outcome):
        if outcome.result is not None:
            grounded.append(outcome)
            if len(grounded) == 3:
                raise KeyboardInterrupt  # as Ctrl-C would, between two frames

    out = tmp_path / 'out'
    html = tmp_path / 'report' / 'index.html'
    summary = gb.ground_bag(options(bags['mcap'].path, out, html=html), quick,
                            on_frame=stop_after_three)
    assert summary.interrupted and summary.grounded == 3
    assert 'interrupted' in summary.describe()
    content = read_bag(out)
    assert [stamp_of(m)[:2] for _, m in content['/camera/grounding']] == \
        [divmod(s, 10**9) for s in bags['mcap'].stamps_ns[:3]]
    assert len(content['/camera/detections']) == 3
    assert html.read_text().count('<img src="index_frames/') == 3


def test_command_line(bags, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    out, html = tmp_path / 'out', tmp_path / 'report.html'
    code = gb.main([str(bags['sqlite3'].path), '-o', str(out), '--tiny-model', '--device', 'cpu',
                    '--max-new-tokens', '8', '--rate', '5', '--topic', JPEG, '--html',
                    str(html), '--html-embed', '--copy-input'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f'[{TINY_LABEL}]' in captured.out and 'grounding [TINY MODEL]' in captured.err
    assert f'{JPEG} (sensor_msgs/msg/CompressedImage): {FRAMES} messages, 4 grounded, 4 ' \
        'throttled, 0 skipped -> /camera/detections, /camera/grounding' in captured.out
    assert html.read_text().count('<img src="data:image/jpeg;base64,') == 4
    assert TINY_LABEL in html.read_text()
    content = read_bag(out)
    assert len(content['/camera/grounding']) == 4 and len(content[RAW]) == FRAMES
    assert gb.main([str(tmp_path / 'missing'), '--tiny-model']) == 2
    assert 'ground_bag: error: no bag at' in capsys.readouterr().err
    assert gb.main([str(bags['mcap'].path), '--topic', '/nope', '--tiny-model']) == 2
    assert 'topic /nope is not in the bag' in capsys.readouterr().err


# -- live replay into the node -------------------------------------------------------------------

class Live(NodeHarness):
    """A grounding node (sim time) in its own namespace fed by the bag player."""

    def __init__(self, ros, model_dir, topic, steer=None, **params):
        values = dict(image_qos_reliability='reliable', image_qos_depth=10, max_frame_age=0.0,
                      use_sim_time=True, **{'camera.topic': 'camera/image_raw'})
        values.update(params)
        super().__init__(ros, model_dir, cameras=('camera',), steer=steer,
                         compressed=('camera',) if topic == JPEG else (), **values)
        self.topic = topic
        self.players = []

    def warm_up(self, image_msg):
        """Run the node's engine once (a service call), so the first frame is not slow."""
        assert self.call(task=Ground.Request.CAPTION, image=image_msg).success

    def play(self, bag, rate, topics=None, remap=None):
        player = BagPlayer(self.client, bag, rate=rate, topics=topics or [self.topic],
                           remap=remap or {self.topic: self.ns + self.topic})
        self.players.append(player)
        assert player.wait_for_subscribers(timeout=10.0)
        return player, player.play()

    def settle(self, expected, timeout=30.0):
        """Wait for ``expected`` groundings, or until the worker has been idle for 1 s.

        Then wait until the worker is idle and every result it made has arrived: a result
        beyond ``expected`` (a bug) is then here to fail the test, with no pause to hope for.
        """
        worker = self.node._worker
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline and len(self.results['camera']) < expected:
            if worker.busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.0:
                break
            time.sleep(0.02)
        assert wait_for(lambda: not worker.busy and len(self.results['camera']) >=
                        self.counts('camera')['inferences'], 10)

    def collect(self, topic, msg_type):
        received = []
        self.client.create_subscription(msg_type, f'{self.ns}/replayed{topic}',
                                        received.append, 10)
        return received

    def close(self):
        # Stopped here, their publishers destroyed with the client node once it has left the
        # executor (super().close()): destroying a publisher while the executor holds its QoS
        # event handler in a wait set raised InvalidHandle out of the executor.
        for player in self.players:
            player.stop()
            player.join(5.0)
        super().close()


def _rclpy_image(rgb):
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                 step=rgb.shape[1] * 3, data=rgb.tobytes())


def test_live_replay_equals_offline(ros, tiny_model_dir, bags, steered, steer, tmp_path, photos):
    bag = bags['mcap']
    out = tmp_path / 'offline'
    summary = gb.ground_bag(options(bag.path, out, topics=(RAW,)), steered)
    assert summary.grounded == FRAMES
    live = Live(ros, tiny_model_dir, RAW, steer=steer, rate_hz=100.0, max_new_tokens=24)
    try:
        live.warm_up(_rclpy_image(cv2.resize(photos['coffee'], (320, 240))))
        player, stats = live.play(bag.path, rate=0.5)
        assert stats.published == {RAW: FRAMES} and stats.clock_messages > FRAMES
        # Every frame is due (100 Hz); a frame that arrives while the worker is still busy
        # with the previous one is superseded, as live, so a loaded machine may see fewer.
        live.settle(FRAMES)
        clock = live.node.get_clock()
        assert clock.ros_time_is_active  # use_sim_time: the node's time is the bag's
        assert bag.stamps_ns[-2] <= clock.now().nanoseconds <= player.end_ns
        # The offline output bag, replayed: rclpy reads the CDR that rosbags wrote.
        grounding_copy = live.collect('/camera/grounding', Grounding)
        detection_copy = live.collect('/camera/detections', Detection2DArray)
        outputs = ['/camera/grounding', '/camera/detections']
        live.play(out, rate=4.0, topics=outputs,
                  remap={t: f'{live.ns}/replayed{t}' for t in outputs})
        assert wait_for(lambda: len(grounding_copy) == len(detection_copy) == FRAMES, 10)
        offline = {stamp_of(m): m for _, m in read_bag(out)['/camera/grounding']}
        copies = {stamp_of(m): m for m in grounding_copy}
        detection_copies = {stamp_of(m): m for m in detection_copy}
        stamps = [stamp_of(m) for m in live.groundings('camera')]
        assert len(live.groundings('camera')) >= FRAMES // 2, stamps
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        bag_stamps = [(*divmod(s, 10**9), 'camera_optical_frame') for s in bag.stamps_ns]
        assert set(stamps) <= set(bag_stamps)  # header stamps = bag stamps
        for msg in live.groundings('camera'):
            assert grounding_fields(msg) == grounding_fields(offline[stamp_of(msg)]) == \
                grounding_fields(copies[stamp_of(msg)])
        for msg in live.detections['camera']:
            assert detection_fields(msg) == detection_fields(detection_copies[stamp_of(msg)])
        assert live.groundings('camera')[0].phrases[1].text == 'two cups'
    finally:
        live.close()


def test_throttle_counts_agree_live_and_offline(ros, tiny_model_dir, bags, quick, tmp_path,
                                                photos):
    bag = bags['sqlite3']
    summary = gb.ground_bag(options(bag.path, tmp_path / 'out', topics=(JPEG,), rate_hz=4.0),
                            quick)
    stats = summary.topics[JPEG]
    assert (stats.grounded, stats.throttled) == (3, 5)  # 0.0, 0.3 and 0.6 s of 0.0 to 0.7 s
    offline = [m for _, m in read_bag(tmp_path / 'out')['/camera/grounding']]
    live = Live(ros, tiny_model_dir, JPEG, rate_hz=4.0, max_new_tokens=8)
    try:
        live.warm_up(_rclpy_image(cv2.resize(photos['coffee'], (320, 240))))
        live.play(bag.path, rate=0.5)
        live.settle(3)
        assert [grounding_fields(m) for m in live.groundings('camera')] == \
            [grounding_fields(m) for m in offline]
    finally:
        live.close()


def test_player_errors(ros, bags, capsys):
    node = rclpy.create_node('player_errors', context=ros.context)
    try:
        with pytest.raises(BagError, match='topic /left is not in'):
            BagPlayer(node, bags['mcap'].path, topics=['/left'])
        with pytest.raises(BagError, match='rate must be positive'):
            BagPlayer(node, bags['mcap'].path, rate=0.0)
        with pytest.raises(BagError, match='no bag at'):
            BagPlayer(node, bags['mcap'].path.parent / 'nope')
    finally:
        node.destroy_node()
    assert player_main([str(bags['mcap'].path.parent / 'nope')]) == 2
    assert player_main([str(bags['mcap'].path), '--remap', 'nonsense']) == 2
    assert 'play_bag: error: --remap takes FROM:=TO' in capsys.readouterr().err


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_play_bag_stops_on_a_signal_without_a_traceback(ros, bags, signum):
    """Ctrl-C (the way to end --loop) or SIGTERM: the count printed, exit 130, no traceback."""
    from rosgraph_msgs.msg import Clock

    clock_topic = f'/play_bag_signal_{os.getpid()}_{signum}'
    proc = subprocess.Popen(
        [sys.executable, '-m', 'kosmos_ros.bag.player', str(bags['mcap'].path), '--loop',
         '--delay', '0', '--ros-args', '-r', f'/clock:={clock_topic}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node(f'play_bag_signal_{signum}', context=ros.context)
    ticks = []
    node.create_subscription(Clock, clock_topic, ticks.append, 10)
    ros.executor.add_node(node)
    try:
        assert wait_for(lambda: len(ticks) >= 5 or proc.poll() is not None, 60), \
            'play_bag never published its clock'
        proc.send_signal(signum)  # while it publishes
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, output
        assert 'Traceback' not in output and 'RCLError' not in output, output
        assert f'stopped by {signal.Signals(signum).name}' in output, output
    finally:
        ros.executor.remove_node(node)
        node.destroy_node()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- the demo ------------------------------------------------------------------------------------

def test_demo_without_weights_says_how_to_fix(bags, tmp_path, capsys):
    code = demo_main(['--bag', str(bags['mcap'].path), '--out', str(tmp_path / 'demo'),
                      '--model', 'kosmos-ros-tests/no-such-model'])
    err = capsys.readouterr().err
    assert code == NO_WEIGHTS_EXIT
    assert "No KOSMOS-2 weights for 'kosmos-ros-tests/no-such-model'" in err
    assert 'the Hugging Face cache' in err and 'HF_HUB_OFFLINE is set' in err
    assert 'make run RUN_ARGS=--tiny' in err


def test_find_weights_uses_the_hugging_face_cache(tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants
    repo = tmp_path / 'hub' / 'models--microsoft--kosmos-2-patch14-224'
    snapshot = repo / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('0' * 40)
    for item in Path(tiny_model_dir).iterdir():
        (snapshot / item.name).symlink_to(item)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    folder, tried = find_weights('microsoft/kosmos-2-patch14-224', local_files_only=True)
    assert Path(folder) == snapshot and tried == []
    assert find_weights(str(tiny_model_dir), False) == (str(tiny_model_dir), [])
    assert find_weights('./no/such/folder', False)[0] is None


def test_demo_tiny_end_to_end(tiny_model_dir, tmp_path):
    env = dict(os.environ, KOSMOS_ROS_TINY_MODEL_DIR=str(tiny_model_dir),
               ROS_DOMAIN_ID=str((int(os.environ['ROS_DOMAIN_ID']) + 101) % 232))
    bag, out = tmp_path / 'sample_bag', tmp_path / 'demo'
    done = subprocess.run(
        [sys.executable, '-m', 'kosmos_ros.demo', '--tiny', '--bag', str(bag), '--out',
         str(out), '--device', 'cpu', '--max-new-tokens', '8', '--playback-rate', '3',
         '--settle', '30'], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith(f'[{TINY_TAG}] ') for line in lines), lines
    assert any('building the sample bag' in line for line in lines)
    groundings = [line for line in lines if 'camera @ 1700000' in line]
    assert len(groundings) >= 3, lines  # 1 Hz of a 6 s bag
    assert any(line.endswith(f'annotated frames in {out}/') for line in lines)
    assert len(list(out.glob('camera_1700000*.jpg'))) >= 3
    assert (bag / 'metadata.yaml').is_file()
    node_logs = [line for line in done.stderr.splitlines() if '[kosmos_grounding]' in line]
    assert node_logs and all(line.startswith(f'[{TINY_TAG}]') for line in node_logs)
