# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Image QoS over real DDS: a camera in another process, as a driver is, and the node's tracks.

In one process Fast DDS hands samples over in memory and loses none; a camera driver is
another process, whose frames cross Fast DDS's transports (shared memory on one host, with
0.5 MB segments by default). A best-effort reader loses the 0.9 MB frames of a 640x480 rgb8
camera there; a reliable one has lost fragments sent again. So the camera here is a process
of its own (``CAMERA``), told over its stdin how many frames to send; the node runs with its
default parameters (a tiny model on the CPU), and a client subscribes ``front/tracks``, whose
messages carry each tracked frame's header.

The intake's ``auto`` choice itself (reliable only when every publisher offers it; looked at
again while taking) is tested on :class:`CameraIntake` directly, with publishers in this
process (the choice reads the DDS graph, which in-process publishers are part of).
"""

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from kosmos_ros.node import intake as intake_module
from kosmos_ros.node.diagnostics import subscription_reliability
from kosmos_ros.node.grounding_node import GroundingNode
from kosmos_ros.node.intake import CameraIntake, matching_reliability
from kosmos_ros.node.parameter_table import SPECS

from helpers import wait_for  # noqa: I100

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT

# The camera process: a publisher with rclpy's default QoS (reliable, keep last 10) or
# sensor-data QoS (best effort, keep last 5). Says 'ready' once a subscription matched it;
# then each line 'N' sends N frames at HZ, freshly stamped, and answers with their stamps.
CAMERA = r'''
import json, sys, time
import cv2
import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from kosmos_ros.testing.samples import load_photo
topic, width, height, hz, qos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), sys.argv[5]
rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
node = rclpy.create_node('qos_test_camera')
pub = node.create_publisher(Image, topic, qos_profile_sensor_data if qos == 'sensor'
                            else QoSProfile(depth=10))
rgb = cv2.resize(load_photo('chelsea'), (width, height), interpolation=cv2.INTER_AREA)
msg = Image(height=height, width=width, encoding='rgb8', step=width * 3, data=rgb.tobytes())
msg.header.frame_id = 'camera'
deadline = time.monotonic() + 60
while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
print('ready', flush=True)
for line in sys.stdin:
    sent, next_time = [], time.monotonic()
    for _ in range(int(line)):
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        pub.publish(msg)
        sent.append(stamp)
        next_time += 1.0 / hz
        time.sleep(max(next_time - time.monotonic(), 0.0))
    print(json.dumps(sent), flush=True)
node.destroy_node()
rclpy.try_shutdown()
'''

_names = itertools.count()


def stamp_ns(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class Camera:
    """The camera process; :meth:`send` streams frames and returns their stamps."""

    def __init__(self, topic, qos='default', size=(640, 480), hz=20.0):
        self.proc = subprocess.Popen(
            [sys.executable, '-c', CAMERA, topic, str(size[0]), str(size[1]), str(hz), qos],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._line(90.0).strip() == 'ready', f'camera exited: {self.proc.poll()}'

    def _line(self, timeout):
        out = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        assert out and out[0], f'no answer from the camera (exit code {self.proc.poll()})'
        return out[0]

    def send(self, frames):
        self.proc.stdin.write(f'{frames}\n')
        self.proc.stdin.flush()
        return json.loads(self._line(60.0 + frames))

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def default_node(ros, model_dir):
    """Yield a node with default parameters (but the tiny model) and its tracks, by stamp.

    Defaults include continuous grounding at 1 Hz and the image QoS under test.
    """
    ns = f'/qos{os.getpid()}_{next(_names)}'
    values = dict(model=str(model_dir), device='cpu', local_files_only=True, cameras=['front'])
    node = GroundingNode(context=ros.context, namespace=ns, parameter_overrides=[
        Parameter(k, value=v) for k, v in values.items()])
    client = rclpy.create_node('qos_client', context=ros.context, namespace=ns)
    tracks = {}
    client.create_subscription(
        Detection2DArray, 'front/tracks', lambda msg: tracks.setdefault(stamp_ns(msg), msg),
        QoSProfile(depth=100, reliability=RELIABLE))
    ros.executor.add_node(node)
    ros.executor.add_node(client)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        # Tracked once the node counts a tracks subscriber (it looks once a second).
        assert wait_for(lambda: node.count_subscribers(f'{ns}/front/tracks') > 0, 10.0)
        yield node, tracks, f'{ns}/front/image_raw'
    finally:
        node.close()
        ros.executor.remove_node(node)
        ros.executor.remove_node(client)
        time.sleep(0.2)
        node.destroy_node()
        client.destroy_node()


def warm_up(camera, tracks, timeout=30.0):
    """Stream until a frame comes back as tracks: matched, tracked, its QoS settled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(stamp in tracks for stamp in camera.send(10)):
            return
    pytest.fail('no tracks for the camera within the warm-up')


