# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The engine equals the reference pipeline: one at a time, with cached features, batched."""

import math
import shutil

import pytest
import torch
from transformers import LogitsProcessorList

from kosmos_ros.datatypes import PixelBox, Query, Task
from kosmos_ros.errors import InferenceError, OutOfMemoryError
from kosmos_ros.images import frame_from_array
from kosmos_ros.model.decoding import InferenceCancelled
from kosmos_ros.model.prompts import build_prompt

from helpers import steer_for  # noqa: I100

NEW_TOKENS = 24


def region_for(image):
    h, w = image.shape[:2]
    return PixelBox(0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h)


def queries_for(image):
    return [
        Query(Task.CAPTION),
        Query(Task.DETAILED_CAPTION),
        Query(Task.FIND, 'the animal'),
        Query(Task.QUESTION, 'What is in the picture?'),
        Query(Task.QUESTION, 'What is [this object]?', (region_for(image),)),
        Query(Task.RAW, '<grounding><phrase> It</phrase> is', (region_for(image),)),
    ]


def run_reference(reference, image, query, processors=(), new_tokens=NEW_TOKENS):
    """Run the model card pipeline, as users run it today."""
    processor, model = reference
    h, w = image.shape[:2]
    prompt = build_prompt(query, w, h)
    bboxes = None
    if query.regions:
        bboxes = [tuple(float(v) for v in (r.x1 / w, r.y1 / h, r.x2 / w, r.y2 / h))
                  for r in query.regions]
        # The processor strips our object tokens' source: give it the bare phrase prompt.
        prompt = prompt.split('<object>')[0] + prompt.split('</object>', 1)[1]
    inputs = processor(text=prompt, images=image, bboxes=bboxes, return_tensors='pt')
    kwargs = {}
    if processors:
        kwargs['logits_processor'] = LogitsProcessorList(processors)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, output_logits=True,
                             return_dict_in_generate=True, **kwargs)
    text = processor.batch_decode(out.sequences, skip_special_tokens=True)[0]
    caption, entities = processor.post_process_generation(text)
    generated = out.sequences[0, inputs['input_ids'].shape[1]:].tolist()
    probs = [float(torch.softmax(step[0].float(), -1)[tok])
             for step, tok in zip(out.logits, generated)]
    return caption, entities, generated, probs


def assert_same(result, expected):
    caption, entities, _, _ = expected
    assert result.text == caption
    assert result.entities() == entities


@pytest.fixture(scope='module')
def engine(model_options):
    """Load an engine of this module's own (not the session's, conftest.py).

    The static decoder fuses the model's query, key and value weights in place (views of one
    tensor): the values stay, but other modules' results on a shared model would then come
    from a different memory layout, and could differ from a fresh model's in the last bits.
    """
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    return GroundingEngine.load(model_options, EngineOptions(max_new_tokens=24))


@pytest.fixture(scope='module')
def frames(photos):
    return {name: frame_from_array(image) for name, image in photos.items()}


@pytest.fixture(scope='module')
def steered_engine(engine):
    steer = steer_for(engine.tokenizer)
    return engine.with_options(logits_processors=(steer,)), steer


@pytest.mark.parametrize('name', ['coffee', 'chelsea', 'astronaut', 'rocket', 'motorcycle_left'])
def test_one_at_a_time_equals_reference(engine, reference, photos, frames, name):
    for query in queries_for(photos[name]):
        expected = run_reference(reference, photos[name], query)
        result = engine.ground(frames[name], query)
        assert_same(result, expected)
        assert result.num_generated_tokens == len(expected[2])


