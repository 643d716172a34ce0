# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""COCO-format label files, read as untrusted data, and the phrase asked for each category.

A label file is the JSON that labelling tools export (CVAT, Label Studio, Roboflow, ...)::

    {"images": [{"id": 1, "file_name": "shelf/0001.jpg", "width": 640, "height": 480}, ...],
     "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [x, y, w, h]}, ...],
     "categories": [{"id": 3, "name": "cup"}, ...]}

Boxes are ``[x, y, width, height]`` in pixels from the image's top-left corner. Each category
is asked as a phrase: its name, or the wording a phrase map gives it (:func:`read_phrase_map`).

What cannot be used is either an error that names it (:class:`LabelsError`: a file over the
size limit, not JSON, not the COCO layout, no category to ask, ids given twice, two categories
asking the same phrase) or a counted skip with its reason (:data:`SKIP_REASONS`: an annotation
of an unknown image or category, a crowd region, a box that is not four finite numbers or has
no area, an image entry without an id or file name); a box partly outside its image is clipped
to it and counted, one wholly outside is skipped (:func:`fit_boxes`, once the image's size is
known). An image entry with a ``topic`` and a header stamp (``stamp_ns``, or ``stamp`` as
``{"sec", "nanosec"}``) names a frame of a bag instead of a file; a stamp that is not a whole
number from 0, a topic without a stamp (or the reverse), both stamp forms at once and two
entries naming the same frame are errors. Nothing here follows a URL (``coco_url``,
``flickr_url``) or reads anything but JSON and YAML.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
from typing import Any

from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.tracking.association import phrase_key

DEFAULT_MAX_LABELS_BYTES = 512 * 1024 * 1024  # --max-labels-bytes
MAX_PHRASE_MAP_BYTES = 1024 * 1024

SKIP_IMAGE_ENTRY = 'image entry without an integer id or a file_name'
SKIP_IMAGE_SIZE = 'image entry with a bad width or height'
SKIP_NOT_OBJECT = 'annotation that is not an object'
SKIP_UNKNOWN_IMAGE = 'annotation of an unknown image id'
SKIP_SKIPPED_IMAGE = 'annotation of a skipped image entry'
SKIP_UNKNOWN_CATEGORY = 'annotation of an unknown category id'
SKIP_UNNAMED_CATEGORY = 'annotation of a category without a name'
SKIP_CATEGORY = 'category without a name'
SKIP_CROWD = 'crowd annotation (iscrowd)'
SKIP_BAD_BOX = 'box that is not [x, y, width, height] numbers'
SKIP_NON_FINITE = 'box with a non-finite number'
SKIP_EMPTY_BOX = 'box without area (width or height 0 or less)'
SKIP_OUTSIDE = 'box wholly outside its image'
CLIPPED = 'box partly outside its image (clipped to it, kept)'
SKIP_REASONS = (SKIP_IMAGE_ENTRY, SKIP_IMAGE_SIZE, SKIP_NOT_OBJECT, SKIP_UNKNOWN_IMAGE,
                SKIP_SKIPPED_IMAGE, SKIP_UNKNOWN_CATEGORY, SKIP_UNNAMED_CATEGORY, SKIP_CATEGORY,
                SKIP_CROWD, SKIP_BAD_BOX, SKIP_NON_FINITE, SKIP_EMPTY_BOX, SKIP_OUTSIDE, CLIPPED)


class LabelsError(EvaluationError):
    """A label file or phrase map that cannot be used; the message names the file and why."""


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class Category:
    """A labelled category and the phrase the model is asked for it."""

    category_id: int
    name: str
    phrase: str


@dataclass(frozen=True)
class LabelBox:
    """A labelled box of a category: (x1, y1, x2, y2) in pixels."""

    category_id: int
    box: Box


@dataclass(frozen=True)
class LabelledImage:
    """An image entry and its boxes; width and height as the file gives them (None: absent).

    A bag frame's entry names its ``topic``, header stamp (``stamp_ns``) and maybe ``bag`` (path
    or SHA-256, as a corpus run recorded it); its ``file_name`` is a name to show, never opened.
    """

    image_id: int
    file_name: str
    width: int | None
    height: int | None
    boxes: tuple[LabelBox, ...] = ()
    topic: str | None = None
    stamp_ns: int | None = None
    bag: str | None = None

    @property
    def is_frame(self) -> bool:
        """Whether the entry names a bag frame (topic and stamp) rather than a file."""
        return self.topic is not None


