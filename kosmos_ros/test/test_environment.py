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


def test_dds_stays_on_loopback():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert 0 <= int(os.environ['ROS_DOMAIN_ID']) <= 101


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
