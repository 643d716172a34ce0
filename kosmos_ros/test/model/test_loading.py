# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Model loading: options, safetensors only, no remote code, offline, typed failures."""

from dataclasses import replace
import json
import os
import shutil
import socket
import sys

import pytest
import torch

from kosmos_ros.errors import ModelLoadError
from kosmos_ros.model.engine import GroundingEngine
from kosmos_ros.model.loading import load_model, ModelOptions, resolve_device, resolve_dtype

from helpers import optional_module  # noqa: I100


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


def test_paths_that_cannot_be_examined_are_named(tmp_path):
    long_name = 'k' * 300  # over the 255 bytes a file name may have
    loop = tmp_path / 'loop'
    loop.symlink_to(loop)
    cases = [
        (long_name, r"model path 'k{40}\.\.\.k{20}' is too long \(300 bytes, its longest name "
                    r'300 bytes; most file systems allow 255 bytes per name'),
        (str(tmp_path / long_name / 'model'), r'is too long \(\d+ bytes, its longest name 300'),
        ('/' + '/'.join(['d' * 200] * 25), r'is too long \(5025 bytes, its longest name 200 '),
        ('~/' + long_name, 'its longest name 300 bytes'),
        ('a\0b', r"the model path 'a\\x00b' holds a NUL byte, which no file name can"),
        (str(tmp_path / 'a\0b'), 'holds a NUL byte'),
        ('~a\0b/model', 'holds a NUL byte'),
        (str(loop), r"cannot examine the model path '.*loop': Too many levels of symbolic"),
        (str(loop / 'model'), 'Too many levels of symbolic links'),
    ]
    for name, message in cases:
        with pytest.raises(ModelLoadError, match=message):
            load_model(ModelOptions(model=name, local_files_only=True, device='cpu'))


def test_folders_that_may_not_be_searched_are_named(tiny_model_dir, tmp_path):
    locked = tmp_path / 'locked'
    model = copy_model(tiny_model_dir, locked / 'model')
    locked.chmod(0o600)
    if os.access(model, os.F_OK):  # root (CAP_DAC_OVERRIDE): folder permissions mean nothing
        locked.chmod(0o700)
        pytest.skip('this user may search any folder')
    try:  # the model's parent may not be searched
        with pytest.raises(ModelLoadError, match=r"cannot examine the model path '.*model': "
                                                 'Permission denied'):
            load_model(ModelOptions(model=str(model), local_files_only=True, device='cpu'))
        locked.chmod(0o700)
        model.chmod(0o600)  # the model folder itself may not be searched
        with pytest.raises(ModelLoadError, match=r"cannot examine the model path '.*model/"
                                                 r"config\.json': Permission denied"):
            load_model(ModelOptions(model=str(model), local_files_only=True, device='cpu'))
    finally:
        locked.chmod(0o700)
        model.chmod(0o700)


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
    (dict(quantization='int4', device='cpu'), 'int4 quantization needs a CUDA device'),
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


def test_missing_torchao_is_named(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, 'torchao', None)  # makes the import fail
    with pytest.raises(ModelLoadError, match='int8 quantization needs torchao, which is not'):
        load_model(ModelOptions(model=str(tiny_model_dir), device='cpu', quantization='int8'))


def test_int8_weight_only_quantizes_the_text_decoder_and_answers_alike(tiny_model_dir,
                                                                       photos):
    """Int8 through torchao on the CPU: decoder weights in 8 bits, the vision encoder not."""
    optional_module('torchao', 'tools/bootstrap.py installs it where it can')
    from kosmos_ros.datatypes import Query, Task
    from kosmos_ros.images import frame_from_array
    from kosmos_ros.model.engine import EngineOptions

    plain = load_model(ModelOptions(model=str(tiny_model_dir), device='cpu'))
    quantized = load_model(ModelOptions(model=str(tiny_model_dir), device='cpu',
                                        quantization='int8'))
    text = quantized.model.text_model
    weights = [m.weight for m in text.modules() if isinstance(m, torch.nn.Linear)]
    assert weights and all(type(w).__name__ == 'Int8Tensor' for w in weights)
    assert all(type(m.weight) is torch.nn.Parameter for m in quantized.model.vision_model.modules()
               if isinstance(m, torch.nn.Linear))
    assert 'quantization int8' in quantized.describe()
    ids = torch.arange(5, 37).unsqueeze(0)
    with torch.inference_mode():
        a = plain.model.text_model(input_ids=ids).logits
        b = text(input_ids=ids).logits
    assert float((a - b).abs().max()) < 0.05 * float(a.abs().max())
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    frame = frame_from_array(photos['coffee'])
    answers = [GroundingEngine(m, EngineOptions(max_new_tokens=12)).ground(
        frame, Query(Task.CAPTION)).text for m in (plain, quantized)]
    assert answers[0] == answers[1]


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


