#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Soak run: replay many frames into the grounding node and check that nothing fails or leaks.

Not a unit test: a long run with a report. It starts the grounding node as users run it
(``python -m kosmos_ros.node.main``, a process of its own, on the tiny random KOSMOS-2 unless
--model says otherwise), and from this process publishes camera frames on two cameras at a high
rate while the node grounds both continuously, plus a steady stream of ``~/ground`` service
calls, over real DDS (loopback only). The node's counters come from its ``/diagnostics``; its
memory and threads from ``/proc``. It reports frames in, inferences, drops, errors, latencies,
resident memory and threads after warm-up and at the end, and the time SIGINT takes to stop
the node; then it checks the goals: no error, no unanswered call, memory growth under 50 MiB
after warm-up, thread count stable. Exit status 1 if a goal is missed.

    tools/in-env python benchmarks/soak.py                      # 20,000 frames at 400 Hz
    tools/in-env python benchmarks/soak.py --frames 2000 --rate 200 --calls-hz 2
    # on demand, the cameras' subscriptions dropped and made again around most calls:
    tools/in-env python benchmarks/soak.py --frames 6000 --rate 60 --ground-hz 0 \
        --calls-hz 3 --unsubscribe-idle-after 0.3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Loopback-only DDS in a domain of its own, and never a model hub (as the tests do).
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_VERBOSITY'] = 'error'
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

CAMERAS = ('left', 'right')
NAMESPACE = '/soak'
COUNTERS = {'frames taken': 'frames_in', 'frames published': 'published',
            'inferences': 'inferences',
            'dropped superseded': 'superseded', 'skipped by rate limit': 'throttled',
            'errors': 'errors', 'last error': 'last_error'}


