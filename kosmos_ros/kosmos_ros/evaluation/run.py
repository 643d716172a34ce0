# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The grounding of a labelled set: every category's phrase asked on every image.

Each image of the label file is read from the images folder (JPEG or PNG, its size checked
from its header before it is decoded, as the node reads compressed images:
:func:`kosmos_ros.images.frame_from_compressed`), encoded once, and asked one FIND query per
category (negatives matter for precision), batched by the engine. Every box the model gives
the asked phrase (compared as the node's follow goals compare them: the phrase as the model
spells it, :meth:`~kosmos_ros.model.engine.GroundingEngine.read_phrase`, case and spacing
ignored) is a detection with the score the node publishes and filters with ``min_score``; boxes
given as regions never are (:meth:`~kosmos_ros.datatypes.GroundingResult.detections`).

An image that cannot be used (outside the images folder, missing, unreadable, not JPEG or
PNG, another size than its label entry says) is a counted skip with its reason, and its label
boxes are counted as left out with it. Frames of bags come from another
:class:`FrameSource` (:mod:`.bag_frames`); the result keeps the label file's order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import os
from pathlib import Path
import stat
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Protocol, Sequence

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.errors import ImageError, PromptError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.labels import (Box, Category, fit_boxes, LabelBox, LabelledImage,
                                          LabelSet)
from kosmos_ros.images import DEFAULT_MAX_PIXELS, Frame, frame_from_compressed
from kosmos_ros.tracking.association import phrase_key

DEFAULT_MAX_IMAGE_BYTES = 256 * 1024 * 1024
SKIP_OUTSIDE_FOLDER = 'image path outside the images folder'
SKIP_MISSING = 'image file missing'
SKIP_UNREADABLE = 'image file unreadable'
SKIP_TOO_LARGE = 'image file over the size limit'
SKIP_UNDECODED = 'image not a usable JPEG or PNG'
SKIP_SIZE_MISMATCH = 'image size differs from its label entry'
SKIP_LABELS_OF_SKIPPED = 'label box of a skipped image'
MAX_NOTES = 10  # skipped images named one by one; the rest are counted


@dataclass(frozen=True)
class Detection:
    """A box the model gave a category's phrase on an image, with its score."""

    image_id: int
    category_id: int
    box: Box  # x1, y1, x2, y2 in pixels
    score: float


@dataclass(frozen=True)
class EvaluatedImage:
    """An image that was grounded: its file, size and label boxes (fitted to it)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: tuple[LabelBox, ...]


@dataclass
class GroundedSet:
    """The grounding of a label set: the images used, every detection, what was skipped."""

    labels: LabelSet
    images: list[EvaluatedImage] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # the first skipped images, with why
    elapsed_s: float = 0.0
    queries: int = 0


def image_path(folder: Path, file_name: str) -> Path | None:
    """Return the absolute path of ``file_name`` in ``folder``; None when it leaves the folder.

    Decided on the name (absolute, or climbing out with ``..``); a symbolic link inside the
    folder is the user's own and is followed.
    """
    name = os.path.normpath(file_name.replace('\\', '/'))
    if os.path.isabs(name) or name == '..' or name.startswith('../'):
        return None
    return Path(os.path.abspath(folder)) / name


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Read a JPEG or PNG file into a frame; OSError, or ImageError with the reason."""
    data = path.read_bytes()
    return frame_from_compressed(SimpleNamespace(format=path.suffix.lstrip('.'), data=data),
                                 max_pixels)


def asked_phrases(engine: Any, categories: tuple[Category, ...]) -> dict[int, str]:
    """Return each category's phrase as the model's results spell it (compared by key).

    EvaluationError when a phrase cannot be asked (FIND refuses it), holds nothing the model
    can read, or reads as another category's phrase does.
    """
    keys: dict[int, str] = {}
    seen: dict[str, int] = {}
    for category in categories:
        try:
            key = phrase_key(engine.read_phrase(category.phrase))
        except PromptError as exc:
            raise EvaluationError(f'category {category.category_id} ({category.phrase!r}) '
                                  f'cannot be asked: {exc}') from None
        if not key:
            raise EvaluationError(f'category {category.category_id} ({category.phrase!r}) '
                                  'holds nothing the model can read')
        other = seen.setdefault(key, category.category_id)
        if other != category.category_id:
            raise EvaluationError(f'categories {other} and {category.category_id} read as the '
                                  f'same phrase {key!r}; give one of them other wording')
        keys[category.category_id] = key
    return keys