def test_an_engine_without_weights_reads_prompts_as_the_loaded_one_and_runs_nothing(
        model_options):
    """``weights=False`` (``kosmos_eval coco --run``): the modules on ``meta``, no weights."""
    from kosmos_ros.datatypes import Query, Task
    from kosmos_ros.errors import InferenceError
    from kosmos_ros.images import Frame
    import numpy as np

    loaded = GroundingEngine.load(model_options)
    text = GroundingEngine.load(replace(model_options, quantization='4bit', device='cuda'),
                                weights=False)  # device and quantization matter to no weight
    assert text.loaded.text_only  # and not one weight in memory:
    assert all(p.device.type == 'meta' for p in text.model.parameters())
    assert text.describe().endswith('(processor and configuration only, no weights)')
    for phrase in ('a cat', '  A  Cat ', '＜s＞ a ＣＵＰ', 'the\x07dog', '<phrase>x</phrase>',
                   'caf\u00e9 au lait', '\u0627\u0644\u0642\u0637'):
        assert text.read_phrase(phrase) == loaded.read_phrase(phrase)
        query = Query(Task.FIND, phrase)
        assert text.prepare(query, 640, 480) == loaded.prepare(query, 640, 480)
    frame = Frame(np.zeros((32, 32, 3), np.uint8), 'rgb')
    with pytest.raises(InferenceError, match='loaded to read prompts, it runs nothing'):
        text.ground(frame, Query(Task.CAPTION))
    loaded.close()


# Damaged and hostile model folders: copies of the tiny model with one thing changed.

