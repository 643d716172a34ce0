# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""ground_bag's HTML report under hostile file names: no markup gets in, every frame shows.

The report's name names its frames folder, whose name goes into every ``<img src>``: quotes
must not end the attribute, and ``#``, ``?``, ``%`` and ``:`` must stay part of the file name
(not a fragment, a query, an escape or a scheme). Checked on the page's text and, where there
is a Chromium, in a headless browser.
"""

import html
import re
from urllib.parse import unquote

import pytest

from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.corpus.report import PAGE_CHECK

from helpers import chromium, dump_dom  # noqa: I100

FRAMES = 2
NAMES = ['r" onerror="document.title=\'pwned\'" x=".html', 'run#1.html', 'a%20b?.html',
         '<b>.html', 'c:report.html']


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp('report_bag')
    spec = SampleSpec(rate_hz=10.0, duration_s=FRAMES / 10.0, width=160, height=120,
                      photos=('chelsea',))
    return make_sample_bag(root / 'bag', spec).path


@pytest.mark.parametrize('name', NAMES)
def test_report_names_stay_file_names(bag, tiny_model_dir, tmp_path, monkeypatch, capsys,
                                      name):
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
    page = tmp_path / name
    code = gb.main([str(bag), '-o', str(tmp_path / 'out'), '--tiny-model', '--device', 'cpu',
                    '--max-new-tokens', '4', '--topic', '/camera/image_raw', '--html',
                    str(page), '--no-progress'])
    assert code == 0, capsys.readouterr().err
    text = page.read_text(encoding='utf-8')
    folder = page.with_name(page.stem + '_frames')
    sources = re.findall(r'<img ([^>]*)>', text)
    assert len(sources) == FRAMES
    for index, attributes in enumerate(sources):
        # One attribute of URL-safe characters, then alt: nothing of the name got out.
        src = re.fullmatch(r'src="([A-Za-z0-9_.~%/-]+)" alt="frame"', attributes)
        assert src, attributes
        assert html.unescape(src.group(1)) == src.group(1)
        assert unquote(src.group(1)) == f'{folder.name}/{index:05d}.jpg'
        assert (page.parent / unquote(src.group(1))).is_file()
    if chromium() is None:
        pytest.skip('no Chromium here (apt install chromium): the page was checked as text')
    # The same page with the check script (every image decoded? any script error?) beside it:
    # the relative URLs resolve alike.
    checked = tmp_path / 'checked.html'
    checked.write_text(text.replace('<head>', '<head>' + PAGE_CHECK, 1), encoding='utf-8')
    dom, body = dump_dom(checked, tmp_path)
    assert re.search(r'<title>ground_bag: [^<]*</title>', dom), dom[:2000]
    assert 'pwned' not in dom.split('</title>')[0]  # no onerror ran
    seen = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body))
    assert seen == {'data-images': str(FRAMES), 'data-images-ok': str(FRAMES),
                    'data-errors': '0'}
