# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Node benchmarks over loopback DDS: per-frame overhead and idle CPU, reference vs project.

Both use the tiny random model (its model time is measured and subtracted, or irrelevant):

- overhead: the project's ``GroundingNode`` (continuous mode) and the reference node
  (``reference_node.py``, model card in the image callback) run in this process, each fed by a
  publisher in this process whose header stamp is the send time (``time.time_ns``). The
  project's node is instrumented from outside, without changing its code: its ``_admit``
  (the subscription callback's target) and its detections publisher's ``publish`` are wrapped
  to record wall-clock times, and its ``_on_continuous_result`` to capture the engine's
  ``Timings`` (what ``Grounding.inference_time`` reports). The reference node records the same
  instants itself.
- idle: each node runs in its own process (``python -m kosmos_ros.node.main`` and
  ``python benchmarks/reference_node.py``) while this process streams 1920x1080 rgb8 frames at
  30 Hz; the node's CPU time (user + system, all threads, ``psutil``) over a window, divided by
  the window, is its load in % of one core. The frames each node received are read from its
  ``/diagnostics`` (``frames in``). At ``rate_hz: 0`` the project runs twice: with its default
  parameters (an unused camera is not subscribed: ``unsubscribe_idle_after``) and with
  ``unsubscribe_idle_after: 0`` (always subscribed, frames kept in DDS untaken). After each
  project window two caption queries (2 tokens) on the camera are timed: the first after the
  idle window (it may have to subscribe and wait for the next frame), the second right after.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import psutil
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from kosmos_ros.node.grounding_node import GroundingNode

from reference_node import ReferenceNode  # noqa: I100

HERE = Path(__file__).resolve().parent


def image_msg(rgb: np.ndarray) -> Image:
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                 step=rgb.shape[1] * 3, data=rgb.tobytes())


def set_stamp(msg: Any, stamp_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)


