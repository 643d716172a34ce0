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


class StaticStep:
    """Decode steps for ``batch`` rows and up to ``max_len`` cached positions."""

    def __init__(self, text_model: Any, batch: int, max_len: int, device: torch.device,
                 use_cuda_graph: bool):
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
        self.graph: Any = None
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
        for layer, key_buf, value_buf in zip(model.layers, self.keys, self.values):
            attn = layer.self_attn
            residual = hidden
            h = layer.self_attn_layer_norm(hidden)
            q = attn.q_proj(h).view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(batch, 1, self.heads, self.head_dim).transpose(1, 2)
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

    def _capture(self) -> None:
        # Warm up on a side stream (allocations, autotuning), then capture one step.
        saved = ([k.clone() for k in self.keys], [v.clone() for v in self.values],
                 self.mask.clone())
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step()
        for buf, orig in zip(self.keys + self.values, saved[0] + saved[1]):
            buf.copy_(orig)
        self.mask.copy_(saved[2])
        self.graph = graph

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, index: int
                 ) -> torch.Tensor:
        """Run one step: ``tokens`` at sequence slot ``index``; return (batch, vocab) logits."""
        if index >= self.max_len:
            raise ValueError(f'slot {index} outside the {self.max_len} cached positions')
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.index.fill_(index)
        if not self.use_cuda_graph:
            return self._step()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits
