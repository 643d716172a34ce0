# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The command line of ``kosmos_corpus``: ``ground``, ``search`` and ``compare``.

``ground`` takes ``ground_bag``'s grounding, depth, tracking and model flags; the Ray, chunking
and progress flags are the corpus's own.
"""

from __future__ import annotations

import argparse
from typing import Any

PROG = 'kosmos_corpus'


def _ground_arguments(parser: argparse.ArgumentParser, find: bool = False) -> None:
    # numpy: imported after main() took the signals
    from kosmos_ros.cli_options import add_depth_topic_arguments, add_grounding_arguments

    if not find:  # search takes them as its SOURCE arguments
        parser.add_argument('inputs', nargs='*', metavar='BAG',
                            help='bags (rosbag2 folder, .mcap, .db3, ROS 1 .bag), folders '
                                 'searched recursively, or globs (quote them: '
                                 '"bags/**/*.mcap")')
    parser.add_argument('--from-file', action='append', default=[], metavar='LIST',
                        help='a file listing bags, folders or globs, one per line (# comments)')
    if not find:
        parser.add_argument('-o', '--output', required=True, metavar='RUN',
                            help='run folder (created; an existing run with the same options '
                                 'is resumed)')
        parser.add_argument('--topic', action='append', default=[],
                            help='image topic to ground in every bag (repeatable; default: '
                                 'automatic per bag)')
        parser.add_argument('--copy-input', action='store_true',
                            help='copy the input topics into each output bag')
    _progress_arguments(parser)
    scale = parser.add_argument_group('scale-out (Ray)')
    scale.add_argument('--workers', default='auto',
                       help='inference workers: 0 grounds in this process without Ray; N '
                            'starts N Ray actors (each holds the model; a GPU each with CUDA); '
                            'auto (default): Ray only where it helps, one actor per GPU of the '
                            '--ray-address cluster or of this machine when it has two or more; '
                            'else this process')
    scale.add_argument('--ray-address', default=None, metavar='ADDR',
                       help='join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT); '
                            'default: an embedded local Ray bound to 127.0.0.1')
    scale.add_argument('--chunk-frames', type=int, default=32,
                       help='admitted frames per chunk, the unit of work and of resumption '
                            '(default 32)')
    scale.add_argument('--batch-size', type=int, default=8,
                       help='frames a worker decodes together, across chunks and bags '
                            '(default 8)')
    scale.add_argument('--chunks-per-task', type=int, default=2,
                       help='chunks handed to a worker at once, from different bags '
                            '(default 2)')
    add_depth_topic_arguments(parser)
    # search --find: the task is find, the prompt its phrase; --min-score filters the hits.
    add_grounding_arguments(parser, tracking=not find,
                            exclude=('task', 'prompt', 'min_score') if find else ())


def _progress_arguments(parser: Any) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--progress', choices=('auto', 'bar', 'log'), default='auto',
                       help='how progress is shown on standard error: the phases, then a bar '
                            '(frames/s, ETA, frames per worker) when it is a terminal, else a '
                            'plain line every 10 s (auto, the default)')
    group.add_argument('--quiet', '-q', action='store_true',
                       help='no progress, only errors and the summary')
    group.add_argument('--no-progress', dest='quiet', action='store_true',
                       help=argparse.SUPPRESS)  # the earlier name of --quiet


def parser() -> argparse.ArgumentParser:
    """Return the command line of ``kosmos_corpus`` (its three subcommands)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description='Regression testing on a corpus of bags: ground every bag '
        "with ground_bag's engine and outputs into one run folder (output bags, a Parquet "
        'index, a manifest), search the index, and compare two runs.')
    sub = parser.add_subparsers(dest='command', required=True)
    ground = sub.add_parser('ground', help='ground a corpus into a run folder (resumable)')
    _ground_arguments(ground)

    search = sub.add_parser('search', help="search a run's index, or find a phrase in bags")
    search.add_argument('sources', nargs='*', metavar='SOURCE',
                        help='run folders or index Parquet files; with --find, bags, folders '
                             'or globs to ground with the find task')
    search.add_argument('--phrase', help='phrase text (case-insensitive substring)')
    search.add_argument('--text', help='caption text (case-insensitive substring)')
    search.add_argument('--min-score', dest='search_min_score', type=float,
                        help='lowest box score')
    search.add_argument('--topic', dest='search_topic', metavar='GLOB',
                        help='image topic (glob: "/front/*")')
    search.add_argument('--bag', help='bag path substring or SHA-256 prefix')
    search.add_argument('--since', help='earliest header stamp (seconds or ISO 8601)')
    search.add_argument('--until', help='latest header stamp (seconds or ISO 8601)')
    search.add_argument('--limit', type=int, default=50, help='hits printed (default 50)')
    search.add_argument('--output', dest='export', metavar='FILE',
                        help='write every hit to FILE (.csv, .json/.jsonl or .parquet)')
    search.add_argument('--find', metavar='PHRASE',
                        help='ground SOURCE bags not yet in --run with the find task for '
                             'PHRASE, then search that run for it')
    search.add_argument('--run', metavar='RUN', help='the run folder of --find (resumable)')
    _ground_arguments(search, find=True)

    compare = sub.add_parser('compare', help='compare two runs (exit 1 past a threshold)')
    compare.add_argument('run_a', metavar='RUN_A', help='the reference run (folder or Parquet)')
    compare.add_argument('run_b', metavar='RUN_B', help='the run with the change')
    compare.add_argument('--match-iou', type=float, default=0.5,
                         help='least IoU for two boxes of a phrase to be the same box (0.5)')
    compare.add_argument('--moved-iou', type=float, default=0.9,
                         help='a matched box with less IoU than this has moved (0.9)')
    compare.add_argument('--score-tolerance', type=float, default=1e-4,
                         help='score shifts up to this do not make a frame changed (1e-4: '
                              'batching alone moves scores by float rounding)')
    compare.add_argument('--html', help='write the HTML report here (one offline page: what '
                                        'differs, totals, tables by bag, topic and phrase, '
                                        'plots, the largest changes side by side)')
    compare.add_argument('--json', help='write the JSON report here (the same sections)')
    compare.add_argument('--top', type=int, default=12,
                         help='largest changes in the reports, taken from the bags in turn (12)')
    gate = compare.add_argument_group('thresholds (exit status 1 when exceeded)')
    for name, kind, what in (('added', int, 'boxes added'), ('lost', int, 'boxes lost'),
                             ('moved', int, 'boxes moved'),
                             ('caption-changes', int, 'frames whose caption changed'),
                             ('score-shift', float, 'largest score change of a matched box'),
                             ('latency-ratio', float, 'mean latency of B over A (fails when '
                              'the runs batched differently: not comparable)')):
        gate.add_argument(f'--max-{name}', type=kind, default=None, help=f'most {what}')
    gate.add_argument('--max-missing-frames', type=int, default=0,
                      help='most frames of A that B did not ground (default 0)')
    gate.add_argument('--allow-incomplete', action='store_true',
                      help='pass runs that are interrupted, incomplete or still running (by '
                           'default such a run fails the gate)')
    gate.add_argument('--allow-empty', action='store_true',
                      help='pass runs without a grounded frame (by default such a run fails '
                           'the gate)')
    return parser
