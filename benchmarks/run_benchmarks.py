#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""CPU benchmarks of kosmos_ros, each row the reference against the project in one run.

Rows (``--only`` takes the names or the letters):

a. preprocessing: message to ``pixel_values`` at 640x480, 1280x720 and 1920x1080 from rgb8,
   bgr8 and JPEG messages of real photographs. Reference: ``rosbags.image.message_to_cvimage``
   + the installed ``Kosmos2Processor`` image processor; project: ``frame_from_message`` +
   ``Preprocessor``. With the maximum and mean difference in grey levels.
b. node_overhead: Image arrival in the node to its Detection2DArray published, minus model
   time, at 640x480 and 1920x1080 (tiny model, loopback DDS; see node_bench.py).
c. idle: CPU of the node process while a 30 Hz 1920x1080 rgb8 camera streams into it, with
   rate_hz 0 (on-demand) and 2.
d. queries: four queries on one frame, full-size random KOSMOS-2 on the CPU: four reference
   runs (processor + generate each) against one engine call (one vision pass, one batch).
e. full_size: one query, reference against engine, full-size random KOSMOS-2 on the CPU.
f. debug_latency: frame-to-Grounding latency of the project's node at 1920x1080, 10 Hz,
   without and with a reliable debug-image subscriber (columns: without, with).
g. tracking: boxes between 1 Hz model results on generated 30 Hz 640x480 scenes of
   photographs (benchmarks/tracking_bench.py). Reference: holding the last model box; project:
   the tracker (``kosmos_ros.tracking``). Mean IoU with the true boxes, identity switches, lost
   frames, and the tracker's cost per frame; then the same on a robot's camera (a window
   panning over four photographs with zoom, blurred, re-exposed and grey frames, results at
   3 Hz, 0 and 3 frames late).
h. corpus: a generated corpus (4 bags of 24 320x240 frames, 16 tokens per frame, tiny model)
   grounded by ``kosmos_ros.corpus`` with 1 Ray worker (reference) and 2 (project), seconds
   per frame over the grounding phase, and in this process without Ray; the indexes must be
   equal (benchmarks/corpus_bench.py).
i. camera_rate: the share of a camera's frames that get tracks, a 30 Hz 640x480 and a 15 Hz
   1280x720 rgb8 camera in a process of its own publishing with rclpy's default QoS
   (reliable, keep last 10), Fast DDS's stock set-up whatever ``--dds`` says; reference: the
   node with the old defaults (image_qos_reliability best_effort, depth 1), project: its
   defaults. Then a plain rclpy subscriber (best effort against reliable), continuous
   grounding at full rate while tracked (tiny model), and, where a network namespace can be
   made, a loopback-only UDP proxy for a camera on another machine
   (benchmarks/camera_rate.py). Loaded: the tracks cases only.

Every timing is the median of several repetitions, reference and project interleaved. Rows d
and e generate a fixed number of tokens (min_new_tokens = max_new_tokens).

Contention: a robot's computer is never idle, so rows a to c, g's cost, h and i run twice, quiet
and then loaded (``--no-contention`` skips the second run): the benchmark starts one busy
process per core but one (``while True: pass``), runs the rows again (named "... (loaded)")
and stops them. The project runs as the node does: its CPU work on one thread that set its
torch threads once (``kosmos_ros.threads``); the reference as users run it, with torch's
default threads.

Usage: make bench [BENCH_ARGS='--quick'] or
    tools/in-env python benchmarks/run_benchmarks.py [--quick] [--only a,b] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kosmos_ros.datatypes import Query, Task  # noqa: E402
from kosmos_ros.images import frame_from_array, frame_from_message  # noqa: E402
from kosmos_ros.model.engine import EngineOptions, GroundingEngine  # noqa: E402
from kosmos_ros.model.preprocess import Preprocessor  # noqa: E402
from kosmos_ros.model.prompts import build_prompt  # noqa: E402
from kosmos_ros.testing.samples import PHOTO_NAMES  # noqa: E402
from kosmos_ros.threads import DEFAULT_CPU_THREADS, opencv, use_cpu_threads  # noqa: E402

from gpu_bench import (build_full_size, build_tiny, camera_frame,  # noqa: E402,I100
                       load_processor, median, reference_generate, wrap_loaded)

ROWS = ('preprocessing', 'node_overhead', 'idle', 'queries', 'full_size', 'debug_latency',
        'tracking', 'corpus', 'camera_rate')
LETTERS = dict(zip('abcdefghi', ROWS))
SIZES = ((640, 480), (1280, 720), (1920, 1080))
ENCODINGS = ('rgb8', 'bgr8', 'jpeg')
FULL_QUERIES = (Query(Task.CAPTION), Query(Task.FIND, 'a cup of coffee'),
                Query(Task.FIND, 'a spoon'), Query(Task.QUESTION, 'What is on the table?'))


