# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_eval``: how accurate the model is on labelled images, and which ``min_score`` to use.

::

    kosmos_eval coco LABELS.json -o OUT [--images DIR] [--bag BAG ...] [--phrases MAP.yaml]
    kosmos_eval coco LABELS.json --run RUN_FOLDER -o OUT [--phrases MAP.yaml] [model flags]
                [--target-precision P | --target-recall R] [ground_bag's grounding flags]
    kosmos_eval report OUT/eval.json -o report.html
    kosmos_eval flickr30k | refcoco | article ...   the article's benchmarks (benchmark_cli)

Grounds every image of a COCO label file with the engine, options record and flags of
``ground_bag`` (the FIND task; ``--min-score``, ``--max-new-tokens``, ``--model``,
``--tiny-model``, ...), asking every category's phrase on every image, and writes
``OUT/eval.json``, ``OUT/predictions.json`` and ``OUT/min_score.yaml`` (:mod:`.record`).
Label entries naming a bag frame (topic and header stamp) are read from the ``--bag`` bags
(:mod:`.bag_frames`), and the frames the worst lists show are written to ``OUT/frames/``.
With ``--run``, they are the boxes a ``kosmos_corpus`` run folder's index holds, scored as
they are (:mod:`.run_index`): the model only reads the category phrases, never grounds.

Exit status: 0 done; 1 the model could not be loaded; 2 an error (bad options, a label file
or phrase map that cannot be used, no usable image, an output that cannot be written); 130
interrupted (nothing written).
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

from kosmos_ros.cli_options import (add_grounding_arguments, exit_with, grounding_options,
                                    Interrupts, model_options)
from kosmos_ros.early_signals import replay
from kosmos_ros.errors import KosmosError, ModelLoadError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.labels import DEFAULT_MAX_LABELS_BYTES
from kosmos_ros.threads import quiet_openmp

PROG = 'kosmos_eval'
DEFAULT_TARGET_PRECISION = 0.9
# Grounding options a find evaluation sets itself, or that have no meaning for still images.
NOT_FLAGS = ('task', 'prompt', 'rate_hz', 'depth_tolerance', 'depth_min', 'depth_max',
             'depth_inner_fraction')


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number from 0 to 1; got {text!r}') \
            from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'expected a number from 0 to 1; got {text}')
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number; got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected 1 or more; got {value}')
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of every evaluation: output, limit, progress, grounding and model."""
    parser.add_argument('-o', '--output', required=True,
                        help='folder for eval.json, predictions.json and min_score.yaml')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the evaluation already in the output folder')
    parser.add_argument('--limit', type=_positive, default=None, metavar='N',
                        help='evaluate the first N usable images only')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--target-precision', type=_fraction, default=None, metavar='P',
                        help='calibrate min_score for this precision: the lowest score that '
                             f'reaches it (default: {DEFAULT_TARGET_PRECISION})')
    target.add_argument('--target-recall', type=_fraction, default=None, metavar='R',
                        help='calibrate min_score for this recall instead: the highest score '
                             'that reaches it')
    add_grounding_arguments(parser, tracking=False, exclude=NOT_FLAGS)


def parser() -> argparse.ArgumentParser:
    """Return the command line's parser: one subcommand per kind of labelled set."""
    top = argparse.ArgumentParser(
        prog=PROG, description='Ground a labelled image set with KOSMOS-2 (the find task, '
        'every phrase on every image) and score it: precision, recall, AP@0.5 and '
        'AP@[.5:.95] per phrase and overall, precision-recall curves, and the min_score that '
        'reaches a target precision or recall, as a params file for the node.')
    commands = top.add_subparsers(dest='command', required=True, metavar='COMMAND')
    coco = commands.add_parser(
        'coco', help='a COCO-format label file and its images',
        description='Evaluate on a COCO-format label file (images, annotations with [x, y, '
        'width, height] boxes in pixels, categories) and its images (JPEG or PNG).')
    coco.add_argument('labels', help='the COCO label file (JSON)')
    coco.add_argument('--images', help="the folder the label file's file_name entries are in "
                                       "(default: the label file's folder)")
    coco.add_argument('--bag', action='append', default=[], metavar='BAG',
                      help='a bag (rosbag2 folder, .mcap, .db3 or ROS 1 .bag) holding the '
                           'frames that label entries name by topic and stamp; repeat for '
                           'several')
    coco.add_argument('--run', metavar='RUN_FOLDER',
                      help='score the boxes of an existing kosmos_corpus run folder '
                           '(its index.parquet) instead of grounding: label entries name its '
                           'frames by topic and stamp (and "bag" where several bags hold one)')
    coco.add_argument('--phrases',
                      help='YAML or JSON file mapping category names (or ids) to the phrase '
                           'to ask (default: each category name)')
    coco.add_argument('--max-labels-bytes', type=_positive, default=DEFAULT_MAX_LABELS_BYTES,
                      metavar='N', help='refuse a label file over N bytes, before reading it '
                                        f'(default: {DEFAULT_MAX_LABELS_BYTES})')
    add_run_arguments(coco)
    from kosmos_ros.evaluation.benchmark_cli import add_benchmark_commands
    add_benchmark_commands(commands)  # flickr30k, refcoco, article, report
    return top


def target_of(args: argparse.Namespace) -> Any:
    """Return the calibration target the flags name (precision 0.9 by default)."""
    from kosmos_ros.evaluation.calibration import Target

    if args.target_recall is not None:
        return Target('recall', args.target_recall)
    precision = args.target_precision
    return Target('precision', DEFAULT_TARGET_PRECISION if precision is None else precision)


def load_engine(args: argparse.Namespace, weights: bool = True) -> tuple[Any, str]:
    """Load the model the flags name; return the engine and its label; ModelLoadError.

    ``weights=False``: its processor and configuration only, to read phrases (``--run``).
    """
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    from kosmos_ros.testing.tiny_model import TINY_LABEL

    if args.tiny_model:
        print(f'{PROG}: using the {TINY_LABEL}', file=sys.stderr)
    engine = GroundingEngine.load(model_options(args), EngineOptions(
        max_new_tokens=args.max_new_tokens, cpu_threads=args.cpu_threads), weights=weights)
    label = engine.describe()
    return engine, f'{TINY_LABEL}: {label}' if args.tiny_model else label


def bag_inputs(bags: Sequence[str], frames: int) -> list[Path]:
    """Return the ``--bag`` paths, each checked to open; EvaluationError when they do not fit.

    Label entries naming bag frames (``frames`` of them) need a bag, and a bag needs them.
    """
    from kosmos_ros.evaluation.bag_frames import check_bags

    if frames and not bags:
        raise EvaluationError(f'{frames} labelled images are frames of bags (a topic and a '
                              'stamp); give the bags that hold them with --bag')
    if bags and not frames:
        raise EvaluationError('--bag is given, but no label entry names a bag frame (a topic '
                              'and a stamp)')
    paths = list(dict.fromkeys(Path(bag) for bag in bags))
    check_bags(paths)
    return paths


def _bag_places(bag: Path) -> list[tuple[str, Path]]:
    from kosmos_ros.bag.safety import input_places

    return [(place.role, place.path) for place in input_places(bag)]


def _coco(args: argparse.Namespace) -> int:
    from kosmos_ros.evaluation.labels import read_labels, read_phrase_map
    from kosmos_ros.evaluation.record import (check_apart_from_inputs, check_output, describe,
                                              evaluate, write)
    from kosmos_ros.evaluation.bag_frames import BagFrames, FRAMES_FOLDER, WorstFrames
    from kosmos_ros.evaluation.record import MAX_WORST
    from kosmos_ros.evaluation.run import ground_labels, image_path

    args.task, args.prompt = 'find', ''
    options = grounding_options(args)  # every check before the (slow) model load
    if args.run is not None:
        return _coco_run(args, options.min_score)
    target = target_of(args)
    output = Path(args.output)
    check_output(output, args.overwrite)
    phrases = read_phrase_map(Path(args.phrases)) if args.phrases else None
    labels = read_labels(Path(args.labels), args.max_labels_bytes, phrases)
    folder = Path(args.images) if args.images else Path(os.path.abspath(args.labels)).parent
    files = [image for image in labels.images if not image.is_frame]
    if files and not folder.is_dir():
        raise EvaluationError(f'{folder}: the images folder is not a folder')
    inputs = [('the label file', Path(args.labels))] + (
        [('the phrase map', Path(args.phrases))] if args.phrases else [])
    inputs += [('the labelled image', path) for path in (
        image_path(folder, image.file_name) for image in files) if path is not None]
    bags = bag_inputs(args.bag, len(labels.images) - len(files))
    inputs += [(role, path) for bag in bags for role, path in _bag_places(bag)]
    check_apart_from_inputs(output, inputs, [FRAMES_FOLDER] if bags else [])
    try:
        engine, model = load_engine(args)
    except ModelLoadError as exc:
        print(f'{PROG}: cannot load the model: {exc}', file=sys.stderr)
        return 1
    max_pixels = engine.options.max_pixels
    sources = [BagFrames(bags, labels.images, output, max_pixels)] if bags else []
    keeper = WorstFrames(labels.categories, options.min_score, MAX_WORST) if bags else None
    grounded = ground_labels(labels, folder if files else None, engine,
                             max_new_tokens=options.max_new_tokens, limit=args.limit or 0,
                             progress=not args.no_progress, sources=sources, keeper=keeper,
                             on_image=args.check_interrupt)
    for note in grounded.notes:
        print(f'{PROG}: skipped {note}', file=sys.stderr)
    if not grounded.images:
        raise EvaluationError(f'none of the {len(labels.images)} labelled images could be used '
                              f'(skipped: {dict(grounded.skipped)})')
    evaluation = evaluate(grounded, model, options.min_score, target)
    check_output(output, args.overwrite)
    args.check_interrupt()
    frames = keeper.write(evaluation.record['worst'], output) if keeper else []
    paths = write(output, evaluation, args.overwrite) + frames
    print(describe(evaluation, grounded.elapsed_s, grounded.queries))
    if evaluation.fragment is None:
        print(f'{PROG}: no min_score reaches the target; {output}/min_score.yaml not written')
    print('wrote ' + ', '.join(str(p) for p in paths))
    return 0


def _coco_run(args: argparse.Namespace, min_score: float) -> int:
    """``coco --run``: score a corpus run's boxes (its index) against the labels."""
    from kosmos_ros.evaluation.labels import read_labels, read_phrase_map
    from kosmos_ros.evaluation.record import (check_apart_from_inputs, check_output, describe,
                                              evaluate, write)
    from kosmos_ros.evaluation.run_index import grounded_from_run, read_run, source_of

    if args.bag or args.images:
        raise EvaluationError('--run scores the boxes of a run: give neither --bag nor '
                              '--images with it')
    output = Path(args.output)
    check_output(output, args.overwrite)
    phrases = read_phrase_map(Path(args.phrases)) if args.phrases else None
    labels = read_labels(Path(args.labels), args.max_labels_bytes, phrases)
    if not any(image.is_frame for image in labels.images):
        raise EvaluationError('--run: no label entry names a bag frame (a topic and a stamp)')
    run = read_run(Path(args.run))
    inputs = [('the label file', Path(args.labels)), ('the run folder', Path(args.run))] + (
        [('the phrase map', Path(args.phrases))] if args.phrases else [])
    check_apart_from_inputs(output, inputs)
    try:
        engine, _ = load_engine(args, weights=False)  # reads phrases as the model spells them
    except ModelLoadError as exc:
        print(f'{PROG}: cannot load the model: {exc}', file=sys.stderr)
        return 1
    labels, source = source_of(run, labels, engine)
    grounded = grounded_from_run(run, labels, engine, args.limit or 0)
    for note in grounded.notes:
        print(f'{PROG}: skipped {note}', file=sys.stderr)
    if not grounded.images:
        raise EvaluationError(f'none of the {len(labels.images)} labelled images is a frame '
                              f'the run grounded (skipped: {dict(grounded.skipped)})')
    evaluation = evaluate(grounded, source['model'], min_score, target_of(args))
    evaluation.record.update(task=run.task, source=source)
    check_output(output, args.overwrite)
    args.check_interrupt()
    paths = write(output, evaluation, args.overwrite)
    print(f'{PROG}: {source["statement"]} (run {source["run"]})')
    print(describe(evaluation, grounded.elapsed_s, grounded.queries))
    if evaluation.fragment is None:
        print(f'{PROG}: no min_score reaches the target; {output}/min_score.yaml not written')
    print('wrote ' + ', '.join(str(p) for p in paths))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (1: no model, 2: an error, 130: interrupted).

    SIGINT and SIGTERM both interrupt it (even where the shell that started it ignores
    SIGINT, as it does for a background job): nothing is written, exit status 130.
    """
    args = parser().parse_args(argv)
    quiet_openmp()  # before torch loads (kosmos_ros.threads)
    with Interrupts() as interrupts:
        try:
            replay()  # one that came while the modules imported (kosmos_ros.early_signals)
            if args.command != 'coco':
                from kosmos_ros.evaluation.benchmark_cli import run_command
                return run_command(args, interrupts.check)
            args.check_interrupt = interrupts.check  # between images, before writing
            return _coco(args)
        except KeyboardInterrupt:
            print(f'{PROG}: interrupted; nothing written', file=sys.stderr)
            return 130
        except (KosmosError, ValueError, OSError) as exc:
            print(f'{PROG}: error: {exc}', file=sys.stderr)
            return 2


def entry() -> None:
    """Run :func:`main` as a command and exit with its status (:func:`exit_with`)."""
    exit_with(main)


if __name__ == '__main__':
    early_signals.release()
    entry()
