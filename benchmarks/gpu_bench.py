#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""GPU benchmark: the reference pipeline against the project's engine, full-size KOSMOS-2.

Self-contained: it needs torch, transformers and the ``kosmos_ros`` core package
(``PYTHONPATH=kosmos_ros``), never rclpy, the network or a model download. It builds the
released architecture (``Kosmos2Config()`` defaults, 1.66 B parameters) with random weights
directly on the GPU, once per dtype; the processor (tokenizer and image processor) comes from
``kosmos_ros.testing.tiny_model``'s builder with the tokenizer shipped in ``kosmos_ros/test/data``.

Per configuration (float16, bfloat16; 8-bit and 4-bit through bitsandbytes, int8 and int4
weight-only through torchao, each when importable) and per pipeline (reference:
``processor(...)`` + ``model.generate``; engine: ``GroundingEngine``, once per value of
``EngineOptions.decoder`` if that field exists):

- time to first token: end-to-end latency of a 1-token grounded caption;
- decode tokens/s: 29 / (latency of 30 tokens - latency of 1 token), batch 1;
- end-to-end latency of a grounded caption (30 new tokens) and a find-phrase query (10);
- throughput (images/s) with 1, 2 and 4 camera frames in one batch (30-token captions);
- peak GPU memory (``torch.cuda.max_memory_allocated``) over the pipeline's runs;
- the memory-bandwidth bound of decoding: bytes of the text model's weights read per token
  divided by the bandwidth measured by a device-to-device copy (and the card's nominal
  bandwidth when its name is known).

Every generation is fixed work: ``min_new_tokens = max_new_tokens``.

Usage:
    PYTHONPATH=kosmos_ros python3 benchmarks/gpu_bench.py [--out results/gpu_bench.json]
    PYTHONPATH=kosmos_ros python3 benchmarks/gpu_bench.py --smoke   # CPU, tiny model, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
from pathlib import Path
import platform
import statistics
import sys
import tempfile
import time
import typing
from typing import Any, Callable, Sequence

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kosmos_ros.datatypes import Query, Task, TORCHAO_QUANTIZATIONS  # noqa: E402
from kosmos_ros.images import frame_from_array  # noqa: E402
from kosmos_ros.model.engine import EngineOptions, GroundingEngine  # noqa: E402
from kosmos_ros.model.loading import load_model, LoadedModel, ModelOptions  # noqa: E402
from kosmos_ros.model.prompts import build_prompt  # noqa: E402
from kosmos_ros.testing.samples import load_photo  # noqa: E402

CAPTION_TOKENS = 30
FIND_TOKENS = 10
CAMERAS = (1, 2, 4)
FRAME_SIZE = (640, 480)
PHOTOS = ('coffee', 'chelsea', 'astronaut', 'motorcycle_left')
FIND_PHRASE = 'a cup of coffee'
# Nominal memory bandwidth in TB/s by GPU name (first match wins; more specific names first).
NOMINAL_TBPS = (
    ('H200', 4.8), ('H100 NVL', 3.9), ('H100 PCIe', 2.0), ('H100', 3.35), ('H800', 3.35),
    ('GH200', 4.0), ('B200', 8.0), ('A100-SXM4-80GB', 2.039), ('A100 80GB PCIe', 1.935),
    ('A100', 1.555), ('L40S', 0.864), ('L40', 0.864), ('L4', 0.3), ('A10G', 0.6),
    ('A10', 0.6), ('RTX 4090', 1.008), ('RTX 3090', 0.936), ('V100', 0.9), ('T4', 0.32),
)
# Published memory bandwidth (GB/s) of NVIDIA Jetson modules, for decode bounds on paper.
EDGE_GBPS = (('Jetson AGX Orin 64GB', 204.8), ('Jetson AGX Orin 32GB', 204.8),
             ('Jetson Orin NX 16GB', 102.4), ('Jetson Orin Nano 8GB', 68.0),
             ('Jetson Orin Nano 4GB', 34.0))