def _row(row: str, case: str, reference: float, project: float, unit: str, goal: str = '',
         meets: bool | None = None, note: str = '', **detail: Any) -> dict[str, Any]:
    ratio = reference / project if project else float('nan')
    return {'row': row, 'case': case, 'reference': reference, 'project': project,
            'unit': unit, 'ratio_ref_over_project': ratio, 'goal': goal, 'meets_goal': meets,
            'note': note, 'detail': detail}


def _seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(ref: Callable[[int], Any], proj: Callable[[int], Any], reps: int,
                warmup: int) -> tuple[list[float], list[float]]:
    """Time ``ref(i)`` and ``proj(i)`` alternately; return both lists of seconds."""
    for i in range(warmup):
        ref(i)
        proj(i)
    ref_s, proj_s = [], []
    for i in range(reps):
        for fn, out in ((ref, ref_s), (proj, proj_s)) if i % 2 == 0 else \
                ((proj, proj_s), (ref, ref_s)):
            started = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - started)
    return ref_s, proj_s


# -- a. preprocessing ------------------------------------------------------------------------

def _message(rgb: np.ndarray, encoding: str) -> Any:
    import cv2
    from sensor_msgs.msg import CompressedImage, Image
    if encoding == 'jpeg':
        ok, payload = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])
        return CompressedImage(format='jpeg', data=payload.tobytes())
    pixels = rgb if encoding == 'rgb8' else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                 step=rgb.shape[1] * 3, data=pixels.tobytes())


class OwnThread:
    """Run calls on a thread of its own whose torch threads were set once.

    As the node's inference worker does; the caller's own thread keeps torch's default.
    """

    def __init__(self, torch_threads: int = DEFAULT_CPU_THREADS):
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(1, initializer=use_cpu_threads,
                                        initargs=(torch_threads,))

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown()


class BusyCores:
    """One busy process per core but one, for the loaded runs (a robot's other work)."""

    def __enter__(self) -> BusyCores:
        count = max(1, (os.cpu_count() or 2) - 1)
        self.procs = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
                      for _ in range(count)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def bench_preprocessing(processor: Any, reps: int, warmup: int,
                        loaded: bool = False) -> list[dict[str, Any]]:
    from rosbags.image import message_to_cvimage
    image_processor = processor.image_processor
    pre = Preprocessor(image_processor)
    grey = torch.tensor(pre.std).view(1, 3, 1, 1) * 255.0
    own = OwnThread()
    suffix = ' (loaded)' if loaded else ''

    def reference(msg: Any) -> torch.Tensor:
        rgb = message_to_cvimage(msg, 'rgb8')
        return image_processor(images=rgb, return_tensors='pt')['pixel_values']

    def project(msg: Any) -> torch.Tensor:
        return own(lambda: pre([frame_from_message(msg)]))

    rows = []
    for width, height in SIZES:
        photos = [camera_frame(name, (width, height)) for name in PHOTO_NAMES]
        for encoding in ENCODINGS:
            msgs = [_message(rgb, encoding) for rgb in photos]
            diffs = [((project(m) - reference(m)).abs() * grey) for m in msgs]
            max_gl = float(max(d.max() for d in diffs))
            mean_gl = float(np.mean([float(d.mean()) for d in diffs]))
            ref_s, proj_s = interleaved(lambda i: reference(msgs[i % len(msgs)]),
                                        lambda i: project(msgs[i % len(msgs)]), reps, warmup)
            ref_ms, proj_ms = median(ref_s) * 1e3, median(proj_s) * 1e3
            p90 = float(np.percentile(proj_s, 90)) * 1e3
            goal, meets, ceiling = _preprocessing_goal(width, height, encoding, ref_ms, proj_ms,
                                                       max_gl, msgs, reps, own)
            rows.append(_row('a preprocessing' + suffix, f'{width}x{height} {encoding}', ref_ms,
                             proj_ms, 'ms', goal, meets,
                             f'diff max {max_gl:.2f} mean {mean_gl:.3f} grey levels; project '
                             f'p90 {p90:.1f} ms' + ceiling,
                             max_grey_levels=max_gl, mean_grey_levels=mean_gl,
                             reference_runs_s=ref_s, project_runs_s=proj_s,
                             photos=list(PHOTO_NAMES), fast_path=pre.fast))
            print_row(rows[-1])
    own.close()
    return rows