def torch_load_spy(monkeypatch):
    """Make torch.load fail the test: nothing may unpickle weights, not even weights_only."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'torch.load was called on {args[:1]}')

    monkeypatch.setattr(torch, 'load', refuse)


def shard_model(folder, first_shard):
    """Split model.safetensors into two shards listed by model.safetensors.index.json.

    The first shard is written at ``folder / first_shard`` (a pickle if it ends in .bin; the
    name sorts first, so transformers opens it first, with torch.load), the second at
    ``model-00002-of-00002.safetensors``.
    """
    from safetensors.torch import load_file, save_file
    state = load_file(folder / 'model.safetensors')
    (folder / 'model.safetensors').unlink()
    names = sorted(state)
    first = {k: state[k] for k in names[:len(names) // 2]}
    rest = {k: state[k] for k in names[len(names) // 2:]}
    if first_shard.endswith('.bin'):
        torch.save(first, folder / first_shard)
    else:
        save_file(first, folder / first_shard, metadata={'format': 'pt'})
    save_file(rest, folder / 'model-00002-of-00002.safetensors', metadata={'format': 'pt'})
    weight_map = dict.fromkeys(first, first_shard)
    weight_map.update(dict.fromkeys(rest, 'model-00002-of-00002.safetensors'))
    size = sum(t.numel() * t.element_size() for t in state.values())
    (folder / 'model.safetensors.index.json').write_text(
        json.dumps({'metadata': {'total_size': size}, 'weight_map': weight_map}))
    return folder


def hub_cache(folder, cache, repo='kosmos-tests/tiny'):
    """Lay ``folder`` out as the Hugging Face cache holds a downloaded repo; return its id."""
    commit = '0123456789abcdef0123456789abcdef01234567'
    root = cache / ('models--' + repo.replace('/', '--'))
    shutil.copytree(folder, root / 'snapshots' / commit)
    (root / 'refs').mkdir()
    (root / 'refs' / 'main').write_text(commit)
    return repo


def test_sharded_safetensors_load_from_a_folder_and_the_cache(tiny_model_dir, tmp_path,
                                                              monkeypatch):
    torch_load_spy(monkeypatch)
    folder = shard_model(copy_model(tiny_model_dir, tmp_path / 'sharded'),
                         'model-00001-of-00002.safetensors')
    reference = load_model(ModelOptions(model=str(tiny_model_dir), local_files_only=True))
    for options in (ModelOptions(model=str(folder), local_files_only=True),
                    ModelOptions(model=hub_cache(folder, tmp_path / 'cache'),
                                 cache_dir=str(tmp_path / 'cache'), local_files_only=True)):
        loaded = load_model(options)
        for (name, a), (_, b) in zip(loaded.model.state_dict().items(),
                                     reference.model.state_dict().items()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize('text, message', [
    ('[1, 2]', 'config.json holds an array, not a JSON object'),
    ('"kosmos-2"', 'config.json holds a string, not a JSON object'),
    ('{"model_type": "kosmos-2",', 'config.json is not valid JSON: Expecting'),
    ('[' * 100_000, 'config.json is not valid JSON'),
])
def test_config_that_is_not_a_json_object_is_refused(tiny_model_dir, tmp_path, text, message):
    folder = copy_model(tiny_model_dir, tmp_path / 'config')
    (folder / 'config.json').write_text(text)
    with pytest.raises(ModelLoadError, match=message):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


def test_config_that_is_not_utf8_is_refused(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / 'latin1')
    config = json.loads((folder / 'config.json').read_text())
    config['comment'] = 'Modèle'
    text = json.dumps(config, ensure_ascii=False)
    (folder / 'config.json').write_bytes(text.encode('latin-1'))
    with pytest.raises(ModelLoadError, match='config.json is not UTF-8 text: byte 0xe8 at'):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


@pytest.mark.parametrize('corrupt, message', [
    (lambda data: data[:len(data) // 2], 'incomplete metadata, file not fully covered'),
    (lambda data: b'\xff' * 8 + data[8:], 'header too large'),
    (lambda data: data[:8] + b'[' + data[9:], 'invalid JSON in header'),
    (lambda data: b'', 'header too small'),
])
def test_corrupt_safetensors_are_refused(tiny_model_dir, tmp_path, corrupt, message):
    folder = copy_model(tiny_model_dir, tmp_path / 'corrupt')
    weights = folder / 'model.safetensors'
    weights.write_bytes(corrupt(weights.read_bytes()))
    with pytest.raises(ModelLoadError, match=f'model.safetensors is not a valid safetensors '
                                             f'file: .*{message}'):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


@pytest.mark.parametrize('through', ['folder', 'hub cache'])
def test_weight_map_naming_a_pickle_shard_is_refused_unopened(tiny_model_dir, tmp_path,
                                                              monkeypatch, through):
    torch_load_spy(monkeypatch)
    folder = shard_model(copy_model(tiny_model_dir, tmp_path / 'mixed'),
                         'model-00001-of-00002.bin')
    options = ModelOptions(model=str(folder), local_files_only=True)
    if through == 'hub cache':
        cache = tmp_path / 'cache'
        options = replace(options, model=hub_cache(folder, cache), cache_dir=str(cache))
    message = r"weight_map\) names the pickle checkpoint 'model-00001-of-00002.bin'; kosmos_ros"
    with pytest.raises(ModelLoadError, match=message + ' loads safetensors only'):
        load_model(options)


def test_transformers_weights_naming_a_pickle_is_refused_unopened(tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    torch_load_spy(monkeypatch)
    folder = copy_model(tiny_model_dir, tmp_path / 'explicit')
    from safetensors.torch import load_file
    torch.save(load_file(folder / 'model.safetensors'), folder / 'adapter_model.bin')
    config = json.loads((folder / 'config.json').read_text())
    config['transformers_weights'] = 'adapter_model.bin'
    (folder / 'config.json').write_text(json.dumps(config))
    message = r"\(transformers_weights\) names the pickle checkpoint 'adapter_model.bin'"
    with pytest.raises(ModelLoadError, match=message):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


@pytest.mark.parametrize('shard, message', [
    ('../outside.safetensors', "names '../outside.safetensors', which is not a plain file name"),
    ('ABSOLUTE', 'which is not a plain file name inside the model folder'),
    ('sub/model-00001-of-00002.safetensors', 'which is not a plain file name'),
])
def test_weight_map_naming_a_file_outside_the_folder_is_refused(tiny_model_dir, tmp_path,
                                                                shard, message):
    folder = copy_model(tiny_model_dir, tmp_path / 'models' / 'escape')
    if shard == 'ABSOLUTE':
        shard = str(tmp_path / 'elsewhere.safetensors')
    (folder / 'sub').mkdir()
    shard_model(folder, shard)  # writes a valid shard there: the old code loaded it
    with pytest.raises(ModelLoadError, match=message):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


def test_weight_map_naming_a_missing_shard_is_refused(tiny_model_dir, tmp_path):
    folder = shard_model(copy_model(tiny_model_dir, tmp_path / 'missing'),
                         'model-00001-of-00002.safetensors')
    (folder / 'model-00002-of-00002.safetensors').unlink()
    with pytest.raises(ModelLoadError, match="has no file 'model-00002-of-00002.safetensors'"):
        load_model(ModelOptions(model=str(folder), local_files_only=True))


def test_processor_files_of_the_wrong_shape_are_refused(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / 'processor')
    (folder / 'processor_config.json').write_text('[]')
    with pytest.raises(ModelLoadError, match="processor': AttributeError: 'list' object"):
        load_model(ModelOptions(model=str(folder), local_files_only=True))
