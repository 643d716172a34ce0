# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""config/grounding.yaml documents every parameter; the launch file starts the node."""

from pathlib import Path
import threading
import time

import yaml

from kosmos_ros.node.parameter_table import CAMERA_SPECS, SPECS

from helpers import optional_module  # noqa: I100

PACKAGE = Path(__file__).resolve().parents[2]


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
    """Check that make params (python -m kosmos_ros.node.parameter_file --write) wrote it."""
    from kosmos_ros.node.parameter_file import main, render_yaml
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


def run_launch(arguments, probe, timeout=180.0):
    """Run grounding.launch.py in the main thread (launch requires it), ``probe`` beside it.

    ``probe(node)`` gets an rclpy node of its own context; the launch is shut down when it
    returns. Return (what probe returned, the launch's exit status, the node's exit codes).
    """
    launch = optional_module('launch', 'ros2 launch is not on PyPI; a ROS install has it')
    optional_module('launch_ros', 'ros2 launch is not on PyPI; a ROS install has it')
    import rclpy
    from launch.actions import RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    exits = []
    source = PythonLaunchDescriptionSource(str(PACKAGE / 'launch' / 'grounding.launch.py'))
    description = launch.LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, _: exits.append(
            event.returncode))),
        launch.actions.IncludeLaunchDescription(source, launch_arguments=arguments.items())])
    service = launch.LaunchService()
    service.include_launch_description(description)
    outcome = {}

    def run_probe():
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node('launch_probe', context=context)
        try:
            outcome['value'] = probe(node)
        except BaseException as exc:  # reported in the main thread
            outcome['error'] = exc
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=context)
            service.shutdown()

    thread = threading.Thread(target=run_probe, daemon=True)
    thread.start()
    timer = threading.Timer(timeout, service.shutdown)
    timer.start()
    status = service.run()
    timer.cancel()
    thread.join(30)
    if 'error' in outcome:
        raise outcome['error']
    return outcome.get('value'), status, exits


def call(node, client, request, timeout=60.0):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    assert client.wait_for_service(timeout_sec=60.0), client.srv_name
    future = client.call_async(request)
    executor = SingleThreadedExecutor(context=node.context)
    rclpy.spin_until_future_complete(node, future, executor=executor, timeout_sec=timeout)
    executor.shutdown()
    return future.result()


def wait_active(node, name, timeout=120.0):
    from lifecycle_msgs.srv import GetState
    client = node.create_client(GetState, f'{name}/get_state')
    deadline, label = time.monotonic() + timeout, ''
    while time.monotonic() < deadline and label != 'active':
        result = call(node, client, GetState.Request(), 5.0)
        label = result.current_state.label if result else ''
        time.sleep(0.3)
    return label


def test_launch_reaches_active_and_answers(tiny_model_dir):
    """Run where launch is installed (a ROS 2 install); PyPI has no launch."""
    from kosmos_ros_interfaces.srv import Ground
    from sensor_msgs.msg import Image

    def probe(node):
        assert wait_active(node, '/launch_check/kosmos_grounding') == 'active'
        ground = node.create_client(Ground, '/launch_check/kosmos_grounding/ground')
        image = Image(width=8, height=8, encoding='rgb8', step=24, data=bytes(192))
        request = Ground.Request(task=Ground.Request.CAPTION, image=image, max_new_tokens=4)
        result = call(node, ground, request)
        return result.success

    answered, status, exits = run_launch(
        {'model': str(tiny_model_dir), 'device': 'cpu', 'rate_hz': '0.0',
         'namespace': 'launch_check'}, probe)
    assert answered is True
    assert status == 0 and exits == [0], (status, exits)


def test_launch_arguments_override_the_params_file_only_when_given(tiny_model_dir, tmp_path):
    """A params file's model, device and rate stand unless an argument is given."""
    from rcl_interfaces.srv import GetParameters
    params = tmp_path / 'robot.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': {
        'model': str(tiny_model_dir), 'device': 'cpu', 'local_files_only': True,
        'rate_hz': 0.0, 'camera_timeout': 10, 'cameras': ['front']}}}))

    def probe(node):
        name = '/launch_params/kosmos_grounding'
        assert wait_active(node, name) == 'active'  # the file's model: no hub, no download
        client = node.create_client(GetParameters, f'{name}/get_parameters')
        result = call(node, client, GetParameters.Request(
            names=['model', 'device', 'rate_hz', 'camera_timeout', 'autostart']))
        return [v.string_value for v in result.values[:2]] + [
            v.double_value for v in result.values[2:4]] + [result.values[4].bool_value]

    values, status, exits = run_launch(
        {'params_file': str(params), 'rate_hz': '2', 'namespace': 'launch_params'}, probe)
    assert values == [str(tiny_model_dir), 'cpu', 2.0, 10.0, True], values
    assert status == 0 and exits == [0], (status, exits)
