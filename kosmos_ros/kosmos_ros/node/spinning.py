# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The executor loop: a callback that raises is reported, and the node goes on serving.

``Executor.spin()`` ends at the first exception a callback raises, and a node whose executor
stopped answers nothing more while it still looks alive on the graph. A robot's node should not
end over one failed callback either (reloading the model takes seconds to minutes): :func:`spin`
hands each exception to ``on_error`` (the node's :class:`CallbackErrors` logs and counts it:
``executor errors`` in its diagnostics) and spins on. The tests' executor uses the same loop
and fails the test in which a callback raised.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable

# How long one wait for work lasts, seconds: how soon a stop is seen.
WAIT = 0.25
# Seconds between two log lines of one type of exception.
LOG_PERIOD = 5.0


def spin(executor: Any, stopped: Callable[[], bool],
         on_error: Callable[[Exception], None]) -> None:
    """Spin ``executor`` until ``stopped()`` or its context is shut down.

    An exception a callback raised goes to ``on_error`` and the loop goes on; one raised by
    ``on_error`` ends it. Stop it before ``executor.shutdown()``: a shut-down executor's
    ``spin_once`` still hands out the work it had found (``spin()`` would have ended).
    """
    while not stopped() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=WAIT)
        except Exception as exc:  # noqa: B902 - any callback's: reported, spinning goes on
            on_error(exc)


class CallbackErrors:
    """What a node's executor loop does with an exception: count it, log it with its traceback.

    At most one log line per exception type per :data:`LOG_PERIOD` (a callback failing on
    every timer tick does not flood the log); ``count`` has them all.
    """

    def __init__(self, logger: Any, now: Callable[[], float] = time.monotonic):
        self._logger, self._now = logger, now
        self.count = 0
        self._logged: dict[str, float] = {}  # exception type: when last logged

    def report(self, exc: Exception) -> None:
        """Count and (throttled) log ``exc``; the executor loop's ``on_error``."""
        self.count += 1
        kind, now = type(exc).__name__, self._now()
        if now - self._logged.get(kind, -LOG_PERIOD) < LOG_PERIOD:
            return
        self._logged[kind] = now
        self._logger.error(
            f'a callback raised {kind} ({self.count} so far); the node goes on serving: '
            f'{exc}\n' + ''.join(traceback.format_exception(exc)).rstrip())
