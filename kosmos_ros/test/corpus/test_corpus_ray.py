# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``kosmos_corpus ground --workers N``: the embedded local Ray against local users and signals.

The command runs as users run it, a process of its own with a fresh home folder and a temp
folder like ``/tmp`` (world-writable, sticky) of its own, so that whatever it leaves there is
seen. A second, unprivileged local user (``nobody``) tries what Ray 2.60 let it do: read the
cluster's token, enter its folders, query the GCS and join the cluster. SIGINT (to the process
group, as Ctrl-C sends it) and SIGTERM (to the process, as ``kill`` and ``timeout`` send it)
come at fixed instants and while ``ray.init`` runs: exit 130, no traceback, nothing left.
"""

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time

import psutil
import pytest

from kosmos_ros.bag.sample import make_sample_bag, SampleSpec

RAY_PROCESSES = ('raylet', 'gcs_server')
NATIVE_DUMP = ('Traceback', 'Fatal Python error', '*** SIG', 'Stack trace', 'Aborted',
               'core dumped', 'Check failed')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus')
    make_sample_bag(root / 'a', SampleSpec(duration_s=0.4, rate_hz=10.0, width=160, height=120,
                                           photos=('coffee',)))
    return root


@pytest.fixture
def places():
    """Return (temp folder, home folder): like /tmp (1777) and a usual home (0755), empty."""
    temp = Path(tempfile.mkdtemp(prefix='kt_'))  # short: Ray's socket paths end at 107 bytes
    home = Path(tempfile.mkdtemp(prefix='kosmos_test_home_'))
    temp.chmod(0o1777)
    home.chmod(0o755)
    yield temp, home
    shutil.rmtree(temp, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def start(corpus, places, tiny_model_dir, tmp_path):
    """Return a function starting ``kosmos_corpus ground --workers 1`` in a session of its own.

    A command still running at the end of the test is killed with its process group.
    """
    started = []
    temp, home = places

    def start_command():
        env = dict(os.environ, HOME=str(home), TMPDIR=str(temp),
                   KOSMOS_ROS_TINY_MODEL_DIR=str(tiny_model_dir))
        cmd = [sys.executable, '-m', 'kosmos_ros.corpus.cli', 'ground', str(corpus), '-o',
               str(tmp_path / 'run'), '--tiny-model', '--workers', '1', '--no-progress']
        started.append(subprocess.Popen(cmd, env=env, cwd=str(temp), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        start_new_session=True))
        return started[-1]

    yield start_command
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def ray_children(proc):
    """Return the command's children that are Ray's GCS or raylet."""
    try:
        return [c for c in psutil.Process(proc.pid).children() if c.name() in RAY_PROCESSES]
    except psutil.Error:
        return []


def cluster(proc):
    """Return the command's descendants (the Ray processes)."""
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def _name(proc):
    try:
        return proc.name()
    except psutil.Error:
        return ''


