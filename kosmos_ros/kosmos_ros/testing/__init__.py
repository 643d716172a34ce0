# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Test support: a tiny random KOSMOS-2, sample photographs, generated moving scenes.

Nothing at run time on a robot imports this package: the tests, the benchmarks, the demo
(``make run``) and the ``--tiny-model`` flags of the command-line tools do.

- :mod:`.tiny_model`: a tiny random KOSMOS-2 with the real tokenizer, built locally;
- :mod:`.samples`: the scikit-image photographs the samples and tests use;
- :mod:`.scenes` and :mod:`.camera_scenes`: moving scenes with known boxes for the tracker's
  tests and benchmarks (clean scenes, and a robot's camera: blur, exposure steps, occlusion).
"""
