# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Moving scenes made from real photographs, with known boxes, for tracking tests and benchmarks.

An object cut from one photograph (an elliptical cut-out, so its box holds some background)
moves over another photograph along a smooth path while its size swings; a scene can pan its
background, hide part of an object behind a static occluder, or move two look-alike objects of
one phrase past each other. Frames are rendered on demand (``cv2.warpAffine`` at sub-pixel
positions) and never stored. ``model_result`` stands in for KOSMOS-2: the true boxes with
noise, put on the model's 32x32 location grid exactly as its output is decoded (``boxes.py``),
as a :class:`GroundingResult` whose ``detections()`` feed a tracker like the engine's would.

A robot's camera (panning, zooming, blurred, re-exposed and covered frames) is in
``camera_scenes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
import math
from typing import Iterator

import numpy as np

from kosmos_ros.datatypes import GroundedBox, GroundedPhrase, GroundingResult, PixelBox, Task
from kosmos_ros.model.boxes import (normalized_to_patch_indices, normalized_to_pixels,
                                    patch_indices_to_normalized, pixels_to_normalized)
from kosmos_ros.testing.samples import load_photo
from kosmos_ros.threads import opencv

# Objects: photograph and the (x1, y1, x2, y2) region of it whose inscribed ellipse is cut out.
SPRITES = {
    'cup': ('coffee', (75, 15, 480, 390)),
    'cat': ('chelsea', (40, 0, 420, 300)),
}


@dataclass(frozen=True)
class Mover:
    """An object moving along a Lissajous path while its size swings.

    Attributes:
        phrase: what a model would call it.
        sprite: a key of ``SPRITES``.
        center: mean centre (x, y), frame pixels.
        amplitude: swing of the centre (x, y), pixels.
        period: period of each swing (x, y), seconds.
        phase: phase of each swing at time 0 (x, y), radians.
        height: mean box height, pixels (the width follows the sprite's aspect).
        scale_swing: relative swing of the size (0.12: from 0.88 to 1.12 times).
        scale_period: period of the size swing, seconds.
        mirrored: mirror the sprite left to right (a look-alike).
    """

    phrase: str
    sprite: str
    center: tuple[float, float]
    amplitude: tuple[float, float]
    period: tuple[float, float]
    phase: tuple[float, float] = (0.0, 0.0)
    height: float = 160.0
    scale_swing: float = 0.12
    scale_period: float = 2.0
    mirrored: bool = False

    def box(self, t: float) -> PixelBox:
        """Return the object's true box at time ``t`` (seconds)."""
        cx, cy = (c + a * math.sin(2.0 * math.pi * t / p + f) for c, a, p, f in
                  zip(self.center, self.amplitude, self.period, self.phase))
        height = self.height * (1.0 + self.scale_swing * math.sin(
            2.0 * math.pi * t / self.scale_period))
        rgb, _ = _sprite(self.sprite, self.mirrored)
        return PixelBox.from_center(cx, cy, height * rgb.shape[1] / rgb.shape[0], height)


