# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Lift grounded pixel boxes to 3D with a registered depth image and the pinhole model.

Inputs are duck-typed messages (rclpy or rosbags): ``sensor_msgs/Image`` depth in ``16UC1``
(millimetres) or ``32FC1`` (metres), and ``sensor_msgs/CameraInfo`` whose ``k`` is the 3x3
intrinsic matrix of the **rectified** image. The depth image must be registered to the colour
image (same optical frame and field of view, as ``aligned_depth_to_color`` topics are); when its
resolution differs from the colour image's, boxes are scaled to it.

For one box:

- depth: the median over the valid pixels of the box's inner region (the central
  ``inner_fraction`` of its width and height), ignoring zeros, NaN, infinities and values outside
  ``[depth_min, depth_max]``; fewer than ``min_valid_pixels`` valid pixels gives no 3D;
- centre: the pinhole back-projection of the box centre at that depth,
  ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy`` in the camera's optical frame (x right, y down,
  z forward), where (u, v) is the box centre in ROS pixel-centre coordinates;
- size: the box's width and height at that depth (``w Z / fx``, ``h Z / fy``) and, along z, the
  spread of the valid depths in the whole box (10th to 90th percentile).

:class:`DepthSettings` holds the tolerance, depth range and inner fraction, for the node's
``depth_*`` parameters and ``ground_bag``'s ``--depth-*`` options alike; :func:`lift_result`
lifts every box of a result with them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import math
from typing import Any

import numpy as np

from kosmos_ros.datatypes import GroundingResult, PixelBox
from kosmos_ros.errors import ImageError
from kosmos_ros.options import check_together, check_value, OptionsError, SPECS as OPTION_SPECS


@dataclass(frozen=True)
class DepthSettings:
    """How boxes are lifted: the grounding options ``depth_*`` (:mod:`kosmos_ros.options`).

    The node's parameters, ``ground_bag``'s and the corpus's ``--depth-*`` flags of the same
    names; defaults and limits are the options' specs.

    Attributes:
        depth_tolerance: largest header stamp gap (s) between a colour image and its depth
            image.
        depth_min: smallest valid depth (m).
        depth_max: largest valid depth (m).
        depth_inner_fraction: the central part of a box's width and height whose median depth
            gives its distance.

    Raises OptionsError (a ValueError) naming the first invalid value.
    """

    depth_tolerance: float = OPTION_SPECS['depth_tolerance'].default
    depth_min: float = OPTION_SPECS['depth_min'].default
    depth_max: float = OPTION_SPECS['depth_max'].default
    depth_inner_fraction: float = OPTION_SPECS['depth_inner_fraction'].default

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        problems = [check_value(name, OPTION_SPECS[name], value)
                    for name, value in values.items()] + [check_together(values)]
        problem = next((p for p in problems if p), None)
        if problem:
            raise OptionsError(problem)

    @classmethod
    def of(cls, options: Any) -> DepthSettings:
        """Return the depth settings of ``options`` (a GroundingOptions, or the node's)."""
        return cls(*(float(getattr(options, f.name)) for f in fields(cls)))


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a rectified image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, msg: Any) -> Intrinsics:
        k = list(getattr(msg, 'k', None) if getattr(msg, 'k', None) is not None else msg.K)
        if len(k) != 9:
            raise ImageError(f'CameraInfo.k has {len(k)} values, expected 9')
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        width, height = int(msg.width), int(msg.height)
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise ImageError(f'CameraInfo has no usable intrinsics (fx={fx}, fy={fy}); is the '
                             'camera calibrated?')
        if width <= 0 or height <= 0:
            raise ImageError(f'CameraInfo has an empty image size ({width}x{height})')
        return cls(fx, fy, cx, cy, width, height)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """Return the same camera at another resolution (intrinsics scale with it)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


def depth_from_message(msg: Any) -> np.ndarray:
    """Return a depth image in metres (float32, NaN where unknown) from 16UC1 or 32FC1."""
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    encoding = str(msg.encoding)
    if width <= 0 or height <= 0:
        raise ImageError(f'depth image is empty ({width}x{height})')
    types = {'16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}
    if encoding not in types:
        raise ImageError(f'unsupported depth encoding {encoding!r}; expected 16UC1 (mm) or '
                         '32FC1 (m)')
    dtype = np.dtype(types[encoding]).newbyteorder('>' if msg.is_bigendian else '<')
    row = width * dtype.itemsize
    data = msg.data if isinstance(msg.data, np.ndarray) else np.frombuffer(msg.data, np.uint8)
    data = data.reshape(-1).view(np.uint8)
    if step < row or data.size != step * height:
        raise ImageError(f'depth image {width}x{height} {encoding}: step {step} and '
                         f'{data.size} bytes do not match')
    rows = data.reshape(height, step)[:, :row]
    values = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    if values.dtype.kind == 'u':
        metres = values.astype(np.float32) / 1000.0
        metres[values == 0] = np.nan
        return metres
    return values.astype(np.float32)


@dataclass(frozen=True)
class Box3D:
    """An axis-aligned box in the camera's optical frame, in metres."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    valid_pixels: int


