# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus compare``'s report decides: what differs first, then the changes in plain words.

A three-bag fleet is grounded three times with the tiny model: run A steered to 'a cat' (one
box) and 'two cups' (two boxes); run B steered to a narrower cat and one cup (every frame: a
moved box and a lost box) with ``--min-score 0.3`` (which changes the output bags'
detections, not the index); run C as A with another batch size (latency not comparable). The
counts of every table are known by construction. The page is checked as text and in headless
Chromium; ``KOSMOS_ROS_SCREENSHOTS=1`` also saves its screenshot to
``docs/images/compare_report.png``.
"""

import base64
import html
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pyarrow as pa
import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.corpus import index
from kosmos_ros.corpus.cli import main as corpus_main
from kosmos_ros.corpus.compare import compare, CompareSettings, FrameDiff
from kosmos_ros.corpus.labels import TOTAL_LABELS
from kosmos_ros.corpus.options import CorpusOptions
from kosmos_ros.corpus.provenance import read_run
from kosmos_ros.corpus.run import run_corpus

from helpers import chromium, dump_dom, steer_for  # noqa: I100

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOT = ROOT / 'docs' / 'images' / 'compare_report.png'
# 'a cat' narrowed (IoU 0.8: moved), one cup fewer (lost); as test_corpus.CHANGED.
CHANGED = ('<phrase> a cat</phrase><object><patch_index_0048><patch_index_0863></object> and'
           '<phrase> two cups</phrase><object><patch_index_0100><patch_index_0300></object> on')
PHOTOS = {'coffee': 3, 'rocket': 2, 'astronaut': 2}  # bag name: frames
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
SCRIPT = '<script>document.title="pwned"</script>'


def options(fleet, out, **kw):
    return CorpusOptions(inputs=(str(fleet),), output=out, chunk_frames=2, workers=0, **kw)


@pytest.fixture(scope='module')
def runs(steered, engine, tmp_path_factory):
    root = tmp_path_factory.mktemp('report')
    fleet = root / 'fleet'
    for name, frames in PHOTOS.items():
        make_sample_bag(fleet / name, SampleSpec(duration_s=frames / 10.0, rate_hz=10.0,
                                                 width=160, height=120, photos=(name,)))
    changed = engine.with_options(logits_processors=(steer_for(engine.tokenizer, CHANGED),),
                                  max_new_tokens=24)
    out = {'fleet': fleet, 'a': root / 'a', 'b': root / 'b', 'c': root / 'c'}
    assert run_corpus(options(fleet, out['a']), engine=steered).complete
    assert run_corpus(options(fleet, out['b'], min_score=0.3), engine=changed).complete
    assert run_corpus(options(fleet, out['c'], batch_size=2), engine=steered).complete
    return out


@pytest.fixture(scope='module')
def report(runs, tmp_path_factory):
    """Compare A and B with the command: its JSON and HTML, and its exit status."""
    folder = tmp_path_factory.mktemp('report_out')
    status = corpus_main(['compare', str(runs['a']), str(runs['b']), '--max-lost', '0',
                          '--top', '4', '--json', str(folder / 'r.json'), '--html',
                          str(folder / 'r.html')])
    page = folder / 'r.html'
    return {'status': status, 'json': json.loads((folder / 'r.json').read_text()),
            'html': page.read_text(encoding='utf-8'), 'page': page, 'folder': folder}


def frames_of(run):
    """Return {bag path: frames grounded} of a run's index."""
    table = index.read_table(run)
    out = {}
    for row in {(r['bag'], r['topic'], r['bag_time_ns']) for r in table.to_pylist()}:
        out[row[0]] = out.get(row[0], 0) + 1
    return out


def section(text, name):
    """Return the HTML of the <section id=name>."""
    match = re.search(rf'<section id="{name}">(.*?)</section>', text, re.S)
    assert match, f'no section {name}'
    return match.group(1)