@dataclass(frozen=True)
class Scene:
    """A generated sequence: frames at ``fps``, model results at ``result_hz``.

    Attributes:
        name: the scene's name in tables.
        background: photograph behind the objects (resized to cover the frame).
        movers: the objects, drawn in order (later ones in front).
        occluder: a static region covered by a part of ``occluder_photo``, in front of all.
        pan: background speed (pixels per second, leftwards), a camera turning.
        duration: seconds.
        fps: frames per second.
        size: (width, height) of the frames.
        result_hz: rate of model results.
        noise: standard deviation of each model box edge, as a fraction of the box's size.
        seed: seed of the model results' noise.
    """

    name: str
    background: str
    movers: tuple[Mover, ...]
    occluder: PixelBox | None = None
    occluder_photo: str = 'rocket'
    pan: float = 0.0
    duration: float = 8.0
    fps: float = 30.0
    size: tuple[int, int] = (640, 480)
    result_hz: float = 1.0
    noise: float = 0.03
    seed: int = 0

    def stamps(self) -> list[float]:
        """Return the frames' stamps, seconds from 0."""
        return [k / self.fps for k in range(int(round(self.duration * self.fps)))]

    def has_result(self, index: int) -> bool:
        """Return whether frame ``index`` gets a model result."""
        return index % max(1, int(round(self.fps / self.result_hz))) == 0

    def truth(self, t: float) -> tuple[PixelBox, ...]:
        """Return the movers' true boxes at ``t``, in order (occluded parts included)."""
        return tuple(m.box(t) for m in self.movers)

    def occlusion_start(self) -> float | None:
        """Return the first stamp at which the occluder overlaps a true box, or None."""
        for t in self.stamps():
            if self.occluder is not None and any(_overlaps(b, self.occluder)
                                                 for b in self.truth(t)):
                return t
        return None

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield (stamp, RGB frame) for every frame, rendered one at a time."""
        for t in self.stamps():
            yield t, self.render(t)

    def render(self, t: float) -> np.ndarray:
        """Return the (height, width, 3) uint8 RGB frame at ``t``."""
        cv2 = opencv()
        width, height = self.size
        wide = _background(self.background, width + int(math.ceil(self.pan * self.duration)),
                           height)
        shift = np.float32([[1, 0, -self.pan * t], [0, 1, 0]])
        frame = cv2.warpAffine(wide, shift, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        for mover in self.movers:
            _paste(frame, *_sprite(mover.sprite, mover.mirrored), mover.box(t))
        if self.occluder is not None:
            _paste_occluder(frame, self.occluder, self.occluder_photo)
        return frame

    def model_result(self, t: float, rng: np.random.Generator) -> GroundingResult:
        """Return what a model finds at ``t``: each true box noisy and on the 32x32 grid."""
        width, height = self.size
        phrases = []
        for text in dict.fromkeys(m.phrase for m in self.movers):
            boxes = [grid_box(m.box(t), width, height, self.noise, rng)
                     for m in self.movers if m.phrase == text]
            order = rng.permutation(len(boxes))
            phrases.append(GroundedPhrase(text, 0, len(text),
                                          tuple(boxes[i] for i in order)))
        text = ', '.join(p.text for p in phrases)
        return GroundingResult(Task.FIND, text, text, tuple(phrases), (width, height), '', 0)


def _overlaps(a: PixelBox, b: PixelBox) -> bool:
    return a.x1 < b.x2 and b.x1 < a.x2 and a.y1 < b.y2 and b.y1 < a.y2


def grid_box(box: PixelBox, width: int, height: int, noise: float,
             rng: np.random.Generator) -> GroundedBox:
    """Return ``box`` with noisy edges, quantized as KOSMOS-2's output is decoded."""
    dx, dy = noise * box.width, noise * box.height
    x1, y1, x2, y2 = (v + rng.normal(0.0, s) for v, s in
                      zip((box.x1, box.y1, box.x2, box.y2), (dx, dy, dx, dy)))
    norm = pixels_to_normalized(PixelBox(x1, y1, x2, y2), width, height)
    norm = tuple(min(max(v, 0.0), 0.999) for v in norm)
    cells = normalized_to_patch_indices(norm)
    grid = patch_indices_to_normalized(*cells)
    score = float(np.clip(rng.normal(0.7, 0.05), 0.05, 1.0))
    return GroundedBox(normalized_to_pixels(grid, width, height), grid, cells, score)


