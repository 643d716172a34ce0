# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The executor loop: a callback that raises is reported, and the node goes on serving.

``Executor.spin()`` ends at the first exception a callback raises, and a node whose executor
stopped answers nothing more while it still looks alive on the graph. A robot's node should not
end over one failed callback either (reloading the model takes seconds to minutes): :func:`spin`
hands each exception to ``on_error`` (the node logs and counts it: ``executor errors`` in its
diagnostics) and spins on. The tests' executor uses the same loop and fails the test in which a
callback raised.
"""

from __future__ import annotations

from typing import Any, Callable

# How long one wait for work lasts, seconds: how soon a stop is seen.
WAIT = 0.25


def spin(executor: Any, stopped: Callable[[], bool],
         on_error: Callable[[Exception], None]) -> None:
    """Spin ``executor`` until ``stopped()`` or its context is shut down.

    An exception a callback raised goes to ``on_error`` and the loop goes on; one raised by
    ``on_error`` ends it.
    """
    while not stopped() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=WAIT)
        except Exception as exc:  # noqa: B902 - any callback's: reported, spinning goes on
            on_error(exc)
