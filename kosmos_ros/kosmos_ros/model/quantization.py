# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Quantization at load time: bitsandbytes 8bit/4bit (CUDA) and torchao int8/int4.

bitsandbytes quantizes while transformers loads (:func:`quantization_config`); torchao
quantizes the loaded text decoder in place (:func:`apply_torchao`). Either refuses, with
:class:`~kosmos_ros.errors.ModelLoadError`, a quantization its library or the device cannot do.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from kosmos_ros.datatypes import QUANTIZATIONS, TORCHAO_QUANTIZATIONS
from kosmos_ros.errors import ModelLoadError

__all__ = ['apply_torchao', 'quantization_config', 'quiet_torchao_import']


def quantization_config(quantization: str, device: torch.device, dtype: torch.dtype) -> Any:
    """Return the bitsandbytes config for ``quantization``, None for none or torchao."""
    if quantization == 'none':
        return None
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f'unknown quantization {quantization!r}; expected '
                             + ', '.join(QUANTIZATIONS))
    if quantization in TORCHAO_QUANTIZATIONS:
        check_torchao(quantization, device, dtype)
        return None  # applied after loading (apply_torchao)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f'{quantization} quantization needs bitsandbytes, which '
                             f'is not installed ({exc}); pip install bitsandbytes') from None
    if device.type != 'cuda':
        raise ModelLoadError(f'{quantization} quantization needs a CUDA device; the '
                             f'device resolved to {device}')
    from transformers import BitsAndBytesConfig
    if quantization == '8bit':
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_quant_type='nf4')


def check_torchao(quantization: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raise ModelLoadError unless torchao can quantize to ``quantization`` here."""
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f'{quantization} quantization needs torchao, which is not '
                             f'installed ({exc}); pip install torchao') from None
    if quantization == 'int4':
        if device.type != 'cuda':
            raise ModelLoadError("int4 quantization needs a CUDA device (torchao's int4 "
                                 f'kernels); the device resolved to {device}; use int8 on '
                                 'the CPU')
        if dtype != torch.bfloat16:
            raise ModelLoadError("int4 quantization computes in bfloat16 (torchao's int4 "
                                 f'kernels); set dtype to bfloat16 or auto, not {dtype}')


def apply_torchao(model: Any, quantization: str, errors: tuple[type[BaseException], ...]) -> None:
    """Quantize the text decoder's Linear weights (its output projection included) in place.

    Weight-only: weights are stored in 8 or 4 bits and activations keep the model's dtype.
    The vision encoder and the image-to-text connection run once per image and stay as they
    are. int4 uses groups of 128 weights per scale (torchao's tinygemm layout).
    """
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    config = Int8WeightOnlyConfig() if quantization == 'int8' else Int4WeightOnlyConfig(
        group_size=128, int4_packing_format='tile_packed_to_4d')
    try:
        quantize_(model.text_model, config)
    except errors + (AssertionError,) as exc:
        raise ModelLoadError(f'torchao {quantization} quantization failed: '
                             f'{type(exc).__name__}: {exc}') from None


def quiet_torchao_import() -> None:
    """Keep torchao's import from logging what does not concern this model.

    transformers imports torchao, when it is installed, at every model load (for its
    quantizer registry), and torchao's import logs one line per CUDA-only kernel library it
    cannot load on a machine without CUDA, and torch logs deprecation notes about its enums.
    """
    if not torch.cuda.is_available():
        logging.getLogger('torchao').setLevel(logging.ERROR)
    logging.getLogger('torch.utils._pytree').setLevel(logging.ERROR)
