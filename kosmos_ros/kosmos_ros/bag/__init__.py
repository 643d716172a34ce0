# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Bags without a ROS install: sample data, offline grounding and replay.

- :mod:`kosmos_ros.bag.typestore`: a ``rosbags`` typestore with the project's messages, and
  engine results as bag messages (no rclpy);
- :mod:`kosmos_ros.bag.sample`: ``make_sample_bag``, a camera stream of real photographs;
- :mod:`kosmos_ros.bag.ground_bag`: ``ground_bag``, offline grounding of a whole bag into an
  output bag, with a progress bar, a summary and an HTML report (no rclpy);
- :mod:`kosmos_ros.bag.player`: ``play_bag``, replay over rclpy with the original timing and
  ``/clock`` (for machines without ``ros2 bag play``).
"""

from kosmos_ros.errors import KosmosError


class BagError(KosmosError):
    """A bag cannot be read, written or used: missing, unknown storage, no image topic."""
