# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The model pipeline of KOSMOS-2, ROS-free: frames and queries in, grounded results out.

- :mod:`.loading`: the model and processor, with dtype, quantization and device options;
- :mod:`.prompts`: tasks, prompt templates, control-token neutralisation, regions;
- :mod:`.tokens`: prompt ids, control-token checks and post-processing of generated ids;
- :mod:`.preprocess`: frames to ``pixel_values``, fast and within a grey level of the reference;
- :mod:`.decoding` and :mod:`.static_decode`: batched greedy and beam decoding, the
  static-cache / CUDA-graph decode step;
- :mod:`.parsing`: generated text to cleaned text, phrases and location tokens;
- :mod:`.boxes`: the 32x32 location grid, normalized and pixel boxes;
- :mod:`.engine`: :class:`~kosmos_ros.model.engine.GroundingEngine`, which runs them in order
  (preprocess, forward, postprocess) and is what the node, ``ground_bag`` and the corpus use.
"""
