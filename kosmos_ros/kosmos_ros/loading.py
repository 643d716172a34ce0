# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Load KOSMOS-2 and its processor safely, with dtype, quantization and device options.

Rules:
- weights load from safetensors only (``use_safetensors=True``); a folder that holds only
  pickle checkpoints (``pytorch_model.bin``, ``*.pt``, ``*.ckpt``) is refused before anything
  is read from it;
- ``trust_remote_code`` is never enabled, and a model that asks for remote code is refused;
- ``local_files_only`` makes loading fully offline (no network attempt);
- every failure raises :class:`~kosmos_ros.errors.ModelLoadError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import json
import os
from pathlib import Path
from typing import Any

import torch

from kosmos_ros.errors import ModelLoadError

DEFAULT_MODEL = 'microsoft/kosmos-2-patch14-224'
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
QUANTIZATIONS = ('none', '8bit', '4bit')
ATTENTION = ('sdpa', 'eager')
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')


@dataclass(frozen=True)
class ModelOptions:
    """How to load the model.

    Attributes:
        model: Hugging Face hub id or local folder.
        revision: hub revision (branch, tag or commit); None for the default branch.
        local_files_only: never touch the network; use the local cache or folder only.
        dtype: 'auto' (float16 on CUDA, float32 on the CPU), 'float32', 'float16', 'bfloat16'.
        quantization: 'none', '8bit' or '4bit' (bitsandbytes, CUDA only).
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

    def describe(self) -> str:
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


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelLoadError(f'model path {folder} is not a folder')
    config = folder / 'config.json'
    if not config.is_file():
        raise ModelLoadError(f'model folder {folder} has no config.json')
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if not any(name.endswith('.safetensors') for name in files):
        pickles = sorted(n for n in files if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(
                f'model folder {folder} holds only pickle checkpoints ({", ".join(pickles)}); '
                'kosmos_ros loads safetensors only, because unpickling can run arbitrary code. '
                'Convert the weights to model.safetensors first.')
        raise ModelLoadError(f'model folder {folder} has no weights (*.safetensors)')
    _check_config(json.loads(config.read_text()), str(folder))


def _check_config(config: dict, source: str) -> None:
    if config.get('auto_map'):
        raise ModelLoadError(f'{source} asks for remote code (auto_map in config.json); '
                             'kosmos_ros never enables trust_remote_code')
    model_type = config.get('model_type')
    if model_type != 'kosmos-2':
        raise ModelLoadError(f'{source} is a {model_type!r} model, not KOSMOS-2 (kosmos-2)')


def _quantization_config(options: ModelOptions, device: torch.device, dtype: torch.dtype):
    if options.quantization == 'none':
        return None
    if options.quantization not in QUANTIZATIONS:
        raise ModelLoadError(f'unknown quantization {options.quantization!r}; expected '
                             + ', '.join(QUANTIZATIONS))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f'{options.quantization} quantization needs bitsandbytes, which '
                             f'is not installed ({exc}); pip install bitsandbytes') from None
    if device.type != 'cuda':
        raise ModelLoadError(f'{options.quantization} quantization needs a CUDA device; the '
                             f'device resolved to {device}')
    from transformers import BitsAndBytesConfig
    if options.quantization == '8bit':
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_quant_type='nf4')


def _describe_failure(exc: BaseException, options: ModelOptions) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if options.local_files_only:
        return (f'cannot load {options.model!r} offline (local_files_only): it is not a local '
                f'folder nor in the Hugging Face cache ({text})')
    return f'cannot load {options.model!r}: {text}'


def load_model(options: ModelOptions) -> LoadedModel:
    """Load KOSMOS-2 and its processor as ``options`` say; raise ModelLoadError on failure."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if options.attn_implementation not in ATTENTION:
        raise ModelLoadError(f'unknown attention implementation '
                             f'{options.attn_implementation!r}; expected sdpa or eager')
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    quantization = _quantization_config(options, device, dtype)
    source = os.path.expanduser(options.model)
    local = Path(source)
    if local.exists() or source.startswith(('/', './', '../', '~')):
        _check_local_folder(local)
        source = str(local)
    common = dict(revision=options.revision, local_files_only=options.local_files_only,
                  cache_dir=options.cache_dir, trust_remote_code=False)
    try:
        processor = AutoProcessor.from_pretrained(source, **common)
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
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(_describe_failure(exc, options)) from None
    _check_config(model.config.to_dict(), options.model)
    if not hasattr(processor, 'post_process_generation'):
        raise ModelLoadError(f'{options.model!r} has a {type(processor).__name__}, not a '
                             'KOSMOS-2 processor')
    model.eval()
    return LoadedModel(model=model, processor=processor, device=device, dtype=dtype,
                       options=replace(options))
