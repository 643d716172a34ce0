# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The node's parameters on the ROS side: declared, read into a snapshot, checked on set.

:class:`ParameterStore` declares every parameter of :mod:`.parameter_table` with its description
and range, reads them into a :class:`~.parameter_table.NodeParams` snapshot at configure (with
the camera topics resolved by the node's own remap rules) and checks every later set with the
same rules.
Start-up values (``-p``, params files) that rclpy would refuse with an exception at declaration
(another type, out of range) are refused here instead: the default stands, one line names the
parameter, and configure fails with that line until the parameter is set right.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidTopicNameException
from rclpy.parameter import Parameter

from kosmos_ros.admission import compressed_topic
from kosmos_ros.datatypes import Task
from kosmos_ros.errors import PromptError, RegionError
from kosmos_ros.node.lifecycle import RCLError
from kosmos_ros.node.parameter_table import (CAMERA_SPECS, CameraConfig, check_together,
                                             check_value, coerce_value, NodeParams, Spec, SPECS)

# Checks a continuous task and prompt (with the model when loaded); raises with the reason.
ContinuousCheck = Callable[[str, str, int], Any]


def descriptor(name: str, spec: Spec) -> ParameterDescriptor:
    """Return the ROS descriptor of a parameter: description, choices, range, reload."""
    notes = []
    if spec.choices:
        notes.append('one of: ' + ', '.join(spec.choices))
    if spec.reload:
        notes.append('changes need a reload: cleanup, set, configure')
    desc = ParameterDescriptor(name=name, description=spec.description,
                               additional_constraints='; '.join(notes))
    if spec.low is not None and isinstance(spec.default, int) and \
            not isinstance(spec.default, bool):
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                           step=0)]
    elif spec.low is not None and isinstance(spec.default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                        to_value=float(spec.high), step=0.0)]
    return desc


def missing_prompt(task: str, prompt: str) -> bool:
    """Whether ``task`` needs a prompt (find, question, raw) and ``prompt`` is empty."""
    return Task.parse(task) in (Task.FIND, Task.QUESTION, Task.RAW) and not str(prompt).strip()


def spec_of(name: str) -> Spec | None:
    """Return the spec of a node parameter or a camera's (``NAME.topic``), else None."""
    if name in SPECS:
        return SPECS[name]
    return CAMERA_SPECS.get(name.rsplit('.', 1)[-1]) if '.' in name else None


class ParameterStore:
    """Declares, reads and checks the parameters of one node."""

    def __init__(self, node: Any):
        self._node = node
        self.startup_problems: dict[str, str] = {}
        for name, spec in SPECS.items():
            self.declare(name, spec)

    def declare(self, name: str, spec: Spec) -> None:
        """Declare a parameter; a start-up value rclpy would refuse is refused, not fatal."""
        node = self._node
        override = node._parameter_overrides.get(name)
        if override is not None:
            value, problem = coerce_value(name, spec, override.value)
            problem = problem or check_value(name, spec, value)  # out of range: rclpy raises
            if problem:
                del node._parameter_overrides[name]
                self.startup_problems[name] = problem
                node.get_logger().error(problem)
            elif value is not override.value:
                node._parameter_overrides[name] = Parameter(name, value=value)
        node.declare_parameter(name, spec.default, descriptor(name, spec))

    def value(self, name: str) -> Any:
        return self._node.get_parameter(name).value

    def snapshot(self) -> NodeParams:
        """Read and check every parameter; raise ValueError with the first problem."""
        values = {name: self.value(name) for name in SPECS}
        problem = check_value('cameras', SPECS['cameras'], values['cameras'])
        if problem:
            raise ValueError(problem)
        for cam in values['cameras']:
            for key, spec in CAMERA_SPECS.items():
                full = f'{cam}.{key}'
                if not self._node.has_parameter(full):
                    self.declare(full, spec)
                values[full] = self.value(full)
        if self.startup_problems:
            raise ValueError(next(iter(self.startup_problems.values())))
        problem = next(filter(None, (check_value(name, spec_of(name), value)
                                     for name, value in values.items())), None)
        problem = problem or check_together(values)
        if problem:
            raise ValueError(problem)
        cameras = tuple(self._camera(cam, values) for cam in values['cameras'])
        own = {k: v for k, v in values.items() if k in SPECS}
        own['cameras'] = tuple(own['cameras'])
        return NodeParams(**own, camera_configs=cameras)

    def _camera(self, cam: str, values: dict[str, Any]) -> CameraConfig:
        topic = self._resolve(f'{cam}.topic', values[f'{cam}.topic'] or f'{cam}/image_raw')
        transport = values[f'{cam}.transport']
        depth_topic = values[f'{cam}.depth_topic']
        info_topic = values[f'{cam}.camera_info_topic'] or f'{cam}/camera_info'
        if depth_topic:
            depth_topic = self._resolve(f'{cam}.depth_topic', depth_topic)
            info_topic = self._resolve(f'{cam}.camera_info_topic', info_topic)
        if transport == 'compressed':
            self._resolve(f'{cam}.topic', compressed_topic(topic))
        return CameraConfig(cam, topic, transport, depth_topic, info_topic)

    def _resolve(self, name: str, topic: str) -> str:
        """Resolve a topic name with the node's namespace and remap rules, or raise."""
        try:
            return self._node.resolve_topic_name(topic)
        except (InvalidTopicNameException, RCLError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
            raise ValueError(f'{name}: {topic!r} is not a valid topic name ({first})') from None

    def check_set(self, params: list[Any], state: str, configured: bool,
                  check_continuous: ContinuousCheck) -> SetParametersResult:
        """Check a set of parameters by the rules of :mod:`.parameter_table` (on-set callback)."""
        changes = {p.name: p.value for p in params}
        for name, value in changes.items():
            spec = spec_of(name)
            if spec is None:
                continue
            if spec.reload and state not in ('unconfigured', 'configuring'):
                return SetParametersResult(
                    successful=False, reason=f'{name} needs a reload: deactivate and cleanup '
                    f'the node, set it, then configure (node is {state})')
            problem = check_value(name, spec, value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        current = {k: changes.get(k, self.value(k)) for k in
                   ('depth_min', 'depth_max', 'task', 'prompt', 'rate_hz', 'max_prompt_tokens')}
        if {'depth_min', 'depth_max'} & changes.keys():
            problem = check_together(current)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        # A task that needs a prompt may come before its prompt (ros2 param set and rqt set one
        # parameter at a time): continuous grounding pauses until both are set.
        if {'task', 'prompt', 'rate_hz', 'max_prompt_tokens'} & changes.keys() and configured \
                and current['rate_hz'] > 0 and not missing_prompt(current['task'],
                                                                  current['prompt']):
            try:
                check_continuous(current['task'], current['prompt'],
                                 current['max_prompt_tokens'])
            except (PromptError, RegionError, ValueError) as exc:
                return SetParametersResult(
                    successful=False, reason=f'continuous task {current["task"]!r}: {exc}')
        return SetParametersResult(successful=True)

    def applied(self, params: list[Any], snapshot: NodeParams | None) -> NodeParams | None:
        """Note a successful set; return the next snapshot (None while unconfigured)."""
        for p in params:
            self.startup_problems.pop(p.name, None)  # set right since start-up
        if snapshot is None:
            return None
        changed = {p.name: p.value for p in params if p.name in SPECS}
        if 'cameras' in changed:
            changed['cameras'] = tuple(changed['cameras'])
        return replace(snapshot, **changed)
