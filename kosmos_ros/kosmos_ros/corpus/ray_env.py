# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The embedded local Ray's private folder and token, and signals held while Ray starts.

Left to itself, Ray 2.60 lets other local users into the cluster a run starts:

- ``ray.init`` of a new local cluster turns token authentication on
  (``ray/_private/worker.py`` ``init`` -> ``enable_token_auth_by_default``) and, finding no
  token, writes a new one to ``~/.ray/auth_token`` with the process umask, 0644 in a 0755
  folder (``ray/_private/authentication/authentication_token_setup.py``
  ``generate_and_save_token``, ``_get_default_token_path``). Every Ray process reads the token
  with the C++ ``AuthenticationTokenLoader::TryLoadTokenFromSources``: ``$RAY_AUTH_TOKEN``,
  then the file ``$RAY_AUTH_TOKEN_PATH`` names, then ``$HOME/.ray/auth_token``.
- its session folders (sockets, logs, the GCS address) go to ``ray/`` under ``$RAY_TMPDIR``,
  ``$TMPDIR`` or ``/tmp`` (``ray/_common/utils.py`` ``get_default_system_temp_dir``), 0777
  without the sticky bit.

A second local user read the token and the GCS port, joined the cluster and ran a task as the
first; it could also rename the raylet's socket. :class:`PrivateRay` gives the embedded Ray a
folder of its own (``tempfile.mkdtemp``: 0700, under the system temp folder) holding the
session folders (``_temp_dir``, ``RAY_TMPDIR``; Ray makes them 0777, but no one else can
enter the folder), the Ray processes' temporary files and a token only the user can read
(``RAY_AUTH_TOKEN_PATH``, 0600), with token authentication on (``RAY_AUTH_MODE=token``);
nothing goes to the home folder. :meth:`PrivateRay.remove` stops what is left of the cluster's
processes and removes the folder.

:func:`signals_held` keeps SIGINT and SIGTERM from cutting short ``ray.init``,
``ray.shutdown`` or the import of a C extension, and delivers the first one after:

- ``ray.init`` replaces the SIGTERM handler with an immediate ``sys.exit`` (exit 15;
  ``ray/_private/worker.py`` ``init``, through ``ray._private.utils.set_sigterm_handler``) and
  its core worker installs absl's failure signal handler for SIGTERM (a native stack dump,
  then death), unless ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER`` is set; an exception raised half
  way through ``ray.init`` or ``ray.shutdown`` left Ray processes behind (its agents lived for
  a minute);
- a KeyboardInterrupt inside the import of numpy, pyarrow, torch or Ray turns into an
  ImportError, or into an exit by SIGINT (-2) after the program handled it.
"""

from __future__ import annotations

from contextlib import contextmanager
import os
from pathlib import Path
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Iterator, Sequence

from kosmos_ros.corpus import CorpusError

# Bind every server to loopback (without it Ray 2.60 advertises and dials the machine's
# external address) and send no usage statistics; set before Ray is imported.
LOCAL_RAY_ENV = {'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER': '0', 'RAY_USAGE_STATS_ENABLED': '0'}
TOKEN_FILE = 'auth_token'
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# Ray's sockets lie at <folder>/r/session_<date>_<time>_<pid>/sockets/plasma_store, and a
# socket's path may not exceed 107 bytes (AF_UNIX): the folder's own path may take about 40.
_SOCKET_ROOM = 40


def _short_temp_dir() -> str:
    """Return the system temp folder, or /tmp when it is too long for Ray's socket paths."""
    base = tempfile.gettempdir()
    if len(os.fsencode(base)) <= _SOCKET_ROOM - len('/kosmos_ray_12345678'):
        return base
    if os.path.isdir('/tmp') and os.access('/tmp', os.W_OK | os.X_OK):
        return '/tmp'
    raise CorpusError(f'the temp folder {base} is too long for the sockets of a local Ray (at '
                      'most 107 bytes a path); set TMPDIR to a shorter folder')


