# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The grounding engine: frames and queries in, text, phrases and pixel boxes out.

Steps, each timed: preprocess (frame to pixel values), vision (encoder and projection, once
per frame, reusable by any number of queries), generate (one batched greedy pass for many
queries on one or several frames), postprocess (decode, parse, score, map boxes to pixels).

Results equal the reference pipeline's (``processor(...)``, ``model.generate(...)``,
``batch_decode``, ``post_process_generation``) for the same model; tests check it one query at
a time, with cached vision features and batched.

Box scores: the geometric mean of the probabilities the model gave to a box's two location
tokens, from its raw logits (before any logits processor). For boxes the model generated this
is its confidence when it generated them; for boxes given as regions in the prompt it is how
likely the model found them given the text before them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kosmos_ros.datatypes import DECODERS, GroundingResult, PixelBox, Query, Task, Timings
from kosmos_ros.errors import ImageError, InferenceError, OutOfMemoryError, PromptError
from kosmos_ros.images import Frame, frame_from_array
from kosmos_ros.model.decoding import (beam_decode, DecodedRow, DecodeRow, DecodeSettings,
                                       greedy_decode, InferenceCancelled)
from kosmos_ros.model.engine_options import EngineOptions  # noqa: F401 (its home before)
from kosmos_ros.model.loading import load_model, LoadedModel, ModelOptions
from kosmos_ros.model.parsing import strip_tags
from kosmos_ros.model.preprocess import Preprocessor
from kosmos_ros.model.prompts import build_prompt
from kosmos_ros.model.static_decode import StaticStep
from kosmos_ros.model.tokens import TokenCodec
from kosmos_ros.threads import use_cpu_threads

__all__ = ['EncodedImage', 'EngineOptions', 'GroundingEngine', 'InferenceCancelled']

StageCallback = Callable[[str], None]


_STATIC_BUCKET = 128


@dataclass
class EncodedImage:
    """Vision features of one frame, reusable by any number of queries."""

    width: int
    height: int
    embeds: torch.Tensor
    preprocess_s: float = 0.0
    vision_s: float = 0.0
    _timings_reported: bool = field(default=False, repr=False)


@dataclass
class _Prepared:
    encoded: EncodedImage
    query: Query
    prompt_ids: list[int]
    image_mask: list[bool]
    max_new_tokens: int
    score_positions: list[int]


