# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Bags without a ROS install: sample data, offline grounding and replay.

The command-line tools (console scripts; their shared flags: :mod:`kosmos_ros.cli_options`):

- :mod:`kosmos_ros.bag.sample`: ``make_sample_bag``, a camera stream of real photographs;
- :mod:`kosmos_ros.bag.ground_bag`: ``ground_bag``, offline grounding of a whole bag into an
  output bag, with a progress bar, a summary and an HTML report (no rclpy);
- :mod:`kosmos_ros.bag.player`: ``play_bag``, replay over rclpy with the original timing and
  ``/clock`` (for machines without ``ros2 bag play``).

Behind ``ground_bag`` (no rclpy, nothing from :mod:`kosmos_ros.node`):
:mod:`~kosmos_ros.bag.offline` (the run), :mod:`~kosmos_ros.bag.reading` (opening bags, their
errors, image topics), :mod:`~kosmos_ros.bag.output` (the output bag and report),
:mod:`~kosmos_ros.bag.records` (options, per-topic counts, the summary),
:mod:`~kosmos_ros.bag.pairing` and :mod:`~kosmos_ros.bag.depth_lifting` (depth topics, 3D),
:mod:`~kosmos_ros.bag.report` (HTML), :mod:`~kosmos_ros.bag.safety` (outputs apart from the
input, interrupts) and :mod:`~kosmos_ros.bag.typestore` (the ``rosbags`` typestore with the
project's messages, and the backend of :mod:`kosmos_ros.messages` over it).
"""

from kosmos_ros.errors import KosmosError


class BagError(KosmosError):
    """A bag cannot be read, written or used: missing, unknown storage, no image topic."""