@pytest.mark.parametrize('decoder', ['dynamic', 'static'])
def test_cached_features_and_batches_equal_reference(engine, reference, photos, frames,
                                                     decoder):
    engine = engine.with_options(decoder=decoder)
    names = ['coffee', 'chelsea', 'astronaut', 'motorcycle_left']
    expected = {(n, i): run_reference(reference, photos[n], q)
                for n in names for i, q in enumerate(queries_for(photos[n]))}
    # Cached: one vision pass per frame, then every query one by one.
    for n in names:
        encoded = engine.encode([frames[n]])[0]
        for i, q in enumerate(queries_for(photos[n])):
            assert_same(engine.run([(encoded, q)])[0], expected[(n, i)])
    # Batched: all frames encoded together, all queries of all frames decoded together.
    encoded = engine.encode([frames[n] for n in names])
    requests = [(encoded[k], q) for k, n in enumerate(names)
                for q in queries_for(photos[n])]
    batched = engine.with_options(max_batch_size=len(requests)).run(requests)
    for result, key in zip(batched, [(n, i) for n in names
                                     for i in range(len(queries_for(photos[n])))]):
        assert_same(result, expected[key])


def test_steered_outputs_give_phrases_boxes_and_model_scores(steered_engine, reference, photos,
                                                             frames):
    """Steer generation into phrases with boxes; text, boxes and scores match the reference."""
    engine, steer = steered_engine
    image = photos['coffee']
    h, w = image.shape[:2]
    query = Query(Task.CAPTION)
    caption, entities, generated, probs = run_reference(reference, image, query, [steer])
    result = engine.ground(frames['coffee'], query)
    assert result.text == caption and result.entities() == entities
    names = [p.text for p in result.phrases]
    assert names[:2] == ['a cat', 'two cups']
    cat, cups = result.phrases[0], result.phrases[1]
    assert len(cups.boxes) == 2
    assert result.text[cat.start:cat.end] == 'a cat'
    # Boxes in pixels of the 600x400 frame, on the 32x32 grid.
    box = cat.boxes[0]
    assert box.patch_indices == (44, 863)
    assert (box.pixels.x1, box.pixels.y1, box.pixels.x2, box.pixels.y2) == (
        0.390625 * w, 0.046875 * h, 0.984375 * w, 0.828125 * h)
    # Scores: geometric mean of the reference model's own probabilities of the two tokens.
    cells = [engine.tokenizer.convert_tokens_to_ids(f'<patch_index_{i:04d}>') for i in (44, 863)]
    at = [generated.index(cells[0]), generated.index(cells[1])]
    expected_score = math.sqrt(probs[at[0]] * probs[at[1]])
    assert box.score == pytest.approx(expected_score, rel=1e-4)
    assert 0.0 < box.score < 1.0
    assert cat.score == box.score
    scores = [b.score for p in result.phrases for b in p.boxes]
    assert len(set(scores)) == len(scores), 'scores must come from the model, not a constant'


@pytest.mark.parametrize('decoder', ['dynamic', 'static'])
def test_steered_batches_equal_reference(steered_engine, reference, photos, frames, decoder):
    engine, steer = steered_engine
    engine = engine.with_options(decoder=decoder)
    names = ['coffee', 'chelsea', 'rocket']
    requests, expected = [], []
    for n in names:
        encoded = engine.encode([frames[n]])[0]
        for q in queries_for(photos[n])[:4]:
            requests.append((encoded, q))
            expected.append(run_reference(reference, photos[n], q, [steer]))
    results = engine.with_options(max_batch_size=5).run(requests)
    for result, exp in zip(results, expected):
        assert_same(result, exp)
        assert result.phrases, 'steering must yield phrases'
        generated, probs = exp[2], exp[3]
        first = engine.tokenizer.convert_tokens_to_ids('<patch_index_0044>')
        if first in generated:  # the steered box's score equals the reference probabilities
            last = engine.tokenizer.convert_tokens_to_ids('<patch_index_0863>')
            expected_score = math.sqrt(probs[generated.index(first)] *
                                       probs[generated.index(last)])
            cat = next(p for p in result.phrases if p.text == 'a cat')
            assert cat.boxes[0].score == pytest.approx(expected_score, rel=1e-4)


def test_decoder_option_is_validated(engine):
    with pytest.raises(ValueError, match='unknown decoder'):
        engine.with_options(decoder='turbo')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='needs a CUDA device'):
            engine.with_options(decoder='cuda_graph')
    assert engine.decoder == ('cuda_graph' if engine.device.type == 'cuda' else 'dynamic')