def stamp_key(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def wait_for(predicate: Callable[[], bool], timeout: float, period: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


class Ros:
    """An rclpy context and a 4-thread executor spinning in the background."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def node(self, name: str, namespace: str) -> Any:
        node = rclpy.create_node(name, context=self.context, namespace=namespace)
        self.executor.add_node(node)
        return node

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        rclpy.try_shutdown(context=self.context)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


# -- node overhead -------------------------------------------------------------------------

class ProjectProbe:
    """The project's node with wall-clock probes around its own callbacks."""

    def __init__(self, ros: Ros, model_dir: Path, new_tokens: int):
        from rclpy.lifecycle import TransitionCallbackReturn
        overrides = [Parameter(k, value=v) for k, v in dict(
            model=str(model_dir), device='cpu', local_files_only=True, cameras=['camera'],
            rate_hz=100.0, max_new_tokens=new_tokens, camera_timeout=0.0).items()]
        self.node = GroundingNode(context=ros.context, namespace='/bench_project',
                                  parameter_overrides=overrides)
        self.arrived: dict[int, int] = {}
        self.results: dict[int, Any] = {}
        self.published: dict[int, int] = {}
        self.event = threading.Event()
        on_image, on_result = self.node._admit, self.node._on_continuous_result

        def probe_image(camera: str, msg: Any) -> None:
            self.arrived[stamp_key(msg)] = time.time_ns()
            on_image(camera, msg)

        def probe_result(camera: str, msg: Any, result: Any, *rest: Any) -> None:
            self.results[stamp_key(msg)] = result.timings
            on_result(camera, msg, result, *rest)

        self.node._admit = probe_image
        self.node._on_continuous_result = probe_result
        ros.executor.add_node(self.node)
        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                self.node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError('the project node did not configure and activate')
        publisher = self.node._cameras['camera'].outputs['detections']
        publish = publisher.publish

        def probe_publish(msg: Any) -> None:
            publish(msg)
            self.published[stamp_key(msg)] = time.time_ns()
            self.event.set()

        publisher.publish = probe_publish

    def record(self, key: int) -> dict[str, float] | None:
        if key not in self.published or key not in self.results or key not in self.arrived:
            return None
        t = self.results[key]
        return {'sent_ns': key, 'arrived_ns': self.arrived[key],
                'published_ns': self.published[key], 'model_s': t.vision + t.generate,
                'inference_s': t.total, 'preprocess_s': t.preprocess}

    def close(self, ros: Ros) -> None:
        self.node.stop_worker()
        ros.executor.remove_node(self.node)
        self.node.destroy_node()


class ReferenceProbe:
    def __init__(self, ros: Ros, model_dir: Path, new_tokens: int):
        overrides = [Parameter('model', value=str(model_dir)), Parameter('inline', value=True),
                     Parameter('max_new_tokens', value=new_tokens)]
        self.node = ReferenceNode(context=ros.context, namespace='/bench_reference',
                                  parameter_overrides=overrides)
        ros.executor.add_node(self.node)

    def record(self, key: int) -> dict[str, float] | None:
        for rec in reversed(self.node.records):
            if rec['stamp_ns'] == key:
                return {'sent_ns': key, 'arrived_ns': rec['arrived_ns'],
                        'published_ns': rec['published_ns'], 'model_s': rec['model_s'],
                        'inference_s': rec['inference_s'], 'preprocess_s': rec['preprocess_s']}
        return None

    def close(self, ros: Ros) -> None:
        ros.executor.remove_node(self.node)
        self.node.destroy_node()


def _drive(ros: Ros, probe: Any, namespace: str, rgb: np.ndarray, frames: int, warmup: int,
           timeout: float = 20.0) -> list[dict[str, float]]:
    client = ros.node('bench_camera', namespace)
    publisher = client.create_publisher(Image, 'camera/image_raw', QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE))
    if not wait_for(lambda: publisher.get_subscription_count() > 0, 20.0):
        raise RuntimeError(f'no subscriber on {namespace}/camera/image_raw')
    msg = image_msg(rgb)
    records = []
    for index in range(warmup + frames):
        time.sleep(0.02)  # let the previous cycle finish its bookkeeping
        key = time.time_ns()
        set_stamp(msg, key)
        publisher.publish(msg)
        if wait_for(lambda: probe.record(key) is not None, timeout) and index >= warmup:
            records.append(probe.record(key))
    ros.executor.remove_node(client)
    client.destroy_node()
    return records


def _summary(records: list[dict[str, float]]) -> dict[str, float]:
    def ms(values: list[float]) -> float:
        return _median(values) * 1e3

    node = [(r['published_ns'] - r['arrived_ns']) * 1e-9 for r in records]
    return {
        'frames': len(records),
        'transport_ms': ms([(r['arrived_ns'] - r['sent_ns']) * 1e-9 for r in records]),
        'node_ms': ms(node),
        'model_ms': ms([r['model_s'] for r in records]),
        'inference_ms': ms([r['inference_s'] for r in records]),
        'preprocess_ms': ms([r['preprocess_s'] for r in records]),
        'overhead_minus_model_ms': ms([n - r['model_s'] for n, r in zip(node, records)]),
        'overhead_minus_inference_ms': ms([n - r['inference_s']
                                           for n, r in zip(node, records)]),
        'send_to_publish_minus_inference_ms': ms(
            [(r['published_ns'] - r['sent_ns']) * 1e-9 - r['inference_s'] for r in records]),
    }


def node_overhead(model_dir: Path, frames_by_size: dict[str, np.ndarray], frames: int,
                  warmup: int, new_tokens: int = 8) -> dict[str, dict[str, Any]]:
    """Per size: the reference's and the project's per-frame figures (medians)."""
    ros = Ros()
    out: dict[str, dict[str, Any]] = {}
    try:
        project = ProjectProbe(ros, model_dir, new_tokens)
        reference = ReferenceProbe(ros, model_dir, new_tokens)
        try:
            for label, rgb in frames_by_size.items():
                ref = _drive(ros, reference, '/bench_reference', rgb, frames, warmup)
                proj = _drive(ros, project, '/bench_project', rgb, frames, warmup)
                out[label] = {'reference': _summary(ref), 'project': _summary(proj)}
        finally:
            project.close(ros)
            reference.close(ros)
    finally:
        ros.close()
    return out


# -- results with and without a debug-image subscriber ---------------------------------------

# A slow reliable debug-image subscriber in a process of its own; prints how many it took.
DEBUG_VIEWER = '''
import signal, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
node = rclpy.create_node('debug_viewer', namespace='/bench_debug')
got = []
def view(msg):  # a viewer that takes 0.3 s per image (drawing it, say)
    got.append(1)
    time.sleep(0.3)
node.create_subscription(Image, 'camera/debug_image', view,
                         QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
while not stop:
    rclpy.spin_once(node, timeout_sec=0.1)
print(len(got))
'''


def debug_latency(model_dir: Path, rgb: np.ndarray, frames: int, hz: float = 10.0,
                  new_tokens: int = 8) -> dict[str, dict[str, float]]:
    """Frame-to-Grounding latency (send to receipt, ms) without and with a debug subscriber.

    The project's node grounds every frame (continuous mode, rate_hz 100) of a camera sending
    ``frames`` frames at ``hz``; this process receives its Grounding messages (reliable). The
    second run adds a reliable subscriber to ``camera/debug_image`` (a full-size rgb8 image per
    result) in a process of its own, slow as a viewer may be. Each Grounding's latency is its
    receipt minus its frame's send time (the header stamp).
    """
    from kosmos_ros_interfaces.msg import Grounding
    from rclpy.lifecycle import TransitionCallbackReturn

    ros = Ros()
    overrides = [Parameter(k, value=v) for k, v in dict(
        model=str(model_dir), device='cpu', local_files_only=True, cameras=['camera'],
        rate_hz=100.0, max_new_tokens=new_tokens, camera_timeout=0.0).items()]
    node = GroundingNode(context=ros.context, namespace='/bench_debug',
                         parameter_overrides=overrides)
    ros.executor.add_node(node)
    out: dict[str, dict[str, float]] = {}
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError('the project node did not configure and activate')
        client = ros.node('bench_debug_client', '/bench_debug')
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        publisher = client.create_publisher(Image, 'camera/image_raw', reliable)
        received: dict[int, int] = {}
        client.create_subscription(Grounding, 'camera/grounding', lambda m: received.setdefault(
            stamp_key(m), time.time_ns()), reliable)
        if not wait_for(lambda: publisher.get_subscription_count() > 0, 20.0):
            raise RuntimeError('no subscriber on /bench_debug/camera/image_raw')
        msg = image_msg(rgb)
        debug_pub = node._cameras['camera'].outputs['debug_image']
        for label, with_debug in (('without debug subscriber', False),
                                  ('with debug subscriber', True)):
            viewer = None
            if with_debug:  # in its own process, as rviz or ros2 topic echo would be
                viewer = subprocess.Popen([sys.executable, '-c', DEBUG_VIEWER],
                                          stdout=subprocess.PIPE, text=True)
                if not wait_for(lambda: debug_pub.get_subscription_count() > 0, 30.0):
                    raise RuntimeError('the debug-image viewer did not subscribe')
            sent = []
            for _ in range(frames):
                key = time.time_ns()
                set_stamp(msg, key)
                publisher.publish(msg)
                sent.append(key)
                time.sleep(1.0 / hz)
            wait_for(lambda: all(k in received for k in sent[-3:]), 30.0)
            latencies = sorted((received[k] - k) * 1e-6 for k in sent if k in received)
            out[label] = {'frames_sent': len(sent), 'results': len(latencies),
                          'median_ms': _median(latencies),
                          'p95_ms': float(np.percentile(latencies, 95)) if latencies else
                          float('nan'),
                          'max_ms': latencies[-1] if latencies else float('nan'),
                          'debug_images': 0}
            if viewer is not None:
                viewer.send_signal(signal.SIGINT)
                output, _ = viewer.communicate(timeout=30)
                out[label]['debug_images'] = int(output.split()[-1]) if output.split() else 0
    finally:
        node.stop_worker()
        ros.executor.remove_node(node)
        node.destroy_node()
        ros.close()
    return out


# -- idle cost -----------------------------------------------------------------------------

class Streamer:
    """Publish one frame (fresh stamp each time) at a fixed rate from a background thread."""

    def __init__(self, publisher: Any, rgb: np.ndarray, hz: float):
        self.publisher, self.msg, self.period = publisher, image_msg(rgb), 1.0 / hz
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            set_stamp(self.msg, time.time_ns())
            self.publisher.publish(self.msg)
            self.sent += 1
            next_time += self.period
            delay = next_time - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_time = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def _node_command(kind: str, namespace: str, model_dir: Path, rate_hz: float,
                  extra: dict[str, Any] | None = None) -> list[str]:
    params = {'model': str(model_dir), 'rate_hz': float(rate_hz), 'max_new_tokens': 8}
    params.update(extra or {})
    if kind == 'project':
        # Defaults otherwise: camera_timeout 5 s, so the liveness take runs every 1.7 s.
        params.update({'device': 'cpu', 'local_files_only': 'true'})
        head = [sys.executable, '-m', 'kosmos_ros.node.main']
    else:
        head = [sys.executable, str(HERE / 'reference_node.py')]
    args = ['--ros-args', '-r', f'__ns:={namespace}', '--log-level', 'warn']
    for key, value in params.items():
        args += ['-p', f'{key}:={value}']
    return head + args


def _stop_node(proc: subprocess.Popen, log: Any) -> None:
    """Stop a node process as Ctrl-C does (killed after 15 s); close its log file."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if log is not subprocess.DEVNULL:
        log.close()


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


IDLE_VARIANTS = {'project subscribed': {'unsubscribe_idle_after': 0.0}}


def idle_cost(model_dir: Path, rgb: np.ndarray, rates: tuple[float, ...], seconds: float,
              warmup: float, hz: float = 30.0, log_dir: Path | None = None
              ) -> dict[str, dict[str, Any]]:
    """Per node and rate_hz: CPU % of one core while frames stream in at ``hz``."""
    from kosmos_ros_interfaces.srv import Ground
    ros = Ros()
    client = ros.node('bench_stream', '/')
    diagnostics: list[tuple[float, str, int]] = []

    def on_diag(msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            # The reference counts frames received; the project, which takes frames from DDS
            # only when it uses them, reports the publisher's count (sequence numbers).
            count = values.get('frames in', values.get('frames published', 'unknown'))
            if status.name.endswith(': camera camera') and count.isdigit():
                diagnostics.append((time.monotonic(), status.name, int(count)))

    from diagnostic_msgs.msg import DiagnosticArray
    client.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 50)
    runs = [(kind, rate) for kind in ('reference', 'project') for rate in rates]
    runs += [(variant, 0.0) for variant in IDLE_VARIANTS if 0.0 in rates]
    out: dict[str, dict[str, Any]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED='1', HF_HUB_OFFLINE='1',
               TRANSFORMERS_VERBOSITY='error')
    try:
        for index, (kind, rate) in enumerate(runs):
            namespace = f'/idle_{index}_{int(rate * 10)}'
            publisher = client.create_publisher(
                Image, f'{namespace}/camera/image_raw',
                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            label = f'{kind} rate_hz={rate:g}'
            log = open(log_dir / f'idle_{kind.replace(" ", "_")}_{rate:g}.log', 'w') \
                if log_dir else subprocess.DEVNULL
            project = kind.startswith('project')
            command = _node_command('project' if project else kind, namespace, model_dir, rate,
                                    IDLE_VARIANTS.get(kind))
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            ground = client.create_client(Ground, f'{namespace}/kosmos_grounding/ground') \
                if project else None
            try:
                out[label] = _measure_idle(proc, publisher, rgb, hz, seconds, warmup,
                                           namespace, diagnostics, ground, client)
            finally:
                _stop_node(proc, log)
                client.destroy_publisher(publisher)
                if ground is not None:
                    client.destroy_client(ground)
    finally:
        ros.close()
    return out


def _wait_active(client: Any, namespace: str, proc: subprocess.Popen,
                 timeout: float = 120.0) -> bool:
    """Wait until the project's lifecycle node in ``namespace`` is active."""
    from lifecycle_msgs.srv import GetState
    get_state = client.create_client(GetState, f'{namespace}/kosmos_grounding/get_state')
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if get_state.service_is_ready():
                future = get_state.call_async(GetState.Request())
                if wait_for(future.done, 5.0) and \
                        future.result().current_state.label == 'active':
                    return True
            time.sleep(0.1)
        return False
    finally:
        client.destroy_client(get_state)


def _timed_query(ground: Any) -> tuple[float, str]:
    """Milliseconds for one 2-token caption query on the camera, and the error if any."""
    from kosmos_ros_interfaces.srv import Ground
    started = time.perf_counter()
    future = ground.call_async(Ground.Request(task=Ground.Request.CAPTION, max_new_tokens=2))
    if not wait_for(future.done, 60.0):
        return float('nan'), 'no answer within 60 s'
    response = future.result()
    return (time.perf_counter() - started) * 1e3, '' if response.success else response.message


def _measure_idle(proc: subprocess.Popen, publisher: Any, rgb: np.ndarray, hz: float,
                  seconds: float, warmup: float, namespace: str,
                  diagnostics: list[tuple[float, str, int]], ground: Any = None,
                  client: Any = None) -> dict[str, Any]:
    if ground is not None:  # the project: it may not subscribe while unused
        started = _wait_active(client, namespace, proc)
    else:
        started = wait_for(lambda: publisher.get_subscription_count() > 0
                           or proc.poll() is not None, 120.0, 0.05)
    if not started or proc.poll() is not None:
        raise RuntimeError(f'node in {namespace} did not start (exit code {proc.poll()})')
    ps = psutil.Process(proc.pid)
    time.sleep(2.0)  # settle after start-up
    c0, t0 = _cpu_seconds(ps), time.monotonic()
    time.sleep(min(3.0, seconds))
    quiet = (_cpu_seconds(ps) - c0) / (time.monotonic() - t0) * 100
    streamer = Streamer(publisher, rgb, hz)
    try:
        time.sleep(warmup)
        sent0, c0, t0 = streamer.sent, _cpu_seconds(ps), time.monotonic()
        time.sleep(seconds)
        sent1, c1, t1 = streamer.sent, _cpu_seconds(ps), time.monotonic()
        queries = [_timed_query(ground) for _ in range(2)] if ground is not None else []
    finally:
        streamer.stop()
    window = [(t, n) for t, name, n in diagnostics if name.startswith(namespace + '/')
              and t0 <= t <= t1 + 1.5]
    received_hz = float('nan')
    if len(window) >= 2:
        (ta, na), (tb, nb) = window[0], window[-1]
        received_hz = (nb - na) / (tb - ta) if tb > ta else float('nan')
    return {'cpu_pct': (c1 - c0) / (t1 - t0) * 100, 'quiet_cpu_pct': quiet,
            'sent_hz': (sent1 - sent0) / (t1 - t0), 'received_hz': received_hz,
            'first_query_ms': queries[0][0] if queries else None,
            'next_query_ms': queries[1][0] if queries else None,
            'query_errors': [error for _, error in queries if error],
            'window_s': t1 - t0}


def tracking_cost(model_dir: Path, rgb: np.ndarray, seconds: float, warmup: float,
                  hz: float = 30.0, log_dir: Path | None = None) -> dict[str, Any]:
    """CPU % of the project's node while a camera streams, without and with a tracks reader.

    The node runs in its own process, on demand (``rate_hz: 0``) with its camera always
    subscribed (``unsubscribe_idle_after: 0``), so the only change between the phases is a
    subscriber on ``camera/tracks``: before it, with it (tracks received per second counted),
    and after it left.
    """
    from vision_msgs.msg import Detection2DArray
    ros = Ros()
    client = ros.node('bench_tracks', '/')
    namespace = '/tracking_cost'
    publisher = client.create_publisher(Image, f'{namespace}/camera/image_raw',
                                        QoSProfile(depth=1,
                                                   reliability=ReliabilityPolicy.RELIABLE))
    env = dict(os.environ, PYTHONUNBUFFERED='1', HF_HUB_OFFLINE='1',
               TRANSFORMERS_VERBOSITY='error')
    log = open(log_dir / 'tracking_cost.log', 'w') if log_dir else subprocess.DEVNULL
    proc = subprocess.Popen(_node_command('project', namespace, model_dir, 0.0,
                                          {'unsubscribe_idle_after': 0.0}),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    received: list[float] = []
    out: dict[str, Any] = {}
    streamer = None
    try:
        if not _wait_active(client, namespace, proc):
            raise RuntimeError(f'node in {namespace} did not start (exit code {proc.poll()})')
        ps = psutil.Process(proc.pid)
        streamer = Streamer(publisher, rgb, hz)
        time.sleep(warmup)

        def measure() -> float:
            c0, t0 = _cpu_seconds(ps), time.monotonic()
            time.sleep(seconds)
            return (_cpu_seconds(ps) - c0) / (time.monotonic() - t0) * 100

        out['without_pct'] = measure()
        sub = client.create_subscription(Detection2DArray, f'{namespace}/camera/tracks',
                                         lambda msg: received.append(time.monotonic()), 100)
        time.sleep(max(warmup, 1.5))  # the node looks for subscribers once a second
        count0, t0 = len(received), time.monotonic()
        out['with_pct'] = measure()
        out['tracks_hz'] = (len(received) - count0) / (time.monotonic() - t0)
        client.destroy_subscription(sub)
        time.sleep(max(warmup, 1.5))
        out['after_pct'] = measure()
        out['sent_hz'] = hz
    finally:
        if streamer is not None:
            streamer.stop()
        _stop_node(proc, log)
        ros.close()
    return out
