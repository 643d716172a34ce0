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
boxes are counted as left out with it.
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
from typing import Any, Callable

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.errors import ImageError, PromptError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.labels import Box, Category, fit_boxes, LabelBox, LabelSet
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
class _Skip:
    reason: str
    detail: str = ''


def _open(folder: Path, image: Any, max_bytes: int,
          max_pixels: int) -> tuple[Path, Frame] | _Skip:
    path = image_path(folder, image.file_name)
    if path is None:
        return _Skip(SKIP_OUTSIDE_FOLDER)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return _Skip(SKIP_UNREADABLE, 'not a regular file')
        if info.st_size > max_bytes:
            return _Skip(SKIP_TOO_LARGE, f'{info.st_size} bytes, over the limit of {max_bytes}')
        frame = load_image(path, max_pixels)
    except FileNotFoundError:
        return _Skip(SKIP_MISSING)
    except OSError as exc:
        return _Skip(SKIP_UNREADABLE, exc.strerror or str(exc))
    except ImageError as exc:
        return _Skip(SKIP_UNDECODED, str(exc))
    if image.width not in (None, frame.width) or image.height not in (None, frame.height):
        return _Skip(SKIP_SIZE_MISMATCH, f'the file is {frame.width}x{frame.height}, the '
                                         f'label entry says {image.width}x{image.height}')
    return path, frame


def ground_labels(labels: LabelSet, folder: Path, engine: Any, *,
                  max_new_tokens: int | None = None, limit: int = 0, progress: bool = False,
                  max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
                  on_image: Callable[[int], None] | None = None) -> GroundedSet:
    """Ask every category's phrase on every labelled image; return the detections.

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
    started = time.monotonic()
    total = min(limit, len(labels.images)) if limit else len(labels.images)
    bar = tqdm(total=total, unit=' images', desc='evaluating', disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for image in labels.images:
            if limit and len(grounded.images) >= limit:
                break
            opened = _open(folder, image, max_image_bytes, max_pixels)
            if isinstance(opened, _Skip):
                _skip(grounded, image, opened)
                continue
            path, frame = opened
            boxes = fit_boxes(image, frame.width, frame.height, grounded.skipped)
            try:
                results = engine.ground_many(frame, [q for _, _, q in queries])
            except ImageError as exc:  # the engine's own pixel limit
                _skip(grounded, image, _Skip(SKIP_UNDECODED, str(exc)))
                continue
            grounded.queries += len(queries)
            for (category_id, key, _), result in zip(queries, results):
                grounded.detections += [
                    Detection(image.image_id, category_id, (box.pixels.x1, box.pixels.y1,
                                                            box.pixels.x2, box.pixels.y2),
                              float(box.score))
                    for _, _, phrase, box in result.detections() if phrase_key(phrase.text) == key]
            grounded.images.append(EvaluatedImage(image.image_id, path, frame.width,
                                                  frame.height, boxes))
            bar.update(1)
            if on_image is not None:
                on_image(image.image_id)
    finally:
        bar.close()
        grounded.elapsed_s = time.monotonic() - started
    return grounded


def _skip(grounded: GroundedSet, image: Any, skip: _Skip) -> None:
    grounded.skipped[skip.reason] += 1
    if image.boxes:
        grounded.skipped[SKIP_LABELS_OF_SKIPPED] += len(image.boxes)
    if len(grounded.notes) < MAX_NOTES:
        detail = f': {skip.detail}' if skip.detail else ''
        grounded.notes.append(f'image {image.image_id} ({image.file_name}): {skip.reason}'
                              f'{detail}')