def test_region_boxes_are_scored_by_teacher_forcing(engine, reference, photos, frames):
    processor, model = reference
    image = photos['chelsea']
    query = Query(Task.QUESTION, 'What is [this object]?', (region_for(image),))
    result = engine.ground(frames['chelsea'], query)
    region_phrase = result.phrases[0]
    assert region_phrase.text == 'this object'
    ids, _ = engine.prepare(query, image.shape[1], image.shape[0])
    with torch.no_grad():
        inputs = processor(text=build_prompt(Query(Task.QUESTION, 'What is [this object]?'),
                                             image.shape[1], image.shape[0]),
                           images=image, return_tensors='pt')
        pixel = inputs['pixel_values']
        full = torch.tensor([ids])
        mask = torch.zeros_like(full, dtype=torch.bool)
        mask[0, 2:66] = True
        logits = model(pixel_values=pixel, input_ids=full, attention_mask=torch.ones_like(full),
                       image_embeds_position_mask=mask).logits[0]
    first = engine.tokenizer.convert_tokens_to_ids('<patch_index_0000>')
    positions = [i for i, t in enumerate(ids) if first <= t < first + 1024]
    p = [float(torch.softmax(logits[i - 1].float(), -1)[ids[i]]) for i in positions]
    assert region_phrase.boxes[0].score == pytest.approx(math.sqrt(p[0] * p[1]), rel=1e-3)


def test_timings_and_sizes(engine, frames):
    result = engine.ground(frames['rocket'], Query(Task.CAPTION, max_new_tokens=5))
    t = result.timings
    assert t.preprocess > 0 and t.vision > 0 and t.generate > 0 and t.postprocess > 0
    assert t.total == pytest.approx(t.preprocess + t.vision + t.generate + t.postprocess)
    assert result.image_size == (640, 427)
    assert result.num_generated_tokens <= 5


def test_convenience_methods(engine, frames):
    f = frames['chelsea']
    assert engine.caption(f, max_new_tokens=3).task is Task.CAPTION
    assert engine.caption(f, detailed=True, max_new_tokens=3).task is Task.DETAILED_CAPTION
    assert engine.find(f, 'a cat', max_new_tokens=3).text.startswith('a cat')
    assert engine.ask(f, 'Why?', max_new_tokens=3).text.startswith('Question: Why? Answer:')
    assert engine.raw(f, '<grounding> A', max_new_tokens=3).task is Task.RAW


def test_beam_search_equals_reference(engine, reference, photos, frames):
    processor, model = reference
    image = photos['astronaut']
    beams = engine.with_options(num_beams=3)
    result = beams.ground(frames['astronaut'], Query(Task.CAPTION, max_new_tokens=10))
    inputs = processor(text='<grounding>An image of', images=image, return_tensors='pt')
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=10, num_beams=3)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert result.text == processor.post_process_generation(text)[0]


@pytest.mark.parametrize('decoder', ['dynamic', 'static'])
def test_cancellation_stops_generation(engine, frames, decoder):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    engine = engine.with_options(decoder=decoder)
    with pytest.raises(InferenceCancelled, match='cancelled'):
        engine.ground(frames['coffee'], Query(Task.CAPTION, max_new_tokens=20), should_stop=stop)
    assert len(calls) == 3
    # The next query after a cancelled one is unaffected.
    assert engine.ground(frames['coffee'], Query(Task.CAPTION, max_new_tokens=5)).text == \
        engine.with_options(decoder='dynamic').ground(
            frames['coffee'], Query(Task.CAPTION, max_new_tokens=5)).text


