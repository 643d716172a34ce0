# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The demo behind ``make run``: the grounding node on a replayed camera bag.

``python -m kosmos_ros.demo`` builds the sample bag (``data/sample_bag``, photographs from
scikit-image) if it is missing, starts the grounding node with ``use_sim_time`` on the bag's
camera topic, replays the bag into it with :class:`~kosmos_ros.bag.player.BagPlayer` (its
timing and ``/clock``), prints every grounding as it arrives (camera, stamp, text, phrases with
pixel boxes and scores) and writes the node's annotated frames to ``results/demo/``.

The model is the real KOSMOS-2 (``microsoft/kosmos-2-patch14-224``), from a local folder, the
Hugging Face cache or downloaded. Where no weights can be had the demo says what it tried and
how to fix it, and exits with status 3. Only ``--tiny-model`` runs the tiny random test model, and
then every line the demo prints (and every node log line) carries its label. All DDS traffic
stays on loopback.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import threading
import time
from typing import Any, Sequence

from kosmos_ros.admission import image_topic
from kosmos_ros.bag import BagError
from kosmos_ros.bag.reading import open_reader, select_image_topics
from kosmos_ros.bag.sample import make_sample_bag
from kosmos_ros.bag.typestore import COMPRESSED_IMAGE
from kosmos_ros.cli_options import add_grounding_arguments, deprecated_alias, grounding_options
from kosmos_ros.testing.tiny_model import TINY_LABEL, tiny_model_path
from kosmos_ros.threads import quiet_openmp

TINY_TAG = 'TINY RANDOM TEST MODEL'  # the start of TINY_LABEL, on every line with --tiny-model
# Hub files the node needs: configuration, tokenizer and safetensors weights (no pickles).
WEIGHT_PATTERNS = ['*.json', '*.safetensors', '*.model', '*.txt']
NO_WEIGHTS_EXIT = 3


class Printer:
    """Print lines to stdout, each with the tiny model's tag when it is in use."""

    def __init__(self, tag: str = ''):
        self.prefix = f'[{tag}] ' if tag else ''
        self._lock = threading.Lock()

    def __call__(self, text: str = '', error: bool = False) -> None:
        with self._lock:
            for line in str(text).splitlines() or ['']:
                print(self.prefix + line, file=sys.stderr if error else sys.stdout, flush=True)


def find_weights(model: str, local_files_only: bool) -> tuple[str | None, list[str]]:
    """Return a local folder with KOSMOS-2 weights (or None) and what was tried."""
    tried = []
    path = Path(model).expanduser()
    if path.exists():
        return str(path), tried
    if model.startswith(('/', './', '../', '~')):
        return None, [f'the local folder {path}: it does not exist']
    from huggingface_hub import constants, snapshot_download

    try:
        folder = snapshot_download(model, local_files_only=True, allow_patterns=WEIGHT_PATTERNS)
        if any(Path(folder).glob('*.safetensors')):
            return folder, tried
        tried.append(f'the Hugging Face cache ({constants.HF_HUB_CACHE}): {model} is there '
                     'without safetensors weights')
    except (OSError, ValueError) as exc:
        tried.append(f'the Hugging Face cache ({constants.HF_HUB_CACHE}): not there '
                     f'({type(exc).__name__})')
    if local_files_only or constants.HF_HUB_OFFLINE:
        why = '--local-files-only' if local_files_only else 'HF_HUB_OFFLINE is set'
        tried.append(f'downloading from the Hugging Face hub: not attempted ({why})')
        return None, tried
    try:
        folder = snapshot_download(model, allow_patterns=WEIGHT_PATTERNS)
        if any(Path(folder).glob('*.safetensors')):
            return folder, tried
        tried.append(f'downloading {model}: it has no safetensors weights')
    except (OSError, ValueError) as exc:
        reason = ' '.join(str(exc).split())[:200]
        tried.append(f'downloading {model} from the Hugging Face hub: {reason}')
    return None, tried


