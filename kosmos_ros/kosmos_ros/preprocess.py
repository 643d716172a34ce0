# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Frames to ``pixel_values``: the reference image processor's result, computed faster.

The released KOSMOS-2 image processor resizes the whole frame to 224x224 with Pillow's
antialiased bicubic filter, rescales by 1/255 and normalizes with the CLIP mean and std. The
fast path does the same with ``torch.nn.functional.interpolate(..., antialias=True)``, which
implements Pillow's filter: on the CPU on uint8 data (rounded to 8 bits after each pass, as
Pillow does), on CUDA in float32 with the same rounding between passes. It resizes the frame
where it lies (a strided view of the message), and swaps colour channels only after resizing.

Pillow runs its two passes in an order that depends on the image's shape; the fast path runs
them in the order measured against the installed Pillow (vertical first for frames taller than
about twice their width), so its output stays within one grey level of the reference at
camera sizes (``benchmarks/`` prints the maximum and mean difference).

It runs on the calling thread's torch threads, which the engine sets once
(:mod:`kosmos_ros.threads`: one by default, steady on a busy CPU).

Configurations the fast path does not implement (another filter, a crop that is not a no-op,
no rescale) fall back to the reference processor, so results never silently differ.
"""

from __future__ import annotations

from typing import Any, Sequence
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from kosmos_ros.errors import ImageError
from kosmos_ros.images import Frame

_PIL_BICUBIC = 3


def _size_hw(size: Any) -> tuple[int, int] | None:
    """Read (height, width) from a size dict or SizeDict; None if it is not a fixed size."""
    if size is None:
        return None
    if isinstance(size, dict):
        height, width = size.get('height'), size.get('width')
    else:
        height, width = getattr(size, 'height', None), getattr(size, 'width', None)
    if height is None or width is None:
        return None
    return int(height), int(width)


class Preprocessor:
    """Turn frames into the model's ``pixel_values`` (batch, 3, height, width)."""

    def __init__(self, image_processor: Any):
        self.reference = image_processor

        def get(name: str, default: Any = None) -> Any:
            return getattr(image_processor, name, default)

        self.out_hw = _size_hw(get('size'))
        crop = _size_hw(get('crop_size'))
        rescale = get('rescale_factor', 1 / 255)
        self.mean = [float(v) for v in (get('image_mean') or (0.0, 0.0, 0.0))]
        self.std = [float(v) for v in (get('image_std') or (1.0, 1.0, 1.0))]
        self.do_normalize = bool(get('do_normalize', True))
        reasons = []
        if not get('do_resize', True) or self.out_hw is None:
            reasons.append('the processor does not resize to a fixed height and width')
        if int(get('resample', _PIL_BICUBIC)) != _PIL_BICUBIC:
            reasons.append(f'resample={get("resample")} is not bicubic')
        if get('do_center_crop', False) and crop != self.out_hw:
            reasons.append(f'center crop {crop} differs from the resize {self.out_hw}')
        if not get('do_rescale', True) or abs(float(rescale) - 1 / 255) > 1e-12:
            reasons.append(f'rescale_factor={rescale} is not 1/255')
        self.fallback_reason = '; '.join(reasons) or None
        self._stats: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def fast(self) -> bool:
        return self.fallback_reason is None

    def _norm(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._stats:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            # x / 255 - mean) / std  ==  x * scale + shift
            self._stats[key] = (1.0 / (255.0 * std), -mean / std)
        return self._stats[key]

    def _resize(self, frame: Frame, device: torch.device) -> torch.Tensor:
        """Resize one frame to (1, C, H, W) holding 8-bit values (uint8 or rounded float)."""
        out_h, out_w = self.out_hw
        in_h, in_w = frame.height, frame.width
        with warnings.catch_warnings():  # read-only message buffers are never written to
            warnings.simplefilter('ignore', UserWarning)
            x = torch.from_numpy(frame.array).permute(2, 0, 1).unsqueeze(0)
        # uint8 on the CPU for camera-sized frames (torch's fast path, Pillow's fixed point);
        # rounded float32 passes on CUDA and for small frames (closer to Pillow when enlarging).
        use_uint8 = device.type == 'cpu' and in_h * in_w > 4 * out_h * out_w
        vertical_first = in_h > out_h and in_h + out_h > 2 * in_w
        if use_uint8:
            if not x.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            steps = [(out_h, in_w), (out_h, out_w)] if vertical_first else [(out_h, out_w)]
        else:
            x = x.to(device, non_blocking=True).float()
            steps = [(out_h, in_w), (out_h, out_w)] if vertical_first else \
                [(in_h, out_w), (out_h, out_w)]
        for size in steps:
            if (x.shape[2], x.shape[3]) == size:
                continue
            x = F.interpolate(x, size=size, mode='bicubic', antialias=True, align_corners=False)
            if not use_uint8:
                x = x.round_().clamp_(0, 255)
        return x

    def __call__(self, frames: Sequence[Frame], device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return pixel values of ``frames`` as one (N, 3, H, W) tensor on ``device``."""
        device = torch.device(device)
        if not frames:
            raise ImageError('no frames to preprocess')
        if not self.fast:
            return self.reference_pixel_values(frames).to(device=device, dtype=dtype)
        pixels = torch.cat([self._prepare(frame, device) for frame in frames]).float()
        if self.do_normalize:
            scale, shift = self._norm(device, torch.float32)
            pixels = pixels * scale + shift
        else:
            pixels = pixels / 255.0
        return pixels.to(dtype)

    def _prepare(self, frame: Frame, device: torch.device) -> torch.Tensor:
        """Resize one frame and put its channels in RGB order: (1, 3, H, W)."""
        x = self._resize(frame, device)
        if frame.order == 'mono':
            x = x.expand(-1, 3, -1, -1)
        elif frame.order in ('bgr', 'bgra'):
            x = x[:, [2, 1, 0]]
        else:
            x = x[:, :3]
        return x.to(device, non_blocking=True)

    def reference_pixel_values(self, frames: Sequence[Frame]) -> torch.Tensor:
        """Pixel values from the reference image processor (RGB arrays), on the CPU."""
        images = [np.asarray(f.to_rgb()) for f in frames]
        return self.reference(images=images, return_tensors='pt')['pixel_values']
