# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What the inference worker decides, as plain data and pure functions (no thread, no rclpy).

- the records it keeps and hands around: :class:`QueryJob` (a request waiting for the worker),
  :class:`CameraState` (a camera's newest frame and counters), :class:`CameraFrame` (a camera
  frame taken for a batch), :class:`Batch` (one cycle's work) and :class:`ContinuousSettings`;
- how a batch is formed: :func:`camera_places` (cameras and queries share it, neither starves)
  and :func:`choose_batch` (queries grouped by token budget, none passed over forever);
- :class:`PendingRequests`: the requests held, bounded by count and bytes.

Unit tests (test_worker.py) drive these in milliseconds; the worker thread only applies them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import math
import threading
from typing import Any, Callable, TYPE_CHECKING

from kosmos_ros.datatypes import GroundingResult, Query
from kosmos_ros.images import Frame

if TYPE_CHECKING:  # the engine (and torch) load at configure, not with the node
    from kosmos_ros.model.engine import EncodedImage


# A queued query passed over this many times leads the next batch, whatever its budget.
PATIENCE = 4


def budget_group(budget: int, normal: int) -> int:
    """Rank of a generation budget: 0 up to ``normal``, then one rank per doubling."""
    if budget <= normal:
        return 0
    return max(1, math.ceil(math.log2(budget / max(normal, 1))))


def choose_batch(budgets: list[int], passed: list[int], count: int, normal: int,
                 patience: int = PATIENCE) -> list[int]:
    """Pick up to ``count`` queued queries to decode together; return their queue indices.

    A batch ends when its longest row ends, so a query with a long budget would hold back
    every short one decoded beside it. Queries are therefore batched by budget rank
    (:func:`budget_group`): those within the node's usual budget (``normal``) together, a
    longer one only with budgets of its own rank. The lowest rank goes first, in queue order;
    a query passed over ``patience`` times goes first whatever its rank, so none starves.
    """
    if count <= 0 or not budgets:
        return []
    groups = [budget_group(b, normal) for b in budgets]
    overdue = [i for i, n in enumerate(passed) if n >= patience]
    lead = overdue[0] if overdue else min(range(len(budgets)), key=lambda i: (groups[i], i))
    chosen = [i for i, g in enumerate(groups) if g == groups[lead] and i != lead]
    return sorted([lead] + chosen[:count - 1])


def camera_places(due: int, queued: int, size: int, camera_went_last: bool) -> int:
    """How many places of a batch of ``size`` go to the ``due`` cameras' frames.

    When cameras and queries both wait, the cameras leave at least one place to the queries;
    with a batch of one, they take turns.
    """
    if due and queued:
        return min(due, size - 1) if size > 1 else int(not camera_went_last)
    return min(due, size)


@dataclass
class ContinuousSettings:
    """What continuous grounding runs; replaced as a whole when parameters change."""

    rate_hz: float
    query: Query | None  # None when the configured task and prompt are invalid


@dataclass
class CameraState:
    """Per camera: the newest message and counters. Guarded by the worker's lock."""

    name: str
    latest: Any = None
    latest_stamp: float = 0.0
    latest_taken: bool = True
    last_grounded_stamp: float | None = None
    last_received_wall: float | None = None
    frames_in: int = 0
    superseded: int = 0
    throttled: int = 0
    inferences: int = 0
    errors: int = 0
    last_error: str = ''
    last_result_wall: float | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=200))
    result_times: deque = field(default_factory=lambda: deque(maxlen=1000))  # monotonic
    encoded_msg: Any = None
    encoded: EncodedImage | None = None


@dataclass
class QueryJob:
    """A service or action request waiting for the worker."""

    query: Query
    camera: str
    message: Any  # the image message to ground (camera frame or the request's image)
    done: Callable[[GroundingResult | None, Exception | None, Frame | None], None]
    cancelled: Callable[[], bool] = lambda: False
    on_stage: Callable[[str], None] | None = None
    from_camera: bool = True
    passed: int = 0  # batches formed without it while it waited


@dataclass(frozen=True)
class CameraFrame:
    """A camera's frame taken for continuous grounding in a batch."""

    camera: str
    message: Any
    stamp: float = 0.0  # its admitted stamp (the node clock's time for an unstamped frame)


@dataclass(frozen=True)
class Batch:
    """One cycle's work: queries, camera frames and the continuous query they get."""

    jobs: list[QueryJob]
    frames: list[CameraFrame]
    continuous: Query | None

    def __bool__(self) -> bool:
        return bool(self.jobs or self.frames)


class PendingRequests:
    """The service and action requests held now, and the bytes of the images they carry.

    A request counts from its arrival to its answer: waiting for a frame, queued or running.
    Thread-safe; the node admits a request only within its limits, so that a flood of large
    requests is refused at once instead of filling memory and queueing for minutes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.bytes = 0

    def admit(self, size: int, max_count: int, max_bytes: int) -> str | None:
        """Count a request carrying ``size`` image bytes in; return why not when over a limit."""
        mib = 2 ** 20
        with self._lock:
            if self.count >= max_count:
                return (f'busy: {self.count} requests are pending (max_pending_queries '
                        f'{max_count}); retry later')
            if size > max_bytes:
                return (f'the image of {size / mib:.1f} MiB is larger than '
                        f'max_pending_image_mb ({max_bytes / mib:g} MiB)')
            if self.bytes + size > max_bytes:
                return (f'busy: pending requests hold {self.bytes / mib:.1f} MiB of images and '
                        f'this one {size / mib:.1f} MiB (max_pending_image_mb '
                        f'{max_bytes / mib:g}); retry later')
            self.count += 1
            self.bytes += size
            return None

    def release(self, size: int) -> None:
        with self._lock:
            self.count -= 1
            self.bytes -= size
