# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus ground --ray-address``: a Ray cluster of three nodes, one of them killed.

The cluster is started as users start one, with Ray's ``ray start --head`` and
``ray start --address``, on this machine: every node at ``--node-ip-address 127.0.0.1``, each
with its own temp folder inside one private folder (``tempfile.mkdtemp``, 0700), token
authentication on (``RAY_AUTH_MODE=token``, a token file only the user reads named by
``RAY_AUTH_TOKEN_PATH``) for every node and every driver, no usage statistics, no dashboard,
one CPU a node. The command runs as a process of its own (the driver), with a fresh home and
temp folder, and is compared with a run in this process (``--workers 0``).

Two things of Ray 2.60 shape the set-up:

- Its servers listen on loopback only when the node's address is exactly ``127.0.0.1``, and
  ``ray start`` keeps that address only with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (with
  the variable unset, it replaces ``127.0.0.1`` with the machine's external address and the
  servers listen on every interface). With that setting ``ray start --address`` refuses to
  start a worker node ("Multi-node Ray clusters are not supported on Windows and OSX"): the
  worker nodes run Ray's own ``ray start`` with that one check lifted (:data:`WORKER_START`).
- ``ray stop`` has no way to name a cluster: it stops every Ray process on the machine that
  it may signal, other users' and other test runs' too. Each node's ``ray start`` runs in a
  session of its own instead; the node's GCS, raylet and agents keep its process group and
  session, and the raylet's workers (the actors) get process groups of their own but keep the
  session. A node is stopped, or killed mid-run, by signalling every process of its session.
