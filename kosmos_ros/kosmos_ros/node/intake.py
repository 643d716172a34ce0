# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Camera frames taken from DDS only when inference needs them.

A subscription that an executor spins turns every frame into a Python message: for a 1080p
rgb8 camera at 30 Hz that alone keeps a core busy by a third (measured: 44 % of a core for a
bare rclpy subscriber, with all frames delivered), even when no frame is ever used. Here the
image subscriptions belong to a helper node that no executor spins. DDS keeps the newest sample
(keep last 1); the inference worker takes it when a query arrives or continuous grounding is
due, so only frames that are used are ever converted. Frames that arrive in between replace
each other inside DDS at no Python cost.

Even untaken, every frame still costs the DDS receive path a copy into the reader's history
(measured: about 6 % of a core for 30 Hz 1080p rgb8). So in on-demand mode the node can drop
the subscription itself while no query uses the camera (:meth:`CameraIntake.release`) and
subscribe again when the next query comes (:meth:`CameraIntake.acquire`); that query then
waits for the camera's next frame.

Each take also reads the publisher's sequence number, from which the input rate is estimated
without taking every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
import time
from typing import Any

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image


@dataclass
class Taken:
    """A message taken from DDS with when it was received (seconds, wall clock)."""

    msg: Any
    received: float
    sequence: int | None
    source_time: float


class CameraIntake:
    """The image subscription of one camera, taken from on demand, dropped while unused."""

    def __init__(self, node: Any, topic: str, compressed: bool, reliability: str,
                 depth: int, subscribe: bool = True):
        self._node = node
        self._qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                               reliability=(ReliabilityPolicy.RELIABLE
                                            if reliability == 'reliable'
                                            else ReliabilityPolicy.BEST_EFFORT))
        self._msg_type = CompressedImage if compressed else Image
        self._topic = topic
        self.topic = node.resolve_topic_name(topic)
        self._lock = threading.Lock()
        self._closed = False
        self.subscription: Any = None
        self.subscribed_count = 0  # subscriptions made (the first and every re-subscription)
        self.subscribed_at: float | None = None  # monotonic time of the current subscription
        self.last_used = time.monotonic()
        self._first_sequence: int | None = None
        self._first_time = 0.0
        self.rate_hz: float | None = None
        self.taken = 0
        self._seen_first: int | None = None
        self._seen_last: int | None = None
        if subscribe:
            self.acquire()

    @property
    def subscribed(self) -> bool:
        return self.subscription is not None

    def acquire(self) -> bool:
        """Mark the camera as used now; subscribe if needed. True if it subscribed just now."""
        with self._lock:
            self.last_used = time.monotonic()
            if self.subscription is not None or self._closed:
                return False
            # The callback never runs: no executor spins this node (nor its QoS event
            # handlers).
            self.subscription = self._node.create_subscription(
                self._msg_type, self._topic, lambda msg: None, self._qos,
                event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
            self.subscribed_count += 1
            self.subscribed_at = time.monotonic()
            return True

    def release(self) -> bool:
        """Drop the subscription (frames stop arriving); True if there was one."""
        with self._lock:
            sub, self.subscription = self.subscription, None
            if sub is not None:
                self._node.destroy_subscription(sub)
        return sub is not None

    def close(self) -> None:
        """Release for good: later :meth:`acquire` calls do nothing."""
        with self._lock:
            self._closed = True
        self.release()

    def publishers(self) -> int:
        """Count the publishers on the topic (from discovery; needs no subscription)."""
        return self._node.count_publishers(self.topic)

    def take(self) -> Taken | None:
        """Return the newest message not taken yet, or None (cheap when nothing is new)."""
        with self._lock:
            sub = self.subscription
            if sub is None:
                return None
            with sub.handle:
                info = sub.handle.take_message(sub.msg_type, sub.raw)
        if info is None:
            return None
        msg, meta = info[0], info[1] if len(info) > 1 else {}
        received = float(meta.get('received_timestamp', 0)) * 1e-9
        source = float(meta.get('source_timestamp', 0)) * 1e-9
        sequence = meta.get('publication_sequence_number')
        self.taken += 1
        if sequence is not None:
            if self._seen_first is None or sequence < (self._seen_last or 0):
                self._seen_first = sequence  # first frame, or the publisher restarted
            self._seen_last = sequence
        self._update_rate(sequence, source)
        return Taken(msg, received, sequence, source)

    @property
    def published(self) -> int | None:
        """Frames the publisher sent since the first one taken (its sequence numbers)."""
        if self._seen_first is None or self._seen_last is None:
            return None
        return self._seen_last - self._seen_first + 1

    def _update_rate(self, sequence: int | None, source_time: float) -> None:
        """Input rate = messages published between two takes / time between them."""
        if sequence is None or source_time <= 0:
            return
        if self._first_sequence is None or sequence < self._first_sequence:
            self._first_sequence, self._first_time = sequence, source_time
            return
        span = source_time - self._first_time
        if span >= 1.0:
            self.rate_hz = (sequence - self._first_sequence) / span
            self._first_sequence, self._first_time = sequence, source_time


def intake_node(parent: Any) -> Any:
    """Create the never-spun helper node that owns the image subscriptions of ``parent``.

    Its name derives from the parent's (``NAME_image_intake``) whatever the command line
    says: it ignores the global arguments, so a ``__node:=`` remap meant for the parent does
    not give both nodes one name, and no remap rule applies twice. Topic names reach it
    already resolved by the parent's own rules (``GroundingNode._resolve``).
    """
    import rclpy
    return rclpy.create_node(f'{parent.get_name()}_image_intake',
                             namespace=parent.get_namespace(), context=parent.context,
                             use_global_arguments=False, start_parameter_services=False,
                             enable_rosout=False)