def _preprocessing_goal(width: int, height: int, encoding: str, ref_ms: float, proj_ms: float,
                        max_gl: float, msgs: list[Any], reps: int,
                        own: OwnThread) -> tuple[str, bool | None, str]:
    """Return the row's goal, whether it is met, and (JPEG) the decode bound of the ratio."""
    if encoding == 'jpeg':  # the decode both sides must do: the ratio's upper bound
        cv2 = opencv()
        payloads = [np.frombuffer(m.data, np.uint8) for m in msgs]
        decode_ms = median([own(_seconds, lambda: cv2.imdecode(
            payloads[i % len(payloads)], cv2.IMREAD_COLOR)) for i in range(reps)]) * 1e3
        ceiling = (f'; JPEG decode alone {decode_ms:.1f} ms, so at most '
                   f'{ref_ms / decode_ms:.1f}x')
        if (width, height) == (1920, 1080):
            return ('within 1.3x of decode', proj_ms <= 1.3 * decode_ms and max_gl <= 1.001,
                    ceiling)
        return '', None, ceiling
    if (width, height) == (1920, 1080):
        return '>=5x, <=1 grey level', ref_ms / proj_ms >= 5.0 and max_gl <= 1.001, ''
    if (width, height) == (640, 480):
        return '>=3x', ref_ms / proj_ms >= 3.0, ''
    return '', None, ''


# -- b. node overhead ------------------------------------------------------------------------

def bench_node_overhead(model_dir: Path, frames: int, warmup: int,
                        loaded: bool = False) -> list[dict[str, Any]]:
    from node_bench import node_overhead
    sizes = {f'{w}x{h}': camera_frame('coffee', (w, h)) for w, h in ((640, 480), (1920, 1080))}
    figures = node_overhead(model_dir, sizes, frames, warmup)
    rows = []
    for label, both in figures.items():
        ref, proj = both['reference'], both['project']
        big = label == '1920x1080'
        for key, what in (('overhead_minus_inference_ms', 'minus inference time'),
                          ('overhead_minus_model_ms', 'minus model forward')):
            meets = proj[key] < 5.0 if big else None
            note = (f'arrival->publish {proj["node_ms"]:.1f} ms; inference '
                    f'{proj["inference_ms"]:.1f} (preprocess {proj["preprocess_ms"]:.1f}, '
                    f'model {proj["model_ms"]:.1f}); DDS+deserialize before arrival '
                    f'{proj["transport_ms"]:.1f}; n={proj["frames"]}/{ref["frames"]}')
            rows.append(_row(f'b node overhead ({what})' + (' (loaded)' if loaded else ''),
                             label, ref[key], proj[key], 'ms',
                             '<5 ms at 1080p' if big else '', meets, note, reference_figures=ref,
                             project_figures=proj))
            print_row(rows[-1])
    return rows


def _cpu_rows(args: argparse.Namespace, processor: Any, model_dir: Path, log_dir: Path,
              loaded: bool) -> list[dict[str, Any]]:
    """Rows a to c, g, h and i, quiet or loaded."""
    rows: list[dict[str, Any]] = []
    if 'preprocessing' in args.rows:
        rows += bench_preprocessing(processor, args.reps, 3, loaded)
    if 'node_overhead' in args.rows:
        rows += bench_node_overhead(model_dir, args.reps, 3, loaded)
    if 'idle' in args.rows:
        rows += bench_idle(model_dir, args.idle_seconds, 3.0 if not args.quick else 2.0,
                           log_dir, loaded)
    if 'tracking' in args.rows:
        rows += bench_tracking_rows(args.quick, loaded, model_dir)
    if 'corpus' in args.rows:
        rows += bench_corpus_rows(model_dir, args.quick, loaded)
    if 'camera_rate' in args.rows:
        rows += bench_camera_rate_rows(model_dir, args.quick, loaded, log_dir)
    return rows


# -- i. camera frames that get tracks --------------------------------------------------------