"""

import os
from pathlib import Path
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from typing import NamedTuple

import psutil
import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec
from kosmos_ros.corpus import CorpusError
from kosmos_ros.corpus.cli import main as corpus_main
from kosmos_ros.corpus.ray_pool import _prepare_join, RayPool
from kosmos_ros.corpus.workers import EngineInfo

from test_corpus import assert_same_rows, rows  # noqa: I100

RAY = str(Path(sys.executable).with_name('ray'))
# `ray start` for a worker node, without the check that refuses one when
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the setting that keeps 127.0.0.1 as the node's
# address): the module that check reads alone says that multi-node clusters are allowed.
WORKER_START = '''
import sys, types
import ray._private.ray_constants as constants
from ray.scripts import scripts
scripts.ray_constants = types.SimpleNamespace(**{**vars(constants), 'ENABLE_RAY_CLUSTER': True})
sys.argv[0] = 'ray'
sys.exit(scripts.main())
'''
# The head declares a node dead after 5 missed health checks a second apart (Ray's default:
# 3 s apart), and the actor lost with it is started again sooner.
HEAD_ENV = {'RAY_health_check_period_ms': '1000', 'RAY_health_check_failure_threshold': '5'}
PHOTOS = ('coffee', 'rocket', 'astronaut')
FRAMES = 6  # a bag
# Three frames a chunk, a chunk a task, one frame at a time: a task takes about a second, so
# an actor seen grounding is killed in the middle of its task.
GROUND = ['--tiny-model', '--chunk-frames', '3', '--chunks-per-task', '1', '--batch-size', '1',
          '--max-new-tokens', '48']
# What RayPool.run says when it gives a task lost with its actor to another.
LOST = re.compile(r'a worker was lost \((ActorUnavailableError|ActorDiedError)\); its chunks '
                  r'go to the next free worker')


class Node(NamedTuple):
    name: str
    sid: int  # the session its `ray start` began: the node's processes


class Cluster(NamedTuple):
    root: Path  # 0700: the token, the nodes' temp folders, their home
    address: str
    env: dict  # what every node and driver is given (a driver also gets a home of its own)
    nodes: list


def _short_base():
    """Return a temp folder short enough for Ray's socket paths (at most 107 bytes)."""
    base = tempfile.gettempdir()
    return base if len(base) <= 20 else '/tmp'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def session_processes(sid):
    """Return this user's live processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(['status', 'uids']):
        try:
            if proc.info['status'] != psutil.STATUS_ZOMBIE and \
                    proc.info['uids'].real == os.getuid() and os.getsid(proc.pid) == sid:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _title(proc):
    try:
        return ' '.join(proc.cmdline())
    except psutil.Error:
        return ''


def _signal(procs, how):
    for proc in procs:
        try:
            getattr(proc, how)()
        except psutil.Error:
            pass


def stop_nodes(nodes, grace_s=3.0):
    """Stop the nodes: SIGTERM to every process of their sessions, SIGKILL after grace_s.

    Return the processes still there (none, unless they cannot be killed).
    """
    procs = [p for node in nodes for p in session_processes(node.sid)]
    _signal(procs, 'terminate')
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    _signal(alive, 'kill')
    psutil.wait_procs(alive, timeout=grace_s)
    return [p for node in nodes for p in session_processes(node.sid)]


def _start_nodes(commands, env, log_dir, nodes):
    """Run `ray start` commands side by side, each in a session of its own, added to nodes."""
    started = []
    for name, command in commands:
        with open(log_dir / f'{name}.log', 'w') as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        nodes.append(Node(name, proc.pid))  # stopped at the end even if its start fails
        started.append((name, proc))
    for name, proc in started:
        assert proc.wait(timeout=120) == 0, (log_dir / f'{name}.log').read_text()[-3000:]


@pytest.fixture(scope='module')
def cluster():
    """Start a head and two worker nodes on 127.0.0.1; at the end, stop them, remove all."""
    root = Path(tempfile.mkdtemp(prefix='kc_', dir=_short_base()))  # 0700
    fd = os.open(root / 'token', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as out:
        out.write(os.urandom(32).hex())
    (root / 'home').mkdir()
    (root / 'tmp').mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith('RAY_')}
    env.update(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=str(root / 'token'),
               HOME=str(root / 'home'), TMPDIR=str(root / 'tmp'), RAY_USAGE_STATS_ENABLED='0')
    node_env = dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='0', **HEAD_ENV)
    port = _free_port()
    address = f'127.0.0.1:{port}'
    common = ['--node-ip-address', '127.0.0.1', '--num-cpus', '1', '--disable-usage-stats',
              '--object-store-memory', str(100 * 2**20), '--min-worker-port', '0',
              '--max-worker-port', '0']  # worker ports: any free one, not 10002-19999
    nodes = []
    started = time.monotonic()
    try:
        _start_nodes([('head', [RAY, 'start', '--head', '--port', str(port),
                                '--include-dashboard', 'false', '--temp-dir', str(root / 'h'),
                                *common])], node_env, root, nodes)
        _start_nodes([(f'w{i}', [sys.executable, '-c', WORKER_START, 'start', '--address',
                                 address, '--temp-dir', str(root / f'w{i}'), *common])
                      for i in (1, 2)], node_env, root, nodes)
        print(f'a cluster of 3 nodes started in {time.monotonic() - started:.1f} s')
        yield Cluster(root, address, env, nodes)
    finally:
        left = stop_nodes(nodes)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, [_title(p) for p in left]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus')
    for photo in PHOTOS:
        make_sample_bag(root / photo, SampleSpec(duration_s=FRAMES / 10.0, rate_hz=10.0,
                                                 width=160, height=120, photos=(photo,)))
    return root


@pytest.fixture(scope='module')
def reference(corpus, tiny_model_dir, tmp_path_factory):
    """Ground the corpus in this process (--workers 0)."""
    out = tmp_path_factory.mktemp('runs') / 'reference'
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('KOSMOS_ROS_TINY_MODEL_DIR', str(tiny_model_dir))
        assert corpus_main(['ground', str(corpus), '-o', str(out), '--workers', '0', '--quiet',
                            *GROUND]) == 0
    return out


class Driver(NamedTuple):
    proc: subprocess.Popen
    home: Path
    temp: Path


@pytest.fixture
def ground(cluster, corpus, tiny_model_dir, tmp_path):
    """Return a function starting ``kosmos_corpus ground`` (joining the cluster) as a driver.

    It runs in a session of its own, with a fresh home (0755) and temp folder; one still
    running at the end of the test is killed with its process group.
    """
    drivers = []

    def start(out, *options, address=None, **environ):
        place = Path(tempfile.mkdtemp(dir=tmp_path))
        home, temp = place / 'home', place / 'tmp'
        home.mkdir(mode=0o755)
        temp.mkdir(mode=0o700)
        env = dict(cluster.env, HOME=str(home), TMPDIR=str(temp),
                   KOSMOS_ROS_TINY_MODEL_DIR=str(tiny_model_dir), **environ)
        cmd = [sys.executable, '-m', 'kosmos_ros.corpus.cli', 'ground', str(corpus), '-o',
               str(out), '--ray-address', address or cluster.address, *options, *GROUND]
        drivers.append(Driver(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True,
                                               start_new_session=True), home, temp))
        return drivers[-1]

    yield start
    for driver in drivers:
        if driver.proc.poll() is None:
            os.killpg(driver.proc.pid, signal.SIGKILL)
            driver.proc.communicate()


def _finish(proc, timeout=240):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f'the command did not end in {timeout} s: {stderr[-3000:]}')


def _per_worker(stdout):
    """Return {worker: frames} from the summary's lines under 'workers:'."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('workers: '))
    found = {}
    for line in lines[start + 1:]:
        if not line.startswith('  ') or not line.endswith(' frames'):
            break
        name, frames = line.strip().rsplit(': ', 1)
        found[name] = int(frames.split()[0])
    return found


