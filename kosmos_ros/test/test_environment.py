# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The environment is real: rclpy over loopback DDS, the built interfaces, the entry points."""

import os
from pathlib import Path
import subprocess
import sys

from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.msg import GroundedPhrase, Grounding
from kosmos_ros_interfaces.srv import Ground
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _spin_until(executor, predicate, timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def _udp_destination(frame):
    """Return the UDP destination port of an Ethernet frame (IPv4 or IPv6), else None."""
    kind = int.from_bytes(frame[12:14], 'big')
    if kind == 0x0800 and len(frame) >= 34 and frame[23] == 17:
        start = 14 + (frame[14] & 0x0F) * 4
    elif kind == 0x86DD and len(frame) >= 58 and frame[20] == 17:
        start = 54
    else:
        return None
    return int.from_bytes(frame[start + 2:start + 4], 'big') if len(frame) >= start + 8 \
        else None


TALKER = '''
import time
import rclpy
from std_msgs.msg import String
from std_srvs.srv import Trigger
rclpy.init()
node = rclpy.create_node('wire_check')
got = []
node.create_subscription(String, 'chatter', got.append, 10)
publisher = node.create_publisher(String, 'chatter', 10)
node.create_service(Trigger, 'trigger', lambda request, response: response)
client = node.create_client(Trigger, 'trigger')
deadline = time.monotonic() + 4.0
while time.monotonic() < deadline:
    publisher.publish(String(data='x'))
    client.call_async(Trigger.Request())
    rclpy.spin_once(node, timeout_sec=0.05)
print('received', len(got))
'''


def test_dds_stays_on_loopback():
    """On the wire: with the test environment, no RTPS packet leaves the loopback interface.

    Captures every interface (a raw AF_PACKET socket, root or CAP_NET_RAW) while a talker,
    a listener and a service exchange messages in this run's domain. Only
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST is set: Jazzy's and Kilted's rmw both honour it.
    """
    import socket
    import threading
    try:
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    except PermissionError:
        pytest.skip('capturing packets needs root or CAP_NET_RAW')
    domain = int(os.environ['ROS_DOMAIN_ID'])
    ports = range(7400 + 250 * domain, 7400 + 250 * (domain + 1))
    seen, done = {}, threading.Event()
    sniffer.settimeout(0.1)

    def capture():
        while not done.is_set():
            try:
                frame, address = sniffer.recvfrom(65535)
            except socket.timeout:
                continue
            if _udp_destination(frame) in ports and b'RTPS' in frame[28:80]:
                seen[address[0]] = seen.get(address[0], 0) + 1

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    try:
        talker = subprocess.run([sys.executable, '-c', TALKER], capture_output=True, text=True,
                                timeout=60)
    finally:
        done.set()
        thread.join(5)
        sniffer.close()
    assert talker.returncode == 0 and 'received 0' not in talker.stdout, talker.stderr
    assert seen.get('lo', 0) > 0, f'no RTPS packet captured at all: {seen}'
    assert set(seen) == {'lo'}, f'RTPS packets left loopback: {seen}'
    assert 'ROS_LOCALHOST_ONLY is deprecated' not in talker.stderr


def test_image_and_ground_service_over_dds(context, photos):
    """A publisher, a subscriber and a service client exchange real messages over DDS."""
    node = rclpy.create_node('env_check', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    node.create_subscription(Image, 'env_check/image', received.append, 10)
    pub = node.create_publisher(Image, 'env_check/image', 10)

    def serve(request, response):
        response.success = True
        response.message = f'{request.prompt}:{len(request.image.data)}'
        response.grounding.text = 'echo ' + request.prompt
        response.grounding.header = request.image.header
        return response

    node.create_service(Ground, 'env_check/ground', serve)
    client = node.create_client(Ground, 'env_check/ground')
    assert client.wait_for_service(timeout_sec=10.0)

    rgb = photos['coffee']
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                step=rgb.shape[1] * 3, data=rgb.tobytes())
    msg.header.frame_id = 'camera_optical'
    assert _spin_until(executor, lambda: pub.get_subscription_count() > 0)
    pub.publish(msg)
    assert _spin_until(executor, lambda: received)
    got = received[0]
    assert (got.width, got.height, got.encoding) == (rgb.shape[1], rgb.shape[0], 'rgb8')
    assert np.array_equal(np.frombuffer(bytes(got.data), np.uint8), rgb.reshape(-1))

    request = Ground.Request(task=Ground.Request.FIND, prompt='the cup', image=msg)
    future = client.call_async(request)
    assert _spin_until(executor, future.done)
    response = future.result()
    assert response.success
    assert response.message == f'the cup:{rgb.size}'
    assert response.grounding.header.frame_id == 'camera_optical'
    node.destroy_node()


def test_interfaces_round_trip_serialization():
    box = BoundingBox2D()
    box.center.position.x, box.center.position.y = 12.5, 40.0
    box.size_x, box.size_y = 20.0, 30.0
    phrase = GroundedPhrase(text='a snowman', start=12, end=21, boxes=[box], box_scores=[0.5],
                            score=0.5)
    grounding = Grounding(camera='front', task=Ground.Request.CAPTION, prompt='',
                          text='An image of a snowman', phrases=[phrase], image_width=640,
                          image_height=480)
    grounding.header.frame_id = 'cam'
    back = deserialize_message(serialize_message(grounding), Grounding)
    assert back.text == grounding.text and back.camera == 'front'
    assert back.phrases[0].text == 'a snowman' and back.phrases[0].end == 21
    assert back.phrases[0].boxes[0].center.position.x == 12.5
    assert list(back.phrases[0].box_scores) == [0.5]

    det = Detection2D()
    det.results.append(ObjectHypothesisWithPose())
    det.results[0].hypothesis.class_id = 'a snowman'
    det.results[0].hypothesis.score = 0.25
    det.bbox = box
    array = Detection2DArray(detections=[det])
    back = deserialize_message(serialize_message(array), Detection2DArray)
    assert back.detections[0].results[0].hypothesis.class_id == 'a snowman'
    assert back.detections[0].bbox.size_y == 30.0

    goal = GroundAction.Goal(task=GroundAction.Goal.QUESTION, prompt='What is [this]?',
                             regions=[box], max_new_tokens=8)
    back = deserialize_message(serialize_message(goal), GroundAction.Goal)
    assert back.prompt == 'What is [this]?' and back.regions[0].size_x == 20.0
    feedback = GroundAction.Feedback(stage='generating')
    assert deserialize_message(serialize_message(feedback), GroundAction.Feedback).stage == \
        'generating'
    assert [Ground.Request.CAPTION, Ground.Request.DETAILED_CAPTION, Ground.Request.FIND,
            Ground.Request.QUESTION, Ground.Request.RAW] == [0, 1, 2, 3, 4]


def _install_prefix() -> Path:
    from ament_index_python.packages import get_package_prefix
    return Path(get_package_prefix('kosmos_ros'))


@pytest.mark.parametrize('script', ['grounding_node', 'build_tiny_model'])
def test_console_scripts_are_installed_and_start(script):
    path = _install_prefix() / 'lib' / 'kosmos_ros' / script
    assert path.is_file(), f'{path} missing'
    result = subprocess.run([sys.executable, str(path), '--help'], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'usage' in result.stdout.lower()


def test_launch_and_config_are_installed():
    share = _install_prefix() / 'share' / 'kosmos_ros'
    assert (share / 'launch' / 'grounding.launch.py').is_file()
    assert (share / 'config' / 'grounding.yaml').is_file()
    assert (share / 'test_data' / 'kosmos2_tokenizer' / 'sentencepiece.bpe.model').is_file()
