# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Writes DDS refuses: a message dropped and counted, never a node or a goal lost over one.

A reliable DDS writer gives up on a write it cannot start within its ``max_blocking_time``
(Fast DDS: 100 ms), for instance while its lock is held to match or drop a reader on a
machine whose cores are busy; rcl then raises ``RCLError: ... cannot publish data``. rclpy
raises it out of whatever published. Seen in CI (Kilted, two cores, four test processes):
an action server's status publish, made by rclpy as a goal starts executing, raised out of
the executor, which stopped spinning; the goal stayed accepted and never ran, and the node
answered nothing more.

:class:`Writes` is the node's one place for this; every output goes through it:

- a topic message (detections, tracks, diagnostics): dropped, counted, logged at most once per
  :data:`LOG_PERIOD`; the next one follows;
- a goal's feedback: likewise, the goal goes on;
- a goal starting (:meth:`Writes.accepted`, the action servers' ``handle_accepted_callback``):
  its state is executing, only its status publish failed, so it runs (the next status publish
  carries its state);
- a goal ending (:meth:`Writes.end`): its terminal state is set and its result (with the
  message) goes to the client; the server is told the goal is done, as rclpy would have;
- a goal whose acceptance publish, inside rclpy before any callback of ours, failed: rclpy never
  calls the accepted callback and the goal would wait for ever. :meth:`Writes.sweep`, on a
  timer, starts every goal accepted but not started for a whole sweep period. It reads the
  action server's ``_goal_handles`` (rclpy keeps no public list of goals; test_dds_writes
  checks it on each distribution).

Anything else raised out of a callback is for the executor loop (:mod:`.spinning`): logged
and counted, and the node goes on serving.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from action_msgs.msg import GoalStatus

from kosmos_ros.node.lifecycle import InvalidHandle, RCLError

# At most one log line per kind of refused write per this many seconds.
LOG_PERIOD = 5.0
# Goal states in which a goal waits for its execute callback.
_WAITING = (GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_CANCELING)


class Writes:
    """Counts and reports the writes DDS refused to a node; starts goals it left waiting."""

    def __init__(self, logger: Any, now: Callable[[], float] = time.monotonic):
        self._logger, self._now = logger, now
        self._lock = threading.Lock()
        self._refused = 0
        self._logged: dict[str, float] = {}
        self._started: dict[int, set[bytes]] = {}  # per action server: goals started
        self._waiting: dict[int, dict[bytes, float]] = {}  # per server: first seen waiting

    @property
    def refused(self) -> int:
        """How many writes DDS refused since the node was created."""
        with self._lock:
            return self._refused

    def publish(self, publisher: Any, msg: Any, what: str) -> bool:
        """Publish ``msg``; return False when DDS refused it (counted and reported)."""
        try:
            publisher.publish(msg)
        except RCLError as exc:
            self._report(what, exc)
            return False
        return True

    def feedback(self, goal_handle: Any, feedback: Any, what: str) -> bool:
        """Publish a goal's feedback; return False when DDS refused it."""
        try:
            goal_handle.publish_feedback(feedback)
        except RCLError as exc:
            if not goal_handle.is_active:  # it ended meanwhile: nothing to report
                return False
            self._report(what, exc)
            return False
        return True

    def accepted(self, server: Callable[[], Any], what: str) -> Callable[[Any], None]:
        """Return a ``handle_accepted_callback`` that runs the goal even if its status is lost.

        ``server()`` returns the action server (it exists only after the callback is made).
        """
        def start(goal_handle: Any) -> None:
            self._start(server(), goal_handle, what)
        return start

    def end(self, server: Any, goal_handle: Any, how: str, what: str) -> None:
        """End a goal: ``succeed``, ``abort`` or ``canceled``, even if its status is lost."""
        try:
            getattr(goal_handle, how)()
        except RCLError as exc:
            if goal_handle.is_active:  # the state did not change: not a lost write
                raise
            self._report(what, exc)
            try:
                server.notify_goal_done()  # what rclpy does after a status published
            except RCLError:  # the server itself is gone (the node shuts down)
                pass

    def sweep(self, server: Any, what: str) -> int:
        """Start the goals of ``server`` left waiting since the last sweep; return how many.

        A goal is started when it was seen accepted but not started at the previous sweep too
        (the accepted callback runs right after acceptance; a sweep between them is not a
        reason).
        """
        key = id(server)
        try:
            handles = dict(getattr(server, '_goal_handles'))
            states = {uuid: handle.status for uuid, handle in handles.items()}
        except InvalidHandle:  # the server is being destroyed (the node shuts down)
            return 0
        except RuntimeError:  # the goals changed while copied: look again next time
            return 0
        now, due = self._now(), []
        with self._lock:
            started = self._started.setdefault(key, set())
            seen = self._waiting.setdefault(key, {})
            waiting = {}
            for uuid, handle in handles.items():
                if uuid in started or states[uuid] not in _WAITING:
                    continue
                waiting[uuid] = seen.get(uuid, now)
                if uuid in seen:
                    due.append(handle)
            self._waiting[key] = waiting
            started &= set(handles)  # forget goals the server forgot
        for handle in due:
            self._logger.warning(f'{what}: a goal accepted but never started (its status '
                                 'publish was refused); starting it now')
            try:
                self._start(server, handle, what)
            except InvalidHandle:  # the server is being destroyed meanwhile
                return 0
        return len(due)

    def _start(self, server: Any, goal_handle: Any, what: str) -> None:
        uuid = bytes(goal_handle.goal_id.uuid)
        with self._lock:
            started = self._started.setdefault(id(server), set())
            if uuid in started:
                return
            started.add(uuid)
        try:
            goal_handle.execute()
        except RCLError as exc:
            if goal_handle.status not in (GoalStatus.STATUS_EXECUTING,
                                          GoalStatus.STATUS_CANCELING):
                raise  # the state did not change: not a lost write
            self._report(what, exc)
            server.notify_execute(goal_handle, None)  # what execute() does after publishing

    def _report(self, what: str, exc: Exception) -> None:
        now = self._now()
        with self._lock:
            self._refused += 1
            count = self._refused
            if now - self._logged.get(what, -LOG_PERIOD) < LOG_PERIOD:
                return
            self._logged[what] = now
        self._logger.warning(f'{what}: a write failed ({count} so far; the message is '
                             f'dropped, the node goes on): {exc}')
