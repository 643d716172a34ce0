# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""ground_bag on hostile input (issue #13, item 3).

It never harms its input, fails in one line, and leaves a whole output bag however often it
is interrupted. Real bags written by ``make_sample_bag`` and read back by rosbags, the tiny
random model, the real command line (in-process, and as a subprocess for real SIGINTs).
"""

import hashlib
import os
from pathlib import Path
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from rosbags.highlevel import AnyReader
import rosbags.rosbag2

from kosmos_ros.bag import BagError
from kosmos_ros.bag import ground_bag as gb
from kosmos_ros.bag.safety import check_outputs, SigintGuard
from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.bag.typestore import project_typestore

GROUNDING = '/camera/grounding'
DETECTIONS = '/camera/detections'
FRAMES = 6


@pytest.fixture(scope='module')
def originals(tmp_path_factory):
    """Write the sample stream (6 frames of 160x120) as MCAP and sqlite3: rec/rec.mcap, .db3."""
    root = tmp_path_factory.mktemp('originals')
    spec = dict(rate_hz=10.0, duration_s=FRAMES / 10.0, width=160, height=120,
                photos=('coffee', 'chelsea'))
    return {storage: make_sample_bag(root / storage / 'rec',
                                     SampleSpec(storage=storage, **spec)).path
            for storage in ('mcap', 'sqlite3')}


@pytest.fixture
def bag(originals, tmp_path):
    """Return a fresh copy of the MCAP sample bag folder (``rec/rec.mcap``) to attack."""
    return Path(shutil.copytree(originals['mcap'], tmp_path / 'rec'))


@pytest.fixture
def cli(tiny_model_dir, monkeypatch, capsys):
    """Run ``ground_bag`` in-process on the tiny model; return (status, stdout, stderr)."""
    monkeypatch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))

    def run(*argv):
        code = gb.main([*map(str, argv), '--tiny-model', '--device', 'cpu',
                        '--max-new-tokens', '4', '--no-progress'])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def snapshot(path):
    """Return {relative path: sha256} of a file or every file under a folder."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob('*') if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def read_bag(path):
    """Return {topic: message count} of a bag, read back by rosbags (it must be whole)."""
    assert (Path(path) / 'metadata.yaml').is_file(), f'{path} has no metadata.yaml'
    counts = {}
    with AnyReader([Path(path)], default_typestore=project_typestore()) as reader:
        for conn, _, raw in reader.messages():
            reader.deserialize(raw, conn.msgtype)
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
    return counts


def one_error(err, pattern):
    """Assert the command failed with one ``ground_bag: error:`` line matching ``pattern``."""
    assert 'Traceback' not in err, err
    errors = [line for line in err.splitlines() if line.startswith('ground_bag: error: ')]
    assert len(errors) == 1, err
    assert re.search(pattern, errors[0]), errors[0]


# -- 1. no output path is, holds or lies inside the input ----------------------------------------

# (case, argv, expected error); in the cwd: the bag folder rec/ (rec/rec.mcap), a copy of it
# named report_frames/, link_to_bag -> rec, link.mcap -> rec/rec.mcap, hardlink.html (a
# hard link of rec/rec.mcap). {abs} is the absolute path of rec.
HOSTILE = [
    ('mcap input, -o its folder --overwrite', ['rec/rec.mcap', '-o', 'rec', '--overwrite'],
     'the output bag rec contains the input bag file rec/rec.mcap'),
    ('mcap input, --html the mcap', ['rec/rec.mcap', '-o', 'out', '--html', 'rec/rec.mcap'],
     'the HTML report rec/rec.mcap is the input bag file rec/rec.mcap'),
    ('mcap input, -o inside its folder', ['rec/rec.mcap', '-o', 'rec/sub'],
     'the output bag rec/sub is inside the input bag folder rec'),
    ('mcap input, --html inside its folder',
     ['rec/rec.mcap', '-o', 'out', '--html', 'rec/report.html'],
     'the HTML report rec/report.html is inside the input bag folder rec'),
    ('folder input, -o the folder --overwrite', ['rec', '-o', 'rec', '--overwrite'],
     'the output bag rec is the input bag folder rec'),
    ('folder input, -o ./x/../rec --overwrite', ['rec', '-o', './x/../rec', '--overwrite'],
     'the output bag x/../rec is the input bag folder rec'),
    ('folder input, -o its absolute path --overwrite', ['rec', '-o', '{abs}', '--overwrite'],
     'the output bag /.*/rec is the input bag folder rec'),
    ('folder input, -o a symlink to it --overwrite', ['rec', '-o', 'link_to_bag', '--overwrite'],
     'the output bag link_to_bag is the input bag folder rec'),
    ('folder input, -o inside a symlink to it', ['rec', '-o', 'link_to_bag/out'],
     'the output bag link_to_bag/out is inside the input bag folder rec'),
    ('mcap input, --html a symlink to the mcap',
     ['rec/rec.mcap', '-o', 'out', '--html', 'link.mcap'],
     'the HTML report link.mcap is the input bag file rec/rec.mcap'),
    ('mcap input, --html a hard link of the mcap',
     ['rec/rec.mcap', '-o', 'out', '--html', 'hardlink.html'],
     'the HTML report hardlink.html is the input bag file rec/rec.mcap'),
    ('symlink to the mcap as input, -o the folder it points into --overwrite',
     ['link.mcap', '-o', 'rec', '--overwrite'],
     'the output bag rec contains the input bag file link.mcap'),
    ('folder input, -o its parent --overwrite', ['rec', '-o', '.', '--overwrite'],
     r'the output bag \. contains the input bag folder rec'),
    ('report frames folder is the input', ['report_frames', '-o', 'out', '--html', 'report.html'],
     'the folder of report frames report_frames is the input bag folder report_frames'),
    ('--html inside the output bag', ['rec', '-o', 'out', '--html', 'out/report.html'],
     'the HTML report out/report.html is inside the output bag out'),
    ('--html equal to the output bag', ['rec', '-o', 'out', '--html', 'out'],
     'the HTML report out is the output bag out'),
    ('output bag inside the report frames folder',
     ['rec', '-o', 'r_frames/out', '--html', 'r.html'],
     'the folder of report frames r_frames contains the output bag r_frames/out'),
]