def _no_weights_message(model: str, tried: list[str]) -> str:
    lines = [f'No KOSMOS-2 weights for {model!r} could be found or downloaded. Tried:']
    lines += [f'  - {item}' for item in tried]
    lines += ['How to fix it, any one of:',
              '  - connect to the internet and run again (the weights, about 6.7 GB, go to '
              'the Hugging Face cache);',
              f'  - on a connected machine: hf download {model}, then copy the '
              'cache (~/.cache/huggingface) here or set HF_HOME to it;',
              '  - pass --model /path/to/a/folder holding config.json and model.safetensors;',
              '  - to check the pipeline without real weights: make run RUN_ARGS=--tiny-model (a '
              'tiny RANDOM model; its words and boxes are meaningless).']
    return '\n'.join(lines)


def _box_text(box: Any) -> str:
    cx, cy = box.center.position.x, box.center.position.y
    return (f'[{cx - box.size_x / 2:.0f}, {cy - box.size_y / 2:.0f}, '
            f'{cx + box.size_x / 2:.0f}, {cy + box.size_y / 2:.0f}]')


def describe_grounding(msg: Any) -> str:
    """Camera, stamp, text, then one line per phrase with its pixel boxes and scores."""
    stamp = f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'
    lines = [f'{msg.camera} @ {stamp} ({msg.header.frame_id}): {msg.text!r}']
    for phrase in msg.phrases:
        boxes = ', '.join(f'{_box_text(b)} score {s:.2f}'
                          for b, s in zip(phrase.boxes, phrase.box_scores))
        lines.append(f'    {phrase.text!r}: {boxes or "no box"} (x1, y1, x2, y2 in pixels)')
    return '\n'.join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m kosmos_ros.demo',
        description='Replay a camera bag into the KOSMOS-2 grounding node and print its '
                    'groundings as they arrive.')
    parser.add_argument('--bag', default='data/sample_bag',
                        help='bag to replay; the sample bag is built here if missing')
    parser.add_argument('--topic', help='image topic of the bag (default: automatic)')
    parser.add_argument('--out', default='results/demo', help='folder for annotated frames')
    parser.add_argument('--speed', type=float, default=1.0,
                        help='bag playback speed factor (2.0 plays twice as fast)')
    deprecated_alias(parser, '--playback-rate', replacement='--speed', type=float)
    parser.add_argument('--settle', type=float, default=300.0,
                        help='seconds to wait for the last inference after the bag ends')
    add_grounding_arguments(parser, tracking=False, exclude=('min_score',),
                            rate_hz=1.0)  # groundings per second of bag time (the node's)
    args = parser.parse_args(argv)
    try:
        args.options = grounding_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    quiet_openmp()  # before torch loads (kosmos_ros.threads)
    say = Printer(TINY_TAG if args.tiny_model else '')
    if args.tiny_model:  # node log lines carry the label too (read when rclpy initialises logging)
        fmt = os.environ.get('RCUTILS_CONSOLE_OUTPUT_FORMAT', '[{severity}] [{name}]: {message}')
        os.environ['RCUTILS_CONSOLE_OUTPUT_FORMAT'] = f'[{TINY_TAG}] {fmt}'
    bag = Path(args.bag)
    try:
        if not bag.exists():
            say(f'building the sample bag {bag} (photographs from scikit-image)')
            make_sample_bag(bag)
        reader = open_reader(bag)
        try:
            stats = select_image_topics(reader, [args.topic] if args.topic else ())[0]
        finally:
            reader.close()
    except BagError as exc:
        say(f'demo: error: {exc}', error=True)
        return 2
    if args.tiny_model:
        say(f'using the {TINY_LABEL}')
        model, local_only = str(tiny_model_path()), True
    else:
        model, tried = find_weights(args.model, args.local_files_only)
        if model is None:
            say(_no_weights_message(args.model, tried), error=True)
            return NO_WEIGHTS_EXIT
        local_only = True
    return _run(args, say, bag, stats, model, local_only)


