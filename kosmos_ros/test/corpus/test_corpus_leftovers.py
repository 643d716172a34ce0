# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A corpus run leaves nothing outside its run folder: not in the home folder, not in temp.

Each command runs in a process with a fresh, empty ``HOME`` and ``TMPDIR``; after it exits
(done, failed, interrupted by SIGINT or SIGTERM) both must still be empty. (The embedded Ray's
private folder under ``TMPDIR`` is checked under signals in ``test_corpus_ray.py``.)
"""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp('fleet')
    for photo, frames in (('coffee', 12), ('rocket', 12)):
        make_sample_bag(root / photo, SampleSpec(duration_s=frames / 10.0, rate_hz=10.0,
                                                 width=96, height=72, photos=(photo,)))
    return root


def run(fleet, tmp_path, tiny_model_dir, *extra, stop=None):
    """Run ``kosmos_corpus ground``; return its exit status and what HOME and TMPDIR hold."""
    home, temp = tmp_path / 'home', tmp_path / 'temp'
    home.mkdir()
    temp.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(temp),
               KOSMOS_ROS_TINY_MODEL_DIR=str(tiny_model_dir))
    env.pop('XDG_CACHE_HOME', None)
    cmd = [sys.executable, '-m', 'kosmos_ros.corpus.cli', 'ground', str(fleet), '-o',
           str(tmp_path / 'run'), '--max-new-tokens', '48', '--chunk-frames', '1',
           '--batch-size', '1', '--progress', 'log', *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if stop is not None:
        deadline = time.monotonic() + 120
        while not list((tmp_path / 'run' / 'chunks').rglob('*.json')) and \
                proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(stop)
    _, err = proc.communicate(timeout=180)
    left = sorted(str(p) for folder in (home, temp) for p in folder.rglob('*'))
    return proc.returncode, left, err


# A signal comes while the run goes (48 tokens a frame, 24 chunks); a run that ends grounds
# with 4 tokens a frame, what it leaves behind does not depend on the tokens.
@pytest.mark.parametrize('how, extra, stop, status', [
    ('done', ('--tiny-model', '--workers', '0', '--max-new-tokens', '4'), None, 0),
    ('model cannot load', ('--model', '/nonexistent/model', '--local-files-only',
                           '--workers', '0'), None, 1),
    ('SIGINT', ('--tiny-model', '--workers', '0'), signal.SIGINT, 130),
    ('SIGTERM', ('--tiny-model', '--workers', '0'), signal.SIGTERM, 130),
    ('done on Ray', ('--tiny-model', '--workers', '1', '--max-new-tokens', '4'), None, 0),
    ('model cannot load on Ray', ('--model', '/nonexistent/model', '--local-files-only',
                                  '--workers', '1'), None, 1),
])
def test_nothing_is_left_outside_the_run_folder(fleet, tmp_path, tiny_model_dir, how, extra,
                                                stop, status):
    code, left, err = run(fleet, tmp_path, tiny_model_dir, *extra, stop=stop)
    assert code == status, err[-2000:]
    assert left == [], f'{how}: left behind {left}'
    assert 'Traceback' not in err
    assert Path(tmp_path / 'run').is_dir() or status == 1