@pytest.mark.parametrize('argv, expected', [case[1:] for case in HOSTILE],
                         ids=[case[0] for case in HOSTILE])
def test_outputs_never_touch_the_input(argv, expected, bag, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(bag, tmp_path / 'report_frames')
    os.symlink('rec', tmp_path / 'link_to_bag')
    os.symlink('rec/rec.mcap', tmp_path / 'link.mcap')
    os.link(bag / 'rec.mcap', tmp_path / 'hardlink.html')
    before = {name: snapshot(tmp_path / name) for name in ('rec', 'report_frames')}
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli(*(arg.format(abs=bag) for arg in argv))
    assert code == 2, (out, err)
    one_error(err, expected + '; ')
    assert 'using the TINY' not in err  # refused before the model is even loaded
    assert {name: snapshot(tmp_path / name) for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written


def test_the_library_refuses_too(bag, quick, tmp_path):
    mcap = bag / 'rec.mcap'
    before = snapshot(bag)
    with pytest.raises(BagError, match='the output bag .*rec contains the input bag file'):
        gb.ground_bag(gb.GroundBagOptions(bag=mcap, output=bag, overwrite=True), quick)
    with pytest.raises(BagError, match='the HTML report .*rec.mcap is the input bag file'):
        gb.ground_bag(gb.GroundBagOptions(bag=mcap, output=tmp_path / 'out', html=mcap), quick)
    assert snapshot(bag) == before and not (tmp_path / 'out').exists()


def test_default_output_lies_beside_the_input_folder(bag, cli, tmp_path):
    code, out, err = cli(bag / 'rec.mcap', '--limit', '1')
    assert code == 0, err
    assert read_bag(tmp_path / 'rec_grounded')[GROUNDING] == 1
    assert sorted(p.name for p in bag.iterdir()) == ['metadata.yaml', 'rec.mcap']
    assert gb.default_output(bag) == tmp_path / 'rec_grounded'
    assert gb.default_output(tmp_path / 'x.bag') == tmp_path / 'x_grounded'


def test_overwrite_replaces_only_a_rosbag2_folder(bag, cli, tmp_path):
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'notes.txt').write_text('keep me')
    code, _, err = cli(bag, '-o', old, '--overwrite')
    assert code == 2
    one_error(err, 'refusing to overwrite .*old: it is not a rosbag2 folder')
    shutil.copytree(bag, tmp_path / 'other')
    os.symlink('other', tmp_path / 'link_to_other')
    code, _, err = cli(bag, '-o', tmp_path / 'link_to_other', '--overwrite')
    assert code == 2
    one_error(err, r'refusing to overwrite .*link_to_other: it is a symbolic link \(to other\)')
    assert (old / 'notes.txt').read_text() == 'keep me'
    assert read_bag(tmp_path / 'other')['/camera/image_raw'] == FRAMES


def test_check_outputs_passes_paths_apart(bag, tmp_path):
    check_outputs(bag, tmp_path / 'out', tmp_path / 'report' / 'index.html')
    check_outputs(bag / 'rec.mcap', tmp_path / 'rec_grounded', tmp_path / 'rec.html', True)


# -- 2. a damaged bag or an unusable output: one error line, no traceback ------------------------

def _zero_pages(db3, fractions=(1 / 3, 1 / 2, 2 / 3)):
    """Overwrite pages of an sqlite3 file with zeros (as a failing disk or a bad copy does)."""
    with open(db3, 'r+b') as f:
        f.seek(16)
        page = int.from_bytes(f.read(2), 'big')
        pages = db3.stat().st_size // page
        for fraction in fractions:
            f.seek(int(pages * fraction) * page)
            f.write(bytes(page))


def test_zeroed_sqlite_pages(originals, cli, tmp_path):
    bag = Path(shutil.copytree(originals['sqlite3'], tmp_path / 'zeroed'))
    _zero_pages(bag / 'rec.db3')
    code, _, err = cli(bag, '-o', tmp_path / 'out')
    assert code == 2
    one_error(err, r'cannot read bag .*zeroed: database disk image is malformed; .*out holds '
                   r'the \d+ frames grounded before')
    counts = read_bag(tmp_path / 'out')  # closed whole, with the frames before the damage
    assert counts.get(GROUNDING, 0) == counts.get(DETECTIONS, 0) < FRAMES


def test_eight_byte_mcap(originals, cli, tmp_path):
    short = tmp_path / 'short.mcap'
    short.write_bytes((originals['mcap'] / 'rec.mcap').read_bytes()[:8])
    code, _, err = cli(short, '-o', tmp_path / 'out')
    assert code == 2
    one_error(err, r'cannot read bag .*short.mcap: damaged data \(TypeError: ')
    with pytest.raises(BagError, match=r'short.mcap: damaged data \(TypeError'):
        gb.open_reader(short)


def test_output_under_a_regular_file(bag, cli, tmp_path):
    (tmp_path / 'plain').write_text('a file')
    code, _, err = cli(bag, '-o', tmp_path / 'plain' / 'out')
    assert code == 2
    one_error(err, r'cannot write the output bag .*plain/out: .*plain is a file, not a folder')
    code, _, err = cli(bag, '-o', tmp_path / 'out', '--html', tmp_path / 'plain' / 'r.html')
    assert code == 2
    one_error(err, r'cannot write the HTML report .*plain/r.html: .*plain is a file')
    assert not (tmp_path / 'out').exists()


def test_output_where_nothing_can_be_created(bag, cli, tmp_path):
    """/proc takes no new folders, even from root."""
    code, _, err = cli(bag, '-o', '/proc/kosmos_ros_out')
    assert code == 2
    one_error(err, 'cannot write the output bag /proc/kosmos_ros_out: .*/proc/kosmos_ros_out')
    code, _, err = cli(bag, '-o', tmp_path / 'out', '--html', '/proc/kosmos_ros.html')
    assert code == 2
    one_error(err, 'cannot write the HTML report /proc/kosmos_ros.html: ')
    assert not (tmp_path / 'out').exists()  # the report's place is made before the bag


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders; the '
                    'unwritable case is covered by /proc in test_output_where_nothing_can_be_'
                    'created')