def _listening(proc):
    try:
        return [c for c in proc.net_connections('inet') if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


def leftovers(sid, temp):
    """Return the live processes of session ``sid`` or naming the temp folder."""
    found = []
    for p in psutil.process_iter(['cmdline', 'status']):
        try:
            if p.info['status'] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            if os.getsid(p.pid) == sid or any(str(temp) in a for a in p.info['cmdline'] or ()):
                found.append(f'{p.pid} {" ".join(p.info["cmdline"] or ())[:200]}')
        except (OSError, psutil.Error):
            continue
    return found


def wait_for_no_leftovers(sid, temp, within=10.0):
    deadline = time.monotonic() + within
    while True:
        left = leftovers(sid, temp)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


# -- another local user ------------------------------------------------------------------------

PROBE = textwrap.dedent('''
    """Run as another local user: what can it read, enter, write and join?"""
    import json, os, sys
    paths, folders, ports = json.loads(sys.argv[1])
    seen = {'read': {}, 'listed': [], 'wrote': [], 'gcs': {}, 'http': {}}
    for path in paths:
        try:
            with open(path) as f:
                seen['read'][path] = f.read().strip()
        except OSError:
            pass
    for folder in folders:
        try:
            os.listdir(folder)
            seen['listed'].append(folder)
        except OSError:
            pass
        try:
            with open(os.path.join(folder, 'planted'), 'w'):
                seen['wrote'].append(folder)
        except OSError:
            pass
    token = next(iter(seen['read'].values()), '0' * 64)  # the token it read, or a guess
    import urllib.error, urllib.request
    for port in ports:  # the dashboard's and agents' HTTP servers (the others speak gRPC)
        request = urllib.request.Request(f'http://127.0.0.1:{port}/api/version',
                                         headers={'Authorization': f'Bearer {token}'})
        try:
            with urllib.request.urlopen(request, timeout=3) as r:
                seen['http'][port] = r.status
        except urllib.error.HTTPError as exc:
            seen['http'][port] = exc.code
        except Exception:
            pass
    import psutil
    address = None
    for p in psutil.process_iter(['cmdline']):  # command lines are public: the GCS address
        for arg in p.info['cmdline'] or ():
            if arg.startswith('--gcs-address='):
                address = arg.split('=', 1)[1]
    seen['address'] = address
    os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'  # dial loopback, as the run does
    from ray._raylet import AuthenticationTokenLoader, Config, GcsClient
    for mode in ('disabled', 'token'):  # without a token, then with what it has
        os.environ['RAY_AUTH_MODE'] = mode
        os.environ['RAY_AUTH_TOKEN'] = token
        Config.initialize('')
        AuthenticationTokenLoader.instance().reset_cache()
        try:
            keys = GcsClient(address=address).internal_kv_keys(b'', None, timeout=5)
            seen['gcs'][mode] = f'answered: {len(keys)} keys'
        except Exception as exc:
            seen['gcs'][mode] = f'refused: {type(exc).__name__}: {str(exc)[:160]}'
    import ray
    import ray._private.utils
    ray._private.utils.check_version_info = lambda *a, **k: None  # its Python may differ

    def uid():
        return os.getuid()

    print('SEEN ' + json.dumps(seen), flush=True)  # before joining, which may crash it
    try:
        ray.init(address=address, log_to_driver=False, logging_level='ERROR')
        print('JOINED ' + json.dumps(ray.get(ray.remote(uid).remote(), timeout=30)), flush=True)
    except Exception as exc:
        print(f'REFUSED {type(exc).__name__}: {str(exc)[:160]}', flush=True)
    os._exit(0)
''')


def python_for(user):
    """Return a Python ``user`` can run that imports this Ray (this one, else the system's)."""
    if shutil.which('runuser') is None:
        return None
    version = f'python{sys.version_info.major}.{sys.version_info.minor}'
    for exe in (sys.executable, f'/usr/bin/{version}', shutil.which(version)):
        if exe and subprocess.run(['runuser', '-u', user, '--', exe, '-c', 'pass'],
                                  capture_output=True).returncode == 0:
            return exe
    return None


def site_for(user, scratch):
    """Return a folder of this environment's packages (Ray, psutil) that ``user`` can read.

    This environment's own, unless it lies in a folder ``user`` may not enter (a checkout in a
    0700 folder, as ``mktemp -d`` makes): then a copy of hard links to the same files (0644)
    in ``scratch``, as another user would have Ray installed for itself.
    """
    site = sysconfig.get_paths()['purelib']
    probe = os.path.join(site, 'psutil', '__init__.py')
    if subprocess.run(['runuser', '-u', user, '--', 'test', '-r', probe]).returncode == 0:
        return site
    copy = scratch / 'site-packages'
    done = subprocess.run(['cp', '-al', site, str(copy)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f'{user} cannot read this environment ({site}) and it cannot be linked '
                    f'for it: {done.stderr.strip()[:200]}')
    return str(copy)


def probe_as(user, exe, paths, folders, ports, timeout=90):
    scratch = Path(tempfile.mkdtemp(prefix='kosmos_test_other_'))  # the other user's own
    site = site_for(user, scratch)
    shutil.chown(scratch, user)
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(scratch), 'TMPDIR': str(scratch),
           'PYTHONPATH': site, 'PYTHONDONTWRITEBYTECODE': '1', 'RAY_USAGE_STATS_ENABLED': '0',
           'RAY_gcs_server_port_wait_time_s': '1'}  # one try to join, not 20
    try:
        proc = subprocess.run([shutil.which('runuser'), '-u', user, '--', exe, '-c', PROBE,
                               json.dumps([paths, folders, ports])], env=env,
                              cwd=str(scratch),
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = proc.stdout.splitlines()
    seen = [x for x in lines if x.startswith('SEEN ')]
    assert seen, proc.stderr[-3000:]
    joined = [x for x in lines if x.startswith('JOINED ')]
    return dict(json.loads(seen[0][5:]), joined=json.loads(joined[0][7:]) if joined else None)


def test_local_ray_is_private_to_its_user(start, places):
    """Ray's token, sockets and folders are the user's; nobody can join; nothing is left."""
    if os.geteuid() != 0:
        pytest.skip('needs root to act as a second user (nobody)')
    exe = python_for('nobody')
    if exe is None:
        pytest.skip('no Python that nobody can run (and runuser) on this machine')
    temp, home = places
    proc = start()
    problems = []
    try:
        deadline = time.monotonic() + 120
        while not any(_name(p).startswith(('ray::IDLE', 'ray::Worker')) for p in cluster(proc)) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a Ray worker: the GCS, the raylet and its agents are up
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGSTOP)  # hold the run (not Ray) while the other user tries
        made = sorted(temp.iterdir())
        private = [p for p in made if p.is_dir() and p.stat().st_mode & 0o777 == 0o700
                   and p.stat().st_uid == os.getuid()]
        if len(made) != 1 or len(private) != 1:
            problems.append(('Ray is not in one folder of its own (0700) in the temp folder',
                             [(p.name, oct(p.stat().st_mode)) for p in made]))
        tokens = [str(p) for p in [*home.rglob('auth_token'), *temp.rglob('auth_token')]]
        for token in map(Path, tokens):
            if token.stat().st_mode & 0o077:
                problems.append(('a token others may read', str(token), oct(token.stat().st_mode)))
        if not tokens:
            problems.append('no token file: is token authentication off?')
        folders = [str(p) for p in made if p.is_dir()]
        folders += [str(p) for p in temp.rglob('sockets') if p.is_dir()]
        ports = sorted({c.laddr.port for p in cluster(proc) for c in _listening(p)})
        seen = probe_as('nobody', exe, tokens, folders, ports)
        for what in ('read', 'listed', 'wrote'):
            if seen[what]:
                problems.append((f'nobody {what}', seen[what]))
        answered = {port: code for port, code in seen['http'].items() if code not in (401, 403)}
        if answered:
            problems.append(('an HTTP server of the cluster answered nobody', answered))
        if not seen['http']:
            problems.append(('no HTTP server of the cluster was reached', ports))
        if not seen['address']:
            problems.append('nobody found no GCS address: the probe proves nothing')
        for mode, answer in seen['gcs'].items():
            if not answer.startswith('refused'):
                problems.append((f'the GCS answered nobody (auth {mode})', answer))
        if seen['joined'] is not None:
            problems.append(('nobody joined the cluster and ran a task as uid', seen['joined']))
    finally:
        proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    if list(home.iterdir()):
        problems.append(('written to the home folder', [str(p) for p in home.rglob('*')]))
    if list(temp.iterdir()):
        problems.append(('left in the temp folder', [p.name for p in temp.iterdir()]))
    left = wait_for_no_leftovers(proc.pid, temp)
    if left:
        problems.append(('processes left', left))
    assert not problems, '\n'.join(map(repr, problems))


def test_private_ray_folder_token_and_environment():
    """The folder is 0700, the token 0600, Ray points at both; all given back on removal."""
    from kosmos_ros.corpus.ray_env import PrivateRay

    before = dict(os.environ)
    private = PrivateRay()
    try:
        assert private.folder.parent == Path(tempfile.gettempdir())
        assert private.folder.stat().st_mode & 0o777 == 0o700
        assert private.folder.stat().st_uid == os.getuid()
        assert private.token_path.stat().st_mode & 0o777 == 0o600
        assert len(private.token_path.read_text()) == 64
        assert os.environ['RAY_AUTH_MODE'] == 'token'
        assert os.environ['RAY_AUTH_TOKEN_PATH'] == str(private.token_path)
        assert Path(private.init_args['_temp_dir']).parent == private.folder
        assert os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] == '0'  # loopback (kept)
    finally:
        private.remove()
    assert not private.folder.exists()
    assert dict(os.environ) == before


