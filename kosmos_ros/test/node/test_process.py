# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The node as a process, as ros2 launch, ros2 run and systemd start it.

Each test starts ``python -m kosmos_ros.node.main`` with command-line arguments and talks to it
over DDS (loopback) from this process: names and remaps, services during a model load, and
how it stops on SIGINT and SIGTERM.
"""

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from kosmos_ros_interfaces.srv import Ground
import pytest
from rcl_interfaces.srv import GetParameters
import rclpy
from rclpy.executors import MultiThreadedExecutor
from sensor_msgs.msg import Image

from helpers import lifecycle_state, wait_for, wait_for_state  # noqa

_names = itertools.count()


@pytest.fixture(scope='module')
def client():
    """Yield a client node spinning in the background."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('process_probe', context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=5.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


class NodeProcess:
    """``python -m kosmos_ros.node.main --ros-args ...`` with its output collected."""

    def __init__(self, ros_args, env=None):
        self.ns = f'/proc_{os.getpid()}_{next(_names)}'
        args = ['--ros-args', '-r', f'__ns:={self.ns}', *ros_args]
        self.proc = subprocess.Popen([sys.executable, '-m', 'kosmos_ros.node.main', *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.output = ''

    def stop(self, *signals, gap=0.05, timeout=120.0):
        """Send the signals ``gap`` seconds apart; return the exit status.

        ``timeout`` only ends a hang: how fast the process exits is not asserted here.
        """
        for i, signum in enumerate(signals):
            if i:
                time.sleep(gap)
            if self.proc.poll() is None:
                self.proc.send_signal(signum)
        self.output, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.output, _ = self.proc.communicate()


def tiny_args(model_dir, *extra):
    return ['-p', f'model:={model_dir}', '-p', 'local_files_only:=true', '-p', 'device:=cpu',
            '-p', 'rate_hz:=0.0', '-p', 'unsubscribe_idle_after:=0.0', '-p',
            'camera_timeout:=0.0', '-p', 'max_frame_age:=0.0', *extra]


def clean_exit(status, output):
    assert status == 0, output
    for sign in ('Traceback', 'KeyboardInterrupt', 'Failed to publish log message',
                 'terminate called', 'ROS_LOCALHOST_ONLY is deprecated', 'Loading weights'):
        assert sign not in output, output
    lines = output.replace('\r', '\n').split('\n')[:-1]
    assert all(line.strip() for line in lines), f'blank lines in the log: {output!r}'


def test_renamed_node_has_one_name_and_exits_cleanly_on_two_sigints(client, tiny_model_dir):
    """``__node:=`` renames the node alone; the intake helper takes a name of its own."""
    node = NodeProcess(['-r', '__node:=grounder', *tiny_args(tiny_model_dir)])
    try:
        assert wait_for_state(client, f'{node.ns}/grounder', 'active') == 'active'
        names = [n for n in client.get_node_names_and_namespaces() if n[1] == node.ns]
        assert sorted(names) == [('grounder', node.ns), ('grounder_image_intake', node.ns)]
        status = node.stop(signal.SIGINT, signal.SIGINT)  # as ros2 launch does
        clean_exit(status, node.output)
    finally:
        node.kill()


def test_remaps_aimed_at_the_node_reach_its_camera_topics(client, tiny_model_dir, photos):
    """``kosmos_grounding:camera/image_raw:=...`` moves the camera subscription."""
    node = NodeProcess(['-r', 'kosmos_grounding:camera/image_raw:=targeted/image_raw',
                        *tiny_args(tiny_model_dir)])
    publisher = client.create_publisher(Image, f'{node.ns}/targeted/image_raw', 10)
    ground = client.create_client(Ground, f'{node.ns}/kosmos_grounding/ground')
    try:
        assert wait_for_state(client, f'{node.ns}/kosmos_grounding', 'active') == 'active'
        assert wait_for(lambda: publisher.get_subscription_count() == 1, 20)
        rgb = photos['coffee'][:120, :160].copy()
        frame = Image(width=160, height=120, encoding='rgb8', step=480, data=rgb.tobytes())
        frame.header.frame_id = 'targeted'
        publisher.publish(frame)

        def answered():
            future = ground.call_async(Ground.Request(max_new_tokens=2))
            return wait_for(future.done, 30) and future.result()

        assert ground.wait_for_service(timeout_sec=10.0)
        result = None
        for _ in range(20):  # the frame may still be on its way
            result = answered()
            if result and result.success:
                break
            publisher.publish(frame)
            time.sleep(0.2)
        assert result.success, result.message
        assert result.grounding.header.frame_id == 'targeted'
        status = node.stop(signal.SIGTERM)
        clean_exit(status, node.output)
        assert f'raw images on {node.ns}/targeted/image_raw' in node.output, node.output
    finally:
        client.destroy_publisher(publisher)
        client.destroy_client(ground)
        node.kill()


@pytest.fixture
def unanswering_hub():
    """Yield a hub endpoint on loopback that accepts connections and never answers."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(64)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.getsockname()[1]}', accepted
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    server.close()


def test_services_answer_during_a_load_and_sigterm_stops_it(client, tmp_path, unanswering_hub):
    """While the model loads from a stalled hub, lifecycle and parameter services answer."""
    endpoint, accepted = unanswering_hub
    offline = ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
    env = {k: v for k, v in os.environ.items() if k not in offline}
    # The hub's request never times out here: the load can end only by the signal.
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / 'hf'), HF_HUB_ETAG_TIMEOUT='600',
               HF_HUB_DOWNLOAD_TIMEOUT='600')
    node = NodeProcess(['-p', 'device:=cpu'], env=env)
    name = f'{node.ns}/kosmos_grounding'
    try:
        assert wait_for(lambda: lifecycle_state(client, name, 5.0) == 'configuring', 60)
        assert wait_for(lambda: accepted, 30), 'the node never asked the hub'
        assert lifecycle_state(client, name, 5.0) == 'configuring'
        parameters = client.create_client(GetParameters, f'{name}/get_parameters')
        assert parameters.wait_for_service(timeout_sec=5.0)
        future = parameters.call_async(GetParameters.Request(names=['model', 'rate_hz']))
        assert wait_for(future.done, 5.0), 'parameter service blocked during the load'
        assert future.result().values[0].string_value == 'microsoft/kosmos-2-patch14-224'
        client.destroy_client(parameters)
        # Answered during the load, told by the state after the answer (not a time bound).
        assert lifecycle_state(client, name, 5.0) == 'configuring'
        status = node.stop(signal.SIGTERM)
        clean_exit(status, node.output)
        # The stalled load did not hold the exit (told by events, not by seconds): the hub
        # never answered and its requests never time out, so the load never ended, and the
        # process exited without a word about it ending.
        assert 'loading microsoft/kosmos-2-patch14-224' in node.output
        for ended in ('configure failed', 'cannot load', 'loaded microsoft'):
            assert ended not in node.output, node.output
    finally:
        node.kill()