def test_differences_come_first_and_name_the_changed_option(report):
    record = report['json']
    assert report['status'] == 1  # --max-lost 0: B lost a cup on every frame
    assert list(record)[:3] == ['run_a', 'run_b', 'differences']
    differ = {(d['section'], d['field']): (d['a'], d['b'])
              for d in record['differences']['differ']}
    assert differ == {('options', 'min_score'): (0.0, 0.3)}
    summary = record['differences']['summary']
    assert summary[0].startswith('Same model: ') and 'float32' in summary[0], summary
    assert any(line.startswith('Options differ: least box score') and '0.0 → 0.3' in line
               for line in summary), summary
    assert 'Same run layout.' in summary and 'Same package versions.' in summary
    assert not record['differences']['not_known']
    same = {(d['section'], d['field']) for d in record['differences']['same']}
    assert {('model', 'dtype'), ('model', 'device'), ('model', 'quantization'),
            ('options', 'prompt'), ('versions', 'torch'), ('run layout', 'batch_size')} <= same
    text = report['html']
    assert text.index('id="differences"') < text.index('id="gate"') < text.index('id="totals"')
    differences = section(text, 'differences')
    assert 'Same model: ' in differences
    row = re.search(r'<tr class="differs">(.*?)</tr>', differences).group(1)
    assert re.findall(r'<td>(.*?)</td>', row) == [
        'options', html.escape('least box score in the detections (--min-score)'), '0.0',
        '0.3']


def test_totals_are_in_plain_words(report, runs):
    frames = sum(frames_of(runs['a']).values())
    labelled = {t['key']: (t['label'], t['value']) for t in report['json']['totals_labelled']}
    assert labelled['frames_both'] == ('frames grounded by both', frames)
    assert labelled['only_a'] == ('frames only A grounded (missing from B)', 0)
    assert labelled['lost'][1] == labelled['moved'][1] == frames
    totals = section(report['html'], 'totals')
    for words in ('frames grounded by both', 'frames only A grounded (missing from B)',
                  'boxes lost in B (A had them)', 'captions changed'):
        assert f'<th>{html.escape(words)}</th>' in totals
    # No internal name reaches the page as text.
    visible = re.sub(r'<[^>]*>', ' ', report['html'].split('</head>')[1])
    assert not [k for k in TOTAL_LABELS if '_' in k and k in visible]
    assert 'Gate FAILED: boxes lost in B' in section(report['html'], 'gate')


def test_tables_by_bag_topic_and_phrase_hold_the_counts(report, runs):
    record = report['json']
    per_bag = frames_of(runs['a'])
    assert len(per_bag) == len(PHOTOS)
    by_bag = {r['bag']: r for r in record['by_bag']}
    assert set(by_bag) == set(per_bag)
    for bag, frames in per_bag.items():
        row = by_bag[bag]
        assert (row['frames_both'], row['changed_frames'], row['lost'], row['moved'],
                row['added'], row['only_a'], row['only_b']) == (frames, frames, frames, frames,
                                                                0, 0, 0), row
    frames = sum(per_bag.values())
    assert sum(r['frames_both'] for r in record['by_topic']) == frames
    assert sum(r['lost'] for r in record['by_topic']) == frames
    phrases = {r['phrase']: r for r in record['by_phrase']}
    assert set(phrases) == {'a cat', 'two cups'}
    cat, cups = phrases['a cat'], phrases['two cups']
    assert (cat['boxes_a'], cat['boxes_b'], cat['matched'], cat['moved'], cat['lost'],
            cat['added']) == (frames, frames, frames, frames, 0, 0)
    assert (cups['boxes_a'], cups['boxes_b'], cups['matched'], cups['moved'], cups['lost'],
            cups['added']) == (2 * frames, frames, frames, 0, frames, 0)
    assert record['labels']['only_a'] == 'only A (missing from B)'
    text = report['html']
    assert len(re.findall(r'<tr>', section(text, 'by-bag'))) == 1 + len(PHOTOS)
    assert 'two cups' in section(text, 'by-phrase')
    for name in PHOTOS:  # bags are shown relative to the folder they share
        assert f'>{name}</td>' in section(text, 'by-bag')


def test_largest_changes_come_from_every_bag_side_by_side(report):
    largest = report['json']['largest_changes']
    assert len(largest) == 4
    assert len({c['bag_sha256'] for c in largest}) == len(PHOTOS)
    changes = re.findall(r'<div class="change" data-rank="\d+">(.*?)</div>', report['html'],
                         re.S)
    assert len(changes) == 4
    for change in changes:
        images = dict(re.findall(r'<img class="thumb (a|b)" src="data:image/jpeg;base64,'
                                 r'([A-Za-z0-9+/=]+)"', change))
        assert set(images) == {'a', 'b'}, change[:300]
        a, b = (cv2.imdecode(np.frombuffer(base64.b64decode(images[k]), np.uint8),
                             cv2.IMREAD_COLOR) for k in 'ab')
        assert a is not None and b is not None and a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() > 100  # other boxes drawn
        assert 'lost: two cups' in change and 'moved: a cat' in change


