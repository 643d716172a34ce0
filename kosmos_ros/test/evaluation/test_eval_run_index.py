# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""kosmos_eval coco --run: the boxes of an existing corpus run scored, nothing grounded again.

Two bags (one holding the first four frames of test_eval_bags, one a frame with the same topic
and stamp as the first) are grounded by ``kosmos_corpus`` in this process with the tiny
model steered per phrase; the run's figures must equal those of ``--bag`` on the same frames.
"""

from dataclasses import replace
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kosmos_ros.corpus.options import CorpusOptions
from kosmos_ros.corpus.run import run_corpus
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation import run_index as R
from kosmos_ros.evaluation.bag_frames import BagFrames
from kosmos_ros.evaluation.calibration import Target
from kosmos_ros.evaluation.cli import main
from kosmos_ros.evaluation.labels import read_labels
from kosmos_ros.evaluation.record import evaluate
from kosmos_ros.evaluation.run import ground_labels, SKIP_LABELS_OF_SKIPPED

from test_eval import phrase_steered, SIZE  # noqa: I100
from test_eval_bags import frame_entry, FRAMES, labels_for, RAW, T0, write_bag

GROUNDED = [FRAMES[n][:2] for n in (0, 2, 3)]  # the raw frames; the run skips the JPEG topic

MODEL = ['--max-new-tokens', '4', '--no-progress', '--device', 'cpu', '--local-files-only']
BOX = (10.0, 10.0, 60.0, 60.0)


def write_labels(path, entries, boxes, names=('cat',)):
    """Write a label file (:func:`test_eval_bags.labels_for`) of the category ``cat`` only."""
    return labels_for(path, entries, boxes, names)


@pytest.fixture(scope='module')
def by_phrase(engine):
    return phrase_steered(engine)


@pytest.fixture(scope='module')
def bags(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp('corpus')
    write_bag(root / 'cam', photos, FRAMES[:4])  # the JPEG frame 1 is not grounded: its raw is
    write_bag(root / 'other', photos, [(RAW, T0, 'chelsea')])  # the first frame's topic, stamp
    return root


def corpus_run(bags, out, engine, **kw):
    run_corpus(CorpusOptions(inputs=(str(bags),), output=out, workers=0, **kw), engine=engine)
    return out


@pytest.fixture(scope='module')
def find_run(bags, by_phrase, tmp_path_factory):
    return corpus_run(bags, tmp_path_factory.mktemp('runs') / 'cat', by_phrase, task='find',
                      prompt='cat', batch_size=1)


@pytest.fixture(scope='module')
def recorded(find_run):
    """Return {bag folder name: the bag as the run recorded it}."""
    paths = set(pq.read_table(find_run / 'index.parquet')['bag'].to_pylist())
    return {p.rstrip('/').rsplit('/', 1)[-1]: p for p in paths}


def _close(a, b, where='record'):
    """Assert two records are equal, floats to the rounding a batch of frames may move."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f'{where}[{n}]')
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-9), where
    else:
        assert a == b, where


def _figures(record):
    out = {k: v for k, v in record.items() if k not in ('labels', 'worst', 'source')}
    out['worst'] = {kind: [{k: v for k, v in e.items() if k != 'image'} for e in entries]
                    for kind, entries in record['worst'].items()}
    return out


def test_run_scores_as_grounding_the_same_bag(find_run, recorded, bags, by_phrase, tmp_path):
    entries = [frame_entry(t, s, bag=recorded['cam'] if s == T0 else None)
               for t, s in GROUNDED]
    entries = [{k: v for k, v in e.items() if v is not None} for e in entries]
    boxes = {1: [('cat', (20.0, 10.0, 140.0, 110.0))], 2: [('cat', BOX)], 3: [('cat', BOX)]}
    labels = read_labels(write_labels(tmp_path / 'labels.json', entries, boxes))
    run = R.read_run(find_run)
    scored, source = R.source_of(run, labels, by_phrase)
    assert source['task'] == 'find' and "only category 1 ('cat')" in source['statement']
    from_run = R.grounded_from_run(run, scored, by_phrase)
    from_bag = ground_labels(labels, None, by_phrase, sources=[
        BagFrames([bags / 'cam'], labels.images, tmp_path / 'out')])
    assert [i.image_id for i in from_run.images] == [1, 2, 3] and not from_run.skipped
    assert len(from_run.detections) == 3 and from_run.queries == 0
    a = evaluate(from_run, 'tiny', 0.0, Target('precision', 1.0)).record
    b = evaluate(from_bag, 'tiny', 0.0, Target('precision', 1.0)).record
    _close(_figures(a), _figures(b))
    assert a['phrases']['cat']['labels'] == 3 and a['overall']['detections'] == 3

    unnamed = replace(scored, images=tuple(replace(i, bag=None) for i in scored.images))
    without = R.grounded_from_run(run, unnamed, by_phrase)  # the first frame is in both bags
    assert without.skipped == {R.SKIP_SEVERAL_BAGS: 1, SKIP_LABELS_OF_SKIPPED: 1}


