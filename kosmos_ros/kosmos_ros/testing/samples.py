# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Real photographs shipped inside scikit-image, for samples, tests and benchmarks."""

from __future__ import annotations

from typing import Callable

import numpy as np

PHOTO_NAMES = ('coffee', 'chelsea', 'astronaut', 'rocket', 'motorcycle_left',
               'motorcycle_right')


def _loaders() -> dict[str, Callable[[], np.ndarray]]:
    from skimage import data
    return {
        'coffee': data.coffee, 'chelsea': data.chelsea, 'astronaut': data.astronaut,
        'rocket': data.rocket, 'motorcycle_left': lambda: data.stereo_motorcycle()[0],
        'motorcycle_right': lambda: data.stereo_motorcycle()[1],
    }


def load_photo(name: str) -> np.ndarray:
    """Return photograph ``name`` as a contiguous (H, W, 3) uint8 RGB array."""
    loaders = _loaders()
    if name not in loaders:
        raise KeyError(f'unknown photograph {name!r}; expected one of {", ".join(loaders)}')
    return np.ascontiguousarray(loaders[name]()[..., :3], dtype=np.uint8)
