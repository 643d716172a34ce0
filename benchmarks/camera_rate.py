# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Camera frames that reach the node's tracks, and a plain subscriber, over DDS (row i).

Each case streams a photograph as ``sensor_msgs/Image`` rgb8 (or JPEG ``CompressedImage``)
from a camera process of its own (a real publisher in another DDS participant: frames cross
the transport, never Fast DDS's in-process path) and counts, by header stamp, which of the
frames sent arrive:

- ``node``: the project's node in its own process (``python -m kosmos_ros.node.main``, default
  parameters unless the case sets some) with this process subscribed to ``camera/tracks``
  (so every camera frame is tracked) and ``camera/grounding``. The share is the distinct
  tracks stamps over the frames sent; the grounding rate is the Grounding messages per second
  of the streaming window (continuous grounding, the tiny model); the node's CPU (user +
  system, all threads) over the window is in % of one core.
- ``plain``: a plain rclpy subscription in a process of its own (``SUBSCRIBER``, spun by a
  single-threaded executor), with the case's reliability and depth (10 unless set).

The camera publishes with the case's QoS: ``default`` (rclpy's default: reliable, keep last
10) or ``sensor`` (``qos_profile_sensor_data``: best effort, keep last 5, as many camera
drivers do). It starts streaming only once the subscriber side is matched and settled, and
sends for a fixed time at a fixed rate.

Fast DDS runs as the environment says: the caller decides (run_benchmarks.py removes its
large-segment profile for this row: the stock set-up is the point). ``--netns`` runs the
cases in a private network namespace whose only interface is loopback, where
``FASTDDS_BUILTIN_TRANSPORTS`` can be used (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST makes
rmw_fastrtps replace Fast DDS's built-in transports with its own shared memory + UDP, and
the variable is then ignored), so that UDP alone, as between two machines, can be measured
without a packet leaving the namespace: a loopback proxy for a camera on another machine,
not a second machine.

Usage: tools/in-env python benchmarks/camera_rate.py [--quick] [--json PATH] [--netns
TRANSPORTS] [--cases NAMES]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent

# The camera: publishes once matched and told to start ("go" on stdin); prints the stamps.
CAMERA = r'''
import json, sys, time
import cv2
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from kosmos_ros.testing.samples import load_photo
topic, width, height, hz, seconds, qos, transport = sys.argv[1:8]
width, height, hz, seconds = int(width), int(height), float(hz), float(seconds)
rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
node = rclpy.create_node('bench_camera')
profile = qos_profile_sensor_data if qos == 'sensor' else QoSProfile(depth=10)
rgb = np.ascontiguousarray(cv2.resize(load_photo('coffee'), (width, height),
                                      interpolation=cv2.INTER_AREA))
if transport == 'compressed':
    pub = node.create_publisher(CompressedImage, topic + '/compressed', profile)
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    msg = CompressedImage(format='jpeg', data=jpeg.tobytes())
else:
    pub = node.create_publisher(Image, topic, profile)
    msg = Image(height=height, width=width, encoding='rgb8', step=width * 3,
                data=rgb.tobytes())
deadline = time.monotonic() + 120
while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
print('ready', flush=True)
if sys.stdin.readline().strip() != 'go':
    sys.exit(1)
sent = []
next_time = time.monotonic()
end = next_time + seconds
while next_time < end:
    stamp = time.time_ns()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    msg.header.frame_id = 'camera'
    pub.publish(msg)
    sent.append(stamp)
    next_time += 1.0 / hz
    delay = next_time - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(json.dumps({'sent': sent, 'bytes': len(msg.data)}), flush=True)
time.sleep(1.0)  # a reliable writer may still be repairing the last frames
node.destroy_node()
rclpy.try_shutdown()
'''


# The plain subscriber: spun by rclpy's single-threaded executor; says 'ready' once matched,
# prints the stamps it received when told to stop.
SUBSCRIBER = r'''
import json, sys, threading, time
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
topic, transport, reliability, depth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
node = rclpy.create_node('bench_plain')
stamps = set()
qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                 reliability=ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                 else ReliabilityPolicy.BEST_EFFORT)
sub = node.create_subscription(
    CompressedImage if transport == 'compressed' else Image, topic,
    lambda msg: stamps.add(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec), qos)
executor = SingleThreadedExecutor()
executor.add_node(node)
threading.Thread(target=executor.spin, daemon=True).start()
deadline = time.monotonic() + 120
while sub.get_publisher_count() < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
print('ready', flush=True)
sys.stdin.readline()
print(json.dumps(sorted(stamps)), flush=True)
executor.shutdown(timeout_sec=5.0)
node.destroy_node()
rclpy.try_shutdown()
'''


