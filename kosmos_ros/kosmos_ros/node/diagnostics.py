# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``/diagnostics`` of the node: the model's status and one status per camera.

The node hands over a :class:`NodeStatus` snapshot each period; this module turns it into a
``DiagnosticArray``, and logs (throttled) what it reports as a warning. Rates are counted over
the last :data:`RATE_WINDOW` seconds so that low rates read steadily (0.5 Hz reads 0.50, not
0 and 1 in turn), and a camera's silence counts from the later of its last frame and its
current subscription: time unsubscribed on purpose is not silence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

RATE_WINDOW = 10.0  # seconds over which inferences are counted


@dataclass
class NodeStatus:
    """What the node reports in one period."""

    state: str
    engine: Any = None
    worker: Any = None
    camera_timeout: float = 0.0
    intakes: dict[str, Any] = field(default_factory=dict)  # camera -> CameraIntake
    active_since: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    continuous_problem: str = ''


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


def _values(items: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=v) for k, v in items.items()]


def model_status(name: str, status: NodeStatus) -> DiagnosticStatus:
    """Return the model's status: loaded or not, where, why continuous grounding pauses."""
    engine, worker = status.engine, status.worker
    model = DiagnosticStatus(name=f'{name}: model', hardware_id=name)
    values = {'state': status.state, **{k: str(v) for k, v in status.counters.items()}}
    if engine is not None:
        model.level, model.message = DiagnosticStatus.OK, 'loaded'
        opts = engine.loaded.options
        values.update({'model': opts.model, 'device': str(engine.device),
                       'dtype': str(engine.dtype).replace('torch.', ''),
                       'quantization': opts.quantization})
        if engine.device.type == 'cuda':
            import torch
            values['gpu memory allocated MiB'] = \
                f'{torch.cuda.memory_allocated(engine.device) / 2**20:.0f}'
            values['gpu memory reserved MiB'] = \
                f'{torch.cuda.memory_reserved(engine.device) / 2**20:.0f}'
        if status.continuous_problem:
            model.level = DiagnosticStatus.WARN
            model.message = f'continuous grounding {status.continuous_problem}'
    else:
        model.level, model.message = DiagnosticStatus.WARN, 'no model loaded'
    if worker is not None:
        values['pending queries'] = str(worker.pending_jobs())
        values['worker busy'] = str(worker.busy)
    model.values = _values(values)
    return model


def _camera_message(status: NodeStatus, intake: Any, stats: dict[str, Any],
                    now: float) -> tuple[int, str]:
    """Return the camera's level and message: ok, not subscribed, or how long silent."""
    timeout, active = status.camera_timeout, status.state == 'active'
    if intake is not None and not intake.subscribed:  # on demand and unused: discovery only
        publishers = intake.publishers()
        if publishers == 0 and timeout > 0 and active:
            return DiagnosticStatus.WARN, f'no publisher on {intake.topic}'
        return DiagnosticStatus.OK, (f'not subscribed while unused ({publishers} '
                                     f'publisher{"s" if publishers != 1 else ""})')
    received = stats['last_received_wall']
    since = intake.subscribed_at if intake is not None else None
    heard = [t for t in (received, since) if t is not None]
    silent = now - max(heard) if heard else None
    if timeout <= 0 or not active or (silent is not None and silent <= timeout):
        return DiagnosticStatus.OK, 'ok'
    if received is None or (since is not None and received < since):
        suffix = f' ({silent:.1f} s since subscribing)' if silent is not None else ''
        return DiagnosticStatus.WARN, 'no image received yet' + suffix
    return DiagnosticStatus.WARN, f'no image for {silent:.1f} s'


def camera_status(name: str, camera: str, status: NodeStatus, stats: dict[str, Any],
                  now: float) -> DiagnosticStatus:
    """Return one camera's status: silence, rates, latency and counters."""
    intake = status.intakes.get(camera)
    level, message = _camera_message(status, intake, stats, now)
    out = DiagnosticStatus(name=f'{name}: camera {camera}', hardware_id=camera, level=level,
                           message=message)
    window = min(RATE_WINDOW, max(now - status.active_since, 1e-3))
    inferences = sum(1 for t in stats['result_times'] if t > now - window)
    latencies, last = stats['latencies'], stats['last_result_wall']
    rate = intake.rate_hz if intake is not None else None
    published = intake.published if intake is not None else None
    out.values = _values({
        'input rate Hz': 'unknown' if rate is None else f'{rate:.2f}',
        'inference rate Hz': f'{inferences / window:.2f}',
        'latency p50 ms': f'{_percentile(latencies, 50) * 1e3:.1f}',
        'latency p95 ms': f'{_percentile(latencies, 95) * 1e3:.1f}',
        'subscribed': 'no' if intake is not None and not intake.subscribed else 'yes',
        'subscription reliability': subscription_reliability(intake),
        'frames published': 'unknown' if published is None else str(published),
        'frames taken': str(stats['frames_in']),
        'inferences': str(stats['inferences']),
        'dropped superseded': str(stats['superseded']),
        'skipped by rate limit': str(stats['throttled']),
        'errors': str(stats['errors']),
        'last error': stats['last_error'] or 'none',
        'last result age s': 'never' if last is None else f'{now - last:.2f}',
    })
    return out


def subscription_reliability(intake: Any) -> str:
    """Say which reliability the camera's subscription uses, and who chose it."""
    if intake is None or intake.reliability is None:
        return 'none (not subscribed)'
    chosen = intake.reliability.replace('_', ' ')
    if intake.wanted != 'auto':
        return f'{chosen} (image_qos_reliability)'
    return f'{chosen} (auto, from the publishers; re-subscribed {intake.qos_changes}x)'


def diagnostics_msg(name: str, stamp: Any, status: NodeStatus) -> DiagnosticArray:
    """Return the whole array: the model's status, then one per camera."""
    now = time.monotonic()
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status.append(model_status(name, status))
    if status.worker is not None:
        for camera, stats in status.worker.snapshot().items():
            array.status.append(camera_status(name, camera, status, stats, now))
    return array


class DiagnosticsPublisher:
    """Publishes ``/diagnostics`` for ``node`` every ``period`` seconds (through ``writes``).

    ``status()`` returns the node's :class:`NodeStatus`; each camera reported as a warning is
    also logged, at most once per its ``camera_timeout`` (at least 1 s).
    """

    def __init__(self, node: Any, period: float, status: Callable[[], NodeStatus],
                 writes: Any):
        self._node, self._status, self._writes = node, status, writes
        self.publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.timer = node.create_timer(period, self._publish,
                                       callback_group=MutuallyExclusiveCallbackGroup())

    def set_period(self, period: float) -> None:
        self.timer.timer_period_ns = int(period * 1e9)

    def _publish(self) -> None:
        node, status = self._node, self._status()
        array = diagnostics_msg(node.get_fully_qualified_name(), node.get_clock().now().to_msg(),
                                status)
        for item in array.status[1:]:
            if item.level == DiagnosticStatus.WARN:
                node.get_logger().warning(f'camera {item.hardware_id}: {item.message}',
                                          throttle_duration_sec=max(status.camera_timeout, 1.0))
        self._writes.publish(self.publisher, array, '/diagnostics')