def test_cli_writes_the_source_and_counts_skips(find_run, recorded, tiny_model_dir, tmp_path,
                                                capsys):
    entries = [frame_entry(RAW, T0, bag=recorded['other']), frame_entry(*FRAMES[2][:2]),
               frame_entry(RAW, T0 + 10**7),  # no frame has that stamp: not grounded
               frame_entry(*FRAMES[1][:2]),  # the JPEG topic: the run grounded its raw one
               {'file_name': 'a.png', 'width': SIZE[0], 'height': SIZE[1]}]
    labels = write_labels(tmp_path / 'labels.json', entries,
                          {1: [('cat', BOX), ('dog', BOX)], 3: [('cat', BOX)]},
                          names=('cat', 'dog'))
    out = tmp_path / 'out'
    assert main(['coco', str(labels), '--run', str(find_run), '-o', str(out), '--model',
                 str(tiny_model_dir)] + MODEL) == 0
    captured = capsys.readouterr()
    record = json.loads((out / 'eval.json').read_text())
    assert record['images'] == 2 and list(record['phrases']) == ['cat']
    assert record['source']['run'] == str(find_run) and record['source']['prompt'] == 'cat'
    assert record['source']['status'] == 'complete' and record['task'] == 'find'
    assert record['skipped'] == {R.SKIP_NOT_GROUNDED: 2, R.SKIP_FILE: 1,
                                 R.SKIP_OTHER_CATEGORY: 1, SKIP_LABELS_OF_SKIPPED: 1}
    assert "only category 1 ('cat') is scored" in captured.out
    assert f'no index row for {RAW} at {T0 + 10**7} ns' in captured.err


def test_a_frame_grounded_without_boxes_is_scored(bags, by_phrase, tmp_path):
    run = R.read_run(corpus_run(bags / 'cam', tmp_path / 'dog', by_phrase, task='find',
                                prompt='dog'))
    labels = read_labels(write_labels(tmp_path / 'l.json', [frame_entry(*FRAMES[0][:2])],
                                      {1: [('dog', BOX)]}, names=('dog',)))
    grounded = R.grounded_from_run(run, R.source_of(run, labels, by_phrase)[0], by_phrase)
    assert [i.image_id for i in grounded.images] == [1] and not grounded.detections


def test_a_caption_run_says_what_it_measures(bags, steered, tiny_model_dir, tmp_path, capsys):
    run = corpus_run(bags / 'cam', tmp_path / 'caption', steered)  # 'a cat' and 'two cups'
    labels = write_labels(tmp_path / 'l.json', [frame_entry(t, s) for t, s in GROUNDED],
                          {1: [('a cat', BOX)]}, names=('a cat', 'two cups', 'dog'))
    out = tmp_path / 'out'
    assert main(['coco', str(labels), '--run', str(run), '-o', str(out), '--model',
                 str(tiny_model_dir)] + MODEL) == 0
    captured = capsys.readouterr()
    record = json.loads((out / 'eval.json').read_text())
    statement = R.CAPTION_STATEMENT.format(task='caption')
    assert record['task'] == 'caption' and record['source']['statement'] == statement
    assert statement in captured.out
    assert {p: record['phrases'][p]['detections'] for p in record['phrases']} == {
        'a cat': 3, 'two cups': 6, 'dog': 0}