# -- signals ---------------------------------------------------------------------------------

@pytest.mark.parametrize('signum,when', [
    (signal.SIGTERM, 0.2), (signal.SIGINT, 0.2), (signal.SIGTERM, 1.0), (signal.SIGINT, 1.0),
    (signal.SIGTERM, 3.0), (signal.SIGTERM, 'ray.init'), (signal.SIGINT, 'ray.init')],
    ids=lambda v: getattr(v, 'name', str(v)))
def test_signal_at_any_instant_is_exit_130_and_leaves_nothing(start, places, signum, when):
    """From the first instant, through ray.init: exit 130, no dump, no process, no folder."""
    temp, home = places
    started = time.monotonic()
    proc = start()
    if when == 'ray.init':  # the GCS or the raylet is up: ray.init is starting them
        deadline = started + 120
        while not ray_children(proc) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ray_children(proc), 'ray.init was not seen'
    else:
        time.sleep(max(0.0, started + when - time.monotonic()))
    assert proc.poll() is None, 'the command ended before the signal'
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C: to the whole foreground process group
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert not [m for m in NATIVE_DUMP if m in stderr], stderr[-3000:]
    assert not wait_for_no_leftovers(proc.pid, temp)
    assert not list(temp.iterdir())  # Ray's private folder is gone, nothing else appeared
    assert not list(home.iterdir())
