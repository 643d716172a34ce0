# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The managed node ``kosmos_grounding``: messages in, engine calls, messages out.

Lifecycle: configure validates parameters and loads the model (a failure is a failed
transition, logged with its reason); activate subscribes to the cameras (on demand, a camera is
subscribed only while queries use it: ``unsubscribe_idle_after``) and starts continuous
grounding; deactivate stops both; cleanup frees the model and its GPU memory. The service and
the action ``~/ground`` exist in every state and answer ``success: false`` with the reason
when the node is not active.

Threads: frames stay in DDS until the worker takes them (:mod:`.intake`); service and action
callbacks are coroutines that await the worker's answer (or a camera's next frame), so no
executor thread waits for inference.
"""

from __future__ import annotations

import math
import time
from typing import Any, TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.msg import Grounding
from kosmos_ros_interfaces.srv import Ground
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.exceptions import InvalidTopicNameException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.errors import (ImageError, InferenceCancelled, InferenceError, KosmosError,
                               ModelLoadError, OutOfMemoryError, PromptError, RegionError)
from kosmos_ros.images import Frame, SUPPORTED_ENCODINGS
from kosmos_ros.memory import return_freed_memory
from kosmos_ros.node.conversions import (detections_msg, duration_msg, grounding_msg,
                                         image_msg, regions_from_bboxes)
from kosmos_ros.node.debug import DebugImages
from kosmos_ros.node.intake import CameraIntake, intake_node
from kosmos_ros.node.lifecycle import RCLError, TransitionRunner
from kosmos_ros.node.params import (CAMERA_SPECS, CameraConfig, check_together, check_value,
                                    coerce_value, NodeParams, Spec, SPECS)
from kosmos_ros.node.spatial import (apply_positions, DepthSettings, DepthSource,
                                     detections_3d_msg, markers_msg)
from kosmos_ros.node.worker import (ContinuousSettings, InferenceWorker, PendingRequests,
                                    QueryJob)
from kosmos_ros.prompts import build_prompt

if TYPE_CHECKING:  # the engine (and torch) load at configure, not with the node
    from kosmos_ros.engine import GroundingEngine

NODE_NAME = 'kosmos_grounding'
CAMERA_LOG_PERIOD = 5.0  # seconds between two log lines of one camera's same kind of error
RATE_WINDOW = 10.0  # seconds over which diagnostics count inferences
# Requests wait in DDS until an executor thread takes them. The services' default (keep last
# 10) drops requests when more callers than that arrive at once, and a dropped request is never
# answered; keep all queues every one (memory grows with what the callers send).
QUERY_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Publishers and subscriptions made and destroyed by transitions get no QoS event handlers:
# rclpy's executor (executors.py, _wait_for_ready_callbacks) may still add an event handler
# destroyed a moment before to its wait set, and then stops spinning with InvalidHandle.
NO_PUB_EVENTS = dict(event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))


def _descriptor(name: str, spec: Spec) -> ParameterDescriptor:
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


def _missing_prompt(task: str, prompt: str) -> bool:
    """Whether ``task`` needs a prompt (find, question, raw) and ``prompt`` is empty."""
    return Task.parse(task) in (Task.FIND, Task.QUESTION, Task.RAW) and not str(prompt).strip()


def _reason(exc: BaseException) -> str:
    """One line saying why: the message of a project error, else also the exception type."""
    text = ' '.join(str(exc).split()) or '(no message)'
    return text if isinstance(exc, (KosmosError, ValueError)) else \
        f'{type(exc).__name__}: {text}'


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


class GroundingNode(LifecycleNode):
    """KOSMOS-2 grounding on camera images, as a managed node."""

    def __init__(self, node_name: str = NODE_NAME, *, logits_processors: tuple = (),
                 **kwargs: Any):
        """Create the node; ``logits_processors`` are extra engine processors (tests)."""
        super().__init__(node_name, **kwargs)
        self._logits_processors = tuple(logits_processors)
        self._state = 'unconfigured'
        self._closing = False
        self._params: NodeParams | None = None
        self._engine: GroundingEngine | None = None
        self._worker: InferenceWorker | None = None
        self._debug: DebugImages | None = None
        self._outputs: dict[str, dict[str, Any]] = {}
        self._intakes: dict[str, CameraIntake] = {}
        self._depths: dict[str, DepthSource] = {}
        self._intake_node: Any = None
        self._stale_queries = 0
        self._busy_refused = 0
        self._active_since = time.monotonic()
        self._continuous_problem = ''  # why continuous grounding is paused or off, for diagnostics
        self._pending = PendingRequests()
        self._camera_logged: dict[tuple[str, str], float] = {}
        self._startup_problems: dict[str, str] = {}
        for name, spec in SPECS.items():
            self._declare(name, spec)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._queries_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Ground, '~/ground', self._on_service, qos_profile=QUERY_QOS,
                            callback_group=self._queries_group)
        self._action = ActionServer(
            self, GroundAction, '~/ground', execute_callback=self._on_action,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
            callback_group=self._queries_group, goal_service_qos_profile=QUERY_QOS,
            result_service_qos_profile=QUERY_QOS, cancel_service_qos_profile=QUERY_QOS)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(self.get_parameter('diagnostics_period').value,
                                             self._publish_diagnostics,
                                             callback_group=self._timer_group)
        self._transitions = TransitionRunner(self)

    def autostart(self) -> None:
        """Configure and activate in the background, if ``autostart`` is set.

        The executor serves the lifecycle and parameter services meanwhile, and the process
        can stop at any moment (a model load included).
        """
        if self.get_parameter('autostart').value:
            self._transitions.start(['configure', 'activate'], lambda label: None)

    @property
    def transition_running(self) -> bool:
        """Whether a lifecycle transition (a model load, say) is running now."""
        return self._transitions.busy

    def close(self) -> None:
        """Stop for good before the node is destroyed: no transition starts or finishes."""
        self._closing = True
        self._transitions.close()
        self.stop_worker()

    # -- parameters --------------------------------------------------------------------------

    def _declare(self, name: str, spec: Spec) -> None:
        """Declare a parameter; a start-up value of the wrong type is refused, not fatal.

        rclpy raises at declaration when a ``-p`` or params-file value has another type than
        the default, or one outside the declared range. Integers are taken for floats; any
        other mismatch keeps the default and is remembered: configure fails with the reason
        until the parameter is set right.
        """
        override = self._parameter_overrides.get(name)
        if override is not None:
            value, problem = coerce_value(name, spec, override.value)
            # Out of range: rclpy would raise at declaration too.
            problem = problem or check_value(name, spec, value)
            if problem:
                del self._parameter_overrides[name]
                self._startup_problems[name] = problem
                self.get_logger().error(problem)
            elif value is not override.value:
                self._parameter_overrides[name] = Parameter(name, value=value)
        self.declare_parameter(name, spec.default, _descriptor(name, spec))

    def _read_params(self) -> NodeParams:
        """Read and check every parameter (start-up values get the rules of later sets)."""
        values = {name: self.get_parameter(name).value for name in SPECS}
        problem = check_value('cameras', SPECS['cameras'], values['cameras'])
        if problem:
            raise ValueError(problem)
        cameras = []
        for cam in values['cameras']:
            for key, spec in CAMERA_SPECS.items():
                full = f'{cam}.{key}'
                if not self.has_parameter(full):
                    self._declare(full, spec)
                values[full] = self.get_parameter(full).value
        if self._startup_problems:
            raise ValueError(next(iter(self._startup_problems.values())))
        for name, value in values.items():
            problem = check_value(name, self._spec_of(name), value)
            if problem:
                raise ValueError(problem)
        problem = check_together(values)
        if problem:
            raise ValueError(problem)
        for cam in values['cameras']:
            topic = self._resolve(f'{cam}.topic', values[f'{cam}.topic'] or f'{cam}/image_raw')
            transport = values[f'{cam}.transport']
            depth_topic = values[f'{cam}.depth_topic']
            info_topic = values[f'{cam}.camera_info_topic'] or f'{cam}/camera_info'
            if depth_topic:
                depth_topic = self._resolve(f'{cam}.depth_topic', depth_topic)
                info_topic = self._resolve(f'{cam}.camera_info_topic', info_topic)
            if transport == 'compressed':
                self._resolve(f'{cam}.topic', topic + '/compressed')
            cameras.append(CameraConfig(cam, topic, transport, depth_topic, info_topic))
        return NodeParams({k: v for k, v in values.items() if k in SPECS}, tuple(cameras))

    def _resolve(self, name: str, topic: str) -> str:
        """Resolve a topic name with this node's namespace and remap rules, or raise."""
        try:
            return self.resolve_topic_name(topic)
        except (InvalidTopicNameException, RCLError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
            raise ValueError(f'{name}: {topic!r} is not a valid topic name ({first})') from None

    def _spec_of(self, name: str) -> Spec | None:
        if name in SPECS:
            return SPECS[name]
        key = name.rsplit('.', 1)[-1]
        return CAMERA_SPECS.get(key) if '.' in name else None

    def _validate_parameters(self, params: list[Any]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        for name, value in changes.items():
            spec = self._spec_of(name)
            if spec is None:
                continue
            if spec.reload and self._state not in ('unconfigured', 'configuring'):
                return SetParametersResult(
                    successful=False, reason=f'{name} needs a reload: deactivate and cleanup '
                    f'the node, set it, then configure (node is {self._state})')
            problem = check_value(name, spec, value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        depth = {k: changes.get(k, self.get_parameter(k).value)
                 for k in ('depth_min', 'depth_max')}
        problem = check_together(depth) if depth.keys() & changes.keys() else None
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        watched = {'task', 'prompt', 'rate_hz', 'max_prompt_tokens'}
        if watched & changes.keys() and self._params is not None:
            current = {k: changes.get(k, self.get_parameter(k).value) for k in watched}
            # A task that needs a prompt may come before its prompt (ros2 param set, rqt set one
            # parameter at a time): continuous grounding pauses until both are set.
            if current['rate_hz'] > 0 and not _missing_prompt(current['task'],
                                                              current['prompt']):
                try:
                    self._check_continuous(current['task'], current['prompt'],
                                           current['max_prompt_tokens'])
                except (PromptError, RegionError, ValueError) as exc:
                    return SetParametersResult(
                        successful=False, reason=f'continuous task {current["task"]!r}: {exc}')
        return SetParametersResult(successful=True)

    def _check_continuous(self, task: str, prompt: str, max_prompt_tokens: int) -> Query:
        """Return the continuous query, or raise PromptError/ValueError with the reason.

        With a model loaded, the engine's own checks run (token limit included), on a copy of
        the engine so that its prompt cache stays the worker's alone.
        """
        query = Query(Task.parse(task), prompt)
        if self._engine is None:
            build_prompt(query, 640, 480)
        else:
            self._engine.with_options(max_prompt_tokens=int(max_prompt_tokens)).prepare(
                query, 640, 480)
        return query

    def _apply_parameters(self, params: list[Any]) -> None:
        for p in params:
            self._startup_problems.pop(p.name, None)  # set right since start-up
            if p.name == 'diagnostics_period':
                self._diag_timer.timer_period_ns = int(p.value * 1e9)
        if self._params is None:
            return
        values = dict(self._params.values)
        values.update({p.name: p.value for p in params if p.name in SPECS})
        self._params = NodeParams(values, self._params.cameras)
        if self._worker is not None and self._engine is not None:
            engine_keys = {'max_new_tokens', 'num_beams', 'no_repeat_ngram_size',
                           'max_prompt_tokens', 'max_batch_size', 'max_image_pixels'}
            if engine_keys & {p.name for p in params}:
                self._engine = self._engine.with_options(**self._engine_options())
                self._worker.set_engine(self._engine)
            self._worker.set_settings(self._continuous_settings())

    def _engine_options(self) -> dict[str, Any]:
        p = self._params
        return dict(max_new_tokens=p.max_new_tokens, num_beams=p.num_beams,
                    no_repeat_ngram_size=p.no_repeat_ngram_size,
                    max_prompt_tokens=p.max_prompt_tokens, max_batch_size=p.max_batch_size,
                    max_pixels=p.max_image_pixels, logits_processors=self._logits_processors,
                    decoder=p.decoder, compile_step=p.compile_decoder)

    def _continuous_settings(self) -> ContinuousSettings:
        p = self._params
        self._continuous_problem = ''
        try:
            query = self._check_continuous(p.task, p.prompt, p.max_prompt_tokens)
        except (PromptError, RegionError, ValueError) as exc:
            query = None
            if p.rate_hz > 0:
                self._continuous_problem = (
                    f'paused: continuous task {p.task} needs a prompt (set the prompt '
                    'parameter)' if _missing_prompt(p.task, p.prompt) else f'off: {exc}')
                self.get_logger().warning(f'continuous grounding {self._continuous_problem}')
        return ContinuousSettings(rate_hz=float(p.rate_hz), query=query)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and check the parameters, load the model, create the publishers.

        A failure logs one line with its reason, undoes what was done and leaves the node
        unconfigured: fix the parameter (``ros2 param set``), then configure again.
        """
        self._state = 'configuring'
        try:
            self._configure()
        except Exception as exc:  # the transition's boundary: report, undo, stay unconfigured
            if not self._closing:
                self._release()
                self.get_logger().error(f'configure failed: {_reason(exc)}; the node stays '
                                        'unconfigured (fix the cause, then configure)')
            return TransitionCallbackReturn.FAILURE
        self._state = 'inactive'
        return super().on_configure(state)

    def _configure(self) -> None:
        from kosmos_ros.engine import EngineOptions, GroundingEngine  # torch: here, not at start
        from kosmos_ros.loading import ModelOptions

        self._params = p = self._read_params()
        options = ModelOptions(model=p.model, revision=p.revision or None,
                               local_files_only=p.local_files_only, dtype=p.dtype,
                               quantization=p.quantization, device=p.device,
                               attn_implementation=p.attn_implementation)
        self.get_logger().info(f'loading {p.model} (device {p.device}, dtype {p.dtype}, '
                               f'quantization {p.quantization})')
        started = time.monotonic()
        self._engine = GroundingEngine.load(options, EngineOptions(**self._engine_options()))
        if self._closing:  # stopped during the load: touch nothing more
            raise ModelLoadError('the node is shutting down')
        self.get_logger().info(f'loaded {self._engine.describe()} in '
                               f'{time.monotonic() - started:.1f} s')
        if p.compile_decoder and self._engine.decoder == 'dynamic':
            self.get_logger().warning('compile_decoder has no effect with the dynamic decoder '
                                      '(decoder: auto is dynamic on the CPU); set decoder to '
                                      'static or cuda_graph to compile the decode step')
        elif p.compile_decoder:
            started = time.monotonic()
            try:
                self._engine.warm_up()
            except KosmosError as exc:
                raise KosmosError(f'compile_decoder: {exc} (set compile_decoder to false to '
                                  'decode without it)') from None
            self.get_logger().info(f'compiled the {self._engine.decoder} decode step in '
                                   f'{time.monotonic() - started:.1f} s')
        for cam in p.cameras:
            self._outputs[cam.name] = {
                'detections': self.create_lifecycle_publisher(
                    Detection2DArray, f'{cam.name}/detections', 10, **NO_PUB_EVENTS),
                'grounding': self.create_lifecycle_publisher(
                    Grounding, f'{cam.name}/grounding', 10, **NO_PUB_EVENTS),
                'debug_image': self.create_lifecycle_publisher(
                    Image, f'{cam.name}/debug_image', 1, **NO_PUB_EVENTS),
            }
            if cam.depth_topic:
                self._outputs[cam.name]['detections_3d'] = self.create_lifecycle_publisher(
                    Detection3DArray, f'{cam.name}/detections_3d', 10, **NO_PUB_EVENTS)
                self._outputs[cam.name]['markers'] = self.create_lifecycle_publisher(
                    MarkerArray, f'{cam.name}/markers', 1, **NO_PUB_EVENTS)
        heartbeat = min(max(float(p.camera_timeout) / 3, 0.5), 5.0) \
            if p.camera_timeout > 0 else 0.0
        self._debug = DebugImages(image_msg, lambda camera, exc: self._on_camera_error(
            camera, ImageError(f'debug image not published: {type(exc).__name__}: {exc}')))
        self._worker = InferenceWorker(self._engine, [c.name for c in p.cameras],
                                       self._on_continuous_result, self._on_camera_error,
                                       p.max_image_pixels, self._continuous_settings(),
                                       clock=self._now, heartbeat_s=heartbeat)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the cameras and start serving.

        A failure logs one line with its reason, drops what was subscribed and leaves the
        node inactive with its model loaded.
        """
        try:
            self._activate()
        except Exception as exc:  # the transition's boundary: report, undo, stay inactive
            self._drop_intakes()
            if not self._closing:
                self.get_logger().error(f'activate failed: {_reason(exc)}; the node stays '
                                        'inactive with its model loaded (to change camera '
                                        'parameters: cleanup, set, configure, activate)')
            return TransitionCallbackReturn.FAILURE
        self._worker.set_paused(False)
        self._active_since = time.monotonic()
        self._state = 'active'
        return super().on_activate(state)

    def _activate(self) -> None:
        p = self._params
        if self._intake_node is None:
            self._intake_node = intake_node(self)
        subscribe = not self._may_unsubscribe(p)
        for cam in p.cameras:
            self._intakes[cam.name] = CameraIntake(
                self._intake_node, cam.subscribed_topic, cam.transport == 'compressed',
                p.image_qos_reliability, int(p.image_qos_depth), subscribe=subscribe)
            self.get_logger().info(
                f'camera {cam.name}: {cam.transport} images on {self._intakes[cam.name].topic}'
                + ('' if subscribe else ' (subscribed only while queries use it)'))
            if cam.depth_topic:
                depth = DepthSource(self._intake_node, cam.depth_topic, cam.camera_info_topic,
                                    subscribe=subscribe)
                self._depths[cam.name] = depth
                self.get_logger().info(f'camera {cam.name}: 3D from {depth.depth_topic} and '
                                       f'{depth.info_topic}')
        self._worker.set_sources(
            {name: self._take_function(name) for name in self._intakes},
            lambda camera, msg: self._on_image(camera, msg), self._check_idle_cameras)

    def _take_function(self, camera: str):
        intake, depth = self._intakes[camera], self._depths.get(camera)

        def take(use: bool) -> Any:
            if use and self._acquire(intake, depth):
                self.get_logger().debug(f'camera {camera}: subscribed again')
            taken = intake.take()
            return None if taken is None else taken.msg
        return take

    @staticmethod
    def _acquire(intake: CameraIntake, depth: DepthSource | None) -> bool:
        """Mark a camera used; subscribe it if needed (True if it subscribed just now)."""
        if depth is not None and not intake.subscribed:
            depth.acquire()  # first: depth should flow by the first colour frame
        return intake.acquire()

    @staticmethod
    def _may_unsubscribe(params: NodeParams) -> bool:
        """Whether idle cameras drop their subscriptions (on demand, unsubscribe_idle_after)."""
        return params.unsubscribe_idle_after > 0 and params.rate_hz <= 0

    def _check_idle_cameras(self) -> None:
        """Drop the subscriptions of cameras no query used lately; restore them when needed.

        Runs on the worker thread, between its takes, so that no frame taken before the
        release is stored after it. Subscribing again otherwise happens on the first take
        that uses the camera (a query's, on an executor thread).
        """
        worker, params = self._worker, self._params
        if self._state != 'active' or worker is None or params is None:
            return
        lazy, after = self._may_unsubscribe(params), float(params.unsubscribe_idle_after)
        now = time.monotonic()
        try:
            for name, intake in list(self._intakes.items()):
                depth = self._depths.get(name)
                if not lazy:  # continuous grounding, or unsubscribe_idle_after set to 0
                    self._acquire(intake, depth)
                elif (intake.subscribed and now - intake.last_used >= after
                      and not worker.waiting(name)):
                    intake.release()
                    if depth is not None:
                        depth.release()
                    worker.forget_frames(name)
                    self.get_logger().debug(f'camera {name}: unsubscribed after {after:g} s '
                                            'without a query')
        except Exception as exc:  # never end the worker thread over a subscription
            self.get_logger().error(f'image subscriptions: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=CAMERA_LOG_PERIOD)

    def _drop_intakes(self) -> None:
        if self._worker is not None:
            self._worker.set_sources({}, None)
        for intake in self._intakes.values():
            intake.close()
        self._intakes = {}
        for depth in self._depths.values():
            depth.destroy()
        self._depths = {}

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state = 'inactive'
        if self._worker is not None:
            self._worker.set_paused(True)
        self._drop_intakes()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Stop the worker, free the model and GPU memory, drop publishers."""
        self._state = 'unconfigured'
        self._drop_intakes()
        if self._worker is not None:
            if not self._worker.stop(timeout=10.0):
                self.get_logger().warning('inference worker did not stop within 10 s')
            self._worker = None
        if self._debug is not None:
            self._debug.close()
            self._debug = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        for pubs in self._outputs.values():
            for pub in pubs.values():
                self.destroy_lifecycle_publisher(pub)
        self._outputs = {}
        self._params = None
        return_freed_memory()  # without it resident memory crept up cycle after cycle

    def stop_worker(self) -> None:
        """Stop inference before the node is destroyed (bounded time)."""
        if self._worker is not None:
            self._worker.stop(timeout=10.0)

    def destroy_node(self) -> None:
        self._drop_intakes()
        if self._intake_node is not None:
            self._intake_node.destroy_node()
            self._intake_node = None
        super().destroy_node()

    # -- camera input and continuous output --------------------------------------------------

    def _on_image(self, camera: str, msg: Any) -> None:
        """Check a frame the worker took from DDS and hand it over (worker thread)."""
        encoding = getattr(msg, 'encoding', None)
        if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
            self._on_camera_error(camera, ImageError(
                f'refusing images of unsupported encoding {encoding!r} (supported: '
                f'{", ".join(SUPPORTED_ENCODINGS)})'))
            if self._worker is not None:
                self._worker.count_refused(camera, f'unsupported image encoding {encoding!r}')
            return
        stamp = msg.header.stamp
        seconds = stamp.sec + stamp.nanosec * 1e-9
        if seconds == 0.0:  # drivers that do not stamp: fall back to the node clock
            seconds = self.get_clock().now().nanoseconds * 1e-9
        worker = self._worker
        if worker is not None:
            worker.offer_frame(camera, msg, seconds)

    def _on_camera_error(self, camera: str, error: Exception) -> None:
        """Log a continuous-grounding failure: at most one line per camera and kind per period.

        Model failures (out of memory included) are errors; bad frames are warnings.
        """
        kind = type(error).__name__
        now = time.monotonic()
        if now - self._camera_logged.get((camera, kind), -math.inf) < CAMERA_LOG_PERIOD:
            return
        self._camera_logged[(camera, kind)] = now
        if isinstance(error, InferenceError):
            self.get_logger().error(f'camera {camera}: {error}')
        elif isinstance(error, KosmosError):
            self.get_logger().warning(f'camera {camera}: {error}')
        else:
            self.get_logger().error(f'camera {camera}: internal error: {kind}: {error}')

    def _on_continuous_result(self, camera: str, msg: Any, result: GroundingResult,
                              frame: Frame, latency: float) -> None:
        pubs = self._outputs.get(camera)
        if not pubs:
            return
        header = msg.header
        min_score = float(self._params.min_score) if self._params is not None else 0.0
        grounding, detections_3d = self._with_3d(camera, result, header, True, min_score)
        pubs['detections'].publish(detections_msg(result, header, min_score))
        pubs['grounding'].publish(grounding)
        if detections_3d is not None and 'detections_3d' in pubs:
            pubs['detections_3d'].publish(detections_3d)
            if pubs['markers'].get_subscription_count() > 0:
                pubs['markers'].publish(markers_msg(detections_3d))
        debug, images = pubs['debug_image'], self._debug
        if images is not None and debug.get_subscription_count() > 0:
            images.offer(camera, debug.publish, frame, result, header)  # drawn on its thread

    # -- queries -----------------------------------------------------------------------------

    def _with_3d(self, camera: str, result: GroundingResult, header: Any,
                 from_camera: bool, min_score: float) -> tuple[Grounding,
                                                               Detection3DArray | None]:
        """Return the Grounding message and, for a camera with depth, the 3D detections."""
        grounding = grounding_msg(result, header, camera)
        depth, params = self._depths.get(camera), self._params
        if not from_camera or depth is None or params is None:
            note = ('no depth for an image sent with the request' if not from_camera else
                    'no depth_topic configured for this camera')
            apply_positions(grounding, result, None, note)
            return grounding, None
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        settings = DepthSettings(float(params.depth_tolerance), float(params.depth_min),
                                 float(params.depth_max), float(params.depth_inner_fraction))
        lifted = depth.lift(stamp, result, settings)
        apply_positions(grounding, result, lifted)
        missing = sorted({lb.reason for boxes in lifted for lb in boxes if lb.box is None})
        if missing:
            self.get_logger().info(f'camera {camera}: no 3D for some boxes: {missing[0]}',
                                   throttle_duration_sec=5.0)
        return grounding, detections_3d_msg(result, lifted, header, min_score)

    def _fail(self, response: Any, message: str) -> Any:
        response.success = False
        response.message = message
        return response

    def _not_active(self) -> ValueError:
        return ValueError(f'node is not active (state: {self._state}); activate it first')

    def _check_request(self, request: Any) -> tuple[Query, str, Any, bool, InferenceWorker]:
        """Validate what can be checked without the model; raise ValueError with the reason.

        The worker and parameters are read once: a cleanup in another thread may drop them.
        """
        worker, params = self._worker, self._params
        if self._state != 'active' or worker is None or params is None:
            raise self._not_active()
        if not 0.0 <= float(request.min_score) <= 1.0:  # NaN fails both
            raise ValueError(f'min_score must be between 0 and 1; got {request.min_score}')
        try:
            task = Task(int(request.task))
        except ValueError:
            raise ValueError(f'unknown task {request.task}; expected 0 (caption) to 4 (raw)') \
                from None
        regions = regions_from_bboxes(request.regions)
        budget = int(request.max_new_tokens) or None
        if budget is not None and budget > int(params.max_request_tokens):
            raise ValueError(f'max_new_tokens {budget} is more than a request may ask for '
                             f'(max_request_tokens {params.max_request_tokens})')
        query = Query(task, request.prompt, regions, budget)
        has_image = request.image.width > 0 or request.image.height > 0 or \
            len(request.image.data) > 0
        if has_image:  # not a camera's frame: no camera name, whatever the request says
            return query, '', request.image, False, worker
        cameras = [c.name for c in params.cameras]
        camera = request.camera or cameras[0]
        if camera not in cameras:
            raise ValueError(f'unknown camera {camera!r}; cameras: {", ".join(cameras)}')
        msg, stamp = worker.take_latest(camera)
        if msg is not None:
            self._check_age(camera, stamp, params)
        return query, camera, msg, True, worker  # msg None: wait for the camera's next frame

    def _check_age(self, camera: str, stamp: float, params: NodeParams) -> None:
        max_age = float(params.max_frame_age)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp
        if max_age > 0 and age > max_age:
            self._stale_queries += 1
            raise ValueError(f'newest frame of camera {camera!r} is {age:.2f} s old '
                             f'(max_frame_age {max_age:g} s)')

    async def _next_frame(self, worker: InferenceWorker, camera: str) -> Any:
        """Wait (without blocking the executor) for a first frame of ``camera``."""
        params = self._params
        if params is None:
            raise self._not_active()
        wait = float(params.frame_wait_timeout)
        msg, stamp = None, 0.0
        if wait > 0:
            future = Future(executor=self.executor)
            future.add_done_callback(lambda f: None)  # wakes the executor when set

            def done(frame, frame_stamp):
                if not future.done():
                    future.set_result((frame, frame_stamp))

            worker.wait_for_frame(camera, wait, done)
            msg, stamp = await future
        if msg is None:
            if self._state != 'active':
                raise self._not_active()
            topic = self.resolve_topic_name(
                next(c.subscribed_topic for c in params.cameras if c.name == camera))
            raise ValueError(f'no frame received from camera {camera!r} (topic {topic}) within '
                             f'{wait:g} s (frame_wait_timeout)')
        self._check_age(camera, stamp, params)
        return msg

    async def _answer(self, request: Any, on_stage=None, cancelled=lambda: False):
        """Run one request on the worker; return (result, error, header, camera, from camera).

        A request is admitted only within ``max_pending_queries`` and
        ``max_pending_image_mb`` (refused as busy otherwise) and held until answered.
        """
        params = self._params
        size = len(request.image.data)
        problem = None if params is None else self._pending.admit(
            size, int(params.max_pending_queries),
            int(float(params.max_pending_image_mb) * 2 ** 20))
        if problem:
            self._busy_refused += 1
            return None, problem, None, '', False
        try:
            return await self._run_request(request, on_stage, cancelled)
        finally:
            if params is not None:
                self._pending.release(size)

    async def _run_request(self, request: Any, on_stage, cancelled):
        try:
            query, camera, msg, from_camera, worker = self._check_request(request)
            if msg is None:
                if on_stage:
                    on_stage('waiting for a frame')
                msg = await self._next_frame(worker, camera)
        except (ValueError, KosmosError) as exc:
            return None, str(exc), None, '', False
        future = Future(executor=self.executor)
        future.add_done_callback(lambda f: None)  # wakes the executor when set

        def done(result, error, frame):
            if not future.done():
                future.set_result((result, error))

        worker.submit(QueryJob(query, camera, msg, done, cancelled, on_stage, from_camera))
        result, error = await future
        if error is not None:
            return None, self._describe_error(error), msg.header, camera, from_camera
        return result, '', msg.header, camera, from_camera

    def _fill(self, out: Any, answer: tuple, requested_min_score: float) -> Any:
        """Put a successful answer into a service response or action result."""
        result, _, header, camera, from_camera = answer
        params = self._params
        min_score = float(requested_min_score) or (
            float(params.min_score) if params is not None else 0.0)
        out.success = True
        out.grounding, detections_3d = self._with_3d(camera, result, header, from_camera,
                                                     min_score)
        out.detections = detections_msg(result, header, min_score)
        if detections_3d is not None:
            out.detections_3d = detections_3d
        else:
            out.detections_3d.header = header
        return out

    @staticmethod
    def _describe_error(error: Exception) -> str:
        if isinstance(error, InferenceCancelled):
            return f'cancelled: {error}'
        if isinstance(error, OutOfMemoryError):
            return f'model failure (out of memory): {error}'
        if isinstance(error, InferenceError):
            return f'model failure: {error}'
        if isinstance(error, KosmosError):
            return str(error)
        return f'internal error: {type(error).__name__}: {error}'

    async def _on_service(self, request: Ground.Request, response: Ground.Response):
        answer = await self._answer(request)
        if answer[0] is None:
            return self._fail(response, answer[1])
        return self._fill(response, answer, request.min_score)

    async def _on_action(self, goal_handle: Any) -> GroundAction.Result:
        accepted = time.monotonic()

        def stage(name: str) -> None:
            feedback = GroundAction.Feedback(stage=name)
            feedback.elapsed = duration_msg(time.monotonic() - accepted)
            goal_handle.publish_feedback(feedback)

        stage('queued')
        answer = await self._answer(goal_handle.request, stage,
                                    lambda: goal_handle.is_cancel_requested)
        out = GroundAction.Result()
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            return self._fail(out, answer[1] or 'cancelled')
        if answer[0] is None:
            goal_handle.abort()
            return self._fail(out, answer[1])
        self._fill(out, answer, goal_handle.request.min_score)
        goal_handle.succeed()
        return out

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        name = self.get_fully_qualified_name()
        engine, worker, params = self._engine, self._worker, self._params
        model = DiagnosticStatus(name=f'{name}: model', hardware_id=name)
        values = {'state': self._state,
                  'stale queries refused': str(self._stale_queries),
                  'requests pending': str(self._pending.count),
                  'busy refusals': str(self._busy_refused)}
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
        else:
            model.level, model.message = DiagnosticStatus.WARN, 'no model loaded'
        if self._continuous_problem and engine is not None:
            model.level = DiagnosticStatus.WARN
            model.message = f'continuous grounding {self._continuous_problem}'
        if worker is not None:
            values['pending queries'] = str(worker.pending_jobs())
            values['worker busy'] = str(worker.busy)
        model.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array.status.append(model)
        if worker is not None and params is not None:
            timeout = float(params.camera_timeout)
            for cam, stats in worker.snapshot().items():
                status = DiagnosticStatus(name=f'{name}: camera {cam}', hardware_id=cam,
                                          level=DiagnosticStatus.OK, message='ok')
                rx = stats['last_received_wall']
                intake = self._intakes.get(cam)
                idle = intake is not None and not intake.subscribed
                # Time without a subscription is not silence: count from the later of the last
                # frame and the current subscription.
                since = intake.subscribed_at if intake is not None else None
                heard = [t for t in (rx, since) if t is not None]
                silent = now - max(heard) if heard else None
                stale = silent is None or silent > timeout
                if rx is None or (since is not None and rx < since):
                    rx_note = 'no image received yet'
                else:
                    rx_note = None
                if idle:  # on demand and unused: no frames to judge by, only discovery
                    publishers = intake.publishers()
                    status.message = (f'not subscribed while unused ({publishers} '
                                      f'publisher{"s" if publishers != 1 else ""})')
                    if publishers == 0 and timeout > 0 and self._state == 'active':
                        status.level = DiagnosticStatus.WARN
                        status.message = f'no publisher on {intake.topic}'
                elif timeout > 0 and self._state == 'active' and stale:
                    status.level = DiagnosticStatus.WARN
                    status.message = (f'{rx_note} ({silent:.1f} s since subscribing)'
                                      if rx_note and silent is not None else
                                      rx_note or f'no image for {silent:.1f} s')
                if status.level == DiagnosticStatus.WARN:
                    self.get_logger().warning(f'camera {cam}: {status.message}',
                                              throttle_duration_sec=max(timeout, 1.0))
                lat = stats['latencies']
                last = stats['last_result_wall']
                # A rate over a window long enough for low rates (0.5 Hz reads 0.50, not 0/1).
                window = min(RATE_WINDOW, max(now - self._active_since, 1e-3))
                inferences = sum(1 for t in stats['result_times'] if t > now - window)
                rate = intake.rate_hz if intake is not None else None
                published = intake.published if intake is not None else None
                status.values = [KeyValue(key=k, value=v) for k, v in {
                    'input rate Hz': 'unknown' if rate is None else f'{rate:.2f}',
                    'inference rate Hz': f'{inferences / window:.2f}',
                    'latency p50 ms': f'{_percentile(lat, 50) * 1e3:.1f}',
                    'latency p95 ms': f'{_percentile(lat, 95) * 1e3:.1f}',
                    'subscribed': 'no' if idle else 'yes',
                    'frames published': 'unknown' if published is None else str(published),
                    'frames taken': str(stats['frames_in']),
                    'inferences': str(stats['inferences']),
                    'dropped superseded': str(stats['superseded']),
                    'skipped by rate limit': str(stats['throttled']),
                    'errors': str(stats['errors']),
                    'last error': stats['last_error'] or 'none',
                    'last result age s': 'never' if last is None else f'{now - last:.2f}',
                }.items()]
                array.status.append(status)
        self._diagnostics.publish(array)