@dataclass
class LabelSet:
    """A checked label file: its images, the categories to ask and what was skipped."""

    path: Path
    images: tuple[LabelledImage, ...]
    categories: tuple[Category, ...]
    skipped: Counter = field(default_factory=Counter)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path, max_bytes: int) -> Any:
    """Return the parsed JSON at ``path``, refused before reading when it is over ``max_bytes``."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise LabelsError(f'{path}: cannot read the label file: {exc.strerror}') from None
    if not os.path.isfile(path):
        raise LabelsError(f'{path}: the label file is not a regular file')
    if info.st_size > max_bytes:
        raise LabelsError(f'{path}: the label file is {info.st_size} bytes, over the limit of '
                          f'{max_bytes} bytes (--max-labels-bytes)')
    try:
        with open(path, 'rb') as stream:
            data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise LabelsError(f'{path}: cannot read the label file: {exc.strerror}') from None
    if len(data) > max_bytes:  # it grew since
        raise LabelsError(f'{path}: the label file is over the limit of {max_bytes} bytes '
                          '(--max-labels-bytes)')
    try:
        return json.loads(data.decode('utf-8-sig'))  # UTF-8, as JSON files are (RFC 8259)
    except UnicodeDecodeError as exc:
        raise LabelsError(f'{path}: the label file is not UTF-8 text: {exc.reason}') from None
    except json.JSONDecodeError as exc:
        raise LabelsError(f'{path}: the label file is not valid JSON: {exc}') from None
    except RecursionError:
        raise LabelsError(f'{path}: the label file is nested too deeply') from None
    except ValueError as exc:  # an integer of thousands of digits
        raise LabelsError(f'{path}: the label file holds a value Python refuses: {exc}') \
            from None


def _list(document: dict, key: str, path: Path) -> list:
    value = document.get(key)
    if not isinstance(value, list):
        what = 'missing' if key not in document else f'a {type(value).__name__}, not a list'
        raise LabelsError(f'{path}: "{key}" is {what}; a COCO label file has lists of images, '
                          'annotations and categories')
    return value


def read_phrase_map(path: Path) -> dict[str, str]:
    """Return a phrase map file (YAML or JSON: category name or id -> phrase); LabelsError."""
    import yaml

    path = Path(path)
    try:
        if not path.is_file():
            raise LabelsError(f'{path}: the phrase map is not a file')
        if path.stat().st_size > MAX_PHRASE_MAP_BYTES:
            raise LabelsError(f'{path}: the phrase map is over {MAX_PHRASE_MAP_BYTES} bytes')
        mapping = yaml.safe_load(path.read_text(encoding='utf-8'))
    except OSError as exc:
        raise LabelsError(f'{path}: cannot read the phrase map: {exc.strerror}') from None
    except UnicodeDecodeError:
        raise LabelsError(f'{path}: the phrase map is not UTF-8 text') from None
    except yaml.YAMLError as exc:
        raise LabelsError(f'{path}: the phrase map is not YAML or JSON: '
                          f'{" ".join(str(exc).split())}') from None
    if not isinstance(mapping, dict) or not mapping:
        raise LabelsError(f'{path}: the phrase map must map category names or ids to phrases')
    out = {}
    for key, phrase in mapping.items():
        if not isinstance(phrase, str) or not phrase.strip():
            raise LabelsError(f'{path}: the phrase of {key!r} must be non-empty text; '
                              f'got {phrase!r}')
        out[str(key)] = phrase.strip()
    return out


def _categories(entries: list, path: Path, phrase_map: dict[str, str],
                skipped: Counter) -> tuple[dict[int, Category], set[int]]:
    """Return the categories to ask by id, and the ids of those without a name."""
    categories: dict[int, Category] = {}
    unnamed: set[int] = set()
    used: set[str] = set()
    for index, entry in enumerate(entries):
        cid = entry.get('id') if isinstance(entry, dict) else None
        if not _is_int(cid):
            raise LabelsError(f'{path}: category entry {index} has no integer "id"')
        if cid in categories or cid in unnamed:
            raise LabelsError(f'{path}: category id {cid} is given twice')
        name = entry.get('name')
        name = name.strip() if isinstance(name, str) else ''
        key = str(cid) if str(cid) in phrase_map else name
        phrase = phrase_map.get(key, name) if key else ''
        used.update(k for k in (str(cid), name) if k in phrase_map)  # the id's wins
        if not phrase:
            unnamed.add(cid)
            skipped[SKIP_CATEGORY] += 1
            continue
        categories[cid] = Category(cid, name, phrase)
    unknown = sorted(set(phrase_map) - used)
    if unknown:
        raise LabelsError(f'{path}: the phrase map names categories the labels do not have: '
                          f'{", ".join(unknown)}')
    if not categories:
        raise LabelsError(f'{path}: no category has a name to ask as a phrase')
    asked: dict[str, int] = {}
    for category in categories.values():
        other = asked.setdefault(phrase_key(category.phrase), category.category_id)
        if other != category.category_id:
            raise LabelsError(f'{path}: categories {other} and {category.category_id} both ask '
                              f'{category.phrase!r}; give one of them other wording (--phrases)')
    return categories, unnamed


def _size(value: Any) -> int | None:
    if _is_number(value) and math.isfinite(value) and value >= 1 and float(value).is_integer():
        return int(value)
    return None


MAX_STAMP_NS = 2**63 - 1  # a signed 64-bit count of nanoseconds, as rosbag2 keeps time


def _stamp_ns(entry: dict, where: str) -> int:
    """Return a bag frame entry's stamp in ns (``stamp_ns``, or ``stamp``: sec and nanosec)."""
    if 'stamp_ns' in entry and 'stamp' in entry:
        raise LabelsError(f'{where} gives both "stamp_ns" and "stamp"; give one')
    if 'stamp' in entry:
        stamp = entry['stamp']
        sec = stamp.get('sec') if isinstance(stamp, dict) else None
        nanosec = stamp.get('nanosec') if isinstance(stamp, dict) else None
        if not (_is_int(sec) and _is_int(nanosec) and sec >= 0 and 0 <= nanosec < 10**9):
            raise LabelsError(f'{where}: "stamp" must be {{"sec": s, "nanosec": ns}} with whole '
                              f'numbers, sec 0 or more and nanosec 0 to 999999999; got {stamp!r}')
        value = sec * 10**9 + nanosec
    else:
        value = entry.get('stamp_ns')
        if not _is_int(value):
            raise LabelsError(f'{where}: "stamp_ns" must be a whole number of nanoseconds; '
                              f'got {value!r}')
    if not 0 <= value <= MAX_STAMP_NS:
        raise LabelsError(f'{where}: the stamp {value} ns is negative or over {MAX_STAMP_NS}')
    return value


