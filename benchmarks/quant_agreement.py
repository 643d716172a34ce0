#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
r"""How far weight-only quantization moves KOSMOS-2's predictions (NOT an accuracy figure).

For each photograph, the unquantized model (float16 on CUDA, float32 on the CPU) generates a
grounded caption greedily; then the same tokens are fed to each quantized model in one forward
pass (teacher forcing), and at every generated position the script compares the two models'
next-token choices (top-1 agreement) and logits (largest absolute difference, and the mean
absolute difference over the reference logits' standard deviation). With random weights (the
default: the released architecture, ``Kosmos2Config()``) this measures numerical drift only:
random weights have no answers to get right, and their logits are flatter than a trained
model's, so top-1 flips more easily than with the released weights.

A user with the released weights checks answers against the unquantized model with the same
command (captions of both are printed side by side)::

    PYTHONPATH=kosmos_ros python3 benchmarks/quant_agreement.py \
        --model /path/to/kosmos-2-patch14-224 --quantizations int8 int4

Options: ``--tokens`` generated per photo (default 30), ``--photos`` (scikit-image names),
``--quantizations`` (int8 on the CPU or CUDA; int4, 8bit, 4bit on CUDA), ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path
import sys
import tempfile
from typing import Any, Sequence

import torch

from kosmos_ros.model.loading import load_model, ModelOptions

from gpu_bench import build_full_size, build_tiny, camera_frame, load_processor  # noqa: I100

PROMPT = '<grounding>An image of'


def _inputs(processor: Any, image: Any, device: torch.device, dtype: torch.dtype) -> dict:
    inputs = processor(text=PROMPT, images=image, return_tensors='pt')
    return {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
            for k, v in inputs.items()}


def _teacher_forced(model: Any, inputs: dict, sequence: torch.Tensor) -> torch.Tensor:
    """Logits (float32) at every position of ``sequence`` (prompt + generated tokens)."""
    prompt_len = inputs['input_ids'].shape[1]
    mask = torch.zeros_like(sequence, dtype=inputs['image_embeds_position_mask'].dtype)
    mask[:, :prompt_len] = inputs['image_embeds_position_mask']
    with torch.inference_mode():
        out = model(pixel_values=inputs['pixel_values'], input_ids=sequence,
                    attention_mask=torch.ones_like(sequence),
                    image_embeds_position_mask=mask)
    return out.logits.float()


def compare(reference: Any, quantized: Any, processor: Any, images: Sequence[Any],
            tokens: int, device: torch.device) -> dict[str, Any]:
    """Return top-1 agreement and logit errors of ``quantized`` against ``reference``."""
    agree = total = 0
    max_abs, rel = 0.0, []
    captions = []
    for image in images:
        inputs = _inputs(processor, image, device, reference.dtype)
        q_inputs = _inputs(processor, image, device, quantized.dtype)
        with torch.inference_mode():
            sequence = reference.generate(**inputs, max_new_tokens=tokens,
                                          min_new_tokens=tokens, do_sample=False, num_beams=1)
            q_sequence = quantized.generate(**q_inputs, max_new_tokens=tokens,
                                            min_new_tokens=tokens, do_sample=False,
                                            num_beams=1)
        start = inputs['input_ids'].shape[1] - 1  # logits here predict the first new token
        ref_logits = _teacher_forced(reference, inputs, sequence)[0, start:-1]
        q_logits = _teacher_forced(quantized, q_inputs, sequence)[0, start:-1]
        agree += int((ref_logits.argmax(-1) == q_logits.argmax(-1)).sum())
        total += ref_logits.shape[0]
        diff = (ref_logits - q_logits).abs()
        max_abs = max(max_abs, float(diff.max()))
        rel.append(float(diff.mean() / ref_logits.std()))
        decode = processor.batch_decode
        captions.append(tuple(decode(seq, skip_special_tokens=True)[0].split('</image>')[-1]
                              for seq in (sequence, q_sequence)))
    return {'top1_agreement': agree / total, 'positions': total, 'max_abs_logit_error': max_abs,
            'mean_abs_error_over_logit_std': sum(rel) / len(rel), 'captions': captions}


def decode_speed(model: Any, processor: Any, image: Any, tokens: int,
                 device: torch.device) -> dict[str, float]:
    """Time one greedy caption of 1 and of ``tokens`` tokens: first token, decode tokens/s."""
    import time

    inputs = _inputs(processor, image, device, model.dtype)
    seconds = {}
    for count in (1, tokens):
        with torch.inference_mode():
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            model.generate(**inputs, max_new_tokens=count, min_new_tokens=count,
                           do_sample=False, num_beams=1)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            seconds[count] = time.perf_counter() - started
    return {'first_token_s': seconds[1],
            'decode_tok_s': (tokens - 1) / max(seconds[tokens] - seconds[1], 1e-9)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='', help='a local KOSMOS-2 folder (default: the '
                        'released architecture with random weights)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--quantizations', nargs='+', default=['int8', 'int4'])
    parser.add_argument('--tokens', type=int, default=30)
    parser.add_argument('--photos', nargs='+', default=['coffee', 'chelsea', 'astronaut'])
    parser.add_argument('--json', default='results/quant_agreement.json')
    parser.add_argument('--speed', action='store_true',
                        help='also time one caption per model (first token, decode tokens/s; '
                        'one run each, after the comparison has warmed the model up)')
    parser.add_argument('--tiny', action='store_true',
                        help='the tiny random test model instead (a smoke run, seconds)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == 'cuda' else torch.float32
    images = [camera_frame(name, (640, 480)) for name in args.photos]
    print('Weight-only quantization against the unquantized model, teacher-forced: NOT an '
          'accuracy figure' + ('' if args.model else ' (random weights: numerical drift only)'))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model) if args.model else Path(tmp) / 'full_size'
        if args.tiny:
            folder = build_tiny(tmp)
        elif not args.model:
            processor = load_processor(build_tiny(tmp))
            model = build_full_size(dtype, 'cpu')
            model.save_pretrained(folder)
            processor.save_pretrained(folder)
            del model
            gc.collect()
        dtype_name = str(dtype).replace('torch.', '')
        reference = load_model(ModelOptions(model=str(folder), local_files_only=True,
                                            dtype=dtype_name, device=str(device)))
        for quant in args.quantizations:
            q_dtype = 'bfloat16' if quant == 'int4' else dtype_name
            try:
                quantized = load_model(ModelOptions(model=str(folder), local_files_only=True,
                                                    dtype=q_dtype, device=str(device),
                                                    quantization=quant))
            except Exception as exc:  # a quantization this machine lacks: say why, go on
                print(f'{quant}: skipped ({type(exc).__name__}: {exc})')
                rows.append({'quantization': quant, 'skipped': str(exc)})
                continue
            row = {'quantization': quant, 'dtype': q_dtype, 'reference_dtype': dtype_name,
                   **compare(reference.model, quantized.model, reference.processor, images,
                             args.tokens, device)}
            if args.speed:
                for key, model in (('speed_reference', reference.model),
                                   ('speed', quantized.model)):
                    row[key] = decode_speed(model, reference.processor, images[0],
                                            args.tokens, device)
                    which = dtype_name if key == 'speed_reference' else quant
                    print(f'{which}: first token {row[key]["first_token_s"]:.2f} s, decode '
                          f'{row[key]["decode_tok_s"]:.2f} tokens/s (torch threads '
                          f'{torch.get_num_threads()})')
            rows.append(row)
            print(f'{quant} ({q_dtype}) vs {dtype_name}: top-1 agreement '
                  f'{row["top1_agreement"]:.3f} over {row["positions"]} positions; max |logit '
                  f'error| {row["max_abs_logit_error"]:.3f}; mean |error| / logit std '
                  f'{row["mean_abs_error_over_logit_std"]:.4f}')
            for ref_text, q_text in row['captions']:
                print(f'  {dtype_name}: {ref_text!r}\n  {quant}: {q_text!r}')
            del quantized
            gc.collect()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'device': str(device), 'model': args.model or 'random',
                               'tokens': args.tokens, 'rows': rows}, indent=2))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
