# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Typed inputs and results of the grounding engine (plain data, no ROS, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
import enum
from typing import Iterator

# Names of the loading and decoding options, here rather than in loading.py and engine.py so
# that parameter tables and command-line help import no torch.
DEFAULT_MODEL = 'microsoft/kosmos-2-patch14-224'
# 8bit, 4bit: bitsandbytes (CUDA); int8, int4: torchao weight-only (int8 also on the CPU; int4
# CUDA and bfloat16).
QUANTIZATIONS = ('none', '8bit', '4bit', 'int8', 'int4')
TORCHAO_QUANTIZATIONS = ('int8', 'int4')
ATTENTION = ('sdpa', 'eager')
DECODERS = ('auto', 'dynamic', 'static', 'cuda_graph')


class Task(enum.IntEnum):
    """What a query asks; values equal the task constants of ``kosmos_ros_interfaces``."""

    CAPTION = 0
    DETAILED_CAPTION = 1
    FIND = 2
    QUESTION = 3
    RAW = 4

    @classmethod
    def parse(cls, value: Task | int | str) -> Task:
        """Return the task for a name (``'find'``, ``'detailed_caption'``) or a number."""
        if isinstance(value, Task):
            return value
        if isinstance(value, str):
            key = value.strip().upper().replace('-', '_').replace(' ', '_')
            if key in cls.__members__:
                return cls[key]
            if key.isdigit():
                value = int(key)
            else:
                raise ValueError(f'unknown task {value!r}; expected one of '
                                 + ', '.join(m.lower() for m in cls.__members__))
        try:
            return cls(int(value))
        except ValueError:
            raise ValueError(
                f'unknown task number {value}; expected 0 to {len(cls) - 1}') from None


@dataclass(frozen=True)
class PixelBox:
    """An axis-aligned box in pixels: (x1, y1) top-left corner, (x2, y2) bottom-right corner.

    Pixel coordinates put the origin at the top-left corner of the top-left pixel, so a box
    covering a whole W x H image is (0, 0, W, H).
    """

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    @classmethod
    def from_center(cls, cx: float, cy: float, width: float, height: float) -> PixelBox:
        return cls(cx - width / 2.0, cy - height / 2.0, cx + width / 2.0, cy + height / 2.0)


@dataclass(frozen=True)
class GroundedBox:
    """One box of a grounded phrase.

    Attributes:
        pixels: the box in pixels of the original frame (clamped to the frame), with ordered
            corners (x1 <= x2, y1 <= y2) even when the model named the bottom-right cell first
            (then the box spans both cells as if named in order): the one deliberate
            difference from the reference post-processing.
        normalized: (x1, y1, x2, y2) in [0, 1], exactly as the reference post-processing gives
            (inverted when the model named the corners in the wrong order).
        patch_indices: the two cells of the 32x32 location grid the model named, in its order.
        score: geometric mean of the probabilities the model gave to its two location tokens;
            0.0 when the model spelled the location out in plain text rather than as tokens.
        given: the box stands in the prompt (a region the caller gave, QUESTION or RAW), so
            it is not something the model found; its score is how likely the model found it.
    """

    pixels: PixelBox
    normalized: tuple[float, float, float, float]
    patch_indices: tuple[int, int]
    score: float
    given: bool = False


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of the generated text and the boxes the model gave it."""

    text: str
    start: int
    end: int
    boxes: tuple[GroundedBox, ...]

    @property
    def score(self) -> float:
        """The best box score of the phrase (0.0 without boxes)."""
        return max((b.score for b in self.boxes), default=0.0)

    @property
    def given(self) -> bool:
        """Whether the phrase's boxes are the caller's regions (it stands in the prompt)."""
        return bool(self.boxes) and all(b.given for b in self.boxes)


@dataclass
class Timings:
    """Seconds spent per stage; for a batched call, the whole batch's time."""

    preprocess: float = 0.0
    vision: float = 0.0
    generate: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.preprocess + self.vision + self.generate + self.postprocess


@dataclass(frozen=True)
class Query:
    """A question to ask about one image.

    Attributes:
        task: what to do (see :class:`Task`).
        prompt: the phrase (FIND), question (QUESTION) or full prompt (RAW); unused otherwise.
        regions: pixel boxes bound in order to the prompt's phrases (QUESTION, RAW).
        max_new_tokens: generation budget; None for the engine's default.
    """

    task: Task
    prompt: str = ''
    regions: tuple[PixelBox, ...] = ()
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class GroundingResult:
    """What the engine found for one query on one image.

    Attributes:
        task: the query's task.
        prompt: the query's prompt as given.
        text: the reference post-processing's text: the prompt's words followed by the
            generated ones, grounding tokens removed ("An image of a dog.", "Question: What is
            this? Answer: a dog."); phrase spans index it.
        phrases: grounded phrases with character spans into ``text`` and boxes.
        image_size: (width, height) of the original frame in pixels.
        raw_text: the model's text after ``</image>``, grounding tokens included.
        num_generated_tokens: tokens generated for this query, end-of-sequence included.
        timings: time per stage (for batched queries, of the whole batch).
        answer: the words the model generated after the prompt, grounding tokens removed (for
            a question, the answer alone: "a dog.").
    """

    task: Task
    prompt: str
    text: str
    phrases: tuple[GroundedPhrase, ...]
    image_size: tuple[int, int]
    raw_text: str
    num_generated_tokens: int
    timings: Timings = field(default_factory=Timings)
    answer: str = ''

    def detections(self, min_score: float = 0.0
                   ) -> Iterator[tuple[int, int, GroundedPhrase, GroundedBox]]:
        """Yield (phrase index, box index, phrase, box) for every box that is a detection.

        A detection is a box the model found (not a region the caller gave) scoring at least
        ``min_score``. Every message builder, live and offline, takes its boxes from here.
        """
        for p_index, phrase in enumerate(self.phrases):
            for b_index, box in enumerate(phrase.boxes):
                if not box.given and box.score >= min_score:
                    yield p_index, b_index, phrase, box

    def entities(self) -> list[tuple[str, tuple[int, int], list[tuple[float, ...]]]]:
        """Phrases in the reference ``post_process_generation`` format (normalized boxes)."""
        return [(p.text, (p.start, p.end), [b.normalized for b in p.boxes]) for p in self.phrases]
