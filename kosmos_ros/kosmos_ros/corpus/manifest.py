# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The run manifest (``manifest.json``): inputs, options, versions, and every bag's fate.

Written atomically (a temporary file renamed into place) whenever a bag's state changes, so
a killed run leaves the last consistent one. Read back with a schema (:func:`read`): a run
folder may be shared, and its bag ids name files the run removes, so a manifest whose fields
are not what :func:`write` writes is refused with one line naming the field.
"""

from __future__ import annotations

from datetime import datetime, timezone
import importlib.metadata
import json
import os
from pathlib import Path
import platform
import re
from typing import Any

from kosmos_ros.corpus import CorpusError

FORMAT = 1
NAME = 'manifest.json'
TOOL = 'kosmos_corpus'
STATUSES = ('pending', 'done', 'failed', 'duplicate')
# A bag id names files in the run folder: a safe stem, '-', 12 hex digits of its SHA-256.
BAG_ID = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,59}-[0-9a-f]{12}')
SHA256 = re.compile(r'[0-9a-f]{64}')
_COUNTS = ('size', 'mtime_ns', 'chunks', 'admitted', 'messages', 'grounded', 'throttled',
           'rows')
_TEXTS = ('reason', 'output')
_PACKAGES = ('kosmos_ros', 'torch', 'transformers', 'numpy', 'rosbags', 'rosbags-image',
             'pyarrow', 'ray', 'opencv-python-headless')


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


def versions() -> dict[str, str]:
    """Return the versions of Python and of the packages a run's results depend on."""
    out = {'python': platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = 'not installed'
    return out


def read(folder: Path) -> dict[str, Any] | None:
    """Return the manifest of a run folder, None when it has none; CorpusError if unreadable."""
    path = Path(folder) / NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise CorpusError(f'cannot read the run manifest {path}: {exc}') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise CorpusError(f'{path} is not a kosmos_ros corpus manifest (format {FORMAT})')
    problem = damage(data)
    if problem:
        raise CorpusError(f'the run manifest {path} is damaged: {problem}; repair or remove '
                          'the run folder, or choose a new one') from None
    return data


def damage(data: dict[str, Any]) -> str:
    """Return what is wrong with a manifest's fields ('' when each is as written)."""
    for name, kind in (('options', dict), ('inputs', list), ('problems', list),
                       ('model', dict), ('versions', dict), ('run', dict), ('status', str)):
        if name in data and not isinstance(data[name], kind):
            return f'{name} is not {_KINDS[kind]}'
    model = data.get('model', {})
    for name in ('description', 'revision', 'label'):
        if not isinstance(model.get(name, ''), str):
            return f'model.{name} is not text'
    for i, record in enumerate(data.get('inputs', [])):
        problem = _record_damage(record)
        if problem:
            return f'inputs[{i}]{problem}'
    for i, problem in enumerate(data.get('problems', [])):
        if not (isinstance(problem, dict) and isinstance(problem.get('input'), str)
                and isinstance(problem.get('reason'), str)):
            return f'problems[{i}] is not an input and its reason'
    return ''


_KINDS = {dict: 'an object', list: 'a list', str: 'text'}


def _record_damage(record: Any) -> str:
    if not isinstance(record, dict):
        return ' is not an object'
    if not isinstance(record.get('path'), str) or not record['path']:
        return '.path is missing or not text'
    if record.get('status') not in STATUSES:
        return f'.status is not one of {", ".join(STATUSES)}'
    if 'bag_id' in record and not (isinstance(record['bag_id'], str)
                                   and BAG_ID.fullmatch(record['bag_id'])):
        return '.bag_id is not a bag id (a name and 12 hex digits)'
    if 'sha256' in record and not (isinstance(record['sha256'], str)
                                   and SHA256.fullmatch(record['sha256'])):
        return '.sha256 is not 64 hex digits'
    if record['status'] == 'done' and not ('bag_id' in record and 'sha256' in record):
        return ' is done without a bag_id and sha256'
    for name in _COUNTS:
        value = record.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f'.{name} is not a count'
    for name in _TEXTS:
        if not isinstance(record.get(name, ''), str):
            return f'.{name} is not text'
    skipped = record.get('skipped', {})
    if not (isinstance(skipped, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in skipped.values())):
        return '.skipped is not reasons and counts'
    return ''


def is_run_folder(folder: Path) -> bool:
    """Return whether ``folder`` holds a corpus run (a kosmos_corpus manifest, or its skeleton)."""
    path = Path(folder) / NAME
    try:
        if path.is_file():
            with open(path, encoding='utf-8') as f:
                head = f.read(4096)
            return f'"tool": "{TOOL}"' in head
    except OSError:
        return False
    return (Path(folder) / '.lock').is_file() and (Path(folder) / 'chunks').is_dir()


def write(folder: Path, data: dict[str, Any]) -> None:
    data['updated'] = now()
    path = Path(folder) / NAME
    tmp = path.with_name(NAME + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + '\n', encoding='utf-8')
    os.replace(tmp, path)
