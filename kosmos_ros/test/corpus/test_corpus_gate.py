# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus compare`` as a CI gate, and outputs that never land on what is read.

What an outside test found: a gate that passed on nothing (a run that grounded nothing, an
interrupted one, frames missing from run B, NaN scores, and a ``--json`` with a bare NaN),
and ``search --output`` / ``compare --json/--html`` that overwrote the run's index or an
input bag.
"""

import json
from pathlib import Path
import shutil

import pyarrow as pa
import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.corpus import index
from kosmos_ros.corpus.cli import main as corpus_main
from kosmos_ros.corpus.options import CorpusOptions
from kosmos_ros.corpus.run import run_corpus

GATE = ['--max-added', '0', '--max-lost', '0', '--max-moved', '0', '--max-score-shift', '0.01']


def spec(photo, frames):
    return SampleSpec(duration_s=frames / 10.0, rate_hz=10.0, width=96, height=72,
                      photos=(photo,))


def options(inputs, out, **kw):
    kw.setdefault('chunk_frames', 2)
    kw.setdefault('workers', 0)
    return CorpusOptions(inputs=tuple(str(i) for i in inputs), output=out, **kw)


@pytest.fixture(scope='module')
def runs(steered, tmp_path_factory):
    """Ground a two-bag fleet: whole (twice), one bag only, interrupted, nothing usable."""
    root = tmp_path_factory.mktemp('gate')
    fleet = root / 'fleet'
    make_sample_bag(fleet / 'a', spec('coffee', 3))
    make_sample_bag(fleet / 'b', spec('rocket', 2))
    (root / 'junk').mkdir()
    (root / 'junk' / 'broken.mcap').write_bytes(b'\x89MCAP0\r\n not a bag')
    out = {'base': root / 'base', 'again': root / 'again', 'half': root / 'half',
           'stopped': root / 'stopped', 'empty': root / 'empty'}
    for name in ('base', 'again'):
        assert run_corpus(options([fleet], out[name]), engine=steered).complete
    run_corpus(options([fleet / 'a'], out['half']), engine=steered)

    def stop(_):
        raise KeyboardInterrupt

    assert run_corpus(options([fleet], out['stopped']), engine=steered, on_chunk=stop
                      ).interrupted
    empty = run_corpus(options([root / 'junk'], out['empty']), engine=steered)
    assert empty.complete and empty.grounded == 0
    out['fleet'] = fleet
    return out


def gate(a, b, *extra):
    return corpus_main(['compare', str(a), str(b), *GATE, *extra])


def test_identical_complete_runs_pass(runs):
    assert gate(runs['base'], runs['again']) == 0


def test_a_run_that_grounded_nothing_fails_unless_allowed(runs, capsys):
    assert gate(runs['base'], runs['empty']) == 1
    assert 'grounded_frames' in capsys.readouterr().err
    assert gate(runs['empty'], runs['empty']) == 1
    assert gate(runs['empty'], runs['empty'], '--allow-empty') == 0


def test_an_interrupted_run_fails_unless_allowed(runs, capsys):
    assert gate(runs['base'], runs['stopped']) == 1
    err = capsys.readouterr().err
    assert 'complete_runs' in err
    assert gate(runs['base'], runs['stopped'], '--allow-incomplete', '--allow-empty',
                '--max-missing-frames', '1000') == 0


def test_frames_missing_from_b_fail_by_default(runs, capsys):
    assert gate(runs['base'], runs['half']) == 1
    assert 'missing_frames' in capsys.readouterr().err
    assert gate(runs['base'], runs['half'], '--max-missing-frames', '2') == 0
    assert gate(runs['half'], runs['base']) == 0  # frames only B grounded are not missing


def test_a_nan_score_fails_the_gate_and_the_json_stays_valid(runs, tmp_path, capsys):
    table = index.read_table(runs['again'])
    scores = table['score'].to_pylist()
    scores[0] = float('nan')
    nan = table.set_column(table.schema.get_field_index('score'), 'score',
                           pa.array(scores, pa.float64()))
    index.write_table(nan, tmp_path / 'nan.parquet')
    report = tmp_path / 'r.json'
    for a, b in ((runs['base'], tmp_path / 'nan.parquet'),
                 (tmp_path / 'nan.parquet', runs['base'])):
        assert gate(a, b, '--json', str(report)) == 1
        assert 'nan_values' in capsys.readouterr().err

        def refuse(constant):
            raise AssertionError(f'bare {constant} in the JSON report')

        record = json.loads(report.read_text(), parse_constant=refuse)
        assert record['passed'] is False
        assert record['thresholds']['nan_values']['exceeded'] is True


def test_search_and_compare_never_write_over_what_they_read(runs, tmp_path, capsys):
    base = runs['base']
    bag_file = next((runs['fleet'] / 'a').glob('*.mcap'))
    before = {p: p.read_bytes() for p in (base / 'index.parquet', base / 'manifest.json',
                                          bag_file)}
    other_run = runs['again'] / 'notes.json'
    cases = [
        ['search', str(base), '--output', str(base / 'index.parquet')],
        ['search', str(base), '--output', str(bag_file)],
        ['search', str(base), '--output', str(runs['fleet'] / 'a' / 'hits.json')],
        ['search', str(base), '--output', str(other_run)],
        ['search', str(base), '--output', str(tmp_path)],
        ['compare', str(base), str(runs['again']), '--json', str(base / 'manifest.json')],
        ['compare', str(base), str(runs['again']), '--html', str(bag_file)],
        ['compare', str(base), str(base / 'index.parquet'), '--json',
         str(base / 'index.parquet')],
        ['compare', str(base), str(runs['again']), '--json', str(tmp_path / 'r'), '--html',
         str(tmp_path / 'r')],
        ['search', '--find', 'a cat', '--run', str(tmp_path / 'find'), str(runs['fleet']),
         '--tiny-model', '--workers', '0', '--output', str(bag_file)],
    ]
    for argv in cases:
        assert corpus_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith('kosmos_corpus: error:') and 'Traceback' not in err, err
    assert not (tmp_path / 'find').exists()  # refused before anything was grounded
    assert not other_run.exists() and not (runs['fleet'] / 'a' / 'hits.json').exists()
    assert all(p.read_bytes() == data for p, data in before.items())
    # Apart from the inputs, both work.
    assert corpus_main(['search', str(base), '--output', str(tmp_path / 'hits.csv')]) == 0
    assert gate(base, runs['again'], '--json', str(tmp_path / 'r.json'), '--html',
                str(tmp_path / 'r.html')) == 0


def test_a_copied_run_compares_as_itself(runs, tmp_path):
    copy = tmp_path / 'copy'
    shutil.copytree(runs['base'], copy)
    assert gate(runs['base'], copy) == 0
    assert gate(Path(runs['base']) / 'index.parquet', copy / 'index.parquet') == 0
