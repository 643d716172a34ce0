# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``play_bag``: publish a rosbag2's messages over rclpy with their timing, and ``/clock``.

For machines without ``ros2 bag play`` (ROS 2 from PyPI has no rosbag2). Messages go out at
their bag (receive) times, scaled by a rate factor, as the serialized CDR stored in the bag:
no deserialization, so any type rclpy can import plays. ``/clock``
(``rosgraph_msgs/Clock``) carries the bag time, published before every message and at
``clock_hz`` in between, so nodes with ``use_sim_time`` see the bag's time, as with
``ros2 bag play --clock``. ROS 1 bags play too: their messages are converted to CDR with the
ROS 2 definitions of :func:`~kosmos_ros.bag.typestore.project_typestore` (other types are
skipped).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import importlib
from pathlib import Path
import sys
import threading
import time
from typing import Any, Mapping, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.cli_options import deprecated_alias


def message_class(msgtype: str) -> Any:
    """Import the rclpy message class of ``pkg/msg/Name``; raise BagError if it is missing."""
    parts = msgtype.split('/')
    if len(parts) != 3 or parts[1] != 'msg':
        raise BagError(f'{msgtype!r} is not a message type name (pkg/msg/Name)')
    try:
        return getattr(importlib.import_module(f'{parts[0]}.msg'), parts[2])
    except (ImportError, AttributeError):
        raise BagError(f'message type {msgtype} is not installed for rclpy') from None


@dataclass
class PlayStats:
    """What a playback published."""

    published: dict[str, int] = field(default_factory=dict)
    clock_messages: int = 0
    loops: int = 0
    wall_s: float = 0.0
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.published.values())


