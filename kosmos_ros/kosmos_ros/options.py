# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a grounding run is asked to do: one record, its defaults and rules written once.

:class:`GroundingOptions` holds the task, prompt, token budget, rate, score threshold, depth
and tracking settings and the model flags of a run, for every tool alike: the node's
parameters (:mod:`kosmos_ros.node.parameter_table` takes these fields' specs for its own
parameters of the same names), ``ground_bag``, ``kosmos_corpus`` and the demo
(:mod:`kosmos_ros.cli_options` makes their command-line flags from the same specs). Each field
carries a :class:`Spec` (default, description, limits); :meth:`GroundingOptions.check` applies
:func:`check_value` to each field and :func:`check_together` to the whole, the only place
these rules are written. :func:`requested_or` is the one rule for a request's value that stands
for a parameter (a service request's ``min_score``, 0 meaning the node's).

ROS-free and light: importing it loads neither torch nor OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
import math
from typing import Any

from kosmos_ros.datatypes import DEFAULT_MODEL, QUANTIZATIONS, Task
from kosmos_ros.errors import KosmosError

TASK_NAMES = tuple(t.name.lower() for t in Task)
DTYPE_NAMES = ('auto', 'float32', 'float16', 'bfloat16')


class OptionsError(KosmosError, ValueError):
    """An option or parameter value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Spec:
    """One option: default, description, limits and whether the node needs a reload for it."""

    default: Any
    description: str
    reload: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


def spec_field(default: Any, description: str, **limits: Any) -> Any:
    """Return a dataclass field whose metadata is the option's :class:`Spec`."""
    declared = list(default) if isinstance(default, tuple) else default  # ROS: string arrays
    return field(default=default, metadata={'spec': Spec(declared, description, **limits)})


def specs_of(cls: type) -> dict[str, Spec]:
    """Return the specs of a dataclass's fields, by name."""
    return {f.name: f.metadata['spec'] for f in fields(cls) if 'spec' in f.metadata}


def check_value(name: str, spec: Spec, value: Any) -> str | None:
    """Return why ``value`` is invalid for the option ``name``, or None when it is valid."""
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}; got {value!r}'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return f'{name} must be a finite number; got {value}'
        if spec.low is not None and value < spec.low:
            return f'{name} must be at least {spec.low:g}; got {value}'
        if spec.high is not None and value > spec.high:
            return f'{name} must be at most {spec.high:g}; got {value}'
    return None


def check_together(values: dict[str, Any]) -> str | None:
    """Return why a set of option values is inconsistent (depth_min >= depth_max), or None."""
    if 'depth_min' in values and 'depth_max' in values and \
            not values['depth_min'] < values['depth_max']:
        return (f'depth_min ({values["depth_min"]:g} m) must be below depth_max '
                f'({values["depth_max"]:g} m)')
    return None