def _run(args: argparse.Namespace, say: Printer, bag: Path, stats: Any, model: str,
         local_only: bool) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    from kosmos_ros.bag.player import BagPlayer
    from kosmos_ros.node.grounding_node import GroundingNode
    from kosmos_ros.node.spinning import spin

    camera = stats.camera if stats.camera.isidentifier() else 'camera'
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f'{camera}_*.jpg'):  # frames of an earlier run
        old.unlink()
    overrides = _node_parameters(args, stats, camera, model, local_only)
    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=4)
    node = listener = player = None
    received: list[Any] = []
    halt = threading.Event()
    try:
        node = GroundingNode(parameter_overrides=overrides)
        listener = rclpy.create_node('kosmos_demo')
        executor.add_node(node)
        executor.add_node(listener)
        threading.Thread(target=spin, args=(executor, halt.is_set, node.callback_errors.report),
                         daemon=True).start()
        say(f'starting the grounding node on {stats.topic} ({args.task} at {args.rate_hz:g} Hz '
            f'of bag time); loading {model}')
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            say(f'demo: the node could not load the model {model} (its log line above says '
                'why); check --device, --dtype and --quantization', error=True)
            return 1
        node.trigger_activate()
        _listen(listener, camera, out, received, say)
        player = BagPlayer(listener, bag, rate=args.speed)
        if not player.wait_for_subscribers([stats.topic], timeout=10.0):
            say(f'demo: the node did not subscribe to {stats.topic} within 10 s', error=True)
            return 1
        _wait(lambda: listener.count_publishers(f'/{camera}/grounding') > 0, 5.0)
        _wait(lambda: node.count_subscribers(f'/{camera}/debug_image') > 0, 5.0)
        duration = (player.end_ns - player.start_ns) * 1e-9
        say(f'replaying {bag} ({duration:.1f} s at {args.speed:g}x, with /clock)')
        player.play()
        say('bag finished; waiting for the last inference')
        _wait_idle(node, args.settle)
    except KeyboardInterrupt:
        say('interrupted')
    finally:
        if player is not None:
            player.destroy()
        if node is not None:
            node.stop_worker()
        halt.set()  # before the shutdown: once shut down, spin_once still hands out work
        executor.shutdown(timeout_sec=5.0)
        for item in (node, listener):
            if item is not None:
                item.destroy_node()
        rclpy.try_shutdown()
    frames = len(list(out.glob(f'{camera}_*.jpg')))
    say(f'{len(received)} groundings printed; {frames} annotated frames in {out}/')
    return 0 if received else 1


def _listen(listener: Any, camera: str, out: Path, received: list[Any], say: Printer) -> None:
    """Print every grounding of the camera (kept in ``received``); save its debug images."""
    import cv2
    from kosmos_ros_interfaces.msg import Grounding
    import numpy as np
    from sensor_msgs.msg import Image

    def on_grounding(msg: Any) -> None:
        received.append(msg)
        say(describe_grounding(msg))

    def on_debug(msg: Any) -> None:
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        name = f'{camera}_{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}.jpg'
        cv2.imwrite(str(out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    listener.create_subscription(Grounding, f'/{camera}/grounding', on_grounding, 10)
    listener.create_subscription(Image, f'/{camera}/debug_image', on_debug, 10)


def _node_parameters(args: argparse.Namespace, stats: Any, camera: str, model: str,
                     local_only: bool) -> list[Any]:
    """Return the grounding node's parameters for the demo: one camera on the bag's topic."""
    from rclpy.parameter import Parameter

    compressed = stats.msgtype == COMPRESSED_IMAGE
    o = args.options
    params = dict(model=model, local_files_only=local_only, device=o.device, dtype=o.dtype,
                  quantization=o.quantization, cameras=[camera], rate_hz=o.rate_hz,
                  task=o.task, prompt=o.prompt, max_new_tokens=o.max_new_tokens,
                  cpu_threads=o.cpu_threads, depth_tolerance=o.depth_tolerance,
                  depth_min=o.depth_min, depth_max=o.depth_max,
                  depth_inner_fraction=o.depth_inner_fraction,
                  image_qos_reliability='reliable',
                  image_qos_depth=10, max_frame_age=0.0, camera_timeout=0.0, autostart=False,
                  use_sim_time=True, unsubscribe_idle_after=0.0)  # subscribed before replay
    params[f'{camera}.topic'] = image_topic(stats.topic, compressed)
    params[f'{camera}.transport'] = 'compressed' if compressed else 'raw'
    return [Parameter(k, value=v) for k, v in params.items()]


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _wait_idle(node: Any, timeout: float) -> None:
    """Wait until the node's worker has been idle for a while (or ``timeout``)."""
    worker = getattr(node, '_worker', None)
    if worker is None:
        return
    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        if worker.busy or worker.pending_jobs():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 1.0:
            return
        time.sleep(0.05)


if __name__ == '__main__':
    sys.exit(main())
