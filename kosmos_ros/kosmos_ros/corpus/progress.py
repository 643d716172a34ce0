# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a corpus run tells its user while it works, from its first second.

Phases first, each a line with its counts as it starts and ends (finding bags, hashing them,
planning, starting workers, loading the model), then grounding: a tqdm bar with frames/s, the
ETA and frames per worker when standard error is a terminal, else a plain log line every
``LOG_PERIOD`` seconds (CI logs stay readable), then writing. ``quiet`` prints nothing but
errors; the summary at the end is the command's own. Without the bar, the libraries' own
progress bars (transformers loading weights) are turned off too, in Ray workers as well.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, TextIO

MODES = ('auto', 'bar', 'log', 'quiet')
LOG_PERIOD = 10.0  # seconds between two plain progress lines while grounding


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f'{seconds:.0f} s'
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f'{minutes} min {seconds:02d} s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours} h {minutes:02d} min'


class Progress:
    """Phases and the grounding bar of one run, on standard error (or ``stream``)."""

    def __init__(self, mode: str = 'auto', stream: TextIO | None = None, label: str = '',
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        if mode == 'auto':
            mode = 'bar' if getattr(self.stream, 'isatty', lambda: False)() else 'log'
        if mode not in MODES:
            raise ValueError(f'progress must be one of {", ".join(MODES)}; got {mode!r}')
        self.mode, self.label, self._clock = mode, label, clock
        if mode != 'bar':  # the libraries' own bars (loading weights) would garble a log
            os.environ['HF_HUB_DISABLE_PROGRESS_BARS'] = '1'  # read when transformers loads
            if 'transformers' in sys.modules:
                sys.modules['transformers'].utils.logging.disable_progress_bar()
        self.started = clock()
        self._bar: Any = None
        self._total = 0
        self._done = 0
        self._grounding_started = 0.0
        self._last_line = 0.0

    @property
    def quiet(self) -> bool:
        return self.mode == 'quiet'

    def _print(self, line: str) -> None:
        if self.quiet:
            return
        text = f'kosmos_corpus [{_duration(self._clock() - self.started)}] {line}'
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def phase(self, line: str) -> None:
        """Say what the run does now (or has just done), with its counts."""
        self._print(line)

    def grounding(self, total: int, workers: str) -> None:
        """Start counting ``total`` frames to ground."""
        self._total, self._done = total, 0
        self._grounding_started = self._last_line = self._clock()
        label = f' [{self.label}]' if self.label else ''
        self._print(f'grounding {total} frames on {workers}{label}')
        if self.mode == 'bar' and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=' frames', desc='grounding', file=self.stream,
                             dynamic_ncols=True, leave=False)

    def advance(self, frames: int, per_worker: Mapping[str, int]) -> None:
        """Count ``frames`` more grounded frames."""
        self._done += frames
        workers = ' '.join(f'{i + 1}:{per_worker[n]}' for i, n in enumerate(sorted(per_worker)))
        if self._bar is not None:
            self._bar.update(frames)
            self._bar.set_postfix_str(f'workers {workers}', refresh=False)
            return
        now = self._clock()
        if self.mode == 'log' and (now - self._last_line >= LOG_PERIOD or
                                   self._done >= self._total):
            self._last_line = now
            elapsed = now - self._grounding_started
            rate = self._done / elapsed if elapsed > 0 else 0.0
            eta = (self._total - self._done) / rate if rate > 0 else float('inf')
            eta_text = _duration(eta) if eta != float('inf') else 'unknown'
            share = 100.0 * self._done / self._total if self._total else 100.0
            self._print(f'grounded {self._done} of {self._total} frames ({share:.0f} %), '
                        f'{rate:.2f} frames/s, ETA {eta_text}; workers {workers}')

    def close(self) -> None:
        """End the bar (the grounding phase is over, finished or not)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