def _listening(procs):
    found = []
    for proc in procs:
        try:
            found += [(proc.name(), c.laddr) for c in proc.net_connections('inet')
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def test_cluster_run_equals_this_process(cluster, ground, reference, tmp_path):
    """Two actors on the cluster ground what this process grounds; nothing starts here."""
    out = tmp_path / 'run'
    driver = ground(out, '--workers', '2', '--quiet')
    descendants = set()
    while driver.proc.poll() is None:  # what the command starts: no GCS, no raylet
        try:
            descendants.update(p.name() for p in
                               psutil.Process(driver.proc.pid).children(recursive=True))
        except psutil.Error:
            pass
        time.sleep(0.1)
    stdout, stderr = _finish(driver.proc)
    assert driver.proc.returncode == 0, stderr[-3000:]
    assert f'workers: 2 Ray workers (CPU) on {cluster.address}' in stdout
    assert len(_per_worker(stdout)) == 2, stdout  # both actors grounded
    assert_same_rows(rows(out), rows(reference))
    assert not descendants & {'gcs_server', 'raylet'}, descendants  # no embedded Ray
    assert not list(driver.home.iterdir()), 'written to the home folder (~/.ray?)'
    assert not list(driver.temp.iterdir()), 'written to the temp folder (an embedded Ray?)'
    assert not list((cluster.root / 'home').iterdir()), "written to the nodes' home folder"
    sockets = _listening([p for node in cluster.nodes for p in session_processes(node.sid)])
    assert sockets, 'no listening socket of the cluster found'
    assert all(a.ip in ('127.0.0.1', '::ffff:127.0.0.1') for _, a in sockets), sockets


def _actor_on(nodes, title='ray::Worker.ground'):
    """Return (node, process) of an actor on one of the nodes (grounding), or Nones."""
    for node in nodes:
        for proc in session_processes(node.sid):
            if _title(proc).startswith(title):
                return node, proc
    return None, None


def test_a_node_killed_mid_run_and_the_run_completes(cluster, ground, reference, tmp_path):
    """Kill a worker node while its actor grounds: the task goes to another actor."""
    out = tmp_path / 'run'
    driver = ground(out, '--workers', '2', '--progress', 'log')
    workers = [n for n in cluster.nodes if n.name != 'head']  # the head has the driver's raylet
    victim = restarted = None
    deadline = time.monotonic() + 240
    while driver.proc.poll() is None and time.monotonic() < deadline:
        if victim is None and list((out / 'chunks').rglob('*.json')):  # mid-run
            victim, actor = _actor_on(workers)
            if victim is not None:
                actor.kill()  # at once, in the middle of its task; then the rest of the node
                _signal(session_processes(victim.sid), 'kill')
                killed = f'{socket.gethostname()}:{actor.pid}'
        elif victim is not None and restarted is None:
            restarted, _ = _actor_on([n for n in workers if n != victim], 'ray::Worker')
        time.sleep(0.02)
    stdout, stderr = _finish(driver.proc)
    assert victim is not None, f'no actor was seen grounding on a worker node: {stderr[-2000:]}'
    assert driver.proc.returncode == 0, stderr[-3000:]
    assert LOST.search(stderr), stderr[-3000:]
    assert 'Traceback' not in stderr, stderr[-3000:]
    assert_same_rows(rows(out), rows(reference))
    assert not session_processes(victim.sid), 'the killed node left processes'
    print(f'killed {victim.name} with the actor {killed}; frames by worker: '
          f'{_per_worker(stdout)}; Ray started the actor again on the third node '
          f'{"during the run" if restarted else "too late to be seen"}')


def test_a_wrong_address_is_one_error_line(ground, tmp_path):
    """A loopback port nobody listens on: exit 2 and one error line, well within a minute."""
    port = _free_port()
    driver = ground(tmp_path / 'run', '--workers', '2', '--quiet',
                    address=f'127.0.0.1:{port}')
    _, stderr = _finish(driver.proc, timeout=60)
    assert driver.proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith('kosmos_corpus: error:')]
    assert errors == [f'kosmos_corpus: error: cannot join Ray at 127.0.0.1:{port}: nothing '
                      'answers there (Connection refused); start the cluster (ray start '
                      '--head) or give its address'], stderr[-3000:]
    assert 'Traceback' not in stderr


