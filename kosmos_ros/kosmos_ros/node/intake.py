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

Reliability (``image_qos_reliability``): a best-effort reader loses large frames even on one
host. Fast DDS's stock transports hold about 0.5 MB in flight per reader (shared-memory
segments of 512 KiB, which rmw_fastrtps uses between processes on one host; UDP sockets of
the system's default size, 208 KiB here), a 640x480 rgb8 frame is 0.9 MB and a 1280x720 one
2.7 MB, and a best-effort reader never asks for the fragments that did not fit: measured on
one host, a plain rclpy best-effort subscriber got 25-65 % of a 30 Hz 640x480 camera's frames
and 8-37 % of a 15 Hz 1280x720 one's, a reliable one 97-100 % (benchmarks/camera_rate.py). A
reliable reader does not match a best-effort writer, though, and many camera drivers publish
with sensor-data QoS (best effort). So ``auto`` (the default) looks at the publishers on the
topic when it subscribes: reliable when every one of them offers reliable, best effort
otherwise (and when there is none yet: best effort matches whichever comes). While subscribed,
each take looks again at most every :data:`RECHECK_PERIOD` seconds (from the graph DDS
discovery keeps; no spinning needed) and subscribes anew when a publisher that came or went
changes the choice; with no publisher left it keeps the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
import time
from typing import Any, Iterable

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

RECHECK_PERIOD = 0.5  # seconds between two looks at the publishers (auto), while taking


def matching_reliability(offered: Iterable[Any], current: str | None = None) -> str:
    """Return the reliability ``auto`` subscribes with, given the publishers' offered ones.

    ``'reliable'`` when every publisher offers reliable, ``'best_effort'`` when any does not
    (a reliable reader would not match it); with no publisher, ``current`` (keep what is
    subscribed), else ``'best_effort'`` (it matches whichever publisher comes first).
    """
    offered = list(offered)
    if not offered:
        return current or 'best_effort'
    return 'reliable' if all(policy == ReliabilityPolicy.RELIABLE for policy in offered) \
        else 'best_effort'


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
        """Make the intake of ``topic``; ``reliability`` is auto, reliable or best_effort."""
        self._node = node
        self._wanted = reliability
        self._depth = depth
        self.reliability: str | None = None  # what the current subscription uses
        self.qos_changes = 0  # subscriptions made anew because auto chose otherwise
        self._checked = 0.0  # monotonic time of the last look at the publishers
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

    @property
    def wanted(self) -> str:
        """The reliability asked for: reliable, best_effort or auto."""
        return self._wanted

    def acquire(self) -> bool:
        """Mark the camera as used now; subscribe if needed. True if it subscribed just now."""
        with self._lock:
            self.last_used = time.monotonic()
            if self.subscription is not None or self._closed:
                return False
            self._subscribe(self._choose(None))
            self.subscribed_count += 1
            self.subscribed_at = time.monotonic()
            return True

    def _choose(self, current: str | None) -> str:
        """Return the reliability to subscribe with now (``auto``: from the publishers)."""
        self._checked = time.monotonic()
        if self._wanted != 'auto':
            return self._wanted
        offered = [info.qos_profile.reliability
                   for info in self._node.get_publishers_info_by_topic(self.topic)]
        return matching_reliability(offered, current)

    def _subscribe(self, reliability: str) -> None:
        """Create the subscription (the lock held)."""
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._depth,
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                                      else ReliabilityPolicy.BEST_EFFORT))
        # The callback never runs: no executor spins this node (nor its QoS event handlers).
        self.subscription = self._node.create_subscription(
            self._msg_type, self._topic, lambda msg: None, qos,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
        self.reliability = reliability

    def _recheck(self) -> None:
        """``auto``: subscribe anew if the publishers now call for the other reliability.

        The lock held. The new subscription is made before the old one goes, so a publisher
        never sees the topic without a reader (a frame in flight to the old one is lost).
        """
        if self._wanted != 'auto' or self.subscription is None or \
                time.monotonic() - self._checked < RECHECK_PERIOD:
            return
        previous = self.reliability
        choice = self._choose(previous)
        if choice == previous:
            return
        old = self.subscription
        self._subscribe(choice)
        self._node.destroy_subscription(old)
        self.qos_changes += 1
        self._node.get_logger().info(
            f'{self.topic}: subscribed again as {choice.replace("_", " ")} (was '
            f'{(previous or "none").replace("_", " ")}): image_qos_reliability auto follows '
            'the publishers (reliable only when every one offers reliable)')

    def release(self) -> bool:
        """Drop the subscription (frames stop arriving); True if there was one."""
        with self._lock:
            sub, self.subscription = self.subscription, None
            self.reliability = None
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
            if self.subscription is None:
                return None
            self._recheck()
            sub = self.subscription
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