def tracked_share(camera, tracks, frames):
    sent = camera.send(frames)
    wait_for(lambda: sent[-1] in tracks, 5.0)
    time.sleep(0.3)  # the last frames' tracks on their way
    return sum(1 for s in sent if s in tracks) / len(sent), len(sent)


def test_default_image_qos_tracks_every_frame_of_a_default_qos_camera(ros, tiny_model_dir):
    """A reliable (rclpy default QoS) 640x480 camera: tracks on >= 85 % of its frames.

    The old default (best effort, depth 1) tracked 40-50 % of them in every window: the frames
    that did not fit Fast DDS's shared-memory segment whole were lost. On a quiet machine every
    frame gets its tracks; with four test processes on two cores the tracking thread itself
    passes over a frame for a newer one now and then (by design: the newest frame wins), 80 %
    of a window at worst seen (once, in CI). Load only ever lowers the share, so the test looks
    at up to three windows of 3 s and needs one of them at >= 85 %; a loss in the transport,
    which the old default had, is in every window.
    The camera starts after the node subscribed, so the node subscribed before any publisher
    was known (best effort) and must have followed the camera's reliable QoS since.
    """
    with default_node(ros, tiny_model_dir) as (node, tracks, topic):
        camera = Camera(topic, 'default')
        try:
            warm_up(camera, tracks)
            shares = []
            while len(shares) < 3 and (not shares or shares[-1] < 0.85):
                share, sent = tracked_share(camera, tracks, 60)  # 3 s at 20 Hz
                shares.append(share)
            assert max(shares) >= 0.85, \
                f'tracks on {", ".join(f"{s:.0%}" for s in shares)} of {sent} frames each'
            intake = node._cameras['front'].intake
            assert intake.reliability == 'reliable'
            assert intake.qos_changes == 1 and intake.subscribed_count == 1
        finally:
            camera.close()


def test_default_image_qos_receives_a_sensor_data_camera(ros, tiny_model_dir):
    """A best-effort (sensor-data QoS) camera, which a reliable reader would not match."""
    with default_node(ros, tiny_model_dir) as (node, tracks, topic):
        camera = Camera(topic, 'sensor')
        try:
            warm_up(camera, tracks)
            share, sent = tracked_share(camera, tracks, 40)
            # Best effort on both sides: frames cross (how many, the transport decides).
            assert share > 0, f'no tracks for {sent} frames'
            intake = node._cameras['front'].intake
            assert intake.reliability == 'best_effort' and intake.qos_changes == 0
        finally:
            camera.close()


# -- the auto choice on the intake itself ----------------------------------------------------

@pytest.mark.fast
@pytest.mark.parametrize('offered, current, expected', [
    ([RELIABLE], None, 'reliable'),
    ([RELIABLE, RELIABLE], 'best_effort', 'reliable'),
    ([RELIABLE, BEST_EFFORT], 'reliable', 'best_effort'),
    ([BEST_EFFORT], None, 'best_effort'),
    ([ReliabilityPolicy.SYSTEM_DEFAULT], None, 'best_effort'),
    ([], None, 'best_effort'),
    ([], 'reliable', 'reliable'),
])
def test_auto_is_reliable_only_when_every_publisher_is(offered, current, expected):
    assert matching_reliability(offered, current) == expected


@pytest.mark.fast
def test_the_default_is_auto_with_depth_1():
    assert SPECS['image_qos_reliability'].default == 'auto'
    assert set(SPECS['image_qos_reliability'].choices) == {'auto', 'reliable', 'best_effort'}
    assert SPECS['image_qos_depth'].default == 1