@dataclass
class Skip:
    """Why an image is not grounded: a reason counted in ``skipped`` and its detail."""

    reason: str
    detail: str = ''


class FrameSource(Protocol):
    """Where the pixels of labelled images come from: files, or frames of bags.

    Iterating yields each labelled image with its frame, or the :class:`Skip` that says why it
    has none; an image given a second time (a frame found twice) replaces its earlier outcome.
    ``skipped`` counts what was skipped that belongs to no labelled image.
    """

    skipped: Counter

    def __iter__(self) -> Iterator[tuple[LabelledImage, tuple[Path, Frame] | Skip]]: ...


class FrameKeeper(Protocol):
    """Keeps what it needs of grounded frames that have no file (bag frames), bounded."""

    def keep(self, image: EvaluatedImage, frame: Frame,
             detections: list[Detection]) -> None: ...

    def drop(self, image_id: int) -> None: ...


@dataclass
class FileImages:
    """The labelled images that are files in ``folder`` (:class:`FrameSource`)."""

    folder: Path
    images: tuple[LabelledImage, ...]
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    skipped: Counter = field(default_factory=Counter)

    def __iter__(self) -> Iterator[tuple[LabelledImage, tuple[Path, Frame] | Skip]]:
        for image in self.images:
            yield image, _open(self.folder, image, self.max_bytes, self.max_pixels)


def _open(folder: Path, image: Any, max_bytes: int,
          max_pixels: int) -> tuple[Path, Frame] | Skip:
    path = image_path(folder, image.file_name)
    if path is None:
        return Skip(SKIP_OUTSIDE_FOLDER)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return Skip(SKIP_UNREADABLE, 'not a regular file')
        if info.st_size > max_bytes:
            return Skip(SKIP_TOO_LARGE, f'{info.st_size} bytes, over the limit of {max_bytes}')
        frame = load_image(path, max_pixels)
    except FileNotFoundError:
        return Skip(SKIP_MISSING)
    except OSError as exc:
        return Skip(SKIP_UNREADABLE, exc.strerror or str(exc))
    except ImageError as exc:
        return Skip(SKIP_UNDECODED, str(exc))
    if image.width not in (None, frame.width) or image.height not in (None, frame.height):
        return Skip(SKIP_SIZE_MISMATCH, f'the file is {frame.width}x{frame.height}, the '
                                        f'label entry says {image.width}x{image.height}')
    return path, frame