def _frame_of(entry: dict, path: Path, frames: dict[tuple[str, int], int]) -> tuple:
    """Return a bag frame entry's (topic, stamp_ns, bag); LabelsError when not one whole."""
    iid, topic, bag = entry['id'], entry.get('topic'), entry.get('bag')
    where = f'{path}: image {iid}'
    if not isinstance(topic, str) or not topic.strip():
        raise LabelsError(f'{where} has a stamp but no "topic" naming its image topic')
    if 'stamp_ns' not in entry and 'stamp' not in entry:
        raise LabelsError(f'{where} names topic {topic!r} but no "stamp_ns" or "stamp"')
    if bag is not None and (not isinstance(bag, str) or not bag):
        raise LabelsError(f'{where}: "bag" is not a bag path or SHA-256 (text)')
    key = (topic.strip(), _stamp_ns(entry, where))
    other = frames.setdefault(key, iid)
    if other != iid:
        raise LabelsError(f'{path}: images {other} and {iid} both name the frame of {key[0]} '
                          f'at {key[1]} ns')
    return key + (bag,)


def _images(entries: list, path: Path, skipped: Counter) -> tuple[dict[int, dict], set[int]]:
    """Return the usable image entries by id, and the ids of entries skipped for their size."""
    images: dict[int, dict] = {}
    bad_size: set[int] = set()
    frames: dict[tuple[str, int], int] = {}
    for entry in entries:
        iid = entry.get('id') if isinstance(entry, dict) else None
        name = entry.get('file_name') if isinstance(entry, dict) else None
        frame = None
        if _is_int(iid) and any(k in entry for k in ('topic', 'stamp_ns', 'stamp')):
            frame = _frame_of(entry, path, frames)
            if not isinstance(name, str) or not name.strip():
                name = f'{frame[0]} at {frame[1]} ns'
        if not _is_int(iid) or not isinstance(name, str) or not name.strip():
            skipped[SKIP_IMAGE_ENTRY] += 1
            continue
        if iid in images or iid in bad_size:
            raise LabelsError(f'{path}: image id {iid} is given twice')
        width, height = entry.get('width'), entry.get('height')
        if (width is not None and _size(width) is None) or \
                (height is not None and _size(height) is None):
            bad_size.add(iid)
            skipped[SKIP_IMAGE_SIZE] += 1
            continue
        images[iid] = {'file_name': name, 'width': _size(width), 'height': _size(height),
                       'boxes': [], 'frame': frame or (None, None, None)}
    return images, bad_size