@dataclass
class Case:
    """One measurement: who subscribes, the camera, and the node's parameters."""

    name: str
    kind: str  # 'node' or 'plain'
    width: int = 640
    height: int = 480
    hz: float = 30.0
    seconds: float = 8.0
    publisher_qos: str = 'default'  # 'default' (reliable, keep last 10) or 'sensor'
    transport: str = 'raw'  # 'raw' or 'compressed'
    reliability: str = 'best_effort'  # plain subscriber
    depth: int = 10  # plain subscriber (as rclpy code usually asks: create_subscription(..., 10))
    params: dict[str, Any] = field(default_factory=dict)  # node parameters beyond the model


def _camera(topic: str, case: Case, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, '-c', CAMERA, topic, str(case.width), str(case.height), str(case.hz),
         str(case.seconds), case.publisher_qos, case.transport],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ready(camera: subprocess.Popen, timeout: float = 120.0) -> None:
    line = _readline(camera, timeout)
    if line.strip() != 'ready':
        raise RuntimeError(f'the camera did not start (exit code {camera.poll()}): {line!r}')


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """One line of ``proc``'s stdout, or '' after ``timeout`` seconds."""
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0] if out else ''


def _stream(camera: subprocess.Popen, case: Case) -> dict[str, Any]:
    """Tell the camera to go; return its report (stamps sent, bytes per message)."""
    camera.stdin.write('go\n')
    camera.stdin.flush()
    line = _readline(camera, case.seconds + 60.0)
    if not line.strip():
        raise RuntimeError(f'the camera did not report (exit code {camera.poll()})')
    return json.loads(line)


def _finish(camera: subprocess.Popen) -> None:
    try:
        camera.wait(20)
    except subprocess.TimeoutExpired:
        camera.kill()
        camera.wait(5)


def _share(sent: list[int], stamps: set[int]) -> dict[str, Any]:
    got = sum(1 for s in sent if s in stamps)
    return {'sent': len(sent), 'received': got, 'share': got / len(sent) if sent else 0.0}


