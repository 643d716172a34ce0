# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Whose follow goal is it: a goal ends when the client that sent it is gone.

An action client subscribes to the action's feedback topic when it is created, before it can
send a goal, and its subscription leaves the ROS graph when its process exits (at once) or dies
(when DDS notices: the participant's lease, about 20 s with Fast DDS defaults). rclpy does not
say which client sent a goal (the request header carries only a sequence number), so a goal's
*owners* are the feedback subscriptions present when it was accepted, and those that appear
within ``follow_client_timeout`` after (discovery can lag the request). A goal whose owners
have all left the graph for ``follow_client_timeout`` seconds is orphaned: the planner that
sent it crashed or exited without cancelling. A goal whose client never subscribed (no
subscriber at all, ever) is left to its other ends.

Limit: while another client that subscribed to the feedback before the goal was accepted
stays, the goal is not taken for orphaned (a second planner, a monitoring tool).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import threading
import time
from typing import Any, Iterable

LOOK_PERIOD = 0.25  # seconds between two graph queries


@dataclass
class _Owners:
    """The feedback subscriptions that may have sent one goal."""

    gids: set[bytes] = field(default_factory=set)
    adopt_until: float = 0.0  # monotonic: subscriptions seen until then are owners too
    absent_since: float | None = None  # monotonic: none of them in the graph since


class ClientWatch:
    """The feedback subscribers of an action, and which of them own which goal."""

    def __init__(self, node: Any, action_name: str):
        self._node = node
        self._action_name = action_name
        self._topic: str | None = None
        self._lock = threading.Lock()
        self._owners: dict[int, _Owners] = {}  # id(goal) -> owners
        self._present: frozenset[bytes] = frozenset()
        self._looked = -1e9

    @property
    def topic(self) -> str:
        """The action's feedback topic, as the node resolves the action's name (remaps too)."""
        if self._topic is None:
            self._topic = self._node.resolve_topic_name(self._action_name) + \
                '/_action/feedback'
        return self._topic

    def subscribers(self) -> frozenset[bytes]:
        """Return the gids of the feedback topic's subscriptions (looked up at most 4 Hz)."""
        now = time.monotonic()
        with self._lock:
            if now - self._looked < LOOK_PERIOD:
                return self._present
            self._looked = now
        infos = self._node.get_subscriptions_info_by_topic(self.topic)
        present = frozenset(bytes(i.endpoint_gid) for i in infos)
        with self._lock:
            self._present = present
        return present

    def adopt(self, goal: Any, timeout: float) -> None:
        """Record the owners of a goal just accepted."""
        with self._lock:
            self._looked = -1e9  # look now: the client subscribed before it sent the goal
        owners = _Owners(set(self.subscribers()), time.monotonic() + timeout)
        with self._lock:
            self._owners[id(goal)] = owners

    def gone(self, goals: Iterable[Any], timeout: float) -> set[int]:
        """Return the ids of the goals whose owners have been out of the graph ``timeout`` s.

        Goals not asked about any more are forgotten.
        """
        goals = list(goals)
        present = self.subscribers()
        now = time.monotonic()
        orphans = set()
        with self._lock:
            self._owners = {k: v for k, v in self._owners.items()
                            if k in {id(g) for g in goals}}
            for goal in goals:
                owners = self._owners.get(id(goal))
                if owners is None:
                    continue
                if now <= owners.adopt_until:
                    owners.gids |= present
                if not owners.gids or owners.gids & present:
                    owners.absent_since = None
                    continue
                if owners.absent_since is None:
                    owners.absent_since = now
                if now - owners.absent_since >= timeout:
                    orphans.add(id(goal))
        return orphans