def bench_camera_rate_rows(model_dir: Path, quick: bool, loaded: bool,
                           log_dir: Path) -> list[dict[str, Any]]:
    """Row i: tracks per camera frame, old defaults against the defaults (camera_rate.py)."""
    from camera_rate import measure, netns_available
    seconds = 4.0 if quick else 8.0
    logs = log_dir / ('camera_rate_loaded' if loaded else 'camera_rate')
    runs = {r['case']['name']: r for r in measure(model_dir, seconds, 'node tracks' if loaded
                                                  else '', log_dir=logs)}
    suffix = ' (loaded)' if loaded else ''
    rows = []

    def pct(run: dict[str, Any]) -> float:
        return 100.0 * run['share']

    def load(*names: str) -> str:
        loads = [runs[n][k] for n in names for k in ('load_before', 'load_after')]
        return f'load avg {min(loads):.1f}-{max(loads):.1f}'

    for label in ('640x480 30 Hz', '1280x720 15 Hz'):
        old, new = (runs[f'node tracks {label}, {tag}'] for tag in ('old defaults', 'defaults'))
        rows.append(_row('i camera frames with tracks' + suffix, label, pct(old), pct(new), '%',
                         '' if loaded else '>=95% (defaults)',
                         None if loaded else pct(new) >= 95.0,
                         f'{new["received"]}/{new["sent"]} frames (old {old["received"]}/'
                         f'{old["sent"]}); grounding {old["grounding_hz"]:.2f} / '
                         f'{new["grounding_hz"]:.2f} Hz (rate_hz 1); node CPU '
                         f'{old["cpu_pct"]:.0f} / {new["cpu_pct"]:.0f}% core; '
                         + load(f'node tracks {label}, old defaults',
                                f'node tracks {label}, defaults'), old=old, new=new))
        if loaded:
            continue
        be, rel = (runs[f'plain {r} {label}'] for r in ('best_effort', 'reliable'))
        rows.append(_row('i plain subscriber: best eff./rel.', label, pct(be), pct(rel), '%',
                         '', None, f'{be["message_bytes"] / 1e6:.2f} MB per frame; '
                         + load(f'plain best_effort {label}', f'plain reliable {label}'),
                         best_effort=be, reliable=rel))
    if not loaded:
        sensor = runs['plain best_effort 640x480 30 Hz, sensor-data publisher']
        rows[1]['note'] += (f'; a sensor-data (best effort) publisher to a best-effort '
                            f'subscriber: {pct(sensor):.0f}%')
        old, new = (runs[f'node grounding, rate_hz 100, {tag}']
                    for tag in ('old defaults', 'defaults'))
        rows.append(_row('i grounding while tracked', '640x480 30 Hz, rate_hz 100',
                         old['grounding_hz'], new['grounding_hz'], 'Hz', '>=0.9x old defaults',
                         new['grounding_hz'] >= 0.9 * old['grounding_hz'],
                         f'tracks on {pct(old):.0f} / {pct(new):.0f}% of frames; node CPU '
                         f'{old["cpu_pct"]:.0f} / {new["cpu_pct"]:.0f}% core; '
                         + load('node grounding, rate_hz 100, old defaults',
                                'node grounding, rate_hz 100, defaults'), old=old, new=new))
        rows += _camera_rate_proxy_rows(model_dir, seconds, log_dir, netns_available())
    for row in rows:
        print_row(row)
    return rows


def _camera_rate_proxy_rows(model_dir: Path, seconds: float, log_dir: Path,
                            why_not: str | None) -> list[dict[str, Any]]:
    """Row i over UDP alone (FASTDDS_BUILTIN_TRANSPORTS=UDPv4) in a loopback-only namespace."""
    name = 'i UDP-only loopback proxy'
    if why_not:
        return [_row(name, 'skipped', float('nan'), float('nan'), '%', '', None, why_not)]
    from camera_rate import measure
    runs = {r['case']['name']: r for r in measure(model_dir, seconds, 'node tracks',
                                                  netns='UDPv4',
                                                  log_dir=log_dir / 'camera_rate_udp')}
    rgb8, jpeg, sensor = (runs[f'node tracks 640x480 30 Hz{c}, defaults']
                          for c in ('', ' JPEG sensor-data', ' sensor-data'))
    return [_row(name, 'node tracks rgb8/JPEG', 100 * rgb8['share'], 100 * jpeg['share'], '%',
                 '', None, 'defaults; 30 Hz 640x480 rgb8 from a reliable camera, JPEG '
                 f'({jpeg["message_bytes"] / 1e3:.0f} kB, NAME.transport compressed) from a '
                 f'sensor-data one; rgb8 sensor-data {100 * sensor["share"]:.0f}%; not a second '
                 'machine: UDP over loopback (64 KB datagrams, no Ethernet MTU)', runs=runs)]


# -- h. corpus throughput --------------------------------------------------------------------

def bench_corpus_rows(model_dir: Path, quick: bool, loaded: bool) -> list[dict[str, Any]]:
    """Row h: the corpus with 1 and 2 Ray workers (and none), quiet or loaded."""
    from corpus_bench import bench_corpus
    figures = bench_corpus(model_dir, frames=12 if quick else 24)
    runs = figures['runs']
    suffix = ' (loaded)' if loaded else ''
    note = (f'frames/s: no Ray {runs[0]["fps"]:.2f}, 1 worker {runs[1]["fps"]:.2f}, '
            f'2 workers {runs[2]["fps"]:.2f}; start-up (Ray, hashing, planning, loading) '
            f'{runs[1]["setup_s"]:.1f} / {runs[2]["setup_s"]:.1f} s; same index: '
            f'{"yes" if figures["same_index"] else "NO"}')
    scaling = runs[2]['fps'] / runs[1]['fps']
    row = _row('h corpus: s/frame, 1 / 2 workers' + suffix,
               f'{figures["bags"]} bags x {figures["frames_per_bag"]} fr', 1.0 / runs[1]['fps'],
               1.0 / runs[2]['fps'], 's', 'same index; >=1.8x quiet' if not loaded else '',
               figures['same_index'] and (loaded or scaling >= 1.8),
               note + f'; 2 over 1 worker {scaling:.2f}x', figures=figures)
    worker_s = 1.0 / runs[1]['fps']  # one worker's time per frame, all its CPU
    driver = runs[2]['grounding_cpu_per_frame_s']
    cpu_row = _row('h corpus: driver CPU per frame' + suffix, '2 Ray workers', worker_s,
                   driver, 's', "<10% of a worker's", driver < 0.1 * worker_s,
                   f"{100 * driver / worker_s:.1f} % of one worker's time per frame over the "
                   'grounding; with start-up (Ray, hashing, planning) '
                   f'{runs[2]["driver_cpu_per_frame_s"]:.4f} s; in the process (no Ray) '
                   f'{runs[0]["grounding_cpu_per_frame_s"]:.4f} s')
    start = runs[0]['first_chunk_s']
    start_row = _row('h corpus: start to first chunk' + suffix, 'no Ray (auto)',
                     runs[1]['first_chunk_s'], start, 's', '<=10 s', start <= 10.0,
                     'reference: 1 Ray worker; hashing, planning, loading the tiny model, the '
                     'first chunk of 8 frames')
    for r in (row, cpu_row, start_row):
        print_row(r)
    return [row, cpu_row, start_row]