@pytest.fixture
def graph(ros, monkeypatch):
    """Yield a never-spun helper node (as the node's) and a publishing node; re-check fast."""
    monkeypatch.setattr(intake_module, 'RECHECK_PERIOD', 0.05)
    ns = f'/qos{os.getpid()}_{next(_names)}'
    helper = rclpy.create_node('intake', context=ros.context, namespace=ns,
                               start_parameter_services=False, enable_rosout=False)
    publishers = rclpy.create_node('cameras', context=ros.context, namespace=ns,
                                   start_parameter_services=False, enable_rosout=False)
    yield helper, publishers
    helper.destroy_node()
    publishers.destroy_node()


def settled(intake, expected, timeout=10.0):
    """Take until the intake subscribes with ``expected`` (each take may look again)."""
    return wait_for(lambda: intake.take() is None and intake.reliability == expected, timeout)


def receives(intake, publisher):
    """Tell whether a frame published now is taken from the intake's subscription."""
    msg = Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12))
    msg.header.stamp.sec = 7
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        publisher.publish(msg)
        taken = intake.take()
        if taken is not None and taken.msg.header.stamp.sec == 7:
            return True
        time.sleep(0.05)
    return False


def test_auto_follows_the_publishers_that_come_and_go(graph):
    """None: best effort; reliable ones only: reliable; one best-effort among them: best effort.

    With no publisher left it keeps what it has; a subscription made anew counts in
    ``qos_changes``, not in ``subscribed_count`` (that counts on-demand re-subscriptions).
    """
    helper, publishers = graph
    intake = CameraIntake(helper, 'cam/image_raw', False, 'auto', 1)
    try:
        assert intake.reliability == 'best_effort'  # nobody publishes yet
        reliable = publishers.create_publisher(Image, 'cam/image_raw', QoSProfile(depth=10))
        assert settled(intake, 'reliable'), intake.reliability
        assert intake.qos_changes == 1 and receives(intake, reliable)
        # What the camera's diagnostics say of it.
        assert subscription_reliability(intake) == \
            'reliable (auto, from the publishers; re-subscribed 1x)'
        sensor = publishers.create_publisher(Image, 'cam/image_raw', qos_profile_sensor_data)
        assert settled(intake, 'best_effort'), intake.reliability
        assert intake.qos_changes == 2
        assert receives(intake, sensor) and receives(intake, reliable)
        publishers.destroy_publisher(sensor)
        assert settled(intake, 'reliable'), intake.reliability
        assert intake.qos_changes == 3
        publishers.destroy_publisher(reliable)
        assert wait_for(lambda: helper.count_publishers(intake.topic) == 0, 10.0)
        time.sleep(0.2)
        assert intake.take() is None and intake.reliability == 'reliable'
        assert intake.qos_changes == 3 and intake.subscribed_count == 1
        # Released and subscribed again: chosen from the publishers there are then.
        intake.release()
        assert intake.reliability is None
        assert subscription_reliability(intake) == 'none (not subscribed)'
        publishers.create_publisher(Image, 'cam/image_raw', qos_profile_sensor_data)
        assert wait_for(lambda: helper.count_publishers(intake.topic) == 1, 10.0)
        assert intake.acquire() and intake.reliability == 'best_effort'
        assert intake.subscribed_count == 2 and intake.qos_changes == 3
    finally:
        intake.close()


@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
def test_an_explicit_reliability_is_kept_whatever_publishes(graph, reliability):
    helper, publishers = graph
    intake = CameraIntake(helper, 'cam/image_raw', False, reliability, 1)
    try:
        publishers.create_publisher(Image, 'cam/image_raw', qos_profile_sensor_data)
        publishers.create_publisher(Image, 'cam/image_raw', QoSProfile(depth=10))
        assert wait_for(lambda: helper.count_publishers(intake.topic) == 2, 10.0)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            intake.take()
            time.sleep(0.02)
        assert intake.reliability == reliability and intake.qos_changes == 0
        assert subscription_reliability(intake) == \
            f'{reliability.replace("_", " ")} (image_qos_reliability)'
    finally:
        intake.close()