@dataclass(frozen=True)
class Lifted:
    """The 3D box of a pixel box, or why there is none."""

    box: Box3D | None
    reason: str = ''


def lift_box(box: PixelBox, depth: np.ndarray, intrinsics: Intrinsics, image_size: tuple,
             min_depth: float = 0.1, max_depth: float = 10.0, inner_fraction: float = 0.5,
             min_valid_pixels: int = 5) -> Lifted:
    """Lift one pixel box of a ``image_size`` = (width, height) colour image to 3D."""
    height, width = depth.shape
    img_w, img_h = image_size
    sx, sy = width / img_w, height / img_h
    k = intrinsics if (intrinsics.width, intrinsics.height) == (width, height) else \
        intrinsics.scaled(width, height)
    x1, x2 = box.x1 * sx, box.x2 * sx
    y1, y2 = box.y1 * sy, box.y2 * sy
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * inner_fraction / 2, (y2 - y1) * inner_fraction / 2
    c0, c1 = int(math.floor(cx - half_w)), int(math.ceil(cx + half_w))
    r0, r1 = int(math.floor(cy - half_h)), int(math.ceil(cy + half_h))
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(max(c1, c0 + 1), width), min(max(r1, r0 + 1), height)
    inner = depth[r0:r1, c0:c1]
    valid = inner[np.isfinite(inner) & (inner >= min_depth) & (inner <= max_depth)]
    if valid.size < min_valid_pixels:
        return Lifted(None, f'{valid.size} valid depth pixels in the box centre (need '
                            f'{min_valid_pixels}; depth range {min_depth:g} to {max_depth:g} m)')
    z = float(np.median(valid))
    u, v = cx - 0.5, cy - 0.5  # box coordinates put pixel centres at +0.5
    center = ((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z)
    whole = depth[max(int(y1), 0):min(int(math.ceil(y2)), height),
                  max(int(x1), 0):min(int(math.ceil(x2)), width)]
    spread = whole[np.isfinite(whole) & (whole >= min_depth) & (whole <= max_depth)]
    depth_size = float(np.percentile(spread, 90) - np.percentile(spread, 10)) \
        if spread.size else 0.0
    size = ((x2 - x1) * z / k.fx, (y2 - y1) * z / k.fy, depth_size)
    return Lifted(Box3D(center, size, int(valid.size)))


def lift_result(result: GroundingResult, depth: np.ndarray, intrinsics: Intrinsics,
                settings: DepthSettings) -> tuple[tuple[Lifted, ...], ...]:
    """Lift every box of every phrase of ``result`` (per phrase, per box)."""
    return tuple(tuple(lift_box(b.pixels, depth, intrinsics, result.image_size,
                                settings.depth_min, settings.depth_max,
                                settings.depth_inner_fraction)
                       for b in p.boxes) for p in result.phrases)


def without_3d(result: GroundingResult, reason: str) -> tuple[tuple[Lifted, ...], ...]:
    """Return "no 3D, because ``reason``" for every box of ``result`` (per phrase, per box)."""
    return tuple((Lifted(None, reason),) * len(p.boxes) for p in result.phrases)


def closest_by_stamp(stamp: float, candidates: list[tuple[float, Any]],
                     tolerance: float) -> tuple[Any, str]:
    """Pick the candidate (stamp, item) closest to ``stamp`` within ``tolerance`` seconds."""
    if not candidates:
        return None, 'no depth image received'
    best_stamp, best = min(candidates, key=lambda c: abs(c[0] - stamp))
    gap = abs(best_stamp - stamp)
    if gap > tolerance:
        return None, (f'closest depth image is {gap * 1e3:.0f} ms from the colour image '
                      f'(tolerance {tolerance * 1e3:.0f} ms)')
    return best, ''
