# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a tracker publishes and how it is set.

:class:`Track`, :class:`TrackState` and :class:`TrackerSettings`; the rules they follow are in
``tracking.py``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import enum
import math

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.tracking.flow import FlowSettings, TrackingError


class TrackState(enum.Enum):
    """Where a track stands."""

    TENTATIVE = 'tentative'  # one model result so far; followed by the flow
    CONFIRMED = 'confirmed'  # two model results or more; followed by the flow
    PREDICTED = 'predicted'  # the flow failed on this frame: the box is the motion model's
    LOST = 'lost'  # coasted too long; its box is where it was last seen, not published


@dataclass(frozen=True)
class TrackerSettings:
    """Identity and ageing of tracks; ``flow`` says how boxes are followed between results.

    Attributes:
        track_max_age: seconds (message time) a track lives after its last confirming model
            result.
        iou_threshold: least overlap (IoU) of a detection with a track's box for the two to
            match.
        replay_seconds: how long the tracker keeps its frames and each track its boxes, to
            place late model results (at least the model's latency; 0 keeps only the latest
            frame).
        coast_seconds: how long a track whose flow failed is published at the motion model's
            prediction (blurred or covered frames) before it is lost; 0 loses it at once.
            Chosen on ``benchmarks/tracking_bench.py``'s robot scenes.
        model_weight: weight of a model's box against the box the flow followed when a
            result confirms a followed track (1: take the model's box as it is), to average
            the model's noise over results. Chosen on the same benchmark.
        flow: the optical-flow settings.
    """

    track_max_age: float = 3.0
    iou_threshold: float = 0.2
    replay_seconds: float = 2.0
    coast_seconds: float = 1.0
    model_weight: float = 0.4
    flow: FlowSettings = field(default_factory=FlowSettings)

    def __post_init__(self) -> None:
        if not (self.track_max_age > 0.0 and math.isfinite(self.track_max_age)):
            raise TrackingError(f'track_max_age must be positive; got {self.track_max_age}')
        if not 0.0 < self.iou_threshold <= 1.0:
            raise TrackingError(f'iou_threshold must be in (0, 1]; got {self.iou_threshold}')
        if not (self.replay_seconds >= 0.0 and math.isfinite(self.replay_seconds)):
            raise TrackingError(
                f'replay_seconds must not be negative; got {self.replay_seconds}')
        if not (self.coast_seconds >= 0.0 and math.isfinite(self.coast_seconds)):
            raise TrackingError(f'coast_seconds must not be negative; got {self.coast_seconds}')
        if not 0.0 < self.model_weight <= 1.0:
            raise TrackingError(f'model_weight must be in (0, 1]; got {self.model_weight}')


@dataclass(frozen=True)
class Track:
    """What a tracker knows about one grounded object, as of ``last_update``.

    Attributes:
        track_id: the track's id, unique within its tracker, increasing from 1.
        phrase: the phrase of the last model result that confirmed the track.
        box: the box in the camera frame's pixels, clamped to the frame.
        score: the score of the last confirming model box.
        state: see :class:`TrackState`.
        hits: how many model results confirmed the track.
        first_confirmed: stamp (seconds) of the model result that started the track (no
            later than the latest frame's stamp).
        last_confirmed: stamp of the last model result that confirmed it (no later than the
            latest frame's stamp).
        last_update: stamp of the frame ``box`` belongs to.
        lost_since: stamp of the frame on which the track was lost, or None.
        predicted_since: stamp of the first frame of the current run of predicted boxes, or
            None when the flow follows the track (or it is lost).
    """

    track_id: int
    phrase: str
    box: PixelBox
    score: float
    state: TrackState
    hits: int
    first_confirmed: float
    last_confirmed: float
    last_update: float
    lost_since: float | None = None
    predicted_since: float | None = None

    @property
    def followed(self) -> bool:
        """Whether the track is published: followed by the flow or predicted (not lost)."""
        return self.state is not TrackState.LOST

    @property
    def motion(self) -> str:
        """Return how the box was placed on its frame: 'tracked', 'predicted' or 'lost'."""
        if self.state is TrackState.LOST:
            return 'lost'
        return 'predicted' if self.state is TrackState.PREDICTED else 'tracked'

    @property
    def coasted(self) -> float:
        """Return the seconds the box has been predicted for (0 unless predicted)."""
        if self.predicted_since is None:
            return 0.0
        return max(0.0, self.last_update - self.predicted_since)

    def confirmation_age(self, stamp: float) -> float:
        """Return the seconds from the last confirming model result to ``stamp`` (>= 0)."""
        return max(0.0, stamp - self.last_confirmed)
