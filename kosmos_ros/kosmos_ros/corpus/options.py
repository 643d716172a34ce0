# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What a corpus run is asked: :class:`CorpusOptions`, and what the workers load."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kosmos_ros.bag.records import GroundBagOptions
from kosmos_ros.corpus import CorpusError
from kosmos_ros.datatypes import Task
from kosmos_ros.depth import DepthSettings


@dataclass(frozen=True)
class WorkerSpec:
    """What every inference worker loads: the model and the engine's options.

    Picklable, so Ray sends it to each actor, which loads its own engine.
    """

    model: Any  # kosmos_ros.model.loading.ModelOptions
    engine: Any  # kosmos_ros.model.engine.EngineOptions

    def load(self) -> Any:
        """Load the engine (ModelLoadError)."""
        from kosmos_ros.model.engine import GroundingEngine

        return GroundingEngine.load(self.model, self.engine)


@dataclass(frozen=True)
class CorpusOptions:
    """What to ground, how, and where the run folder is.

    Attributes:
        inputs: bags, folders (searched recursively) and globs (:mod:`.inputs`).
        output: the run folder; an existing run there is resumed (same options only).
        topics ... use_depth: as :class:`~kosmos_ros.bag.records.GroundBagOptions`, applied
            to every bag.
        chunk_frames: admitted frames per chunk, the unit of work and of resumption.
        batch_size: frames an inference worker decodes together (across chunks and bags).
        workers: inference workers: 0 grounds in this process without Ray; N starts N Ray
            actors (each takes a GPU when the model runs on CUDA, else a CPU); None (auto)
            uses Ray only where it helps: one actor per GPU of the cluster given by
            ``ray_address``, or of this machine when it has two GPUs or more; otherwise this
            process (:func:`~kosmos_ros.corpus.workers.auto_workers`).
        ray_address: join this Ray cluster (``auto``, ``host:port``, ``ray://host:port``);
            None starts an embedded local Ray on this machine, bound to loopback.
        chunks_per_task: chunks handed to a worker at once, taken from different bags when
            there are several, so its batches mix bags.
        track ... track_coast_time: ``ground_bag --track``'s tracking, per bag, when its
            output is written (every admitted frame of the bag, in order, on one worker).
    """

    inputs: tuple[str, ...]
    output: Path
    topics: tuple[str, ...] = ()
    task: str = 'caption'
    prompt: str = ''
    max_new_tokens: int | None = None
    rate_hz: float = 0.0
    min_score: float = 0.0
    copy_input: bool = False
    depth_topics: tuple[str, ...] = ()
    camera_info_topics: tuple[str, ...] = ()
    depth: DepthSettings = field(default_factory=DepthSettings)
    use_depth: bool = True
    chunk_frames: int = 32
    batch_size: int = 8
    workers: int | None = 1
    ray_address: str | None = None
    chunks_per_task: int = 2
    model_label: str = ''
    track: bool = False
    track_rate_hz: float = 0.0
    track_max_age: float = 3.0
    track_coast_time: float = 1.0

    @classmethod
    def from_grounding(cls, options: Any, **corpus_fields: Any) -> CorpusOptions:
        """Return a corpus run's options asked for by grounding ``options`` (checked)."""
        return cls(task=options.task, prompt=options.prompt,
                   max_new_tokens=options.max_new_tokens, rate_hz=options.rate_hz,
                   min_score=options.min_score, depth=DepthSettings.of(options),
                   track=options.track,
                   track_rate_hz=options.track_rate_hz, track_max_age=options.track_max_age,
                   track_coast_time=options.track_coast_time, **corpus_fields)

    def grounding(self) -> Any:
        """Return the grounding options this run asks for (:class:`GroundingOptions`)."""
        from kosmos_ros.options import GroundingOptions

        d = self.depth
        values = dict(task=self.task, prompt=self.prompt, rate_hz=self.rate_hz,
                      min_score=self.min_score, depth_tolerance=d.depth_tolerance,
                      depth_min=d.depth_min, depth_max=d.depth_max,
                      depth_inner_fraction=d.depth_inner_fraction, track=self.track,
                      track_rate_hz=self.track_rate_hz, track_max_age=self.track_max_age,
                      track_coast_time=self.track_coast_time)
        if self.max_new_tokens is not None:
            values['max_new_tokens'] = self.max_new_tokens
        return GroundingOptions(**values)

    def check(self) -> None:
        """Raise CorpusError naming the first invalid option.

        The grounding options by their one set of rules (:meth:`GroundingOptions.check`), then
        the corpus run's own.
        """
        from kosmos_ros.options import OptionsError

        try:
            self.grounding().check()
        except OptionsError as exc:
            raise CorpusError(str(exc)) from None
        if not self.inputs:
            raise CorpusError('no input: give bags, folders or globs')
        for name in ('chunk_frames', 'batch_size', 'chunks_per_task'):
            if getattr(self, name) < 1:
                raise CorpusError(f'{name} must be at least 1; got {getattr(self, name)}')
        if self.workers is not None and self.workers < 0:
            raise CorpusError(f'workers must be 0 (no Ray) or more; got {self.workers}')

    def bag_options(self, bag: Path, output: Path) -> GroundBagOptions:
        """Return the ``ground_bag`` options of one bag of the corpus."""
        return GroundBagOptions(
            bag=bag, output=output, topics=self.topics, task=Task.parse(self.task),
            prompt=self.prompt, max_new_tokens=self.max_new_tokens, rate_hz=self.rate_hz,
            copy_input=self.copy_input, overwrite=True, min_score=self.min_score,
            model_label=self.model_label, depth_topics=self.depth_topics,
            camera_info_topics=self.camera_info_topics, depth=self.depth,
            use_depth=self.use_depth, track=self.track, track_rate_hz=self.track_rate_hz,
            track_max_age=self.track_max_age, track_coast_time=self.track_coast_time)

    def fingerprint(self) -> dict[str, Any]:
        """Return the options that change results: a run resumes only with the same ones."""
        return {'topics': list(self.topics), 'task': Task.parse(self.task).name.lower(),
                'prompt': self.prompt, 'max_new_tokens': self.max_new_tokens,
                'rate_hz': self.rate_hz, 'min_score': self.min_score,
                'copy_input': self.copy_input, 'depth_topics': list(self.depth_topics),
                'camera_info_topics': list(self.camera_info_topics),
                'depth': asdict(self.depth), 'use_depth': self.use_depth,
                'chunk_frames': self.chunk_frames,
                # Only with tracking: run folders made before it existed resume as they were.
                **({'track': {'rate_hz': self.track_rate_hz, 'max_age': self.track_max_age,
                              'coast_time': self.track_coast_time}} if self.track else {})}


def differences(before: Any, now: dict[str, Any]) -> str:
    """Return each option that differs between a run folder's options and these, both values."""
    if not isinstance(before, dict):
        return f'the folder records {before!r}'
    parts = []
    for name in sorted(set(before) | set(now)):
        if before.get(name, '(not set)') != now.get(name, '(not set)'):
            parts.append(f'{name} {before.get(name, "(not set)")!r} in the run folder, '
                         f'{now.get(name, "(not set)")!r} now')
    return '; '.join(parts)