class BagPlayer:
    """Replay one rosbag2 through publishers of ``node``.

    Args:
        node: the rclpy node that owns the publishers (any executor, or none: publishing
            needs no spinning).
        bag: rosbag2 folder, ``.mcap`` or ``.db3`` file, or ROS 1 ``.bag``.
        rate: playback speed factor (2.0 plays twice as fast).
        loop: play again from the start until stopped.
        topics: topics to play; empty plays every topic whose type rclpy has.
        remap: output topic names, ``{bag topic: published topic}``.
        clock: publish ``/clock`` from the bag time.
        clock_hz: ``/clock`` messages per wall second between bag messages.
        qos_depth: history depth of the (reliable, volatile) publishers.
    """

    def __init__(self, node: Any, bag: str | Path, *, rate: float = 1.0, loop: bool = False,
                 topics: Sequence[str] = (), remap: Mapping[str, str] | None = None,
                 clock: bool = True, clock_hz: float = 100.0, qos_depth: int = 10):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from kosmos_ros.bag.reading import open_reader
        from kosmos_ros.bag.typestore import project_typestore

        if not rate > 0:
            raise BagError(f'rate must be positive; got {rate}')
        if clock and not clock_hz > 0:
            raise BagError(f'clock_hz must be positive; got {clock_hz}')
        self.node = node
        self.path = Path(bag)
        self.rate = float(rate)
        self.loop = loop
        self.clock_period = 1.0 / clock_hz if clock else None
        self.skipped_topics: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = PlayStats()
        self.store = project_typestore()
        reader = open_reader(self.path)
        try:
            self.is_ros1 = not reader.is2
            available = {c.topic: c.msgtype for c in reader.connections}
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
        finally:
            reader.close()
        for name in topics:
            if name not in available:
                raise BagError(f'topic {name} is not in {self.path}; topics: '
                               + ', '.join(sorted(available)))
        remap = dict(remap or {})
        qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers: dict[str, Any] = {}
        for name, msgtype in sorted(available.items()):
            if topics and name not in topics:
                continue
            if self.is_ros1 and msgtype not in self.store.fielddefs:
                self.skipped_topics[name] = f'{msgtype} (ROS 1) has no ROS 2 definition'
                continue
            try:
                cls = message_class(msgtype)
            except BagError as exc:
                self.skipped_topics[name] = str(exc)
                continue
            self.publishers[name] = node.create_publisher(cls, remap.get(name, name), qos)
        if not self.publishers:
            raise BagError(f'nothing to play in {self.path}: '
                           + ('; '.join(self.skipped_topics.values()) or 'no topics'))
        self.clock_publisher = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self._clock_type = Clock
            self.clock_publisher = node.create_publisher(Clock, '/clock', qos)

    # -- control -----------------------------------------------------------------------------

    def wait_for_subscribers(self, topics: Sequence[str] = (), timeout: float = 10.0) -> bool:
        """Wait until each of ``topics`` (bag names; default: all) has a subscriber."""
        names = list(topics) or list(self.publishers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.publishers[n].get_subscription_count() > 0 for n in names):
                return True
            time.sleep(0.01)
        return all(self.publishers[n].get_subscription_count() > 0 for n in names)

    def start(self) -> None:
        """Play in a background thread (see :meth:`join` and :meth:`stop`)."""
        self._thread = threading.Thread(target=self.play, name='bag_player', daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for background playback; True when it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def stop(self) -> None:
        self._stop.set()

    def destroy(self) -> None:
        """Stop and remove the publishers from the node."""
        self.stop()
        self.join(5.0)
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        if self.clock_publisher is not None:
            self.node.destroy_publisher(self.clock_publisher)
        self.publishers = {}
        self.clock_publisher = None

    # -- playback ----------------------------------------------------------------------------

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_publisher is None:
            return
        msg = self._clock_type()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self.clock_publisher.publish(msg)
        self.stats.clock_messages += 1

    def _wait_until(self, wall_start: float, bag_ns: int) -> bool:
        """Sleep until ``bag_ns`` is due, ticking /clock; False when stopped meanwhile."""
        due = wall_start + (bag_ns - self.start_ns) * 1e-9 / self.rate
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= due:
                return True
            if self.clock_period is None:
                self._stop.wait(due - now)
                continue
            elapsed_ns = int((now - wall_start) * self.rate * 1e9)
            self._publish_clock(min(bag_ns, self.start_ns + elapsed_ns))
            self._stop.wait(min(due - now, self.clock_period))
        return False

    def play(self) -> PlayStats:
        """Play the bag (again and again with ``loop``) until its end or :meth:`stop`."""
        from kosmos_ros.bag.reading import open_reader

        started = time.monotonic()
        try:
            while not self._stop.is_set():
                reader = open_reader(self.path)
                try:
                    wanted = [c for c in reader.connections if c.topic in self.publishers]
                    wall_start = time.monotonic()
                    for conn, bag_ns, raw in reader.messages(connections=wanted):
                        if not self._wait_until(wall_start, bag_ns):
                            break
                        self._publish_clock(bag_ns)
                        if self.is_ros1:
                            raw = self.store.ros1_to_cdr(raw, conn.msgtype)
                        self.publishers[conn.topic].publish(
                            raw if isinstance(raw, bytes) else bytes(raw))
                        self.stats.published[conn.topic] = \
                            self.stats.published.get(conn.topic, 0) + 1
                finally:
                    reader.close()
                self.stats.loops += 1
                if not self.loop:
                    break
        finally:
            self.stats.stopped = self._stop.is_set()
            self.stats.wall_s = time.monotonic() - started
        return self.stats


def _parse_remap(items: Sequence[str]) -> dict[str, str]:
    remap = {}
    for item in items:
        source, sep, target = item.partition(':=')
        if not sep or not source or not target:
            raise BagError(f'--remap takes FROM:=TO; got {item!r}')
        remap[source] = target
    return remap


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='play_bag', description='Publish a rosbag2 over ROS 2 with its original timing '
        'and /clock (like ros2 bag play --clock), for machines without rosbag2.')
    parser.add_argument('bag', help='rosbag2 folder, .mcap or .db3 file, or ROS 1 .bag')
    parser.add_argument('--speed', type=float, default=1.0,
                        help='playback speed factor (1.0; 2.0 plays twice as fast)')
    deprecated_alias(parser, '-r', '--rate', replacement='--speed', type=float)
    parser.add_argument('-l', '--loop', action='store_true', help='play until Ctrl-C')
    parser.add_argument('--topic', action='append', default=[],
                        help='topic to play (repeatable; default: every topic)')
    deprecated_alias(parser, '--topics', replacement='--topic', kind='extend', nargs='+')
    parser.add_argument('--remap', nargs='+', default=[], help='FROM:=TO topic names')
    parser.add_argument('--no-clock', action='store_true', help='do not publish /clock')
    parser.add_argument('--clock-hz', type=float, default=100.0,
                        help='/clock messages per second between bag messages (100)')
    parser.add_argument('--delay', type=float, default=0.5,
                        help='seconds to wait for subscribers before playing (0.5)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run play_bag; exit 0, 2 on a bad bag or option, 130 when a signal ended it.

    SIGINT (Ctrl-C, the way to end ``--loop``) and SIGTERM (systemd, ros2 launch) stop the
    playback between two messages: the count of what was published is printed and the ROS
    context is shut down after the last publish, not under it (rclpy's own handlers shut it
    down at once, and the next publish raised).
    """
    import signal

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    args_in = list(sys.argv[1:] if argv is None else argv)
    # Our options end where --ros-args starts; rcl sees only its own part, so that our
    # --remap FROM:=TO is not read as a (deprecated) global remapping rule.
    split = args_in.index('--ros-args') if '--ros-args' in args_in else len(args_in)
    own, ros_args = args_in[:split], args_in[split:]
    args = _parser().parse_args(own)

    rclpy.init(args=['play_bag', *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('bag_player')
    player: BagPlayer | None = None
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        if player is None:  # not playing yet: end at once
            raise KeyboardInterrupt
        player.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        player = BagPlayer(node, args.bag, rate=args.speed, loop=args.loop,
                           topics=args.topic, remap=_parse_remap(args.remap),
                           clock=not args.no_clock, clock_hz=args.clock_hz)
        for topic, reason in player.skipped_topics.items():
            print(f'play_bag: not playing {topic}: {reason}', file=sys.stderr)
        player.wait_for_subscribers(timeout=0.0 if received else args.delay)
        duration = (player.end_ns - player.start_ns) * 1e-9
        print(f'play_bag: playing {args.bag} ({duration:.1f} s of bag time, '
              f'{len(player.publishers)} topics) at {args.speed:g}x', flush=True)
        stats = player.play()
        ended = f', stopped by {signal.Signals(received[0]).name}' if received else ''
        print(f'play_bag: published {stats.total} messages in {stats.wall_s:.1f} s{ended}')
        code = 130 if received else 0
    except BagError as exc:
        print(f'play_bag: error: {exc}', file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
