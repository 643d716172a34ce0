# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Batched greedy decoding for KOSMOS-2 that gives each row what it would get alone.

Why not ``model.generate`` on a left-padded batch: KOSMOS-2's text model derives position ids
from the tokens, skipping padding, during the prompt pass, but counts the whole cache length
(padding included) for each generated token. A padded row therefore sees shifted positions and
generates something else than it would alone. This loop passes explicit position ids that
follow the reference's own rule for an unpadded row, so batched, cached and one-at-a-time
results are the same tokens.

It also records, for each generated token, the probability the model gave it (softmax of the
raw logits, before any logits processor), and the probabilities of chosen prompt tokens (the
location tokens of given regions), from which the engine scores boxes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import inspect
from typing import Any, Callable, Sequence

import torch

from kosmos_ros.errors import InferenceCancelled

__all__ = ['beam_decode', 'DecodedRow', 'DecodeRow', 'DecodeSettings', 'greedy_decode',
           'InferenceCancelled']


@dataclass
class DecodeRow:
    """One sequence to continue.

    Attributes:
        prompt_ids: the full prompt (BOS, image placeholders, text), unpadded.
        image_mask: True at the image placeholder positions of ``prompt_ids``.
        image_embeds: (num_image_tokens, hidden) features of the row's image.
        max_new_tokens: generation budget of this row.
        score_positions: prompt positions whose token probability to report.
    """

    prompt_ids: list[int]
    image_mask: list[bool]
    image_embeds: torch.Tensor
    max_new_tokens: int
    score_positions: list[int] = field(default_factory=list)


@dataclass
class DecodedRow:
    """Generated tokens of one row (end-of-sequence included) and probabilities."""

    tokens: list[int]
    token_probs: list[float]
    prompt_probs: dict[int, float]


@dataclass(frozen=True)
class DecodeSettings:
    """Token ids and options the loop needs."""

    eos_token_id: int
    pad_token_id: int
    padding_idx: int
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    logits_processors: tuple[Any, ...] = ()


def cache_argument(text_model: Any) -> str:
    """Name of the KV-cache argument of the text model (``cache`` from transformers 5.24)."""
    params = inspect.signature(text_model.forward).parameters
    return 'cache' if 'cache' in params else 'past_key_values'


def _processors(settings: DecodeSettings, prompt_len: int, device: torch.device) -> list[Any]:
    from transformers import MinNewTokensLengthLogitsProcessor, NoRepeatNGramLogitsProcessor

    procs: list[Any] = []
    if settings.min_new_tokens > 0:
        # The end-of-sequence id as a tensor on the logits' device (an int stays on the CPU).
        procs.append(MinNewTokensLengthLogitsProcessor(
            prompt_length_to_skip=prompt_len, min_new_tokens=settings.min_new_tokens,
            eos_token_id=torch.tensor([settings.eos_token_id], device=device)))
    if settings.no_repeat_ngram_size > 0:
        procs.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    procs.extend(settings.logits_processors)
    return procs


StaticProvider = Callable[[int, int], Any]


@dataclass
class _Prompt:
    """The batch after its prompt pass: padded ids and attention, next-token logits, cache."""

    ids: torch.Tensor
    attention: torch.Tensor
    lengths: list[int]
    width: int
    logits: torch.Tensor
    cache: Any
    prompt_probs: list[dict[int, float]]


