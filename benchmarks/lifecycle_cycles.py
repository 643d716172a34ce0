# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Resident memory of the node process across lifecycle cycles under traffic.

The node runs in its own process (``python -m kosmos_ros.node.main``, tiny model on the CPU,
two cameras, one raw and one JPEG, continuous grounding at 5 Hz). This process drives it as a
lifecycle manager does, over DDS: configure, activate, hold, deactivate, cleanup, again and
again, while both cameras stream 640x480 frames at 30 Hz, a client calls the service with an
image every 0.2 s and a subscriber takes the debug images. After each cleanup it reads the
node's VmRSS from /proc. It prints RSS at intervals and the growth per cycle over the first
and the last half of the run.

    tools/in-env python benchmarks/lifecycle_cycles.py [--cycles 400] [--hold 0.3]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import random
import subprocess
import sys
import tempfile
import threading
import time

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ['HF_HUB_OFFLINE'] = '1'


def rss_mib(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise KeyError('VmRSS')


def threads(pid: int) -> int:
    return len(os.listdir(f'/proc/{pid}/task'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=400)
    parser.add_argument('--hold', type=float, default=0.3, help='seconds active per cycle')
    parser.add_argument('--every', type=int, default=25, help='print every N cycles')
    args = parser.parse_args()

    import cv2
    from kosmos_ros_interfaces.srv import Ground
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from kosmos_ros.testing.samples import load_photo
    from kosmos_ros.testing.tiny_model import build_tiny_model

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix='kosmos_tiny_')))
    ns = f'/cycles{os.getpid()}'
    node = subprocess.Popen(
        [sys.executable, '-m', 'kosmos_ros.node.main', '--ros-args', '-r', f'__ns:={ns}',
         '-p', f'model:={model}', '-p', 'device:=cpu', '-p', 'local_files_only:=true',
         '-p', 'autostart:=false', '-p', 'cameras:=[front, rear]', '-p',
         'rear.transport:=compressed', '-p', 'rate_hz:=5.0', '-p', 'max_new_tokens:=4',
         '-p', 'camera_timeout:=0.0', '-p', 'max_frame_age:=0.0'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    client = rclpy.create_node('cycles_driver', namespace=ns)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    raw_pub = client.create_publisher(Image, 'front/image_raw', best_effort)
    jpeg_pub = client.create_publisher(CompressedImage, 'rear/image_raw/compressed', 10)
    debug = []
    client.create_subscription(Image, 'front/debug_image', lambda m: debug.append(1), 1)
    change = client.create_client(ChangeState, 'kosmos_grounding/change_state')
    ground = client.create_client(Ground, 'kosmos_grounding/ground')
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()

    photo = cv2.resize(load_photo('coffee'), (640, 480))
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    stop = threading.Event()
    calls = {'sent': 0, 'ok': 0}

    def traffic() -> None:
        tick = 0
        while not stop.wait(1 / 30):
            stamp = client.get_clock().now().to_msg()
            raw = Image(width=640, height=480, encoding='rgb8', step=1920, data=photo.tobytes())
            raw.header.stamp = stamp
            raw_pub.publish(raw)
            compressed = CompressedImage(format='jpeg', data=jpeg.tobytes())
            compressed.header.stamp = stamp
            jpeg_pub.publish(compressed)
            tick += 1
            if tick % 6 == 0 and ground.service_is_ready():
                calls['sent'] += 1
                future = ground.call_async(Ground.Request(image=raw, max_new_tokens=2))
                future.add_done_callback(
                    lambda f: calls.__setitem__('ok', calls['ok'] + bool(f.result().success)))

    def transition(tid: int) -> bool:
        future = change.call_async(ChangeState.Request(transition=Transition(id=tid)))
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return bool(future.done() and future.result().success)

    try:
        if not change.wait_for_service(timeout_sec=60):
            print('the node did not start', file=sys.stderr)
            return 1
        threading.Thread(target=traffic, daemon=True).start()
        samples = []
        started = time.monotonic()
        for cycle in range(args.cycles + 1):
            for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                assert transition(tid), f'cycle {cycle}: transition {tid} failed'
            time.sleep(args.hold)
            for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
                assert transition(tid), f'cycle {cycle}: transition {tid} failed'
            samples.append(rss_mib(node.pid))
            if cycle % args.every == 0:
                print(f'cycle {cycle:4d}: rss {samples[-1]:7.1f} MiB, threads '
                      f'{threads(node.pid)}, {time.monotonic() - started:6.0f} s', flush=True)
        half = len(samples) // 2
        first = (samples[half] - samples[1]) / max(half - 1, 1)
        last = (samples[-1] - samples[half]) / max(len(samples) - 1 - half, 1)
        print(f'{args.cycles} cycles under traffic: rss after cycle 1 {samples[1]:.1f} MiB, '
              f'at the end {samples[-1]:.1f} MiB; growth {first:+.3f} MiB/cycle over the first '
              f'half, {last:+.3f} MiB/cycle over the last; {calls["ok"]}/{calls["sent"]} calls '
              f'answered with success (the others met the node inactive), {len(debug)} debug '
              'images received')
        return 0
    finally:
        stop.set()
        node.terminate()
        node.wait(30)
        executor.shutdown(timeout_sec=5)
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
