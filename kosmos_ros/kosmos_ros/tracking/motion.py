# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A box's motion model: constant velocity of its centre and size, OpenCV's Kalman filter.

The tracker (``tracking.py``) corrects a :class:`BoxFilter` with every box the optical flow
measures and asks it where the box is on a frame the flow could not follow (blurred, another
exposure, covered): the prediction is the last state moved on at its velocity. The state is
(cx, cy, w, h) and their velocities, frame pixels and pixels per second, in
``cv2.KalmanFilter``; this module only configures it per step: the transition for the time
step and the process noise of a random acceleration (the discrete white-noise acceleration
model, Bar-Shalom et al., "Estimation with Applications to Tracking and Navigation", 6.3.3).

Noise figures: the flow measures a centre to about a pixel and a size to about two; the
centre's acceleration noise is 1,500 pixels/s^2 and the size's 300 (the benchmark's windows,
``benchmarks/tracking_bench.py``, pan at up to 15 pixels a frame and accelerate by up to about
1,000 pixels/s^2). On its robot scenes with 15 grey frames per occlusion, 500 and 300 did as
well, 5,000 and 1,000 lost 50 % more frames. About 20 microseconds a predict and correct.
"""

from __future__ import annotations

import numpy as np

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.threads import opencv

# Standard deviations: measured centre and size (pixels), accelerations (pixels/s^2).
_CENTRE_NOISE = 1.0
_SIZE_NOISE = 2.0
_CENTRE_ACCELERATION = 1500.0
_SIZE_ACCELERATION = 300.0
# Of a new filter: its box (pixels) and its unknown velocity (pixels/s).
_START_BOX = 4.0
_START_VELOCITY = 300.0
_MEASURED = np.hstack([np.eye(4), np.zeros((4, 4))])
_ACCELERATION = np.array([_CENTRE_ACCELERATION, _CENTRE_ACCELERATION, _SIZE_ACCELERATION,
                          _SIZE_ACCELERATION])


class BoxFilter:
    """A box's centre and size with their velocities, as of :attr:`stamp` (message time).

    Not thread-safe; one per track.
    """

    def __init__(self, box: PixelBox, stamp: float,
                 velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)):
        """Start at ``box`` on the frame at ``stamp``, moving at ``velocity`` (uncertain)."""
        cv2 = opencv()
        self._kalman = cv2.KalmanFilter(8, 4, 0, cv2.CV_64F)
        self._kalman.measurementMatrix = _MEASURED.copy()
        self._kalman.measurementNoiseCov = np.diag(
            [_CENTRE_NOISE ** 2] * 2 + [_SIZE_NOISE ** 2] * 2).astype(np.float64)
        self.stamp = stamp
        self._start(box, velocity)

    @property
    def box(self) -> PixelBox:
        """Return the box of the state (predicted or corrected) at :attr:`stamp`."""
        cx, cy, width, height = self._kalman.statePost[:4, 0]
        return PixelBox.from_center(float(cx), float(cy), max(float(width), 1.0),
                                    max(float(height), 1.0))

    @property
    def velocity(self) -> tuple[float, float, float, float]:
        """Return the velocity of (cx, cy, w, h), pixels per second."""
        vx, vy, vw, vh = self._kalman.statePost[4:, 0]
        return float(vx), float(vy), float(vw), float(vh)

    def predict(self, stamp: float) -> PixelBox:
        """Move the state on to ``stamp`` (no earlier than :attr:`stamp`); return its box."""
        step = stamp - self.stamp
        if step > 0.0:
            kalman = self._kalman
            transition = np.eye(8)
            transition[:4, 4:] = step * np.eye(4)
            kalman.transitionMatrix = transition
            # Discrete white-noise acceleration: G = (step^2 / 2, step) per coordinate.
            position, speed = 0.5 * step * step, step
            noise = np.zeros((8, 8))
            variance = np.diag(_ACCELERATION ** 2)
            noise[:4, :4] = variance * position * position
            noise[:4, 4:] = noise[4:, :4] = variance * position * speed
            noise[4:, 4:] = variance * speed * speed
            kalman.processNoiseCov = noise
            kalman.predict()
            self.stamp = stamp
        return self.box

    def correct(self, box: PixelBox) -> None:
        """Take ``box``, measured by the flow on the frame at :attr:`stamp`."""
        cx, cy = box.center
        self._kalman.correct(np.array([[cx], [cy], [box.width], [box.height]], np.float64))

    def restart(self, box: PixelBox, stamp: float) -> None:
        """Put the state at ``box`` on the frame at ``stamp`` (a model's box), velocity kept."""
        self.stamp = stamp
        self._start(box, self.velocity)

    def rescale(self, sx: float, sy: float) -> None:
        """Express the state in the pixels of a frame resized by ``sx`` and ``sy``."""
        scale = np.diag([sx, sy, sx, sy] * 2)
        kalman = self._kalman
        kalman.statePost = scale @ kalman.statePost
        kalman.errorCovPost = scale @ kalman.errorCovPost @ scale

    def _start(self, box: PixelBox, velocity: tuple[float, float, float, float]) -> None:
        cx, cy = box.center
        self._kalman.statePost = np.array([[cx], [cy], [box.width], [box.height],
                                           *([v] for v in velocity)], np.float64)
        self._kalman.errorCovPost = np.diag([_START_BOX ** 2] * 4
                                            + [_START_VELOCITY ** 2] * 4).astype(np.float64)