def test_model_failures_become_typed_errors(engine, frames, monkeypatch):
    """Simulated faults (no GPU in CI): out of memory and a crash inside the text model."""
    text_model = engine.model.text_model

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 1 GiB')

    monkeypatch.setattr(text_model, 'forward', oom)
    with pytest.raises(OutOfMemoryError, match='out of memory in generation'):
        engine.ground(frames['coffee'], Query(Task.CAPTION, max_new_tokens=2))

    def broken(*args, **kwargs):
        raise RuntimeError('shape mismatch in attention')

    monkeypatch.setattr(text_model, 'forward', broken)
    with pytest.raises(InferenceError, match='generation failed: RuntimeError: shape mismatch'):
        engine.ground(frames['coffee'], Query(Task.CAPTION, max_new_tokens=2))
    monkeypatch.undo()
    assert engine.ground(frames['coffee'], Query(Task.CAPTION, max_new_tokens=2)).text


def test_fixed_work_with_min_new_tokens_equals_reference(engine, reference, photos, frames):
    """min_new_tokens = max_new_tokens fixes the work, as benchmarks need, like generate."""
    processor, model = reference
    image = photos['rocket']
    fixed = engine.with_options(min_new_tokens=12, max_new_tokens=12)
    result = fixed.ground(frames['rocket'], Query(Task.CAPTION))
    assert result.num_generated_tokens == 12
    inputs = processor(text='<grounding>An image of', images=image, return_tensors='pt')
    with torch.no_grad():
        ids = model.generate(**inputs, min_new_tokens=12, max_new_tokens=12)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert result.text == processor.post_process_generation(text)[0]


def _decode_rows(engine, frames):
    """Return DecodeRows of varied prompts and budgets (1 to 30 tokens) over two frames."""
    from kosmos_ros.model.decoding import DecodeRow
    encoded = engine.encode([frames['coffee'], frames['chelsea']])
    queries = [(0, Query(Task.CAPTION, max_new_tokens=30)),
               (1, Query(Task.FIND, 'the animal', max_new_tokens=1)),
               (0, Query(Task.QUESTION, 'What is [this]?', (PixelBox(10, 20, 300, 200),), 12)),
               (1, Query(Task.DETAILED_CAPTION, max_new_tokens=7))]
    rows = []
    for k, query in queries:
        item = engine._prepared(encoded[k], query)
        rows.append(DecodeRow(item.prompt_ids, item.image_mask, item.encoded.embeds,
                              item.max_new_tokens, item.score_positions))
    return rows


def _three_loops(engine, rows, settings):
    """Decode with the dynamic loop, the host loop and the device loop.

    The host loop over the static cache is forced by a logits processor that changes nothing.
    """
    from dataclasses import replace
    from kosmos_ros.model.decoding import greedy_decode
    static = engine.with_options(decoder='static')

    def identity(input_ids, scores):
        return scores

    with torch.inference_mode():
        dynamic = greedy_decode(engine.model.text_model, rows, settings, engine.device)
        host = greedy_decode(engine.model.text_model, rows,
                             replace(settings, logits_processors=(identity,)), engine.device,
                             static_steps=static._static_step)
        device = greedy_decode(engine.model.text_model, rows, settings, engine.device,
                               static_steps=static._static_step)
    return dynamic, host, device


def _assert_rows_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens
        assert x.token_probs == pytest.approx(y.token_probs, rel=1e-4, abs=1e-7)
        assert x.prompt_probs.keys() == y.prompt_probs.keys()


def test_device_loop_equals_host_loops_with_budgets_and_min_new_tokens(engine, frames):
    from dataclasses import replace
    rows = _decode_rows(engine, frames)
    for min_new in (0, 5):
        settings = replace(engine._settings, min_new_tokens=min_new)
        dynamic, host, device = _three_loops(engine, rows, settings)
        _assert_rows_equal(dynamic, host)
        _assert_rows_equal(dynamic, device)
        assert [len(r.tokens) for r in device] == [30, 1, 12, 7]


