# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One flag, one meaning, in every tool; the old spellings still work, with a note."""

import re

import pytest

from kosmos_ros.bag import ground_bag, player, sample
from kosmos_ros.demo import _parse as demo_parse

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model


def test_ground_bag_flags(capsys):
    args = ground_bag._parser().parse_args(['bag', '--rate-hz', '2', '--tiny-model', '--topic',
                                            '/a', '--topic', '/b', '--depth-inner-fraction',
                                            '0.3'])
    assert (args.rate_hz, args.tiny_model, args.topic) == (2.0, True, ['/a', '/b'])
    assert ground_bag._options(args, '').depth.depth_inner_fraction == 0.3
    defaults = ground_bag._options(ground_bag._parser().parse_args(['bag']), '')
    assert (defaults.rate_hz, defaults.depth.depth_inner_fraction) == (0.0, 0.5)
    assert capsys.readouterr().err == ''
    old = ground_bag._parser().parse_args(['bag', '--rate', '5', '--tiny'])
    assert (old.rate_hz, old.tiny_model) == (5.0, True)
    assert capsys.readouterr().err.splitlines() == [
        'ground_bag: --rate is deprecated; use --rate-hz',
        'ground_bag: --tiny is deprecated; use --tiny-model']
    with pytest.raises(ValueError, match='--depth-inner-fraction must be at least 0.05; got 0'):
        ground_bag._options(ground_bag._parser().parse_args(
            ['bag', '--depth-inner-fraction', '0']), '')


@pytest.mark.parametrize('flags, reason', [
    (['--min-score', '2'], '--min-score must be at most 1; got 2.0'),
    (['--min-score', 'nan'], '--min-score must be a finite number'),
    (['--max-new-tokens', '0'], '--max-new-tokens must be at least 1; got 0'),
    (['--rate-hz', '-1'], '--rate-hz must be at least 0'),
    (['--task', 'sing'], "--task: unknown task 'sing'"),
    (['--depth-min', '5', '--depth-max', '2'], '--depth-min (5 m) must be below --depth-max'),
    (['--track-max-age', '2'], '--track-max-age needs --track'),
    (['--track', '--track-coast-time', '-1'], '--track-coast-time must be at least 0'),
    (['--tiny-model', '--dtype', 'float16'], '--tiny-model takes no --dtype'),
])
def test_one_rule_per_option_in_every_tool(flags, reason):
    """ground_bag, kosmos_corpus ground and the demo refuse a value by the same rule."""
    from kosmos_ros.corpus.arguments import parser as corpus_parser
    from kosmos_ros.corpus.cli import _corpus_options

    with pytest.raises(ValueError, match=re.escape(reason)):
        ground_bag._options(ground_bag._parser().parse_args(['bag', *flags]), '')
    args = corpus_parser().parse_args(['ground', 'bags', '-o', 'run', *flags])
    with pytest.raises(ValueError, match=re.escape(reason)):
        _corpus_options(args, ('bags',), args.output, args.task, args.prompt, '')
    demo_flags = [f for f in flags if not f.startswith('--track')]
    if demo_flags == flags and '--min-score' not in flags:  # the demo has no tracking, score
        with pytest.raises(SystemExit):
            demo_parse(demo_flags)


def test_the_node_and_the_tools_share_defaults_and_ranges():
    from kosmos_ros.corpus.arguments import parser as corpus_parser
    from kosmos_ros.model.engine import EngineOptions
    from kosmos_ros.node.parameter_table import SPECS as NODE
    from kosmos_ros.options import SPECS

    for name, spec in SPECS.items():
        if name in NODE:
            node = NODE[name]
            assert (node.low, node.high, node.choices) == (spec.low, spec.high, spec.choices), \
                name
    bag = ground_bag._parser().parse_args(['bag'])
    corpus = corpus_parser().parse_args(['ground', 'bags', '-o', 'run'])
    for args in (bag, corpus, demo_parse([])):
        assert args.max_new_tokens == SPECS['max_new_tokens'].default == NODE[
            'max_new_tokens'].default == EngineOptions().max_new_tokens
        assert args.min_score == 0.0 if hasattr(args, 'min_score') else True


def test_play_bag_flags(capsys):
    args = player._parser().parse_args(['bag', '--speed', '2', '--topic', '/a'])
    assert (args.speed, args.topic) == (2.0, ['/a'])
    assert player._parser().parse_args(['bag']).speed == 1.0
    old = player._parser().parse_args(['bag', '-r', '3', '--topics', '/a', '/b', '--topic',
                                       '/c'])
    assert (old.speed, old.topic) == (3.0, ['/a', '/b', '/c'])
    assert player._parser().parse_args(['bag', '--rate', '0.5']).speed == 0.5
    assert capsys.readouterr().err.splitlines() == [
        'play_bag: -r is deprecated; use --speed',
        'play_bag: --topics is deprecated; use --topic',
        'play_bag: --rate is deprecated; use --speed']


