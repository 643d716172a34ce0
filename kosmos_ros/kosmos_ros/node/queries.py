# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The service and the action ``~/ground``: a request in, an :class:`Answer`, a response out.

Both exist in every lifecycle state and answer ``success: false`` with the reason when the node
is not active. A request is admitted within ``max_pending_queries`` and
``max_pending_image_mb`` (else refused at once as busy), checked without the model, given the
camera's newest frame (or, on a camera just subscribed, its next one, awaited without blocking
the executor) and queued for the worker; the callbacks are coroutines awaiting the worker's
answer, so no executor thread waits for inference.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Any, Callable

from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.srv import Ground
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.errors import (InferenceCancelled, InferenceError, KosmosError,
                               OutOfMemoryError)
from kosmos_ros.node.camera import Camera, request_messages, ResultMessages
from kosmos_ros.node.conversions import duration_msg, regions_from_bboxes
from kosmos_ros.node.dds_writes import Writes
from kosmos_ros.node.parameter_table import NodeParams
from kosmos_ros.node.scheduling import PendingRequests, QueryJob
from kosmos_ros.options import requested_or

# Requests wait in DDS until an executor thread takes them. The services' default (keep last
# 10) drops requests when more callers than that arrive at once, and a dropped request is never
# answered; keep all queues every one (memory grows with what the callers send).
QUERY_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class Session:
    """What an active node answers with: read once per request (a cleanup may replace it)."""

    worker: Any  # the InferenceWorker
    params: NodeParams
    cameras: dict[str, Camera]


@dataclass(frozen=True)
class Answer:
    """The outcome of one request: a result, or the reason there is none."""

    result: GroundingResult | None
    error: str = ''
    header: Any = None
    camera: Camera | None = None  # None for an image sent with the request
    params: NodeParams | None = None

    def messages(self, requested_min_score: float) -> ResultMessages:
        """Return the result's messages; the request's min_score, else the node's."""
        p = self.params
        min_score = requested_or('min_score', float(requested_min_score), float(p.min_score))
        if self.camera is None:
            return request_messages(self.result, self.header, min_score)
        return self.camera.messages(self.result, self.header, min_score, p.depth())


def describe_error(error: Exception) -> str:
    """Return the reason a query failed, for a response's message."""
    if isinstance(error, InferenceCancelled):
        return f'cancelled: {error}'
    if isinstance(error, OutOfMemoryError):
        return f'model failure (out of memory): {error}'
    if isinstance(error, InferenceError):
        return f'model failure: {error}'
    if isinstance(error, KosmosError):
        return str(error)
    return f'internal error: {type(error).__name__}: {error}'


