#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Where a decoded token's time goes: the CUDA-graph step alone, and the loops around it.

Full-size random KOSMOS-2 (``Kosmos2Config()``, float16) on the GPU, batch 1, fixed work. It
prints milliseconds per decoded token for:

- ``graph floor``: the decoder step's CUDA graph replayed back to back, nothing else (the
  fastest any loop around this graph can go);
- ``device loop``: the engine's ``cuda_graph`` decoder, token choice on the device;
- ``host loop``: the same graph driven by the host loop (forced by a logits processor that
  changes nothing, as a user-supplied processor would), one device-to-host read per token;
- ``dynamic``: the engine over transformers' own forward pass;

and the memory-bandwidth bound (text-model weight bytes / measured copy bandwidth), so the
gap between the bound, the graph and the loops is visible in one run.

Usage:
    PYTHONPATH=kosmos_ros python3 benchmarks/gpu_decode_profile.py [--out results/...json]
    PYTHONPATH=kosmos_ros python3 benchmarks/gpu_decode_profile.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_bench import (build_full_size, build_tiny, decode_weight_bytes,  # noqa: E402, I100
                       load_processor, measure_bandwidth, nominal_bandwidth, sync,
                       wrap_loaded)

from kosmos_ros.datatypes import Query, Task  # noqa: E402
from kosmos_ros.engine import EngineOptions, GroundingEngine  # noqa: E402
from kosmos_ros.images import frame_from_array  # noqa: E402
from kosmos_ros.samples import load_photo  # noqa: E402

SHORT, LONG = 2, 34


def identity(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    return scores


def ms_per_token(engine: GroundingEngine, frame, reps: int) -> float:
    """Median of (generate time of LONG tokens - of SHORT tokens) / (LONG - SHORT)."""
    short = engine.with_options(max_new_tokens=SHORT, min_new_tokens=SHORT)
    encoded = engine.encode([frame])[0]
    query = Query(Task.CAPTION)
    for _ in range(2):  # warm-up: allocation, graph capture
        engine.run([(encoded, query)])
        short.run([(encoded, query)])
    values = []
    for _ in range(reps):
        a = short.run([(encoded, query)])[0].timings.generate
        b = engine.run([(encoded, query)])[0].timings.generate
        values.append((b - a) / (LONG - SHORT) * 1e3)
    return statistics.median(values)


def graph_floor(engine: GroundingEngine, device: torch.device, reps: int) -> float:
    """Milliseconds per replay of the decoder step's graph (or eager step on the CPU)."""
    step = engine._static_step(1, 64 + LONG)
    tokens = torch.tensor([5], device=device)
    positions = torch.tensor([3], device=device)
    with torch.inference_mode():
        for _ in range(3):
            step(tokens, positions, 10)
        sync(device)
        started = time.perf_counter()
        for _ in range(reps):
            if step.graph is not None:
                step.graph.replay()
            else:
                step(tokens, positions, 10)
        sync(device)
    return (time.perf_counter() - started) / reps * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='results/gpu_decode_profile.json')
    parser.add_argument('--cpu-smoke', action='store_true',
                        help='run the same code on the CPU with the tiny model')
    parser.add_argument('--reps', type=int, default=5)
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print('no CUDA device: nothing to profile (use --cpu-smoke to check the script)')
        return 1
    device = torch.device('cpu' if args.cpu_smoke else 'cuda')
    tmp = Path(tempfile.mkdtemp())
    tiny = build_tiny(tmp)
    processor = load_processor(tiny)
    if args.cpu_smoke:
        from kosmos_ros.loading import load_model, ModelOptions
        loaded = load_model(ModelOptions(model=str(tiny), local_files_only=True, device='cpu'))
        decoders = {'device loop': 'static', 'dynamic': 'dynamic'}
    else:
        loaded = wrap_loaded(build_full_size(torch.float16, device), processor, device,
                             torch.float16, 'random Kosmos2Config()')
        decoders = {'device loop': 'cuda_graph', 'dynamic': 'dynamic'}
    frame = frame_from_array(load_photo('coffee'))
    report: dict[str, object] = {
        'device': torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu',
        'torch': torch.__version__}
    bandwidth = measure_bandwidth(device)
    weight_bytes = decode_weight_bytes(loaded.model)
    report['bound_ms_per_token'] = weight_bytes / bandwidth * 1e3
    nominal = nominal_bandwidth(str(report['device']))
    if nominal:
        report['bound_nominal_ms_per_token'] = weight_bytes / nominal * 1e3
    base = GroundingEngine(loaded, EngineOptions(max_new_tokens=LONG, min_new_tokens=LONG,
                                                 decoder=decoders['device loop']))
    report['graph_floor_ms'] = graph_floor(base, device, 200 if device.type == 'cuda' else 5)
    rows = {'device loop': base,
            'host loop': base.with_options(logits_processors=(identity,)),
            'dynamic': base.with_options(decoder=decoders['dynamic'])}
    for name, engine in rows.items():
        report[f'{name}_ms_per_token'] = ms_per_token(engine, frame, args.reps)
    texts = {name: engine.ground(frame, Query(Task.CAPTION)).raw_text
             for name, engine in rows.items()}
    report['same_tokens_all_loops'] = len(set(texts.values())) == 1
    bound = report['bound_ms_per_token']
    dtype = str(loaded.dtype).replace('torch.', '')
    print(f'device {report["device"]}, torch {report["torch"]}; {dtype}, batch 1, '
          f'{LONG} vs {SHORT} tokens, median of {args.reps}')
    print(f'{"what":<16} {"ms/token":>9} {"tok/s":>8} {"x bound":>8}')
    for name, key in (('bandwidth bound', 'bound_ms_per_token'),
                      ('graph floor', 'graph_floor_ms'),
                      ('device loop', 'device loop_ms_per_token'),
                      ('host loop', 'host loop_ms_per_token'),
                      ('dynamic', 'dynamic_ms_per_token')):
        ms = float(report[key])
        print(f'{name:<16} {ms:>9.3f} {1e3 / ms:>8.1f} {ms / bound:>8.2f}')
    print(f'same tokens from every loop: {report["same_tokens_all_loops"]}')
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
