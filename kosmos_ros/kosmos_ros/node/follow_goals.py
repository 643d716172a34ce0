# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One follow goal: its request checked, its target chosen, the words of its end.

The record and the decisions of :mod:`.follow`, apart from the action server that drives them:
what a request may ask (:func:`goal_from_request`), which track becomes the target
(:func:`retarget`), the feedback state of a track (:func:`motion_state`) and the messages a
goal ends with (:func:`lost_message`, :func:`cancel_message`).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.errors import RegionError
from kosmos_ros.node.conversions import region_from_bbox
from kosmos_ros.node.parameter_table import SPECS
from kosmos_ros.options import requested_or
from kosmos_ros.tracking.association import iou_matrix

__all__ = ['cancel_message', 'FollowGoal', 'goal_from_request', 'LOST', 'lost_message',
           'motion_state', 'PREDICTED', 'retarget', 'SEARCHING', 'TRACKING']

SEARCHING, TRACKING, PREDICTED, LOST = 'searching', 'tracking', 'predicted', 'lost'


@dataclass
class FollowGoal:
    """One running follow goal (shared by the executor, tracking and worker threads)."""

    handle: Any
    camera: str
    phrase: str  # as given (the FIND prompt)
    read: str  # as the model spells it (read_phrase): what its results are compared with
    region: PixelBox | None
    period: float  # seconds between two model queries
    min_score: float
    future: Any  # rclpy Future, set with (kind, message) when the goal ends
    started: float  # node clock
    track_id: int = -1
    found_at: float | None = None  # node clock, first model result with the target
    last_seen: float = 0.0  # node clock, last frame the target was tracked on
    last_box: PixelBox | None = None
    answered: bool = False  # a model result came back
    in_flight: bool = False
    last_query: float = -math.inf  # monotonic
    ended: bool = False
    success: bool = False  # cancelled while its target was followed


def goal_from_request(handle: Any, session: Any, read_phrase: Callable[[str], str],
                      future: Any, now: float) -> FollowGoal:
    """Return the goal a Follow request asks for; ValueError (or a KosmosError) saying why not.

    The phrase must hold something the model can read, the camera must be one of the node's
    (the first when empty), ``regrounding_hz`` and ``min_score`` (0: the node's) pass the same
    checks as the parameters, and a region (all zero: none) must be finite with a positive size.
    """
    request, p = handle.request, session.params
    phrase = str(request.phrase).strip()
    if not phrase:
        raise ValueError('phrase is empty: say what to follow')
    read = read_phrase(phrase)
    if not read:
        raise ValueError(f'phrase {request.phrase!r} holds nothing the model can read')
    names = list(session.cameras)
    camera = request.camera or names[0]
    if camera not in session.cameras:
        raise ValueError(f'unknown camera {camera!r}; cameras: {", ".join(names)}')
    rate = requested_or('regrounding_hz', float(request.regrounding_hz),
                        float(p.follow_regrounding_hz), SPECS['follow_regrounding_hz'])
    min_score = requested_or('min_score', float(request.min_score), float(p.min_score))
    region = None
    box = request.region
    if box.size_x != 0.0 or box.size_y != 0.0:
        x, y, w, h = box.center.position.x, box.center.position.y, box.size_x, box.size_y
        if not all(map(math.isfinite, (x, y, w, h))) or w <= 0.0 or h <= 0.0:
            raise RegionError(f'region must be finite with a positive size; got centre '
                              f'({x:g}, {y:g}), size {w:g} x {h:g}')
        region = region_from_bbox(box)
    return FollowGoal(handle, camera, phrase, read, region, 1.0 / rate, min_score, future, now,
                      last_seen=now)


def motion_state(track: Any) -> str:
    """Return a track's feedback state: tracking, predicted or lost."""
    motion = getattr(track, 'motion', None)
    if motion is None:
        return TRACKING if track.followed else LOST
    return {'tracked': TRACKING, 'predicted': PREDICTED}.get(str(motion), LOST)


def retarget(goal: FollowGoal, tracks: list[Any], current: Any, now: float) -> None:
    """Give ``goal`` a target among a model result's ``tracks`` when it follows none now.

    The first target is the followed track overlapping the goal's region most, a later one the
    track overlapping the last target's box most; else the best-scoring.
    """
    followed = [t for t in tracks if t.followed]
    if not followed or (current is not None and current.followed):
        return
    target = _choose(followed, goal.region if goal.track_id < 0 else goal.last_box)
    goal.track_id, goal.last_box = target.track_id, target.box
    goal.last_seen = now
    if goal.found_at is None:
        goal.found_at = now


def lost_message(goal: FollowGoal, now: float, timeout: float) -> str:
    """Return the result message of a goal whose target was not tracked for ``timeout`` s."""
    if goal.track_id < 0:
        return (f'not found: the model found no box of {goal.read!r} scoring at least '
                f'{goal.min_score:g} within {timeout:g} s (lost_timeout)')
    return (f'lost: track {goal.track_id} ({goal.phrase!r}) not tracked for '
            f'{now - goal.last_seen:.1f} s (lost_timeout {timeout:g} s)')


def cancel_message(goal: FollowGoal) -> str:
    """Return the result message of a cancelled goal (``goal.success``: target followed)."""
    if goal.success:
        return f'cancelled while following track {goal.track_id}'
    if goal.track_id >= 0:
        return f'cancelled after track {goal.track_id} was lost'
    return 'cancelled while searching (no target found yet)'


def _choose(tracks: list[Any], near: PixelBox | None) -> Any:
    """Return the track overlapping ``near`` most (if any does), else the best-scoring."""
    if near is not None:
        overlap = iou_matrix([near], [t.box for t in tracks])[0]
        if overlap.max() > 0.0:
            return tracks[int(overlap.argmax())]
    return max(tracks, key=lambda t: t.score)
