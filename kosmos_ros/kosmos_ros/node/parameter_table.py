# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The node's parameters: one typed, frozen dataclass; declared, described and checked from it.

:class:`NodeParams` and :class:`CameraParams` are the single source: each field carries its
default, description, limits and whether it needs a reload; :data:`SPECS` and
:data:`CAMERA_SPECS` (what the node declares, ``--help`` prints and ``params_file.py`` writes
to config/grounding.yaml) are read off them. The node keeps a :class:`NodeParams` snapshot,
replaced as a whole when a parameter changes.

Parameters marked ``reload`` configure the model or the cameras; they can be changed only while
the node is unconfigured (``cleanup``, set, ``configure``). The others apply at runtime. Values
from ``-p`` and params files get the same checks as later sets (:func:`check_value`,
:func:`check_together`); :func:`coerce_value` takes integers for floats.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any

from kosmos_ros.admission import compressed_topic
from kosmos_ros.datatypes import ATTENTION, DECODERS
from kosmos_ros.depth import DepthSettings
from kosmos_ros.options import (check_together, check_value as check_option,  # noqa: F401
                                grounding_spec, GroundingOptions, Spec, spec_field as _spec,
                                SPECS as GROUNDING_SPECS, specs_of, TASK_NAMES)

TRANSPORTS = ('raw', 'compressed')
RELIABILITIES = ('best_effort', 'reliable', 'auto')
_CAMERA_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


@dataclass(frozen=True)
class CameraConfig:
    """One camera, its topic names resolved by the node."""

    name: str
    topic: str
    transport: str
    depth_topic: str = ''
    camera_info_topic: str = ''

    @property
    def subscribed_topic(self) -> str:
        return compressed_topic(self.topic) if self.transport == 'compressed' else self.topic