@functools.lru_cache(maxsize=8)
def _sprite(name: str, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return an object's RGB pixels and its elliptical alpha (float32, 0 to 1)."""
    photo, (x1, y1, x2, y2) = SPRITES[name]
    rgb = np.ascontiguousarray(load_photo(photo)[y1:y2, x1:x2])
    if mirrored:
        rgb = np.ascontiguousarray(rgb[:, ::-1])
    h, w = rgb.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.sqrt(((x + 0.5 - w / 2) / (w / 2)) ** 2 + ((y + 0.5 - h / 2) / (h / 2)) ** 2)
    edge = 2.0 / min(w, h)  # a soft rim of about one pixel
    alpha = np.clip((1.0 - radius) / edge + 0.5, 0.0, 1.0).astype(np.float32)
    return rgb, alpha


@functools.lru_cache(maxsize=8)
def _background(name: str, width: int, height: int) -> np.ndarray:
    """Return photograph ``name`` scaled and cropped to cover ``width`` x ``height``."""
    photo = load_photo(name)
    scale = max(width / photo.shape[1], height / photo.shape[0])
    size = (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale)))
    big = opencv().resize(photo, size, interpolation=opencv().INTER_AREA)
    return np.ascontiguousarray(big[:height, :width])


def _paste(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, box: PixelBox) -> None:
    """Blend the sprite into ``frame`` so that it fills ``box`` exactly (sub-pixel)."""
    cv2 = opencv()
    height, width = frame.shape[:2]
    x0, y0 = max(0, int(math.floor(box.x1)) - 1), max(0, int(math.floor(box.y1)) - 1)
    x1 = min(width, int(math.ceil(box.x2)) + 1)
    y1 = min(height, int(math.ceil(box.y2)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    sx, sy = box.width / rgb.shape[1], box.height / rgb.shape[0]
    # Pixel centres: source column i (edge coordinate i + 0.5) lands at x1 + sx * (i + 0.5).
    warp = np.float32([[sx, 0, box.x1 + 0.5 * sx - 0.5 - x0],
                       [0, sy, box.y1 + 0.5 * sy - 0.5 - y0]])
    size = (x1 - x0, y1 - y0)
    pixels = cv2.warpAffine(rgb, warp, size, flags=cv2.INTER_LINEAR).astype(np.float32)
    weight = cv2.warpAffine(alpha, warp, size, flags=cv2.INTER_LINEAR)[:, :, None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region + weight * (pixels - region) + 0.5, 0,
                                  255).astype(np.uint8)


def _paste_occluder(frame: np.ndarray, region: PixelBox, photo: str) -> None:
    """Cover ``region`` (whole pixels) with the middle of ``photo`` scaled to fit."""
    x0, y0, x1, y1 = (int(round(v)) for v in (region.x1, region.y1, region.x2, region.y2))
    image = load_photo(photo)
    h, w = image.shape[:2]
    crop = image[h // 4:3 * h // 4, w // 3:2 * w // 3]
    frame[y0:y1, x0:x1] = opencv().resize(crop, (x1 - x0, y1 - y0),
                                          interpolation=opencv().INTER_AREA)


def standard_scenes(duration: float = 8.0) -> tuple[Scene, ...]:
    """Return the benchmark's scenes; objects move 2 to 6 pixels a frame at 30 Hz."""
    cup = Mover('a cup of coffee', 'cup', (320, 240), (200, 110), (7.0, 5.0), (0.0, 0.0))
    cat = Mover('a cat', 'cat', (320, 250), (170, 100), (6.0, 4.5), (0.5, 1.0), height=170,
                scale_swing=0.14, scale_period=2.5)
    hidden = Mover('a cup of coffee', 'cup', (330, 240), (210, 60), (8.0, 6.0),
                   (-math.pi / 2, 0.0), height=170)
    left = Mover('a cup of coffee', 'cup', (320, 140), (220, 30), (8.0, 5.0),
                 (-math.pi / 2, 0.0), height=150)
    right = Mover('a cup of coffee', 'cup', (320, 330), (220, 30), (8.0, 5.0),
                  (math.pi / 2, 1.5), height=150, mirrored=True, scale_period=2.3)
    return (
        Scene('cup', 'motorcycle_left', (cup,), duration=duration, seed=1),
        Scene('cat, camera pans', 'motorcycle_left', (cat,), pan=40.0, duration=duration,
              seed=2),
        Scene('cup, occluded', 'astronaut', (hidden,), occluder=PixelBox(440, 120, 520, 380),
              duration=duration, seed=3),
        Scene('two look-alike cups', 'rocket', (left, right), duration=duration, seed=4),
    )
