# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A corpus run folder that others could have written: it never runs code, stays consistent.

Each case is what an outside test found: a crafted chunk file (a pickle that ran a shell
command on resume), a bag re-recorded at the same path (rows of both contents indexed), a
truncated index part or an edited manifest (every later run failed, or a traceback), links
(a link to /etc/passwd hashed, a linked folder skipped silently), a run folder inside the
corpus (another run's outputs taken as inputs), and outputs left named ``*.partial.mcap``.
"""

import json
from pathlib import Path
import pickle
import shutil

import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.corpus import CorpusError, index, manifest
from kosmos_ros.corpus.cli import main as corpus_main
from kosmos_ros.corpus.options import CorpusOptions
from kosmos_ros.corpus.run import run_corpus

SOURCE = Path(__file__).resolve().parents[2] / 'kosmos_ros'


def spec(photo, frames=3):
    return SampleSpec(duration_s=frames / 10.0, rate_hz=10.0, width=96, height=72,
                      photos=(photo,))


def options(inputs, out, **kw):
    kw.setdefault('chunk_frames', 1)
    kw.setdefault('workers', 0)
    return CorpusOptions(inputs=tuple(str(i) for i in inputs), output=out, **kw)


def rows(out):
    return sorted((r['bag'], r['topic'], r['bag_time_ns'], r['phrase'] or '', r['box_index'],
                   r['text']) for r in index.read_table(out).to_pylist())


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp('fleet')
    make_sample_bag(root / 'a', spec('coffee'))
    make_sample_bag(root / 'b', spec('rocket', 2))
    return root


@pytest.fixture(scope='module')
def whole(fleet, steered, tmp_path_factory):
    """Ground the fleet in one uninterrupted run."""
    out = tmp_path_factory.mktemp('whole') / 'run'
    assert run_corpus(options([fleet], out), engine=steered).complete
    return out


def interrupted_run(fleet, steered, out, after):
    seen = []

    def stop(result):
        seen.append(result)
        if len(seen) == after:
            raise KeyboardInterrupt

    assert run_corpus(options([fleet], out), engine=steered, on_chunk=stop).interrupted


class Bomb:
    """Unpickling it runs code (creates a file): what an attacker puts in a run folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_no_code_reads_data_with_pickle_marshal_or_yaml_load():
    """Nothing in the package reads data in a format that can run code."""
    banned = ('import pickle', 'pickle.load', 'marshal.load', 'yaml.load(', 'yaml.unsafe_load',
              'dill.load', 'cloudpickle.load')
    found = []
    for path in SOURCE.rglob('*.py'):
        text = path.read_text(encoding='utf-8')
        found += [f'{path.name}: {b}' for b in banned if b in text]
        if 'torch.load(' in text and 'weights_only=True' not in text:
            found.append(f'{path.name}: torch.load without weights_only=True')
    assert not found


def test_crafted_chunk_files_never_run_code(fleet, steered, whole, tmp_path):
    out = tmp_path / 'run'
    interrupted_run(fleet, steered, out, after=3)
    saved = sorted(p for p in (out / 'chunks').rglob('*') if p.is_file())
    assert len(saved) == 3
    marker = tmp_path / 'pwned'
    bomb = pickle.dumps(Bomb(marker))
    for path in saved:  # under the name of a pickle and of JSON, both crafted
        path.with_suffix('.pkl').write_bytes(bomb)
        path.with_suffix('.json').write_bytes(bomb)
    resumed = run_corpus(options([fleet], out), engine=steered)
    assert not marker.exists(), 'a crafted chunk file ran code'
    assert resumed.complete and resumed.chunks_reused == 0  # each one grounded again
    assert rows(out) == rows(whole)


@pytest.mark.parametrize('damage', ['truncated', 'not json', 'wrong types', 'other chunk',
                                    'a link'])
def test_damaged_chunks_are_grounded_again(fleet, steered, whole, tmp_path, damage):
    out = tmp_path / 'run'
    interrupted_run(fleet, steered, out, after=2)
    path = sorted(p for p in (out / 'chunks').rglob('*') if p.is_file())[0]
    record = json.loads(path.read_text()) if path.suffix == '.json' else None
    if record is None:  # not JSON (an older run's chunk): garbage in its place
        path.write_bytes(b'\x80\x04\x95 not a chunk')
    elif damage == 'truncated':
        path.write_bytes(path.read_bytes()[:40])
    elif damage == 'not json':
        path.write_bytes(b'\x80\x04\x95 binary')
    elif damage == 'wrong types':
        record['results'][0]['result']['phrases'] = [{'text': 1}]
        path.write_text(json.dumps(record))
    elif damage == 'other chunk':
        record['index'] += 1
        path.write_text(json.dumps(record))
    else:
        path.unlink()
        path.symlink_to('/etc/passwd')
    resumed = run_corpus(options([fleet], out), engine=steered)
    assert resumed.complete and resumed.chunks_reused == 1
    assert rows(out) == rows(whole)
    assert Path('/etc/passwd').is_file()


def test_a_re_recorded_bag_leaves_no_stale_rows(steered, tmp_path):
    fleet = tmp_path / 'fleet'
    make_sample_bag(fleet / 'a', spec('coffee'))
    make_sample_bag(fleet / 'b', spec('rocket', 2))
    out = tmp_path / 'run'
    first = run_corpus(options([fleet], out), engine=steered)
    old_id = next(r['bag_id'] for r in first.bags if Path(r['path']).name == 'a')
    shutil.rmtree(fleet / 'a')
    make_sample_bag(fleet / 'a', spec('astronaut', 4))  # re-recorded: other content
    second = run_corpus(options([fleet], out), engine=steered)
    assert second.complete
    records = manifest.read(out)['inputs']
    assert sorted(Path(r['path']).name for r in records) == ['a', 'b']  # one record a path
    new_id = next(r['bag_id'] for r in records if Path(r['path']).name == 'a')
    assert new_id != old_id
    table = index.read_table(out).to_pylist()
    assert {r['bag_id'] for r in table} == {r['bag_id'] for r in records}
    assert len({r['bag_time_ns'] for r in table if r['bag_id'] == new_id}) == 4
    assert not (out / 'bags' / old_id).exists()
    assert not (out / 'index' / f'{old_id}.parquet').exists()
    assert any(n.startswith('dropped: ') and old_id in n for n in second.notes)
    assert 'dropped: ' in second.describe()
    # A bag given before but not now whose content changed: dropped too, said so.
    make_sample_bag(tmp_path / 'other' / 'c', spec('chelsea', 2))
    run_corpus(options([tmp_path / 'other'], out), engine=steered)
    b_id = next(r['bag_id'] for r in manifest.read(out)['inputs']
                if Path(r['path']).name == 'b')
    shutil.rmtree(fleet / 'b')
    make_sample_bag(fleet / 'b', spec('coffee', 1))
    third = run_corpus(options([tmp_path / 'other'], out), engine=steered)
    assert any(b_id in n for n in third.notes)
    assert b_id not in set(index.read_table(out)['bag_id'].to_pylist())
    # A bag whose disk is away (path gone): its rows stay.
    shutil.rmtree(fleet / 'a')
    fourth = run_corpus(options([tmp_path / 'other'], out), engine=steered)
    assert new_id in set(index.read_table(out)['bag_id'].to_pylist())
    assert fourth.complete


def test_a_damaged_index_part_is_redone(fleet, steered, whole, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(whole, out)
    part = sorted((out / 'index').glob('*.parquet'))[0]
    part.write_bytes(part.read_bytes()[:len(part.read_bytes()) // 2])  # truncated
    again = run_corpus(options([fleet], out), engine=steered)
    assert again.complete and manifest.read(out)['status'] == 'complete'
    assert any(n.startswith('redone: ') for n in again.notes)
    assert rows(out) == rows(whole)
    assert corpus_main(['search', str(out)]) == 0


@pytest.mark.parametrize('edit, field', [
    (lambda m: m.update(inputs=[{}]), 'inputs[0].path'),
    (lambda m: m.update(inputs='x'), 'inputs is not a list'),
    (lambda m: m.update(model='a string'), 'model is not an object'),
    (lambda m: m['inputs'][0].update(bag_id='../../../tmp/x-0123456789ab'), 'inputs[0].bag_id'),
    (lambda m: m['inputs'][0].update(status='hacked'), 'inputs[0].status'),
    (lambda m: m['inputs'][0].update(rows='many'), 'inputs[0].rows'),
    (lambda m: m.update(problems=[1]), 'problems[0]'),
])
def test_an_edited_manifest_is_one_error_line(fleet, whole, tmp_path, capsys, monkeypatch,
                                              tiny_model_dir, edit, field):
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    out = tmp_path / 'run'
    shutil.copytree(whole, out)
    data = json.loads((out / 'manifest.json').read_text())
    data['options']['max_new_tokens'] = 64  # the command line's options, so only the edit differs
    edit(data)
    (out / 'manifest.json').write_text(json.dumps(data))
    status = corpus_main(['ground', str(fleet), '-o', str(out), '--tiny-model', '--workers',
                          '0', '--chunk-frames', '1', '--no-progress'])
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith('kosmos_corpus: error:')]
    assert len(lines) == 1 and field in lines[0] and 'damaged' in lines[0], err
    assert 'Traceback' not in err


def test_links_follow_one_rule_and_are_recorded(fleet, steered, tmp_path):
    corpus = tmp_path / 'corpus'
    corpus.mkdir()
    (corpus / 'passwd.mcap').symlink_to('/etc/passwd')
    (corpus / 'linked').symlink_to(fleet / 'a')  # a rosbag2 folder, linked
    shutil.copytree(fleet / 'b', corpus / 'b')
    (corpus / 'sub').mkdir()
    (corpus / 'sub' / 'bag.mcap').symlink_to(next((fleet / 'a').glob('*.mcap')))
    summary = run_corpus(options([corpus, f'{corpus}/*/*.mcap'], tmp_path / 'run'),
                         engine=steered)
    paths = {Path(r['path']).name for r in summary.bags}
    assert paths == {'b'}
    problems = {Path(p['input']).name: p['reason'] for p in summary.problems}
    assert problems['passwd.mcap'].startswith('a symbolic link (to /etc/passwd)')
    assert problems['linked'].startswith('a symbolic link')
    assert problems['bag.mcap'].startswith('a symbolic link')
    text = (tmp_path / 'run' / 'manifest.json').read_text()
    assert 'root:' not in text and '/etc/passwd' in text  # recorded, never read
    # Given by name, a link is the user's choice: followed.
    named = run_corpus(options([corpus / 'linked'], tmp_path / 'named'), engine=steered)
    assert [r['status'] for r in named.bags] == ['done']


def test_a_run_folder_inside_the_corpus_is_never_an_input(fleet, steered, tmp_path):
    corpus = tmp_path / 'corpus'
    shutil.copytree(fleet, corpus)
    first = run_corpus(options([corpus], corpus / 'run1'), engine=steered)
    assert len(first.bags) == 2
    second = run_corpus(options([corpus, f'{corpus}/**/*.mcap'], corpus / 'run2'),
                        engine=steered)
    assert sorted(Path(r['path']).name for r in second.bags) == ['a', 'b']
    assert any('run1' in p['input'] and 'run folder' in p['reason'] for p in second.problems)
    with pytest.raises(CorpusError, match='no bag found: .*run folder'):
        run_corpus(options([corpus / 'run1' / 'bags'], tmp_path / 'run3'), engine=steered)
    with pytest.raises(CorpusError, match='inside the run folder'):
        run_corpus(options([corpus / 'a'], corpus / 'run1' / 'bags' / 'x'), engine=steered)
    assert not (corpus / 'run1' / 'bags' / 'x').exists()
    outputs = [p.name for p in (corpus / 'run1' / 'bags').rglob('*.mcap')]
    assert outputs and not [n for n in outputs if 'partial' in n]
    assert all(p.parent.name + '.mcap' == p.name
               for p in (corpus / 'run1' / 'bags').rglob('*.mcap'))


def test_a_plan_naming_another_bag_is_planned_again(fleet, steered, whole, tmp_path):
    out = tmp_path / 'run'
    interrupted_run(fleet, steered, out, after=1)
    plans = {json.loads(p.read_text())['path']: p for p in (out / 'plans').glob('*.json')}
    a, b = (plans[str(fleet / name)] for name in ('a', 'b'))
    crafted = json.loads(a.read_text())
    crafted['bag_id'] = json.loads(b.read_text())['bag_id']
    b.write_text(json.dumps(crafted))  # b's plan, pointing at a's frames
    resumed = run_corpus(options([fleet], out), engine=steered)
    assert resumed.complete
    assert rows(out) == rows(whole)
