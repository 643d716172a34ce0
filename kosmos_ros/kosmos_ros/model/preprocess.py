# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Frames to ``pixel_values``: the reference image processor's result, computed faster.

The released KOSMOS-2 image processor resizes the whole frame to 224x224 with Pillow's
antialiased bicubic filter, rescales by 1/255 and normalizes with the CLIP mean and std.
Pillow resizes in two passes, one per axis, in an order that depends on the frame's shape
(vertical first for frames taller than about twice their width, measured against the installed
Pillow), in 22-bit fixed point, rounding to 8 bits after each pass.

The fast path resizes a frame that both passes shrink at least twofold (camera frames) with
``torch.nn.functional.interpolate(..., antialias=True)``, in Pillow's order: on the CPU torch's
uint8 kernel, on CUDA float32 rounded half up between passes. Their coefficients are not
Pillow's, so a few pixels of the first pass come out one level off. A second pass that shrinks
twofold or more mostly averages that away (within one grey level on the photographs
``benchmarks/`` measures at camera sizes; blocky content can still reach two just over twofold:
one of 24 enlarged photographs at 800x480); one that enlarges or barely shrinks amplifies it
(two levels at 4000x100 and 100x4000, on noise). So every other frame (small frames, extreme
aspect ratios) is resized by Pillow itself (:func:`pillow_resize`), the reference's own resize:
0.1 to 0.3 ms slower than torch's passes on frames up to 451x300, 2 to 3 ms on a 4000x100
strip. The frame is resized where it lies (a strided view of the message), and colour channels
are swapped only after resizing.

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


def vertical_first(in_h: int, in_w: int, out_h: int) -> bool:
    """Whether Pillow resizes a frame vertically first (measured against Pillow 13)."""
    return in_h > out_h and in_h + out_h > 2 * in_w


def pillow_resize(frame: Frame, out_h: int, out_w: int) -> torch.Tensor:
    """Resize a frame's colour (or mono) channels with Pillow itself: (1, C, H, W) uint8.

    Pillow resizes bands alike, so BGR goes in as it is; alpha is left out (Pillow would
    premultiply it, which the reference, given RGB, does not).
    """
    from PIL import Image

    channels = frame.array[:, :, 0] if frame.order == 'mono' else frame.array[:, :, :3]
    image = Image.fromarray(np.ascontiguousarray(channels))
    resized = np.array(image.resize((out_w, out_h), Image.Resampling.BICUBIC,
                                    reducing_gap=None))
    return torch.from_numpy(resized.reshape(out_h, out_w, -1)).permute(2, 0, 1).unsqueeze(0)


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
        if in_h < 2 * out_h or in_w < 2 * out_w:  # torch's passes could be 2 levels off
            return pillow_resize(frame, out_h, out_w)
        with warnings.catch_warnings():  # read-only message buffers are never written to
            warnings.simplefilter('ignore', UserWarning)
            x = torch.from_numpy(frame.array).permute(2, 0, 1).unsqueeze(0)
        first = vertical_first(in_h, in_w, out_h)
        steps = [(out_h, in_w), (out_h, out_w)] if first else [(in_h, out_w), (out_h, out_w)]
        if device.type == 'cpu':  # torch's uint8 kernel: both passes in one call, or two
            if not x.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            steps = steps if first else steps[1:]
        else:
            x = x.to(device, non_blocking=True).float()
        for size in steps:
            x = F.interpolate(x, size=size, mode='bicubic', antialias=True, align_corners=False)
            if x.is_floating_point():  # Pillow rounds half up after each pass
                x = x.add_(0.5).floor_().clamp_(0, 255)
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
        # Said, not guessed: a frame 1 or 3 pixels high would otherwise be read channels-first.
        return self.reference(images=images, return_tensors='pt',
                              input_data_format='channels_last')['pixel_values']