# Bytes per text-model weight read by one decoding step, by configuration: float16/bfloat16
# weights; int8 weight-only (one byte per Linear weight, a float16 scale per output channel);
# int4 weight-only (half a byte, a bfloat16 scale and zero point per group of 128 weights).
# Non-Linear tensors (layer norms, biases) stay in the float dtype.
WEIGHT_FORMATS = (('float16', 2.0, 0.0), ('bfloat16', 2.0, 0.0), ('int8 weight-only', 1.0, 2.0),
                  ('int4 weight-only g128', 0.5, 4.0 / 128))


# -- building blocks shared with run_benchmarks.py -------------------------------------------

def tokenizer_model_path() -> Path:
    """Return the KOSMOS-2 SentencePiece model shipped in kosmos_ros/test/data."""
    import kosmos_ros
    from kosmos_ros.testing.tiny_model import TOKENIZER_FILE
    path = (Path(kosmos_ros.__file__).resolve().parent.parent / 'test' / 'data'
            / 'kosmos2_tokenizer' / TOKENIZER_FILE)
    if path.is_file():
        return path
    from kosmos_ros.testing.tiny_model import find_tokenizer_model
    return find_tokenizer_model()


def build_tiny(workdir: str | Path) -> Path:
    """Save the tiny random model and the real processor (``kosmos_ros.testing.tiny_model``)."""
    from kosmos_ros.testing.tiny_model import build_tiny_model
    return build_tiny_model(Path(workdir) / 'tiny_kosmos2', tokenizer_model=tokenizer_model_path())


def load_processor(model_dir: str | Path) -> Any:
    from transformers import AutoProcessor
    return AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)


