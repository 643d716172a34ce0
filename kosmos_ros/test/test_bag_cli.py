# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One flag, one meaning, in every tool; the old spellings still work, with a note."""

import pytest

from kosmos_ros.bag import ground_bag, player, sample
from kosmos_ros.demo import _parse as demo_parse

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model


def test_ground_bag_flags(capsys):
    args = ground_bag._parser().parse_args(['bag', '--rate-hz', '2', '--tiny-model', '--topic',
                                            '/a', '--topic', '/b', '--depth-inner-fraction',
                                            '0.3'])
    assert (args.rate_hz, args.tiny_model, args.topic) == (2.0, True, ['/a', '/b'])
    assert ground_bag._options(args, '').depth.inner_fraction == 0.3
    defaults = ground_bag._options(ground_bag._parser().parse_args(['bag']), '')
    assert (defaults.rate_hz, defaults.depth.inner_fraction) == (0.0, 0.5)
    assert capsys.readouterr().err == ''
    old = ground_bag._parser().parse_args(['bag', '--rate', '5', '--tiny'])
    assert (old.rate_hz, old.tiny_model) == (5.0, True)
    assert capsys.readouterr().err.splitlines() == [
        'ground_bag: --rate is deprecated; use --rate-hz',
        'ground_bag: --tiny is deprecated; use --tiny-model']
    with pytest.raises(ValueError, match='inner fraction must be in'):
        ground_bag._options(ground_bag._parser().parse_args(
            ['bag', '--depth-inner-fraction', '0']), '')


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
