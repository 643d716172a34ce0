# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The action ``~/follow``: a phrase found by the model, then followed on every camera frame.

A goal names a phrase (and optionally a camera, a region to choose among several boxes, a
re-grounding rate and a least score). While it runs, its camera is tracked (:mod:`.tracks`),
and the goal sends the model a FIND query on the camera's newest frame every
``1 / regrounding_hz`` seconds (one at a time; they queue and batch with every other query).
Each result feeds the camera's tracks; the goal's target is the track of its first result's
box (the one overlapping ``region`` most, else the best-scoring), kept while the tracker keeps
it (the model confirming it, the optical flow following it between results). When the target
is lost or aged out, the next result that finds the phrase gives a new target (the box
nearest the last one seen, else the best-scoring).

The goal's phrase is compared with the model's phrases as the model spells it
(:meth:`~kosmos_ros.model.engine.GroundingEngine.read_phrase`: neutralised, normalised and decoded
as a FIND prompt's phrase is), so brackets, fullwidth letters or a control character in the
goal match what comes back.

Feedback, on every tracked frame of the camera: the frame's header, ``searching`` /
``tracking`` / ``predicted`` (the optical flow failed on this frame: the motion model's box)
/ ``lost``, the track id, its box, the score of its last confirmation, its 3D position (with
depth) and the time since that confirmation (message time, never negative).

Every accepted goal ends with a result. It ends when it is cancelled (``success`` true only
when its target was being followed then), when its target has not been tracked for
``lost_timeout`` seconds (or, never found, ``lost_timeout`` after it began, once a model result
has come back), when its query fails (the reason), when the node stops being active, or when
its client is gone (:class:`.follow_clients.ClientWatch`: ``follow_client_timeout``). A goal
sent while the node configures or activates waits for it to become active, up to
``follow_activation_timeout``; one sent while it is inactive otherwise ends at once with the
reason; none is taken while the node leaves the active state. The goal callbacks are
coroutines awaiting the end: no executor thread is held by a goal. A goal's record, its checks
and its choice of target are in :mod:`.follow_goals`.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from kosmos_ros_interfaces.action import Follow
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future

from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.errors import InferenceCancelled, KosmosError
from kosmos_ros.node.conversions import bbox_msg, duration_msg
from kosmos_ros.node.dds_writes import Writes
from kosmos_ros.node.follow_clients import ClientWatch
from kosmos_ros.node.follow_goals import (cancel_message, FollowGoal, goal_from_request, LOST,
                                          lost_message, motion_state, retarget, SEARCHING)
from kosmos_ros.node.queries import describe_error, QUERY_QOS
from kosmos_ros.node.scheduling import QueryJob

WAIT_STEP = 0.1  # seconds between two looks at the node's state, for a goal waiting for it


class FollowServer:
    """Serves ``~/follow`` for a node; the tracking thread drives the running goals."""

    def __init__(self, node: Any, writes: Writes, session: Callable[[], Any],
                 read_phrase: Callable[[str], str], now: Callable[[], float],
                 pump: Callable[[], Any], starting: Callable[[], bool]):
        """Create the action server.

        Args:
            node: the grounding node.
            writes: publishes the feedback and ends the goals (:mod:`.dds_writes`).
            session: returns the active :class:`.queries.Session`, or raises ValueError why not.
            read_phrase: returns a phrase as the model spells it; raises PromptError/ValueError
                for a phrase FIND cannot take.
            now: the node's clock, seconds.
            pump: returns the node's :class:`.tracks.TrackingPump` (None when not configured).
            starting: whether the node is on its way to active (configuring, activating).
        """
        self._node, self._writes = node, writes
        self._session, self._read_phrase = session, read_phrase
        self._now, self._pump, self._starting = now, pump, starting
        self._lock = threading.Lock()
        self._goals: list[FollowGoal] = []
        self._open = False  # goals are taken (the node is active and not leaving it)
        self._closing = False  # the node is shutting down: its action server may be gone
        self.clients = ClientWatch(node, '~/follow')
        self.action = ActionServer(
            node, Follow, '~/follow', execute_callback=self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            handle_accepted_callback=writes.accepted(lambda: self.action, '~/follow status'),
            cancel_callback=lambda goal_handle: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(), goal_service_qos_profile=QUERY_QOS,
            result_service_qos_profile=QUERY_QOS, cancel_service_qos_profile=QUERY_QOS)

    def uses(self, camera: str) -> bool:
        """Whether a running goal follows something on ``camera``."""
        with self._lock:
            return any(g.camera == camera for g in self._goals)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._goals)

    def take_goals(self) -> None:
        """Take goals (the node became active)."""
        with self._lock:
            self._open = not self._closing

    def end_all(self, reason: str, closing: bool = False) -> None:
        """End every running goal and take no more (the node leaves the active state)."""
        with self._lock:
            self._closing = self._closing or closing
            self._open = False
            goals = list(self._goals)
        for goal in goals:
            self._end(goal, 'abort', reason)

    # -- the action --------------------------------------------------------------------------

    async def _execute(self, goal_handle: Any) -> Follow.Result:
        waited = await self._wait_for_active(goal_handle)
        future = Future(executor=self._node.executor)
        future.add_done_callback(lambda f: None)  # wakes the executor when set
        try:
            goal = self._admit(goal_handle, future)
        except (ValueError, KosmosError) as exc:
            self._writes.end(self.action, goal_handle, 'abort', '~/follow status')
            message = str(exc) if waited is None else (
                f'{exc} (waited {waited:.1f} s for the node to become active; '
                'follow_activation_timeout)')
            return Follow.Result(success=False, message=message, track_id=-1)
        pump = self._pump()
        if pump is not None:
            pump.wake()
        kind, message = await future
        with self._lock:
            if goal in self._goals:
                self._goals.remove(goal)
        result = Follow.Result(success=goal.success, message=message, track_id=goal.track_id)
        result.followed = duration_msg(
            0.0 if goal.found_at is None else max(0.0, self._now() - goal.found_at))
        try:
            self._writes.end(self.action, goal_handle, 'canceled' if kind == 'cancel'
                             else 'abort', '~/follow status')
        except Exception as exc:  # the server is going away (shutdown): nobody to tell
            if not self._closing:
                raise
            result.message += f' ({type(exc).__name__} while ending the goal)'
        return result

    async def _wait_for_active(self, goal_handle: Any) -> float | None:
        """Wait while the node is on its way to active; return the seconds waited (or None).

        Up to ``follow_activation_timeout`` (node clock), or until the goal is cancelled.
        """
        if self._is_open() or not self._starting():
            return None
        limit = float(self._node.get_parameter('follow_activation_timeout').value)
        started = self._now()
        while not self._is_open() and self._starting() and \
                self._now() - started < limit and not goal_handle.is_cancel_requested:
            await self._sleep(WAIT_STEP)
        return self._now() - started

    def _is_open(self) -> bool:
        with self._lock:
            return self._open

    def _sleep(self, seconds: float) -> Future:
        """Return a future done after ``seconds`` (a one-shot timer of the node)."""
        future = Future(executor=self._node.executor)
        timer: Any = None

        def fire() -> None:
            timer.cancel()
            self._node.destroy_timer(timer)
            if not future.done():
                future.set_result(None)

        timer = self._node.create_timer(seconds, fire)
        return future

    def _admit(self, goal_handle: Any, future: Future) -> FollowGoal:
        """Check a goal and register it; raise ValueError (or a KosmosError) with the reason."""
        session = self._session()
        p = session.params
        goal = goal_from_request(goal_handle, session, self._read_phrase, future, self._now())
        with self._lock:
            if not self._open:  # deactivate ran meanwhile: it ended the goals it saw
                raise ValueError('the node is leaving the active state; send the goal again '
                                 'once it is active')
            if len(self._goals) >= int(p.max_follow_goals):
                raise ValueError(f'{len(self._goals)} follow goals are running '
                                 f'(max_follow_goals {p.max_follow_goals}); cancel one first')
            self._goals.append(goal)
        self.clients.adopt(goal, float(p.follow_client_timeout))
        return goal

    def _end(self, goal: FollowGoal, kind: str, message: str) -> None:
        """End ``goal`` once: ``cancel`` or ``abort``, with the message of its result."""
        with self._lock:
            if goal.ended:
                return
            goal.ended = True
        if not goal.future.done():
            goal.future.set_result((kind, message))

    # -- driven by the tracking thread -------------------------------------------------------

    def tick(self) -> None:
        """End cancelled and lost goals; send the model queries that are due."""
        with self._lock:
            goals = [g for g in self._goals if not g.ended]
        if not goals:
            return
        now = self._now()
        try:
            session = self._session()
        except ValueError as exc:
            for goal in goals:
                self._end(goal, 'abort', str(exc))
            return
        gone = self.clients.gone(goals, float(session.params.follow_client_timeout))
        for goal in goals:
            if goal.handle.is_cancel_requested:
                self._cancel(goal)
                continue
            if id(goal) in gone:
                self._end(goal, 'abort', 'client gone: no subscriber of the feedback of the goal '
                          'that was there when it was accepted is left (for '
                          f'{session.params.follow_client_timeout:g} s, follow_client_timeout)')
                continue
            timeout = float(session.params.lost_timeout)
            if goal.answered and now - goal.last_seen > timeout:
                self._end(goal, 'abort', lost_message(goal, now, timeout))
                continue
            wait = max(timeout, float(session.params.frame_wait_timeout))
            if goal.last_query == -math.inf and now - goal.started > wait:
                camera = session.cameras[goal.camera]
                self._end(goal, 'abort', f'no frame from camera {goal.camera!r} (topic '
                          f'{camera.config.subscribed_topic}) within {wait:g} s '
                          '(lost_timeout or frame_wait_timeout, the longer)')
                continue
            if not goal.in_flight and time.monotonic() - goal.last_query >= goal.period:
                self._query(goal, session)

    def _cancel(self, goal: FollowGoal) -> None:
        """End a cancelled goal; ``success`` says whether its target was followed then."""
        pump = self._pump()
        stream = pump.streams.get(goal.camera) if pump is not None else None
        track = stream.get(goal.track_id) if stream is not None and goal.track_id >= 0 \
            else None
        goal.success = track is not None and track.followed
        message = cancel_message(goal)
        self._end(goal, 'cancel', message)

    def _query(self, goal: FollowGoal, session: Any) -> None:
        """Send a FIND query for ``goal`` on its camera's newest frame (if there is one)."""
        msg, stamp = session.worker.latest(goal.camera)
        if msg is None:
            return
        goal.in_flight, goal.last_query = True, time.monotonic()

        def done(result: GroundingResult | None, error: Exception | None, frame: Any) -> None:
            goal.in_flight = False
            if error is not None:
                if not isinstance(error, InferenceCancelled):
                    self._end(goal, 'abort', f'model query failed: {describe_error(error)}')
                return
            self._on_result(goal, stamp, result)

        session.worker.submit(QueryJob(Query(Task.FIND, goal.phrase), goal.camera, msg, done,
                                       lambda: goal.ended))

    def _on_result(self, goal: FollowGoal, stamp: float, result: GroundingResult) -> None:
        """Feed a query's result to the camera's tracks; choose the target if it has none.

        ``stamp`` is the queried frame's admitted stamp (the node clock's time for an unstamped
        frame), the one its tracks were moved at.
        """
        pump = self._pump()
        if pump is None or goal.ended:
            return
        stream = pump.streams.get(goal.camera)
        tracks = stream.on_result(stamp, result, goal.min_score, goal.read)
        goal.answered = True
        current = stream.get(goal.track_id) if goal.track_id >= 0 else None
        retarget(goal, tracks, current, self._now())

    def on_frame(self, camera: str, header: Any, stamp: float, stream: Any,
                 lifted: dict[int, Any]) -> None:
        """Send the feedback of every goal on ``camera`` for the frame just tracked."""
        with self._lock:
            goals = [g for g in self._goals if g.camera == camera and not g.ended]
        for goal in goals:
            feedback = Follow.Feedback(header=header, track_id=goal.track_id, state=SEARCHING)
            track = stream.get(goal.track_id) if goal.track_id >= 0 else None
            if goal.track_id >= 0:
                feedback.state = LOST
                if track is not None:
                    feedback.box, feedback.score = bbox_msg(track.box), float(track.score)
                    feedback.since_confirmed = duration_msg(
                        max(0.0, stamp - track.last_confirmed))
                    feedback.state = motion_state(track)
                    if track.followed:
                        goal.last_seen, goal.last_box = self._now(), track.box
                    item = lifted.get(track.track_id)
                    if item is not None and item.box is not None:
                        feedback.has_position = True
                        x, y, z = item.box.center
                        feedback.position.x, feedback.position.y = float(x), float(y)
                        feedback.position.z = float(z)
                elif goal.last_box is not None:
                    feedback.box = bbox_msg(goal.last_box)
            try:
                self._writes.feedback(goal.handle, feedback, '~/follow feedback')
            except Exception:  # the goal ended meanwhile (its handle is terminal)
                if not goal.ended:
                    raise