def test_round_robin_reaches_a_bag_with_one_small_change():
    big = [FrameDiff('x' * 64, 'bag_x', '/cam', t, 0.0, 'a', 'b',
                     lost=[('p', 0, 0, 1, 1, 0.5)] * 3) for t in range(10)]
    small = FrameDiff('y' * 64, 'bag_y', '/cam', 0, 0.0, 'a', 'a', score_shifts=[0.2])
    table = index.to_table([])
    result = compare(table, table, CompareSettings(top=3))
    result.frames = big + [small]
    shown = result.largest_changes()
    assert [f.bag for f in shown] == ['bag_x', 'bag_y', 'bag_x']
    assert result.changed()[:3] == big[:3]  # ranked by size alone, one bag fills the top


def test_plots_are_embedded_and_decode(report):
    plots = re.findall(r'<img class="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)" '
                       r'alt="([^"]*)"', report['html'])
    assert [alt for _, alt in plots] == ['histogram of score shifts',
                                         'latency distributions of A and B',
                                         'changes by bag']
    for data, _ in plots:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[1] == 600 and image.shape[0] >= 150
    assert 'http' not in re.sub(r'data:image/[a-z]+;base64,[A-Za-z0-9+/=]+', '',
                                report['html'])  # nothing fetched from elsewhere


@pytest.mark.skipif(chromium() is None, reason='no Chromium here (apt install chromium)')
def test_report_opens_in_a_headless_browser(report, tmp_path):
    images = len(re.findall(r'<img ', report['html']))
    assert images == 4 * 2 + 3
    dom, body = dump_dom(report['page'], tmp_path)
    seen = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))
    assert seen == {'data-images': str(images), 'data-images-ok': str(images),
                    'data-errors': '0'}
    assert 'id="differences"' in dom
    if os.environ.get('KOSMOS_ROS_SCREENSHOTS') == '1':
        save_screenshot(report['page'], tmp_path, SCREENSHOT)
        assert SCREENSHOT.stat().st_size < 200_000


