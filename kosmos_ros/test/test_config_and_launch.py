# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""config/grounding.yaml documents every parameter; the launch file starts the node."""

from pathlib import Path
import time

import pytest
import yaml

from kosmos_ros.node.params import CAMERA_SPECS, SPECS

PACKAGE = Path(__file__).resolve().parents[1]


def test_config_lists_every_parameter_with_its_default():
    text = (PACKAGE / 'config' / 'grounding.yaml').read_text()
    params = yaml.safe_load(text)['/**']['ros__parameters']
    camera = params.pop('camera')
    assert set(params) == set(SPECS), set(params) ^ set(SPECS)
    for name, spec in SPECS.items():
        assert params[name] == spec.default, name
        assert spec.description in text, name
    assert camera == {name: spec.default for name, spec in CAMERA_SPECS.items()}


def test_config_is_written_from_the_parameter_tables():
    """Check that make params (python -m kosmos_ros.node.params --write) wrote it."""
    from kosmos_ros.node.params import main, render_yaml
    path = PACKAGE / 'config' / 'grounding.yaml'
    assert path.read_text() == render_yaml(), 'run: make params'
    assert main(['--check', str(path)]) == 0


def test_launch_file_is_declarative():
    source = (PACKAGE / 'launch' / 'grounding.launch.py').read_text()
    for forbidden in ('eval(', 'exec(', 'subprocess', 'pip ', 'OpaqueFunction'):
        assert forbidden not in source
    for argument in ('namespace', 'params_file', 'image_topic', 'model', 'device', 'dtype',
                     'quantization', 'rate_hz', 'use_sim_time', 'autostart', 'log_level'):
        assert f"('{argument}'," in source


def test_launch_reaches_active_and_answers(tiny_model_dir):
    """Run where launch_testing is installed (a ROS 2 install); PyPI has no launch."""
    launch = pytest.importorskip('launch')
    pytest.importorskip('launch_ros')
    import rclpy
    from kosmos_ros_interfaces.srv import Ground
    from lifecycle_msgs.srv import GetState
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from sensor_msgs.msg import Image

    source = PythonLaunchDescriptionSource(str(PACKAGE / 'launch' / 'grounding.launch.py'))
    description = launch.LaunchDescription([launch.actions.IncludeLaunchDescription(
        source, launch_arguments={'model': str(tiny_model_dir), 'device': 'cpu',
                                  'rate_hz': '0.0', 'namespace': 'launch_check'}.items())])
    service = launch.LaunchService()
    service.include_launch_description(description)
    import threading
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    rclpy.init()
    node = rclpy.create_node('launch_probe')
    try:
        get_state = node.create_client(GetState, '/launch_check/kosmos_grounding/get_state')
        assert get_state.wait_for_service(timeout_sec=60)
        deadline = time.monotonic() + 120
        label = ''
        while time.monotonic() < deadline and label != 'active':
            future = get_state.call_async(GetState.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=5)
            label = future.result().current_state.label if future.result() else ''
            time.sleep(0.5)
        assert label == 'active'
        ground = node.create_client(Ground, '/launch_check/kosmos_grounding/ground')
        assert ground.wait_for_service(timeout_sec=10)
        image = Image(width=8, height=8, encoding='rgb8', step=24, data=bytes(192))
        future = ground.call_async(Ground.Request(task=Ground.Request.CAPTION, image=image,
                                                  max_new_tokens=4))
        rclpy.spin_until_future_complete(node, future, timeout_sec=60)
        assert future.result().success
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        service.shutdown()
        thread.join(30)
