# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which workers a run gets: this process, or Ray actors (``--workers``)."""

from __future__ import annotations

from typing import Any, Callable

from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.options import WorkerSpec
from kosmos_ros.corpus.ray_pool import RayPool
from kosmos_ros.corpus.workers import LocalPool


def auto_workers(spec: WorkerSpec | None, address: str | None) -> int | None:
    """Return what ``--workers auto`` means here: 0 (this process) or None (one per GPU).

    Ray helps only with several inference workers: a cluster (``address``), or this machine's
    GPUs when it has two or more and the model may run on CUDA. One GPU, or none, grounds in
    this process: starting Ray for one worker only costs its start-up (about 15 s here).
    """
    if address is not None:
        return None
    device = str(getattr(getattr(spec, 'model', None), 'device', 'auto')).lower()
    if spec is None or not (device == 'auto' or device.startswith('cuda')):
        return 0
    import torch

    return None if torch.cuda.is_available() and torch.cuda.device_count() > 1 else 0


def open_pool(spec: WorkerSpec | None, workers: int | None, address: str | None,
              engine: Any = None, on_status: Callable[[str], None] | None = None,
              auto: bool = False) -> Any:
    """Return the workers: in this process for ``workers`` 0, else on Ray (None: one per GPU).

    With ``auto`` (``--workers auto``), ``workers`` None is first decided by
    :func:`auto_workers`.
    """
    if auto and workers is None:
        workers = auto_workers(spec, address)
    if workers == 0:
        return LocalPool(spec, engine)
    if spec is None:
        raise CorpusError('Ray workers load their own engine: give a WorkerSpec')
    return RayPool(spec, workers, address, on_status)