# -- f. results with and without a debug-image subscriber -----------------------------------

def bench_debug_latency(model_dir: Path, frames: int) -> list[dict[str, Any]]:
    from node_bench import debug_latency
    figures = debug_latency(model_dir, camera_frame('coffee', (1920, 1080)), frames)
    without, with_debug = figures['without debug subscriber'], figures['with debug subscriber']
    note = (f'p95 {without["p95_ms"]:.0f} / {with_debug["p95_ms"]:.0f} ms, max '
            f'{without["max_ms"]:.0f} / {with_debug["max_ms"]:.0f} ms; results '
            f'{without["results"]}/{without["frames_sent"]} and {with_debug["results"]}/'
            f'{with_debug["frames_sent"]}; {with_debug["debug_images"]} debug images received')
    row = _row('f frame to Grounding, debug image', '1080p 10 Hz: no/with sub',
               without['median_ms'], with_debug['median_ms'], 'ms',
               'with <= 1.5x without', with_debug['median_ms'] <= 1.5 * without['median_ms'],
               note, figures=figures)
    print_row(row)
    return [row]


# -- g. tracking between model results ------------------------------------------------------

def bench_tracking_rows(quick: bool, loaded: bool = False,
                        node_cost: Path | None = None) -> list[dict[str, Any]]:
    """Row g; loaded, only the costs (the scores do not depend on the load).

    With ``node_cost`` (the tiny model's folder), also the node's CPU with and without a
    tracks subscriber (``node_bench.tracking_cost``).
    """
    from tracking_bench import bench_robot, bench_tracking
    figures = bench_tracking(duration=4.0 if quick else 8.0)
    overall = figures['overall']
    robot = bench_robot(duration=5.0 if quick else 10.0)
    rows = []
    for run in [] if loaded else figures['scenes'] + [overall]:
        hold, tracked = run['hold'], run['tracked']
        last = run is overall
        rows.append(_row(
            'g tracking: mean IoU (hold/tracked)', run['scene'], hold['mean_iou'],
            tracked['mean_iou'], 'IoU', '>=0.75 and hold+0.2' if last else '',
            (tracked['mean_iou'] >= 0.75 and tracked['mean_iou'] >= hold['mean_iou'] + 0.2)
            if last else None,
            f'id switches {hold["switches"]}/{tracked["switches"]}; lost frames before '
            f'occlusion {hold["lost_before_occlusion"]}/{tracked["lost_before_occlusion"]}, '
            f'after {hold["lost_after_occlusion"]}/{tracked["lost_after_occlusion"]}',
            figures=run))
    hold, tracked = overall['hold'], overall['tracked']
    if not loaded:
        rows.append(_row('g tracking: identity switches', 'all scenes', hold['switches'],
                         tracked['switches'], 'count', '0', tracked['switches'] == 0))
        rows.append(_row('g tracking: lost before occlusion', 'all scenes',
                         hold['lost_before_occlusion'], tracked['lost_before_occlusion'],
                         'frames', '0', tracked['lost_before_occlusion'] == 0))
        rows += _robot_tracking_rows(robot)
    if node_cost is not None:
        from node_bench import tracking_cost
        cost = tracking_cost(node_cost, camera_frame('coffee', (640, 480)), 8.0, 2.0)
        rows.append(_row('g tracking: node CPU, 30 Hz 640x480' + (' (loaded)' if loaded else ''),
                         'no tracks reader / reader', cost['without_pct'], cost['with_pct'],
                         '% core', '', None,
                         f'tracks received {cost["tracks_hz"]:.1f}/s of '
                         f'{cost["sent_hz"]:.0f} frames/s; after the reader left '
                         f'{cost["after_pct"]:.1f}%', figures=cost))
    rows.append(_row('g tracking: cost per frame' + (' (loaded)' if loaded else ''),
                     '640x480, propagate', float('nan'),
                     overall['propagate_median_ms'], 'ms', '<=3 ms median',
                     overall['propagate_median_ms'] <= 3.0,
                     f'p90 {overall["propagate_p90_ms"]:.2f} ms, max '
                     f'{overall["propagate_max_ms"]:.2f} ms; update (1 Hz) median '
                     f'{overall["update_median_ms"]:.2f} ms; grey conversion '
                     f'{overall["gray_median_ms"]:.2f} ms', settings=figures['settings']))
    cost = robot['quiet']
    rows.append(_row('g tracking: robot camera p90' + (' (loaded)' if loaded else ''),
                     '640x480, propagate', float('nan'), cost['propagate_p90_ms'], 'ms',
                     '<=3 ms p90', cost['propagate_p90_ms'] <= 3.0,
                     f'median {cost["propagate_median_ms"]:.2f} ms, max '
                     f'{cost["propagate_max_ms"]:.2f} ms over the spoilt scenes, 0 and 3 '
                     'frames late'))
    for row in rows:
        print_row(row)
    return rows