def test_a_driver_without_the_token_is_one_error_line(cluster, ground, tmp_path):
    """Token authentication on, no token: exit 2, one error line that says what is missing."""
    driver = ground(tmp_path / 'run', '--workers', '2', '--quiet',
                    RAY_AUTH_TOKEN_PATH=str(tmp_path / 'no_token'))
    _, stderr = _finish(driver.proc, timeout=120)
    assert driver.proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith('kosmos_corpus: error:')]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f'kosmos_corpus: error: cannot join Ray at {cluster.address}: '
                                'RAY_AUTH_TOKEN_PATH is set but file cannot be opened'), errors
    assert errors[0].endswith('needs its token here too: RAY_AUTH_MODE=token and '
                              'RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)'), errors
    assert 'Traceback' not in stderr


def test_more_workers_than_the_cluster_has_room_for_is_an_error(ground, tmp_path):
    """Actors without room would wait for it for ever: exit 2, one error line."""
    driver = ground(tmp_path / 'run', '--workers', '9', '--quiet')
    _, stderr = _finish(driver.proc, timeout=120)
    assert driver.proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith('kosmos_corpus: error:')]
    assert len(errors) == 1 and errors[0].startswith(
        'kosmos_corpus: error: 9 workers need 9 CPUs; the Ray cluster has '), stderr[-3000:]


# -- RayPool.run on a stand-in for Ray: which failures go to another actor ---------------------

class _Exceptions:
    class RayError(Exception):
        pass

    class RayTaskError(RayError):
        pass

    class RayActorError(RayError):
        pass

    class ActorDiedError(RayActorError):
        pass

    class ActorUnavailableError(RayActorError):
        pass

    class ObjectLostError(RayError):
        pass


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _FakeRay:
    """Ray's ``wait`` and ``get`` on references that are ready at once, in submission order."""

    exceptions = _Exceptions

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


class _Chunk(NamedTuple):
    bag_id: str
    index: int


