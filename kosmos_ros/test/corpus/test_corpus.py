# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus``: a corpus of bags grounded into one run folder, searched and compared.

The corpus is generated: rosbag2 bags (MCAP and sqlite3, one with depth) of different
photographs, a bag of JPEGs with one corrupt frame, a ROS 1 bag, a truncated MCAP and a copy
of a bag. The engine is the tiny model steered to 'a cat' (one box) and 'two cups' (two
boxes); Ray runs as the command runs it, embedded and local, with two workers.
"""

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.bag.typestore import COMPRESSED_IMAGE, IMAGE, project_typestore
from kosmos_ros.corpus import CorpusError, index, manifest
from kosmos_ros.corpus.cli import main as corpus_main
from kosmos_ros.corpus.compare import compare, CompareSettings
from kosmos_ros.corpus.gate import Thresholds
from kosmos_ros.corpus.options import CorpusOptions, WorkerSpec
from kosmos_ros.corpus.report import write_html
from kosmos_ros.corpus.run import run_corpus
from kosmos_ros.corpus.search import export, search, SearchQuery
from kosmos_ros.model.engine import EngineOptions

from helpers import chromium as _browser, open_in_browser, read_bag, steer_for  # noqa: I100

TEST_DIR = Path(__file__).resolve().parents[1]  # helpers.py (Steer)
# 'a cat' narrowed from patch columns 12..31 to 16..31 (IoU 0.8: moved), one cup fewer (lost).
CHANGED = ('<phrase> a cat</phrase><object><patch_index_0048><patch_index_0863></object> and'
           '<phrase> two cups</phrase><object><patch_index_0100><patch_index_0300></object> on')
FRAMES = {'coffee': 6, 'rocket': 5, 'astronaut': 4, 'chelsea': 3}
IGNORED = ('latency_s',)  # inference time: differs between any two runs


def small_spec(photo, n, **kw):
    return SampleSpec(duration_s=n / 10.0, rate_hz=10.0, width=160, height=120,
                      photos=(photo,), **kw)


def jpeg_bag(path, rgb, n, corrupt):
    """Write n CompressedImage frames of rgb, frame ``corrupt`` holding garbage bytes."""
    store = project_typestore()
    types = store.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection('/arm/image_raw/compressed', COMPRESSED_IMAGE,
                                     typestore=store)
        for i in range(n):
            ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            data = np.frombuffer(b'\xff\xd8\xff' + bytes(range(200)), np.uint8) \
                if i == corrupt else jpeg.reshape(-1)
            stamp = 10 * 10**9 + i * 10**8
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                           nanosec=stamp % 10**9),
                frame_id='arm')
            msg = types[COMPRESSED_IMAGE](header=header, format='jpeg', data=data)
            writer.write(conn, stamp, store.serialize_cdr(msg, COMPRESSED_IMAGE))


def ros1_bag(path, rgb, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    with Ros1Writer(path) as writer:
        conn = writer.add_connection('/front/image_raw', IMAGE, typestore=store)
        for i in range(n):
            header = types['std_msgs/msg/Header'](
                seq=i, stamp=types['builtin_interfaces/msg/Time'](sec=50, nanosec=i * 1000),
                frame_id='front')
            msg = types[IMAGE](header=header, height=rgb.shape[0], width=rgb.shape[1],
                               encoding='rgb8', is_bigendian=0, step=rgb.shape[1] * 3,
                               data=rgb.reshape(-1))
            writer.write(conn, 50 * 10**9 + i * 1000, store.serialize_ros1(msg, IMAGE))


def files_digest(folder):
    """Return {relative path: (size, bytes)} of every file under folder."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def corpus(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp('corpus')
    bags = root / 'fleet'
    make_sample_bag(bags / 'robot1' / 'day1', small_spec('coffee', FRAMES['coffee']))
    make_sample_bag(bags / 'robot1' / 'day2', small_spec('rocket', FRAMES['rocket'],
                                                         storage='sqlite3'))
    make_sample_bag(bags / 'robot2' / 'depth', small_spec('astronaut', FRAMES['astronaut'],
                                                          depth='32FC1'))
    jpeg_bag(bags / 'robot2' / 'arm', cv2.resize(photos['chelsea'], (160, 120)),
             FRAMES['chelsea'] + 1, corrupt=1)
    ros1_bag(bags / 'legacy' / 'old.bag', cv2.resize(photos['rocket'], (96, 72)), 2)
    full = next((bags / 'robot1' / 'day1').glob('*.mcap')).read_bytes()
    (bags / 'broken.mcap').write_bytes(full[:len(full) // 3])
    shutil.copytree(bags / 'robot1' / 'day1', bags / 'zz_copy_of_day1')
    return bags


@pytest.fixture(scope='module')
def steered_spec(model_options, engine):
    steer = steer_for(engine.tokenizer)
    return WorkerSpec(model_options, EngineOptions(max_new_tokens=24, logits_processors=(steer,)))


def options(corpus, out, **kw):
    kw.setdefault('chunk_frames', 2)
    kw.setdefault('workers', 0)
    return CorpusOptions(inputs=(str(corpus),), output=out, **kw)


@pytest.fixture(scope='module')
def reference(corpus, steered, tmp_path_factory):
    """Ground the corpus in this process, without Ray."""
    before = files_digest(corpus)
    out = tmp_path_factory.mktemp('runs') / 'reference'
    summary = run_corpus(options(corpus, out), engine=steered)
    assert files_digest(corpus) == before, 'a run must never modify its inputs'
    return out, summary


def rows(run, drop=IGNORED):
    return index.read_table(run).drop(list(drop)).to_pylist()


def assert_same_rows(got, expected, where=''):
    """Assert rows are equal field by field, box scores to float rounding.

    A batch of several frames sums in another order than a batch of one: the last bits of
    the logits differ.
    """
    assert len(got) == len(expected), where
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            if key == 'score' and a[key] is not None and b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-12), (where, key)
            else:
                assert a[key] == b[key], (where, key, a, b)


def rounded(msg):
    """Return a message's repr with every float to 5 significant digits (scores).

    Without the inference time: it differs between any two runs.
    """
    import re
    if hasattr(msg, 'inference_time'):
        msg.inference_time.sec = msg.inference_time.nanosec = 0
    return re.sub(r'\d+\.\d+(e-?\d+)?', lambda m: f'{float(m.group()):.5g}', repr(msg))


def test_corpus_run_records_every_bag(reference, corpus):
    out, summary = reference
    data = manifest.read(out)
    by_name = {Path(r['path']).name: r for r in data['inputs']}
    assert {n: r['status'] for n, r in by_name.items()} == {
        'day1': 'done', 'day2': 'done', 'depth': 'done', 'arm': 'done', 'old.bag': 'done',
        'broken.mcap': 'failed', 'zz_copy_of_day1': 'duplicate'}
    assert 'broken.mcap' in by_name['broken.mcap']['reason']
    assert str(by_name['day1']['path']) in by_name['zz_copy_of_day1']['reason']
    assert by_name['arm']['grounded'] == FRAMES['chelsea']
    assert sum(by_name['arm']['skipped'].values()) == 1  # the corrupt frame, with its reason
    assert by_name['old.bag']['grounded'] == 2
    for name in ('day1', 'day2', 'depth', 'arm', 'old.bag'):
        record = by_name[name]
        assert len(record['sha256']) == 64 and record['size'] > 0
        assert Path(record['output']).is_dir()
    assert data['status'] == 'complete'
    assert data['versions']['pyarrow'] != 'not installed'
    assert data['model']['description'].endswith('quantization none)')
    assert summary.complete and summary.grounded == sum(FRAMES.values()) + 2
    # Every grounded frame: 'a cat' and two cups, three rows; 3D only for the depth bag.
    table = index.read_table(out)
    assert table.num_rows == 3 * summary.grounded
    depth_rows = [r for r in table.to_pylist() if Path(r['bag']).name == 'depth']
    assert depth_rows and all(r['z'] is not None for r in depth_rows
                              if r['phrase'] == 'a cat')
    assert all(r['z'] is None for r in table.to_pylist() if Path(r['bag']).name != 'depth')


def test_corpus_outputs_equal_ground_bag(reference, corpus, steered, tmp_path):
    """Each bag of the run equals ground_bag with the engine: messages and index rows."""
    out, _ = reference
    data = manifest.read(out)
    for record in data['inputs']:
        if record['status'] != 'done':
            continue
        got = []
        opts = options(corpus, out).bag_options(Path(record['path']), tmp_path / record['bag_id'])
        fingerprint = options(corpus, out).fingerprint()
        bag = {'path': record['path'], 'bag_id': record['bag_id'], 'sha256': record['sha256']}

        def on_frame(outcome, bag=bag):
            got.extend(index.frame_rows(outcome, bag, data['model']['description'], '',
                                        fingerprint))

        gb.ground_bag(opts, steered, on_frame=on_frame)
        expected = [r for r in rows(out) if r['bag_id'] == record['bag_id']]
        direct = index.to_table(got).drop(list(IGNORED)).to_pylist()
        assert_same_rows(direct, expected, record['path'])
        mine, theirs = read_bag(record['output']), read_bag(tmp_path / record['bag_id'])
        assert sorted(mine) == sorted(theirs)
        for topic in mine:
            assert [t for t, _ in mine[topic]] == [t for t, _ in theirs[topic]]
            for (_, a), (_, b) in zip(mine[topic], theirs[topic]):
                assert rounded(a) == rounded(b), topic


def _loopback(address):
    return address in ('127.0.0.1', '::1', '::ffff:127.0.0.1')


@pytest.fixture(scope='module')
def ray_run(corpus, steered_spec, tmp_path_factory):
    """Ground the corpus on an embedded local Ray with two workers; watch its sockets."""
    import psutil

    out = tmp_path_factory.mktemp('runs') / 'ray'
    sockets = []

    def look(_):
        for c in psutil.net_connections(kind='inet'):
            try:
                name = psutil.Process(c.pid).name() if c.pid else ''
            except psutil.Error:
                continue
            if 'ray' in name or 'gcs_server' in name or name == 'raylet':
                sockets.append((name, c.status, c.laddr, c.raddr))

    path = os.environ.get('PYTHONPATH', '')
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(TEST_DIR), path]))  # Steer
    # The driver must decode no frame: the workers ground the chunks and write the bags.
    import kosmos_ros.bag.offline as offline
    import kosmos_ros.images as images
    decoded = []
    real = images.frame_from_message

    def counting(*args, **kwargs):
        decoded.append(1)
        return real(*args, **kwargs)

    images.frame_from_message = offline.frame_from_message = counting
    try:
        summary = run_corpus(options(corpus, out, workers=2, batch_size=3), steered_spec,
                             on_chunk=look)
    finally:
        os.environ['PYTHONPATH'] = path
        images.frame_from_message = offline.frame_from_message = real
    summary.decoded_by_driver = len(decoded)
    return out, summary, sockets


