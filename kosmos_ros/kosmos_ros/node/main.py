# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Entry point of ``ros2 run kosmos_ros grounding_node``."""

from __future__ import annotations

import argparse
import sys

from kosmos_ros.node.params import CAMERA_SPECS, SPECS


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
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if args is None else args
    parser = argparse.ArgumentParser(
        prog='grounding_node', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='KOSMOS-2 grounding node (managed): grounded captions, phrase grounding '
                    'and grounded questions on camera images.', epilog=_usage())
    parser.parse_args(remove_ros_args(argv)[1:])

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    from kosmos_ros.node.grounding_node import GroundingNode

    rclpy.init(args=argv)
    node = GroundingNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        if node.get_parameter('autostart').value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error('autostart: configure failed; the node stays '
                                        'unconfigured (fix the parameters, then configure)')
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop_worker()
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
