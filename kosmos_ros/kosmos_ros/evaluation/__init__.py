# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Accuracy on labelled images and the ``min_score`` that gives it (``kosmos_eval``, ROS-free).

``kosmos_eval coco LABELS.json -o OUT`` grounds every image of a COCO-format label file with
the engine, options record and flags of ``ground_bag`` (the FIND task, one query per category
phrase on every image) and scores the detections against the labels:

- :mod:`.labels`: the COCO label file read as untrusted data (size limit, types, ids, boxes),
  each category's phrase (its name, or a mapping file's wording);
- :mod:`.run`: the grounding loop over the labelled images;
- :mod:`.matching`: detections matched to label boxes at IoU 0.5 as ``pycocotools`` matches
  them; true and false positives, misses, the confusion of phrases;
- :mod:`.average_precision`: AP@0.5 and AP@[.5:.95] by ``pycocotools.cocoeval.COCOeval``;
- :mod:`.metrics`: precision, recall and precision-recall curves, per phrase and overall;
- :mod:`.calibration`: the ``min_score`` that reaches a target precision or recall, and the
  params-file fragment that sets it on the node;
- :mod:`.record`: ``eval.json``, ``predictions.json`` and ``min_score.yaml`` of a run;
- :mod:`.report` (plots in :mod:`.report_plots`): the HTML report of an ``eval.json``;
- :mod:`.flickr30k`, :mod:`.refcoco`: the article's benchmarks read from their public
  annotation formats (never a pickle); :mod:`.benchmarks` grounds them as the article did and
  :mod:`.benchmark_metrics` scores them (recall@1, accuracy@0.5);
- :mod:`.cli`: the command (its benchmark and report subcommands in :mod:`.benchmark_cli`).
"""

from kosmos_ros.errors import KosmosError


class EvaluationError(KosmosError, ValueError):
    """Labels, a phrase map or an evaluation that cannot be used, with the reason."""