def plain_case(case: Case, env: dict[str, str]) -> dict[str, Any]:
    """Count the frames a plain rclpy subscriber (a process of its own) gets from the camera."""
    compressed = case.transport == 'compressed'
    topic = '/camera_rate/camera/image_raw' + ('/compressed' if compressed else '')
    subscriber = subprocess.Popen(
        [sys.executable, '-c', SUBSCRIBER, topic, case.transport, case.reliability,
         str(case.depth)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    camera = _camera('/camera_rate/camera/image_raw', case, env)
    try:
        _ready(camera)
        _ready(subscriber)  # matched both ways
        time.sleep(1.0)
        report = _stream(camera, case)
        time.sleep(0.5)
        subscriber.stdin.write('stop\n')
        subscriber.stdin.flush()
        stamps = set(json.loads(_readline(subscriber, 30.0) or '[]'))
        return {**_share(report['sent'], stamps), 'message_bytes': report['bytes']}
    finally:
        _finish(camera)
        _finish(subscriber)


def node_case(case: Case, model_dir: Path, env: dict[str, str],
              log: Path | None = None) -> dict[str, Any]:
    """Run the project's node in its own process; count its tracks and Grounding here."""
    import psutil
    from kosmos_ros_interfaces.msg import Grounding
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import Detection2DArray

    from node_bench import _cpu_seconds, _stop_node, _wait_active, Ros, stamp_key, wait_for
    namespace = '/camera_rate'
    ros = Ros()
    client = ros.node('bench_counter', namespace)
    tracks: set[int] = set()
    groundings: list[tuple[float, int]] = []
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    tracks_sub = client.create_subscription(Detection2DArray, 'camera/tracks',
                                            lambda msg: tracks.add(stamp_key(msg)), reliable)
    client.create_subscription(Grounding, 'camera/grounding', lambda msg: groundings.append(
        (time.monotonic(), stamp_key(msg))), reliable)
    params = {'model': str(model_dir), 'device': 'cpu', 'local_files_only': 'true',
              'max_new_tokens': 8, **case.params}
    if case.transport == 'compressed':
        params['camera.transport'] = 'compressed'
    command = [sys.executable, '-m', 'kosmos_ros.node.main', '--ros-args', '-r',
               f'__ns:={namespace}', '--log-level', 'warn']
    for key, value in params.items():
        command += ['-p', f'{key}:={value}']
    camera = _camera(f'{namespace}/camera/image_raw', case, env)
    out = open(log, 'w') if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not _wait_active(client, namespace, proc):
            raise RuntimeError(f'the node did not start (exit code {proc.poll()})')
        if not wait_for(lambda: tracks_sub.get_publisher_count() > 0, 30.0):
            raise RuntimeError('camera/tracks was not matched')
        _ready(camera)  # the node subscribed to the camera (at once, or once tracking)
        time.sleep(2.0)  # the node looks for tracks readers once a second
        ps = psutil.Process(proc.pid)
        c0, t0 = _cpu_seconds(ps), time.monotonic()
        report = _stream(camera, case)
        c1, t1 = _cpu_seconds(ps), time.monotonic()
        sent = report['sent']
        wait_for(lambda: sent[-1] in tracks, 5.0)
        time.sleep(0.5)
        window = [s for t, s in groundings if t0 <= t <= t1]
        return {**_share(sent, tracks), 'message_bytes': report['bytes'],
                'grounding_hz': len(window) / (t1 - t0), 'cpu_pct': (c1 - c0) / (t1 - t0) * 100,
                'window_s': t1 - t0}
    finally:
        _finish(camera)
        _stop_node(proc, out)
        ros.close()


# -- the cases -----------------------------------------------------------------------------

OLD = {'image_qos_reliability': 'best_effort', 'image_qos_depth': 1}  # the defaults until now
SIZES = {'640x480 30 Hz': (640, 480, 30.0), '1280x720 15 Hz': (1280, 720, 15.0)}


def stock_cases(seconds: float) -> list[Case]:
    """Return the stock set-up's cases (this host, Fast DDS as the environment has it)."""
    cases = []
    for label, (w, h, hz) in SIZES.items():
        for tag, params in (('old defaults', OLD), ('defaults', {})):
            cases.append(Case(f'node tracks {label}, {tag}', 'node', w, h, hz, seconds,
                              params=dict(params)))
        for reliability in ('best_effort', 'reliable'):
            cases.append(Case(f'plain {reliability} {label}', 'plain', w, h, hz, seconds,
                              reliability=reliability))
    cases.append(Case('plain best_effort 640x480 30 Hz, sensor-data publisher', 'plain',
                      seconds=seconds, publisher_qos='sensor', reliability='best_effort'))
    for tag, params in (('old defaults', OLD), ('defaults', {})):
        cases.append(Case(f'node grounding, rate_hz 100, {tag}', 'node', seconds=seconds,
                          params={**params, 'rate_hz': 100.0}))
    return cases


def remote_cases(seconds: float) -> list[Case]:
    """Return the cases of the proxy for a camera on another machine (run with --netns)."""
    return [
        Case('plain best_effort 640x480 30 Hz', 'plain', seconds=seconds,
             reliability='best_effort'),
        Case('plain reliable 640x480 30 Hz', 'plain', seconds=seconds, reliability='reliable'),
        Case('plain best_effort 640x480 30 Hz JPEG', 'plain', seconds=seconds,
             transport='compressed', publisher_qos='sensor', reliability='best_effort'),
    ] + remote_node_cases(seconds)


def remote_node_cases(seconds: float) -> list[Case]:
    """Return the node's cases of the remote set (row i runs these)."""
    return [
        Case('node tracks 640x480 30 Hz, defaults', 'node', seconds=seconds),
        Case('node tracks 640x480 30 Hz JPEG sensor-data, defaults', 'node', seconds=seconds,
             transport='compressed', publisher_qos='sensor'),
        Case('node tracks 640x480 30 Hz sensor-data, defaults', 'node', seconds=seconds,
             publisher_qos='sensor'),
    ]


def run_cases(cases: Sequence[Case], model_dir: Path | None, env: dict[str, str],
              log_dir: Path | None = None) -> list[dict[str, Any]]:
    out = []
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(cases):
        started = time.monotonic()
        load = os.getloadavg()[0]
        if case.kind == 'node':
            if model_dir is None:
                raise ValueError('node cases need the tiny model')
            log = log_dir / f'camera_rate_{index}.log' if log_dir else None
            figures = node_case(case, model_dir, env, log)
        else:
            figures = plain_case(case, env)
        out.append({'case': asdict(case), 'load_before': load,
                    'load_after': os.getloadavg()[0], 'seconds': time.monotonic() - started,
                    **figures})
        print(json.dumps({'name': case.name, **{k: v for k, v in out[-1].items()
                                                if k != 'case'}}), file=sys.stderr,
              flush=True)
    return out


# -- the namespace proxy -------------------------------------------------------------------

NETNS_SETUP = ('ip link set lo up && ip link set lo multicast on && '
               'ip route add 224.0.0.0/4 dev lo && exec "$@"')


def netns_available() -> str | None:
    """Return why a private loopback-only network namespace cannot be made, or None."""
    if not (shutil.which('unshare') and shutil.which('ip')):
        return 'unshare or ip not installed'
    probe = subprocess.run(['unshare', '-rn', 'sh', '-c', NETNS_SETUP, 'sh', 'true'],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else \
        f'unshare -rn failed: {probe.stderr.strip() or probe.returncode}'


def run_in_netns(transports: str, model_dir: Path, seconds: float, cases: str = '',
                 log_dir: Path | None = None) -> list[dict[str, Any]]:
    """Run the remote cases in a loopback-only network namespace with these transports."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / 'netns.json'
        env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=transports,
                   ROS_AUTOMATIC_DISCOVERY_RANGE='SYSTEM_DEFAULT')
        for name in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE'):
            env.pop(name, None)
        command = [sys.executable, str(HERE / 'camera_rate.py'), '--set', 'remote',
                   '--model', str(model_dir), '--json', str(result), '--seconds',
                   str(seconds), '--cases', cases]
        command += ['--log-dir', str(log_dir)] if log_dir else []
        subprocess.run(['unshare', '-rn', 'sh', '-c', NETNS_SETUP, 'sh', *command], env=env,
                       check=True)
        return json.loads(result.read_text())


def stock_env() -> dict[str, str]:
    """Return this environment without a Fast DDS profile or transport choice (defaults)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', HF_HUB_OFFLINE='1',
               TRANSFORMERS_VERBOSITY='error')
    for name in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE',
                 'FASTDDS_BUILTIN_TRANSPORTS'):
        env.pop(name, None)
    return env


def measure(model_dir: Path, seconds: float, cases: str = '', netns: str = '',
            log_dir: Path | None = None) -> list[dict[str, Any]]:
    """Run cases in a process of their own with Fast DDS's defaults (run_benchmarks.py, row i).

    ``netns``: the remote cases with these transports, in a loopback-only network namespace.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / 'camera_rate.json'
        command = [sys.executable, str(HERE / 'camera_rate.py'), '--model', str(model_dir),
                   '--seconds', str(seconds), '--cases', cases, '--json', str(result)]
        command += ['--netns', netns] if netns else []
        command += ['--log-dir', str(log_dir)] if log_dir else []
        code = subprocess.run(command, env=stock_env()).returncode
        if not result.exists():
            raise RuntimeError(f'camera_rate.py failed (exit code {code}); its output is above')
        if code != 0:  # rclpy has been seen to abort at exit, after the results were written
            print(f'camera_rate.py exited with {code} after writing its results', flush=True)
        return json.loads(result.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--set', choices=('stock', 'remote'), default='stock',
                        help='stock: this host as set up; remote: the UDP proxy cases (run '
                        'them with --netns, or in an environment that selects the transport)')
    parser.add_argument('--cases', default='', help='substrings of case names, separated by |')
    parser.add_argument('--netns', default='', metavar='TRANSPORTS',
                        help='run the remote cases in a loopback-only network namespace with '
                        'FASTDDS_BUILTIN_TRANSPORTS=TRANSPORTS (e.g. UDPv4)')
    parser.add_argument('--model', default='', help='the tiny model folder (built if not given)')
    parser.add_argument('--quick', action='store_true', help='4 s per case (default 8)')
    parser.add_argument('--seconds', type=float, default=None, help='streaming time per case')
    parser.add_argument('--json', default='-', help='output path (- for stdout)')
    parser.add_argument('--log-dir', default='', help='folder for the node logs')
    args = parser.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 8.0)
    log_dir = Path(args.log_dir) if args.log_dir else None
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else None
        if model_dir is None:
            from gpu_bench import build_tiny
            model_dir = build_tiny(tmp)
        if args.netns:
            why = netns_available()
            if why:
                parser.error(f'no network namespace: {why}')
            results = run_in_netns(args.netns, model_dir, seconds, args.cases, log_dir)
        else:
            cases = stock_cases(seconds) if args.set == 'stock' else remote_cases(seconds)
            wanted = [w.strip() for w in args.cases.split('|') if w.strip()]
            cases = [c for c in cases if not wanted or any(w in c.name for w in wanted)]
            results = run_cases(cases, model_dir, stock_env() if args.set == 'stock'
                                else dict(os.environ), log_dir)
    text = json.dumps(results, indent=2)
    if args.json == '-':
        print(text)
    else:
        Path(args.json).write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