class GroundingEngine:
    """Run KOSMOS-2 grounding tasks on frames. Not thread-safe: one worker owns it."""

    def __init__(self, loaded: LoadedModel, options: EngineOptions | None = None):
        self.loaded = loaded
        self.options = options or EngineOptions()
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.preprocessor = Preprocessor(loaded.processor.image_processor)
        tok = self.tokenizer
        self.num_image_tokens = int(self.model.config.latent_query_num)
        self.tokens = TokenCodec(tok, self.num_image_tokens,
                                 int(getattr(self.processor, 'num_patch_index_tokens', 1024)))
        text_config = self.model.config.text_config
        self.max_positions = int(text_config.max_position_embeddings)
        gen = self.model.generation_config
        self._settings = DecodeSettings(
            eos_token_id=int(gen.eos_token_id if gen.eos_token_id is not None
                             else tok.eos_token_id),
            pad_token_id=int(gen.pad_token_id if gen.pad_token_id is not None
                             else tok.pad_token_id),
            padding_idx=int(text_config.pad_token_id),
            min_new_tokens=self.options.min_new_tokens,
            no_repeat_ngram_size=self.options.no_repeat_ngram_size,
            logits_processors=tuple(self.options.logits_processors))
        self._static_steps: OrderedDict[tuple[int, int], StaticStep] = OrderedDict()
        self.decoder = self._resolve_decoder(self.options.decoder)

    def _resolve_decoder(self, name: str) -> str:
        if name not in DECODERS:
            raise ValueError(f'unknown decoder {name!r}; expected one of {", ".join(DECODERS)}')
        if name == 'auto':
            if self.device.type != 'cuda':
                return 'dynamic'
            return 'static' if self.loaded.options.quantization == '8bit' else 'cuda_graph'
        if name == 'cuda_graph' and self.device.type != 'cuda':
            raise ValueError('the cuda_graph decoder needs a CUDA device')
        return name

    def _static_step(self, batch: int, length: int) -> StaticStep:
        """Return a StaticStep for ``batch`` rows and ``length`` positions (reused)."""
        size = -(-length // _STATIC_BUCKET) * _STATIC_BUCKET
        key = (batch, size)
        step = self._static_steps.get(key)
        if step is None:
            step = StaticStep(self.model.text_model, batch, size, self.device,
                              use_cuda_graph=self.decoder == 'cuda_graph',
                              fuse_qkv=self.options.fuse_qkv,
                              compile_step=self.options.compile_step)
            self._static_steps[key] = step
            while len(self._static_steps) > 4:
                self._static_steps.popitem(last=False)
        else:
            self._static_steps.move_to_end(key)
        return step

    @classmethod
    def load(cls, model_options: ModelOptions | None = None,
             options: EngineOptions | None = None, weights: bool = True) -> GroundingEngine:
        """Load the model (raises ModelLoadError) and wrap it in an engine.

        ``weights=False``: the processor and configuration only (no memory for the weights):
        the engine builds and reads prompts (:meth:`prepare`, :meth:`read_phrase`) exactly as a
        loaded one does, and refuses to run (InferenceError).
        """
        return cls(load_model(model_options or ModelOptions(), weights=weights), options)

    def with_options(self, **changes: Any) -> GroundingEngine:
        """Return an engine sharing this model (and its decode buffers) with new options."""
        engine = GroundingEngine(self.loaded, replace(self.options, **changes))
        if (engine.decoder, engine.options.fuse_qkv, engine.options.compile_step) == (
                self.decoder, self.options.fuse_qkv, self.options.compile_step):
            engine._static_steps = self._static_steps
        return engine

    def describe(self) -> str:
        return self.loaded.describe()

    def _need_weights(self) -> None:
        if self.loaded.text_only:
            raise InferenceError(f'{self.describe()}: loaded to read prompts, it runs nothing')

    # -- preprocessing and vision ------------------------------------------------------------

    def encode(self, frames: Sequence[Frame]) -> list[EncodedImage]:
        """Preprocess frames and run the vision encoder once for all of them."""
        self._need_weights()
        if not frames:
            return []
        for frame in frames:
            if frame.width * frame.height > self.options.max_pixels:
                raise ImageError(f'image of {frame.width}x{frame.height} pixels exceeds the '
                                 f'limit of {self.options.max_pixels} pixels')
        use_cpu_threads(self.options.cpu_threads)
        started = time.perf_counter()
        with self._guard('preprocessing'):
            pixels = self.preprocessor(frames, self.device, self.dtype)
        preprocess_s = time.perf_counter() - started
        started = time.perf_counter()
        with self._guard('the vision encoder'), torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels)
            embeds = out.pooler_output if hasattr(out, 'pooler_output') else out
            self._sync()
        vision_s = time.perf_counter() - started
        n = len(frames)
        return [EncodedImage(f.width, f.height, embeds[i], preprocess_s / n, vision_s / n)
                for i, f in enumerate(frames)]

    # -- prompts -----------------------------------------------------------------------------

    def _tokenize(self, prompt: str) -> list[int]:
        return self.tokens.tokenize(prompt)

    def prepare(self, query: Query, width: int, height: int) -> tuple[list[int], int]:
        """Validate a query for a width x height frame; return its prompt ids and budget.

        Raises PromptError or RegionError with the reason; nothing runs on the model.
        """
        limit = self.options.max_prompt_tokens
        if isinstance(query.prompt, str) and len(query.prompt) > 32 * limit:
            raise PromptError(f'prompt is {len(query.prompt)} characters, far over the limit of '
                              f'{limit} tokens')
        prompt = build_prompt(query, width, height, self.tokens.reader)
        ids = self._tokenize(prompt)
        self.tokens.check_control_tokens(prompt, ids)
        text_tokens = len(ids) - self.num_image_tokens - 3
        if text_tokens > limit:
            raise PromptError(f'prompt is {text_tokens} tokens; the limit is {limit} tokens '
                              '(max_prompt_tokens)')
        budget = self.options.max_new_tokens if query.max_new_tokens is None \
            else int(query.max_new_tokens)
        if budget < 1:
            raise PromptError(f'max_new_tokens must be at least 1, got {budget}')
        if len(ids) + budget > self.max_positions:
            raise PromptError(f'prompt of {len(ids)} tokens plus {budget} new tokens exceeds '
                              f'the model limit of {self.max_positions} positions')
        return ids, budget

    def read_phrase(self, phrase: str) -> str:
        """Return ``phrase`` as the model's results spell it, for comparing the two.

        The phrase goes through what a FIND prompt's phrase goes through before it comes back
        in a result: the prompt builder's neutralisation, the tokenizer (its normal form,
        unknown characters) and the reference decoding (fullwidth letters come back as ASCII,
        a control character as a space). PromptError when FIND cannot take it.
        """
        ids, _ = self.prepare(Query(Task.FIND, phrase), 640, 480)
        decoded = self.tokenizer.decode(ids[self.num_image_tokens + 3:],
                                        skip_special_tokens=True)
        return ' '.join(strip_tags(decoded).split())

    def _prepared(self, encoded: EncodedImage, query: Query) -> _Prepared:
        ids, budget = self.prepare(query, encoded.width, encoded.height)
        return _Prepared(encoded, query, ids, self.tokens.image_mask(ids), budget,
                         self.tokens.score_positions(ids))

    # -- running -----------------------------------------------------------------------------

    def run(self, requests: Sequence[tuple[EncodedImage, Query]],
            should_stop: Callable[[], bool] | None = None,
            on_stage: StageCallback | None = None) -> list[GroundingResult]:
        """Answer queries on encoded frames; queries are validated first, then batched."""
        self._need_weights()
        use_cpu_threads(self.options.cpu_threads)
        prepared = [self._prepared(enc, q) for enc, q in requests]
        results: list[GroundingResult] = []
        size = max(1, self.options.max_batch_size)
        for start in range(0, len(prepared), size):
            chunk = prepared[start:start + size]
            if on_stage:
                on_stage('generating')
            started = time.perf_counter()
            decoded = self._decode(chunk, should_stop)
            generate_s = time.perf_counter() - started
            if on_stage:
                on_stage('postprocessing')
            for item, row in zip(chunk, decoded):
                t0 = time.perf_counter()
                enc = item.encoded
                timings = Timings(generate=generate_s)
                if not enc._timings_reported:
                    timings.preprocess, timings.vision = enc.preprocess_s, enc.vision_s
                    enc._timings_reported = True
                result = self.tokens.result(item.prompt_ids, item.query,
                                            (item.encoded.width, item.encoded.height), row,
                                            timings)
                timings.postprocess = time.perf_counter() - t0
                results.append(result)
        return results

    def ground(self, frame: Frame, query: Query,
               should_stop: Callable[[], bool] | None = None,
               on_stage: StageCallback | None = None) -> GroundingResult:
        """Run one query on one frame (validating the query before any model work)."""
        return self.ground_many(frame, [query], should_stop, on_stage)[0]

    def ground_many(self, frame: Frame, queries: Sequence[Query],
                    should_stop: Callable[[], bool] | None = None,
                    on_stage: StageCallback | None = None) -> list[GroundingResult]:
        """Run several queries on one frame: one vision pass, one batched generation."""
        for query in queries:
            self.prepare(query, frame.width, frame.height)
        if on_stage:
            on_stage('encoding')
        encoded = self.encode([frame])[0]
        return self.run([(encoded, q) for q in queries], should_stop, on_stage)

    def caption(self, frame: Frame, detailed: bool = False, **kw: Any) -> GroundingResult:
        task = Task.DETAILED_CAPTION if detailed else Task.CAPTION
        return self.ground(frame, Query(task, max_new_tokens=kw.get('max_new_tokens')))

    def find(self, frame: Frame, phrase: str, **kw: Any) -> GroundingResult:
        return self.ground(frame, Query(Task.FIND, phrase,
                                        max_new_tokens=kw.get('max_new_tokens')))

    def ask(self, frame: Frame, question: str, regions: Sequence[PixelBox] = (),
            **kw: Any) -> GroundingResult:
        return self.ground(frame, Query(Task.QUESTION, question, tuple(regions),
                                        kw.get('max_new_tokens')))

    def raw(self, frame: Frame, prompt: str, regions: Sequence[PixelBox] = (),
            **kw: Any) -> GroundingResult:
        return self.ground(frame, Query(Task.RAW, prompt, tuple(regions),
                                        kw.get('max_new_tokens')))

    def warm_up(self) -> None:
        """Run one caption on a grey frame now (batch 1: allocate, capture, compile).

        The static decoders allocate, capture or compile per batch size and length bucket on
        first use; warming up moves that cost out of the first real query.
        """
        self.ground(frame_from_array(np.full((224, 224, 3), 128, dtype=np.uint8)),
                    Query(Task.CAPTION))

    def close(self) -> None:
        """Drop the model and free its GPU memory."""
        self.model = None
        self.loaded.model = None
        self.tokens.clear()
        self._static_steps.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- internals ---------------------------------------------------------------------------

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def _guard(self, what: str):
        engine = self

        class _Guard:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, exc, tb):
                if exc is None or isinstance(exc, (InferenceCancelled, PromptError,
                                                   ImageError)):
                    return False
                if isinstance(exc, torch.cuda.OutOfMemoryError) or (
                        isinstance(exc, RuntimeError) and 'out of memory' in str(exc)):
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    raise OutOfMemoryError(f'out of memory in {what} on {engine.device}; '
                                           'caches were freed, retry with fewer or smaller '
                                           'queries') from None
                if isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError)):
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
                    raise InferenceError(f'{what} failed: {type(exc).__name__}: {first}') \
                        from exc
                return False
        return _Guard()

    def _decode(self, chunk: list[_Prepared],
                should_stop: Callable[[], bool] | None) -> list[DecodedRow]:
        rows = [DecodeRow(p.prompt_ids, p.image_mask, p.encoded.embeds, p.max_new_tokens,
                          p.score_positions) for p in chunk]
        with self._guard('generation'), torch.inference_mode():
            if self.options.num_beams > 1:
                out = []
                for row in rows:
                    if should_stop is not None and should_stop():
                        raise InferenceCancelled('cancelled before generation')
                    out.append(beam_decode(self.model, row, self._settings,
                                           self.options.num_beams, self.device))
            else:
                provider = None if self.decoder == 'dynamic' else self._static_step
                out = greedy_decode(self.model.text_model, rows, self._settings, self.device,
                                    should_stop, provider)
            self._sync()
        return out