def test_device_loop_stops_rows_at_end_of_sequence(engine, frames):
    """Stop rows at a token declared end-of-sequence, in every loop alike.

    A token the model emits mid-sequence becomes end-of-sequence: every loop must stop that
    row there (token included), leave the others running, and agree.
    """
    from dataclasses import replace
    rows = _decode_rows(engine, frames)
    free, _, _ = _three_loops(engine, rows, engine._settings)
    stop_token = free[0].tokens[4]
    first = free[0].tokens.index(stop_token)
    settings = replace(engine._settings, eos_token_id=stop_token)
    dynamic, host, device = _three_loops(engine, rows, settings)
    _assert_rows_equal(dynamic, host)
    _assert_rows_equal(dynamic, device)
    assert device[0].tokens == free[0].tokens[:first + 1]
    for mine, unbounded in zip(device[1:], free[1:]):
        if stop_token in unbounded.tokens:
            assert mine.tokens == unbounded.tokens[:unbounded.tokens.index(stop_token) + 1]
        else:
            assert mine.tokens == unbounded.tokens
    # With min_new_tokens, end-of-sequence is forbidden before that many tokens.
    settings = replace(settings, min_new_tokens=first + 2)
    dynamic, host, device = _three_loops(engine, rows, settings)
    _assert_rows_equal(dynamic, host)
    _assert_rows_equal(dynamic, device)
    assert len(device[0].tokens) > first + 1


def test_fused_qkv_shares_the_model_weights(engine):
    from kosmos_ros.model.static_decode import fused_qkv
    attn = engine.model.text_model.model.layers[0].self_attn
    before = [m.weight.detach().clone() for m in (attn.q_proj, attn.k_proj, attn.v_proj)]
    weight, bias = fused_qkv(attn)
    assert fused_qkv(attn)[0] is weight, 'fusing twice must reuse the fused tensor'
    size = before[0].shape[0]
    for i, module in enumerate((attn.q_proj, attn.k_proj, attn.v_proj)):
        assert torch.equal(module.weight, before[i])
        # A view into the fused tensor: the weights are not stored twice.
        assert module.weight.data_ptr() == weight[i * size].data_ptr()
        if bias is not None:
            assert module.bias.data_ptr() == bias[i * size].data_ptr()


@pytest.mark.parametrize('options', [dict(decoder='static', fuse_qkv=False),
                                     dict(decoder='static', fuse_qkv=True)])
def test_static_decoder_variants_equal_reference(engine, reference, photos, frames, options):
    variant = engine.with_options(**options)
    for name in ('chelsea', 'rocket'):
        for query in queries_for(photos[name])[:4]:
            assert_same(variant.ground(frames[name], query),
                        run_reference(reference, photos[name], query))


@pytest.mark.skipif(not (shutil.which('g++') or shutil.which('clang++')),
                    reason='torch.compile on the CPU needs a C++ compiler')
def test_compiled_step_equals_reference(engine, steered_engine, reference, photos, frames):
    """The torch.compile'd decode step, in the device loop and in the host loop."""
    compiled = engine.with_options(decoder='static', compile_step=True)
    compiled.warm_up()
    assert any(step._compiled for step in compiled._static_steps.values())
    for query in queries_for(photos['coffee'])[:3]:
        assert_same(compiled.ground(frames['coffee'], query),
                    run_reference(reference, photos['coffee'], query))
    steered, steer = steered_engine
    steered = steered.with_options(decoder='static', compile_step=True)
    query = Query(Task.CAPTION)
    assert_same(steered.ground(frames['coffee'], query),
                run_reference(reference, photos['coffee'], query, [steer]))


# -- planner-ready results ------------------------------------------------------------------

INVERTED = ('<phrase> a cat</phrase><object><patch_index_0863><patch_index_0044></object> on'
            '<phrase> a mat</phrase><object><patch_index_0520><patch_index_0530></object>')


