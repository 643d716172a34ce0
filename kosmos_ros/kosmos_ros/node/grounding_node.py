# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The managed node ``kosmos_grounding``: parameters, lifecycle and wiring.

Lifecycle: configure reads and checks the parameters (:mod:`.parameter_store`), loads the
model (:mod:`.engine_setup`) and creates each camera's publishers (:mod:`.camera`) and the
inference worker (:mod:`.worker`); activate subscribes to the cameras (on demand, a camera is
subscribed only while queries use it: ``unsubscribe_idle_after``) and starts continuous
grounding; deactivate stops both; cleanup frees the model and its memory. A failed transition
logs one line with its reason. Transitions run off the executor (:mod:`.lifecycle`). The
service and the action ``~/ground`` (:mod:`.queries`) and the action ``~/follow``
(:mod:`.follow`) exist in every state; ``/diagnostics`` comes from :mod:`.diagnostics`.

Data path: a camera's frame stays in DDS until the worker takes it (:mod:`.intake`), passes the
admission rule here (:meth:`GroundingNode._admit`), is grounded by the engine on the worker
thread and published by its camera (:meth:`.camera.Camera.publish`).
"""

from __future__ import annotations

import time
from typing import Any, TYPE_CHECKING

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from kosmos_ros.admission import admit, stamp_seconds
from kosmos_ros.datatypes import GroundingResult, Query
from kosmos_ros.errors import ImageError, reason
from kosmos_ros.images import Frame
from kosmos_ros.memory import return_freed_memory
from kosmos_ros.node.camera import Camera, may_unsubscribe, sync_subscriptions
from kosmos_ros.node.conversions import image_msg
from kosmos_ros.node.dds_writes import Writes
from kosmos_ros.node.debug import DebugImages
from kosmos_ros.node.diagnostics import DiagnosticsPublisher, NodeStatus
from kosmos_ros.node.engine_setup import (continuous_query, continuous_settings, engine_options,
                                          ENGINE_PARAMETERS, load_engine)
from kosmos_ros.node.follow import FollowServer
from kosmos_ros.node.intake import intake_node
from kosmos_ros.node.lifecycle import TransitionRunner
from kosmos_ros.node.parameter_store import ParameterStore
from kosmos_ros.node.parameter_table import NodeParams
from kosmos_ros.node.queries import QueryServer, Session
from kosmos_ros.node.scheduling import ContinuousSettings
from kosmos_ros.node.spinning import CallbackErrors
from kosmos_ros.node.tracks import TrackingPump
from kosmos_ros.node.worker import InferenceWorker

if TYPE_CHECKING:  # the engine (and torch) load at configure, not with the node
    from kosmos_ros.model.engine import GroundingEngine

NODE_NAME = 'kosmos_grounding'
# Seconds between looks for goals accepted but never started (:meth:`.dds_writes.Writes.sweep`).
SWEEP_PERIOD = 1.0


class GroundingNode(LifecycleNode):
    """KOSMOS-2 grounding on camera images, as a managed node."""

    def __init__(self, node_name: str = NODE_NAME, *, logits_processors: tuple = (),
                 **kwargs: Any):
        """Create the node; ``logits_processors`` are extra engine processors (tests)."""
        super().__init__(node_name, **kwargs)
        self._logits_processors = tuple(logits_processors)
        self._state = 'unconfigured'  # ours, ahead of rcl's: 'active' once activate succeeded
        self._closing = False
        self._params: NodeParams | None = None
        self._engine: GroundingEngine | None = None
        self._worker: InferenceWorker | None = None
        self._tracking: TrackingPump | None = None
        self._debug: DebugImages | None = None
        self._cameras: dict[str, Camera] = {}
        self._intake_node: Any = None
        self._active_since = time.monotonic()
        self._continuous_problem = ''  # why continuous grounding is paused or off
        self._store = ParameterStore(self)
        self.add_on_set_parameters_callback(self._check_set)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.writes = Writes(self.get_logger())
        self.callback_errors = CallbackErrors(self.get_logger())  # for the executor loop
        self._queries = QueryServer(self, self.writes, self._session, self._on_query_result)
        self._follow = FollowServer(self, self.writes, self._session, self._read_phrase,
                                    self._now, lambda: self._tracking, self._starting)
        self._diagnostics = DiagnosticsPublisher(
            self, self.get_parameter('diagnostics_period').value, self._status, self.writes)
        self._sweep_timer = self.create_timer(SWEEP_PERIOD, self._sweep_goals,
                                              callback_group=MutuallyExclusiveCallbackGroup())
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
        self._follow.end_all('the node is shutting down', closing=True)
        self.stop_worker()

    def _session(self) -> Session:
        """Return what queries are answered with; raise ValueError when not active."""
        worker, params, cameras = self._worker, self._params, self._cameras
        if self._state != 'active' or worker is None or params is None:
            raise ValueError(f'node is not active (state: {self._state}); activate it first')
        return Session(worker, params, cameras)

    # -- parameters --------------------------------------------------------------------------

    def _check_set(self, params: list[Any]) -> Any:
        return self._store.check_set(params, self._state, self._params is not None,
                                     self._check_continuous)

    def _starting(self) -> bool:
        """Whether a transition is taking the node towards active (configure, activate)."""
        return self._transitions.busy and self._transitions.state() in (
            'unconfigured', 'configuring', 'inactive', 'activating')

    def _read_phrase(self, phrase: str) -> str:
        """Return a FIND phrase as the model's results spell it; PromptError if refused.

        On a copy of the engine, so that its prompt cache stays the worker's alone.
        """
        engine, params = self._engine, self._params
        if engine is None or params is None:
            raise ValueError(f'node is not active (state: {self._state}); activate it first')
        return engine.with_options(max_prompt_tokens=int(params.max_prompt_tokens)
                                   ).read_phrase(phrase)

    def _check_continuous(self, task: str, prompt: str, max_prompt_tokens: int) -> Query:
        return continuous_query(self._engine, task, prompt, max_prompt_tokens)

    def _apply_parameters(self, params: list[Any]) -> None:
        for p in params:
            if p.name == 'diagnostics_period':
                self._diagnostics.set_period(p.value)
        self._params = self._store.applied(params, self._params)
        if self._params is None or self._worker is None or self._engine is None:
            return
        if ENGINE_PARAMETERS & {p.name for p in params}:
            self._engine = self._engine.with_options(
                **engine_options(self._params, self._logits_processors))
            self._worker.set_engine(self._engine)
        self._worker.set_settings(self._continuous_settings())

    def _continuous_settings(self) -> ContinuousSettings:
        settings, self._continuous_problem = continuous_settings(self._engine, self._params)
        if self._continuous_problem:
            self.get_logger().warning(f'continuous grounding {self._continuous_problem}')
        return settings

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
                self.get_logger().error(f'configure failed: {reason(exc)}; the node stays '
                                        'unconfigured (fix the cause, then configure)')
            return TransitionCallbackReturn.FAILURE
        self._state = 'inactive'
        return super().on_configure(state)

    def _configure(self) -> None:
        self._params = p = self._store.snapshot()
        self._engine = load_engine(p, self._logits_processors, self.get_logger(),
                                   lambda: self._closing)
        self._cameras = {c.name: Camera(self, c, self.writes) for c in p.camera_configs}
        heartbeat = min(max(float(p.camera_timeout) / 3, 0.5), 5.0) \
            if p.camera_timeout > 0 else 0.0
        self._debug = DebugImages(image_msg, lambda camera, exc: self._camera_problem(
            camera, ImageError(f'debug image not published: {type(exc).__name__}: {exc}')))
        self._worker = InferenceWorker(self._engine, list(self._cameras),
                                       self._on_continuous_result, self._camera_problem,
                                       self._continuous_settings(),
                                       clock=self._now, heartbeat_s=heartbeat)
        self._tracking = TrackingPump(self._cameras, lambda: self._params, self._admit,
                                      lambda: self._state == 'active', self._follow)

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
            self._stop_cameras()
            if not self._closing:
                self.get_logger().error(f'activate failed: {reason(exc)}; the node stays '
                                        'inactive with its model loaded (to change camera '
                                        'parameters: cleanup, set, configure, activate)')
            return TransitionCallbackReturn.FAILURE
        self._worker.set_paused(False)
        self._active_since = time.monotonic()
        self._state = 'active'
        self._follow.take_goals()
        return super().on_activate(state)

    def _activate(self) -> None:
        p = self._params
        if self._intake_node is None:
            self._intake_node = intake_node(self)
        subscribe = not may_unsubscribe(p.unsubscribe_idle_after, p.rate_hz)
        for camera in self._cameras.values():
            camera.start(self._intake_node, p.image_qos_reliability, int(p.image_qos_depth),
                         subscribe)
        self._worker.set_sources({name: self._source(name) for name in self._cameras},
                                 self._admit, self._check_idle_cameras)

    def _source(self, name: str) -> Any:
        """Return how the worker takes ``name``'s frames: not while it is tracked.

        While tracked, the tracking thread takes every frame and hands each to the worker.
        """
        camera = self._cameras[name]

        def take(use: bool) -> Any:
            tracking = self._tracking
            return None if tracking is not None and tracking.owns(name) else camera.take(use)
        return take

    def _check_idle_cameras(self) -> None:
        """Drop the subscriptions of cameras no query used lately; restore them when needed.

        Runs on the worker thread, between its takes, so that no frame taken before the
        release is stored after it. Subscribing again otherwise happens on the first take
        that uses the camera (a query's, on an executor thread).
        """
        worker, params = self._worker, self._params
        if self._state != 'active' or worker is None or params is None:
            return
        try:
            sync_subscriptions(self._cameras, worker, float(params.unsubscribe_idle_after),
                               float(params.rate_hz))
        except Exception as exc:  # never end the worker thread over a subscription
            self.get_logger().error(f'image subscriptions: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)

    def _stop_cameras(self) -> None:
        if self._worker is not None:
            self._worker.set_sources({}, None)
        for camera in self._cameras.values():
            camera.stop()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._state = 'inactive'
        self._follow.end_all('the node was deactivated')
        if self._tracking is not None:
            self._tracking.wake()
        if self._worker is not None:
            self._worker.set_paused(True)
        self._stop_cameras()
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
        """Stop the worker, free the model and its memory, drop the cameras' publishers."""
        self._state = 'unconfigured'
        self._follow.end_all('the node is being cleaned up or shut down')
        if self._tracking is not None:
            self._tracking.stop()
            self._tracking = None
        self._stop_cameras()
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
        for camera in self._cameras.values():
            camera.destroy()
        self._cameras = {}
        self._params = None
        return_freed_memory()  # without it resident memory crept up cycle after cycle

    def stop_worker(self) -> None:
        """Stop tracking and inference before the node is destroyed (bounded time)."""
        if self._tracking is not None:
            self._tracking.stop()
        if self._worker is not None:
            self._worker.stop(timeout=10.0)

    def destroy_node(self) -> None:
        if self._tracking is not None:
            self._tracking.stop()
        self._stop_cameras()
        if self._intake_node is not None:
            self._intake_node.destroy_node()
            self._intake_node = None
        super().destroy_node()

    # -- camera frames and continuous results ------------------------------------------------

    def _admit(self, camera: str, msg: Any) -> float | None:
        """Check a frame taken from DDS and hand it to the worker; return its stamp or None.

        Runs on the worker thread, or on the tracking thread while the camera is tracked.
        """
        decision = admit(getattr(msg, 'encoding', None), stamp_seconds(msg), self._now())
        worker = self._worker
        if decision.refused:
            self._camera_problem(camera, ImageError(decision.detail))
            if worker is not None:
                worker.count_refused(camera, decision.refused)
            return None
        if worker is not None:  # an unstamped frame takes the node clock's time
            worker.offer_frame(camera, msg, decision.stamp)
        return decision.stamp

    def _camera_problem(self, camera: str, error: Exception) -> None:
        target = self._cameras.get(camera)
        if target is not None:
            target.report(error)

    def _on_continuous_result(self, camera: str, msg: Any, result: GroundingResult,
                              frame: Frame, latency: float, stamp: float) -> None:
        target, params = self._cameras.get(camera), self._params
        if target is not None and params is not None:
            target.publish(result, msg.header, frame, float(params.min_score),
                           params.depth(), self._debug)
            self._on_query_result(camera, stamp, result)

    def _on_query_result(self, camera: str, stamp: float, result: GroundingResult) -> None:
        """Give a model result on a camera's frame to its tracks (while it is tracked).

        ``stamp`` is the frame's admitted stamp, the one its tracks were moved at (an unstamped
        frame's is the node clock's time when it was taken, not its header's 0).
        """
        tracking, params = self._tracking, self._params
        if tracking is not None and params is not None:
            tracking.on_result(camera, stamp, result, float(params.min_score))

    # -- diagnostics -------------------------------------------------------------------------

    def _status(self) -> NodeStatus:
        params, queries = self._params, self._queries
        return NodeStatus(
            state=self._state, engine=self._engine, worker=self._worker,
            camera_timeout=float(params.camera_timeout) if params is not None else 0.0,
            intakes={n: c.intake for n, c in self._cameras.items() if c.intake is not None},
            active_since=self._active_since, continuous_problem=self._continuous_problem,
            counters={'stale queries refused': queries.stale_refused,
                      'requests pending': queries.pending.count,
                      'busy refusals': queries.busy_refused,
                      'follow goals running': self._follow.running,
                      'DDS writes refused': self.writes.refused,
                      'executor errors': self.callback_errors.count,
                      'cameras tracked': len(self._tracking.tracked)
                      if self._tracking is not None else 0})

    def _sweep_goals(self) -> None:
        if self._closing:  # the action servers may be destroyed under the sweep
            return
        self.writes.sweep(self._queries.action, '~/ground')
        self.writes.sweep(self._follow.action, '~/follow')
