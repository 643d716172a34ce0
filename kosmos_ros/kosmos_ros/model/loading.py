# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Load KOSMOS-2 and its processor safely, with dtype, quantization and device options.

Rules:
- weights load from safetensors only (``use_safetensors=True``); a folder that holds only
  pickle checkpoints (``pytorch_model.bin``, ``*.pt``, ``*.ckpt``) is refused before anything
  is read from it, and so is a weight map (``*.index.json``) or ``transformers_weights`` that
  names anything but a safetensors file of the folder; every weight file's safetensors header
  is checked before transformers opens it. A hub model's config and weight files are fetched and
  checked the same way, then loaded at that commit;
- ``trust_remote_code`` is never enabled, and a model that asks for remote code is refused;
- ``local_files_only`` makes loading fully offline (no network attempt);
- every failure raises :class:`~kosmos_ros.errors.ModelLoadError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import errno
import json
import logging
import os
from pathlib import Path
import stat
from typing import Any

from safetensors import safe_open, SafetensorError
import torch

from kosmos_ros.datatypes import ATTENTION, DEFAULT_MODEL, QUANTIZATIONS, TORCHAO_QUANTIZATIONS
from kosmos_ros.errors import ModelLoadError

__all__ = ['ATTENTION', 'DEFAULT_MODEL', 'DTYPES', 'load_model', 'LoadedModel', 'ModelOptions',
           'QUANTIZATIONS', 'resolve_device', 'resolve_dtype']

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle')
SAFETENSORS = '.safetensors'
INDEX_SUFFIX = '.index.json'  # a sharded checkpoint's weight map: tensor name -> file
SAFE_WEIGHTS = 'model.safetensors'
ADAPTER_CONFIG = 'adapter_config.json'  # a PEFT adapter, whose weights may be pickles
# What transformers raises for malformed or missing files: OSError (files, hub), ValueError
# (JSON and UTF-8 decoding included), KeyError, IndexError, TypeError and AttributeError (JSON of
# the wrong shape), RuntimeError (tensor shapes, torch), ImportError (a missing backend),
# SafetensorError (a corrupt weight file).
LOAD_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
               RuntimeError, ImportError, SafetensorError)


@dataclass(frozen=True)
class ModelOptions:
    """How to load the model.

    Attributes:
        model: Hugging Face hub id or local folder.
        revision: hub revision (branch, tag or commit); None for the default branch.
        local_files_only: never touch the network; use the local cache or folder only.
        dtype: 'auto' (float16 on CUDA, float32 on the CPU), 'float32', 'float16', 'bfloat16'.
        quantization: 'none'; '8bit' or '4bit' (bitsandbytes, CUDA only); 'int8' or 'int4'
            (torchao weight-only quantization of the text decoder, whose weights every decoded
            token reads; int8 also on the CPU, int4 on CUDA in bfloat16).
        device: 'auto' (first CUDA device, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        attn_implementation: 'sdpa' (scaled dot-product attention) or 'eager'.
        cache_dir: Hugging Face cache folder; None for the default.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    local_files_only: bool = False
    dtype: str = 'auto'
    quantization: str = 'none'
    device: str = 'auto'
    attn_implementation: str = 'sdpa'
    cache_dir: str | None = None


@dataclass
class LoadedModel:
    """A model ready for the engine, with what was resolved while loading it."""

    model: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    options: ModelOptions
    revision: str | None = None  # the hub commit the files came from; None for a folder

    def describe(self) -> str:
        return (f'{self.options.model} on {self.device} ({str(self.dtype).replace("torch.", "")}'
                f', quantization {self.options.quantization})')


def resolve_device(device: str) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a usable device, or raise ModelLoadError."""
    name = (device or 'auto').strip().lower()
    if name == 'auto':
        return torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'cuda' or name.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise ModelLoadError(f'device {device!r} requested but CUDA is not available '
                                 f'(torch {torch.__version__}, built with CUDA '
                                 f'{torch.version.cuda or "none"})')
        index = 0 if name == 'cuda' else name.split(':', 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise ModelLoadError(f'device {device!r} does not exist; this machine has '
                                 f'{torch.cuda.device_count()} CUDA device(s)')
        return torch.device(f'cuda:{int(index)}')
    raise ModelLoadError(f'unknown device {device!r}; expected auto, cpu, cuda or cuda:N')


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Turn a dtype name into a torch dtype for ``device``, or raise ModelLoadError."""
    name = (dtype or 'auto').strip().lower()
    if name == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f'unknown dtype {dtype!r}; expected auto, ' + ', '.join(DTYPES))
    if name == 'bfloat16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f'bfloat16 is not supported on {device}; use float16')
    return DTYPES[name]


def _shown(path: str, limit: int = 80) -> str:
    """Quote ``path`` for a message, its middle left out when it is long."""
    return repr(path if len(path) <= limit else f'{path[:limit // 2]}...{path[-limit // 4:]}')


def _stat(path: str | Path) -> os.stat_result | None:
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
                f'the model path {_shown(path)} is too long ({size} bytes, its longest name '
                f'{longest} bytes; most file systems allow 255 bytes per name and 4096 per '
                'path)') from None
        raise ModelLoadError(f'cannot examine the model path {_shown(path)}: '
                             f'{exc.strerror or exc}') from None
    except ValueError as exc:  # text the file system encoding cannot hold
        raise ModelLoadError(f'the model path {_shown(path)} is not a file name: {exc}') from None


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


def _check_local_folder(folder: Path) -> None:
    """Check a model folder before transformers opens anything in it.

    transformers loads whatever ``model.safetensors.index.json`` (or ``transformers_weights`` in
    config.json) names, ``.bin`` shards with torch.load included, so every index and every weight
    file is checked here first.
    """
    info = _stat(folder)
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise ModelLoadError(f'model path {folder} is not a folder')
    config_path = folder / 'config.json'
    info = _stat(config_path)
    if info is None or not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f'model folder {folder} has no config.json')
    config = _read_json_object(config_path)
    _check_config(config, str(folder))
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


def _check_hub_model(repo: str, options: ModelOptions) -> str | None:
    """Fetch and check a hub model's config and weight files; return the commit they are from.

    On the hub path transformers also loads the ``.bin`` shards a ``model.safetensors.index.json``
    lists (``use_safetensors=True`` only decides which index it reads). So the files transformers
    will read are fetched here first, checked as a local folder's are, and the model is then
    loaded at the commit they came from: transformers finds them in the cache, pinned, and reads
    no other weight file.
    """
    from transformers.utils.hub import cached_file, extract_commit_hash

    def fetch(name: str, revision: str | None, required: bool = True) -> str | None:
        return cached_file(repo, name, revision=revision, cache_dir=options.cache_dir,
                           local_files_only=options.local_files_only,
                           _raise_exceptions_for_missing_entries=required)

    config_path = fetch('config.json', options.revision)
    if config_path is None:
        raise ModelLoadError(f'{repo!r} has no config.json')
    revision = extract_commit_hash(config_path, None) or options.revision
    config = _read_json_object(Path(config_path))
    _check_config(config, repo)
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


def _check_config(config: dict, source: str) -> None:
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


def _quantization_config(options: ModelOptions, device: torch.device, dtype: torch.dtype):
    if options.quantization == 'none':
        return None
    if options.quantization not in QUANTIZATIONS:
        raise ModelLoadError(f'unknown quantization {options.quantization!r}; expected '
                             + ', '.join(QUANTIZATIONS))
    if options.quantization in TORCHAO_QUANTIZATIONS:
        _check_torchao(options.quantization, device, dtype)
        return None  # applied after loading (_apply_torchao)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f'{options.quantization} quantization needs bitsandbytes, which '
                             f'is not installed ({exc}); pip install bitsandbytes') from None
    if device.type != 'cuda':
        raise ModelLoadError(f'{options.quantization} quantization needs a CUDA device; the '
                             f'device resolved to {device}')
    from transformers import BitsAndBytesConfig
    if options.quantization == '8bit':
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_quant_type='nf4')


def _check_torchao(quantization: str, device: torch.device, dtype: torch.dtype) -> None:
    """Raise ModelLoadError unless torchao can quantize to ``quantization`` here."""
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f'{quantization} quantization needs torchao, which is not '
                             f'installed ({exc}); pip install torchao') from None
    if quantization == 'int4':
        if device.type != 'cuda':
            raise ModelLoadError("int4 quantization needs a CUDA device (torchao's int4 "
                                 f'kernels); the device resolved to {device}; use int8 on '
                                 'the CPU')
        if dtype != torch.bfloat16:
            raise ModelLoadError("int4 quantization computes in bfloat16 (torchao's int4 "
                                 f'kernels); set dtype to bfloat16 or auto, not {dtype}')


def _apply_torchao(model: Any, quantization: str) -> None:
    """Quantize the text decoder's Linear weights (its output projection included) in place.

    Weight-only: weights are stored in 8 or 4 bits and activations keep the model's dtype.
    The vision encoder and the image-to-text connection run once per image and stay as they
    are. int4 uses groups of 128 weights per scale (torchao's tinygemm layout).
    """
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    config = Int8WeightOnlyConfig() if quantization == 'int8' else Int4WeightOnlyConfig(
        group_size=128, int4_packing_format='tile_packed_to_4d')
    try:
        quantize_(model.text_model, config)
    except LOAD_ERRORS + (AssertionError,) as exc:
        raise ModelLoadError(f'torchao {quantization} quantization failed: '
                             f'{type(exc).__name__}: {exc}') from None


def _describe_failure(exc: BaseException, options: ModelOptions, local: bool) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, OSError):  # a library's internal error: its type says what failed
        text = f'{type(exc).__name__}: {text}'
    if options.local_files_only and not local:
        return (f'cannot load {options.model!r} offline (local_files_only): it is not a local '
                f'folder nor in the Hugging Face cache ({text})')
    return f'cannot load {options.model!r}: {text}'


def _quiet_torchao_import() -> None:
    """Keep torchao's import from logging what does not concern this model.

    transformers imports torchao, when it is installed, at every model load (for its
    quantizer registry), and torchao's import logs one line per CUDA-only kernel library it
    cannot load on a machine without CUDA, and torch logs deprecation notes about its enums.
    """
    if not torch.cuda.is_available():
        logging.getLogger('torchao').setLevel(logging.ERROR)
    logging.getLogger('torch.utils._pytree').setLevel(logging.ERROR)


def load_model(options: ModelOptions) -> LoadedModel:
    """Load KOSMOS-2 and its processor as ``options`` say; raise ModelLoadError on failure."""
    _quiet_torchao_import()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if options.attn_implementation not in ATTENTION:
        raise ModelLoadError(f'unknown attention implementation '
                             f'{options.attn_implementation!r}; expected sdpa or eager')
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if options.quantization == 'int4' and (options.dtype or 'auto').strip().lower() == 'auto':
        dtype = torch.bfloat16  # torchao's int4 kernels take bfloat16 activations
    quantization = _quantization_config(options, device, dtype)
    if '\0' in str(options.model):  # before expanduser, which raises ValueError on it
        raise ModelLoadError(f'the model path {_shown(str(options.model))} holds a NUL byte, '
                             'which no file name can')
    source = os.path.expanduser(options.model)
    local = _stat(source) is not None or source.startswith(('/', './', '../', '~'))
    try:
        if local:
            source, revision = str(Path(source)), options.revision
            _check_local_folder(Path(source))
        else:
            revision = _check_hub_model(source, options)
        common = dict(revision=revision, local_files_only=options.local_files_only,
                      cache_dir=options.cache_dir, trust_remote_code=False)
        processor = AutoProcessor.from_pretrained(source, **common)
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=dtype, quantization_config=quantization, use_safetensors=True,
            attn_implementation=options.attn_implementation,
            device_map={'': str(device)} if device.type == 'cuda' else None, **common)
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelLoadError(f'out of memory loading {options.model!r} on {device} as '
                             f'{dtype} with quantization {options.quantization}: '
                             f'{str(exc).splitlines()[0]}') from None
    except ModelLoadError:
        raise
    except LOAD_ERRORS as exc:
        raise ModelLoadError(_describe_failure(exc, options, local)) from None
    _check_config(model.config.to_dict(), options.model)
    if not hasattr(processor, 'post_process_generation'):
        raise ModelLoadError(f'{options.model!r} has a {type(processor).__name__}, not a '
                             'KOSMOS-2 processor')
    if options.quantization in TORCHAO_QUANTIZATIONS:
        _apply_torchao(model, options.quantization)
    model.eval()
    return LoadedModel(model=model, processor=processor, device=device, dtype=dtype,
                       options=replace(options), revision=revision)
