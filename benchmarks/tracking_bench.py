#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tracking between model results against holding the last model box, on generated scenes.

Scenes (``kosmos_ros.tracking_scenes.standard_scenes``, rendered at run time, never stored):
objects cut from photographs move over other photographs at 2 to 6 pixels a frame while their
size swings by about 25 % a second; one scene pans the camera, one hides a third of the object
behind a bar for its second half, one moves two look-alike cups of one phrase past each other.
Frames come at 30 Hz (640x480); model results at 1 Hz from the true boxes with noise (3 % of
the box size per edge) on KOSMOS-2's 32x32 grid, optionally ``--latency`` seconds late.

Two trackers get the same results: "hold" is a Tracker that is never given a frame (each
track keeps the box of its last model result, ids by the same assignment); "tracked" also
follows every frame. On each frame after the first result, the true boxes are matched to the
reported boxes (``linear_sum_assignment`` on 1 - IoU). Figures:

- mean IoU between model results: over frames on which no result arrives (a true box with no
  reported box scores 0);
- identity switches: a true object matched to another track id than on its last match;
- lost frames: frames on which a true object has no reported box with IoU >= 0.3, before the
  occluder first touches an object and after;
- cost: ``time.perf_counter()`` around ``Tracker.propagate`` per frame (the grey conversion,
  which the node also does, is reported apart); ``update`` (1 Hz) is reported apart too.

Usage: tools/in-env python benchmarks/tracking_bench.py [--duration 8] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.images import frame_from_array
from kosmos_ros.tracking import gray_for_tracking, iou_matrix, Tracker, TrackerSettings
from kosmos_ros.tracking_scenes import Scene, standard_scenes

LOST_IOU = 0.3
METHODS = ('hold', 'tracked')


class Score:
    """Figures of one method on one scene, accumulated frame by frame."""

    def __init__(self, objects: int):
        self.ious: list[float] = []
        self.switches = 0
        self.lost_before = 0
        self.lost_after = 0
        self._last_ids: list[int | None] = [None] * objects

    def add(self, truth: Sequence[PixelBox], boxes: Sequence[PixelBox], ids: Sequence[int],
            between: bool, occluded: bool) -> None:
        overlap = np.zeros((len(truth), 0))
        matched: dict[int, int] = {}
        if boxes:
            overlap = iou_matrix(truth, boxes)
            rows, cols = linear_sum_assignment(1.0 - overlap)
            matched = {int(r): int(c) for r, c in zip(rows, cols) if overlap[r, c] > 0.0}
        for j in range(len(truth)):
            iou = float(overlap[j, matched[j]]) if j in matched else 0.0
            if between:
                self.ious.append(iou)
            if iou < LOST_IOU:
                if occluded:
                    self.lost_after += 1
                else:
                    self.lost_before += 1
            if j in matched:
                track_id = ids[matched[j]]
                if self._last_ids[j] is not None and self._last_ids[j] != track_id:
                    self.switches += 1
                self._last_ids[j] = track_id

    def figures(self) -> dict[str, Any]:
        return {'mean_iou': float(np.mean(self.ious)) if self.ious else float('nan'),
                'switches': self.switches, 'lost_before_occlusion': self.lost_before,
                'lost_after_occlusion': self.lost_after, 'frames_scored': len(self.ious)}


def run_scene(scene: Scene, settings: TrackerSettings, latency: float) -> dict[str, Any]:
    """Run both methods over one scene; return their figures and the tracker's costs."""
    trackers = {'hold': Tracker(settings), 'tracked': Tracker(settings)}
    scores = {name: Score(len(scene.movers)) for name in METHODS}
    rng = np.random.default_rng(scene.seed)
    occlusion = scene.occlusion_start()
    pending: list[tuple[float, float, list[Any]]] = []
    propagate_s, update_s, gray_s = [], [], []
    started = False
    for index, (stamp, rgb) in enumerate(scene.frames()):
        if scene.has_result(index):
            pending.append((stamp + latency, stamp, list(scene.model_result(stamp, rng)
                                                         .detections())))
        begin = time.perf_counter()
        gray = gray_for_tracking(frame_from_array(rgb))
        gray_s.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        trackers['tracked'].propagate(stamp, gray)
        propagate_s.append(time.perf_counter() - begin)
        arrived = [p for p in pending if p[0] <= stamp + 1e-9]
        pending = [p for p in pending if p[0] > stamp + 1e-9]
        for _, result_stamp, detections in arrived:
            begin = time.perf_counter()
            trackers['tracked'].update(result_stamp, detections)
            update_s.append(time.perf_counter() - begin)
            trackers['hold'].update(result_stamp, detections)
        started = started or bool(arrived)
        if not started:
            continue
        truth = scene.truth(stamp)
        occluded = occlusion is not None and stamp >= occlusion
        for name in METHODS:
            tracks = trackers[name].tracks()
            scores[name].add(truth, [t.box for t in tracks], [t.track_id for t in tracks],
                             not arrived, occluded)
    return {'scene': scene.name, 'frames': len(propagate_s),
            'occlusion_start_s': occlusion,
            **{name: scores[name].figures() for name in METHODS},
            'propagate_ms': [s * 1e3 for s in propagate_s],
            'update_ms': [s * 1e3 for s in update_s], 'gray_ms': [s * 1e3 for s in gray_s]}


