# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A robot's camera for tracking tests and benchmarks: panning, zooming, spoilt frames.

A :class:`WindowScene` is a 640x480 window panning over a photograph at up to 15 pixels a
frame while it zooms, the object a fixed part of the photograph (the whole frame moves, as
when a robot turns its head); :class:`Perturbed` spoils chosen frames of any scene as a real
camera does (gaussian blur, exposure steps, full occlusion by grey frames;
:class:`Perturbations`), and its model finds nothing on a grey frame. ``robot_scenes`` are the
benchmark's. Model results are made as in ``scenes.py`` (noisy true boxes on
KOSMOS-2's 32x32 grid); frames are rendered on demand, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import functools
import math
from typing import Protocol

import numpy as np

from kosmos_ros.datatypes import GroundedPhrase, GroundingResult, PixelBox, Task
from kosmos_ros.testing.samples import load_photo
from kosmos_ros.testing.scenes import grid_box, Scene
from kosmos_ros.threads import opencv


class SceneLike(Protocol):
    """What the tests and the benchmark read of a scene (:class:`Scene` and the ones below)."""

    name: str
    fps: float
    seed: int

    def stamps(self) -> list[float]: ...

    def has_result(self, index: int) -> bool: ...

    def truth(self, t: float) -> tuple[PixelBox, ...]: ...

    def render(self, t: float) -> np.ndarray: ...

    def model_result(self, t: float, rng: np.random.Generator) -> GroundingResult: ...


