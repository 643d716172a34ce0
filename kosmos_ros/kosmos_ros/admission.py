# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which camera frames get grounded, live and offline, with the stamp and topic helpers.

One rule (:func:`admit`) for the node and ``ground_bag``, applied in this order:

1. a ``sensor_msgs/Image`` of an encoding :data:`~kosmos_ros.images.SUPPORTED_ENCODINGS`
   does not list is refused, before any throttle (a ``CompressedImage`` has no encoding: its
   format is checked when it is decoded);
2. a frame without a stamp (0) takes the time of a clock: the node's clock live, the bag
   (receive) time offline;
3. with a rate, a frame is throttled unless :func:`rate_allows` it (message time).

Inputs are duck-typed messages (rclpy or rosbags); this module imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kosmos_ros.images import SUPPORTED_ENCODINGS

COMPRESSED_SUFFIX = '/compressed'  # image_transport's compressed topic: TOPIC/compressed


# -- stamps ------------------------------------------------------------------------------------

def _stamp(header_or_msg: Any) -> Any:
    return getattr(getattr(header_or_msg, 'header', header_or_msg), 'stamp', None)


def stamp_seconds(header_or_msg: Any) -> float:
    """Return the header stamp of a message (or of a header) in seconds; 0.0 when unstamped."""
    stamp = _stamp(header_or_msg)
    if stamp is None:
        return 0.0
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_nanoseconds(header_or_msg: Any) -> int:
    """Return the header stamp of a message (or of a header) in ns; 0 when unstamped."""
    stamp = _stamp(header_or_msg)
    if stamp is None:
        return 0
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# -- the rule ----------------------------------------------------------------------------------

def rate_allows(stamp: float, last_grounded: float | None, rate_hz: float) -> bool:
    """Tell whether a frame stamped ``stamp`` may be grounded now (message-time throttle).

    True for the first frame, after time went backwards (a looping bag), or once
    ``1 / rate_hz`` seconds of message time have passed since the last grounded frame.
    The offline bag tool applies the same rule, so live replay and offline runs agree.
    """
    if rate_hz <= 0:
        return False
    if last_grounded is None or stamp < last_grounded:
        return True
    return stamp - last_grounded >= 1.0 / rate_hz - 1e-6


@dataclass(frozen=True)
class Admission:
    """What to do with one frame.

    Attributes:
        stamp: the frame's time in seconds (its stamp, or the clock's when unstamped).
        refused: why the frame is refused (a count's key); empty when it is not.
        detail: the refusal as one log line, with what is supported.
        throttled: the rate does not allow the frame yet.
    """

    stamp: float
    refused: str = ''
    detail: str = ''
    throttled: bool = False

    @property
    def admitted(self) -> bool:
        return not self.refused and not self.throttled


def admit(encoding: str | None, stamp: float, now: float, last_grounded: float | None = None,
          rate_hz: float = 0.0) -> Admission:
    """Decide about one frame (see the module's rule).

    Args:
        encoding: the Image's encoding; None for a CompressedImage.
        stamp: the frame's header stamp in seconds (:func:`stamp_seconds`); 0 when unstamped.
        now: the clock's time in seconds, used when the frame is unstamped.
        last_grounded: the time of the last frame grounded from the same camera, if any.
        rate_hz: ground at most this many frames per second of message time; 0 throttles
            nothing here (the node's worker applies :func:`rate_allows` when it schedules).
    """
    stamp = stamp or now
    if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
        return Admission(stamp, refused=f'unsupported image encoding {encoding!r}',
                         detail=f'refusing images of unsupported encoding {encoding!r} '
                                f'(supported: {", ".join(SUPPORTED_ENCODINGS)})')
    if rate_hz > 0 and not rate_allows(stamp, last_grounded, rate_hz):
        return Admission(stamp, throttled=True)
    return Admission(stamp)


# -- topics ------------------------------------------------------------------------------------

def compressed_topic(topic: str) -> str:
    """Return the compressed transport's topic of an image topic (``TOPIC/compressed``)."""
    return topic + COMPRESSED_SUFFIX


def image_topic(topic: str, compressed: bool = True) -> str:
    """Return the image topic a transport topic carries, without a trailing ``/``.

    ``/cam/image_raw/compressed`` -> ``/cam/image_raw`` when ``compressed``; a raw topic keeps
    its name.
    """
    name = topic.rstrip('/')
    if compressed and name.endswith(COMPRESSED_SUFFIX):
        name = name[:-len(COMPRESSED_SUFFIX)]
    return name


def camera_namespace(topic: str, compressed: bool = False) -> str:
    """Return the namespace of an image topic (``/cam/image_raw`` -> ``/cam``; ``''`` at top)."""
    return image_topic(topic, compressed).rsplit('/', 1)[0]
