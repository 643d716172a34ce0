# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Command-line conventions of ``ground_bag``, ``make_sample_bag``, ``play_bag`` and the demo.

One flag, one meaning, in every tool:

========================  ===============================================  ======================
flag                      meaning                                          tools
========================  ===============================================  ======================
``--rate-hz HZ``          ground at most HZ frames per second of message   ground_bag, demo
                          (bag) time per camera; the node's ``rate_hz``
``--track-rate-hz HZ``    track at most HZ frames per second of message    ground_bag
                          time per camera (0: every frame); the node's
                          ``track_rate_hz``
``--speed X``             playback speed factor (2.0: twice as fast)       play_bag, demo
``--fps N``               frames per second of a generated stream          make_sample_bag
``--topic T``             a topic of the bag to use; repeatable where the  ground_bag, play_bag,
                          tool takes several                               demo
``--tiny-model``          the tiny RANDOM test model instead of KOSMOS-2   ground_bag, demo
                          (labelled as such wherever it is used)
``--model``,              the model to load (:func:`add_model_arguments`)  ground_bag, demo
``--device``, ...
========================  ===============================================  ======================

The old spellings still work, hidden from ``--help``; each use prints a one-line deprecation
note to stderr (:func:`deprecated_alias`): ``--rate`` (ground_bag, demo: ``--rate-hz``;
make_sample_bag: ``--fps``; play_bag: ``--speed``), ``-r`` (play_bag: ``--speed``),
``--playback-rate`` (demo: ``--speed``), ``--tiny`` (``--tiny-model``) and ``--topics A B``
(play_bag: ``--topic A --topic B``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from kosmos_ros.datatypes import DEFAULT_MODEL
from kosmos_ros.threads import DEFAULT_CPU_THREADS


class _DeprecatedAlias(argparse.Action):
    """Store as the replacing option does, after a deprecation note on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str,
                 kind: str = 'store', **kwargs: Any):
        if kind == 'store_true':
            kwargs['nargs'] = 0
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement
        self.kind = kind

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f'{parser.prog}: {option_string} is deprecated; use {self.replacement}',
              file=sys.stderr)
        if self.kind == 'store_true':
            values = True
        elif self.kind in ('append', 'extend'):
            items = list(getattr(namespace, self.dest, None) or [])
            values = items + (list(values) if self.kind == 'extend' else [values])
        setattr(namespace, self.dest, values)


def deprecated_alias(parser: argparse.ArgumentParser, *names: str, replacement: str,
                     kind: str = 'store', **kwargs: Any) -> None:
    """Accept ``names`` as a hidden, deprecated spelling of the option ``replacement``.

    Add it after ``replacement``, whose destination (and default) it shares. ``kind`` says
    how the value is kept: ``store``, ``store_true``, ``append`` (one value per use) or
    ``extend`` (several values per use, ``nargs='+'``); ``kwargs`` go to ``add_argument``
    (``type``, ``nargs``).
    """
    dest = replacement.lstrip('-').replace('-', '_')
    parser.add_argument(*names, dest=dest, action=_DeprecatedAlias, replacement=replacement,
                        kind=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        **kwargs)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model options of ground_bag and the demo (``--tiny-model`` among them)."""
    group = parser.add_argument_group('model')
    group.add_argument('--model', default=DEFAULT_MODEL,
                       help=f'hub id or local folder of KOSMOS-2 (default: {DEFAULT_MODEL})')
    group.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    group.add_argument('--dtype', default='auto', help='auto, float32, float16 or bfloat16')
    group.add_argument('--quantization', default='none',
                       help='none, 8bit or 4bit (bitsandbytes, CUDA), int8 (torchao, CUDA or '
                            'CPU), int4 (torchao, CUDA)')
    group.add_argument('--local-files-only', action='store_true',
                       help='use the local folder or Hugging Face cache only (no network)')
    group.add_argument('--cpu-threads', type=int, default=DEFAULT_CPU_THREADS,
                       help='torch threads for model work on the CPU (default 1: fastest when '
                            "other processes share the cores; the node's cpu_threads)")
    group.add_argument('--tiny-model', action='store_true',
                       help='use the tiny RANDOM test model instead of KOSMOS-2 (pipeline '
                            'checks only; its words are random; labelled wherever used)')
    deprecated_alias(parser, '--tiny', replacement='--tiny-model', kind='store_true')


def model_options(args: argparse.Namespace) -> Any:
    """Return the ``ModelOptions`` the flags of :func:`add_model_arguments` name.

    ``--tiny-model`` gives the tiny random model's folder (built there once).
    """
    from kosmos_ros.model.loading import ModelOptions
    from kosmos_ros.testing.tiny_model import tiny_model_path

    if args.tiny_model:
        return ModelOptions(model=str(tiny_model_path()), local_files_only=True,
                            device=args.device)
    return ModelOptions(model=args.model, local_files_only=args.local_files_only,
                        device=args.device, dtype=args.dtype, quantization=args.quantization)