def _annotation_box(entry: dict) -> tuple[Box | None, str | None]:
    """Return an annotation's (x1, y1, x2, y2), or None and the reason it cannot be used."""
    bbox = entry.get('bbox')
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return None, SKIP_BAD_BOX
    if not all(math.isfinite(v) for v in bbox):
        return None, SKIP_NON_FINITE
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0) or not math.isfinite(x + w) or not math.isfinite(y + h):
        return None, SKIP_EMPTY_BOX
    return (x, y, x + w, y + h), None


def read_labels(path: Path, max_bytes: int = DEFAULT_MAX_LABELS_BYTES,
                phrase_map: dict[str, str] | None = None) -> LabelSet:
    """Read and check a COCO label file; LabelsError naming what cannot be used.

    ``phrase_map`` (:func:`read_phrase_map`) gives categories, by name or id, other wording;
    a key that names no category is an error. Boxes are not yet fitted to their images
    (:func:`fit_boxes` does it once an image's size is known).
    """
    path = Path(path)
    document = _read_json(path, max_bytes)
    if isinstance(document, list):
        raise LabelsError(f'{path}: a list at the top level (COCO results, predictions?); a '
                          'COCO label file is an object with images, annotations, categories')
    if not isinstance(document, dict):
        raise LabelsError(f'{path}: the label file is not a COCO object with images, '
                          'annotations and categories')
    skipped: Counter = Counter()
    categories, unnamed = _categories(_list(document, 'categories', path), path,
                                      phrase_map or {}, skipped)
    images, bad_size = _images(_list(document, 'images', path), path, skipped)
    annotation_ids: set[Any] = set()
    for entry in _list(document, 'annotations', path):
        if not isinstance(entry, dict):
            skipped[SKIP_NOT_OBJECT] += 1
            continue
        aid = entry.get('id')
        if _is_int(aid) or isinstance(aid, str):
            if aid in annotation_ids:
                raise LabelsError(f'{path}: annotation id {aid!r} is given twice')
            annotation_ids.add(aid)
        reason = _annotation_reason(entry, images, bad_size, categories, unnamed)
        box = None
        if reason is None:
            box, reason = _annotation_box(entry)
        if reason is not None:
            skipped[reason] += 1
            continue
        images[entry['image_id']]['boxes'].append(LabelBox(entry['category_id'], box))
    return LabelSet(
        path,
        tuple(LabelledImage(iid, e['file_name'], e['width'], e['height'], tuple(e['boxes']),
                            *e['frame']) for iid, e in images.items()),
        tuple(categories.values()), skipped)


def _annotation_reason(entry: dict, images: dict[int, dict], bad_size: set[int],
                       categories: dict[int, Category], unnamed: set[int]) -> str | None:
    image_id, category_id = entry.get('image_id'), entry.get('category_id')
    if not _is_int(image_id) or image_id not in images:
        return SKIP_SKIPPED_IMAGE if image_id in bad_size else SKIP_UNKNOWN_IMAGE
    if not _is_int(category_id) or category_id not in categories:
        return SKIP_UNNAMED_CATEGORY if category_id in unnamed else SKIP_UNKNOWN_CATEGORY
    if entry.get('iscrowd'):
        return SKIP_CROWD
    return None


def fit_boxes(image: LabelledImage, width: int, height: int,
              skipped: Counter) -> tuple[LabelBox, ...]:
    """Return the image's boxes clipped to ``width`` x ``height``, counting what changed.

    A box partly outside the image is clipped to it (counted as :data:`CLIPPED`); one with no
    area inside it is left out (:data:`SKIP_OUTSIDE`).
    """
    fitted = []
    for label in image.boxes:
        x1, y1, x2, y2 = label.box
        clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height),
                   min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            skipped[SKIP_OUTSIDE] += 1
            continue
        if clipped != label.box:
            skipped[CLIPPED] += 1
        fitted.append(LabelBox(label.category_id, clipped))
    return tuple(fitted)