def _robot_tracking_rows(robot: dict[str, Any]) -> list[dict[str, Any]]:
    """Row g on the robot-camera scenes (blur, exposure steps, occlusions; tracking_bench)."""
    rows = []
    for frames, lat in robot['latencies'].items():
        run = lat['overall']
        hold, tracked = run['hold'], run['tracked']
        case, goals = f'4 scenes, {frames} fr late', lat['goals']
        rows.append(_row('g tracking: robot cam. mean IoU', case, hold['mean_iou'],
                         tracked['mean_iou'], 'IoU', '>=0.90', goals['mean_iou_at_least_0.90'],
                         f'{run["occlusions"]} occlusions of 5 grey frames, 6 % blurred, 6 % '
                         're-exposed frames; results every 10th frame', figures=run))
        rows.append(_row('g tracking: robot cam. lost frames', case, hold['lost'],
                         tracked['lost'], 'frames', '<= half of hold',
                         goals['lost_at_most_half_of_hold']))
        rows.append(_row('g tracking: robot cam. id switches', case, hold['switches'],
                         tracked['switches'], 'count', '<=1 per occlusion, 0 other',
                         goals['switches_at_most_1_per_occlusion']
                         and goals['no_other_switches'],
                         f'most in one occlusion {tracked["switches_per_occlusion_max"]}, '
                         f'elsewhere {tracked["switches_other"]} (hold '
                         f'{hold["switches_per_occlusion_max"]}, {hold["switches_other"]})'))
    return rows


# -- c. idle cost ----------------------------------------------------------------------------

def bench_idle(model_dir: Path, seconds: float, warmup: float,
               log_dir: Path, loaded: bool = False) -> list[dict[str, Any]]:
    from node_bench import idle_cost
    rgb = camera_frame('coffee', (1920, 1080))
    log_dir.mkdir(parents=True, exist_ok=True)
    figures = idle_cost(model_dir, rgb, (0.0, 2.0), seconds, warmup, 30.0, log_dir)
    rows = []
    cases = (('project rate_hz=0', 'rate_hz=0 (on-demand), default parameters', True),
             ('project subscribed rate_hz=0', 'rate_hz=0, unsubscribe_idle_after 0 (always '
              'subscribed)', False),
             ('project rate_hz=2', 'rate_hz=2 (continuous)', False))
    for key, label, goal in cases:
        rate = key.rsplit('=', 1)[1]
        ref, proj = figures[f'reference rate_hz={rate}'], figures[key]
        received = proj['received_hz']
        note = (f'frames received/s ref {ref["received_hz"]:.1f} proj '
                + ('none (not subscribed)' if math.isnan(received) else f'{received:.1f}')
                + f' (sent {proj["sent_hz"]:.1f}); no-camera CPU ref '
                f'{ref["quiet_cpu_pct"]:.1f}% proj {proj["quiet_cpu_pct"]:.1f}%')
        if proj.get('first_query_ms') is not None:
            note += (f'; caption query after the window {proj["first_query_ms"]:.0f} ms, the '
                     f'next {proj["next_query_ms"]:.0f} ms')
            if proj['query_errors']:
                note += f' (errors: {"; ".join(proj["query_errors"])})'
        limit = 1.0 if loaded else 5.0
        rows.append(_row('c idle cost 30 Hz 1080p' + (' (loaded)' if loaded else ''), label,
                         ref['cpu_pct'], proj['cpu_pct'], '% core',
                         f'<{limit:g}% on-demand' if goal else '',
                         proj['cpu_pct'] < limit if goal else None, note,
                         reference_figures=ref, project_figures=proj))
        print_row(rows[-1])
    return rows