def test_ray_two_workers_equal_one_process(ray_run, reference):
    out, summary, _ = ray_run
    assert summary.workers.startswith('2 Ray workers (CPU) on a local Ray')
    assert len(summary.per_worker) == 2, 'both actors must have grounded chunks'
    assert summary.complete
    assert summary.decoded_by_driver == 0  # the actors wrote the bags too
    assert summary.writing_cpu_s > 0
    assert_same_rows(rows(out), rows(reference[0]))


def test_local_ray_stays_on_loopback(ray_run):
    _, _, sockets = ray_run
    assert sockets, 'no Ray socket was seen while the run was going'
    outside = [s for s in sockets if not _loopback(s[2].ip)
               or (s[3] and not _loopback(s[3].ip))]
    assert not outside


def test_interrupted_run_resumes_without_redoing_chunks(corpus, steered, reference, tmp_path):
    out = tmp_path / 'run'
    seen = []

    def stop(result):
        seen.append(result)
        if len(seen) == 4:
            raise KeyboardInterrupt

    first = run_corpus(options(corpus, out), engine=steered, on_chunk=stop)
    assert first.interrupted and not first.complete
    assert manifest.read(out)['status'] == 'interrupted'
    done = {r['bag_id'] for r in manifest.read(out)['inputs'] if r['status'] == 'done'}
    assert {r['bag_id'] for r in rows(out)} == done  # the index holds the finished bags only
    for bag_id in done:
        assert read_bag(out / 'bags' / bag_id)  # each written bag is whole
    second = run_corpus(options(corpus, out), engine=steered)
    assert second.complete and second.chunks_reused == 4
    sizes = {(c.bag_id, c.index): len(c.frames) for p in _plans(out) for c in p.chunks}
    assert second.frames_now == sum(sizes.values()) - sum(sizes[r.bag_id, r.index]
                                                          for r in seen)
    assert_same_rows(rows(out), rows(reference[0]))
    third = run_corpus(options(corpus, out), engine=steered)  # nothing left to do
    assert third.frames_now == 0
    assert_same_rows(rows(out), rows(reference[0]))


