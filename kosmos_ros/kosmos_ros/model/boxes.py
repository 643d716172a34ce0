# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""KOSMOS-2's location grid and the mapping between its cells, normalized and pixel boxes.

KOSMOS-2 names a box by two cells of a 32x32 grid laid over the image: the cell of the top-left
corner and the cell of the bottom-right corner, each as a ``<patch_index_NNNN>`` token
(index = row * 32 + column). The released image processor resizes the whole frame to 224x224
without cropping, so the grid covers the full frame and normalized coordinates scale linearly
to pixels: ``x_pixel = x * width``, ``y_pixel = y * height``.

Quantization: a box decoded from the grid has its edges on multiples of 1/32 of the frame
(when both corners share a row or column, or are the same cell) or on cell centres, i.e. odd
multiples of 1/64 (otherwise), following the reference post-processing exactly.
"""

from __future__ import annotations

import math

from kosmos_ros.datatypes import PixelBox

GRID_SIZE = 32
NUM_PATCH_INDEX_TOKENS = GRID_SIZE * GRID_SIZE


def patch_token(index: int) -> str:
    """Return the token string of grid cell ``index`` (0 to 1023)."""
    if not 0 <= index < NUM_PATCH_INDEX_TOKENS:
        raise ValueError(f'patch index {index} outside 0..{NUM_PATCH_INDEX_TOKENS - 1}')
    return f'<patch_index_{index:04d}>'


def patch_indices_to_normalized(top_left: int, bottom_right: int,
                                grid: int = GRID_SIZE) -> tuple[float, float, float, float]:
    """Turn the two corner cells of a box into normalized (x1, y1, x2, y2).

    Boxes whose corners share a cell, a row or a column span the whole cells; other boxes run
    from the centre of the top-left cell to the centre of the bottom-right cell.
    """
    cell = 1.0 / grid
    row1, col1 = divmod(top_left, grid)
    row2, col2 = divmod(bottom_right, grid)
    if top_left == bottom_right or col1 == col2 or row1 == row2:
        return (col1 * cell, row1 * cell, col2 * cell + cell, row2 * cell + cell)
    half = cell / 2
    return (col1 * cell + half, row1 * cell + half, col2 * cell + half, row2 * cell + half)


def ordered_cells(top_left: int, bottom_right: int, grid: int = GRID_SIZE) -> tuple[int, int]:
    """Return the two corner cells with the top-left one first (rows and columns ordered).

    KOSMOS-2 sometimes names the bottom-right cell first; the reference then returns an
    inverted box. Ordered, the same two cells give the box that spans both.
    """
    row1, col1 = divmod(top_left, grid)
    row2, col2 = divmod(bottom_right, grid)
    return min(row1, row2) * grid + min(col1, col2), max(row1, row2) * grid + max(col1, col2)


def normalized_to_patch_indices(box: tuple[float, float, float, float],
                                grid: int = GRID_SIZE) -> tuple[int, int]:
    """Turn a normalized (x1, y1, x2, y2) box with x2 > x1, y2 > y1 into its two corner cells.

    The top-left corner takes the cell it falls in; the bottom-right corner takes the last cell
    the box reaches (an edge exactly on a cell border does not reach into the next cell).
    """
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f'box {box} must have x2 > x1 and y2 > y1')
    col1 = math.floor(x1 * grid)
    row1 = math.floor(y1 * grid)
    col2 = math.ceil(x2 * grid - 1)
    row2 = math.ceil(y2 * grid - 1)
    return row1 * grid + col1, row2 * grid + col2


def normalized_to_pixels(box: tuple[float, float, float, float], width: int,
                         height: int) -> PixelBox:
    """Scale a normalized box to pixels of a ``width`` x ``height`` frame, clamped to it."""
    x1, y1, x2, y2 = box
    return PixelBox(min(max(x1, 0.0), 1.0) * width, min(max(y1, 0.0), 1.0) * height,
                    min(max(x2, 0.0), 1.0) * width, min(max(y2, 0.0), 1.0) * height)


def pixels_to_normalized(box: PixelBox, width: int,
                         height: int) -> tuple[float, float, float, float]:
    """Scale a pixel box of a ``width`` x ``height`` frame to normalized Python floats."""
    return (float(box.x1) / width, float(box.y1) / height,
            float(box.x2) / width, float(box.y2) / height)
