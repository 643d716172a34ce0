# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a checkpoint holds, checked before transformers opens any of it.

Safetensors only: a folder holding only pickle checkpoints, a weight map
(``*.index.json``) or a config.json ``transformers_weights`` naming anything but a safetensors
file of the folder, a PEFT adapter, a config asking for remote code or naming another model
type: each is refused with :class:`~kosmos_ros.errors.ModelLoadError`, and every weight file's
safetensors header is parsed (no tensor read). A hub model's files are fetched and checked the
same way. Used by :mod:`kosmos_ros.model.loading`.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
import stat
from typing import Any

from safetensors import safe_open, SafetensorError

from kosmos_ros.errors import ModelLoadError

__all__ = ['check_config', 'check_hub_model', 'check_local_folder', 'PICKLE_SUFFIXES',
           'SAFETENSORS', 'shown', 'stat_path']

PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')
SAFETENSORS = '.safetensors'
INDEX_SUFFIX = '.index.json'  # a sharded checkpoint's weight map: tensor name -> file
SAFE_WEIGHTS = 'model.safetensors'
ADAPTER_CONFIG = 'adapter_config.json'  # a PEFT adapter, whose weights may be pickles


def shown(path: str, limit: int = 80) -> str:
    """Quote ``path`` for a message, its middle left out when it is long."""
    return repr(path if len(path) <= limit else f'{path[:limit // 2]}...{path[-limit // 4:]}')


def stat_path(path: str | Path) -> os.stat_result | None:
    """Return ``os.stat(path)``, or None when nothing is there.

    Raise ModelLoadError when the path cannot be examined: too long, not encodable, behind a
    folder that may not be searched, a loop of links.
    """
    path = str(path)
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            size = len(os.fsencode(path))
            longest = max(len(os.fsencode(name)) for name in path.split(os.sep))
            raise ModelLoadError(
                f'the model path {shown(path)} is too long ({size} bytes, its longest name '
                f'{longest} bytes; most file systems allow 255 bytes per name and 4096 per '
                'path)') from None
        raise ModelLoadError(f'cannot examine the model path {shown(path)}: '
                             f'{exc.strerror or exc}') from None
    except ValueError as exc:  # text the file system encoding cannot hold
        raise ModelLoadError(f'the model path {shown(path)} is not a file name: {exc}') from None


def _read_json(path: Path) -> Any:
    """Parse a JSON file as transformers does (UTF-8 text), or raise ModelLoadError."""
    try:
        return json.loads(path.read_bytes().decode('utf-8'))
    except OSError as exc:
        raise ModelLoadError(f'cannot read {path}: {exc.strerror or exc}') from None
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f'{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at '
                             f'offset {exc.start}') from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; RecursionError: deep nesting
        raise ModelLoadError(f'{path} is not valid JSON: {exc}') from None


def _read_json_object(path: Path) -> dict:
    value = _read_json(path)
    if not isinstance(value, dict):
        kind = {list: 'an array', str: 'a string', bool: 'a boolean', type(None): 'null'}.get(
            type(value), 'a number')
        raise ModelLoadError(f'{path} holds {kind}, not a JSON object')
    return value


def _check_weight_name(name: Any, where: str,
                       suffixes: str | tuple[str, ...] = SAFETENSORS) -> str:
    """Return ``name`` if it is a plain safetensors file name of the model folder."""
    if not isinstance(name, str):
        raise ModelLoadError(f'{where} names {name!r}, not a file name')
    if name in ('', '.', '..') or Path(name).name != name or '\\' in name:
        raise ModelLoadError(f'{where} names {name!r}, which is not a plain file name inside '
                             'the model folder')
    if name.endswith(PICKLE_SUFFIXES):
        raise ModelLoadError(f'{where} names the pickle checkpoint {name!r}; kosmos_ros loads '
                             'safetensors only, because unpickling can run arbitrary code')
    if not name.endswith(suffixes):
        raise ModelLoadError(f'{where} names {name!r}, which is not a safetensors file')
    return name


def _index_shards(path: Path) -> list[str]:
    """Return the shard names a ``*.index.json`` weight map lists, all checked safetensors."""
    weight_map = _read_json_object(path).get('weight_map')
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f'{path} has no weight_map object naming the weight files')
    where = f'{path.name} (weight_map)'
    return sorted({_check_weight_name(name, where) for name in weight_map.values()})


def _check_safetensors(path: Path) -> None:
    """Parse a safetensors header (its offsets must cover the file exactly); reads no tensor."""
    try:
        with safe_open(str(path), framework='pt'):
            pass
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f'{path} is not a valid safetensors file: {exc}') from None