class QueryServer:
    """Serves ``~/ground`` (service and action) for a node."""

    def __init__(self, node: Any, writes: Writes, session: Callable[[], Session],
                 on_result: Callable[[str, float, GroundingResult], None] = lambda *a: None):
        """``session()`` returns the active :class:`Session` or raises ValueError why not.

        ``on_result(camera, stamp, result)`` sees every result on a camera's frame (tracks),
        with the frame's admitted stamp. ``writes`` publishes the action's feedback and ends
        its goals (:mod:`.dds_writes`).
        """
        self._node, self._session, self._on_result = node, session, on_result
        self._writes = writes
        self.pending = PendingRequests()
        self.busy_refused = 0
        self.stale_refused = 0
        group = ReentrantCallbackGroup()
        node.create_service(Ground, '~/ground', self._on_service, qos_profile=QUERY_QOS,
                            callback_group=group)
        self.action = ActionServer(
            node, GroundAction, '~/ground', execute_callback=self._on_action,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            handle_accepted_callback=writes.accepted(lambda: self.action, '~/ground status'),
            cancel_callback=lambda goal_handle: CancelResponse.ACCEPT, callback_group=group,
            goal_service_qos_profile=QUERY_QOS, result_service_qos_profile=QUERY_QOS,
            cancel_service_qos_profile=QUERY_QOS)

    # -- the two interfaces ------------------------------------------------------------------

    async def _on_service(self, request: Ground.Request, response: Ground.Response):
        answer = await self.answer(request)
        return _fill(response, answer, request.min_score)

    async def _on_action(self, goal_handle: Any) -> GroundAction.Result:
        accepted = time.monotonic()

        def stage(name: str) -> None:
            feedback = GroundAction.Feedback(stage=name)
            feedback.elapsed = duration_msg(time.monotonic() - accepted)
            self._writes.feedback(goal_handle, feedback, '~/ground feedback')

        stage('queued')
        answer = await self.answer(goal_handle.request, stage,
                                   lambda: goal_handle.is_cancel_requested)
        out = GroundAction.Result()
        if goal_handle.is_cancel_requested:
            self._writes.end(self.action, goal_handle, 'canceled', '~/ground status')
            return _fill(out, Answer(None, answer.error or 'cancelled'), 0.0)
        _fill(out, answer, goal_handle.request.min_score)
        self._writes.end(self.action, goal_handle, 'succeed' if out.success else 'abort',
                         '~/ground status')
        return out

    # -- answering ---------------------------------------------------------------------------

    async def answer(self, request: Any, on_stage: Callable[[str], None] | None = None,
                     cancelled: Callable[[], bool] = lambda: False) -> Answer:
        """Admit, check and run one request; never raises."""
        try:
            session = self._session()
        except ValueError as exc:
            return Answer(None, str(exc))
        p, size = session.params, len(request.image.data)
        problem = self.pending.admit(size, int(p.max_pending_queries),
                                     int(float(p.max_pending_image_mb) * 2 ** 20))
        if problem:
            self.busy_refused += 1
            return Answer(None, problem)
        try:
            return await self._run(session, request, on_stage, cancelled)
        finally:
            self.pending.release(size)

    async def _run(self, session: Session, request: Any, on_stage, cancelled) -> Answer:
        try:
            query, camera, msg, stamp = self._check(session, request)
            if camera is not None and msg is None:
                if on_stage:
                    on_stage('waiting for a frame')
                msg, stamp = await self._next_frame(session, camera)
        except (ValueError, KosmosError) as exc:
            return Answer(None, str(exc))
        future = Future(executor=self._node.executor)
        future.add_done_callback(lambda f: None)  # wakes the executor when set

        def done(result, error, frame):
            if not future.done():
                future.set_result((result, error))

        name = camera.name if camera is not None else ''
        session.worker.submit(QueryJob(query, name, msg, done, cancelled, on_stage,
                                       camera is not None))
        result, error = await future
        if error is not None:
            return Answer(None, describe_error(error), msg.header, camera, session.params)
        if camera is not None:
            self._on_result(camera.name, stamp, result)
        return Answer(result, '', msg.header, camera, session.params)

    def _check(self, session: Session,
               request: Any) -> tuple[Query, Camera | None, Any, float]:
        """Check a request without the model; return the query, camera and frame (if any).

        Raises ValueError with the reason. The frame is None when the camera has none yet.
        """
        requested_or('min_score', float(request.min_score), 0.0)  # OptionsError if invalid
        try:
            task = Task(int(request.task))
        except ValueError:
            raise ValueError(f'unknown task {request.task}; expected 0 (caption) to 4 (raw)') \
                from None
        regions = regions_from_bboxes(request.regions)
        budget = int(request.max_new_tokens) or None  # its own limit, max_request_tokens
        limit = int(session.params.max_request_tokens)
        if budget is not None and budget > limit:
            raise ValueError(f'max_new_tokens {budget} is more than a request may ask for '
                             f'(max_request_tokens {limit})')
        query = Query(task, request.prompt, regions, budget)
        image = request.image
        if image.width > 0 or image.height > 0 or len(image.data) > 0:
            return query, None, image, 0.0  # not a camera's frame: no camera, whatever it says
        names = list(session.cameras)
        name = request.camera or names[0]
        if name not in session.cameras:
            raise ValueError(f'unknown camera {name!r}; cameras: {", ".join(names)}')
        msg, stamp = session.worker.take_latest(name)
        if msg is not None:
            self._check_age(name, stamp, session.params)
        return query, session.cameras[name], msg, stamp

    def _check_age(self, camera: str, stamp: float, params: NodeParams) -> None:
        max_age = float(params.max_frame_age)
        age = self._node.get_clock().now().nanoseconds * 1e-9 - stamp
        if max_age > 0 and age > max_age:
            self.stale_refused += 1
            raise ValueError(f'newest frame of camera {camera!r} is {age:.2f} s old '
                             f'(max_frame_age {max_age:g} s)')

    async def _next_frame(self, session: Session, camera: Camera) -> tuple[Any, float]:
        """Wait (without blocking the executor) for a first frame of ``camera``; with its stamp."""
        wait = float(session.params.frame_wait_timeout)
        msg, stamp = None, 0.0
        if wait > 0:
            future = Future(executor=self._node.executor)
            future.add_done_callback(lambda f: None)  # wakes the executor when set

            def done(frame, frame_stamp):
                if not future.done():
                    future.set_result((frame, frame_stamp))

            session.worker.wait_for_frame(camera.name, wait, done)
            msg, stamp = await future
        if msg is None:
            self._session()  # raises "not active" when the wait ended with the node
            raise ValueError(f'no frame received from camera {camera.name!r} (topic '
                             f'{camera.config.subscribed_topic}) within {wait:g} s '
                             '(frame_wait_timeout)')
        self._check_age(camera.name, stamp, session.params)
        return msg, stamp


def _fill(out: Any, answer: Answer, requested_min_score: float) -> Any:
    """Put an answer into a service response or action result."""
    if answer.result is None:
        out.success, out.message = False, answer.error
        return out
    messages = answer.messages(requested_min_score)
    out.success = True
    out.grounding, out.detections = messages.grounding, messages.detections
    if messages.detections_3d is not None:
        out.detections_3d = messages.detections_3d
    else:
        out.detections_3d.header = answer.header
    return out
