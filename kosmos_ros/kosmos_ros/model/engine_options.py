# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The engine's options (torch-free, so that the node can read them before it loads a model).

:data:`NODE_PARAMETERS` names the node parameter behind each option the node sets: a live
change of one of them gives the running engine new options (the rest need a reload).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from kosmos_ros.images import DEFAULT_MAX_PIXELS
from kosmos_ros.options import SPECS as OPTION_SPECS
from kosmos_ros.threads import DEFAULT_CPU_THREADS


@dataclass(frozen=True)
class EngineOptions:
    """Generation and safety limits of the engine.

    Attributes:
        max_new_tokens: default generation budget per query.
        min_new_tokens: generate at least this many tokens (benchmarks fix the work with it).
        num_beams: 1 for greedy decoding (batched); more for beam search (one query at a time).
        no_repeat_ngram_size: forbid repeating n-grams of this size (0: off).
        max_prompt_tokens: longest accepted prompt text, in tokens (image tokens excluded).
        max_batch_size: most queries decoded together.
        max_pixels: largest accepted frame, in pixels.
        logits_processors: extra ``transformers`` logits processors applied at every step.
        decoder: how tokens after the first are decoded: 'dynamic' (the model's forward pass
            with transformers' cache), 'static' (preallocated cache, fixed shapes),
            'cuda_graph' (static, captured as a CUDA graph; CUDA only) or 'auto'
            (cuda_graph on CUDA, except static for 8-bit models, whose bitsandbytes kernels
            cannot be captured; dynamic on the CPU).
        fuse_qkv: in the static and CUDA-graph decoders, compute the query, key and value
            projections as one matrix product (the model's three weights become views of one
            tensor: no extra memory; the model then holds shared storage, which matters only
            to code that saves it).
        cpu_threads: torch intra-op threads of the thread that runs the engine, set once on
            it (preprocessing and the CPU model); 0 leaves torch's setting. One is fastest
            and steadiest when other processes share the cores (:mod:`kosmos_ros.threads`).
        compile_step: ``torch.compile`` the decode step of the static and CUDA-graph decoders
            (Inductor; Triton on CUDA). Each new batch size or length bucket compiles once,
            tens of seconds, on first use.
    """

    max_new_tokens: int = OPTION_SPECS['max_new_tokens'].default  # the node's, the tools'
    min_new_tokens: int = 0
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    max_prompt_tokens: int = 256
    max_batch_size: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    logits_processors: tuple[Any, ...] = ()
    decoder: str = 'auto'
    fuse_qkv: bool = True
    compile_step: bool = False
    cpu_threads: int = DEFAULT_CPU_THREADS


# Engine option -> the node parameter that sets it (the same name where none is given).
_RENAMED = {'max_pixels': 'max_image_pixels', 'compile_step': 'compile_decoder'}
_NOT_PARAMETERS = ('min_new_tokens', 'logits_processors', 'fuse_qkv')
NODE_PARAMETERS: dict[str, str] = {
    f.name: _RENAMED.get(f.name, f.name) for f in fields(EngineOptions)
    if f.name not in _NOT_PARAMETERS}
