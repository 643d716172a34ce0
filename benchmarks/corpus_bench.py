#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Corpus throughput: the same generated corpus grounded with 1 and with 2 workers, one run.

The corpus: ``--bags`` sample bags (``make_sample_bag``), each ``--frames`` 320x240 frames of
its own photograph. Each worker count grounds it into a fresh run folder with the tiny model
(a fixed number of generated tokens, so every frame is the same work): 0 is this process
without Ray, 1 and 2 are Ray actors on the embedded local Ray. Throughput is admitted frames
over the grounding time (first task handed out to last result); Ray's start-up, the hashing,
planning and model loading are reported apart, and so are the time to the first grounded chunk
and the driver's own CPU per grounded frame (with Ray, the actors ground and write the bags;
the driver hands out chunks and keeps the run folder's state). The indexes of all worker
counts must be equal (box scores to float rounding), or the row says so.

Usage: tools/in-env python benchmarks/corpus_bench.py [--bags 4] [--frames 24] [--tokens 16]
(also row h of ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import resource
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')


def make_corpus(folder: Path, bags: int, frames: int) -> Path:
    from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
    from kosmos_ros.testing.samples import PHOTO_NAMES

    for i in range(bags):
        photo = PHOTO_NAMES[i % len(PHOTO_NAMES)]
        make_sample_bag(folder / f'robot{i % 2}' / f'bag{i:02d}_{photo}',
                        SampleSpec(duration_s=frames / 10.0, rate_hz=10.0, width=320,
                                   height=240, photos=(photo,)))
    return folder


def same_index(a: Path, b: Path) -> bool:
    from kosmos_ros.corpus.index import read_table

    ta = read_table(a).drop(['latency_s', 'score', 'model']).to_pylist()
    tb = read_table(b).drop(['latency_s', 'score', 'model']).to_pylist()
    sa = read_table(a)['score'].to_pylist()
    sb = read_table(b)['score'].to_pylist()
    return ta == tb and all((x is None and y is None) or
                            (x is not None and y is not None and
                             math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-12))
                            for x, y in zip(sa, sb))


def _driver_cpu() -> float:
    """Return this process's CPU time so far (user and system, its threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_corpus(model_dir: Path, bags: int = 4, frames: int = 24, tokens: int = 16,
                 workers: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    """Ground one generated corpus with each worker count; return the figures."""
    from kosmos_ros.corpus.options import CorpusOptions, WorkerSpec
    from kosmos_ros.corpus.run import run_corpus
    from kosmos_ros.model.engine import EngineOptions
    from kosmos_ros.model.loading import ModelOptions

    spec = WorkerSpec(ModelOptions(model=str(model_dir), local_files_only=True, device='cpu'),
                      EngineOptions(max_new_tokens=tokens, min_new_tokens=tokens,
                                    cpu_threads=1))
    out: dict[str, Any] = {'bags': bags, 'frames_per_bag': frames, 'tokens': tokens,
                           'cpus': os.cpu_count(), 'runs': {}}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / 'corpus', bags, frames)
        folders = {}
        for n in workers:
            folders[n] = Path(tmp) / f'run{n}'
            first: list[float] = []
            started = time.monotonic()
            cpu = _driver_cpu()
            summary = run_corpus(CorpusOptions(inputs=(str(corpus),), output=folders[n],
                                               workers=n, chunk_frames=8, batch_size=4),
                                 spec, on_chunk=lambda _: first.append(time.monotonic()))
            wall = time.monotonic() - started
            driver_cpu = _driver_cpu() - cpu
            frames = summary.frames_now
            grounding_cpu = summary.grounding_cpu_s
            out['runs'][n] = {'frames': frames, 'ground_s': summary.ground_s,
                              'fps': frames / summary.ground_s,
                              'wall_s': wall, 'setup_s': wall - summary.ground_s,
                              'first_chunk_s': first[0] - started if first else None,
                              # The driver's own CPU (this process) per grounded frame; with
                              # Ray it only hands out chunks and renames what workers wrote.
                              'driver_cpu_per_frame_s': driver_cpu / frames if frames else None,
                              # The same over the grounding phase alone (start-up excluded).
                              'grounding_cpu_per_frame_s': grounding_cpu / frames
                              if frames else None,
                              'writing_cpu_s': summary.writing_cpu_s,
                              'per_worker': dict(summary.per_worker)}
        first = folders[workers[0]]
        out['same_index'] = all(same_index(first, folders[n]) for n in workers[1:])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bags', type=int, default=4)
    parser.add_argument('--frames', type=int, default=24)
    parser.add_argument('--tokens', type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_bench import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        figures = bench_corpus(build_tiny(tmp), args.bags, args.frames, args.tokens)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