def _prompt_pass(text_model: Any, rows: Sequence[DecodeRow], settings: DecodeSettings,
                 device: torch.device) -> _Prompt:
    """Left-pad the prompts, run them through the model once, keep the logits needed."""
    batch = len(rows)
    lengths = [len(r.prompt_ids) for r in rows]
    width = max(lengths)
    pidx = settings.padding_idx
    ids = torch.full((batch, width), settings.pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    image_mask = torch.zeros((batch, width), dtype=torch.bool)
    for b, row in enumerate(rows):
        offset = width - lengths[b]
        ids[b, offset:] = torch.tensor(row.prompt_ids, dtype=torch.long)
        attention[b, offset:] = 1
        image_mask[b, offset:] = torch.tensor(row.image_mask, dtype=torch.bool)
    # Reference rule: positions count non-padding tokens, starting after padding_idx.
    real = ids.ne(pidx).long()
    positions = torch.cumsum(real, dim=1) * real + pidx
    # Logits to keep: the last position, and the ones before each scored prompt token.
    keep = sorted({width - 1} | {width - lengths[b] + p - 1
                                 for b, r in enumerate(rows) for p in r.score_positions})
    keep_index = {p: i for i, p in enumerate(keep)}
    embeds = torch.stack([r.image_embeds for r in rows]).to(device)
    ids, attention = ids.to(device), attention.to(device)
    out = text_model(input_ids=ids, attention_mask=attention, image_embeds=embeds,
                     image_embeds_position_mask=image_mask.to(device),
                     position_ids=positions.to(device), use_cache=True,
                     logits_to_keep=torch.tensor(keep, device=device))
    logits_all = out.logits.float()
    prompt_probs: list[dict[int, float]] = [{} for _ in rows]
    if len(keep) > 1:
        logp = torch.log_softmax(logits_all, dim=-1)
        for b, row in enumerate(rows):
            offset = width - lengths[b]
            for p in row.score_positions:
                k = keep_index[offset + p - 1]
                prompt_probs[b][p] = float(logp[b, k, row.prompt_ids[p]].exp())
    cache = out.cache if hasattr(out, 'cache') else out.past_key_values
    return _Prompt(ids, attention, lengths, width, logits_all[:, keep_index[width - 1], :],
                   cache, prompt_probs)


def greedy_decode(text_model: Any, rows: Sequence[DecodeRow], settings: DecodeSettings,
                  device: torch.device,
                  should_stop: Callable[[], bool] | None = None,
                  static_steps: StaticProvider | None = None) -> list[DecodedRow]:
    """Continue every row greedily; rows may have different prompt lengths and budgets.

    With ``static_steps`` (a function of batch size and sequence length returning a
    :class:`~kosmos_ros.model.static_decode.StaticStep`), tokens after the first are decoded on a
    preallocated cache (and a CUDA graph on CUDA) instead of the model's forward pass. Then,
    unless a Python logits processor (``no_repeat_ngram_size``, ``logits_processors``) needs
    the tokens on the host at every step, the whole loop runs on the device
    (:func:`_device_loop`); both loops give the same tokens and probabilities.
    """
    prompt = _prompt_pass(text_model, rows, settings, device)
    max_steps = max((r.max_new_tokens for r in rows), default=0)
    static = None
    if static_steps is not None and max_steps > 1:
        static = static_steps(len(rows), prompt.width + max_steps)
        static.load_prompt(prompt.cache, prompt.attention)
        if not settings.no_repeat_ngram_size and not settings.logits_processors:
            static.loop_begin(prompt.logits, prompt.lengths, prompt.width,
                              [r.max_new_tokens for r in rows], settings.eos_token_id,
                              settings.pad_token_id, settings.padding_idx,
                              settings.min_new_tokens)
            tokens, probs = _device_loop(static, max_steps, device, should_stop)
            return [DecodedRow(tokens[b], probs[b], prompt.prompt_probs[b])
                    for b in range(len(rows))]
    tokens, probs = _host_loop(text_model, rows, settings, device, prompt, static, max_steps,
                               should_stop)
    return [DecodedRow(tokens[b], probs[b], prompt.prompt_probs[b]) for b in range(len(rows))]


def _host_loop(text_model: Any, rows: Sequence[DecodeRow], settings: DecodeSettings,
               device: torch.device, prompt: _Prompt, static: Any, max_steps: int,
               should_stop: Callable[[], bool] | None
               ) -> tuple[list[list[int]], list[list[float]]]:
    """Decode with every token back on the host, for Python logits processors."""
    batch, width, pad, pidx = len(rows), prompt.width, settings.pad_token_id, \
        settings.padding_idx
    processors = _processors(settings, width, device)
    cache_arg = cache_argument(text_model)
    budgets = torch.tensor([r.max_new_tokens for r in rows], device=device)
    done = budgets <= 0
    tokens: list[list[int]] = [[] for _ in rows]
    probs: list[list[float]] = [[] for _ in rows]
    sequence, attention, logits, cache = prompt.ids, prompt.attention, prompt.logits, \
        prompt.cache
    cache_lengths = torch.tensor(prompt.lengths, device=device)
    step = 0
    while step < max_steps and not bool(done.all()):
        if should_stop is not None and should_stop():
            raise InferenceCancelled('cancelled during generation')
        scores = logits
        for proc in processors:
            scores = proc(sequence, scores)
        next_tokens = torch.argmax(scores, dim=-1)
        next_tokens = torch.where(done, torch.full_like(next_tokens, pad), next_tokens)
        chosen = torch.log_softmax(logits, dim=-1).gather(1, next_tokens[:, None])[:, 0].exp()
        next_list, chosen_list, done_list = (next_tokens.tolist(), chosen.tolist(),
                                             done.tolist())
        for b in range(batch):
            if not done_list[b]:
                tokens[b].append(next_list[b])
                probs[b].append(chosen_list[b])
        step += 1
        done = done | next_tokens.eq(settings.eos_token_id) | (budgets <= step)
        sequence = torch.cat([sequence, next_tokens[:, None]], dim=1)
        if bool(done.all()) or step >= max_steps:
            break
        cache_lengths = cache_lengths + 1
        # Reference rule for one token: (tokens so far + 1) unless it is padding.
        step_pos = (cache_lengths * next_tokens.ne(pidx).long() + pidx)[:, None]
        if static is not None:
            logits = static(next_tokens, step_pos[:, 0], width + step - 1).float()
            continue
        attention = torch.cat([attention, torch.ones((batch, 1), dtype=attention.dtype,
                                                     device=device)], dim=1)
        out = text_model(input_ids=next_tokens[:, None], attention_mask=attention,
                         position_ids=step_pos, use_cache=True, logits_to_keep=1,
                         **{cache_arg: cache})
        logits = out.logits[:, -1, :].float()
        cache = out.cache if hasattr(out, 'cache') else out.past_key_values
    return tokens, probs


# How many steps the host may run ahead of the "all rows done" flag it has read (CUDA).
LOOKAHEAD = 3


def _device_loop(static: Any, max_steps: int, device: torch.device,
                 should_stop: Callable[[], bool] | None
                 ) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy loop kept on the device (see :meth:`StaticStep.loop_step`).

    On CUDA the host never waits for a step it has just launched: each step's "all done" flag
    is copied to pinned memory behind an event, and the host reads the flag of the step
    ``LOOKAHEAD`` launches back. A row that is done records nothing more, so the few steps
    run after every row has finished change no result.
    """
    pending: deque[tuple[Any, torch.Tensor]] = deque()
    cuda = device.type == 'cuda'
    flags = (torch.zeros(LOOKAHEAD + 1, dtype=torch.bool, pin_memory=True) if cuda else None)
    for step in range(max_steps):
        if should_stop is not None and should_stop():
            raise InferenceCancelled('cancelled during generation')
        all_done = static.loop_step(decode=step < max_steps - 1)
        if not cuda:
            if bool(all_done):
                break
            continue
        slot = flags[step % (LOOKAHEAD + 1)]
        slot.copy_(all_done[0], non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        pending.append((event, slot))
        if len(pending) > LOOKAHEAD:
            event, slot = pending.popleft()
            event.synchronize()
            if bool(slot):
                break
    return static.loop_results()


def beam_decode(model: Any, row: DecodeRow, settings: DecodeSettings, num_beams: int,
                device: torch.device) -> DecodedRow:
    """Beam search through ``generate`` (one row: no padding, so positions are right).

    Token probabilities come from one teacher-forced pass over the chosen sequence.
    """
    ids = torch.tensor([row.prompt_ids], device=device)
    mask = torch.tensor([row.image_mask], device=device)
    embeds = row.image_embeds[None].to(device)
    kwargs: dict[str, Any] = dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), image_embeds=embeds,
        image_embeds_position_mask=mask, max_new_tokens=row.max_new_tokens,
        num_beams=num_beams, do_sample=False, eos_token_id=settings.eos_token_id,
        pad_token_id=settings.pad_token_id)
    if settings.min_new_tokens:
        kwargs['min_new_tokens'] = settings.min_new_tokens
    if settings.no_repeat_ngram_size:
        kwargs['no_repeat_ngram_size'] = settings.no_repeat_ngram_size
    if settings.logits_processors:
        from transformers import LogitsProcessorList
        kwargs['logits_processor'] = LogitsProcessorList(settings.logits_processors)
    sequence = model.generate(**kwargs)[0]
    generated = sequence[len(row.prompt_ids):].tolist()
    if settings.eos_token_id in generated:
        generated = generated[:generated.index(settings.eos_token_id) + 1]
    full = torch.tensor([row.prompt_ids + generated], device=device)
    pidx = settings.padding_idx
    real = full.ne(pidx).long()
    positions = torch.cumsum(real, dim=1) * real + pidx
    full_mask = torch.zeros_like(full, dtype=torch.bool)
    full_mask[0, :len(row.image_mask)] = mask[0]
    out = model.text_model(input_ids=full, attention_mask=torch.ones_like(full),
                           image_embeds=embeds, image_embeds_position_mask=full_mask,
                           position_ids=positions, use_cache=False)
    logp = torch.log_softmax(out.logits[0].float(), dim=-1)
    start = len(row.prompt_ids)
    token_probs = [float(logp[start + i - 1, t].exp()) for i, t in enumerate(generated)]
    prompt_probs = {p: float(logp[p - 1, row.prompt_ids[p]].exp()) for p in row.score_positions}
    return DecodedRow(generated, token_probs, prompt_probs)
