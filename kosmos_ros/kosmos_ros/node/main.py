# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Entry point of ``ros2 run kosmos_ros grounding_node``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from kosmos_ros.node.parameter_table import CAMERA_SPECS, SPECS
from kosmos_ros.threads import quiet_openmp


def _usage() -> str:
    lines = ['parameters (--ros-args -p NAME:=VALUE, or a params file):']
    for name, spec in SPECS.items():
        lines.append(f'  {name} (default {spec.default!r}){" [reload]" if spec.reload else ""}')
        lines.append(f'      {spec.description}')
    for name, spec in CAMERA_SPECS.items():
        lines.append(f'  CAMERA.{name} (default {spec.default!r}) [reload]')
        lines.append(f'      {spec.description}')
    return '\n'.join(lines)


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the exit status.

    Signals only set an event: the executor spins on its own thread, so a signal never
    raises inside rclpy or in the middle of the shutdown (``ros2 launch`` sends SIGINT
    twice), and the process stops within seconds at any moment, a model load included.
    Then the node is closed, destroyed and the context shut down, in that order, so that
    nothing logs to a dead context.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # A node logs lines: no progress bars (they leave blank lines under ros2 launch).
    os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
    quiet_openmp()  # before torch loads (kosmos_ros.threads)

    from rclpy.utilities import remove_ros_args

    argv = sys.argv if args is None else args
    parser = argparse.ArgumentParser(
        prog='grounding_node', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='KOSMOS-2 grounding node (managed): grounded captions, phrase grounding '
                    'and grounded questions on camera images.', epilog=_usage())
    parser.parse_args(remove_ros_args(argv)[1:])

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from kosmos_ros.node.grounding_node import GroundingNode
    from kosmos_ros.node.spinning import spin

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = GroundingNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    halt = threading.Event()
    spinner = threading.Thread(target=spin, name='kosmos_executor', daemon=True,
                               args=(executor, halt.is_set, node.callback_errors.report))
    spinner.start()
    node.autostart()
    status = 0
    while not stop.wait(0.25):
        if not spinner.is_alive():  # the executor ended on its own (its context shut down)
            status = 0 if not rclpy.ok() else 1
            break
    # From here on further signals are ignored: Python's exit restores the default handlers
    # before the process ends, and a second Ctrl-C (launch sends its own) would then kill it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    node.close()  # pending requests are answered as cancelled, while the executor spins
    halt.set()  # no more spinning: once shut down, spin_once would still hand out work
    spinner.join(timeout=5.0)
    executor.shutdown(timeout_sec=5.0)  # nothing may run on the node once it is destroyed
    loading = node.transition_running  # e.g. a model load, in native code
    node.destroy_node()
    rclpy.try_shutdown()
    if loading:
        # Python's exit would tear the interpreter down under that thread (native code
        # aborts: "terminate called without an active exception"); nothing is left to save.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == '__main__':
    sys.exit(main())
