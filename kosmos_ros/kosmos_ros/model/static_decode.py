# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One-token decode steps of the KOSMOS-2 text decoder over a preallocated KV cache.

``transformers`` runs each generated token through its general forward pass: a new cache
entry per layer, masks rebuilt from Python, dozens of small kernel launches decided on the
host. For a 1.6 B-parameter model on a GPU, that host work, not the GPU, sets the token rate.
:class:`StaticStep` computes the same decode step from the model's own modules (layer norms,
projections, feed-forward, LM head) on fixed-size buffers: the key/value cache is allocated
once for the longest sequence, the attention mask covers all of it and unused slots are masked,
so every step has the same shapes. On CUDA the step is captured once as a CUDA graph and
replayed per token.

The greedy loop can also run on the device (:meth:`StaticStep.loop_begin` and
:meth:`StaticStep.loop_step`): choosing the token (argmax, with end-of-sequence forbidden
before ``min_new_tokens``), recording it and its probability, updating positions and
end-of-sequence flags all happen in device buffers, inside the same CUDA graph as the decoder
step, so the host only launches replays and reads a "all rows done" flag a few steps behind.

The prompt still runs through the model's own forward pass; its cache is copied into the
static buffers. Tests check that greedy results equal the reference decoding token for token.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _layers_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers DynamicCache, (batch, heads, time, dim)."""
    if hasattr(cache, 'layers'):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]


def fused_qkv(attn: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One (weight, bias) for the query, key and value projections of ``attn``, or None.

    The three projections' parameters become views into the fused tensors, so the model's own
    forward pass reads the same memory and no weight is stored twice. Only plain
    ``torch.nn.Linear`` layers with plain floating-point weights are fused (not quantized
    ones: bitsandbytes layers, torchao's weight tensor subclasses).
    """
    cached = getattr(attn, '_kosmos_ros_qkv', None)
    if cached is not None:
        return cached
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    if any(type(m) is not torch.nn.Linear or type(m.weight) is not torch.nn.Parameter
           or not m.weight.is_floating_point() for m in projections):
        return None
    biases = [m.bias for m in projections]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        return None
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([m.weight.detach() for m in projections])
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        size = projections[0].weight.shape[0]
        for i, module in enumerate(projections):
            module.weight = torch.nn.Parameter(weight[i * size:(i + 1) * size],
                                               requires_grad=False)
            if bias is not None:
                module.bias = torch.nn.Parameter(bias[i * size:(i + 1) * size],
                                                 requires_grad=False)
    attn._kosmos_ros_qkv = (weight, bias)
    return attn._kosmos_ros_qkv


def _allow_recompiles(limit: int) -> None:
    """Let torch.compile keep ``limit`` specialisations per function (default 8).

    Each batch size and length bucket is one specialisation of the compiled step; past the
    limit, torch would silently run the step uncompiled.
    """
    import torch._dynamo
    config = torch._dynamo.config
    name = 'recompile_limit' if hasattr(config, 'recompile_limit') else 'cache_size_limit'
    if getattr(config, name, limit) < limit:
        setattr(config, name, limit)