def save_screenshot(page, tmp_path, target):
    """Save a 1280 x 2000 screenshot of the page's top, as a small palette PNG."""
    from PIL import Image

    shot = tmp_path / 'shot.png'
    proc = subprocess.run(
        [chromium(), '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
         '--no-first-run', '--disable-background-networking', '--hide-scrollbars',
         '--proxy-server=127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND',
         f'--user-data-dir={tmp_path / "shot_profile"}', '--window-size=1280,2000',
         f'--screenshot={shot}', Path(page).resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert('RGB')
    image = image.resize((960, 1500), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128).save(target, optimize=True)


def test_latency_of_runs_batched_differently_is_not_comparable(runs, tmp_path, capsys):
    a, c = str(runs['a']), str(runs['c'])
    report = tmp_path / 'r.json'
    assert corpus_main(['compare', a, c, '--json', str(report)]) == 0  # the gate is off
    record = json.loads(report.read_text())
    why = 'batch size 8 in A, 2 in B'
    assert record['latency']['comparable'] is False and why in record['latency']['reason']
    assert record['totals']['latency_ratio'] is None
    assert ('run layout', 'batch_size') in {(d['section'], d['field'])
                                            for d in record['differences']['differ']}
    capsys.readouterr()
    assert corpus_main(['compare', a, c, '--max-latency-ratio', '100', '--json', str(report),
                        '--html', str(tmp_path / 'r.html')]) == 1
    captured = capsys.readouterr()
    assert 'max_latency_ratio' in captured.err
    assert f'FAIL: max_latency_ratio 100.0 (value not comparable: {why}' in captured.out
    verdict = json.loads(report.read_text())['thresholds']['max_latency_ratio']
    assert verdict['exceeded'] is True and verdict['value'].startswith('not comparable: ')
    latency = section((tmp_path / 'r.html').read_text(), 'latency')
    assert 'Latency is not comparable: ' + html.escape(why) in latency
    assert 'NOT COMPARABLE' not in latency  # in the plot's pixels, not its text
    # The same layout compares: a copy of A against A, ratio 1.
    copy = tmp_path / 'copy'
    shutil.copytree(runs['a'], copy)
    assert corpus_main(['compare', a, str(copy), '--max-latency-ratio', '1.0']) == 0
    # Index files alone: the layout is not known, so not comparable, and said so.
    assert corpus_main(['compare', f'{a}/index.parquet', f'{copy}/index.parquet',
                        '--max-latency-ratio', '100', '--json', str(report)]) == 1
    record = json.loads(report.read_text())
    assert 'index file without its run folder' in record['latency']['reason']
    assert 'Not known for A (an index file without its run folder): model label, run layout ' \
        '(batch size, workers), package versions, run status.' in record['differences']['summary']
    assert record['differences']['summary'][0].startswith('Same model: ')
    assert not record['differences']['differ']


def test_markup_in_paths_topics_phrases_and_options_is_escaped(runs, tmp_path):
    def hostile(table):
        columns = {
            'phrase': [None if p is None else SCRIPT + p for p in table['phrase'].to_pylist()],
            'topic': [HOSTILE + t for t in table['topic'].to_pylist()],
            'bag': [b + '/' + HOSTILE for b in table['bag'].to_pylist()],
            'text': [t + ' <b>bold</b>' for t in table['text'].to_pylist()],
            'options': [json.dumps(dict(json.loads(o), prompt=SCRIPT))
                        for o in table['options'].to_pylist()]}
        for name, values in columns.items():
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pa.array(values, pa.string()))
        return table

    folder = tmp_path / HOSTILE
    folder.mkdir()
    a, b = folder / 'a.parquet', folder / 'b.parquet'
    index.write_table(hostile(index.read_table(runs['a'])), a)
    index.write_table(hostile(index.read_table(runs['b'])), b)
    page, report = tmp_path / 'r.html', tmp_path / 'r.json'
    assert corpus_main(['compare', str(a), str(b), '--top', '2', '--html', str(page),
                        '--json', str(report)]) == 0

    def refuse(constant):
        raise AssertionError(f'bare {constant} in the JSON report')

    record = json.loads(report.read_text(), parse_constant=refuse)
    assert {d['field'] for d in record['differences']['same']} >= {'prompt'}
    text = page.read_text(encoding='utf-8')
    assert text.count('<script') == 1  # the page's own check, nothing of the runs
    assert '<img src=x' not in text and '<b>bold' not in text
    assert html.escape(SCRIPT) in text and html.escape(HOSTILE) in text
    assert 'frame not available' in text  # the bag path leads nowhere: said, escaped
    if chromium() is None:
        pytest.skip('no Chromium here (apt install chromium): the page was checked as text')
    dom, body = dump_dom(page, tmp_path)
    title = re.search(r'<title>(.*?)</title>', dom, re.S).group(1)
    assert title.startswith('kosmos_corpus compare: ')  # no script or onerror set it
    seen = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))
    assert seen['data-errors'] == '0' and seen['data-images'] == seen['data-images-ok']
    assert 'id="differences"' in dom


def test_only_an_html_report_loads_matplotlib_and_it_writes_nothing_home(runs, tmp_path):
    home, temp = tmp_path / 'home', tmp_path / 'tmp'
    home.mkdir()
    temp.mkdir()
    unset = ('MPLCONFIGDIR', 'XDG_CONFIG_HOME', 'XDG_CACHE_HOME')
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(HOME=str(home), TMPDIR=str(temp))
    for flag, loaded in (('--json', False), ('--html', True)):
        out = tmp_path / f'r{flag}'
        code = ('import sys\nfrom kosmos_ros.corpus.cli import main\n'
                f'status = main(["compare", {str(runs["a"])!r}, {str(runs["b"])!r}, {flag!r}, '
                f'{str(out)!r}])\nprint(status, "matplotlib" in sys.modules)\n')
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                timeout=120, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().endswith(f'0 {loaded}'), result.stdout[-500:]
        assert out.is_file()
    assert not list(home.iterdir())  # no matplotlib cache or config in the home folder
    assert not [p for p in temp.iterdir() if 'matplotlib' in p.name]  # its cache: removed


def test_a_bare_index_reads_what_its_rows_tell(runs):
    table = index.read_table(runs['a'])
    run = read_run(runs['a'] / 'index.parquet', table)
    assert run.source == 'index' and run.status is None and run.layout is None
    assert run.options['min_score'] == 0.0 and 'float32' in run.model['description']
    assert read_run(runs['a'], table).layout['batch_size'] == 8
