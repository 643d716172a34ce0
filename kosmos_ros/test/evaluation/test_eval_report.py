# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The evaluation report: one self-contained page and the data of its figures.

Written from a hand-built ``eval.json`` result (with real photographs for the thumbnails, a
missing image, null figures and hostile phrases and paths) and checked as text and, where
there is a Chromium, in a headless browser with no network: every image decodes, no script of
the result runs, the title stays the page's.
"""

import base64
import copy
import json
import os
from pathlib import Path
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from kosmos_ros.corpus.report import PAGE_CHECK
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.benchmark_cli import main as eval_main
from kosmos_ros.evaluation.report import POLICY, THUMBNAIL_WIDTH, write_report

from helpers import chromium, dump_dom  # noqa: I100

pytestmark = pytest.mark.fast  # no DDS, no model

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
SCRIPT = '<script>document.title="pwned"</script>'


def curve(n, labels=True):
    scores = np.linspace(0.9, 0.1, n)
    return {'score': scores.tolist(), 'precision': np.linspace(1.0, 0.5, n).tolist(),
            'recall': np.linspace(0.1, 0.8, n).tolist() if labels else [None] * n}


@pytest.fixture(scope='module')
def result(tmp_path_factory, photos):
    """Return a kosmos_eval/1 result whose worst cases name two real images and a missing one."""
    folder = tmp_path_factory.mktemp('images') / HOSTILE.replace('/', '_')
    folder.mkdir()
    paths = {}
    for name in ('chelsea', 'coffee'):
        paths[name] = folder / f'{name}.jpg'
        cv2.imwrite(str(paths[name]), cv2.cvtColor(photos[name], cv2.COLOR_RGB2BGR))
    phrase = {'category_id': 1, 'labels': 3, 'detections': 4, 'precision': 0.75,
              'recall': 1.0, 'ap50': 0.9, 'ap': 0.6}
    return {
        'schema': 'kosmos_eval/1', 'task': 'find', 'model': 'tiny ' + SCRIPT,
        'labels': str(folder / 'labels.json'), 'images': 2,
        'skipped': {'image file missing': 1, HOSTILE: 2}, 'iou_threshold': 0.5,
        'overall': {'labels': 5, 'detections': 6, 'min_score': 0.3, 'precision': 0.5,
                    'recall': 0.6, 'ap50': 0.55, 'ap': None},
        'phrases': {'a cat': phrase,
                    HOSTILE: dict(phrase, category_id=2, labels=2, precision=None, ap=None),
                    '$x^$ unused': dict(phrase, category_id=3, labels=0, detections=0,
                                        precision=None, recall=None, ap50=None, ap=None)},
        'pr_curves': {'overall': curve(12), 'a cat': curve(6), HOSTILE: curve(5),
                      '$x^$ unused': curve(0, labels=False)},
        'scores': {'true_positive': [0.9, 0.8, 0.8, 0.55, 1.0],
                   'false_positive': [0.35, 0.2, 0.6, 'not a score', None]},
        'confusion': {'phrases': ['a cat', HOSTILE, '$x^$ unused', 'none'],
                      'matrix': [[2, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]]},
        'calibration': {'target': {'precision': 0.9}, 'min_score': 0.5,
                        'per_phrase': {'a cat': 0.45, HOSTILE: None}},
        'worst': {
            'misses': [{'image': str(paths['chelsea']), 'image_id': 1, 'phrase': 'a cat',
                        'label_box': [100.0, 20.0, 420.0, 280.0]},
                       {'image': str(folder / 'gone.jpg'), 'image_id': 3, 'phrase': HOSTILE,
                        'label_box': [1, 2, 3, 4]}],
            'false_positives': [{'image': str(paths['coffee']), 'image_id': 2,
                                 'phrase': HOSTILE, 'box': [-50.0, 10.0, 1e30, 300.0],
                                 'score': 0.6}]}}


@pytest.fixture(scope='module')
def page(result, tmp_path_factory):
    path = tmp_path_factory.mktemp('report') / 'report.html'
    write_report(result, path)
    return path


def images_of(text):
    return re.findall(r'<img class="([^"]*)" src="data:image/(png|jpeg);base64,'
                      r'([A-Za-z0-9+/=]+)" alt="([^"]*)">', text)


def test_the_page_holds_its_plots_tables_and_thumbnails(page):
    text = page.read_text(encoding='utf-8')
    found = images_of(text)
    assert [(cls, kind, alt) for cls, kind, _, alt in found] == [
        ('plot', 'png', 'precision-recall curve of all phrases'),
        ('plot', 'png', 'precision-recall curves of each phrase'),
        ('plot', 'png', 'histogram of true and false positive scores'),
        ('thumb-image', 'jpeg', 'miss 1'), ('thumb-image', 'jpeg', 'detection 1')]
    assert len(re.findall(r'<img ', text)) == len(found)  # nothing else is an image
    for cls, kind, data, _ in found:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        if cls == 'thumb-image':
            assert image.shape[1] == THUMBNAIL_WIDTH
    assert 'image not available: no file ' in text and 'gone.jpg' in text
    for section in ('summary', 'curves', 'scores', 'phrases', 'confusion', 'misses',
                    'false-positives'):
        assert f'<section id="{section}">' in text
    assert '<td class="n">n/a</td>' in text  # a null figure
    assert '<tr><th>AP at IoU 0.5:0.95</th><td>n/a</td></tr>' in text
    assert '<tr><th>calibration target: precision</th><td>0.9</td></tr>' in text
    stripped = re.sub(r'data:image/[a-z]+;base64,[A-Za-z0-9+/=]+', '', text)
    assert 'http' not in stripped.replace('http-equiv', '')  # nothing fetched from elsewhere


def test_no_markup_of_the_result_gets_into_the_page(page):
    text = page.read_text(encoding='utf-8')
    assert '<script' not in text and 'onerror="' not in text and '<img src=x' not in text
    policy = POLICY.replace("'", '&#x27;')
    assert f'<meta http-equiv="Content-Security-Policy" content="{policy}">' in text
    assert text.count('&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;') \
        >= 4  # the table, the confusion row and column, the thumbnails, the skips
    assert '&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;' in text


def test_the_confusion_table_has_a_row_per_label_phrase_and_a_none_column(page):
    text = page.read_text(encoding='utf-8')
    table = re.search(r'<table class="confusion">(.*?)</table>', text, re.S).group(1)
    rows = re.findall(r'<tr>(.*?)</tr>', table)
    assert len(rows) == 4 and rows[0].endswith('<th>none</th>')
    assert re.findall(r'>(\d+)</td>', rows[1]) == ['2', '0', '0', '1']


def test_the_figures_file_holds_the_data_of_every_figure(page, result):
    figures = json.loads(page.with_name('report.figures.json').read_text(),
                         parse_constant=lambda c: pytest.fail(f'bare {c}'))
    overall = figures['pr_overall']
    assert overall['min_score'] == 0.5 and len(overall['curve']) == 12
    assert overall['curve'][0] == [0.1, 1.0, 0.9]  # recall, precision, score
    assert list(figures['pr_phrases']) == ['a cat', HOSTILE, '$x^$ unused']  # most labels first
    assert figures['pr_phrases']['$x^$ unused']['curve'] == []  # no labels: no points
    histogram = figures['score_histogram']
    assert sum(histogram['true_positive']) == 5 and sum(histogram['false_positive']) == 3
    assert histogram['true_positive'][16] == 2 and histogram['true_positive'][-1] == 1  # 1.0
    assert figures['confusion']['matrix'] == result['confusion']['matrix']
    worst = figures['worst']
    assert (worst['misses']['shown'], worst['misses']['unavailable']) == (1, 1)
    assert worst['misses']['items'][1]['why'].startswith('no file ')
    assert worst['false_positives']['items'][0]['box'] == [-50.0, 10.0, 1e30, 300.0]


def test_an_empty_or_broken_result_still_makes_a_page(result, tmp_path):
    bare = {'schema': 'kosmos_eval/1', 'overall': {'precision': None}, 'phrases': {},
            'pr_curves': {}, 'scores': {'true_positive': [], 'false_positive': []},
            'confusion': {'phrases': ['a', 'none'], 'matrix': [[1]]}, 'worst': {}}
    write_report(bare, tmp_path / 'bare.html')
    text = (tmp_path / 'bare.html').read_text()
    assert 'No curve: no detection with a score' in text and 'No detection scores' in text
    assert 'confusion matrix of the result is malformed' in text and '<img' not in text
    assert 'No phrases.' in text and text.count('<p>None.</p>') == 2
    assert json.loads((tmp_path / 'bare.figures.json').read_text())['confusion']['matrix'] \
        is None
    strange = copy.deepcopy(result)
    strange['overall']['precision'] = float('nan')
    strange['phrases']['a cat']['recall'] = 'high'
    strange['pr_curves']['overall']['precision'][3] = float('inf')
    write_report(strange, tmp_path / 'strange.html')
    assert '<tr><th>precision</th><td>n/a</td></tr>' in (tmp_path / 'strange.html').read_text()
    for bad in ({'schema': 'kosmos_eval_benchmark/1'}, [], {'overall': {}}):
        with pytest.raises(EvaluationError, match='not a kosmos_eval result'):
            write_report(bad, tmp_path / 'x.html')


def test_the_report_command(result, tmp_path, capsys):
    source = tmp_path / 'eval.json'
    source.write_text(json.dumps(result))
    assert eval_main(['report', str(source), '-o', str(tmp_path / 'r.html')]) == 0
    assert (tmp_path / 'r.figures.json').is_file()
    assert 'wrote' in capsys.readouterr().out
    source.write_text('{"schema": ')
    assert eval_main(['report', str(source), '-o', str(tmp_path / 'r.html')]) == 2
    assert 'not JSON' in capsys.readouterr().err
    assert eval_main(['report', str(tmp_path / 'none.json'), '-o', 'x.html']) == 2
    assert 'no such file' in capsys.readouterr().err
    # Never over the evaluation it reads (nor a .json named as the page).
    source.write_text(json.dumps(result))
    kept = source.read_bytes()
    for output in (source, tmp_path / 'x' / '..' / 'eval.json', tmp_path / 'r.json'):
        assert eval_main(['report', str(source), '-o', str(output)]) == 2
        err = capsys.readouterr().err
        assert 'Traceback' not in err and ('never replace' in err or 'name the report' in err)
    assert source.read_bytes() == kept


def test_matplotlib_writes_nothing_into_the_home_folder(result, tmp_path):
    home, temp = tmp_path / 'home', tmp_path / 'tmp'
    home.mkdir()
    temp.mkdir()
    source = tmp_path / 'eval.json'
    source.write_text(json.dumps(result))
    unset = ('MPLCONFIGDIR', 'XDG_CONFIG_HOME', 'XDG_CACHE_HOME')
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(HOME=str(home), TMPDIR=str(temp))
    proc = subprocess.run([sys.executable, '-m', 'kosmos_ros.evaluation.benchmark_cli', 'report',
                           str(source), '-o', str(tmp_path / 'r.html')], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(home.iterdir())
    assert not [p for p in temp.iterdir() if 'matplotlib' in p.name]


@pytest.mark.skipif(chromium() is None, reason='no Chromium here (apt install chromium)')
def test_the_page_in_a_headless_browser(page, tmp_path):
    text = page.read_text(encoding='utf-8')
    # The same page with the check script beside it, its policy letting inline scripts run:
    # markup of the result that became a script would run too, and change the title.
    checked = tmp_path / 'checked.html'
    checked.write_text(text.replace(POLICY.replace("'", '&#x27;'), POLICY.replace(
        "'", '&#x27;') + '; script-src &#x27;unsafe-inline&#x27;', 1).replace(
        '<title>', PAGE_CHECK + '<title>', 1), encoding='utf-8')
    assert checked.read_text() != text
    dom, body = dump_dom(checked, tmp_path)
    title = re.search(r'<title>(.*?)</title>', dom, re.S).group(1)
    assert title.startswith('kosmos_eval: tiny ')  # a script would have set it whole
    seen = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))
    assert seen == {'data-images': '5', 'data-images-ok': '5', 'data-errors': '0'}
    assert 'id="confusion"' in dom
    # The page itself, its policy as written: it opens, and its title is its own.
    dom, _ = dump_dom(Path(page), tmp_path)
    assert re.search(r'<title>kosmos_eval: tiny ', dom)
