# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The run manifest (``manifest.json``): inputs, options, versions, and every bag's fate.

Written atomically (a temporary file renamed into place) whenever a bag's state changes, so
a killed run leaves the last consistent one.
"""

from __future__ import annotations

from datetime import datetime, timezone
import importlib.metadata
import json
import os
from pathlib import Path
import platform
from typing import Any

from kosmos_ros.corpus import CorpusError

FORMAT = 1
NAME = 'manifest.json'
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
    return data


def write(folder: Path, data: dict[str, Any]) -> None:
    data['updated'] = now()
    path = Path(folder) / NAME
    tmp = path.with_name(NAME + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + '\n', encoding='utf-8')
    os.replace(tmp, path)