# -- d, e. full-size architecture ------------------------------------------------------------

def bench_full_size(processor: Any, reps: int, tokens: int,
                    wanted: set[str]) -> list[dict[str, Any]]:
    started = time.perf_counter()
    model = build_full_size(torch.float32, 'cpu')
    params = sum(p.numel() for p in model.parameters())
    print(f'built the full-size architecture ({params / 1e9:.2f} B parameters, float32) in '
          f'{time.perf_counter() - started:.0f} s; {torch.get_num_threads()} torch threads',
          flush=True)
    device = torch.device('cpu')
    loaded = wrap_loaded(model, processor, device, torch.float32, 'random Kosmos2Config()')
    engine = GroundingEngine(loaded, EngineOptions(max_new_tokens=tokens,
                                                   min_new_tokens=tokens))
    rgb = camera_frame('coffee', (640, 480))
    frame = frame_from_array(rgb)
    prompts = [build_prompt(q, rgb.shape[1], rgb.shape[0]) for q in FULL_QUERIES]
    ref_text: dict[int, str] = {}
    proj_text: dict[int, str] = {}
    timings: dict[str, Any] = {}

    def ref_one(k: int) -> None:
        out = reference_generate(processor, model, [rgb], prompts[k], tokens, device,
                                 torch.float32)
        text = processor.batch_decode(out, skip_special_tokens=True)[0]
        ref_text[k] = processor.post_process_generation(text)[0]

    def proj_one(_: int) -> None:
        result = engine.ground(frame, FULL_QUERIES[0])
        proj_text[0] = result.text
        timings['single'] = result.timings

    def proj_four(_: int) -> None:
        results = engine.ground_many(frame, FULL_QUERIES)
        for k, result in enumerate(results):
            proj_text[k] = result.text
        timings['four'] = results[0].timings

    rows = []
    ref_s, proj_s = interleaved(lambda i: ref_one(0), proj_one, reps, 1)
    single = {'reference_s': ref_s, 'project_s': proj_s}
    one = timings['single']
    if 'full_size' in wanted:
        same = ref_text[0] == proj_text[0]
        rows.append(_row('e full size, 1 query', f'{tokens} tokens, 640x480', median(ref_s),
                         median(proj_s), 's', '', None,
                         f'engine: vision {one.vision:.2f} s, generate {one.generate:.2f} s; '
                         f'same text: {same}', runs=single, same_text=same))
        print_row(rows[-1])
    if 'queries' in wanted:
        ref_s, proj_s = interleaved(lambda i: [ref_one(k) for k in range(len(prompts))],
                                    proj_four, reps, 0)
        four = timings['four']
        same = all(ref_text[k] == proj_text[k] for k in range(len(prompts)))
        ref, proj = median(ref_s), median(proj_s)
        rows.append(_row('d 4 queries, 1 frame', f'full size, {tokens} tokens', ref, proj, 's',
                         'project <=0.6x reference', proj / ref <= 0.6,
                         f'proj/ref {proj / ref:.2f}; engine: vision {four.vision:.2f} s, '
                         f'batched generate {four.generate:.2f} s (1 query: '
                         f'{one.generate:.2f} s); same texts: {same}',
                         runs={'reference_s': ref_s, 'project_s': proj_s}, same_text=same,
                         queries=[q.task.name.lower() + (f' {q.prompt}' if q.prompt else '')
                                  for q in FULL_QUERIES]))
        print_row(rows[-1])
    engine.close()
    return rows


# -- output ----------------------------------------------------------------------------------

def _num(value: float) -> str:
    if value != value:  # NaN
        return '-'
    return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'


def print_row(row: dict[str, Any]) -> None:
    meets = {True: 'yes', False: 'NO', None: ''}[row['meets_goal']]
    print(f'{row["row"]:<36} {row["case"]:<22} {_num(row["reference"]):>8} '
          f'{_num(row["project"]):>8} {row["unit"]:<7} {_num(row["ratio_ref_over_project"]):>7}'
          f'  {row["goal"]:<24} {meets:<4} {row["note"]}', flush=True)


HEADER = (f'{"row":<36} {"case":<22} {"ref":>8} {"project":>8} {"unit":<7} {"ref/prj":>7}  '
          f'{"goal":<24} {"met":<4} note')


