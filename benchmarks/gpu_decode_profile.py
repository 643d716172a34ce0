#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Where a decoded token's time goes: the CUDA-graph step alone, and the loops around it.

Full-size random KOSMOS-2 (``Kosmos2Config()``, float16) on the GPU, batch 1, fixed work. It
prints milliseconds per decoded token for:

- ``floor``: the decoder step's CUDA graph replayed back to back, nothing else (the
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
from kosmos_ros.images import frame_from_array  # noqa: E402
from kosmos_ros.model.engine import EngineOptions, GroundingEngine  # noqa: E402
from kosmos_ros.testing.samples import load_photo  # noqa: E402

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


VARIANTS = {
    'plain': {},
    'fused_qkv': {'fuse_qkv': True},
    'fused_qkv+compile': {'fuse_qkv': True, 'compile_step': True},
    'compile': {'compile_step': True},
}


def same_as(engine: GroundingEngine, frames, expected: list[str]) -> int:
    """How many single-query texts (location tokens included) equal ``expected``."""
    got = [engine.run([(encoded, query)])[0].raw_text
           for encoded in engine.encode(frames) for query in QUERIES]
    return sum(a == b for a, b in zip(got, expected))


QUERIES = [Query(Task.CAPTION), Query(Task.FIND, 'the animal'), Query(Task.DETAILED_CAPTION),
           Query(Task.QUESTION, 'What is in the picture?')]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='results/gpu_decode_profile.json')
    parser.add_argument('--cpu-smoke', action='store_true',
                        help='run the same code on the CPU with the tiny model')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--variants', nargs='*', default=list(VARIANTS),
                        help=f'decode-step variants to time ({", ".join(VARIANTS)})')
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print('no CUDA device: nothing to profile (use --cpu-smoke to check the script)')
        return 1
    device = torch.device('cpu' if args.cpu_smoke else 'cuda')
    tmp = Path(tempfile.mkdtemp())
    tiny = build_tiny(tmp)
    processor = load_processor(tiny)
    if args.cpu_smoke:
        from kosmos_ros.model.loading import load_model, ModelOptions
        loaded = load_model(ModelOptions(model=str(tiny), local_files_only=True, device='cpu'))
        decoder = 'static'
    else:
        loaded = wrap_loaded(build_full_size(torch.float16, device), processor, device,
                             torch.float16, 'random Kosmos2Config()')
        decoder = 'cuda_graph'
    frames = [frame_from_array(load_photo(n)) for n in ('coffee', 'astronaut')]
    report: dict[str, object] = {
        'device': torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu',
        'torch': torch.__version__, 'dtype': str(loaded.dtype).replace('torch.', ''),
        'rows': {}}
    bandwidth = measure_bandwidth(device)
    weight_bytes = decode_weight_bytes(loaded.model)
    bound = weight_bytes / bandwidth * 1e3
    report['bound_ms_per_token'] = bound
    nominal = nominal_bandwidth(str(report['device']))
    if nominal:
        report['bound_nominal_ms_per_token'] = weight_bytes / nominal * 1e3
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, float]] = report['rows']  # type: ignore[assignment]
    print(f'device {report["device"]}, torch {report["torch"]}; {report["dtype"]}, batch 1, '
          f'{LONG} vs {SHORT} tokens, median of {args.reps}; bound {bound:.3f} ms/token',
          flush=True)
    print(f'{"variant":<20} {"loop":<7} {"first s":>8} {"ms/token":>9} {"tok/s":>8} '
          f'{"x bound":>8} {"same":>6}', flush=True)

    def record(variant: str, loop: str, first_s: float, ms: float, same: str) -> None:
        rows[f'{variant}/{loop}'] = {'first_s': first_s, 'ms_per_token': ms, 'same': same}
        print(f'{variant:<20} {loop:<7} {first_s:>8.1f} {ms:>9.3f} {1e3 / ms:>8.1f} '
              f'{ms / bound:>8.2f} {same:>6}', flush=True)
        out.write_text(json.dumps(report, indent=2))

    dynamic = GroundingEngine(loaded, EngineOptions(max_new_tokens=LONG, min_new_tokens=LONG,
                                                    decoder='dynamic'))
    expected = [dynamic.run([(encoded, query)])[0].raw_text
                for encoded in dynamic.encode(frames) for query in QUERIES]
    record('transformers', 'dynamic', 0.0, ms_per_token(dynamic, frames[0], args.reps),
           f'{len(expected)}/{len(expected)}')
    for variant in args.variants:
        engine = GroundingEngine(loaded, EngineOptions(
            max_new_tokens=LONG, min_new_tokens=LONG, decoder=decoder, **VARIANTS[variant]))
        started = time.perf_counter()
        engine.ground(frames[0], QUERIES[0])  # compiles and captures
        first = time.perf_counter() - started
        ms = ms_per_token(engine, frames[0], args.reps)
        same = same_as(engine, frames, expected)
        record(variant, 'device', first, ms, f'{same}/{len(expected)}')
        if not VARIANTS[variant].get('compile_step'):
            floor = graph_floor(engine, device, 200 if device.type == 'cuda' else 5)
            record(variant, 'floor', 0.0, floor, '-')
            host = engine.with_options(logits_processors=(identity,))
            record(variant, 'host', 0.0, ms_per_token(host, frames[0], args.reps),
                   f'{same_as(host, frames, expected)}/{len(expected)}')
    print('loop: device = token choice in the graph; host = one read per token; floor = '
          "the step graph replayed alone; same = texts equal to transformers' (of 8)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