def build_full_size(dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> Any:
    """Create the released KOSMOS-2 architecture with random weights on ``device``."""
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration
    torch.manual_seed(seed)
    with torch.device(device):
        model = Kosmos2ForConditionalGeneration._from_config(
            Kosmos2Config(), dtype=dtype, attn_implementation='sdpa')
    return model.eval()


def wrap_loaded(model: Any, processor: Any, device: torch.device, dtype: torch.dtype,
                label: str, quantization: str = 'none') -> LoadedModel:
    dtype_name = str(dtype).replace('torch.', '')
    return LoadedModel(model=model, processor=processor, device=torch.device(device),
                       dtype=dtype, options=ModelOptions(model=label, dtype=dtype_name,
                                                         device=str(device),
                                                         quantization=quantization))


def camera_frame(name: str, size: tuple[int, int]) -> np.ndarray:
    """Return a photograph centre-cropped to the aspect of ``size`` and resized (RGB)."""
    import cv2
    photo = load_photo(name)
    width, height = size
    h, w = photo.shape[:2]
    if w * height > h * width:
        crop = int(round(h * width / height))
        photo = photo[:, (w - crop) // 2:(w - crop) // 2 + crop]
    else:
        crop = int(round(w * height / width))
        photo = photo[(h - crop) // 2:(h - crop) // 2 + crop]
    ch, cw = photo.shape[:2]
    interpolation = cv2.INTER_AREA if cw > width else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(photo, (width, height), interpolation=interpolation))


def reference_generate(processor: Any, model: Any, images: Sequence[np.ndarray], prompt: str,
                       new_tokens: int, device: torch.device, dtype: torch.dtype) -> Any:
    """Run the model card's pipeline: processor, then generate (fixed number of tokens)."""
    batch = len(images)
    text = prompt if batch == 1 else [prompt] * batch
    imgs = images[0] if batch == 1 else list(images)
    inputs = processor(text=text, images=imgs, return_tensors='pt')
    inputs = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
              for k, v in inputs.items()}
    with torch.inference_mode():
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, num_beams=1)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], reps: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of ``reps`` runs of ``fn`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


# -- hardware figures ------------------------------------------------------------------------

def measure_bandwidth(device: torch.device) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read and written."""
    n = (1 << 30) if device.type == 'cuda' else (1 << 26)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    reps = 20 if device.type == 'cuda' else 5
    started = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    elapsed = time.perf_counter() - started
    del src, dst
    return 2.0 * n * reps / elapsed


def nominal_bandwidth(name: str) -> float | None:
    for key, tbps in NOMINAL_TBPS:
        if key.lower() in name.lower():
            return tbps * 1e12
    return None


def decode_weight_bytes(model: Any) -> int:
    """Bytes of weights one decoding step reads: every text-model tensor once.

    The token embedding is tied to the output projection, which reads all of it; a step reads
    no vision weights. Quantized tensors count their stored (packed) size: bitsandbytes'
    parameters as stored, torchao's weight subclasses as the sum of their inner tensors. When
    quantization unties the output projection from the embedding (torchao), a step reads one
    row of the embedding, which is left out.
    """
    text = model.text_model
    embedding = text.get_input_embeddings().weight
    head = text.get_output_embeddings()
    untied = head is not None and head.weight is not embedding
    seen, total = set(), 0
    for _, param in text.named_parameters():
        if id(param) in seen or (untied and param is embedding):
            continue
        seen.add(id(param))
        total += _stored_bytes(param)
    return total


def _stored_bytes(tensor: Any) -> int:
    """Bytes a tensor holds; a tensor subclass (torchao) counts its inner tensors."""
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and \
            hasattr(tensor, '__tensor_flatten__'):
        names, _ = tensor.__tensor_flatten__()
        return sum(_stored_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def paper_bounds() -> list[dict[str, Any]]:
    """Print and return decode bounds on paper, for the H200 and Jetson modules.

    The released text model's weight bytes per token, per format, over each device's published
    memory bandwidth. Nothing is measured.
    """
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration
    with torch.device('meta'):  # shapes only: no memory, no weights
        text = Kosmos2ForConditionalGeneration(Kosmos2Config()).text_model
    seen, linear, rows_of_linear, other = set(), 0, 0, 0
    for module in text.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            linear += module.weight.numel()
            rows_of_linear += module.weight.shape[0]
    for param in text.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            other += param.numel()
    devices = [('H200 (nominal)', 4800.0)] + list(EDGE_GBPS)
    rows = []
    print(f'bounds on paper (not measured): text model {linear / 1e9:.3f} B Linear weights '
          f'(the output projection tied to the embedding counted once) + {other / 1e6:.1f} M '
          'others, all read once per decoded token; tokens/s = bandwidth / bytes per token')
    print(f'{"format":<24} {"GB/token":>9} ' + ' '.join(f'{d:>22}' for d, _ in devices))
    for name, per_weight, per_row_or_weight in WEIGHT_FORMATS:
        scales = per_row_or_weight * (rows_of_linear if per_weight == 1.0 else linear)
        per_token = linear * per_weight + scales + other * 2.0
        bounds = {device: gbps * 1e9 / per_token for device, gbps in devices}
        rows.append({'format': name, 'bytes_per_token': per_token, 'bound_tok_s': bounds})
        print(f'{name:<24} {per_token / 1e9:>9.3f} '
              + ' '.join(f'{bounds[d]:>18.0f} tok/s' for d, _ in devices))
    return rows


# -- the benchmark ---------------------------------------------------------------------------

def decoder_choices(requested: Sequence[str] | None) -> list[str | None]:
    """Values of ``EngineOptions.decoder`` to run; [None] when the field does not exist."""
    fields = {f.name: f for f in dataclasses.fields(EngineOptions)}
    if 'decoder' not in fields:
        if requested:
            print(f'note: EngineOptions has no decoder field; ignoring --decoders {requested}')
        return [None]
    if requested:
        return list(requested)
    import kosmos_ros.model.decoding as decoding_module
    import kosmos_ros.model.engine as engine_module
    for module in (engine_module, decoding_module):
        for name in ('DECODERS', 'DECODER_CHOICES', 'DECODER_NAMES'):
            values = getattr(module, name, None)
            if values:
                return list(values)
    try:
        hint = typing.get_type_hints(EngineOptions)['decoder']
        args = [a for a in typing.get_args(hint) if isinstance(a, str)]
        if typing.get_origin(hint) is typing.Literal and args:
            return args
    except (NameError, TypeError, KeyError):
        pass
    return [fields['decoder'].default]


@dataclasses.dataclass
class Setup:
    label: str
    dtype: torch.dtype
    quantization: str
    loaded: LoadedModel | None = None
    skipped: str | None = None


class SuppressEos:
    """Logits processor that forbids end-of-sequence: fixed work without min_new_tokens."""

    def __init__(self, eos_token_id: int):
        self.eos_token_id = int(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.eos_token_id] = -float('inf')
        return scores


def _engine(loaded: LoadedModel, tokens: int, decoder: str | None,
            suppress_eos: bool = False) -> GroundingEngine:
    # 'NAME+compile': decoder NAME with EngineOptions.compile_step (torch.compile'd step).
    name, _, flag = (decoder or '').partition('+')
    extra: dict[str, Any] = {} if decoder is None else {'decoder': name}
    if flag == 'compile':
        extra['compile_step'] = True
    if suppress_eos:
        eos = loaded.model.generation_config.eos_token_id
        extra['logits_processors'] = (SuppressEos(eos),)
    return GroundingEngine(loaded, EngineOptions(
        max_new_tokens=tokens, min_new_tokens=0 if suppress_eos else tokens, max_batch_size=8,
        **extra))


def fixed_work_mode(loaded: LoadedModel, frame: Any) -> tuple[bool, str | None]:
    """Check that the engine's min_new_tokens works here; else fall back to SuppressEos.

    Returns (suppress_eos, why). Both fix the number of generated tokens; the fallback adds one
    tiny logits processor per step.
    """
    engine = _engine(loaded, 2, 'dynamic' if 'decoder' in
                     {f.name for f in dataclasses.fields(EngineOptions)} else None)
    try:
        engine.ground(frame, Query(Task.CAPTION))
    except Exception as exc:  # the reason is reported with the results
        first = str(exc).strip().splitlines()[0][:240]
        return True, (f'EngineOptions.min_new_tokens failed on {loaded.device} '
                      f'({type(exc).__name__}: {first}); the engine rows forbid '
                      'end-of-sequence with a logits processor instead (same token count)')
    return False, None


def _figures(run_1: Callable, run_caption: Callable, run_find: Callable,
             run_batch: Callable[[int], Any], reps: int, warmup: int,
             device: torch.device) -> dict[str, Any]:
    ttft = median(timed(run_1, reps, warmup, device))
    caption = median(timed(run_caption, reps, warmup, device))
    find = median(timed(run_find, reps, warmup, device))
    throughput = {}
    for n in CAMERAS:
        seconds = median(timed(lambda n=n: run_batch(n), reps, min(warmup, 1), device))
        throughput[str(n)] = n / seconds
    decode = (CAPTION_TOKENS - 1) / (caption - ttft) if caption > ttft else float('nan')
    return {'ttft_ms': ttft * 1e3, 'caption_ms': caption * 1e3, 'find_ms': find * 1e3,
            'decode_tok_s': decode, 'images_per_s': throughput}


def bench_setup(setup: Setup, images: list[np.ndarray], decoders: list[str | None],
                args: argparse.Namespace, bandwidth: float,
                nominal: float | None) -> list[dict[str, Any]]:
    loaded = setup.loaded
    device, dtype = loaded.device, loaded.dtype
    processor, model = loaded.processor, loaded.model
    width, height = FRAME_SIZE
    caption_q, find_q = Query(Task.CAPTION), Query(Task.FIND, FIND_PHRASE)
    caption_p = build_prompt(caption_q, width, height)
    find_p = build_prompt(find_q, width, height)
    frames = [frame_from_array(img) for img in images]
    weight_bytes = decode_weight_bytes(model)
    common = {'config': setup.label, 'dtype': str(dtype).replace('torch.', ''),
              'quantization': setup.quantization, 'decode_weight_bytes': weight_bytes,
              'bound_tok_s': bandwidth / weight_bytes,
              'bound_nominal_tok_s': nominal / weight_bytes if nominal else None}
    rows = []
    nominal_note = (f', {nominal / weight_bytes:.0f} with the nominal bandwidth' if nominal
                    else '')
    print(f'{setup.label}: decoding reads {weight_bytes / 1e9:.3f} GB of weights per token; '
          f'bound {bandwidth / weight_bytes:.0f} tok/s with the measured bandwidth'
          f'{nominal_note} (batch 1)', flush=True)

    def peak_reset() -> None:
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    def peak() -> float | None:
        return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' \
            else None

    def ref(imgs, prompt, tokens):
        return reference_generate(processor, model, imgs, prompt, tokens, device, dtype)

    peak_reset()
    started = time.perf_counter()
    figures = _figures(lambda: ref(images[:1], caption_p, 1),
                       lambda: ref(images[:1], caption_p, CAPTION_TOKENS),
                       lambda: ref(images[:1], find_p, FIND_TOKENS),
                       lambda n: ref(images[:n], caption_p, CAPTION_TOKENS),
                       args.reps, args.warmup, device)
    out = ref(images[:1], caption_p, CAPTION_TOKENS)
    ref_text = processor.post_process_generation(
        processor.batch_decode(out, skip_special_tokens=True)[0])[0]
    rows.append({**common, 'pipeline': 'reference', 'decoder': None, **figures,
                 'peak_gib': peak(), 'seconds': time.perf_counter() - started})
    print_row(rows[-1])

    if args.fixed_work == 'suppress_eos':
        suppress_eos, why = True, 'forced by --fixed-work suppress_eos'
    elif args.fixed_work == 'min_new_tokens':
        suppress_eos, why = False, None
    else:
        suppress_eos, why = fixed_work_mode(loaded, frames[0])
    if why:
        print(f'{setup.label}: NOTE {why}', flush=True)
    measured: set[str] = set()
    for decoder in sorted(decoders, key=lambda d: d == 'auto'):  # 'auto' last: an alias
        try:
            base = _engine(loaded, CAPTION_TOKENS, decoder, suppress_eos)
        except ValueError as exc:  # e.g. cuda_graph on the CPU: the engine refuses it
            rows.append({**common, 'pipeline': 'engine', 'decoder': decoder,
                         'skipped': str(exc)})
            print_row(rows[-1])
            continue
        resolved = getattr(base, 'decoder', decoder)
        if getattr(base.options, 'compile_step', False):
            resolved = f'{resolved}+compile'
        if resolved != decoder and resolved in measured:
            rows.append({**common, 'pipeline': 'engine', 'decoder': decoder,
                         'skipped': f'resolves to {resolved} on this device and model '
                                    '(measured in its own row)', 'resolves_to': resolved})
            print_row(rows[-1])
            continue
        peak_reset()
        started = time.perf_counter()
        try:
            engines = {n: base.with_options(max_new_tokens=n,
                                            min_new_tokens=0 if suppress_eos else n)
                       for n in (1, FIND_TOKENS)}
            engines[CAPTION_TOKENS] = base
            figures = _figures(
                lambda: engines[1].ground(frames[0], caption_q),
                lambda: base.ground(frames[0], caption_q),
                lambda: engines[FIND_TOKENS].ground(frames[0], find_q),
                lambda n: base.run([(e, caption_q) for e in base.encode(frames[:n])]),
                args.reps, args.warmup, device)
            text = base.ground(frames[0], caption_q).text
            row = {**common, 'pipeline': 'engine', 'decoder': decoder, 'resolves_to': resolved,
                   'fixed_work': 'suppress_eos' if suppress_eos else 'min_new_tokens',
                   'fixed_work_note': why, **figures, 'peak_gib': peak(),
                   'same_caption_as_reference': text == ref_text,
                   'seconds': time.perf_counter() - started}
            measured.add(resolved)
        except Exception as exc:  # a decoder that fails here is reported; the others still run
            row = {**common, 'pipeline': 'engine', 'decoder': decoder,
                   'error': f'{type(exc).__name__}: {str(exc).strip()[:300]}'}
        rows.append(row)
        print_row(row)
        engines = base = None
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '-'
    return format(value, spec)


HEADER = (f'{"config":<16} {"pipeline":<10} {"decoder":<18} {"TTFT ms":>8} {"tok/s":>7} '
          f'{"bound":>7} {"%bound":>6} {"cap30 ms":>9} {"find10 ms":>9} {"peak GiB":>8} '
          f'{"img/s x1/x2/x4":>20}')


def print_row(row: dict[str, Any]) -> None:
    for key in ('error', 'skipped'):
        if key in row:
            print(f'{row["config"]:<16} {row["pipeline"]:<10} {str(row["decoder"]):<18} '
                  f'{key}: {row[key]}', flush=True)
            return
    share = row['decode_tok_s'] / row['bound_tok_s'] * 100 if row['bound_tok_s'] else None
    tput = '/'.join(_fmt(row['images_per_s'][str(n)], '.1f') for n in CAMERAS)
    print(f'{row["config"]:<16} {row["pipeline"]:<10} {str(row["decoder"]):<18} '
          f'{_fmt(row["ttft_ms"], ".1f"):>8} {_fmt(row["decode_tok_s"], ".1f"):>7} '
          f'{_fmt(row["bound_tok_s"], ".0f"):>7} {_fmt(share, ".1f"):>6} '
          f'{_fmt(row["caption_ms"], ".1f"):>9} {_fmt(row["find_ms"], ".1f"):>9} '
          f'{_fmt(row["peak_gib"], ".2f"):>8} {tput:>20}', flush=True)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration and decoder: engine against reference, and against the bound."""
    out = []
    refs = {r['config']: r for r in rows if r['pipeline'] == 'reference' and 'decode_tok_s' in r}
    for row in rows:
        if row['pipeline'] != 'engine' or 'decode_tok_s' not in row or \
                row['config'] not in refs:
            continue
        ref = refs[row['config']]
        speedup = row['decode_tok_s'] / ref['decode_tok_s']
        gap = row['bound_tok_s'] / row['decode_tok_s']
        nominal_gap = (row['bound_nominal_tok_s'] / row['decode_tok_s']
                       if row.get('bound_nominal_tok_s') else None)
        out.append({'config': row['config'], 'decoder': row['decoder'],
                    'decode_speedup_vs_reference': speedup, 'bound_over_measured': gap,
                    'nominal_bound_over_measured': nominal_gap,
                    'same_caption_as_reference': row.get('same_caption_as_reference'),
                    'caption_latency_ratio': ref['caption_ms'] / row['caption_ms'],
                    'goal_decode_3x_reference': speedup >= 3.0,
                    'goal_within_3x_of_bound': gap <= 3.0})
    return out


def _quant_skip_reason(quantization: str, device: torch.device, smoke: bool) -> str | None:
    if quantization in TORCHAO_QUANTIZATIONS:
        if smoke or device.type != 'cuda':
            return f'{quantization} (torchao) is benchmarked on CUDA; this run is on {device}'
        try:
            import torchao  # noqa: F401
        except Exception as exc:
            return f'torchao is not importable ({type(exc).__name__}: {exc})'
        return None
    if smoke or device.type != 'cuda':
        return f'{quantization} needs bitsandbytes on a CUDA device; this run is on {device}'
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA setup inside bitsandbytes
        return f'bitsandbytes is not importable ({type(exc).__name__}: {exc})'
    return None


def setup_list(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(label, dtype name, quantization) of each configuration, in run order."""
    setups = [(name, name, 'none') for name in args.dtypes]
    for quant in args.quantizations:  # torchao's int4 kernels compute in bfloat16
        dtype = 'bfloat16' if quant == 'int4' else 'float16'
        setups.append((f'{quant} ({dtype.replace("loat", "")})', dtype, quant))
    return setups


def load_setup(label: str, dtype_name: str, quantization: str, args: argparse.Namespace,
               device: torch.device, tmp: Path, tiny_dir: Path, processor: Any,
               checkpoint: dict[str, Path]) -> Setup:
    dtype = getattr(torch, dtype_name)
    setup = Setup(label, dtype, quantization)
    if quantization != 'none':
        reason = _quant_skip_reason(quantization, device, args.smoke)
        if reason:
            setup.skipped = reason
            return setup
        if 'float16' not in checkpoint:  # save once, quantize while loading, per setting
            path = tmp / 'full_size_float16'
            model = build_full_size(torch.float16, device)
            model.save_pretrained(path)
            processor.save_pretrained(path)
            del model
            gc.collect()
            torch.cuda.empty_cache()
            checkpoint['float16'] = path
        setup.loaded = load_model(ModelOptions(
            model=str(checkpoint['float16']), local_files_only=True, dtype=dtype_name,
            quantization=quantization, device=str(device)))
        return setup
    if args.smoke:
        setup.loaded = load_model(ModelOptions(model=str(tiny_dir), local_files_only=True,
                                               dtype=dtype_name, device=str(device)))
        return setup
    if dtype == torch.bfloat16 and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        setup.skipped = f'bfloat16 is not supported on {torch.cuda.get_device_name(device)}'
        return setup
    model = build_full_size(dtype, device)
    setup.loaded = wrap_loaded(model, processor, device, dtype, 'random Kosmos2Config()')
    return setup


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='results/gpu_bench.json', help='JSON output path')
    parser.add_argument('--smoke', action='store_true',
                        help='run everything on the CPU with the tiny model (seconds)')
    parser.add_argument('--dtypes', nargs='+', default=['float16', 'bfloat16'])
    parser.add_argument('--quantizations', nargs='*', default=['8bit', '4bit', 'int8', 'int4'],
                        help='8bit, 4bit (bitsandbytes), int8, int4 (torchao weight-only)')
    parser.add_argument('--decoders', nargs='*', default=None,
                        help='values of EngineOptions.decoder, NAME+compile for NAME with '
                        'compile_step (default: all it declares, and cuda_graph+compile)')
    parser.add_argument('--fixed-work', choices=('auto', 'min_new_tokens', 'suppress_eos'),
                        default='auto', help='how the engine generates a fixed token count '
                        '(auto: min_new_tokens, or suppress_eos where that fails)')
    parser.add_argument('--reps', type=int, default=None, help='timed runs (median)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed runs first')
    parser.add_argument('--paper-only', action='store_true',
                        help='print only the decode bounds on paper (H200 and Jetson modules; '
                        'no device needed)')
    parser.add_argument('--budget-s', type=float, default=260.0,
                        help='skip configurations that would start after this many seconds')
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.smoke else 3
    if args.warmup is None:
        args.warmup = 0 if args.smoke else 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.paper_only:
        paper_bounds()
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print('no CUDA device: run with --smoke to test the script on the CPU', file=sys.stderr)
        return 2
    device = torch.device('cpu' if args.smoke else 'cuda:0')
    import transformers
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        (platform.processor() or platform.machine())
    print(f'device {device} ({gpu}); torch {torch.__version__}, transformers '
          f'{transformers.__version__}' + ('; SMOKE: tiny model on the CPU' if args.smoke else ''))
    bandwidth = measure_bandwidth(device)
    nominal = nominal_bandwidth(gpu) if device.type == 'cuda' else None
    print(f'memory bandwidth: measured {bandwidth / 1e12:.3f} TB/s (device-to-device copy, '
          'read + write)' + (f'; nominal {nominal / 1e12:.2f} TB/s' if nominal else
                             '; nominal unknown for this device'))
    decoders = decoder_choices(args.decoders)
    if args.decoders is None and device.type == 'cuda' and \
            'compile_step' in {f.name for f in dataclasses.fields(EngineOptions)}:
        decoders.append('cuda_graph+compile')
    images = [camera_frame(name, FRAME_SIZE) for name in PHOTOS]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tiny_dir = build_tiny(tmp)
        processor = load_processor(tiny_dir)
        print(f'processor: {type(processor.image_processor).__name__}; decoders: {decoders}; '
              f'{args.reps} timed runs (median) after {args.warmup} warm-up')
        print(HEADER)
        checkpoint: dict[str, Path] = {}
        for label, dtype_name, quant in setup_list(args):
            elapsed = time.monotonic() - t_start
            if elapsed > args.budget_s:
                reason = f'time budget: {elapsed:.0f} s spent of {args.budget_s:.0f} s'
                skipped.append({'config': label, 'reason': reason})
                print(f'{label:<16} skipped: {reason}')
                continue
            try:
                setup = load_setup(label, dtype_name, quant, args, device, tmp, tiny_dir,
                                   processor, checkpoint)
            except Exception as exc:  # report the configuration, run the others
                setup = Setup(label, getattr(torch, dtype_name), quant,
                              skipped=f'could not build: {type(exc).__name__}: {exc}'[:400])
            if setup.skipped:
                skipped.append({'config': label, 'reason': setup.skipped})
                print(f'{label:<16} skipped: {setup.skipped}')
                continue
            try:
                rows.extend(bench_setup(setup, images, decoders, args, bandwidth, nominal))
            except Exception as exc:  # report the configuration, run the others
                reason = f'failed: {type(exc).__name__}: {str(exc).strip()[:300]}'
                skipped.append({'config': label, 'reason': reason})
                print(f'{label:<16} {reason}')
            setup.loaded.model = None
            setup = None
            gc.collect()
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    summary = summarize(rows)
    print()
    print('decode: engine vs reference (goal >= 3x) and bound / measured (goal <= 3x):')
    for item in summary:
        print(f'  {item["config"]:<10} decoder={str(item["decoder"]):<18} '
              f'speed-up {item["decode_speedup_vs_reference"]:.2f}x '
              f'[{"ok" if item["goal_decode_3x_reference"] else "short"}]   '
              f'bound/measured {item["bound_over_measured"]:.1f}x '
              f'[{"ok" if item["goal_within_3x_of_bound"] else "short"}]   '
              + (f'(nominal {item["nominal_bound_over_measured"]:.1f}x)   '
                 if item['nominal_bound_over_measured'] else '')
              + f'caption latency ref/engine {item["caption_latency_ratio"]:.2f}x   '
              f'same caption as reference: {item["same_caption_as_reference"]}')
    print()
    paper = paper_bounds()
    total = time.monotonic() - t_start
    print(f'total {total:.0f} s')
    report = {
        'meta': {'device': str(device), 'device_name': gpu, 'torch': torch.__version__,
                 'transformers': transformers.__version__, 'smoke': args.smoke,
                 'python': platform.python_version(), 'reps': args.reps,
                 'warmup': args.warmup, 'caption_tokens': CAPTION_TOKENS,
                 'find_tokens': FIND_TOKENS, 'frame_size': FRAME_SIZE,
                 'bandwidth_measured_Bps': bandwidth, 'bandwidth_nominal_Bps': nominal,
                 'decoders': decoders, 'seconds': total},
        'rows': rows, 'summary': summary, 'skipped': skipped, 'paper_bounds': paper}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