def _edited(run, tmp_path, edit):
    """Copy a run folder and rewrite its index through ``edit(table) -> table``."""
    copy = tmp_path / 'edited'
    shutil.copytree(run, copy)
    table = edit(pq.read_table(copy / 'index.parquet'))
    pq.write_table(table, copy / 'index.parquet')
    return copy


def _set(table, name, values):
    column = table.column_names.index(name)
    return table.set_column(column, name, pa.array(values, table.schema.field(name).type))


def test_damaged_rows_are_counted_skips(find_run, recorded, by_phrase, tmp_path):
    def damage(table):
        rows = table.to_pylist()
        first = [n for n, r in enumerate(rows) if r['stamp'] == R.stamp_seconds(FRAMES[2][1])]
        x1 = [float('nan') if n == first[0] else r['x1'] for n, r in enumerate(rows)]
        third = R.stamp_seconds(FRAMES[3][1])
        width = [-5 if r['stamp'] == third else r['width'] for r in rows]
        return _set(_set(table, 'x1', x1), 'width', width)

    run = R.read_run(_edited(find_run, tmp_path, damage))
    labels = read_labels(write_labels(tmp_path / 'l.json', [
        frame_entry(*FRAMES[0][:2], bag=recorded['cam']), frame_entry(*FRAMES[2][:2]),
        frame_entry(*FRAMES[3][:2])], {2: [('cat', BOX)]}))
    grounded = R.grounded_from_run(run, labels, by_phrase)
    assert [i.image_id for i in grounded.images] == [1]
    assert grounded.skipped == {R.SKIP_DAMAGED_FRAME: 2, R.SKIP_DAMAGED_ROW: 2,
                                SKIP_LABELS_OF_SKIPPED: 1}


@pytest.mark.parametrize('case, message', [
    ('not a run', 'not a kosmos_corpus run folder'),
    ('no index', 'no index at'),
    ('wrong type', 'score is string, not double'),
    ('missing column', 'it lacks given'),
    ('question run', 'a question run cannot be scored'),
    ('two prompts', 'more than one task and prompt'),
    ('no category', "asked 'zebra', which is no category's phrase"),
    ('output inside', 'choose another -o'),
    ('with --bag', 'give neither --bag nor --images'),
    ('bag not text', '"bag" is not a bag path'),
])
def test_what_cannot_be_scored_is_one_line(case, message, find_run, tiny_model_dir, tmp_path,
                                           capsys):
    run, out = find_run, tmp_path / 'out'
    entry, more = frame_entry(*FRAMES[1][:2]), []
    if case == 'not a run':
        run = tmp_path / 'empty'
        run.mkdir()
    elif case == 'no index':
        run = _edited(find_run, tmp_path, lambda t: t)
        (run / 'index.parquet').unlink()
    elif case == 'wrong type':
        run = _edited(find_run, tmp_path, lambda t: t.set_column(
            t.column_names.index('score'), 'score', pa.array([str(v) for v in t['score']])))
    elif case == 'missing column':
        run = _edited(find_run, tmp_path, lambda t: t.drop(['given']))
    elif case == 'question run':
        run = _edited(find_run, tmp_path, lambda t: _set(t, 'task', ['question'] * len(t)))
    elif case == 'two prompts':
        run = _edited(find_run, tmp_path, lambda t: _set(
            t, 'prompt', ['cat'] * (len(t) - 1) + ['dog']))
    elif case == 'no category':
        run = _edited(find_run, tmp_path, lambda t: _set(t, 'prompt', ['zebra'] * len(t)))
    elif case == 'output inside':
        out = find_run / 'eval'
    elif case == 'with --bag':
        more = ['--bag', str(find_run)]
    elif case == 'bag not text':
        entry = dict(entry, bag=7)
    labels = write_labels(tmp_path / 'l.json', [entry], {})
    argv = ['coco', str(labels), '--run', str(run), '-o', str(out), '--model',
            str(tiny_model_dir)] + MODEL + more
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('kosmos_eval: error:')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in err, err
    assert not (out / 'eval.json').exists()


def test_read_run_refuses_an_empty_index(find_run, tmp_path):
    with pytest.raises(EvaluationError, match='grounded no frame'):
        R.read_run(_edited(find_run, tmp_path, lambda t: t.slice(0, 0)))
