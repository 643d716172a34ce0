# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""package.xml and requirements.txt name what the code imports, and nothing it does not.

A workspace build installs the ROS dependencies from package.xml (rosdep) and the rest from
requirements.txt (pip); a module imported by the package but named in neither fails only on
the user's robot.
"""

import ast
import importlib.metadata
from pathlib import Path
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

PACKAGE = Path(__file__).resolve().parents[1]
ROOT = PACKAGE.parent
# Imported where ROS is installed; not on PyPI, so not in this environment's ament index.
ROS_ONLY = {'launch', 'launch_ros'}
# Imported, yet installed apart from requirements.txt, with the reason.
INSTALLED_APART = {
    'torch': "the machine's own CUDA build, installed first (README: In an ordinary ROS 2 "
             'workspace)',
    'bitsandbytes': 'optional: 8-bit and 4-bit quantization on CUDA only',
    'torchao': 'optional: int8 and int4 weight-only quantization; not on every platform',
    'apsw': "rosbags' own sqlite3 driver, imported only to recognise its errors",
}
# Required at run time though never imported by name, with the reason.
USED_UNIMPORTED = {
    'accelerate': "transformers' device_map loading",
    'sentencepiece': 'the KOSMOS-2 tokenizer model',
    'protobuf': 'reading the SentencePiece model',
    'pillow': "the image processor's PIL backend",
    'rosbags-image': 'imported as rosbags.image',
}


# Message types named as 'pkg/msg/Type' (kosmos_ros.messages builds them by name; the rclpy
# backend imports the package then).
TYPE_NAME = re.compile('[\'"]([a-z][a-z0-9_]*(?:_msgs|_interfaces))/msg/[A-Z][A-Za-z0-9]*[\'"]')


def imported_modules():
    """Top-level modules the package (and its launch file) import, outside the stdlib."""
    found = set()
    files = list((PACKAGE / 'kosmos_ros').rglob('*.py')) + list(
        (PACKAGE / 'launch').glob('*.py'))
    for path in files:
        found.update(TYPE_NAME.findall(path.read_text()))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split('.')[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != 'kosmos_ros'}


def ros_packages():
    from ament_index_python.packages import get_packages_with_prefixes
    return set(get_packages_with_prefixes()) | ROS_ONLY


def package_xml_dependencies():
    root = ElementTree.parse(PACKAGE / 'package.xml').getroot()
    return {e.text.strip() for e in root if e.tag in ('depend', 'exec_depend')}


def requirement_names():
    names = set()
    for line in (ROOT / 'requirements.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.add(re.split(r'[<>=!~;\[ ]', line, maxsplit=1)[0].lower().replace('_', '-'))
    return names


def distributions_of(module):
    mapping = importlib.metadata.packages_distributions()
    return {d.lower().replace('_', '-') for d in mapping.get(module, ())}


def test_every_ros_import_is_a_package_xml_dependency():
    ros = ros_packages()
    missing = sorted(m for m in imported_modules() & ros if m not in package_xml_dependencies())
    assert not missing, f'imported ROS packages missing from package.xml: {missing}'


def test_every_other_import_is_in_requirements():
    ros, required = ros_packages(), requirement_names()
    missing = []
    for module in sorted(imported_modules() - ros):
        if module in INSTALLED_APART:
            continue
        if not distributions_of(module) & required:
            missing.append((module, sorted(distributions_of(module))))
    assert not missing, f'imports missing from requirements.txt: {missing}'


def test_nothing_is_required_that_is_not_used():
    imported = imported_modules()
    used = {d for m in imported for d in distributions_of(m)}
    unused = sorted(r for r in requirement_names() - used if r not in USED_UNIMPORTED)
    assert not unused, f'requirements.txt names packages the code does not import: {unused}'
    ros_deps = {d for d in package_xml_dependencies() if not d.startswith('python3-')}
    assert not ros_deps - imported, sorted(ros_deps - imported)


def test_command_line_help_imports_no_torch():
    """``grounding_node --help`` answers without loading torch (or transformers)."""
    code = ('import sys\nfrom kosmos_ros.node.main import main\ntry:\n    main(["x", "--help"])\n'
            'except SystemExit:\n    pass\nprint(sorted(m for m in ("torch", "transformers") '
            'if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'max_request_tokens' in result.stdout
    assert result.stdout.strip().endswith('[]'), result.stdout[-200:]


# ROS packages (and this project's ROS layer): a test module that imports one is no ROS-free.
ROS_MODULE = re.compile(r'^(rclpy|rcl_interfaces|rosidl_\w+|launch|launch_ros'
                        r'|ament_index_python|kosmos_ros_interfaces|\w+_msgs|\w+_srvs'
                        r'|kosmos_ros\.node|kosmos_ros\.demo)(\.|$)')


def test_ros_free_test_modules_use_no_ros():
    """The modules CI runs on one distro only (conftest.ROS_FREE) import no ROS, at any depth.

    Each module is imported in a fresh interpreter with every module it imports anywhere (in
    functions too) and every project module it runs as a command (``'kosmos_ros.x.y'``);
    then no ROS package may be loaded. A module that starts using ROS must leave the list.
    """
    sys.path.insert(0, str(PACKAGE / 'test'))
    try:
        from conftest import ROS_FREE
    finally:
        sys.path.pop(0)
    tests = PACKAGE / 'test'
    modules = {p.stem: p for p in tests.rglob('test_*.py')}
    assert ROS_FREE <= set(modules), 'a listed module is gone'
    names = set(ROS_FREE)
    for stem in ROS_FREE:
        source = modules[stem].read_text()
        names.update(re.findall(r"'(kosmos_ros(?:\.[a-z_]+)+)'", source))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    script = ('import importlib, json, sys\n'
              f'sys.path[:0] = {sorted({str(p.parent) for p in modules.values()})!r}\n'
              f'for name in {sorted(names)!r}:\n'
              '    try:\n'
              '        importlib.import_module(name)\n'
              '    except ModuleNotFoundError as exc:\n'  # a string that names no module
              '        if not name.startswith(exc.name):\n'
              '            raise\n'
              'print(json.dumps(sorted(sys.modules)))\n')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, cwd=tests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = [m for m in __import__('json').loads(proc.stdout.splitlines()[-1])
              if ROS_MODULE.match(m)]
    ros_named = sorted(n for n in names if ROS_MODULE.match(n))
    assert not ros_named and not loaded, (ros_named, loaded[:20])


def test_test_folders_mirror_the_package():
    """Each folder of tests is a subpackage of kosmos_ros, and its tests use that subpackage.

    Tests of the top-level modules and of the whole project sit in test/ itself.
    """
    tests = PACKAGE / 'test'
    folders = {p.name for p in tests.iterdir()
               if p.is_dir() and p.name not in ('data', '__pycache__')}
    packages = {p.parent.name for p in (PACKAGE / 'kosmos_ros').glob('*/__init__.py')}
    assert folders and folders <= packages, sorted(folders - packages)
    for path in sorted(tests.glob('*/test_*.py')):
        text, package = path.read_text(), path.parent.name
        harness = package == 'node' and 'from node_harness import' in text
        assert re.search(rf'kosmos_ros(\.| import ){package}\b', text) or harness, \
            f'{path.relative_to(tests)} does not use kosmos_ros.{package}'
    assert not list(tests.glob('*/*/test_*.py')), 'one level of folders, as the package has'