class _Actor:
    """An actor whose calls answer from scripts: 'ok', or the name of what Ray raises."""

    def __init__(self, name, ground=(), info=()):
        self.name, self.grounds, self.infos = name, list(ground), list(info)
        self.done = []
        self.ground = self._Method(self._ground, retries=0)  # run() gives it to another
        self.info = self._Method(self._info, retries=-1)  # waits through Ray's restarts

    class _Method:
        def __init__(self, call, retries):
            self.call, self.retries = call, retries

        def options(self, max_task_retries):
            assert max_task_retries == self.retries
            return types.SimpleNamespace(remote=self.call)

    def _ground(self, chunks, query, batch_size):
        outcome = self.grounds.pop(0) if self.grounds else 'ok'
        if outcome == 'ok':
            self.done += chunks
            return _Ref(value=list(chunks))
        return _Ref(error=getattr(_Exceptions, outcome)(f'{self.name}: {outcome}'))

    def _info(self):
        outcome = self.infos.pop(0) if self.infos else 'ok'
        if outcome in ('ok', 'another model'):
            return _Ref(value=EngineInfo('tiny' if outcome == 'ok' else outcome, '', 0))
        return _Ref(error=getattr(_Exceptions, outcome)(f'{self.name}: {outcome}'))


def _pool(*actors):
    pool = RayPool.__new__(RayPool)  # no Ray: the stand-in
    pool.ray, pool.actors, pool._info = _FakeRay(), list(actors), EngineInfo('tiny', '', 0)
    pool.said = []
    pool._on_status = pool.said.append
    return pool


TASKS = [[_Chunk('bag', i)] for i in range(6)]


def _grounded(pool):
    return sorted(c.index for results in pool.run(TASKS, None, 1) for c in results)


@pytest.mark.parametrize('lost', ['ActorUnavailableError', 'ActorDiedError', 'ObjectLostError'])
def test_a_task_lost_with_its_actor_goes_to_another(lost):
    """The task is done elsewhere; the actor, back after its restart, takes tasks again."""
    a, b = _Actor('a', ground=[lost]), _Actor('b')
    pool = _pool(a, b)
    assert _grounded(pool) == list(range(6))  # each task once
    assert a.done and b.done
    assert pool.said == [f'a worker was lost ({lost}); its chunks go to the next free worker',
                         'a lost worker answers again']


def test_an_actor_ray_gave_up_is_left_out():
    a, b = _Actor('a', ground=['ActorUnavailableError'], info=['ActorDiedError']), _Actor('b')
    pool = _pool(a, b)
    assert _grounded(pool) == list(range(6))
    assert not a.done and len(b.done) == 6
    assert pool.said[-1] == 'a worker is gone: a: ActorDiedError'


def test_an_actor_back_with_another_model_is_left_out():
    a, b = _Actor('a', ground=['ActorDiedError'], info=['another model']), _Actor('b')
    pool = _pool(a, b)
    assert _grounded(pool) == list(range(6))
    assert not a.done
    assert pool.said[-1] == 'a worker started again by Ray loaded another model'


def test_no_actor_left_is_an_error():
    a = _Actor('a', ground=['ActorDiedError'], info=['ActorDiedError'])
    b = _Actor('b', ground=['ActorUnavailableError'], info=['ActorDiedError'])
    with pytest.raises(CorpusError, match=r'^no Ray worker is left: a worker is gone: '):
        _grounded(_pool(a, b))


def test_a_task_that_kills_every_actor_it_meets_fails_the_run():
    a = _Actor('a', ground=['ActorDiedError'] * 3)
    with pytest.raises(CorpusError, match=r'^chunks bag#0 were lost with their worker 3 times'):
        _grounded(_pool(a))


def test_an_engine_error_fails_the_run():
    with pytest.raises(CorpusError, match='^a worker failed'):
        _grounded(_pool(_Actor('a', ground=['ok', 'RayTaskError'])))


def test_join_checks_the_address_and_dials_loopback_as_given(monkeypatch):
    with pytest.raises(CorpusError, match=r'must be auto, HOST:PORT or ray://HOST:PORT'):
        _prepare_join('127.0.0.1')
    with pytest.raises(CorpusError, match=r'^cannot join Ray at ray://127\.0\.0\.1:\d+: nothing '
                                          r'answers there \(Connection refused\)'):
        _prepare_join(f'ray://127.0.0.1:{_free_port()}')
    monkeypatch.setenv('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', 'set')  # given back at the end
    monkeypatch.delenv('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER')
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen()
        _prepare_join(f'localhost:{server.getsockname()[1]}')
    assert os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] == '0'
