# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_ros: KOSMOS-2 grounding for ROS 2.

The modules of this package split into a ROS-free core, importable without rclpy:

- :mod:`kosmos_ros.errors`: the exception types the core raises;
- :mod:`kosmos_ros.datatypes`: queries, results, boxes and timings;
- :mod:`kosmos_ros.prompts`: tasks, prompt templates, control-token neutralisation, regions;
- :mod:`kosmos_ros.parsing`: generated text to cleaned text, phrases and location tokens;
- :mod:`kosmos_ros.boxes`: the 32x32 location grid, normalized and pixel boxes;
- :mod:`kosmos_ros.images`: image messages (duck-typed) and arrays to frames;
- :mod:`kosmos_ros.preprocess`: frames to ``pixel_values``, fast and reference-exact;
- :mod:`kosmos_ros.loading`: model loading with dtype, quantization and device options;
- :mod:`kosmos_ros.decoding`: batched greedy decoding with per-token probabilities;
- :mod:`kosmos_ros.static_decode`: the static-cache / CUDA-graph decode step;
- :mod:`kosmos_ros.depth`: lifting pixel boxes to 3D with registered depth, its settings;
- :mod:`kosmos_ros.admission`: which camera frames get grounded; stamps and topic names;
- :mod:`kosmos_ros.messages`: results as ROS messages, over rclpy or rosbags types;
- :mod:`kosmos_ros.engine`: :class:`~kosmos_ros.engine.GroundingEngine`, the entry point;
- :mod:`kosmos_ros.bag`: sample bags, offline grounding of bags (``ground_bag``) and a player,
  through ``rosbags`` (no rclpy except in the player);

a thin ROS layer in :mod:`kosmos_ros.node` that converts messages, and :mod:`kosmos_ros.demo`,
the node on the embedded sample bag (``make run``).
"""
