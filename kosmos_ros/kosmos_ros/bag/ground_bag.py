# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``ground_bag``: ground every image of a bag offline and write the results into a new bag.

Reads rosbag2 (MCAP, sqlite3) and ROS 1 bags with ``rosbags``; needs no rclpy. Image topics
(``sensor_msgs/Image`` and ``CompressedImage``) are picked automatically (every raw topic,
and every compressed topic without its raw twin) or by name. Each selected frame, or those a
message-time rate admits (:func:`kosmos_ros.admission.admit`, the node's rule), goes through
the same :class:`~kosmos_ros.model.engine.GroundingEngine` as the node. The output MCAP bag holds
``<base>/detections`` (``vision_msgs/Detection2DArray``) and ``<base>/grounding``
(``kosmos_ros_interfaces/Grounding``) with the source headers and bag times, where ``<base>``
is the camera namespace of the image topic (``/camera/image_raw`` -> ``/camera``).

Depth: when the bag also holds a registered depth image topic (``16UC1`` in mm or ``32FC1``
in m) and a ``sensor_msgs/CameraInfo`` topic for an image topic (named with ``--depth-topic``
and ``--camera-info-topic``, or paired automatically by camera namespace: ``NS/depth/...`` or
``NS/aligned_depth_to_color/image_raw`` and ``NS/camera_info``; the exact rule is in
:mod:`kosmos_ros.bag.pairing`), every box is lifted to 3D as the node does: the output also
holds ``<base>/detections_3d`` (``vision_msgs/Detection3DArray``, metres in the camera's
optical frame, one per grounded frame, empty when it has no 3D) and the phrases of
``<base>/grounding`` carry their 3D position. Depth frames are matched by header stamp within
a tolerance; a frame without a match, or with too few valid depth pixels, gets no 3D and its
reason is counted in the summary.

Tracking (``--track``): the grounded boxes become tracks with lasting ids, followed by optical
flow on every admitted frame, grounded or throttled by ``--rate-hz`` (at most
``--track-rate-hz`` of them per second of message time), with the node's code
(:class:`~kosmos_ros.tracking.stream.TrackStream`). The output then also holds, one message per
tracked frame with its header and bag time, ``<base>/tracks`` (``vision_msgs/Detection2DArray``:
``id`` the track id, ``class_id`` the phrase) and, with depth, ``<base>/tracks_3d``
(``vision_msgs/Detection3DArray``). A track lives ``--track-max-age`` seconds of message time
after the last model result that confirmed it. Frames the tracker cannot use are counted with
their reason.

Frames that cannot be used (corrupt JPEG, unsupported encoding, ...) are counted skips with
their reason. A damaged bag, or an output that cannot be written, is a BagError naming the
path and the reason. No output (bag, HTML report, frames) may be, hold or lie inside the input
(:func:`~kosmos_ros.bag.safety.check_outputs`). The output bag is closed whatever happens, so
an interrupted run (Ctrl-C, pressed any number of times) leaves a valid bag holding the frames
done so far (:class:`~kosmos_ros.bag.safety.SigintGuard`).

This module is the command line; the run is :func:`kosmos_ros.bag.offline.ground_bag`
(re-exported here with the names the command has always offered), reading bags is
:mod:`kosmos_ros.bag.reading`, writing them :mod:`kosmos_ros.bag.output`.
"""

from __future__ import annotations

if __name__ == '__main__':  # a command: SIGINT and SIGTERM held while the modules import
    from kosmos_ros import early_signals
    early_signals.hold()

import argparse
import os
from pathlib import Path
import sys
from typing import Any, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.offline import ground_bag, plan_bag_run
from kosmos_ros.bag.pairing import PAIRING_RULE
from kosmos_ros.bag.reading import open_reader, output_base, select_image_topics
from kosmos_ros.bag.records import BagSummary, FrameOutcome, GroundBagOptions, TopicStats
from kosmos_ros.bag.safety import SigintGuard
from kosmos_ros.cli_options import (add_depth_topic_arguments, add_grounding_arguments,
                                    exit_with, grounding_options, model_options)
from kosmos_ros.early_signals import replay
from kosmos_ros.errors import KosmosError, ModelLoadError
from kosmos_ros.threads import quiet_openmp

__all__ = ['BagSummary', 'default_output', 'FrameOutcome', 'ground_bag', 'GroundBagOptions',
           'main', 'open_reader', 'output_base', 'select_image_topics',
           'TopicStats']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ground_bag', description='Ground the images of a bag with KOSMOS-2 and write '
        'the detections and groundings into an output MCAP bag (no ROS runtime needed). With '
        'a registered depth image (16UC1 mm or 32FC1 m) and camera_info for an image topic, '
        'the boxes are also lifted to 3D (<base>/detections_3d and the phrase positions).',
        epilog=PAIRING_RULE + ' Automatic image topic selection leaves those depth topics '
        'out. Depth must be registered to the colour image, and the images rectified.')
    parser.add_argument('bag', help='rosbag2 folder, .mcap or .db3 file, or ROS 1 .bag')
    parser.add_argument('-o', '--output',
                        help='output bag folder, apart from the input (default: BAG_grounded '
                             'beside the bag, or beside its rosbag2 folder)')
    parser.add_argument('--topic', action='append', default=[],
                        help='image topic to ground (repeatable; default: automatic)')
    parser.add_argument('--limit', type=int, default=0, help='stop after N grounded frames')
    parser.add_argument('--copy-input', action='store_true', help='copy the input topics')
    parser.add_argument('--overwrite', action='store_true', help='replace the output bag')
    parser.add_argument('--html', help='write an HTML report with annotated frames here')
    parser.add_argument('--html-embed', action='store_true',
                        help='embed the frames in the HTML file (default: files beside it)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_depth_topic_arguments(parser)
    add_grounding_arguments(parser)
    return parser


def default_output(bag: Path) -> Path:
    """Return ``<bag>_grounded`` beside the bag, or beside its rosbag2 folder for a file in one.

    Never inside the input: the output must lie apart from it (:func:`check_outputs`).
    """
    source = bag.parent if bag.is_file() and (bag.parent / 'metadata.yaml').is_file() else bag
    if source.name in ('', '.', '..'):
        source = Path(os.path.abspath(source))
    return source.with_name(source.stem + '_grounded')


def _options(args: argparse.Namespace, label: str) -> GroundBagOptions:
    """Return the options of the command line; ValueError naming an invalid flag."""
    bag = Path(args.bag)
    return GroundBagOptions.from_grounding(
        grounding_options(args), bag=bag,
        output=Path(args.output) if args.output else default_output(bag),
        topics=tuple(args.topic), copy_input=args.copy_input, overwrite=args.overwrite,
        html=Path(args.html) if args.html else None, html_embed=args.html_embed,
        limit=args.limit, model_label=label, depth_topics=tuple(args.depth_topic),
        camera_info_topics=tuple(args.camera_info_topic), use_depth=not args.no_depth)


def _load_engine(args: argparse.Namespace) -> Any:
    """Load the model the command line names; ModelLoadError."""
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    if args.tiny_model:
        print(f'ground_bag: using the {TINY_LABEL}', file=sys.stderr)
    options = EngineOptions(max_new_tokens=args.max_new_tokens, cpu_threads=args.cpu_threads)
    return GroundingEngine.load(model_options(args), options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (1: no model, 2: an error, 130: Ctrl-C).

    After a Ctrl-C, SIGINT stays ignored until the process exits: the output is closed
    whole, and a Ctrl-C during the exit prints no traceback.
    """
    args = _parser().parse_args(argv)
    quiet_openmp()  # before torch loads (kosmos_ros.threads)
    with SigintGuard(ignore_after=True) as sigint:
        try:
            replay()  # one that came while the modules imported (kosmos_ros.early_signals)
            return _command(args, sigint)
        except KeyboardInterrupt:
            print('ground_bag: interrupted', file=sys.stderr)
            return 130


def _command(args: argparse.Namespace, sigint: SigintGuard) -> int:
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    try:  # every check before the (slow) model load, once
        plan = plan_bag_run(_options(args, TINY_LABEL if args.tiny_model else ''))
    except (BagError, ValueError) as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    try:
        engine = _load_engine(args)
    except ModelLoadError as exc:
        print(f'ground_bag: cannot load the model: {exc}', file=sys.stderr)
        return 1
    try:
        summary = ground_bag(plan, engine, progress=not args.no_progress, guard=sigint)
    except KosmosError as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    print(summary.describe())
    return 130 if summary.interrupted else 0


def entry() -> None:
    """Run :func:`main` as a command and exit with its status (:func:`exit_with`)."""
    exit_with(main)


if __name__ == '__main__':
    early_signals.release()
    entry()