def check_local_folder(folder: Path) -> None:
    """Check a model folder before transformers opens anything in it.

    transformers loads whatever ``model.safetensors.index.json`` (or ``transformers_weights`` in
    config.json) names, ``.bin`` shards with torch.load included, so every index and every weight
    file is checked here first.
    """
    info = stat_path(folder)
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise ModelLoadError(f'model path {folder} is not a folder')
    config_path = folder / 'config.json'
    info = stat_path(config_path)
    if info is None or not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f'model folder {folder} has no config.json')
    config = _read_json_object(config_path)
    check_config(config, str(folder))
    try:
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise ModelLoadError(f'cannot list model folder {folder}: {exc}') from None
    if ADAPTER_CONFIG in files:
        raise ModelLoadError(f'model folder {folder} holds a PEFT adapter ({ADAPTER_CONFIG}); '
                             'kosmos_ros loads full KOSMOS-2 checkpoints only')
    weights = [name for name in files if name.endswith(SAFETENSORS)]
    if not weights:
        pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise ModelLoadError(
                f'model folder {folder} holds only pickle checkpoints ({", ".join(pickles)}); '
                'kosmos_ros loads safetensors only, because unpickling can run arbitrary code. '
                'Convert the weights to model.safetensors first.')
        raise ModelLoadError(f'model folder {folder} has no weights (*.safetensors)')
    explicit = config.get('transformers_weights')
    named = [explicit] if explicit is not None else []
    # The weight maps transformers reads with use_safetensors (a legacy
    # pytorch_model.bin.index.json beside them is never read).
    for index in (name for name in files if name.endswith(SAFETENSORS + INDEX_SUFFIX)):
        named += _index_shards(folder / index)
    for name in named:
        if name not in files:
            raise ModelLoadError(f'model folder {folder} has no file {name!r}, which its '
                                 'config.json or weight map names')
    for name in weights:
        _check_safetensors(folder / name)


def check_hub_model(repo: str, revision: str | None, cache_dir: str | None,
                    local_files_only: bool) -> str | None:
    """Fetch and check a hub model's config and weight files; return the commit they are from.

    On the hub path transformers also loads the ``.bin`` shards a ``model.safetensors.index.json``
    lists (``use_safetensors=True`` only decides which index it reads). So the files transformers
    will read are fetched here first, checked as a local folder's are, and the model is then
    loaded at the commit they came from: transformers finds them in the cache, pinned, and reads
    no other weight file.
    """
    from transformers.utils.hub import cached_file, extract_commit_hash

    def fetch(name: str, revision: str | None, required: bool = True) -> str | None:
        return cached_file(repo, name, revision=revision, cache_dir=cache_dir,
                           local_files_only=local_files_only,
                           _raise_exceptions_for_missing_entries=required)

    config_path = fetch('config.json', revision)
    if config_path is None:
        raise ModelLoadError(f'{repo!r} has no config.json')
    revision = extract_commit_hash(config_path, None) or revision
    config = _read_json_object(Path(config_path))
    check_config(config, repo)
    if fetch(ADAPTER_CONFIG, revision, required=False) is not None:
        raise ModelLoadError(f'{repo!r} is a PEFT adapter ({ADAPTER_CONFIG}); kosmos_ros loads '
                             'full KOSMOS-2 checkpoints only')
    explicit = config.get('transformers_weights')
    candidates = [SAFE_WEIGHTS, SAFE_WEIGHTS + INDEX_SUFFIX] if explicit is None else [explicit]
    for name in candidates:
        path = fetch(name, revision, required=False)
        if path is not None:
            break
    else:
        raise ModelLoadError(f'{repo!r} has no {" nor ".join(candidates)} at revision '
                             f'{revision or "main"}; kosmos_ros loads safetensors only')
    shards = [path]
    if name.endswith(INDEX_SUFFIX):
        shards = [fetch(shard, revision) for shard in _index_shards(Path(path))]
    for shard in shards:
        _check_safetensors(Path(shard))
    return revision


def check_config(config: dict, source: str) -> None:
    if config.get('auto_map'):
        raise ModelLoadError(f'{source} asks for remote code (auto_map in config.json); '
                             'kosmos_ros never enables trust_remote_code')
    model_type = config.get('model_type')
    if model_type != 'kosmos-2':
        raise ModelLoadError(f'{source} is a {model_type!r} model, not KOSMOS-2 (kosmos-2)')
    if config.get('transformers_weights') is not None:  # the file transformers loads instead
        _check_weight_name(config['transformers_weights'],
                           f'{source} config.json (transformers_weights)',
                           (SAFETENSORS, SAFETENSORS + INDEX_SUFFIX))