class StaticStep:
    """Decode steps for ``batch`` rows and up to ``max_len`` cached positions."""

    def __init__(self, text_model: Any, batch: int, max_len: int, device: torch.device,
                 use_cuda_graph: bool, fuse_qkv: bool = False, compile_step: bool = False):
        self.lm = text_model
        self.model = text_model.model
        cfg = self.model.config
        self.batch, self.max_len, self.device = batch, max_len, device
        self.heads = cfg.attention_heads
        self.head_dim = cfg.embed_dim // cfg.attention_heads
        weight = self.model.embed_tokens.weight
        self.dtype = weight.dtype if weight.is_floating_point() else torch.float16
        shape = (batch, self.heads, max_len, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=device)
                     for _ in self.model.layers]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=device)
                       for _ in self.model.layers]
        self.min_value = torch.finfo(self.dtype).min
        self.mask = torch.full((batch, 1, 1, max_len), self.min_value, dtype=self.dtype,
                               device=device)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.logits: torch.Tensor | None = None
        self.use_cuda_graph = use_cuda_graph and device.type == 'cuda'
        self.qkv = [fused_qkv(layer.self_attn) for layer in self.model.layers] if fuse_qkv \
            else [None] * len(self.model.layers)
        self.compile_step = compile_step
        self._compiled: dict[str, Any] = {}
        self.graph: Any = None
        self.loop_graph: Any = None
        self._loop: dict[str, torch.Tensor] | None = None
        positions = self.model.embed_positions
        needed = positions.padding_idx + 1 + max_len + 2
        if positions.weights.size(0) < needed:
            positions.make_weights(needed + positions.offset, positions.embedding_dim,
                                   positions.padding_idx)

    def load_prompt(self, cache: Any, attention_mask: torch.Tensor) -> None:
        """Copy the prompt's cache (from the model's forward pass) and its padding mask."""
        width = attention_mask.shape[1]
        if width >= self.max_len:
            raise ValueError(f'prompt of {width} tokens does not fit {self.max_len} positions')
        for (k, v), key_buf, value_buf in zip(_layers_kv(cache), self.keys, self.values):
            key_buf[:, :, :width].copy_(k)
            value_buf[:, :, :width].copy_(v)
        self.mask.fill_(self.min_value)
        self.mask[:, 0, 0, :width].masked_fill_(attention_mask.bool(), 0.0)

    def _step(self) -> torch.Tensor:
        model = self.model
        batch = self.batch
        hidden = model.embed_tokens(self.tokens[:, None]) * model.embed_scale
        table = model.embed_positions.weights
        hidden = hidden + table.index_select(0, self.positions).view(batch, 1, -1).to(
            hidden.device)
        self.mask.index_fill_(3, self.index, 0.0)
        shape = (batch, 1, self.heads, self.head_dim)
        for layer, key_buf, value_buf, qkv in zip(model.layers, self.keys, self.values, self.qkv):
            attn = layer.self_attn
            residual = hidden
            h = layer.self_attn_layer_norm(hidden)
            if qkv is not None:
                q, k, v = F.linear(h, qkv[0], qkv[1]).chunk(3, dim=-1)
            else:
                q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
            q = q.reshape(shape).transpose(1, 2)
            k = k.reshape(shape).transpose(1, 2)
            v = v.reshape(shape).transpose(1, 2)
            key_buf.index_copy_(2, self.index, k.to(key_buf.dtype))
            value_buf.index_copy_(2, self.index, v.to(value_buf.dtype))
            out = F.scaled_dot_product_attention(q, key_buf, value_buf,
                                                 attn_mask=self.mask.to(q.dtype),
                                                 scale=attn.scaling)
            out = out.transpose(1, 2).reshape(batch, 1, -1)
            if attn.inner_attn_ln is not None:
                out = attn.inner_attn_ln(out)
            hidden = residual + attn.out_proj(out)
            residual = hidden
            h = layer.final_layer_norm(hidden)
            ffn = layer.ffn
            h = ffn.fc2(ffn.ffn_layernorm(ffn.activation_fn(ffn.fc1(h))))
            hidden = residual + h
        hidden = model.layer_norm(hidden)
        return self.lm.lm_head(hidden)[:, -1, :]

    def _compiled_fn(self, name: str) -> Any:
        """Return the method ``name``, through ``torch.compile`` when ``compile_step`` is set."""
        fn = getattr(self, name)
        if not self.compile_step:
            return fn
        if name not in self._compiled:
            _allow_recompiles(64)
            self._compiled[name] = torch.compile(fn, fullgraph=True, dynamic=False)
        return self._compiled[name]

    def _mutable(self) -> list[torch.Tensor]:
        """Buffers a warm-up run changes (restored after capturing a graph)."""
        buffers = self.keys + self.values + [self.mask, self.tokens, self.positions, self.index]
        if self._loop is not None:
            buffers += list(self._loop.values())
        return buffers

    def _capture(self, fn: Any) -> tuple[Any, Any]:
        """Capture ``fn`` as a CUDA graph; return (graph, fn's output tensor)."""
        # Warm up on a side stream (allocations, autotuning), then capture one call.
        buffers = self._mutable()
        saved = [b.clone() for b in buffers]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = fn()
        for buf, orig in zip(buffers, saved):
            buf.copy_(orig)
        return graph, output

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, index: int
                 ) -> torch.Tensor:
        """Run one step: ``tokens`` at sequence slot ``index``; return (batch, vocab) logits."""
        if index >= self.max_len:
            raise ValueError(f'slot {index} outside the {self.max_len} cached positions')
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.index.fill_(index)
        if not self.use_cuda_graph:
            return self._compiled_fn('_step')()
        if self.graph is None:
            self.graph, self.logits = self._capture(self._compiled_fn('_step'))
        self.graph.replay()
        return self.logits

    # -- the greedy loop on the device -------------------------------------------------------

    def loop_begin(self, logits: torch.Tensor, lengths: list[int], width: int,
                   budgets: list[int], eos: int, pad: int, padding_idx: int,
                   min_new_tokens: int) -> None:
        """Start a greedy loop from the prompt pass: its last logits and the rows' lengths."""
        if self._loop is None:
            batch, dev = self.batch, self.device
            vocab = int(logits.shape[-1])
            self._loop = {
                'logits': torch.zeros((batch, vocab), dtype=torch.float32, device=dev),
                'done': torch.zeros(batch, dtype=torch.bool, device=dev),
                'all_done': torch.zeros(1, dtype=torch.bool, device=dev),
                'budgets': torch.zeros(batch, dtype=torch.long, device=dev),
                'count': torch.zeros(batch, dtype=torch.long, device=dev),
                'step': torch.zeros(1, dtype=torch.long, device=dev),
                'lengths': torch.zeros(batch, dtype=torch.long, device=dev),
                # eos, pad, padding_idx, min_new_tokens
                'consts': torch.zeros(4, dtype=torch.long, device=dev),
                'tokens': torch.zeros((batch, self.max_len), dtype=torch.long, device=dev),
                'probs': torch.zeros((batch, self.max_len), dtype=torch.float32, device=dev),
            }
        if width + max(budgets) > self.max_len:
            raise ValueError(f'{width} + {max(budgets)} tokens do not fit {self.max_len} '
                             'positions')
        state = self._loop
        state['logits'].copy_(logits)
        budget = torch.tensor(budgets, dtype=torch.long)
        state['budgets'].copy_(budget)
        state['done'].copy_(budget <= 0)
        state['all_done'].copy_(state['done'].all().view(1))
        state['count'].zero_()
        state['step'].zero_()
        state['lengths'].copy_(torch.tensor(lengths, dtype=torch.long))
        state['consts'].copy_(torch.tensor([eos, pad, padding_idx, min_new_tokens]))
        self.index.fill_(width)

    def _select(self) -> torch.Tensor:
        """Choose, record and account the next token of every row (device only)."""
        state = self._loop
        assert state is not None
        logits, consts, step, done = state['logits'], state['consts'], state['step'], state['done']
        eos_index = consts[:1]
        # MinNewTokensLengthLogitsProcessor's rule: no end-of-sequence before min_new_tokens.
        eos_column = logits.index_select(1, eos_index)
        blocked = torch.where(step < consts[3], torch.full_like(eos_column, float('-inf')),
                              eos_column)
        chosen = logits.index_copy(1, eos_index, blocked).argmax(dim=-1)
        chosen = torch.where(done, consts[1].expand_as(chosen), chosen)
        # Probability from the raw logits, as the host loop reports it.
        prob = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]).exp()
        state['tokens'].index_copy_(1, step, chosen[:, None])
        state['probs'].index_copy_(1, step, prob)
        state['count'].add_(done.logical_not().long())
        step.add_(1)
        done.logical_or_(chosen.eq(consts[0]) | state['budgets'].le(step))
        state['all_done'].copy_(done.all().view(1))
        return chosen

    def _select_and_step(self) -> None:
        state = self._loop
        assert state is not None
        chosen = self._select()
        # Reference rule for one token: (tokens so far + 1) unless it is padding.
        lengths = state['lengths']
        lengths.add_(1)
        padding_idx = state['consts'][2]
        self.positions.copy_(lengths * chosen.ne(padding_idx).long() + padding_idx)
        self.tokens.copy_(chosen)
        state['logits'].copy_(self._step().float())
        self.index.add_(1)

    def loop_step(self, decode: bool) -> torch.Tensor:
        """Choose the next tokens and, if ``decode``, run the decoder on them.

        Returns the device flag "every row is done" (after this step).
        """
        state = self._loop
        if state is None:
            raise RuntimeError('loop_step before loop_begin')
        if not decode:
            self._select()
        elif not self.use_cuda_graph:
            self._compiled_fn('_select_and_step')()
        else:
            if self.loop_graph is None:
                self.loop_graph, _ = self._capture(self._compiled_fn('_select_and_step'))
            self.loop_graph.replay()
        return state['all_done']

    def loop_results(self) -> tuple[list[list[int]], list[list[float]]]:
        """Tokens and probabilities each row generated (one device-to-host copy)."""
        state = self._loop
        assert state is not None
        steps = int(state['step'].item())
        counts = state['count'].tolist()
        tokens = state['tokens'][:, :steps].tolist()
        probs = state['probs'][:, :steps].tolist()
        return ([row[:n] for row, n in zip(tokens, counts)],
                [row[:n] for row, n in zip(probs, counts)])
