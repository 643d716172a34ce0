#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_eval's speed on the tiny model: labelled images evaluated per second.

A labelled set is generated (:mod:`kosmos_ros.testing.labelled_set`: ``--images`` JPEG files
of the shipped photographs at ``--size``, five categories). It is evaluated as
``kosmos_eval coco`` evaluates it (:func:`kosmos_ros.evaluation.run.ground_labels`, then
:func:`kosmos_ros.evaluation.record.evaluate` and ``write``) with the tiny random model,
every query generating exactly ``--tokens`` tokens, so every image is the same work: one
vision pass and one batch of five FIND queries. A first image is evaluated apart
to warm up. Printed: images/s and queries/s of the grounding, the seconds of the scoring
(matching, pycocotools, curves, calibration) and of writing, and images/s end to end; then
the scoring alone on a synthetic set of ``--scoring-images`` images with about five
detections each (the tiny model finds few boxes, so its own scoring is light).

Usage: tools/in-env python benchmarks/eval_speed.py [--images 24] [--tokens 8]
[--size 320x240] [--scoring-images 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import tempfile
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')


def bench(images: int, tokens: int, size: tuple[int, int]) -> dict:
    from kosmos_ros.evaluation.calibration import Target
    from kosmos_ros.evaluation.labels import read_labels
    from kosmos_ros.evaluation.record import evaluate, write
    from kosmos_ros.evaluation.run import ground_labels
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    from kosmos_ros.model.loading import ModelOptions
    from kosmos_ros.testing.labelled_set import make_labelled_set
    from kosmos_ros.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix='eval_speed_') as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / 'tiny')
        labels = read_labels(make_labelled_set(tmp / 'images', images, size))
        engine = GroundingEngine.load(
            ModelOptions(model=str(model), local_files_only=True, device='cpu'),
            EngineOptions(max_new_tokens=tokens, min_new_tokens=tokens, cpu_threads=1))
        ground_labels(labels, tmp / 'images', engine, limit=1)  # warm-up
        started = time.perf_counter()
        grounded = ground_labels(labels, tmp / 'images', engine)
        grounding_s = time.perf_counter() - started
        started = time.perf_counter()
        evaluation = evaluate(grounded, 'tiny', 0.0, Target('precision', 0.9))
        scoring_s = time.perf_counter() - started
        started = time.perf_counter()
        write(tmp / 'out', evaluation)
        writing_s = time.perf_counter() - started
    total = grounding_s + scoring_s + writing_s
    return {'images': len(grounded.images), 'phrases': len(labels.categories), 'tokens': tokens,
            'size': f'{size[0]}x{size[1]}', 'queries': grounded.queries,
            'detections': len(grounded.detections), 'grounding_s': grounding_s,
            'scoring_s': scoring_s, 'writing_s': writing_s,
            'grounding_images_per_s': len(grounded.images) / grounding_s,
            'queries_per_s': grounded.queries / grounding_s,
            'images_per_s': len(grounded.images) / total, 'cpus': os.cpu_count()}


def scoring_speed(images: int, seed: int = 0) -> dict:
    """Time the scoring alone on a synthetic set of ``images`` images.

    Five phrases, about 2.5 label boxes and 5 detections per image (half near a label box,
    half anywhere), random scores.
    """
    from collections import Counter

    import numpy as np

    from kosmos_ros.evaluation.calibration import Target
    from kosmos_ros.evaluation.labels import Category, LabelBox, LabelledImage, LabelSet
    from kosmos_ros.evaluation.record import evaluate
    from kosmos_ros.evaluation.run import Detection, EvaluatedImage, GroundedSet

    rng = np.random.default_rng(seed)
    categories = tuple(Category(c, f'phrase {c}', f'phrase {c}') for c in range(1, 6))
    evaluated, detections = [], []
    for image_id in range(1, images + 1):
        boxes = []
        for c in range(1, 6):
            for _ in range(rng.integers(0, 2)):
                x, y = rng.uniform(0, 500, 2).tolist()
                boxes.append(LabelBox(c, (x, y, x + 60, y + 50)))
                detections.append(Detection(image_id, c, (x + 3, y + 2, x + 62, y + 49),
                                            float(rng.random())))
            for _ in range(rng.integers(0, 2)):
                x, y = rng.uniform(0, 500, 2).tolist()
                detections.append(Detection(image_id, c, (x, y, x + 40, y + 40),
                                            float(rng.random())))
        evaluated.append(EvaluatedImage(image_id, Path(f'{image_id}.jpg'), 640, 480,
                                        tuple(boxes)))
    labelled = tuple(LabelledImage(i.image_id, i.path.name, 640, 480, i.boxes)
                     for i in evaluated)
    grounded = GroundedSet(LabelSet(Path('labels.json'), labelled, categories, Counter()),
                           evaluated, detections)
    started = time.perf_counter()
    evaluate(grounded, 'synthetic', 0.0, Target('precision', 0.9))
    seconds = time.perf_counter() - started
    return {'scoring_images': images, 'scoring_detections': len(detections),
            'scoring_alone_s': seconds, 'scoring_images_per_s': images / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=24)
    parser.add_argument('--tokens', type=int, default=8)
    parser.add_argument('--size', default='320x240', help='WIDTHxHEIGHT of the images')
    parser.add_argument('--scoring-images', type=int, default=2000,
                        help='images of the synthetic set the scoring alone is timed on')
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split('x'))
    figures = bench(args.images, args.tokens, (width, height))
    print(f'kosmos_eval on the tiny model: {figures["images"]} images {figures["size"]}, '
          f'{figures["phrases"]} phrases, {args.tokens} tokens per query, {figures["cpus"]} CPUs')
    print(f'  grounding: {figures["grounding_images_per_s"]:.2f} images/s '
          f'({figures["queries_per_s"]:.1f} queries/s)')
    print(f'  scoring: {figures["scoring_s"]:.3f} s; writing: {figures["writing_s"]:.3f} s')
    print(f'  end to end: {figures["images_per_s"]:.2f} images/s')
    figures.update(scoring_speed(args.scoring_images))
    print(f'  scoring alone, synthetic: {figures["scoring_images_per_s"]:.0f} images/s '
          f'({args.scoring_images} images, {figures["scoring_detections"]} detections, '
          f'{figures["scoring_alone_s"]:.2f} s)')
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
