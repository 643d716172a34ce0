# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_ros: KOSMOS-2 grounding for ROS 2.

The package is a ROS-free core, importable without rclpy, and layers on top of it:

- :mod:`kosmos_ros.errors`, :mod:`kosmos_ros.datatypes`: the exception types, queries, results,
  boxes and timings every layer shares;
- :mod:`kosmos_ros.images`: image messages (duck-typed) and arrays to frames;
- :mod:`kosmos_ros.model`: the KOSMOS-2 pipeline (loading, prompts, preprocessing, decoding,
  parsing, boxes) and its entry point, :class:`~kosmos_ros.model.engine.GroundingEngine`;
- :mod:`kosmos_ros.tracking`: grounded boxes followed between model results on every frame;
- :mod:`kosmos_ros.depth`, :mod:`kosmos_ros.admission`, :mod:`kosmos_ros.messages`: lifting
  boxes to 3D, which frames get grounded, results as ROS messages over rclpy or rosbags types;
- :mod:`kosmos_ros.testing`: the tiny random model, sample photographs and generated scenes
  for tests, benchmarks and the demo;
- :mod:`kosmos_ros.bag`: sample bags, offline grounding of bags (``ground_bag``) and a player,
  through ``rosbags`` (no rclpy except in the player);
- :mod:`kosmos_ros.corpus`: a corpus of bags grounded, searched and compared
  (``kosmos_corpus``);
- :mod:`kosmos_ros.node`: the thin ROS layer (the lifecycle node, its topics, service and
  actions), and :mod:`kosmos_ros.demo`, the node on the embedded sample bag (``make run``).
"""