def test_make_sample_bag_and_demo_flags(capsys):
    assert sample._parser().parse_args(['--fps', '5']).fps == 5.0
    assert sample._parser().parse_args([]).fps == 10.0
    assert sample._parser().parse_args(['--rate', '4']).fps == 4.0
    args = demo_parse(['--rate-hz', '2', '--speed', '3', '--tiny-model'])
    assert (args.rate_hz, args.speed, args.tiny_model) == (2.0, 3.0, True)
    assert capsys.readouterr().err.splitlines() == [
        'make_sample_bag: --rate is deprecated; use --fps']
    old = demo_parse(['--rate', '0.5', '--playback-rate', '4', '--tiny'])
    assert (old.rate_hz, old.speed, old.tiny_model) == (0.5, 4.0, True)
    assert len(capsys.readouterr().err.splitlines()) == 3


@pytest.mark.parametrize('parser', [ground_bag._parser, player._parser, sample._parser])
def test_old_spellings_are_hidden(parser):
    text = parser().format_help()
    assert '--rate ' not in text and '--rate\n' not in text and '--topics' not in text
    assert '--tiny ' not in text and '--playback-rate' not in text


def test_a_signal_whose_exception_was_lost_is_still_seen(monkeypatch):
    """Python drops an exception raised in ``__del__``: Interrupts keeps the signal anyway."""
    import signal
    import sys

    from helpers import Finaliser
    from kosmos_ros.cli_options import Interrupts

    lost = []
    monkeypatch.setattr(sys, 'unraisablehook', lost.append)  # where Python reports it
    before = signal.getsignal(signal.SIGINT)
    with Interrupts() as interrupts:
        interrupts.check()  # nothing came yet
        Finaliser()  # finalised at once: its KeyboardInterrupt goes nowhere
        assert [item.exc_type for item in lost] == [KeyboardInterrupt]
        assert interrupts.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):  # raised where it lands, when it is not lost
            signal.raise_signal(signal.SIGTERM)
        assert interrupts.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGINT) is before


EARLY = '''
import importlib, os, signal, sys
from kosmos_ros import early_signals
early_signals.hold()
os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # as if it came while the modules import
entry = importlib.import_module(sys.argv[2]).entry
early_signals.release()
sys.argv = sys.argv[2:]
entry()
'''


@pytest.mark.parametrize('module, args', [
    ('kosmos_ros.corpus.cli', ['ground', 'bags', '-o', 'run']),
    ('kosmos_ros.bag.ground_bag', ['input.mcap', '-o', 'out']),
    ('kosmos_ros.evaluation.cli', ['coco', 'labels.json', '-o', 'out'])])
@pytest.mark.parametrize('signum', ['SIGINT', 'SIGTERM'])
def test_a_signal_while_a_command_imports_is_exit_130_once_it_starts(tmp_path, module, args,
                                                                     signum):
    """Held from the command's first line (kosmos_ros.early_signals), delivered by its main."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, '-c', EARLY, signum, module, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert 'interrupted' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())  # nothing begun


def test_the_commands_start_through_the_signal_holder():
    """The console scripts are early_signals' launchers, which run the command's entry."""
    import subprocess
    import sys
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[2] / 'setup.py').read_text()
    for name in ('kosmos_corpus', 'ground_bag', 'kosmos_eval'):
        assert f"'{name} = kosmos_ros.early_signals:{name}'" in setup
    proc = subprocess.run([sys.executable, '-c', 'import sys; sys.argv = ["kosmos_corpus", '
                           '"--help"]; from kosmos_ros.early_signals import kosmos_corpus; '
                           'kosmos_corpus()'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and 'usage: kosmos_corpus' in proc.stdout, proc.stderr


def test_a_second_signal_while_a_command_starts_ends_it_at_once():
    """A start that hangs (an import on a stalled file system) can still be stopped."""
    import signal
    import subprocess
    import sys
    import time

    hung = ('import os, signal, time\nfrom kosmos_ros import early_signals\n'
            'early_signals.hold()\nos.kill(os.getpid(), signal.SIGINT)\n'
            'print("held", flush=True)\ntime.sleep(60)  # an import that hangs\n')
    proc = subprocess.Popen([sys.executable, '-c', hung], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'held'  # the first one was held
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - started < 10, err
    assert 'interrupted while starting' in err
