# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Load KOSMOS-2 and its processor safely, with dtype, quantization and device options.

Rules:
- weights load from safetensors only (``use_safetensors=True``); what a local folder or a hub
  model holds is checked before transformers opens any of it (:mod:`.checkpoint`), and a hub
  model is then loaded at the commit its checked files came from;
- ``trust_remote_code`` is never enabled, and a model that asks for remote code is refused;
- ``local_files_only`` makes loading fully offline (no network attempt);
- quantization (bitsandbytes or torchao) is refused where it cannot run (:mod:`.quantization`);
- every failure raises :class:`~kosmos_ros.errors.ModelLoadError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
import torch

from kosmos_ros.datatypes import ATTENTION, DEFAULT_MODEL, QUANTIZATIONS, TORCHAO_QUANTIZATIONS
from kosmos_ros.errors import ModelLoadError
from kosmos_ros.model.checkpoint import (check_config, check_hub_model, check_local_folder,
                                         shown, stat_path)
from kosmos_ros.model.quantization import (apply_torchao, quantization_config,
                                           quiet_torchao_import)

__all__ = ['ATTENTION', 'DEFAULT_MODEL', 'DTYPES', 'load_model', 'LoadedModel', 'ModelOptions',
           'QUANTIZATIONS', 'resolve_device', 'resolve_dtype']

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# What transformers raises for malformed or missing files: OSError (files, hub), ValueError
# (JSON and UTF-8 decoding included), KeyError, IndexError, TypeError and AttributeError (JSON of
# the wrong shape), RuntimeError (tensor shapes, torch), ImportError (a missing backend),
# SafetensorError (a corrupt weight file).
LOAD_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
               RuntimeError, ImportError, SafetensorError)


@dataclass(frozen=True)
class ModelOptions:
    """How to load the model.

    Attributes:
        model: Hugging Face hub id or local folder.
        revision: hub revision (branch, tag or commit); None for the default branch.
        local_files_only: never touch the network; use the local cache or folder only.
        dtype: 'auto' (float16 on CUDA, float32 on the CPU), 'float32', 'float16', 'bfloat16'.
        quantization: 'none'; '8bit' or '4bit' (bitsandbytes, CUDA only); 'int8' or 'int4'
            (torchao weight-only quantization of the text decoder, whose weights every decoded
            token reads; int8 also on the CPU, int4 on CUDA in bfloat16).
        device: 'auto' (first CUDA device, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        attn_implementation: 'sdpa' (scaled dot-product attention) or 'eager'.
        cache_dir: Hugging Face cache folder; None for the default.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    local_files_only: bool = False
    dtype: str = 'auto'
    quantization: str = 'none'
    device: str = 'auto'
    attn_implementation: str = 'sdpa'
    cache_dir: str | None = None


@dataclass
class LoadedModel:
    """A model ready for the engine, with what was resolved while loading it."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    options: ModelOptions
    revision: str | None = None  # the hub commit the files came from; None for a folder
    text_only: bool = False  # loaded without weights (load_model(weights=False))

    def describe(self) -> str:
        if self.text_only:
            return f'{self.options.model} (processor and configuration only, no weights)'
        return (f'{self.options.model} on {self.device} ({str(self.dtype).replace("torch.", "")}'
                f', quantization {self.options.quantization})')


def resolve_device(device: str) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a usable device, or raise ModelLoadError."""
    name = (device or 'auto').strip().lower()
    if name == 'auto':
        return torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'cuda' or name.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise ModelLoadError(f'device {device!r} requested but CUDA is not available '
                                 f'(torch {torch.__version__}, built with CUDA '
                                 f'{torch.version.cuda or "none"})')
        index = 0 if name == 'cuda' else name.split(':', 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ModelLoadError(f'device {device!r} does not exist; this machine has '
                                 f'{torch.cuda.device_count()} CUDA device(s)')
        return torch.device(f'cuda:{int(index)}')
    raise ModelLoadError(f'unknown device {device!r}; expected auto, cpu, cuda or cuda:N')


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn a dtype name into a torch dtype for ``device``, or raise ModelLoadError."""
    name = (dtype or 'auto').strip().lower()
    if name == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f'unknown dtype {dtype!r}; expected auto, ' + ', '.join(DTYPES))
    if name == 'bfloat16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f'bfloat16 is not supported on {device}; use float16')
    return DTYPES[name]


def _describe_failure(exc: BaseException, options: ModelOptions, local: bool) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, OSError):  # a library's internal error: its type says what failed
        text = f'{type(exc).__name__}: {text}'
    if options.local_files_only and not local:
        return (f'cannot load {options.model!r} offline (local_files_only): it is not a local '
                f'folder nor in the Hugging Face cache ({text})')
    return f'cannot load {options.model!r}: {text}'


def load_model(options: ModelOptions, weights: bool = True) -> LoadedModel:
    """Load KOSMOS-2 and its processor as ``options`` say; raise ModelLoadError on failure.

    ``weights=False``: the processor and the configuration only, the model's modules made on
    the ``meta`` device (no memory, nothing read from the weight files): enough to build and
    read prompts, for tools that only compare phrases (``kosmos_eval coco --run``).
    """
    quiet_torchao_import()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if options.attn_implementation not in ATTENTION:
        raise ModelLoadError(f'unknown attention implementation '
                             f'{options.attn_implementation!r}; expected sdpa or eager')
    device, dtype, quantization = torch.device('cpu'), torch.float32, None
    if weights:  # device, dtype and quantization matter only to the weights
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device)
        if options.quantization == 'int4' and \
                (options.dtype or 'auto').strip().lower() == 'auto':
            dtype = torch.bfloat16  # torchao's int4 kernels take bfloat16 activations
        quantization = quantization_config(options.quantization, device, dtype)
    if '\0' in str(options.model):  # before expanduser, which raises ValueError on it
        raise ModelLoadError(f'the model path {shown(str(options.model))} holds a NUL byte, '
                             'which no file name can')
    source = os.path.expanduser(options.model)
    local = stat_path(source) is not None or source.startswith(('/', './', '../', '~'))
    try:
        if local:
            source, revision = str(Path(source)), options.revision
            check_local_folder(Path(source))
        else:
            revision = check_hub_model(source, options.revision, options.cache_dir,
                                       options.local_files_only)
        common = dict(revision=revision, local_files_only=options.local_files_only,
                      cache_dir=options.cache_dir, trust_remote_code=False)
        processor = AutoProcessor.from_pretrained(source, **common)
        if not weights:
            model = _model_without_weights(source, revision, options)
        else:
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=dtype, quantization_config=quantization, use_safetensors=True,
                attn_implementation=options.attn_implementation,
                device_map={'': str(device)} if device.type == 'cuda' else None, **common)
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelLoadError(f'out of memory loading {options.model!r} on {device} as '
                             f'{dtype} with quantization {options.quantization}: '
                             f'{str(exc).splitlines()[0]}') from None
    except ModelLoadError:
        raise
    except LOAD_ERRORS as exc:
        raise ModelLoadError(_describe_failure(exc, options, local)) from None
    check_config(model.config.to_dict(), options.model)
    if not hasattr(processor, 'post_process_generation'):
        raise ModelLoadError(f'{options.model!r} has a {type(processor).__name__}, not a '
                             'KOSMOS-2 processor')
    if not weights:
        return LoadedModel(model=model, processor=processor, device=torch.device('meta'),
                           dtype=torch.float32, options=replace(options), revision=revision,
                           text_only=True)
    if options.quantization in TORCHAO_QUANTIZATIONS:
        apply_torchao(model, options.quantization, LOAD_ERRORS)
    model.eval()
    return LoadedModel(model=model, processor=processor, device=device, dtype=dtype,
                       options=replace(options), revision=revision)


def _model_without_weights(source: str, revision: str | None, options: ModelOptions) -> Any:
    """Return the model's modules on the ``meta`` device, with its generation settings."""
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    common = dict(revision=revision, local_files_only=options.local_files_only,
                  cache_dir=options.cache_dir, trust_remote_code=False)
    config = AutoConfig.from_pretrained(source, **common)
    with torch.device('meta'):
        model = AutoModelForImageTextToText.from_config(config)
    try:
        model.generation_config = GenerationConfig.from_pretrained(source, **common)
    except OSError:  # no generation_config.json: what from_pretrained would have made
        model.generation_config = GenerationConfig.from_model_config(config)
    return model