def test_inverted_boxes_are_published_with_ordered_corners(engine, reference, photos, frames):
    """The model may name the bottom-right cell first: the box spans both cells, ordered."""
    steer = steer_for(engine.tokenizer, INVERTED)
    steered = engine.with_options(logits_processors=(steer,))
    image = photos['coffee']
    h, w = image.shape[:2]
    result = steered.ground(frames['coffee'], Query(Task.CAPTION))
    expected = run_reference(reference, image, Query(Task.CAPTION), [steer])
    assert_same(result, expected)  # the reference's raw tuples are kept in .normalized
    cat = next(p for p in result.phrases if p.text == 'a cat').boxes[0]
    assert cat.patch_indices == (863, 44)
    assert cat.normalized[0] > cat.normalized[2], 'the reference gives an inverted box'
    b = cat.pixels
    assert (b.x1, b.y1, b.x2, b.y2) == (12.5 / 32 * w, 1.5 / 32 * h, 31.5 / 32 * w,
                                        26.5 / 32 * h)
    assert b.width > 0 and b.height > 0
    mat = next(p for p in result.phrases if p.text == 'a mat').boxes[0]
    assert mat.pixels.x1 == pytest.approx(8 / 32 * w) and mat.pixels.x2 == pytest.approx(
        19 / 32 * w), 'same-row corners span whole cells either way'
    for box in (b for p in result.phrases for b in p.boxes):
        assert box.pixels.x2 >= box.pixels.x1 and box.pixels.y2 >= box.pixels.y1


def test_caller_regions_are_marked_given_and_are_not_detections(engine, photos, frames):
    image = photos['chelsea']
    query = Query(Task.QUESTION, 'What is [this object]?', (region_for(image),))
    result = engine.ground(frames['chelsea'], query)
    region = result.phrases[0]
    assert region.text == 'this object' and region.given and region.boxes[0].given
    assert all(not p.given for p in result.phrases[1:])
    assert all(not box.given for _, _, _, box in result.detections())
    assert [p for p, _, _, _ in result.detections()].count(0) == 0
    raw = engine.ground(frames['chelsea'], Query(
        Task.RAW, '<grounding><phrase> It</phrase><object><patch_index_0863>'
        '<patch_index_0044></object> is'))
    assert raw.phrases[0].given and not list(raw.detections())
    assert raw.phrases[0].boxes[0].pixels.width > 0  # the caller's inverted box, ordered too


def test_detections_honour_min_score(steered_engine, frames):
    engine, _ = steered_engine
    result = engine.ground(frames['coffee'], Query(Task.CAPTION))
    scores = sorted(box.score for _, _, _, box in result.detections())
    assert len(scores) >= 3
    middle = scores[len(scores) // 2]
    kept = [box.score for _, _, _, box in result.detections(middle)]
    assert kept and min(kept) >= middle and len(kept) < len(scores)


@pytest.mark.parametrize('interrupt', ['<unk>', '<s>', '<pad>', '<mask>'])
def test_box_scores_belong_to_their_own_tokens(engine, frames, interrupt):
    """A special token inside a box's tokens, and the same cells twice: each box its own."""
    target = (f'<phrase> a cat</phrase><object><patch_index_0044>{interrupt}<patch_index_0863>'
              '</object> and<phrase> a cat</phrase><object><patch_index_0044>'
              '<patch_index_0863></object> on')
    steer = steer_for(engine.tokenizer, target)
    steered = engine.with_options(logits_processors=(steer,))
    result = steered.ground(frames['coffee'], Query(Task.CAPTION))
    cats = [p for p in result.phrases if p.text == 'a cat']
    assert len(cats) == 2, result.raw_text
    first, second = cats[0].boxes[0], cats[1].boxes[0]
    assert first.score > 0.0, 'a special token inside the box zeroed its score'
    assert second.score > 0.0
    assert first.score != second.score, 'one box took the other box score'


def test_answer_holds_the_generated_words_only(engine, frames):
    result = engine.ground(frames['coffee'], Query(Task.QUESTION, 'What is this?'))
    assert result.text.startswith('Question: What is this? Answer:')
    assert 'Question' not in result.answer and result.text.endswith(result.answer)
    caption = engine.ground(frames['coffee'], Query(Task.CAPTION))
    assert caption.text.startswith('An image of') and not caption.answer.startswith('An image')
