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

import argparse
import math
import os
from pathlib import Path
import sys
from typing import Any, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.cli import add_model_arguments, deprecated_alias, model_options
from kosmos_ros.bag.offline import ground_bag, pair_depth
from kosmos_ros.bag.pairing import PAIRING_RULE
from kosmos_ros.bag.reading import open_reader, output_base, select_image_topics
from kosmos_ros.bag.records import BagSummary, FrameOutcome, GroundBagOptions, TopicStats
from kosmos_ros.bag.safety import check_outputs, SigintGuard
from kosmos_ros.datatypes import Task
from kosmos_ros.depth import DepthSettings
from kosmos_ros.errors import KosmosError, ModelLoadError
from kosmos_ros.threads import quiet_openmp

__all__ = ['BagSummary', 'default_output', 'FrameOutcome', 'ground_bag', 'GroundBagOptions',
           'main', 'open_reader', 'output_base', 'pair_depth', 'select_image_topics',
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
    parser.add_argument('--task', default='caption',
                        help='caption, detailed_caption, find, question or raw')
    parser.add_argument('--prompt', default='', help='phrase, question or raw prompt')
    parser.add_argument('--max-new-tokens', type=int, default=64)
    parser.add_argument('--rate-hz', type=float, default=0.0,
                        help='frames per second of message time per topic (0: every frame)')
    deprecated_alias(parser, '--rate', replacement='--rate-hz', type=float)
    parser.add_argument('--limit', type=int, default=0, help='stop after N grounded frames')
    parser.add_argument('--min-score', type=float, default=0.0,
                        help='leave boxes scoring below this out of the detections (the '
                        "node's min_score; grounding keeps every phrase)")
    parser.add_argument('--copy-input', action='store_true', help='copy the input topics')
    parser.add_argument('--overwrite', action='store_true', help='replace the output bag')
    parser.add_argument('--html', help='write an HTML report with annotated frames here')
    parser.add_argument('--html-embed', action='store_true',
                        help='embed the frames in the HTML file (default: files beside it)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_depth_arguments(parser)
    add_tracking_arguments(parser)
    add_model_arguments(parser)
    return parser


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GroundBagOptions(Path(), Path())
    tracking = parser.add_argument_group('tracking')
    tracking.add_argument('--track', action='store_true',
                          help='follow the grounded boxes on every admitted frame (grounded or '
                               'throttled) as tracks with lasting ids, written to <base>/tracks '
                               'and <base>/track_states (every track with its state: tracked, '
                               "predicted, lost), and <base>/tracks_3d with depth; the node's "
                               'tracking')
    # None: not given (the defaults are filled in by _options, which refuses them without
    # --track).
    tracking.add_argument('--track-rate-hz', type=float, default=None, metavar='HZ',
                          help='track at most HZ frames per second of message time per topic '
                               f'(0: every frame; default: {defaults.track_rate_hz:g}); needs '
                               '--track')
    tracking.add_argument('--track-max-age', type=float, default=None, metavar='S',
                          help='seconds (message time) a track lives after the last model '
                               'result that confirmed it (default: '
                               f'{defaults.track_max_age:g}); needs --track')
    tracking.add_argument('--track-coast-time', type=float, default=None, metavar='S',
                          help='seconds (message time) a track coasts on its motion model '
                               'when the optical flow fails, before it is lost (default: '
                               f'{defaults.track_coast_time:g}); needs --track')


def add_depth_arguments(parser: argparse.ArgumentParser) -> None:
    depth = parser.add_argument_group('depth (3D)')
    depth.add_argument('--depth-topic', action='append', default=[],
                       help='registered depth image topic (sensor_msgs/Image, 16UC1 mm or '
                            '32FC1 m): once for every image topic, or once per --topic in '
                            'the same order (default: automatic, see below)')
    depth.add_argument('--camera-info-topic', action='append', default=[],
                       help='sensor_msgs/CameraInfo topic of the (rectified) images, given as '
                            '--depth-topic is (default: automatic)')
    defaults = DepthSettings()
    depth.add_argument('--depth-tolerance', type=float, default=defaults.tolerance,
                       help='largest header stamp gap between a colour and its depth image, '
                            f'in seconds (default: {defaults.tolerance:g})')
    depth.add_argument('--depth-min', type=float, default=defaults.min_depth,
                       help=f'smallest valid depth in metres (default: {defaults.min_depth:g})')
    depth.add_argument('--depth-max', type=float, default=defaults.max_depth,
                       help=f'largest valid depth in metres (default: {defaults.max_depth:g})')
    depth.add_argument('--depth-inner-fraction', type=float, default=defaults.inner_fraction,
                       help="part of a box's width and height, around its centre, whose "
                            "median depth gives its distance (the node's "
                            f'depth_inner_fraction; default: {defaults.inner_fraction:g})')
    depth.add_argument('--no-depth', action='store_true',
                       help='ground in 2D only, whatever depth the bag holds')


def default_output(bag: Path) -> Path:
    """Return ``<bag>_grounded`` beside the bag, or beside its rosbag2 folder for a file in one.

    Never inside the input: the output must lie apart from it (:func:`check_outputs`).
    """
    source = bag.parent if bag.is_file() and (bag.parent / 'metadata.yaml').is_file() else bag
    if source.name in ('', '.', '..'):
        source = Path(os.path.abspath(source))
    return source.with_name(source.stem + '_grounded')


def _options(args: argparse.Namespace, label: str) -> GroundBagOptions:
    """Return the options of the command line; ValueError for an invalid value."""
    task = Task.parse(args.task)
    if args.max_new_tokens < 1:
        raise ValueError(f'--max-new-tokens must be at least 1; got {args.max_new_tokens}')
    if args.rate_hz < 0:
        raise ValueError(f'--rate-hz must be 0 or more; got {args.rate_hz}')
    if not 0.0 <= args.min_score <= 1.0:
        raise ValueError(f'--min-score must be between 0 and 1; got {args.min_score}')
    depth = DepthSettings(args.depth_tolerance, args.depth_min, args.depth_max,
                          args.depth_inner_fraction)
    tracking = tracking_options(args)
    bag = Path(args.bag)
    return GroundBagOptions(
        bag=bag, output=Path(args.output) if args.output else default_output(bag),
        topics=tuple(args.topic), task=task, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens, rate_hz=args.rate_hz, copy_input=args.copy_input,
        overwrite=args.overwrite, html=Path(args.html) if args.html else None,
        html_embed=args.html_embed, limit=args.limit, min_score=args.min_score,
        model_label=label, depth_topics=tuple(args.depth_topic),
        camera_info_topics=tuple(args.camera_info_topic), depth=depth,
        use_depth=not args.no_depth, **tracking)


def tracking_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the tracking fields of the options; ValueError for an invalid value."""
    defaults = GroundBagOptions(Path(), Path())
    given = {'--track-rate-hz': args.track_rate_hz, '--track-max-age': args.track_max_age,
             '--track-coast-time': args.track_coast_time}
    if not args.track:
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            raise ValueError(f'{" and ".join(named)} {"need" if len(named) > 1 else "needs"} '
                             '--track')
        return {}
    rate = defaults.track_rate_hz if args.track_rate_hz is None else args.track_rate_hz
    age = defaults.track_max_age if args.track_max_age is None else args.track_max_age
    if not (math.isfinite(rate) and rate >= 0.0):
        raise ValueError(f'--track-rate-hz must be 0 or more; got {rate}')
    coast = defaults.track_coast_time if args.track_coast_time is None \
        else args.track_coast_time
    if not (math.isfinite(age) and age > 0.0):
        raise ValueError(f'--track-max-age must be more than 0; got {age}')
    if not (math.isfinite(coast) and coast >= 0.0):
        raise ValueError(f'--track-coast-time must be 0 or more; got {coast}')
    return dict(track=True, track_rate_hz=rate, track_max_age=age, track_coast_time=coast)


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
            return _command(args, sigint)
        except KeyboardInterrupt:
            print('ground_bag: interrupted', file=sys.stderr)
            return 130


def _command(args: argparse.Namespace, sigint: SigintGuard) -> int:
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    try:
        options = _options(args, TINY_LABEL if args.tiny_model else '')
        reader = open_reader(options.bag)  # bag errors before the (slow) model load
        try:
            pair_depth(reader, select_image_topics(reader, args.topic, args.depth_topic),
                       options)
        finally:
            reader.close()
        check_outputs(options.bag, options.output, options.html, options.html_embed,
                      options.overwrite)
    except (BagError, ValueError) as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    try:
        engine = _load_engine(args)
    except ModelLoadError as exc:
        print(f'ground_bag: cannot load the model: {exc}', file=sys.stderr)
        return 1
    try:
        summary = ground_bag(options, engine, progress=not args.no_progress, guard=sigint)
    except KosmosError as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    print(summary.describe())
    return 130 if summary.interrupted else 0


def entry() -> None:
    """Run :func:`main` as a command (console script, ``python -m``) and exit with its status.

    After an interrupt (130), everything is written and closed when ``main`` returns; the
    process then ends at once, as interpreter shutdown could turn that interrupt, handled, into
    an exit by SIGINT (seen here: exit -2 instead of 130 in about one run in three).
    """
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == '__main__':
    entry()
