# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""SIGINT and SIGTERM from a command's first line, before its own handling is in place.

A command's module imports for 0.1 s (0.3 s and more on busy cores) before its ``main()`` sets
up its handlers. A SIGTERM then killed ``kosmos_corpus`` with -15 (seen in the test of a signal
0.2 s after start, with four test processes on two cores), and a Ctrl-C printed a traceback from
inside an import. Now the command records them from its first line (:func:`hold`), gives the
handlers back before ``main()`` runs (:func:`release`), and ``main()`` delivers the first one
recorded (:func:`replay`) once its own handling is in place: exit 130, nothing begun.

Only the interpreter's own start comes before the first line: a SIGTERM 30 ms after the
start still ends the process (-15), from 50 ms on it is exit 130 (measured on a quiet machine).
A second signal before ``main()`` ends the process at once (exit 130): a start that hangs (an
import on a stalled file system) can still be stopped. A signal the parent ignores (SIGINT for
a background job) stays ignored. ``kosmos_corpus``,
``ground_bag`` and ``kosmos_eval`` start through :func:`launch` (their console scripts) or hold
at the top of their module (``python -m``).
"""

from __future__ import annotations

import importlib
import os
import signal
from typing import Any

_DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
_received: list[int] = []
_previous: dict[int, Any] = {}


def _record(signum: int, _frame: Any) -> None:
    if _received:  # a second one: the start hangs (an import on a stalled file system, say)
        os.write(2, b'interrupted while starting\n')
        os._exit(130)  # nothing has begun: nothing to finish
    _received.append(signum)


def hold() -> None:
    """Record SIGINT and SIGTERM (where they have their default handling) from now on."""
    for signum, default in _DEFAULTS.items():
        if signal.getsignal(signum) is default:
            _previous[signum] = signal.signal(signum, _record)


def release() -> None:
    """Give back the handlers :func:`hold` replaced (what a command's ``main()`` expects)."""
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()


def replay() -> None:
    """Deliver the first signal recorded (if any) to the handlers in place now."""
    if _received:
        signum = _received[0]
        _received.clear()
        signal.raise_signal(signum)


def launch(module: str) -> None:
    """Import ``module`` with signals held, then run its ``entry()`` (a console script)."""
    hold()
    try:
        entry = importlib.import_module(module).entry
    finally:
        release()
    entry()


def kosmos_corpus() -> None:
    launch('kosmos_ros.corpus.cli')


def ground_bag() -> None:
    launch('kosmos_ros.bag.ground_bag')


def kosmos_eval() -> None:
    launch('kosmos_ros.evaluation.cli')
