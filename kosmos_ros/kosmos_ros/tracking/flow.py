# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A box's motion from one grey frame to the next by pyramidal Lucas-Kanade flow (OpenCV).

The visual half of tracking (``tracking.py`` holds the identities). Per box: corners
(``cv2.goodFeaturesToTrack``) in the box's inner part, followed into the next frame by
``cv2.calcOpticalFlowPyrLK`` forwards and then backwards; a point whose backward track misses
its start by more than ``fb_threshold`` pixels is dropped (the forward-backward check of Kalal
et al., "Forward-Backward Error", ICPR 2010). The points that moved with the object (near the
box's last motion, else near the median motion) give the box a new centre and scale without
rotation (``fit_motion``); points that disagree are dropped, so background and occluder
corners inside the box do not accumulate; fresh corners are taken when too few remain. The
forward search may start where the motion model expects each point (``guess``), and the
second frame's crop is first brought to the first one's exposure (``_matched_exposure``: 0.03
ms to compare a 280x280 crop, 0.05 ms to rescale it), so a step of x0.6 or x1.5 does not
break the flow.

Cost, on this project's 2-core build machine (OpenCV 5, one thread; benchmark row g): a
median 1.6 ms per 640x480 frame for one box and 2.2 ms for two, with an 11x11 window, two
pyramid levels above the base and both frames cropped to the reach of the points (the whole
frame costs about 0.25 ms more per LK call; a 15x15 window 2.4 and 4.4 ms). Corners come from
the box's own crop (0.4 ms for 200x200; the whole frame with a mask costs 11 ms). Frames wider
than ``max_width`` are downscaled first (``cv2.INTER_AREA``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.errors import KosmosError
from kosmos_ros.images import Frame
from kosmos_ros.threads import opencv

_TO_GRAY = {'rgb': 'COLOR_RGB2GRAY', 'bgr': 'COLOR_BGR2GRAY', 'rgba': 'COLOR_RGBA2GRAY',
            'bgra': 'COLOR_BGRA2GRAY'}
# Pairs of points closer than this (flow pixels) say little about scale and are not used.
_MIN_PAIR_DISTANCE = 3.0
# Least radius of agreement with the median (displacement, centre), pixels.
_MIN_INLIER_RADIUS = 2.0
# Crops of two frames whose mean and contrast differ by more than this fraction are brought
# to the same exposure before the flow; a crop with less contrast (grey levels) is flat.
_EXPOSURE_TOLERANCE = 0.1
_FLAT = 2.0


class TrackingError(KosmosError, ValueError):
    """Tracking settings or inputs that cannot be used (a bad frame, a bad setting)."""


@dataclass(frozen=True)
class FlowSettings:
    """How boxes are followed from frame to frame.

    Attributes:
        max_width: frames wider than this are downscaled to it for the flow (boxes are mapped
            back to the frame's pixels).
        max_points: corners seeded per box.
        min_points: a box with fewer points surviving a frame is lost.
        redetect_below: a box left with fewer points gets fresh corners in its new position.
        window: side of the Lucas-Kanade window, pixels.
        levels: pyramid levels above the base (``maxLevel``); each doubles the motion followed.
        iterations: Lucas-Kanade iterations per level at most.
        fb_threshold: largest forward-backward error of a kept point, pixels.
        quality: corner quality relative to the best corner (``qualityLevel``).
        min_distance: least distance between two seeded corners, pixels.
        margin: corners are seeded only in the box shrunk by this fraction of its size on each
            side, where an object (rarely rectangular) covers more of the box than background.
        max_scale_step: largest relative change of the box size from one frame to the next.
    """

    max_width: int = 640
    max_points: int = 40
    min_points: int = 6
    redetect_below: int = 16
    window: int = 11
    levels: int = 2
    iterations: int = 10
    fb_threshold: float = 1.0
    quality: float = 0.01
    min_distance: float = 4.0
    margin: float = 0.15
    max_scale_step: float = 0.1

    def __post_init__(self) -> None:
        checks = (
            (self.max_width >= 16, 'max_width must be at least 16 pixels'),
            (self.max_points >= 2, 'max_points must be at least 2'),
            (2 <= self.min_points <= self.max_points,
             'min_points must be between 2 and max_points'),
            (self.min_points <= self.redetect_below <= self.max_points,
             'redetect_below must be between min_points and max_points'),
            (self.window >= 3 and self.window % 2 == 1, 'window must be an odd number >= 3'),
            (0 <= self.levels <= 6, 'levels must be between 0 and 6'),
            (self.iterations >= 1, 'iterations must be at least 1'),
            (self.fb_threshold > 0.0, 'fb_threshold must be positive'),
            (0.0 < self.quality < 1.0, 'quality must be between 0 and 1'),
            (self.min_distance >= 0.0, 'min_distance must not be negative'),
            (0.0 <= self.margin < 0.5, 'margin must be in [0, 0.5)'),
            (0.0 < self.max_scale_step < 1.0, 'max_scale_step must be in (0, 1)'),
        )
        for ok, reason in checks:
            if not ok:
                raise TrackingError(f'{reason}; got {self}')


@dataclass(frozen=True)
class BoxMotion:
    """A box's move between two frames: its new centre and its scale, with the points used.

    Attributes:
        center: the box's new centre (x, y), flow pixels.
        scale: new size over old size (width and height alike).
        inliers: which of the given points agree with the fit.
    """

    center: tuple[float, float]
    scale: float
    inliers: np.ndarray


def gray_for_tracking(frame: Frame) -> np.ndarray:
    """Return the frame as a (height, width) uint8 grey image (a view for mono frames)."""
    if frame.order == 'mono':
        return frame.array[:, :, 0]
    if frame.order not in _TO_GRAY:
        raise TrackingError(f'unknown channel order {frame.order!r}')
    cv2 = opencv()
    return cv2.cvtColor(frame.array, getattr(cv2, _TO_GRAY[frame.order]))


def check_gray(gray: np.ndarray) -> np.ndarray:
    """Return ``gray`` as a 2-D uint8 array, or raise TrackingError saying what is wrong."""
    if not isinstance(gray, np.ndarray):
        raise TrackingError(f'expected a numpy array, got {type(gray).__name__}')
    if gray.dtype != np.uint8:
        raise TrackingError(f'expected a uint8 grey image, got {gray.dtype}')
    if gray.ndim == 3 and gray.shape[2] == 1:
        gray = gray[:, :, 0]
    if gray.ndim != 2:
        raise TrackingError(f'expected a (height, width) grey image, got shape {gray.shape} '
                            '(convert colour frames with gray_for_tracking)')
    if min(gray.shape) < 16:
        raise TrackingError(f'grey image of {gray.shape[1]}x{gray.shape[0]} is too small')
    return gray


def downscale(gray: np.ndarray, max_width: int) -> tuple[np.ndarray, float]:
    """Return the image no wider than ``max_width`` and its scale (flow over frame pixels)."""
    height, width = gray.shape
    if width <= max_width:
        return gray, 1.0
    factor = max_width / width
    size = (max_width, max(1, round(height * factor)))
    return opencv().resize(gray, size, interpolation=opencv().INTER_AREA), factor


def seed_points(gray: np.ndarray, box: PixelBox, settings: FlowSettings) -> np.ndarray:
    """Return up to ``max_points`` corners (N, 2) float32 in the inner part of ``box``.

    ``box`` and the points are in ``gray``'s pixels; corners come from the box's crop alone.
    """
    dx, dy = box.width * settings.margin, box.height * settings.margin
    height, width = gray.shape
    x1, y1 = max(0, int(box.x1 + dx)), max(0, int(box.y1 + dy))
    x2, y2 = min(width, int(np.ceil(box.x2 - dx))), min(height, int(np.ceil(box.y2 - dy)))
    if x2 - x1 < 3 or y2 - y1 < 3:
        return np.empty((0, 2), np.float32)
    corners = opencv().goodFeaturesToTrack(gray[y1:y2, x1:x2], settings.max_points,
                                           settings.quality, settings.min_distance)
    if corners is None:
        return np.empty((0, 2), np.float32)
    return (corners.reshape(-1, 2) + np.float32([x1, y1])).astype(np.float32)


def follow_points(previous: np.ndarray, current: np.ndarray, points: np.ndarray,
                  settings: FlowSettings, guess: np.ndarray | None = None,
                  levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Follow (N, 2) points from ``previous`` into ``current``; return them and which held.

    A point holds when both the forward and the backward Lucas-Kanade track converged, the
    backward track ends within ``fb_threshold`` of its start, and it stays inside the frame.
    ``guess`` (N, 2), where the points are expected in ``current`` (the motion model's
    prediction), starts the forward search there (``cv2.OPTFLOW_USE_INITIAL_FLOW``);
    ``levels`` overrides the settings' pyramid levels (a search after frames not followed).
    ``current`` is first matched to ``previous``'s exposure (``_matched_exposure``).
    """
    cv2 = opencv()
    height, width = current.shape
    levels = settings.levels if levels is None else levels
    reach_of = points if guess is None else np.concatenate([points, guess])
    x0, y0, x1, y1 = _flow_region(reach_of, width, height, settings.window, levels)
    offset = np.float32([x0, y0])
    start = np.ascontiguousarray(points - offset, np.float32).reshape(-1, 1, 2)
    before = previous[y0:y1, x0:x1]
    after = _matched_exposure(before, current[y0:y1, x0:x1])
    params = dict(winSize=(settings.window, settings.window), maxLevel=levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
                            settings.iterations, 0.03))
    if guess is None:
        moved, forward_ok, _ = cv2.calcOpticalFlowPyrLK(before, after, start, None, **params)
    else:
        initial = np.ascontiguousarray(guess - offset, np.float32).reshape(-1, 1, 2)
        moved, forward_ok, _ = cv2.calcOpticalFlowPyrLK(
            before, after, start, initial, flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params)
    back, backward_ok, _ = cv2.calcOpticalFlowPyrLK(
        after, before, moved, start.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params)
    moved = moved.reshape(-1, 2) + offset
    start, back = start.reshape(-1, 2) + offset, back.reshape(-1, 2) + offset
    held = ((forward_ok.ravel() == 1) & (backward_ok.ravel() == 1)
            & (np.linalg.norm(back - start, axis=1) <= settings.fb_threshold)
            & (moved[:, 0] >= 0) & (moved[:, 1] >= 0)
            & (moved[:, 0] <= width - 1) & (moved[:, 1] <= height - 1))
    return moved, held


def _matched_exposure(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Return ``after`` with ``before``'s mean and contrast when its exposure differs.

    Lucas-Kanade assumes that a point keeps its grey level; an exposure step (x0.6, x1.5)
    breaks that for every point at once. Scaling the crop to the other's mean and standard
    deviation undoes a gain (and an offset) up to clipping. Crops whose mean and contrast
    agree within ``_EXPOSURE_TOLERANCE`` (a scene's own change from frame to frame) are
    left as they are, and so is a flat crop (nothing to follow on it anyway).
    """
    cv2 = opencv()
    mean_before, std_before = (float(v[0, 0]) for v in cv2.meanStdDev(before))
    mean_after, std_after = (float(v[0, 0]) for v in cv2.meanStdDev(after))
    if std_after < _FLAT or std_before < _FLAT:
        return after
    gain = std_before / std_after
    if (abs(gain - 1.0) <= _EXPOSURE_TOLERANCE
            and abs(mean_after - mean_before) <= _EXPOSURE_TOLERANCE * mean_before):
        return after
    return cv2.addWeighted(after, gain, after, 0.0, mean_before - gain * mean_after)


def _flow_region(points: np.ndarray, width: int, height: int, window: int,
                 levels: int) -> tuple[int, int, int, int]:
    """Return the part of the frame (x0, y0, x1, y1) the flow of ``points`` can reach.

    The points' bounding box grown by the window times the pyramid's scale: more than the
    largest motion the pyramid follows, so cropping both frames to it changes no result that
    matters and spares the pyramid and gradients of the rest of the frame.
    """
    reach = window * 2 ** levels
    low, high = points.min(axis=0), points.max(axis=0)
    return (max(0, int(low[0]) - reach), max(0, int(low[1]) - reach),
            min(width, int(high[0]) + 1 + reach), min(height, int(high[1]) + 1 + reach))


def fit_motion(old: np.ndarray, new: np.ndarray, center: tuple[float, float],
               max_scale_step: float, expected: tuple[float, float] | None = None) -> BoxMotion:
    """Fit a centre shift and a scale (no rotation) to points that moved from ``old`` to ``new``.

    Only the points that moved with the object count (``_moving_together``). Among them,
    scale: the median ratio of pairwise distances (pairs closer than 3 pixels left out),
    limited to ``1 +- max_scale_step``; centre: the median of where each point puts the
    centre, ``new - scale * (old - center)``, exact for every point under a pure shift and
    scale. Inliers: points whose centre lies within three median misses of theirs (at least
    2 pixels). About 0.1 ms for 40 points (``np.median`` and ``np.linalg.norm`` cost four
    times as much here, hence partitions and ``pdist``).
    """
    agree = _moving_together(new - old, expected)
    before, after = pdist(old[agree]), pdist(new[agree])
    usable = before >= _MIN_PAIR_DISTANCE
    scale = _median(after[usable] / before[usable]) if usable.any() else 1.0
    scale = min(max(scale, 1.0 / (1.0 + max_scale_step)), 1.0 + max_scale_step)
    predicted = new - np.float32(scale) * (old - np.asarray(center, np.float32))
    fitted = (_median(predicted[agree, 0]), _median(predicted[agree, 1]))
    return BoxMotion(fitted, scale, _near_median(predicted, fitted, agree))


def _moving_together(shift: np.ndarray, expected: tuple[float, float] | None) -> np.ndarray:
    """Return which points moved with the object, given their (N, 2) displacements.

    Those within a quarter of the ``expected`` displacement of it (at least 2 pixels; the
    box's own last motion), when a quarter of the points or more did; otherwise those within
    three median deviations (at least 2 pixels) of the median displacement. As an object
    slides behind an occluder, the occluder's static corners in its box become the majority;
    the median alone then stops the box on the occluder (benchmark's occluded scene: mean IoU
    0.80 against 0.89 with the expected motion).
    """
    if expected is not None:
        offset = shift - np.asarray(expected, np.float32)
        reach = max(_MIN_INLIER_RADIUS, 0.25 * float(np.hypot(*expected)))
        near = np.einsum('ij,ij->i', offset, offset) <= reach * reach
        if np.count_nonzero(near) >= max(3, len(shift) // 4):
            return near
    near = _near_median(shift)
    return near if np.count_nonzero(near) >= 2 else np.ones(len(shift), bool)


def _near_median(values: np.ndarray, middle: tuple[float, float] | None = None,
                 among: np.ndarray | None = None) -> np.ndarray:
    """Return which (N, 2) values lie within 3 median distances (>= 2 px) of ``middle``.

    ``middle`` defaults to the per-axis median of the values; the median distance is taken
    over the values ``among`` selects (all by default). Taken over all points, the occluder's
    static ones made the typical miss so large that they stayed inliers, and the box stopped
    on the occluder (occluded scene, results 0.3 s late: mean IoU 0.80 against 0.89).
    """
    if middle is None:
        middle = (_median(values[:, 0]), _median(values[:, 1]))
    offset = values - np.asarray(middle, np.float32)
    distance = np.sqrt(np.einsum('ij,ij->i', offset, offset))
    typical = _median(distance if among is None else distance[among])
    return distance <= max(_MIN_INLIER_RADIUS, 3.0 * typical)


def _median(values: np.ndarray) -> float:
    """Return the median of a non-empty 1-D array (by partition: ``np.median``'s checks cost)."""
    half = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return 0.5 * (float(part[half - 1]) + float(part[half]))


def moved_box(box: PixelBox, motion: BoxMotion) -> PixelBox:
    """Return ``box`` (flow pixels) centred on the motion's centre and scaled by it."""
    return PixelBox.from_center(motion.center[0], motion.center[1],
                                box.width * motion.scale, box.height * motion.scale)


def scaled_box(box: PixelBox, factor: float) -> PixelBox:
    """Return ``box`` with every coordinate multiplied by ``factor``."""
    return PixelBox(box.x1 * factor, box.y1 * factor, box.x2 * factor, box.y2 * factor)