def _git(*args: str) -> str:
    try:
        return subprocess.run(['git', *args], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:
        return ''


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='fewer repetitions; skip the full-size rows (d, e)')
    parser.add_argument('--only', action='append', default=[],
                        help='rows to run: ' + ', '.join(f'{k}/{v}' for k, v in LETTERS.items())
                        + ' (comma-separated or repeated)')
    parser.add_argument('--json', default='results/bench.json', help='JSON output path')
    parser.add_argument('--reps', type=int, default=None,
                        help='repetitions of rows a and b (default 15, quick 5)')
    parser.add_argument('--full-reps', type=int, default=3, help='repetitions of rows d, e')
    parser.add_argument('--tokens', type=int, default=4,
                        help='new tokens of rows d and e (min_new_tokens = max_new_tokens)')
    parser.add_argument('--dds', choices=('large-shm', 'stock'), default='large-shm',
                        help='Fast DDS set-up of rows b and c: large-shm (default) uses '
                        'benchmarks/fastdds_large_data.xml (32 MB shared-memory segments, UDP on '
                        'loopback); stock leaves the environment as it is')
    parser.add_argument('--no-contention', action='store_true',
                        help='skip the loaded runs of rows a to c')
    parser.add_argument('--idle-seconds', type=float, default=None,
                        help='measuring window of row c (default 10, quick 5)')
    args = parser.parse_args(argv)
    wanted = set()
    for item in args.only:
        for name in item.split(','):
            name = LETTERS.get(name.strip(), name.strip())
            if name not in ROWS:
                parser.error(f'unknown row {name!r}; rows: ' + ', '.join(ROWS))
            wanted.add(name)
    if not wanted:
        wanted = set(ROWS) - ({'queries', 'full_size'} if args.quick else set())
    args.rows = wanted
    args.reps = args.reps or (5 if args.quick else 15)
    args.idle_seconds = args.idle_seconds or (5.0 if args.quick else 10.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dds == 'large-shm':  # before any DDS participant exists; inherited by the nodes
        profile = str(Path(__file__).resolve().parent / 'fastdds_large_data.xml')
        os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] = profile
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    import PIL
    import transformers
    started = time.monotonic()
    out = Path(args.json)
    meta = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join([Path(sys.argv[0]).name] + list(argv or sys.argv[1:])),
        'git_commit': _git('rev-parse', 'HEAD'), 'git_dirty': bool(_git('status', '--short')),
        'machine': platform.machine(), 'cpus': os.cpu_count(),
        'torch_threads': torch.get_num_threads(), 'python': platform.python_version(),
        'torch': torch.__version__, 'transformers': transformers.__version__,
        'pillow': PIL.__version__, 'rows': sorted(args.rows), 'reps': args.reps,
        'full_reps': args.full_reps, 'tokens': args.tokens, 'dds': args.dds,
        'rmw': os.environ.get('RMW_IMPLEMENTATION', 'default')}
    print(f'kosmos_ros benchmarks: rows {", ".join(r for r in ROWS if r in args.rows)}; '
          f'{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} '
          f'threads), transformers {transformers.__version__}, Pillow {PIL.__version__}')
    print('Each row: median of repetitions, reference and project interleaved; ref/prj > 1 '
          'means the project is faster (or cheaper).')
    if 'node_overhead' in args.rows:
        print('Node overhead, method: timestamps inside the node, taken by wrapping its image '
              'callback and its detections publisher (no code changed): arrival = image '
              'callback entry, end = Detection2DArray publish returned; minus the engine '
              'Timings (Grounding.inference_time = preprocess + vision + generate + '
              'postprocess) or minus the model forward only (vision + generate). The '
              'reference node (benchmarks/reference_node.py) times the same instants around '
              'processor + generate + post_process_generation in its callback. Tiny model, '
              'loopback DDS, frames sent one at a time.')
    if args.rows & {'node_overhead', 'idle', 'debug_latency'}:
        print(f'DDS: {os.environ.get("RMW_IMPLEMENTATION", "default rmw")}, '
              + ('benchmarks/fastdds_large_data.xml (32 MB shared-memory segments; the stock '
                 '0.5 MB ones let about 1 of 30 best-effort 1080p frames through)'
                 if args.dds == 'large-shm' else 'stock settings of this environment'))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(tmp)
        processor = load_processor(model_dir)
        print(f'reference image processor: {type(processor.image_processor).__name__}')
        print(HEADER)
        rows += _cpu_rows(args, processor, model_dir, out.parent / 'bench_logs', False)
        if not args.no_contention and args.rows & {'preprocessing', 'node_overhead', 'idle',
                                                   'tracking', 'corpus', 'camera_rate'}:
            with BusyCores() as busy:
                print(f'-- loaded: {len(busy.procs)} busy process(es) beside the benchmark --')
                rows += _cpu_rows(args, processor, model_dir, out.parent / 'bench_logs', True)
        if 'debug_latency' in args.rows:
            rows += bench_debug_latency(model_dir, 40 if args.quick else 100)
        if args.rows & {'queries', 'full_size'}:
            rows += bench_full_size(processor, args.full_reps, args.tokens, args.rows)
    meta['seconds'] = time.monotonic() - started
    print()
    print(HEADER)
    for row in rows:
        print_row(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'meta': meta, 'rows': rows}, indent=2, default=str))
    print(f'wrote {out} ({meta["seconds"]:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
