# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Model loading: options, safetensors only, no remote code, offline, typed failures."""

import json
import shutil
import socket
import sys

import pytest
import torch

from kosmos_ros.engine import GroundingEngine
from kosmos_ros.errors import ModelLoadError
from kosmos_ros.loading import load_model, ModelOptions, resolve_device, resolve_dtype


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_loads_local_folder_with_dtypes_and_attention(tiny_model_dir):
    for dtype, expected in (('auto', torch.float32), ('bfloat16', torch.bfloat16),
                            ('float32', torch.float32)):
        for attention in ('sdpa', 'eager'):
            loaded = load_model(ModelOptions(model=str(tiny_model_dir), dtype=dtype,
                                             attn_implementation=attention, device='cpu',
                                             local_files_only=True))
            assert loaded.dtype == expected
            assert next(loaded.model.parameters()).dtype == expected
            assert loaded.model.config._attn_implementation == attention
            assert loaded.device == torch.device('cpu')
            assert 'on cpu' in loaded.describe()


def test_pickle_only_folder_is_refused(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / 'pickled')
    from safetensors.torch import load_file
    state = load_file(folder / 'model.safetensors')
    (folder / 'model.safetensors').unlink()
    torch.save(state, folder / 'pytorch_model.bin')
    with pytest.raises(ModelLoadError, match=r'only pickle checkpoints \(pytorch_model.bin\)'):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


def test_folder_problems_are_named(tiny_model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match='is not a folder'):
        load_model(ModelOptions(model=str(tmp_path / 'missing')))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ModelLoadError, match='has no config.json'):
        load_model(ModelOptions(model=str(empty)))
    folder = copy_model(tiny_model_dir, tmp_path / 'noweights')
    (folder / 'model.safetensors').unlink()
    with pytest.raises(ModelLoadError, match=r'has no weights \(\*.safetensors\)'):
        load_model(ModelOptions(model=str(folder)))


def test_remote_code_and_other_models_are_refused(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / 'remote')
    config = json.loads((folder / 'config.json').read_text())
    config['auto_map'] = {'AutoModel': 'evil.Model'}
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match='never enables trust_remote_code'):
        load_model(ModelOptions(model=str(folder)))
    config.pop('auto_map')
    config['model_type'] = 'llama'
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="'llama' model, not KOSMOS-2"):
        load_model(ModelOptions(model=str(folder)))


def test_offline_mode_makes_no_network_attempt(monkeypatch, tmp_path):
    attempts = []
    real_connect = socket.socket.connect

    def record(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, 'connect', record)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    with pytest.raises(ModelLoadError, match='cannot load .* offline .*local_files_only'):
        load_model(ModelOptions(model='microsoft/kosmos-2-patch14-224', local_files_only=True,
                                cache_dir=str(tmp_path / 'empty_cache')))
    assert attempts == []


@pytest.mark.parametrize('options, message', [
    (dict(device='cuda'), 'CUDA is not available'),
    (dict(device='cuda:3'), 'CUDA is not available'),
    (dict(device='tpu'), "unknown device 'tpu'"),
    (dict(dtype='float8'), "unknown dtype 'float8'"),
    (dict(quantization='3bit'), "unknown quantization '3bit'"),
    (dict(quantization='8bit', device='cpu'), '8bit quantization needs a CUDA device'),
    (dict(quantization='4bit', device='cpu'), '4bit quantization needs a CUDA device'),
    (dict(attn_implementation='flash'), "unknown attention implementation 'flash'"),
])
def test_bad_options_are_refused(tiny_model_dir, options, message):
    if 'cuda' in options.get('device', '') and torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(ModelLoadError, match=message):
        load_model(ModelOptions(model=str(tiny_model_dir), **options))


def test_missing_bitsandbytes_is_named(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)  # makes the import fail
    with pytest.raises(ModelLoadError, match='needs bitsandbytes, which is not installed'):
        load_model(ModelOptions(model=str(tiny_model_dir), quantization='4bit'))


def test_out_of_memory_while_loading_is_reported(tiny_model_dir, monkeypatch):
    """Simulated: CUDA's out-of-memory error raised by from_pretrained (no GPU in CI)."""
    import transformers

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, 'from_pretrained', oom)
    with pytest.raises(ModelLoadError, match='out of memory loading .*Tried to allocate'):
        load_model(ModelOptions(model=str(tiny_model_dir)))


def test_device_and_dtype_resolution():
    assert resolve_device('cpu') == torch.device('cpu')
    auto = resolve_device('auto')
    assert auto.type == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert resolve_dtype('auto', torch.device('cpu')) == torch.float32
    assert resolve_dtype('auto', torch.device('cuda:0')) == torch.float16
    assert resolve_dtype('bfloat16', torch.device('cpu')) == torch.bfloat16


def test_engine_load_and_close(model_options):
    engine = GroundingEngine.load(model_options)
    assert engine.describe().startswith(model_options.model)
    engine.close()
    assert engine.model is None
