# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""On a CUDA machine, check that the static and CUDA-graph decoders give the reference tokens.

Run with only the core package on the path (no ROS needed):
    PYTHONPATH=kosmos_ros python benchmarks/gpu_correctness.py [--out results/gpu_correctness.json]

1. Tiny random model in float32 on the GPU: every decoder ('dynamic', 'static', 'cuda_graph')
   must equal the reference ``generate`` token for token, one at a time and batched.
2. Full-size random architecture (Kosmos2Config(), 1.66 B parameters) in float16: tokens of
   'cuda_graph' against 'dynamic' for several queries, and milliseconds per decoded token.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import tempfile
import time

import torch

from kosmos_ros.datatypes import PixelBox, Query, Task
from kosmos_ros.images import frame_from_array
from kosmos_ros.model.engine import EngineOptions, GroundingEngine
from kosmos_ros.model.loading import LoadedModel, ModelOptions
from kosmos_ros.model.prompts import build_prompt
from kosmos_ros.testing.samples import load_photo
from kosmos_ros.testing.tiny_model import build_tiny_model

DEVICE = 'cuda'
DECODERS = ('dynamic', 'static', 'cuda_graph')
QUERIES = [Query(Task.CAPTION), Query(Task.FIND, 'the animal'),
           Query(Task.QUESTION, 'What is [this]?', (PixelBox(20, 30, 200, 220),)),
           Query(Task.DETAILED_CAPTION)]


def reference_text(processor, model, image, query, new_tokens):
    """Run the model card pipeline; return the text after </image>, tokens included."""
    h, w = image.shape[:2]
    prompt = build_prompt(query, w, h)
    bboxes = None
    if query.regions:
        r = query.regions[0]
        bboxes = [(r.x1 / w, r.y1 / h, r.x2 / w, r.y2 / h)]
        prompt = prompt.split('<object>')[0] + prompt.split('</object>', 1)[1]
    inputs = processor(text=prompt, images=image, bboxes=bboxes, return_tensors='pt').to(DEVICE)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens)
    text = processor.batch_decode(out, skip_special_tokens=True)[0]
    return processor.post_process_generation(text, cleanup_and_extract=False)


def engine_tokens(engine, frames, queries, batched):
    encoded = engine.encode(frames)
    pairs = [(e, q) for e in encoded for q in queries]
    if batched:
        return [r.raw_text for r in engine.with_options(max_batch_size=len(pairs)).run(pairs)]
    return [engine.run([p])[0].raw_text for p in pairs]


def tiny_check(report):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    folder = build_tiny_model(Path(tempfile.mkdtemp()) / 'tiny')
    options = ModelOptions(model=str(folder), device=DEVICE, dtype='float32',
                           local_files_only=True)
    base = GroundingEngine.load(options, EngineOptions(max_new_tokens=24))
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).to(DEVICE).eval()
    images = [load_photo(n) for n in ('coffee', 'chelsea', 'rocket')]
    frames = [frame_from_array(i) for i in images]
    expected = [reference_text(processor, model, image, q, 24)
                for image in images for q in QUERIES]
    for decoder in DECODERS:
        engine = base.with_options(decoder=decoder)
        for batched in (False, True):
            got = engine_tokens(engine, frames, QUERIES, batched)
            same = sum(a == b for a, b in zip(got, expected))
            key = f'tiny_float32_{decoder}_{"batched" if batched else "single"}'
            report[key] = f'{same}/{len(got)} equal to reference'
            print(f'{key}: {report[key]}', flush=True)


def full_size_check(report):
    from transformers import AutoProcessor, Kosmos2Config, Kosmos2ForConditionalGeneration
    folder = build_tiny_model(Path(tempfile.mkdtemp()) / 'proc')
    processor = AutoProcessor.from_pretrained(folder)
    torch.manual_seed(0)
    started = time.perf_counter()
    config = Kosmos2Config() if DEVICE == 'cuda' else Kosmos2Config(
        text_config=dict(layers=2), vision_config=dict(num_hidden_layers=2))
    with torch.device(DEVICE):
        model = Kosmos2ForConditionalGeneration(config).to(torch.float16).eval()
    print(f'full-size random model built in {time.perf_counter() - started:.1f} s', flush=True)
    loaded = LoadedModel(model, processor, torch.device(DEVICE), torch.float16,
                         ModelOptions(model='random-full-size', device=DEVICE, dtype='float16'))
    frames = [frame_from_array(load_photo(n)) for n in ('coffee', 'astronaut')]
    results = {}
    for decoder in ('dynamic', DECODERS[-1]):
        engine = GroundingEngine(loaded, EngineOptions(max_new_tokens=32, min_new_tokens=32,
                                                       decoder=decoder))
        engine_tokens(engine, frames[:1], QUERIES[:1], False)  # warm-up, graph capture
        results[decoder] = engine_tokens(engine, frames, QUERIES, True)
        timings = []
        for _ in range(3):
            encoded = engine.encode(frames[:1])[0]
            short = engine.with_options(max_new_tokens=2, min_new_tokens=2).run(
                [(encoded, QUERIES[0])])[0].timings.generate
            long = engine.run([(encoded, QUERIES[0])])[0].timings.generate
            timings.append((long - short) / 30 * 1e3)
        timings.sort()
        report[f'full_float16_{decoder}_ms_per_token'] = round(timings[1], 3)
        print(f'full-size float16 {decoder}: {timings[1]:.2f} ms per decoded token', flush=True)
    same = sum(a == b for a, b in zip(results['dynamic'], results[DECODERS[-1]]))
    report['full_float16_cuda_graph_vs_dynamic'] = \
        f'{same}/{len(results["dynamic"])} identical texts'
    key = 'full_float16_cuda_graph_vs_dynamic'
    print(f'full-size float16 cuda_graph vs dynamic: {report[key]}', flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='results/gpu_correctness.json')
    parser.add_argument('--cpu-smoke', action='store_true',
                        help='check the script itself on the CPU (no CUDA graphs, 2 layers)')
    args = parser.parse_args()
    global DEVICE, DECODERS
    if args.cpu_smoke:
        DEVICE, DECODERS = 'cpu', ('dynamic', 'static')
    elif not torch.cuda.is_available():
        print('no CUDA device: nothing to check')
        return 1
    report = {'device': torch.cuda.get_device_name(0) if DEVICE == 'cuda' else 'cpu',
              'torch': torch.__version__}
    import transformers
    report['transformers'] = transformers.__version__
    print(report, flush=True)
    tiny_check(report)
    full_size_check(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