def _overall(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the scenes: IoU weighted by frames scored, counts summed, costs pooled."""
    total: dict[str, Any] = {'scene': 'all'}
    for name in METHODS:
        frames = sum(r[name]['frames_scored'] for r in runs)
        total[name] = {
            'mean_iou': sum(r[name]['mean_iou'] * r[name]['frames_scored'] for r in runs)
            / max(frames, 1),
            **{key: sum(r[name][key] for r in runs) for key in
               ('switches', 'lost_before_occlusion', 'lost_after_occlusion', 'frames_scored')}}
    for key in ('propagate_ms', 'update_ms', 'gray_ms'):
        total[key] = [v for r in runs for v in r[key]]
    return total


def _costs(run: dict[str, Any]) -> dict[str, float]:
    return {'propagate_median_ms': float(np.median(run['propagate_ms'])),
            'propagate_p90_ms': float(np.percentile(run['propagate_ms'], 90)),
            'propagate_max_ms': float(np.max(run['propagate_ms'])),
            'update_median_ms': float(np.median(run['update_ms'])),
            'gray_median_ms': float(np.median(run['gray_ms']))}


def bench_tracking(duration: float = 8.0, latency: float = 0.0,
                   settings: TrackerSettings | None = None) -> dict[str, Any]:
    """Run every standard scene; return per-scene and overall figures with the goals."""
    settings = settings or TrackerSettings()
    runs = [run_scene(scene, settings, latency) for scene in standard_scenes(duration)]
    overall = _overall(runs)
    for run in runs + [overall]:
        run.update(_costs(run))
    hold, tracked = overall['hold'], overall['tracked']
    goals = {
        'tracked_iou_at_least_0.75': tracked['mean_iou'] >= 0.75,
        'tracked_iou_0.2_above_hold': tracked['mean_iou'] >= hold['mean_iou'] + 0.2,
        'no_identity_switches': tracked['switches'] == 0,
        'not_lost_before_occlusion': tracked['lost_before_occlusion'] == 0,
        'median_cost_at_most_3_ms': overall['propagate_median_ms'] <= 3.0,
    }
    for run in runs + [overall]:
        for key in ('propagate_ms', 'update_ms', 'gray_ms'):
            del run[key]
    return {'duration_s': duration, 'latency_s': latency, 'lost_iou': LOST_IOU,
            'settings': repr(settings), 'scenes': runs, 'overall': overall, 'goals': goals}


def print_table(figures: dict[str, Any]) -> None:
    """Print the scenes side by side, hold against tracked, and the goals."""
    print(f'tracking: {figures["duration_s"]:g} s per scene, 30 Hz 640x480, model results at '
          f'1 Hz, {figures["latency_s"]:g} s late; lost = no box with IoU >= '
          f'{figures["lost_iou"]}')
    print(f'{"scene":<22} {"mean IoU hold/trk":>18} {"id switches":>12} '
          f'{"lost before occl.":>18} {"lost after":>11} {"propagate ms med/p90/max":>25} '
          f'{"update ms":>9}')
    for run in figures['scenes'] + [figures['overall']]:
        hold, tracked = run['hold'], run['tracked']
        print(f'{run["scene"]:<22} {hold["mean_iou"]:>8.3f} / {tracked["mean_iou"]:<7.3f} '
              f'{hold["switches"]:>5} / {tracked["switches"]:<4} '
              f'{hold["lost_before_occlusion"]:>8} / {tracked["lost_before_occlusion"]:<7} '
              f'{hold["lost_after_occlusion"]:>4} / {tracked["lost_after_occlusion"]:<4} '
              f'{run["propagate_median_ms"]:>9.2f} / {run["propagate_p90_ms"]:.2f} / '
              f'{run["propagate_max_ms"]:<6.2f} {run["update_median_ms"]:>7.2f}')
    print('goals: ' + ', '.join(f'{k} {"yes" if v else "NO"}'
                                for k, v in figures['goals'].items()))
    print(f'grey conversion (not in propagate): median '
          f'{figures["overall"]["gray_median_ms"]:.2f} ms per frame')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--duration', type=float, default=8.0, help='seconds per scene')
    parser.add_argument('--latency', type=float, default=0.0,
                        help="seconds from a model result's frame to its arrival")
    args = parser.parse_args(argv)
    print_table(bench_tracking(args.duration, args.latency))
    return 0


if __name__ == '__main__':
    sys.exit(main())
