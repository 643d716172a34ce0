# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounded boxes followed on every camera frame between model results (ROS-free).

- :mod:`.track`: :class:`Track`, :class:`TrackState` and :class:`TrackerSettings`;
- :mod:`.association`: which model box belongs to which track (an optimal assignment);
- :mod:`.flow`: a box's motion by Lucas-Kanade optical flow (OpenCV);
- :mod:`.motion`: a constant-velocity Kalman filter per box, for frames the flow fails on;
- :mod:`.following`: the per-frame work over a track's kept frames;
- :mod:`.tracker`: :class:`~kosmos_ros.tracking.tracker.Tracker`, one camera's tracks;
- :mod:`.stream`: :class:`~kosmos_ros.tracking.stream.TrackStream`, the rules the node and
  ``ground_bag --track`` share (which frames, which boxes).

Importing this package imports OpenCV and scipy.
"""
