# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ament linters on the package: flake8 (project config), pep257, copyright, xmllint."""

from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = PACKAGE.parent
PY_PATHS = [PACKAGE / 'kosmos_ros', PACKAGE / 'test', PACKAGE / 'launch', PACKAGE / 'setup.py',
            ROOT / 'tools', ROOT / 'benchmarks']
HEADER = ('# Copyright 2026 kosmos_ros contributors', '# SPDX-License-Identifier: Apache-2.0')


def _existing(paths):
    return [str(p) for p in paths if p.exists()]


def _run_linter(module: str, *args: str) -> subprocess.CompletedProcess:
    """Run an ament linter in a fresh process (flake8 forks workers, unsafe after rclpy)."""
    return subprocess.run([sys.executable, '-m', module, *args], capture_output=True,
                          text=True, timeout=600)


def test_flake8():
    result = _run_linter('ament_flake8.main', '--config', str(PACKAGE / 'setup.cfg'),
                         *_existing(PY_PATHS))
    report = result.stdout.split('Checked files:')[0]  # the errors, not the list of files
    assert result.returncode == 0, 'flake8 errors:\n' + report[-6000:] + result.stderr[-3000:]


def test_pep257():
    result = _run_linter('ament_pep257.main',
                         *_existing([PACKAGE / 'kosmos_ros', PACKAGE / 'launch']),
                         '--convention', 'google', '--add-ignore', 'D100', 'D101', 'D102',
                         'D103', 'D104', 'D105', 'D106', 'D107')
    assert result.returncode == 0, 'pep257 errors:\n' + result.stdout[-6000:]


def _python_files():
    for path in PY_PATHS:
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in path.rglob('*.py') if '__pycache__' not in p.parts)


def test_copyright_headers():
    missing = []
    for path in _python_files():
        lines = path.read_text().splitlines()
        body = lines[1:] if lines and lines[0].startswith('#!') else lines
        if tuple(body[:2]) != HEADER:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, 'files without the copyright header: ' + ', '.join(missing)
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()


XML_FILES = [PACKAGE / 'package.xml', ROOT / 'kosmos_ros_interfaces' / 'package.xml',
             ROOT / 'test_support' / 'vision_msgs' / 'package.xml']


@pytest.mark.parametrize('path', XML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_xml(path):
    xmllint = shutil.which('xmllint')
    if xmllint:
        result = subprocess.run([xmllint, '--noout', str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    root = ET.parse(path).getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    for tag in ('name', 'version', 'description', 'maintainer', 'license'):
        assert root.find(tag) is not None and root.find(tag).text.strip(), tag