def ground_labels(labels: LabelSet, folder: Path | None, engine: Any, *,
                  max_new_tokens: int | None = None, limit: int = 0, progress: bool = False,
                  max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                  on_image: Callable[[int], None] | None = None,
                  sources: Sequence[FrameSource] = (),
                  keeper: FrameKeeper | None = None) -> GroundedSet:
    """Ask every category's phrase on every labelled image; return the detections.

    The images are the files in ``folder`` (None: none), then those ``sources`` give (frames
    of bags); ``keeper`` is offered every grounded frame of a source. The result lists images
    and detections in the label file's order, whatever order the sources read them in.
    ``limit`` grounds the first N usable images only (0: all). EvaluationError when a phrase
    cannot be asked (before any image is grounded); KeyboardInterrupt passes through.
    """
    from tqdm import tqdm

    keys = asked_phrases(engine, labels.categories)
    grounded = GroundedSet(labels, skipped=Counter(labels.skipped))
    queries = [(c.category_id, keys[c.category_id],
                Query(Task.FIND, c.phrase, max_new_tokens=max_new_tokens))
               for c in labels.categories]
    max_pixels = int(getattr(engine.options, 'max_pixels', DEFAULT_MAX_PIXELS))
    if folder is not None:
        files = tuple(i for i in labels.images if not i.is_frame)
        sources = [FileImages(folder, files, max_image_bytes, max_pixels), *sources]
    outcomes: dict[int, Skip | None] = {}  # None: grounded
    started = time.monotonic()
    total = min(limit, len(labels.images)) if limit else len(labels.images)
    bar = tqdm(total=total, unit=' images', desc='evaluating', disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for source in sources:
            if limit and len(grounded.images) >= limit:
                break
            for image, opened in source:
                if image.image_id in outcomes:  # found again: its first outcome is undone
                    _undo(grounded, image, outcomes.pop(image.image_id), keeper)
                if isinstance(opened, Skip):
                    outcomes[image.image_id] = opened
                    _skip(grounded, image, opened)
                    continue
                path, frame = opened
                outcome = _ground(grounded, image, path, frame, engine, queries, keeper)
                outcomes[image.image_id] = outcome
                if outcome is None:
                    bar.update(1)
                    if on_image is not None:
                        on_image(image.image_id)
                if limit and len(grounded.images) >= limit:
                    break
            grounded.skipped.update(source.skipped)
    finally:
        bar.close()
        grounded.elapsed_s = time.monotonic() - started
    order = {image.image_id: n for n, image in enumerate(labels.images)}
    grounded.images.sort(key=lambda i: order[i.image_id])
    grounded.detections.sort(key=lambda d: order[d.image_id])
    grounded.skipped = +grounded.skipped  # reasons whose every count was undone
    return grounded


def _ground(grounded: GroundedSet, image: LabelledImage, path: Path, frame: Frame,
            engine: Any, queries: list, keeper: FrameKeeper | None) -> Skip | None:
    """Ground one image; None when done, or the Skip (counted) when the engine refused it."""
    boxes = fit_boxes(image, frame.width, frame.height, grounded.skipped)
    try:
        results = engine.ground_many(frame, [q for _, _, q in queries])
    except ImageError as exc:  # the engine's own pixel limit
        skip = Skip(SKIP_UNDECODED, str(exc))
        _skip(grounded, image, skip)
        return skip
    grounded.queries += len(queries)
    found = [Detection(image.image_id, category_id,
                       (box.pixels.x1, box.pixels.y1, box.pixels.x2, box.pixels.y2),
                       float(box.score))
             for (category_id, key, _), result in zip(queries, results)
             for _, _, phrase, box in result.detections() if phrase_key(phrase.text) == key]
    grounded.detections += found
    evaluated = EvaluatedImage(image.image_id, path, frame.width, frame.height, boxes)
    grounded.images.append(evaluated)
    if keeper is not None and image.is_frame:
        keeper.keep(evaluated, frame, found)
    return None


def _undo(grounded: GroundedSet, image: LabelledImage, outcome: Skip | None,
          keeper: FrameKeeper | None) -> None:
    """Undo an image's earlier outcome: its grounding, or its counted skip."""
    if outcome is None:
        evaluated, = (i for i in grounded.images if i.image_id == image.image_id)
        fitted: Counter = Counter()
        fit_boxes(image, evaluated.width, evaluated.height, fitted)
        grounded.skipped.subtract(fitted)  # the boxes it clipped or left out
        grounded.images.remove(evaluated)
        grounded.detections = [d for d in grounded.detections if d.image_id != image.image_id]
        grounded.queries -= len(grounded.labels.categories)
        if keeper is not None:
            keeper.drop(image.image_id)
        return
    grounded.skipped[outcome.reason] -= 1
    if image.boxes:
        grounded.skipped[SKIP_LABELS_OF_SKIPPED] -= len(image.boxes)


def _skip(grounded: GroundedSet, image: Any, skip: Skip) -> None:
    grounded.skipped[skip.reason] += 1
    if image.boxes:
        grounded.skipped[SKIP_LABELS_OF_SKIPPED] += len(image.boxes)
    if len(grounded.notes) < MAX_NOTES:
        detail = f': {skip.detail}' if skip.detail else ''
        grounded.notes.append(f'image {image.image_id} ({image.file_name}): {skip.reason}'
                              f'{detail}')