def proc_status(pid: int, field: str) -> int:
    """Return a field of /proc/PID/status as an integer (kB for memory fields)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise KeyError(field)


def process_figures(pid: int) -> dict:
    return dict(rss=proc_status(pid, 'VmRSS') / 1024, peak=proc_status(pid, 'VmHWM') / 1024,
                threads=proc_status(pid, 'Threads'))


def percentiles(values: list[float]) -> str:
    import numpy as np
    if not values:
        return 'none'
    p50, p95 = np.percentile(values, [50, 95])
    return f'p50 {p50 * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms, max {max(values) * 1e3:.0f} ms'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=20000,
                        help='frames to publish, over both cameras (default 20000)')
    parser.add_argument('--rate', type=float, default=400.0,
                        help='frames per second, over both cameras (default 400)')
    parser.add_argument('--size', default='160x120', help='frame size WxH (default 160x120)')
    parser.add_argument('--ground-hz', type=float, default=100.0,
                        help='rate_hz of continuous grounding per camera (default 100: as '
                             'fast as the model goes)')
    parser.add_argument('--calls-hz', type=float, default=5.0,
                        help='service calls per second (default 5)')
    parser.add_argument('--tokens', type=int, default=8, help='max_new_tokens (default 8)')
    parser.add_argument('--warmup', type=int, default=2000,
                        help='frames before the start figures are taken (default 2000)')
    parser.add_argument('--unsubscribe-idle-after', type=float, default=None,
                        help="the node's unsubscribe_idle_after (default: the node's); with "
                             '--ground-hz 0, a small value makes calls subscribe again')
    parser.add_argument('--model', default='',
                        help='model folder (default: build the tiny random model)')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


class Driver:
    """This side of the wire: cameras, service callers, result and diagnostics listeners."""

    def __init__(self, context, photos):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from kosmos_ros_interfaces.msg import Grounding
        from kosmos_ros_interfaces.srv import Ground
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from kosmos_ros.node.grounding_node import QUERY_QOS

        self.Ground, self.Image = Ground, Image
        self.node = rclpy.create_node('soak_driver', context=context, namespace=NAMESPACE)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.pubs = {cam: self.node.create_publisher(Image, f'{cam}/image_raw', qos)
                     for cam in CAMERAS}
        self.photos = photos
        self.sent: dict[tuple[str, int, int], float] = {}
        self.latencies: list[float] = []
        self.inference_times: list[float] = []
        self.results = dict.fromkeys(CAMERAS, 0)
        self.wrong_headers = 0
        self.counters: dict[str, dict[str, str]] = {}
        self.node_status: dict[str, str] = {}
        self.max_pending = 0
        self.subscribed = dict.fromkeys(CAMERAS, False)
        self.subscriptions_seen = dict.fromkeys(CAMERAS, 0)  # times a camera got a subscriber
        self._lock = threading.Lock()
        for cam in CAMERAS:
            self.node.create_subscription(
                Grounding, f'{cam}/grounding',
                lambda msg, cam=cam: self._on_result(cam, msg), 100)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self.client = self.node.create_client(Ground, 'kosmos_grounding/ground',
                                              qos_profile=QUERY_QOS)
        self.calls: list = []

    def _on_result(self, cam: str, msg) -> None:
        now = time.monotonic()
        key = (cam, msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._lock:
            self.results[cam] += 1
            sent = self.sent.get(key)
            if sent is None or msg.header.frame_id != f'{cam}_optical':
                self.wrong_headers += 1
            else:
                self.latencies.append(now - sent)
            t = msg.inference_time
            self.inference_times.append(t.sec + t.nanosec * 1e-9)

    def _on_diag(self, msg) -> None:
        prefix = f'{NAMESPACE}/kosmos_grounding: '
        for status in msg.status:
            if not status.name.startswith(prefix):
                continue
            values = {kv.key: kv.value for kv in status.values}
            name = status.name[len(prefix):]
            with self._lock:
                if name.startswith('camera '):
                    self.counters[name[len('camera '):]] = values
                else:
                    self.node_status = values
                    self.max_pending = max(self.max_pending,
                                           int(values.get('pending queries', 0)))

    def image(self, cam: str, index: int):
        rgb = self.photos[index % len(self.photos)]
        msg = self.Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                         step=rgb.shape[1] * 3, data=rgb.tobytes())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = f'{cam}_optical'
        return msg

    def publish(self, index: int) -> None:
        cam = CAMERAS[index % len(CAMERAS)]
        msg = self.image(cam, index // len(CAMERAS))
        key = (cam, msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self._lock:
            self.sent[key] = time.monotonic()
        publisher = self.pubs[cam]
        subscribed = publisher.get_subscription_count() > 0  # as discovery tells this side
        if subscribed and not self.subscribed[cam]:
            self.subscriptions_seen[cam] += 1
        self.subscribed[cam] = subscribed
        publisher.publish(msg)

    def call(self, index: int) -> None:
        request = self.Ground.Request(task=self.Ground.Request.CAPTION,
                                      camera=CAMERAS[index % len(CAMERAS)])
        if index % 10 == 9:  # every tenth call sends its own image and asks for a phrase
            request.image = self.image('call', index)
            request.task = self.Ground.Request.FIND
            request.prompt = 'the cup'
        self.calls.append(self.client.call_async(request))

    def totals(self) -> dict:
        with self._lock:
            counters = {cam: dict(values) for cam, values in self.counters.items()}
        out = {key: 0 for key in COUNTERS.values() if key != 'last_error'}
        for values in counters.values():
            for label, key in COUNTERS.items():
                value = str(values.get(label, 0))
                if key != 'last_error' and value.isdigit():
                    out[key] += int(value)
        out['per_camera'] = counters
        return out


def wait_until(predicate, timeout: float, period: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def start_node(model: str, args: argparse.Namespace, log_path: Path) -> subprocess.Popen:
    params = dict(model=model, device=args.device, local_files_only='true',
                  cameras='[' + ','.join(CAMERAS) + ']', rate_hz=args.ground_hz,
                  task='caption', max_new_tokens=args.tokens, max_frame_age=5.0,
                  camera_timeout=2.0, diagnostics_period=0.5)
    if args.unsubscribe_idle_after is not None:
        params['unsubscribe_idle_after'] = args.unsubscribe_idle_after
    command = [sys.executable, '-m', 'kosmos_ros.node.main', '--ros-args', '-r',
               f'__ns:={NAMESPACE}']
    for key, value in params.items():
        command += ['-p', f'{key}:={value}']
    log = open(log_path, 'w')
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def run(args: argparse.Namespace, tmp: Path) -> tuple[list[str], bool]:
    import cv2
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from kosmos_ros.testing.samples import load_photo, PHOTO_NAMES

    width, height = (int(v) for v in args.size.lower().split('x'))
    model = args.model
    if not model:
        from kosmos_ros.testing.tiny_model import build_tiny_model
        model = str(build_tiny_model(tmp / 'tiny'))
    photos = [cv2.resize(load_photo(name), (width, height), interpolation=cv2.INTER_AREA)
              for name in PHOTO_NAMES]
    log_path = tmp / 'node.log'
    proc = start_node(model, args, log_path)
    context = rclpy.Context()
    rclpy.init(context=context)
    driver = Driver(context, photos)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(driver.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        # On demand, unused cameras are not subscribed: then wait for the diagnostics instead.
        subscribed = args.ground_hz > 0 or args.unsubscribe_idle_after == 0
        if not driver.client.wait_for_service(timeout_sec=120.0) or not wait_until(
                lambda: all(p.get_subscription_count() for p in driver.pubs.values())
                if subscribed else driver.node_status.get('pending queries') is not None, 60):
            raise RuntimeError('the node did not come up:\n' + log_path.read_text()[-3000:])
        start: dict = {}
        started = time.monotonic()
        next_call = started
        call_index = 0
        for index in range(args.frames):
            target = started + index / args.rate
            while True:
                now = time.monotonic()
                if args.calls_hz > 0 and now >= next_call and index >= len(CAMERAS):
                    driver.call(call_index)
                    call_index += 1
                    next_call += 1.0 / args.calls_hz
                if now >= target:
                    break
                time.sleep(min(target - now, 0.002))
            driver.publish(index)
            if index + 1 == args.warmup:
                start = process_figures(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f'the node exited with status {proc.returncode}:\n'
                                   + log_path.read_text()[-3000:])
        publish_s = time.monotonic() - started
        wait_until(lambda: all(f.done() for f in driver.calls), 120)
        wait_until(lambda: driver.node_status.get('worker busy') == 'False' and
                   driver.node_status.get('pending queries') == '0', 60)
        time.sleep(1.5)  # the last results and a diagnostics period
        end = process_figures(proc.pid)
        totals = driver.totals()
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            exit_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait()
        shutdown_s = time.monotonic() - stop_started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown(timeout_sec=5.0)
        driver.node.destroy_node()
        rclpy.try_shutdown(context=context)

    answered = [f.result() for f in driver.calls if f.done()]
    succeeded = sum(1 for r in answered if r.success)
    failures = sorted({r.message for r in answered if not r.success})
    unanswered = len(driver.calls) - len(answered)
    if not start:
        start = end
    growth = end['rss'] - start['rss']
    per_camera = totals['per_camera']
    last_errors = sorted({v.get('last error', 'none') for v in per_camera.values()} - {'none'})
    lines = [
        f'kosmos_ros soak: {args.frames} frames at {args.rate:g} Hz over {len(CAMERAS)} '
        f'cameras ({width}x{height} rgb8, best effort, depth 1), continuous caption at up to '
        f'{args.ground_hz:g} Hz per camera, {args.calls_hz:g} service calls/s, '
        f'max_new_tokens {args.tokens}, {"tiny random model" if not args.model else model} '
        f'on {args.device}; node in its own process (kosmos_ros.node.main)',
        f'publishing took           {publish_s:.1f} s ({args.frames / publish_s:.0f} frames/s)',
        f'frames taken (node)       {totals["frames_in"]} of {args.frames} sent, '
        f'{totals.get("published", "?")} seen published (the node takes frames from DDS only '
        'when it grounds or answers; the rest are replaced in DDS: best effort, depth 1)',
        f'inferences                {totals["inferences"]} ('
        + ', '.join(f'{c} {per_camera.get(c, {}).get("inferences", "?")}' for c in CAMERAS)
        + ')',
        f'drops                     {totals["superseded"]} superseded by a newer frame, '
        f'{totals["throttled"]} skipped by the rate limit',
        f'errors                    {totals["errors"]} frames refused or failed'
        + (f' (last: {"; ".join(last_errors)[:200]})' if last_errors else ''),
        'results received          ' + ', '.join(f'{c} {driver.results[c]}' for c in CAMERAS)
        + f'; {driver.wrong_headers} with a header that was not sent',
        f'service calls             {len(driver.calls)} sent, {len(answered)} answered '
        f'({succeeded} succeeded, {len(answered) - succeeded} failed), {unanswered} unanswered'
        + (f'; failures: {"; ".join(failures)[:200]}' if failures else ''),
        f'queries waiting (peak)    {driver.max_pending} (node diagnostics, every 0.5 s)',
        'camera subscriptions      '
        + ', '.join(f'{c} {driver.subscriptions_seen[c]}' for c in CAMERAS)
        + ' times subscribed (seen from the publishers at each frame)',
        f'latency frame -> result   {percentiles(driver.latencies)}',
        f'inference time            {percentiles(driver.inference_times)}',
        f'node resident memory      {start["rss"]:.1f} MiB after warm-up ({args.warmup} '
        f'frames), {end["rss"]:.1f} MiB at the end: growth {growth:+.1f} MiB '
        f'(peak {end["peak"]:.1f} MiB)',
        f'node threads              {start["threads"]} after warm-up, {end["threads"]} at the '
        'end',
        f'shutdown on SIGINT        {shutdown_s:.2f} s, exit status {exit_code}',
    ]
    goals = [
        ('no error', totals['errors'] == 0 and not failures and driver.wrong_headers == 0),
        ('no unanswered call', unanswered == 0),
        ('memory growth under 50 MiB after warm-up', growth < 50.0),
        ('thread count stable', end['threads'] <= start['threads']),
        ('clean shutdown', exit_code == 0),
    ]
    lines += [f'goal: {name:<42} {"PASS" if met else "FAIL"}' for name, met in goals]
    return lines, all(met for _, met in goals)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lines, passed = run(args, Path(tmp))
    print('\n'.join(lines))
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