def test_output_in_a_read_only_folder(bag, cli, tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = cli(bag, '-o', locked / 'out')
    finally:
        locked.chmod(0o755)
    assert code == 2
    one_error(err, 'cannot write the output bag .*locked/out: Permission denied')


# -- 3. interrupts: the output is whole, however often Ctrl-C comes ------------------------------

def _interrupt_after(grounded):
    """Return an on_frame that sends this process SIGINT after ``grounded`` frames."""
    seen = []

    def on_frame(outcome):
        if outcome.result is not None:
            seen.append(outcome)
            if len(seen) == grounded:
                signal.raise_signal(signal.SIGINT)
    return on_frame


def test_sigint_while_closing_is_ignored(originals, quick, tmp_path, monkeypatch):
    """A first SIGINT between frames, three more while the writer closes: a whole bag."""
    close = rosbags.rosbag2.Writer.close

    def close_under_fire(writer):
        for _ in range(3):
            signal.raise_signal(signal.SIGINT)
        close(writer)
    monkeypatch.setattr(rosbags.rosbag2.Writer, 'close', close_under_fire)
    out = tmp_path / 'out'
    summary = gb.ground_bag(gb.GroundBagOptions(bag=originals['mcap'], output=out,
                                                html=tmp_path / 'r.html'),
                            quick, on_frame=_interrupt_after(2))
    assert summary.interrupted and summary.grounded == 2
    counts = read_bag(out)
    assert counts[GROUNDING] == counts[DETECTIONS] == 2
    assert (tmp_path / 'r.html').read_text().count('<img src="r_frames/') == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_sigint_while_writing_a_frame_finishes_that_frame(originals, quick, tmp_path,
                                                          monkeypatch):
    """SIGINT between a frame's detections and its grounding: both are written, then stop."""
    write = rosbags.rosbag2.Writer.write

    def write_under_fire(writer, connection, timestamp, data):
        if connection.topic == DETECTIONS:
            signal.raise_signal(signal.SIGINT)
        write(writer, connection, timestamp, data)
    monkeypatch.setattr(rosbags.rosbag2.Writer, 'write', write_under_fire)
    out = tmp_path / 'out'
    summary = gb.ground_bag(gb.GroundBagOptions(bag=originals['mcap'], output=out), quick)
    assert summary.interrupted and summary.grounded == 1
    assert read_bag(out) == {DETECTIONS: 1, GROUNDING: 1}


def test_a_signal_whose_exception_was_lost_stops_the_run_at_the_next_check(monkeypatch):
    from helpers import Finaliser

    lost = []
    monkeypatch.setattr(sys, 'unraisablehook', lost.append)  # where Python reports it
    with SigintGuard() as guard:
        Finaliser()  # finalised at once: the KeyboardInterrupt of its SIGINT goes nowhere
        assert [item.exc_type for item in lost] == [KeyboardInterrupt] and guard.requested
        with pytest.raises(KeyboardInterrupt):
            guard.check()  # where the run looks between two messages
        guard.check()  # once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_guard_outside_the_main_thread_does_nothing():
    result = []

    def enter():
        with SigintGuard() as guard:
            result.append(guard.active)
    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert result == [False]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(scope='module')
def long_bag(tmp_path_factory):
    """Write a 6 s stream (60 frames of 160x120): long enough to be interrupted mid-run."""
    root = tmp_path_factory.mktemp('long')
    spec = SampleSpec(storage='mcap', rate_hz=10.0, duration_s=6.0, width=160, height=120,
                      photos=('coffee', 'chelsea'))
    return make_sample_bag(root / 'long', spec).path


class _Command:
    """``ground_bag`` as a subprocess, with its stderr (progress bar) collected as it comes."""

    PROGRESS = re.compile(r'grounding[^\r\n]*\|\s*[1-9]\d*/\d+ ')  # '| 3/60 ': done

    def __init__(self, argv, tiny_model_dir):
        env = dict(os.environ, KOSMOS_ROS_TINY_MODEL_DIR=str(tiny_model_dir))
        # As the console script, with Python's own SIGINT handler even when this test runs
        # with SIGINT ignored (a background job), which a child would otherwise inherit.
        boot = ('import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); '
                'from kosmos_ros.bag.ground_bag import main; sys.exit(main(sys.argv[1:]))')
        self.proc = subprocess.Popen([sys.executable, '-c', boot, *map(str, argv)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = b''
        self.progressed = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.proc.poll() is None:  # a failed test: do not leave it running
            self.proc.kill()
            self.proc.wait()

    def _read_stderr(self):
        while chunk := os.read(self.proc.stderr.fileno(), 4096):
            self.err += chunk
            if self.PROGRESS.search(self.err.decode(errors='replace')):
                self.progressed.set()
        self.progressed.set()  # ended: let the waiter look

    def finish(self, timeout=120):
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.proc.returncode, out.decode(), self.err.decode(errors='replace')


@pytest.mark.parametrize('interrupts, signum', [
    ('one', signal.SIGINT), ('until it exits', signal.SIGINT),
    ('until it exits', signal.SIGTERM)])
def test_ctrl_c_leaves_a_whole_bag(long_bag, tiny_model_dir, tmp_path, interrupts, signum):
    """Real SIGINTs (or SIGTERMs) to the command, once or every 20 ms until it exits."""
    out = tmp_path / 'out'
    argv = [long_bag, '-o', out, '--tiny-model', '--device', 'cpu', '--max-new-tokens', '8',
            '--html', tmp_path / 'r.html']
    with _Command(argv, tiny_model_dir) as command:
        assert command.progressed.wait(180), 'no progress line within 180 s'
        assert command.proc.poll() is None, 'the run ended before it could be interrupted'
        command.proc.send_signal(signum)
        sent = 1
        while interrupts != 'one' and sent < 2000:
            try:
                command.proc.wait(0.02)
                break
            except subprocess.TimeoutExpired:
                command.proc.send_signal(signum)
                sent += 1
        code, stdout, stderr = command.finish()
    assert code == 130, (stdout, stderr)
    assert 'Traceback' not in stderr, stderr
    assert 'ground_bag: interrupted; finishing ' in stderr
    grounded = int(re.search(r'(\d+) frames grounded in ', stdout).group(1))
    assert f'interrupted: {out} is a valid bag holding the {grounded} frames' in stdout
    counts = read_bag(out)
    assert 1 <= counts[GROUNDING] == counts[DETECTIONS] == grounded < 60
    assert (tmp_path / 'r.html').read_text().count('<img src="r_frames/') == grounded