def _plans(out):
    from kosmos_ros.corpus.plan import BagPlan
    return [BagPlan.from_record(json.loads(p.read_text())) for p in (out / 'plans').iterdir()]


KILLER = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {test_dir!r})
    from helpers import steer_for
    from kosmos_ros.corpus.options import CorpusOptions, WorkerSpec
    from kosmos_ros.corpus.run import run_corpus
    from kosmos_ros.model.engine import EngineOptions
    from kosmos_ros.model.loading import ModelOptions
    from transformers import AutoTokenizer
    model = ModelOptions(model={model!r}, local_files_only=True, device='cpu')
    steer = steer_for(AutoTokenizer.from_pretrained({model!r}))
    spec = WorkerSpec(model, EngineOptions(max_new_tokens=24, logits_processors=(steer,)))
    count = []
    def kill(result):
        count.append(result)
        if len(count) == {after}:
            os.kill(os.getpid(), signal.SIGKILL)
    run_corpus(CorpusOptions(inputs=({corpus!r},), output={out!r}, chunk_frames=2, workers=0),
               spec, on_chunk=kill)
''')


def test_killed_run_resumes_to_the_same_index(corpus, steered, reference, tmp_path,
                                              tiny_model_dir):
    out = tmp_path / 'killed'
    script = KILLER.format(test_dir=str(TEST_DIR), model=str(tiny_model_dir), after=7,
                           corpus=str(corpus), out=str(out))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = list((out / 'chunks').rglob('*.json'))
    assert len(saved) == 7
    assert manifest.read(out)['status'] == 'running'  # what a killed run leaves
    resumed = run_corpus(options(corpus, out), engine=steered)
    assert resumed.complete and resumed.chunks_reused == 7
    assert not (out / 'bags' / '.partial').exists()
    assert not list(out.rglob('*partial*'))  # finished outputs keep no temporary name
    assert_same_rows(rows(out), rows(reference[0]))


def test_sigterm_stops_a_ray_run_and_it_resumes(corpus, tmp_path, tiny_model_dir,
                                                monkeypatch):
    """Ray makes SIGTERM exit at once; the run keeps its own handling (systemd, docker stop)."""
    import time
    out = tmp_path / 'run'
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))  # one model for both
    env = dict(os.environ)
    cmd = [sys.executable, '-m', 'kosmos_ros.corpus.cli', 'ground', str(corpus), '-o',
           str(out), '--tiny-model', '--workers', '1', '--chunk-frames', '1', '--batch-size',
           '1', '--max-new-tokens', '64', '--no-progress']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not list((out / 'chunks').rglob('*.json')) and proc.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert 'interrupted' in stdout
    assert manifest.read(out)['status'] == 'interrupted'
    done = len(list((out / 'chunks').rglob('*.json')))
    assert 0 < done < sum(FRAMES.values()) + 3
    assert corpus_main(['ground', str(corpus), '-o', str(out), '--tiny-model', '--workers',
                        '0', '--chunk-frames', '1', '--max-new-tokens', '64',
                        '--no-progress']) == 0
    assert manifest.read(out)['status'] == 'complete'


def test_a_failing_worker_ends_the_run_incomplete_and_it_resumes(corpus, steered, reference,
                                                                 tmp_path):
    """An engine failing outside its own errors (a driver crash, say) stops the run."""
    class Failing:
        def __init__(self, engine, after):
            self.engine, self.left = engine, after

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def run(self, *args, **kwargs):
            self.left -= 1
            if self.left < 0:
                raise RuntimeError('CUDA driver gone')
            return self.engine.run(*args, **kwargs)

    out = tmp_path / 'run'
    with pytest.raises(RuntimeError, match='driver gone'):
        run_corpus(options(corpus, out), engine=Failing(steered, 3))
    data = manifest.read(out)
    assert data['status'] == 'incomplete'
    assert any(r['status'] == 'pending' for r in data['inputs'])
    resumed = run_corpus(options(corpus, out), engine=steered)
    assert resumed.complete and resumed.chunks_reused >= 3
    assert manifest.read(out)['status'] == 'complete'
    assert_same_rows(rows(out), rows(reference[0]))


def test_run_folder_and_options_are_checked(corpus, steered, reference, tmp_path):
    out, _ = reference
    with pytest.raises(CorpusError, match='other options') as raised:
        run_corpus(options(corpus, out, prompt='something else', task='raw'), engine=steered)
    # Each option that differs, with both values; nothing about the ones that agree.
    assert str(raised.value).count(' in the run folder, ') == 2
    assert "prompt '' in the run folder, 'something else' now" in str(raised.value)
    assert "task 'caption' in the run folder, 'raw' now" in str(raised.value)
    assert 'rate_hz' not in str(raised.value)
    stranger = tmp_path / 'notes'
    stranger.mkdir()
    (stranger / 'todo.txt').write_text('mine')
    with pytest.raises(CorpusError, match='holds no corpus run'):
        run_corpus(options(corpus, stranger), engine=steered)
    with pytest.raises(CorpusError, match='inside the bag'):
        run_corpus(options(corpus / 'robot1' / 'day1',
                           corpus / 'robot1' / 'day1' / 'run'), engine=steered)
    assert not (corpus / 'robot1' / 'day1' / 'run').exists()
    with pytest.raises(CorpusError, match='chunk_frames'):
        run_corpus(options(corpus, tmp_path / 'x', chunk_frames=0), engine=steered)
    with pytest.raises(CorpusError, match='query cannot run'):
        run_corpus(options(corpus, tmp_path / 'y', prompt='x' * 20000, task='raw'),
                   engine=steered)
    # Inputs that name no bag (a mistyped path) are an error, before anything is written.
    with pytest.raises(CorpusError, match='no bag found: .*nothing: no such file or folder'):
        run_corpus(CorpusOptions(inputs=(str(tmp_path / 'nothing'),), output=tmp_path / 'z',
                                 workers=0), engine=steered)
    assert not (tmp_path / 'z').exists()
    assert corpus_main(['ground', str(tmp_path / 'nothing'), '-o', str(tmp_path / 'z'),
                        '--tiny-model', '--workers', '0', '--no-progress']) == 2
    assert not (tmp_path / 'z').exists()


def test_hostile_inputs_are_recorded_and_the_run_goes_on(corpus, steered, tmp_path):
    hostile = tmp_path / 'hostile'
    (hostile / 'loop').mkdir(parents=True)
    (hostile / 'loop' / 'self').symlink_to('..')  # a symbolic link loop
    (hostile / 'junk.bag').write_text('not a bag')
    (hostile / 'noise.mcap').write_bytes(os.urandom(600))
    (hostile / 'empty.db3').write_bytes(b'')
    os.mkfifo(hostile / 'pipe.mcap')  # reading it would block for ever
    (hostile / 'badmeta').mkdir()
    (hostile / 'badmeta' / 'metadata.yaml').write_text('{{{ not yaml')
    shutil.copytree(corpus / 'robot2' / 'arm', hostile / 'arm')
    (tmp_path / 'notes.txt').write_text('a text file')
    before = files_digest(corpus)
    summary = run_corpus(CorpusOptions(
        inputs=(str(hostile), str(hostile / 'pipe.mcap'), str(tmp_path / 'notes.txt'),
                str(hostile / '*.none')), output=tmp_path / 'run', workers=0), engine=steered)
    status = {Path(r['path']).name: (r['status'], r.get('reason', '')) for r in summary.bags}
    assert status['arm'][0] == 'done'
    for name in ('junk.bag', 'noise.mcap', 'empty.db3', 'badmeta'):
        assert status[name][0] == 'failed' and status[name][1], name
    assert 'pipe.mcap' not in status
    problems = {p['input']: p['reason'] for p in summary.problems}
    assert problems[str(hostile / 'pipe.mcap')].startswith('not a regular file')
    assert problems[str(tmp_path / 'notes.txt')].startswith('not a bag')
    assert problems[str(hostile / '*.none')] == 'the pattern matches no bag'
    assert files_digest(corpus) == before


@pytest.mark.parametrize('workers', ['0', '1'])
def test_unloadable_model_is_exit_1_and_the_folder_reusable(corpus, tmp_path, capsys,
                                                            workers):
    out = tmp_path / 'run'
    status = corpus_main(['ground', str(corpus / 'legacy'), '-o', str(out), '--model',
                          str(tmp_path / 'no_model'), '--local-files-only', '--workers',
                          workers, '--no-progress'])
    assert status == 1
    assert 'cannot load the model' in capsys.readouterr().err
    assert corpus_main(['ground', str(corpus / 'legacy'), '-o', str(out), '--tiny-model',
                        '--workers', '0', '--max-new-tokens', '2', '--no-progress']) == 0
    assert manifest.read(out)['status'] == 'complete'


def test_one_run_per_folder(corpus, steered, reference):
    import fcntl
    out, _ = reference
    with open(out / '.lock', 'a+') as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CorpusError, match='another run is using'):
            run_corpus(options(corpus, out), engine=steered)


def test_search_the_index(reference, tmp_path):
    out, _ = reference
    table = index.read_table(out)
    cats = search(table, SearchQuery(phrase='CAT'))
    assert cats.num_rows == table.num_rows // 3
    assert set(cats['phrase'].to_pylist()) == {'a cat'}
    cups = search(table, SearchQuery(phrase='cups', topic='/camera/*'))
    assert set(cups['topic'].to_pylist()) == {'/camera/image_raw'}
    assert cups.num_rows == 2 * (FRAMES['coffee'] + FRAMES['rocket'] + FRAMES['astronaut'])
    scores = table['score'].to_pylist()
    cut = sorted(s for s in scores if s is not None)[len(scores) // 2]
    assert all(s >= cut for s in search(table, SearchQuery(min_score=cut))['score'].to_pylist())
    stamps = sorted(set(table['stamp'].to_pylist()))
    window = search(table, SearchQuery(since=stamps[1], until=stamps[2]))
    assert set(window['stamp'].to_pylist()) <= {stamps[1], stamps[2]}
    assert search(table, SearchQuery(phrase='forklift')).num_rows == 0
    for name in ('hits.csv', 'hits.jsonl', 'hits.parquet'):
        export(cats, tmp_path / name)
    assert index.read_table(tmp_path / 'hits.parquet').num_rows == cats.num_rows
    assert len((tmp_path / 'hits.jsonl').read_text().splitlines()) == cats.num_rows
    assert len((tmp_path / 'hits.csv').read_text().splitlines()) == cats.num_rows + 1
    with pytest.raises(CorpusError, match='cannot export'):
        export(cats, tmp_path / 'hits.xlsx')


def test_search_command(reference, tmp_path, capsys):
    out, _ = reference
    assert corpus_main(['search', str(out), '--phrase', 'cup', '--min-score', '0',
                        '--since', '1970-01-01T00:00:00Z', '--limit', '3']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].split()[:4] == ['bag', 'topic', 'stamp', 'phrase']
    assert all(' two cups ' in line for line in lines[1:4])
    assert lines[4].startswith('40 hits (37 not shown')
    assert corpus_main(['search', str(out), '--bag', 'old', '--output',
                        str(tmp_path / 'old.json')]) == 0
    lines = (tmp_path / 'old.json').read_text().splitlines()
    assert lines and all(json.loads(line)['bag'].endswith('old.bag') for line in lines)
    assert corpus_main(['search', str(tmp_path / 'none')]) == 2
    assert 'no index' in capsys.readouterr().err
    assert corpus_main(['search', str(out), '--since', 'yesterday']) == 2


def test_find_grounds_only_the_bags_not_yet_indexed(corpus, steered, tmp_path):
    out = tmp_path / 'find'
    first = run_corpus(CorpusOptions(inputs=(str(corpus / 'robot1'),), output=out,
                                     task='find', prompt='a cat', workers=0), engine=steered)
    assert first.complete and first.frames_now == FRAMES['coffee'] + FRAMES['rocket']
    second = run_corpus(CorpusOptions(inputs=(str(corpus / 'robot1'), str(corpus / 'legacy')),
                                      output=out, task='find', prompt='a cat', workers=0),
                        engine=steered)
    assert second.frames_now == 2  # only the ROS 1 bag was new
    hits = search(index.read_table(out), SearchQuery(phrase='a cat'))
    assert hits.num_rows >= FRAMES['coffee'] + FRAMES['rocket'] + 2
    assert set(hits['task'].to_pylist()) == {'find'}
    third = run_corpus(CorpusOptions(inputs=(str(corpus / 'legacy'),), output=out, task='find',
                                     prompt='a cat', workers=0), engine=steered)
    assert third.frames_now == 0  # nothing new, and the bags given before are kept
    assert search(index.read_table(out), SearchQuery(phrase='a cat')).num_rows == hits.num_rows


def test_find_command_with_the_tiny_model(corpus, tmp_path, capsys):
    out = tmp_path / 'find_cli'
    status = corpus_main(['search', '--find', 'a forklift', '--run', str(out),
                          str(corpus / 'legacy'), '--workers', '0', '--tiny-model',
                          '--max-new-tokens', '4', '--no-progress'])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert 'hits' in captured.out
    assert manifest.read(out)['options']['task'] == 'find'
    assert manifest.read(out)['options']['prompt'] == 'a forklift'
    assert corpus_main(['search', '--find', ' ', '--run', str(out), str(corpus)]) == 2
    assert corpus_main(['search', '--find', 'x', str(corpus)]) == 2


@pytest.fixture(scope='module')
def changed_run(corpus, engine, tmp_path_factory):
    """Ground the corpus with another steering: a narrower cat, one cup fewer."""
    out = tmp_path_factory.mktemp('runs') / 'changed'
    other = engine.with_options(logits_processors=(steer_for(engine.tokenizer, CHANGED),),
                                max_new_tokens=24)
    run_corpus(options(corpus, out), engine=other)
    return out


def test_compare_identical_runs_reports_nothing(reference, ray_run, tmp_path, capsys):
    result = compare(index.read_table(reference[0]), index.read_table(ray_run[0]))
    t = result.totals
    assert (t['added'], t['lost'], t['moved'], t['caption_changes'], t['missing_frames']) == \
        (0, 0, 0, 0, 0)
    assert t['matched'] == t['boxes_a'] == t['boxes_b'] > 0
    assert t['score_shift_max'] < 1e-5
    gate = ['--max-added', '0', '--max-lost', '0', '--max-moved', '0',
            '--max-caption-changes', '0', '--max-missing-frames', '0', '--max-score-shift',
            '0.0001']
    assert corpus_main(['compare', str(reference[0]), str(ray_run[0]), *gate,
                        '--json', str(tmp_path / 'same.json')]) == 0
    assert json.loads((tmp_path / 'same.json').read_text())['changed_frames'] == []


def test_compare_finds_an_injected_change(reference, changed_run, tmp_path, capsys):
    frames = sum(FRAMES.values()) + 2
    result = compare(index.read_table(reference[0]), index.read_table(changed_run))
    t = result.totals
    assert t['frames_both'] == frames and t['missing_frames'] == 0
    assert t['lost'] == frames  # the second cup, on every frame
    assert t['moved'] == frames  # the cat, narrowed
    assert t['added'] == 0
    moved = result.changed()[0].moved[0]
    assert moved['phrase'] == 'a cat' and 0.5 <= moved['iou'] < 0.9
    status = corpus_main(['compare', str(reference[0]), str(changed_run), '--max-lost', '0',
                          '--max-added', '0', '--json', str(tmp_path / 'r.json'), '--html',
                          str(tmp_path / 'r.html'), '--top', '5'])
    captured = capsys.readouterr()
    assert status == 1
    assert 'max_lost' in captured.err and 'FAIL: max_lost' in captured.out
    report = json.loads((tmp_path / 'r.json').read_text())
    assert report['thresholds']['max_lost']['exceeded'] is True
    assert report['thresholds']['max_added']['exceeded'] is False
    assert len(report['changed_frames']) == frames
    assert corpus_main(['compare', str(reference[0]), str(changed_run),
                        '--max-lost', str(frames)]) == 0
    # Another caption on every frame shows as changed captions, and only that.
    import pyarrow as pa
    table = index.read_table(reference[0])
    texts = pa.array([t + ' (changed)' for t in table['text'].to_pylist()])
    other = table.set_column(table.schema.get_field_index('text'), 'text', texts)
    t = compare(table, other).totals
    assert (t['caption_changes'], t['added'], t['lost'], t['moved']) == (frames, 0, 0, 0)


def test_compare_score_shifts_and_tolerance(reference):
    import pyarrow as pa
    table = index.read_table(reference[0])
    column = table.schema.get_field_index('score')

    def shifted(delta):
        scores = pa.array([None if v is None else v + delta for v in table['score'].to_pylist()])
        return table.set_column(column, 'score', scores)

    noise = compare(table, shifted(1e-6)).totals  # float rounding: nothing changed
    assert noise['changed_frames'] == 0 and noise['score_shift_max'] == pytest.approx(1e-6)
    real = compare(table, shifted(0.01)).totals
    assert real['changed_frames'] == sum(FRAMES.values()) + 2
    assert real['score_shift_max'] == pytest.approx(0.01)
    assert (real['added'], real['lost'], real['moved']) == (0, 0, 0)
    assert Thresholds(max_score_shift=0.005).verdict(real)['max_score_shift']['exceeded']


def test_compare_command_errors(reference, tmp_path, capsys):
    assert corpus_main(['compare', str(reference[0]), str(tmp_path / 'missing')]) == 2
    assert 'no index' in capsys.readouterr().err
    (tmp_path / 'bad.parquet').write_bytes(b'PAR1 not parquet')
    assert corpus_main(['compare', str(reference[0]), str(tmp_path / 'bad.parquet')]) == 2
    assert corpus_main(['compare', str(reference[0]), str(reference[0]),
                        '--max-added', '-1']) == 2
    assert corpus_main(['compare', str(reference[0]), str(reference[0]),
                        '--match-iou', '0']) == 2


@pytest.mark.skipif(_browser() is None, reason='no Chromium here (apt install chromium)')
def test_compare_report_opens_in_a_headless_browser(reference, changed_run, tmp_path):
    result = compare(index.read_table(reference[0]), index.read_table(changed_run),
                     CompareSettings(top=6))
    page = tmp_path / 'report.html'
    written = write_html(result, Thresholds(max_lost=0), page)
    assert (written.changes, written.thumbnails) == (6, 12)  # A's and B's boxes apart
    images = written.thumbnails + written.plots
    seen = open_in_browser(page, tmp_path)
    assert seen == {'data-images': str(images), 'data-images-ok': str(images),
                    'data-errors': '0'}
    # The check can fail: a thumbnail whose bytes are cut short does not decode.
    text = page.read_text()
    start = text.index('base64,') + len('base64,')
    (tmp_path / 'broken.html').write_text(text[:start] + 'AAAA' + text[start + 400:])
    assert open_in_browser(tmp_path / 'broken.html', tmp_path)['data-images-ok'] == \
        str(images - 1)


def test_track_on_a_corpus_run_equals_ground_bag_track(corpus, steered, tmp_path):
    """--track: each bag's tracks and track states are ground_bag --track's, one by one."""
    out = tmp_path / 'tracked'
    first = options(corpus / 'robot1', out, track=True, rate_hz=5.0)
    summary = run_corpus(first, engine=steered)
    assert summary.complete and manifest.read(out)['options']['track']['coast_time'] == 1.0
    for record in manifest.read(out)['inputs']:
        mine = read_bag(record['output'])
        opts = first.bag_options(Path(record['path']), tmp_path / record['bag_id'])
        gb.ground_bag(opts, steered)
        theirs = read_bag(tmp_path / record['bag_id'])
        assert sorted(mine) == sorted(theirs)
        assert '/camera/tracks' in mine and '/camera/track_states' in mine
        # Every admitted frame tracked, throttled ones too (rate 5 Hz of a 10 Hz camera).
        assert len(mine['/camera/tracks']) > len(mine['/camera/detections'])
        for topic in mine:
            assert [t for t, _ in mine[topic]] == [t for t, _ in theirs[topic]]
            for (_, a), (_, b) in zip(mine[topic], theirs[topic]):
                assert rounded(a) == rounded(b), topic
    # A run folder grounded without tracking refuses to resume with it, naming the option.
    untracked = tmp_path / 'untracked'
    run_corpus(options(corpus / 'robot1', untracked, rate_hz=5.0), engine=steered)
    with pytest.raises(CorpusError, match=r"track '\(not set\)' in the run folder, \{"):
        run_corpus(options(corpus / 'robot1', untracked, rate_hz=5.0, track=True),
                   engine=steered)