class PrivateRay:
    """A folder only this user can enter for one embedded Ray cluster, and its token.

    Create it before Ray starts; while it exists, this process's environment points Ray at it
    (``environ``, inherited by the Ray processes). :meth:`remove` stops the cluster's leftover
    processes, removes the folder and gives the environment back.
    """

    def __init__(self) -> None:
        # 0700, owned by the user.
        self.folder = Path(tempfile.mkdtemp(prefix='kosmos_ray_', dir=_short_temp_dir()))
        self.token_path = self.folder / TOKEN_FILE
        # Ray makes its temp_dir 0777 (ray/_common/utils.py try_to_create_directory); inside
        # this folder no one else can reach it. A short name: the sockets' paths in it may not
        # exceed 107 bytes (AF_UNIX).
        self.ray_dir = self.folder / 'r'
        self._saved: dict[str, str | None] = {}
        try:
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
            with os.fdopen(fd, 'w') as out:
                out.write(secrets.token_hex(32))
        except OSError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.environ = {
            **LOCAL_RAY_ENV,
            'RAY_AUTH_MODE': 'token',
            'RAY_AUTH_TOKEN_PATH': str(self.token_path),
            'RAY_AUTH_TOKEN': None,  # would come before the file
            'RAY_ADDRESS': None,  # ray.init() would join that cluster instead
            'RAY_TMPDIR': str(self.folder),
            'TMPDIR': str(self.folder),  # the workers' temporary files (torch's caches) too
            # absl's handler would take SIGTERM in this process once the core worker starts.
            'RAY_DISABLE_FAILURE_SIGNAL_HANDLER': '1',
        }
        for name, value in self.environ.items():
            self._saved[name] = os.environ.get(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def use_token(self) -> None:
        """Make this process's Ray (imported) read the mode and the token anew; check them.

        The C++ loader caches the first token it reads: a second cluster started by this
        process would otherwise be dialled with the first one's.
        """
        try:
            from ray._raylet import (AuthenticationMode, AuthenticationTokenLoader, Config,
                                     get_authentication_mode)
        except ImportError as exc:
            raise CorpusError(f'this Ray has no token authentication ({exc}); the embedded '
                              'local Ray needs it (Ray 2.60 is tested)') from None
        Config.initialize('')  # what Ray itself does after setting RAY_AUTH_MODE
        loader = AuthenticationTokenLoader.instance()
        loader.reset_cache()
        if get_authentication_mode() != AuthenticationMode.TOKEN or \
                not loader.has_token(ignore_auth_mode=False):
            raise CorpusError('Ray did not take the private token of the embedded local Ray '
                              f'({self.token_path})')

    @property
    def init_args(self) -> dict[str, Any]:
        """The arguments of ``ray.init`` that keep the cluster's files in the folder."""
        return {'_temp_dir': str(self.ray_dir)}

    def processes(self) -> list[Any]:
        """Return this user's processes of the cluster.

        Those that name the folder (GCS, raylet, agents) and, for those that are this process's
        children, their descendants (the workers, whose process titles Ray rewrites). Call it
        while the cluster runs: a process whose parent has died is found by its name only.
        """
        import psutil

        found: dict[int, Any] = {}
        for child in psutil.Process().children():
            try:
                if self._names_folder(child):
                    found[child.pid] = child
                    found.update((p.pid, p) for p in child.children(recursive=True))
            except psutil.Error:
                continue
        for proc in psutil.process_iter():
            try:
                if proc.uids().real == os.getuid() and proc.pid != os.getpid() and \
                        self._names_folder(proc):
                    found.setdefault(proc.pid, proc)
            except psutil.Error:
                continue
        return list(found.values())

    def remove(self, processes: Sequence[Any] = (), grace_s: float = 2.0) -> None:
        """Stop the cluster's processes still running, remove the folder, restore the env.

        ``processes``: those :meth:`processes` found while the cluster ran. Call it after
        ``ray.shutdown``, which stops most of them itself: the others (the raylet's agents
        lived for a minute) get ``grace_s / 2`` to exit, then SIGTERM, then SIGKILL.
        """
        import psutil

        try:
            left = {p.pid: p for p in processes}
            left.update((p.pid, p) for p in self.processes())
            _, alive = psutil.wait_procs(list(left.values()), timeout=grace_s / 2)
            for proc in alive:
                _quietly(proc.terminate)
            _, alive = psutil.wait_procs(alive, timeout=grace_s)
            for proc in alive:
                _quietly(proc.kill)
            psutil.wait_procs(alive, timeout=grace_s)
            for attempt in range(3):  # a process dying as the folder goes may write a last log
                try:
                    shutil.rmtree(self.folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)
        finally:
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved = {}

    def _names_folder(self, proc: Any) -> bool:
        folder = str(self.folder)
        return any(folder in arg for arg in proc.cmdline())


def _quietly(call: Any) -> None:
    import psutil

    try:
        call()
    except psutil.Error:
        pass


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM during the block, then deliver the first one received.

    On the main thread only (elsewhere Python runs no signal handler and the block runs as
    is). The first signal is raised again after the block, once the handlers in place before
    are back: SigintGuard's KeyboardInterrupt then comes where the caller can stop cleanly,
    and it replaces any exception the block raised. Ray's own SIGTERM handler is not installed
    meanwhile (see the module's description).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in HELD_SIGNALS}
    try:
        with _ray_sigterm_handler_off():
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])


@contextmanager
def _ray_sigterm_handler_off() -> Iterator[None]:
    """Keep ``ray.init`` from replacing the SIGTERM handler (nothing to do before Ray loads)."""
    utils = sys.modules.get('ray._private.utils')
    original = getattr(utils, 'set_sigterm_handler', None)
    if original is None:
        yield
        return
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = original