@dataclass(frozen=True)
class WindowScene:
    """A camera panning and zooming over one photograph; the object is a part of it.

    The window's centre swings around the object by ``amplitude`` (frame pixels at zoom 1)
    with periods that give ``speed`` pixels a frame along x at zoom 1 (y is slower); its zoom
    swings from 1 to ``1 + 2 * zoom_swing``. The middle of the photograph is scaled to cover
    every window (1.2 to 2.1 times for the four photographs). Everything in the
    frame moves together, as when a robot turns its head over a still scene.

    Attributes:
        name: the scene's name in tables.
        photo: the photograph (``kosmos_ros.testing.samples.load_photo``).
        phrase: what a model would call the object.
        speed: largest motion along x, pixels per frame.
        object_size: (width, height) of the object's box at zoom 1, frame pixels.
        amplitude: swing of the window's centre (x, y), frame pixels at zoom 1.
        zoom_swing: half the zoom's swing (0.15: from 1 to 1.3).
        zoom_period: seconds.
        duration: seconds.
        fps: frames per second.
        size: (width, height) of the frames.
        result_hz: rate of model results.
        noise: standard deviation of each model box edge, as a fraction of the box's size.
        seed: seed of the model results' noise.
    """

    name: str
    photo: str
    phrase: str
    speed: float
    object_size: tuple[float, float] = (180.0, 140.0)
    amplitude: tuple[float, float] = (120.0, 70.0)
    zoom_swing: float = 0.15
    zoom_period: float = 4.0
    duration: float = 10.0
    fps: float = 30.0
    size: tuple[int, int] = (640, 480)
    result_hz: float = 3.0
    noise: float = 0.03
    seed: int = 0

    stamps = Scene.stamps
    has_result = Scene.has_result

    def view(self, t: float) -> tuple[float, float, float]:
        """Return the window's centre offset from the object (x, y) and its zoom at ``t``."""
        omega = self.speed * self.fps / self.amplitude[0]
        x = self.amplitude[0] * math.sin(omega * t)
        y = self.amplitude[1] * math.sin(0.55 * omega * t + 1.0)
        zoom = 1.0 + self.zoom_swing * (1.0 - math.cos(2.0 * math.pi * t / self.zoom_period))
        return x, y, zoom

    def speed_at(self, t: float) -> float:
        """Return the object's speed in the frame at ``t``, pixels per frame."""
        step = 1.0 / self.fps
        a, b = self.truth(t)[0].center, self.truth(t + step)[0].center
        return math.hypot(b[0] - a[0], b[1] - a[1])

    def truth(self, t: float) -> tuple[PixelBox, ...]:
        x, y, zoom = self.view(t)
        width, height = self.size
        return (PixelBox.from_center(width / 2 - zoom * x, height / 2 - zoom * y,
                                     zoom * self.object_size[0], zoom * self.object_size[1]),)

    def render(self, t: float) -> np.ndarray:
        cv2 = opencv()
        canvas = self._canvas()
        x, y, zoom = self.view(t)
        cx, cy = canvas.shape[1] / 2 + x, canvas.shape[0] / 2 + y
        width, height = self.size
        warp = np.float32([[zoom, 0, width / 2 - zoom * cx], [0, zoom, height / 2 - zoom * cy]])
        return cv2.warpAffine(canvas, warp, self.size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def model_result(self, t: float, rng: np.random.Generator) -> GroundingResult:
        width, height = self.size
        box = grid_box(self.truth(t)[0], width, height, self.noise, rng)
        phrase = GroundedPhrase(self.phrase, 0, len(self.phrase), (box,))
        return GroundingResult(Task.FIND, self.phrase, self.phrase, (phrase,), self.size, '', 0)

    def _canvas(self) -> np.ndarray:
        width, height = self.size
        return _canvas(self.photo, int(math.ceil(2 * self.amplitude[0] + width)),
                       int(math.ceil(2 * self.amplitude[1] + height)))


@functools.lru_cache(maxsize=8)
def _canvas(name: str, width: int, height: int) -> np.ndarray:
    """Return the middle of photograph ``name`` scaled to cover ``width`` x ``height``."""
    photo = load_photo(name)
    scale = max(width / photo.shape[1], height / photo.shape[0])
    size = (max(width, round(photo.shape[1] * scale)), max(height, round(photo.shape[0] * scale)))
    big = opencv().resize(photo, size, interpolation=opencv().INTER_CUBIC)
    x0, y0 = (size[0] - width) // 2, (size[1] - height) // 2
    return np.ascontiguousarray(big[y0:y0 + height, x0:x0 + width])


@dataclass(frozen=True)
class Perturbations:
    """Frames a robot's camera spoils, chosen from a seed (never the first few frames).

    Attributes:
        blur: fraction of frames blurred (each one alone).
        blur_sigma: gaussian blur's standard deviation, pixels.
        exposure: fraction of frames with another exposure, in runs of 1 to 3 frames.
        gains: the exposures' factors on every pixel (clipped to 255).
        occlusions: full occlusions (grey frames) per scene.
        occlusion_frames: grey frames in each.
        occlusion_speed: an occlusion starts where the object moves at least this fast
            (pixels per frame; the scene's top speed when it never does).
        seed: seed of the choice.
    """

    blur: float = 0.06
    blur_sigma: float = 2.5
    exposure: float = 0.06
    gains: tuple[float, ...] = (0.6, 1.5)
    occlusions: int = 2
    occlusion_frames: int = 5
    occlusion_speed: float = 8.0
    seed: int = 0


@dataclass(frozen=True)
class Perturbed:
    """A scene with spoilt frames: ``plan`` maps a frame's index to what is done to it.

    ``plan`` values: ``('blur', sigma)``, ``('gain', factor)`` or ``('grey', 0)``. On a grey
    frame the model finds nothing.
    """

    scene: SceneLike
    plan: dict[int, tuple[str, float]] = field(hash=False)

    @classmethod
    def of(cls, scene: SceneLike, spoil: Perturbations) -> Perturbed:
        """Choose the spoilt frames of ``scene`` from ``spoil``."""
        rng = np.random.default_rng(spoil.seed)
        stamps = scene.stamps()
        count = len(stamps)
        speed = getattr(scene, 'speed_at', lambda t: 0.0)
        speeds = np.array([speed(t) for t in stamps])
        fast = np.flatnonzero(speeds >= min(spoil.occlusion_speed, 0.8 * speeds.max()))
        plan: dict[int, tuple[str, float]] = {}
        starts: list[int] = []
        for start in rng.permutation(fast[(fast >= 15) & (fast < count - 15)]):
            if len(starts) == spoil.occlusions:
                break
            if all(abs(int(start) - s) > 30 for s in starts):
                starts.append(int(start))
                plan.update({int(start) + k: ('grey', 0.0)
                             for k in range(spoil.occlusion_frames)})
        free = [k for k in range(5, count) if k not in plan]
        for k in rng.choice(free, int(round(spoil.blur * count)), replace=False):
            plan[int(k)] = ('blur', spoil.blur_sigma)
        target, spoilt = int(round(spoil.exposure * count)), 0
        while spoilt < target:
            start, run = int(rng.integers(5, count - 3)), int(rng.integers(1, 4))
            gain = float(rng.choice(spoil.gains))
            for k in range(start, min(start + run, count)):
                if k not in plan and spoilt < target:
                    plan[k] = ('gain', gain)
                    spoilt += 1
        return cls(scene, plan)

    @property
    def name(self) -> str:
        return self.scene.name

    @property
    def fps(self) -> float:
        return self.scene.fps

    @property
    def seed(self) -> int:
        return self.scene.seed

    def stamps(self) -> list[float]:
        return self.scene.stamps()

    def has_result(self, index: int) -> bool:
        return self.scene.has_result(index)

    def truth(self, t: float) -> tuple[PixelBox, ...]:
        return self.scene.truth(t)

    def spoilt(self, t: float) -> tuple[str, float] | None:
        """Return what is done to the frame at ``t``, or None."""
        return self.plan.get(int(round(t * self.scene.fps)))

    def occlusions(self) -> int:
        """Return how many full occlusions the scene has."""
        return sum(1 for k, (kind, _) in self.plan.items()
                   if kind == 'grey' and self.plan.get(k - 1, ('',))[0] != 'grey')

    def render(self, t: float) -> np.ndarray:
        frame = self.scene.render(t)
        spoilt = self.spoilt(t)
        if spoilt is None:
            return frame
        kind, value = spoilt
        if kind == 'blur':
            return opencv().GaussianBlur(frame, (0, 0), value)
        if kind == 'gain':
            return np.clip(frame.astype(np.float32) * value + 0.5, 0, 255).astype(np.uint8)
        return np.full_like(frame, 128)

    def model_result(self, t: float, rng: np.random.Generator) -> GroundingResult:
        result = self.scene.model_result(t, rng)
        if (self.spoilt(t) or ('',))[0] != 'grey':
            return result
        empty = tuple(replace(p, boxes=()) for p in result.phrases)
        return replace(result, phrases=empty)


def robot_scenes(duration: float = 10.0, spoil: bool = True) -> tuple[SceneLike, ...]:
    """Return the benchmark's robot-camera scenes: windows over four photographs.

    Each pans at up to 3, 7, 10 and 11 pixels a frame along x at zoom 1 (objects move 2 to 15
    pixels a frame) with zoom, model results at 3 Hz; with
    ``spoil``, each has 6 % blurred frames, 6 % exposure steps and two full occlusions.
    """
    scenes = (
        WindowScene('coffee, 3 px/frame', 'coffee', 'a cup of coffee', 3.0, seed=11,
                    duration=duration),
        WindowScene('cat, 7 px/frame', 'chelsea', 'a cat', 7.0, seed=12, duration=duration),
        WindowScene('astronaut, 10 px/frame', 'astronaut', 'an astronaut', 10.0, seed=13,
                    duration=duration),
        WindowScene('motorcycle, 11 px/frame', 'motorcycle_left', 'a motorcycle', 11.0,
                    seed=14, duration=duration),
    )
    if not spoil:
        return scenes
    return tuple(Perturbed.of(s, Perturbations(seed=s.seed)) for s in scenes)
