# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""How the CPU paths use threads, chosen once per path, for a robot whose cores are busy.

A robot's computer is never idle. A parallel region of torch (OpenMP) or OpenCV ends at a
barrier that waits for its slowest thread; when another process holds that thread's core, the
barrier waits for a scheduler time slice. Measured on this project's 2-core build machine with
one busy process beside it, preprocessing a 1080p frame with torch's default two threads took
4.8 ms at the median but 32 ms at the 90th percentile; with one thread, 4.2 ms and 11 ms, and
one thread was no slower on the quiet machine either (3.3 against 3.8 ms). Switching the
thread count back and forth around one step, as the preprocessing once did, gave the same
32 ms stalls at every switch. So:

- torch: the engine sets its intra-op threads once, on the thread that runs it (OpenMP keeps
  the count per calling thread), to ``EngineOptions.cpu_threads``: 1 by default (node
  parameter ``cpu_threads``, ``ground_bag --cpu-threads``). More threads help only a large
  model on an otherwise idle CPU. Preprocessing and decoding share that setting.
- OpenCV (JPEG and PNG decoding, drawing): one thread, set when it is first imported here.
- OpenMP's wait policy: PASSIVE (threads sleep at barriers instead of spinning on cores other
  processes need), set by the command-line entry points before torch loads, unless the
  environment says otherwise.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_CPU_THREADS = 1
_opencv: Any = None


def quiet_openmp() -> None:
    """Ask OpenMP to sleep rather than spin at barriers; call before torch is imported."""
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def use_cpu_threads(count: int) -> None:
    """Give the calling thread's torch work ``count`` intra-op threads (0: leave as is)."""
    if count <= 0:
        return
    import torch
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def opencv() -> Any:
    """Import OpenCV with one thread of its own (its ops here are small, per frame)."""
    global _opencv
    if _opencv is None:
        import cv2
        cv2.setNumThreads(1)
        _opencv = cv2
    return _opencv