@dataclass(frozen=True)
class NodeParams:
    """The node's parameters (a snapshot; :func:`dataclasses.replace` makes the next one)."""

    model: str = grounding_spec('model')
    revision: str = _spec(
        '', 'Hub revision (branch, tag or commit); empty for the default.', reload=True)
    local_files_only: bool = grounding_spec('local_files_only')
    device: str = grounding_spec('device')
    dtype: str = grounding_spec('dtype')
    quantization: str = grounding_spec('quantization')
    attn_implementation: str = _spec(
        'sdpa', 'Attention kernels: sdpa or eager.', reload=True, choices=ATTENTION)
    decoder: str = _spec(
        'auto', 'How tokens after the first are decoded: auto (cuda_graph on CUDA, static for '
        '8-bit models, dynamic on the CPU), dynamic, static or cuda_graph.', reload=True,
        choices=DECODERS)
    compile_decoder: bool = _spec(
        False, 'torch.compile the decode step of the static and cuda_graph decoders (faster '
        'decoding on CUDA; configure then compiles for about 30 s, and each new batch size or '
        'length bucket compiles on first use).', reload=True)
    cameras: tuple[str, ...] = _spec(
        ('camera',), 'Camera names. Camera NAME subscribes NAME.topic and publishes '
        'NAME/detections, NAME/grounding, NAME/debug_image and NAME/tracks.', reload=True)
    image_qos_reliability: str = _spec(
        'auto', 'Image subscription reliability. auto: reliable when every publisher on the '
        'topic offers reliable, else best effort, looked at again while subscribed (a '
        'publisher that comes or goes may make the node subscribe anew). reliable: fragments '
        'lost in transit are sent again, but best-effort (sensor-data QoS) publishers are '
        'not received. best_effort: any publisher is received, but frames larger than the '
        'transport buffers (about 0.5 MB with Fast DDS defaults: 640x480 rgb8 and larger) are '
        'often lost whole.', reload=True, choices=RELIABILITIES)
    image_qos_depth: int = _spec(
        1, 'Image subscription queue depth. Each take gets the oldest frame queued, so 1 (the '
        'newest frame only) keeps inference and tracking on the newest frame.',
        reload=True, low=1, high=100)
    rate_hz: float = grounding_spec(
        'rate_hz', 1.0, 'Continuous grounding per camera, in inferences per second of message '
        'time (header stamps); 0 means on-demand only.')
    task: str = grounding_spec(
        'task', description='Continuous task: caption, detailed_caption, find, question or raw.')
    prompt: str = grounding_spec(
        'prompt', description='Continuous prompt: the phrase (find), the question (question) '
        'or the full prompt (raw); unused by the caption tasks.')
    max_new_tokens: int = grounding_spec(
        'max_new_tokens', description='Tokens to generate at most per query (a request may ask '
        'for another budget, up to max_request_tokens).')
    num_beams: int = _spec(
        1, 'Beam search width; 1 is greedy decoding, which batches.', low=1, high=8)
    no_repeat_ngram_size: int = _spec(
        0, 'Forbid repeating n-grams of this size; 0 is off.', low=0, high=16)
    min_score: float = grounding_spec(
        'min_score', description='Leave boxes scoring below this out of NAME/detections, '
        'NAME/detections_3d and NAME/markers (NAME/grounding keeps every phrase with its '
        'score); requests may set their own (min_score).')
    max_prompt_tokens: int = _spec(
        256, 'Longest accepted prompt, in tokens.', low=1, high=1024)
    max_batch_size: int = _spec(
        8, 'Most queries and frames decoded together.', low=1, high=64)
    cpu_threads: int = grounding_spec('cpu_threads')
    max_frame_age: float = _spec(
        2.0, 'Seconds (node clock minus frame stamp) after which a camera frame is too old to '
        'answer a query; 0 disables the check.', low=0.0, high=3600.0)
    unsubscribe_idle_after: float = _spec(
        10.0, "On demand (rate_hz 0): drop a camera's image (and depth) subscriptions after "
        'this many seconds without a query on it, so that an idle node receives no frames; '
        'the next query subscribes again and waits for the next frame. 0 keeps the '
        'subscriptions at all times.', low=0.0, high=86400.0)
    frame_wait_timeout: float = _spec(
        2.0, 'Seconds a query on a camera waits for a frame when the node has none (just '
        'subscribed, or no frame received yet); 0 answers at once.', low=0.0, high=60.0)
    max_pending_queries: int = _spec(
        32, 'Most service and action requests held at once (waiting for a frame, queued or '
        'running); more are refused at once as busy.', low=1, high=10_000)
    max_pending_image_mb: float = _spec(
        256.0, 'Most megabytes (MiB) of images sent with requests held at once; a request that '
        'would exceed it is refused as busy.', low=1.0, high=65536.0)
    max_request_tokens: int = _spec(
        256, 'Most new tokens one request may ask for (its max_new_tokens); a request asking '
        'for more is refused.', low=1, high=2048)
    camera_timeout: float = _spec(
        5.0, 'Warn when a camera has sent nothing for this many seconds; 0 disables the '
        'warning.', low=0.0, high=3600.0)
    max_image_pixels: int = _spec(
        50_000_000, 'Largest accepted image, in pixels.', low=1, high=1_000_000_000)
    depth_tolerance: float = grounding_spec('depth_tolerance')
    depth_min: float = grounding_spec('depth_min')
    depth_max: float = grounding_spec('depth_max')
    depth_inner_fraction: float = grounding_spec('depth_inner_fraction')
    track_rate_hz: float = grounding_spec(
        'track_rate_hz', description='Most frames per second of message time each camera is '
        'tracked on (NAME/tracks, NAME/track_states, NAME/tracks_3d and follow feedback); 0 '
        'tracks every frame. A camera is tracked only while one of those topics has a '
        'subscriber or a follow goal uses it.')
    track_max_age: float = grounding_spec('track_max_age')
    track_coast_time: float = grounding_spec(
        'track_coast_time', description='Seconds (message time) a track coasts on its motion '
        'model (state predicted, on NAME/tracks) when the optical flow fails (blur, an '
        'exposure step, occlusion), before it is lost; the flow looks for it again on every '
        'frame meanwhile. 0: lost at once.')
    lost_timeout: float = _spec(
        5.0, 'A follow goal ends (aborted) once its target has not been tracked for this many '
        'seconds (node clock), or, not found yet, this long after the goal began.',
        low=0.1, high=3600.0)
    follow_regrounding_hz: float = _spec(
        1.0, 'Model confirmations (FIND queries) per second of a follow goal that does not ask '
        'for its own rate; they share batches with the other queries.', low=0.01, high=100.0)
    max_follow_goals: int = _spec(
        8, 'Most follow goals running at once; a goal beyond it ends at once with the reason.',
        low=1, high=256)
    follow_client_timeout: float = _spec(
        2.0, "A follow goal ends (aborted, 'client gone') once no subscriber of the action's "
        'feedback that was there when it was accepted has been left for this many seconds '
        '(a client that exits leaves at once; a killed one when DDS notices, within its lease: '
        'about 20 s with Fast DDS defaults).', low=0.1, high=3600.0)
    follow_activation_timeout: float = _spec(
        30.0, 'A follow goal sent while the node is configuring or activating waits this many '
        'seconds (node clock) for it to become active, then ends with the reason.',
        low=0.0, high=3600.0)
    diagnostics_period: float = _spec(
        1.0, 'Seconds between /diagnostics messages.', low=0.1, high=60.0)
    autostart: bool = _spec(
        True, 'Configure and activate on start-up (no lifecycle manager needed).', reload=True)
    # Not a parameter: the cameras resolved at configure (names, topics, transports).
    camera_configs: tuple[CameraConfig, ...] = ()

    def grounding(self) -> GroundingOptions:
        """Return the grounding options these parameters ask for (the tools' same record)."""
        return GroundingOptions(**{name: getattr(self, name) for name in GROUNDING_SPECS
                                   if hasattr(self, name)})

    def depth(self) -> DepthSettings:
        """Return the depth settings (the same type the offline tools take)."""
        return DepthSettings.of(self)

    def tracker(self) -> Any:
        """Return the tracks' settings (a :class:`kosmos_ros.tracking.track.TrackerSettings`)."""
        return self.grounding().tracker()