@dataclass(frozen=True)
class GroundingOptions:
    """What a grounding run is asked to do (the node's same-named parameters share the specs).

    ``rate_hz`` is in frames per second of message time per image topic: the node grounds
    that often while it runs continuously; ``ground_bag`` and the corpus ground at most that
    many frames (0: every frame).
    """

    task: str = spec_field(
        'caption', 'Task: caption, detailed_caption, find, question or raw.',
        choices=TASK_NAMES)
    prompt: str = spec_field(
        '', 'The phrase (find), the question (question) or the full prompt (raw); unused by '
        'the caption tasks.')
    max_new_tokens: int = spec_field(
        64, 'Tokens to generate at most per query.', low=1, high=1024)
    rate_hz: float = spec_field(
        0.0, 'Frames per second of message time grounded per image topic; 0: every frame.',
        low=0.0, high=100.0)
    min_score: float = spec_field(
        0.0, 'Boxes scoring below this are left out of the detections (the grounding keeps '
        'every phrase with its score).', low=0.0, high=1.0)
    depth_tolerance: float = spec_field(
        0.05, 'Most seconds between a colour frame and the depth frame used to lift its boxes '
        'to 3D.', low=0.0, high=5.0)
    depth_min: float = spec_field(
        0.1, 'Depths below this many metres are invalid.', low=0.0, high=1000.0)
    depth_max: float = spec_field(
        10.0, 'Depths above this many metres are invalid.', low=0.0, high=1000.0)
    depth_inner_fraction: float = spec_field(
        0.5, "Part of a box's width and height, around its centre, whose median depth gives "
        'its distance.', low=0.05, high=1.0)
    track: bool = False  # follow the boxes on every admitted frame (offline tools)
    track_rate_hz: float = spec_field(
        0.0, 'Most frames per second of message time tracked per image topic; 0 tracks every '
        'frame.', low=0.0, high=1000.0)
    track_max_age: float = spec_field(
        3.0, 'Seconds (message time) a track lives after the last model result that confirmed '
        'it.', low=0.05, high=3600.0)
    track_coast_time: float = spec_field(
        1.0, 'Seconds (message time) a track coasts on its motion model (state predicted) when '
        'the optical flow fails (blur, an exposure step, occlusion), before it is lost; the '
        'flow looks for it again on every frame meanwhile. 0: lost at once.',
        low=0.0, high=60.0)
    model: str = spec_field(
        DEFAULT_MODEL, 'Hugging Face hub id or local folder of KOSMOS-2 (safetensors weights '
        'only).', reload=True)
    device: str = spec_field(
        'auto', "'auto' (first CUDA device, else CPU), 'cpu', 'cuda' or 'cuda:N'.", reload=True)
    dtype: str = spec_field(
        'auto', 'Weights dtype; auto is float16 on CUDA and float32 on the CPU.', reload=True,
        choices=DTYPE_NAMES)
    quantization: str = spec_field(
        'none', 'Weight quantization: none; 8bit or 4bit (bitsandbytes, CUDA); int8 (torchao '
        'weight-only, CUDA or CPU) or int4 (torchao weight-only, CUDA, bfloat16).', reload=True,
        choices=QUANTIZATIONS)
    local_files_only: bool = spec_field(
        False, 'Load from the local folder or Hugging Face cache only; never touch the network.',
        reload=True)
    cpu_threads: int = spec_field(
        1, 'Torch threads for model work on the CPU (preprocessing included). 1 is fastest '
        'and steadiest when other processes share the cores; more only help a large model on '
        'an otherwise idle CPU.', low=1, high=64)

    def check(self) -> GroundingOptions:
        """Return the options when every one is valid; OptionsError naming the first that is not.

        The task is read (``Task.parse``), every field checked against its spec, and the
        depth range as a whole.
        """
        try:
            Task.parse(self.task)
        except ValueError as exc:
            raise OptionsError(f'task: {exc}') from None
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, spec in SPECS.items():
            if name == 'task':
                continue
            problem = check_value(name, spec, values[name])
            if problem:
                raise OptionsError(problem)
        problem = check_together(values)
        if problem:
            raise OptionsError(problem)
        return self

    @property
    def query_task(self) -> Task:
        return Task.parse(self.task)

    def tracker(self) -> Any:
        """Return the tracks' settings (:class:`kosmos_ros.tracking.track.TrackerSettings`)."""
        from kosmos_ros.tracking.track import TrackerSettings  # OpenCV, scipy: only tracking

        return TrackerSettings(track_max_age=float(self.track_max_age),
                               coast_seconds=float(self.track_coast_time))

    def with_values(self, **changes: Any) -> GroundingOptions:
        return replace(self, **changes)


SPECS: dict[str, Spec] = specs_of(GroundingOptions)


def grounding_spec(name: str, default: Any = None, description: str | None = None,
                   reload: bool | None = None) -> Any:
    """Return a field for a node parameter that is the grounding option ``name``.

    The limits and choices are the option's (one rule); the node may give its own default
    (``rate_hz``: continuous grounding at 1 Hz), description (what it means for a topic) and
    reload flag.
    """
    spec = SPECS[name]
    spec = replace(spec, default=spec.default if default is None else default,
                   description=spec.description if description is None else description,
                   reload=spec.reload if reload is None else reload)
    return field(default=spec.default, metadata={'spec': spec})


def requested_or(name: str, requested: Any, default: Any, spec: Spec | None = None) -> Any:
    """Return a request's value for the option ``name``, or ``default`` when it gives 0.

    The one rule for fields that stand for a parameter in a request or goal (``min_score``, a
    follow goal's ``regrounding_hz``): 0 means the node's value; any other value is checked as
    the option is (its ``spec``: the grounding option's by default; OptionsError naming it).
    A request's ``max_new_tokens`` has a limit of its own, ``max_request_tokens``.
    """
    if not requested:  # 0, 0.0 or empty
        return default
    problem = check_value(name, spec or SPECS[name], requested)
    if problem:
        raise OptionsError(problem)
    return requested
