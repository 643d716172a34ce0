# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The node's engine: loaded from its parameters at configure, and its continuous query.

torch and transformers are imported here, inside :func:`load_engine`, so that the node starts,
declares its parameters and serves its lifecycle services before any of them loads.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.errors import KosmosError, ModelLoadError, PromptError, RegionError
from kosmos_ros.model.engine_options import NODE_PARAMETERS
from kosmos_ros.model.prompts import build_prompt
from kosmos_ros.node.parameter_store import missing_prompt
from kosmos_ros.node.parameter_table import NodeParams
from kosmos_ros.node.scheduling import ContinuousSettings

__all__ = ['continuous_query', 'continuous_settings', 'engine_options', 'ENGINE_PARAMETERS',
           'load_engine']

# A live change of one of these gives the running engine new options; the rest need a reload.
ENGINE_PARAMETERS = frozenset(NODE_PARAMETERS.values())


def engine_options(p: NodeParams, logits_processors: tuple = ()) -> dict[str, Any]:
    """Return the engine's options (:class:`~kosmos_ros.model.engine.EngineOptions` fields)."""
    return dict({option: getattr(p, name) for option, name in NODE_PARAMETERS.items()},
                logits_processors=tuple(logits_processors))


def load_engine(p: NodeParams, logits_processors: tuple, log: Any,
                closing: Callable[[], bool]) -> Any:
    """Load the model as ``p`` says and return its engine, warmed up with ``compile_decoder``.

    ModelLoadError when loading fails, or when ``closing()`` says the node stopped meanwhile;
    KosmosError naming ``compile_decoder`` when compiling the decode step fails.
    """
    from kosmos_ros.model.engine import EngineOptions, GroundingEngine
    from kosmos_ros.model.loading import ModelOptions

    options = ModelOptions(model=p.model, revision=p.revision or None,
                           local_files_only=p.local_files_only, dtype=p.dtype,
                           quantization=p.quantization, device=p.device,
                           attn_implementation=p.attn_implementation)
    log.info(f'loading {p.model} (device {p.device}, dtype {p.dtype}, quantization '
             f'{p.quantization})')
    started = time.monotonic()
    engine = GroundingEngine.load(options, EngineOptions(**engine_options(p, logits_processors)))
    if closing():  # stopped during the load: touch nothing more
        engine.close()
        raise ModelLoadError('the node is shutting down')
    log.info(f'loaded {engine.describe()} in {time.monotonic() - started:.1f} s')
    try:
        _warm_up(engine, p, log)
    except BaseException:
        engine.close()
        raise
    return engine


def _warm_up(engine: Any, p: NodeParams, log: Any) -> None:
    """With compile_decoder, compile the decode step now rather than on the first query."""
    if not p.compile_decoder:
        return
    if engine.decoder == 'dynamic':
        log.warning('compile_decoder has no effect with the dynamic decoder (decoder: auto is '
                    'dynamic on the CPU); set decoder to static or cuda_graph to compile the '
                    'decode step')
        return
    started = time.monotonic()
    try:
        engine.warm_up()
    except KosmosError as exc:
        raise KosmosError(f'compile_decoder: {exc} (set compile_decoder to false to decode '
                          'without it)') from None
    log.info(f'compiled the {engine.decoder} decode step in {time.monotonic() - started:.1f} s')


def continuous_query(engine: Any, task: str, prompt: str, max_prompt_tokens: int) -> Query:
    """Return the continuous query, or raise PromptError/ValueError with the reason.

    With a model loaded (``engine`` not None), the engine's own checks run (token limit
    included), on a copy of the engine so that its prompt cache stays the worker's alone.
    """
    query = Query(Task.parse(task), prompt)
    if engine is None:
        build_prompt(query, 640, 480)
    else:
        engine.with_options(max_prompt_tokens=int(max_prompt_tokens)).prepare(query, 640, 480)
    return query


def continuous_settings(engine: Any, p: NodeParams) -> tuple[ContinuousSettings, str]:
    """Return the worker's continuous settings and why continuous grounding is paused or off.

    The reason is empty when it runs, or when ``rate_hz`` is 0 (off as asked).
    """
    problem = ''
    try:
        query = continuous_query(engine, p.task, p.prompt, p.max_prompt_tokens)
    except (PromptError, RegionError, ValueError) as exc:
        query = None
        if p.rate_hz > 0:
            problem = (f'paused: continuous task {p.task} needs a prompt (set the prompt '
                       'parameter)' if missing_prompt(p.task, p.prompt) else f'off: {exc}')
    return ContinuousSettings(rate_hz=float(p.rate_hz), query=query), problem
