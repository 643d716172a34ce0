# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Command-line flags of ``ground_bag``, ``kosmos_corpus``, ``make_sample_bag``, the demo.

:func:`add_grounding_arguments` gives ``ground_bag``, ``kosmos_corpus ground`` and the demo
the flags of a grounding run, made from the specs of
:class:`~kosmos_ros.options.GroundingOptions` (the node's parameters of the same names share
them: one default, one range), and :func:`grounding_options` reads them back into one checked
record. One flag, one meaning, in every tool:

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
import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from kosmos_ros.options import GroundingOptions, OptionsError, SPECS


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


def _flag(name: str) -> str:
    return '--' + name.replace('_', '-')


def _help(name: str, extra: str = '') -> str:
    spec = SPECS[name]
    limits = f'; {spec.low:g} to {spec.high:g}' if spec.low is not None and \
        spec.high is not None else ''
    text = spec.description[0].lower() + spec.description[1:].rstrip('.')
    return f'{text}{extra} (default: {spec.default!r}{limits})'.replace('%', '%%')


def add_grounding_arguments(parser: argparse.ArgumentParser, tracking: bool = True,
                            exclude: tuple[str, ...] = (), **defaults: Any) -> None:
    """Add the flags of a grounding run: task, budget, rate, score, depth, tracking, model.

    Defaults and ranges are the specs' (``defaults`` may set another default for a tool,
    e.g. the demo's ``rate_hz``); ``exclude`` leaves options out (a tool that sets them
    itself). :func:`grounding_options` reads them back.
    """
    def add(group: Any, name: str, kind: type = float, extra: str = '', **kw: Any) -> None:
        if name in exclude:
            return
        default = defaults.get(name, SPECS[name].default)
        group.add_argument(_flag(name), type=kind, default=default, help=_help(name, extra),
                           **kw)

    run = parser.add_argument_group('grounding')
    add(run, 'task', str)
    add(run, 'prompt', str)
    add(run, 'max_new_tokens', int)
    add(run, 'rate_hz', extra="; the node's rate_hz")
    deprecated_alias(parser, '--rate', replacement='--rate-hz', type=float)
    add(run, 'min_score', extra="; the node's min_score")
    depth = parser.add_argument_group('depth (3D)')
    for name in ('depth_tolerance', 'depth_min', 'depth_max', 'depth_inner_fraction'):
        add(depth, name)
    if tracking:
        track = parser.add_argument_group('tracking')
        track.add_argument('--track', action='store_true',
                           help='follow the grounded boxes on every admitted frame (grounded '
                                'or throttled) as tracks with lasting ids, written to '
                                '<base>/tracks and <base>/track_states (every track with its '
                                'state: tracked, predicted, lost), and <base>/tracks_3d with '
                                "depth; the node's tracking")
        for name in ('track_rate_hz', 'track_max_age', 'track_coast_time'):
            # None: not given; the defaults are filled in by grounding_options, which refuses
            # them without --track.
            track.add_argument(_flag(name), type=float, default=None, metavar='S',
                               help=_help(name, '; needs --track'))
    add_model_arguments(parser)


def add_depth_topic_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bag tools' depth topic flags (which topics; how boxes are lifted is above)."""
    depth = parser.add_argument_group('depth topics (3D)')
    depth.add_argument('--depth-topic', action='append', default=[],
                       help='registered depth image topic (sensor_msgs/Image, 16UC1 mm or '
                            '32FC1 m): once for every image topic, or once per --topic in '
                            'the same order (default: automatic, see below)')
    depth.add_argument('--camera-info-topic', action='append', default=[],
                       help='sensor_msgs/CameraInfo topic of the (rectified) images, given as '
                            '--depth-topic is (default: automatic)')
    depth.add_argument('--no-depth', action='store_true',
                       help='ground in 2D only, whatever depth the bag holds')


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model flags (``--tiny-model`` among them)."""
    group = parser.add_argument_group('model')
    group.add_argument('--model', default=SPECS['model'].default, help=_help('model'))
    group.add_argument('--device', default=SPECS['device'].default, help=_help('device'))
    group.add_argument('--dtype', default=SPECS['dtype'].default, help=_help('dtype'))
    group.add_argument('--quantization', default=SPECS['quantization'].default,
                       help=_help('quantization'))
    group.add_argument('--local-files-only', action='store_true',
                       help=_help('local_files_only'))
    group.add_argument('--cpu-threads', type=int, default=SPECS['cpu_threads'].default,
                       help=_help('cpu_threads', "; the node's cpu_threads"))
    group.add_argument('--tiny-model', action='store_true',
                       help='use the tiny RANDOM test model instead of KOSMOS-2 (pipeline '
                            'checks only; its words are random; labelled wherever used; '
                            'takes --device, not --dtype or --quantization)')
    deprecated_alias(parser, '--tiny', replacement='--tiny-model', kind='store_true')


def grounding_options(args: argparse.Namespace) -> GroundingOptions:
    """Return the checked options of the flags :func:`add_grounding_arguments` added.

    ValueError (an OptionsError) naming the flag of the first invalid value.
    """
    values: dict[str, Any] = {}
    tracking = ('track_rate_hz', 'track_max_age', 'track_coast_time')
    for name in SPECS:
        if hasattr(args, name) and name not in tracking:
            values[name] = getattr(args, name)
    track = bool(getattr(args, 'track', False))
    given = {name: getattr(args, name, None) for name in tracking}
    if not track:
        named = [_flag(n) for n, v in given.items() if v is not None]
        if named:
            raise OptionsError(f'{" and ".join(named)} {"need" if len(named) > 1 else "needs"} '
                               '--track')
    values.update({n: v for n, v in given.items() if v is not None})
    if getattr(args, 'tiny_model', False):
        if args.dtype != SPECS['dtype'].default or \
                args.quantization != SPECS['quantization'].default:
            raise OptionsError('--tiny-model takes no --dtype or --quantization (the tiny test '
                               'model loads in float32, unquantized)')
    try:
        return GroundingOptions(track=track, **values).check()
    except OptionsError as exc:  # the options as the command line spells them
        text = str(exc)
        for name in sorted(SPECS, key=len, reverse=True):  # one-word names: where they lead
            pattern = rf'(?<![\w-]){name}\b' if '_' in name else rf'^{name}\b'
            text = re.sub(pattern, _flag(name), text)
        raise OptionsError(text) from None


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


class Interrupts:
    """While entered: SIGINT and SIGTERM raise KeyboardInterrupt, and are remembered.

    Also where the shell that started the command ignores SIGINT (a background job). The
    exception a signal handler raises is lost when it lands inside a finaliser (``__del__``, a
    weakref callback) or a library's ``except BaseException``: seen here, ``kosmos_eval``
    grounded to the end and exited 0 after a SIGINT, in one run of 15 on busy cores. The record
    is not lost: :meth:`check`, called between images and before anything is written, raises
    it again there.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> 'Interrupts':
        import signal
        self._previous = {s: signal.signal(s, self._handle)
                          for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signum
        raise KeyboardInterrupt

    def check(self, *_: Any) -> None:
        """Raise KeyboardInterrupt if a signal came (any arguments are ignored: a callback)."""
        if self.received is not None:
            raise KeyboardInterrupt


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Run a command's ``main`` (console script, ``python -m``) and exit with its status.

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
