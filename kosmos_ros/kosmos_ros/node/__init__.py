# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ROS 2 layer: the lifecycle node, its parameters, worker and message conversions."""