@dataclass(frozen=True)
class CameraParams:
    """The parameters of each camera NAME listed in ``cameras`` (``NAME.topic``, ...)."""

    topic: str = _spec(
        '', 'Image topic of the camera; default NAME/image_raw.', reload=True)
    transport: str = _spec(
        'raw', "'raw' (sensor_msgs/Image on TOPIC) or 'compressed' "
        '(sensor_msgs/CompressedImage on TOPIC/compressed).', reload=True, choices=TRANSPORTS)
    depth_topic: str = _spec(
        '', 'Registered depth image (16UC1 mm or 32FC1 m, aligned to this camera, rectified); '
        'empty: no 3D.', reload=True)
    camera_info_topic: str = _spec(
        '', 'CameraInfo of the rectified colour image; default NAME/camera_info (used with '
        'depth_topic).', reload=True)


SPECS: dict[str, Spec] = specs_of(NodeParams)
CAMERA_SPECS: dict[str, Spec] = specs_of(CameraParams)


def check_value(name: str, spec: Spec, value: Any) -> str | None:
    """Return why ``value`` is invalid for the parameter ``name``, or None when it is valid.

    The grounding options' rules (:func:`kosmos_ros.options.check_value`), and the camera
    names'.
    """
    problem = check_option(name, spec, value)
    if problem or name != 'cameras':
        return problem
    names = list(value)
    if not names:
        return 'cameras must name at least one camera'
    if len(set(names)) != len(names):
        return f'cameras must be unique; got {names}'
    for cam in names:
        if not isinstance(cam, str) or not _CAMERA_NAME.fullmatch(cam):
            return (f'camera name {cam!r} must be ASCII letters, digits and underscores, '
                    'not starting with a digit (it names parameters and topics)')
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, int):
        return 'an integer'
    if isinstance(value, float):
        return 'a floating-point number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return 'a list of strings'
    return f'a {type(value).__name__}'


def coerce_value(name: str, spec: Spec, value: Any) -> tuple[Any, str | None]:
    """Fit a value given at start-up (``-p``, params file) to the type of ``spec``.

    Integers are accepted for floating-point parameters, as people write YAML
    (``camera_timeout: 10``). Return the value to use and None, or the default and the reason
    the value was refused.
    """
    expected = _kind(spec.default)
    if isinstance(spec.default, float) and isinstance(value, int) and \
            not isinstance(value, bool):
        return float(value), None
    if isinstance(spec.default, list) and isinstance(value, (list, tuple)) and \
            all(isinstance(v, str) for v in value):
        return list(value), None
    if _kind(value) == expected:
        return value, None
    return spec.default, (f'parameter {name}: expected {expected}, got {_kind(value)} '
                          f'{value!r}; fix the value given on the command line or in the '
                          'params file')
