# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""RefCOCO, RefCOCO+ and RefCOCOg read from the Parquet and JSON conversions hubs publish.

The original ``refs(unc).p`` / ``refs(umd).p`` files are Python pickles, and a pickle can run
code when it is loaded: they are refused, never opened. Three layouts are read:

- **lmms-lab Parquet** (``lmms-lab/RefCOCO``, ``RefCOCOplus``, ``RefCOCOg`` on Hugging Face:
  ``data/<split>-NNNNN-of-NNNNN.parquet``). One row per referred object: ``question_id``
  (string), ``image`` (struct of ``bytes`` and ``path``: the COCO image itself), ``question``
  (an instruction, unused), ``answer`` (list of strings: the object's referring expressions),
  ``segmentation``, ``bbox`` ([x, y, width, height], COCO pixels), ``iscrowd``, ``file_name``.
  Each expression of ``answer`` is one sample.
- **MDETR JSON** (``finetune_<refcoco|refcoco+|refcocog>_<split>.json`` of MDETR's
  pre-processed annotations, the files the KOSMOS-2 article evaluated on): COCO-style
  ``images`` (each one expression: ``id``, ``file_name``, ``height``, ``width``, ``caption``,
  ``dataset_name``) and ``annotations`` (``image_id``, ``bbox`` [x, y, width, height]). Images
  are ``<images>/<file_name>`` or, as the article's scripts lay them out,
  ``<images>/train2014/<file_name>``.
- **JSON lines** (one object a line; a ``split`` field, when present, selects rows):
  ``file_name`` or ``image`` (a path relative to the images folder), ``bbox``
  [x, y, width, height], and the expressions as ``sentences`` (strings, or objects with
  ``sent`` or ``raw``, as the refer toolkit's refs hold them), ``expressions``, ``answer`` or
  ``caption``; ``ref_id``, ``ann_id`` or ``id`` names the sample.

Rows with an empty expression or a box that is not four finite numbers with a positive width
and height are skipped and counted; a box outside its image is counted when the image is read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
import re
from typing import Any, Iterator, Sequence

from kosmos_ros.evaluation import EvaluationError

DATASETS = ('refcoco', 'refcoco+', 'refcocog')
PICKLE_SUFFIXES = ('.p', '.pkl', '.pickle')
MAX_JSON_BYTES = 512 << 20  # MDETR's largest file (RefCOCO train) is about 200 MB
LMMS_COLUMNS = ('question_id', 'image', 'answer', 'bbox', 'file_name')

SKIP_NO_TEXT = 'expression empty'
SKIP_BAD_BOX = 'box not four finite numbers with positive width and height'


@dataclass(frozen=True)
class Expression:
    """One referring expression and the box of the object it refers to."""

    sample_id: str
    dataset: str | None  # refcoco, refcoco+ or refcocog (None: not known)
    split: str
    text: str
    box: tuple[float, float, float, float]  # (x1, y1, x2, y2) pixels
    image: Path | None = None  # the image file, or
    image_bytes: bytes | None = None  # the encoded image (Parquet conversions embed it)
    file_name: str = ''
    image_size: tuple[int, int] | None = None  # (width, height) where the data gives it

    @property
    def image_key(self) -> str:
        """Names the image: samples of one image share it."""
        return str(self.image) if self.image is not None else f'embedded:{self.file_name}'


def refuse_pickle(path: Path) -> None:
    """Raise EvaluationError when ``path`` is (or looks like) a Python pickle."""
    path = Path(path)
    looks = path.suffix.lower() in PICKLE_SUFFIXES
    if not looks and path.is_file():
        with open(path, 'rb') as f:
            head = f.read(2)
        looks = len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle protocol
    if looks:
        raise EvaluationError(
            f'{path} is a Python pickle (like refs(unc).p): kosmos_eval never reads pickles, '
            'which can run code when loaded. Give a Parquet or JSON conversion instead: the '
            'lmms-lab/RefCOCO, RefCOCOplus or RefCOCOg Parquet files, or the '
            'finetune_refcoco*_<split>.json files of MDETR')


def _box(value: Any) -> tuple[float, float, float, float] | None:
    """Return a COCO [x, y, w, h] as (x1, y1, x2, y2), or None when it is not one."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    return (x, y, x + w, y + h)


def _texts(value: Any) -> list[str]:
    """Return the expressions of a field: a string, a list of strings or of refer sentences."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = []
    for item in value:
        if isinstance(item, dict):
            item = item.get('sent', item.get('raw'))
        if isinstance(item, str):
            out.append(item)
    return out


def dataset_name(given: str | None, path: Path) -> str | None:
    """Return the dataset a name gives (``RefCOCOplus`` is refcoco+), else the path's, or None.

    The path's: its name, or its folder's (the folder above ``data/`` in a hub's layout).

    Raises EvaluationError for a name that is none of the three.
    """
    if given:
        name = given.lower().replace('plus', '+')
        if name not in DATASETS:
            raise EvaluationError(f'unknown dataset {given!r}; expected one of '
                                  f'{", ".join(DATASETS)}')
        return name
    names = [path.name] + ([path.parent.name] if path.is_file() else [])
    if names[-1].lower() == 'data':  # a hub's layout: <dataset>/data/<split>-*.parquet
        names.append((path.parent.parent if path.is_file() else path.parent).name)
    found = re.findall(r'refcoco(?:g|\+|plus)?', ' '.join(names).lower())
    return found[0].replace('plus', '+') if found else None


@dataclass
class RefCoco:
    """Referring expressions of one dataset and split, from a file or a folder.

    ``path``: a Parquet, JSON or JSON-lines file, or a folder holding them (the split's
    files are picked by name). ``images``: the COCO images folder (MDETR JSON, JSON lines).
    """

    path: Path
    split: str
    dataset: str | None = None
    images: Path | None = None
    skipped: Counter = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.images = Path(self.images) if self.images else None
        if not self.path.exists():
            raise EvaluationError(f'{self.path}: no such file or folder')
        refuse_pickle(self.path)
        self.dataset = dataset_name(self.dataset, self.path)
        self.files = [self.path] if self.path.is_file() else self._find()
        for f in self.files:
            refuse_pickle(f)

    def _find(self) -> list[Path]:
        split, folder = self.split, self.path
        found = sorted(p for p in folder.rglob('*.parquet')
                       if p.name.startswith(f'{split}-') or p.stem == split
                       or p.parent.name == split)
        if not found:
            names = [f'{split}.json', f'{split}.jsonl']
            if self.dataset:
                names.insert(0, f'finetune_{self.dataset}_{split}.json')
            found = [folder / n for n in names if (folder / n).is_file()][:1]
            if not found and not self.dataset:
                found = sorted(folder.glob(f'finetune_*_{split}.json'))
                if len(found) > 1:
                    raise EvaluationError(
                        f'{folder}: {", ".join(p.name for p in found)} all hold split {split}; '
                        'name the dataset (--dataset refcoco, refcoco+ or refcocog)')
        if not found:
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                refuse_pickle(folder / pickles[0])
            raise EvaluationError(
                f'{folder}: no file of split {split!r}: looked for {split}-*.parquet, '
                f'{split}/*.parquet, finetune_<dataset>_{split}.json, {split}.json and '
                f'{split}.jsonl')
        return found

    def samples(self, limit: int | None = None) -> Iterator[Expression]:
        """Yield the expressions (at most ``limit``), grouped by object as the files hold them."""
        given = 0
        for path in self.files:
            if path.suffix == '.parquet':
                rows = self._parquet(path)
            elif path.suffix == '.jsonl':
                rows = self._json_lines(path)
            else:
                rows = self._mdetr(path)
            for sample in rows:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield sample

    def _expressions(self, sample_id: str, texts: Sequence[str], box: Any,
                     **image: Any) -> Iterator[Expression]:
        fitted = _box(box)
        texts = [' '.join(t.split()) for t in texts]
        if fitted is None:
            self.skipped[SKIP_BAD_BOX] += max(1, len(texts))
            return
        for index, text in enumerate(texts):
            if not text:
                self.skipped[SKIP_NO_TEXT] += 1
                continue
            name = sample_id if len(texts) == 1 else f'{sample_id}/{index}'
            yield Expression(name, self.dataset, self.split, text, fitted, **image)

    def _image_path(self, name: str) -> Path:
        base = self.images or (self.path if self.path.is_dir() else self.path.parent)
        candidates = [base / name] + [base / d / name for d in ('train2014', 'val2014')
                                      if d in name]
        return next((c for c in candidates if c.is_file()), candidates[-1])

    def _parquet(self, path: Path) -> Iterator[Expression]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            source = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise EvaluationError(f'{path}: not a readable Parquet file: {exc}') from None
        names = source.schema_arrow.names
        missing = [c for c in ('answer', 'bbox') if c not in names]
        if missing or not ({'image', 'file_name'} & set(names)):
            raise EvaluationError(
                f'{path}: columns {names} are not the lmms-lab RefCOCO layout (question_id, '
                'image, answer, bbox, file_name)')
        columns = [c for c in LMMS_COLUMNS if c in names]
        for batch in source.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                image = row.get('image') or {}
                data = image.get('bytes') if isinstance(image, dict) else None
                file_name = str(row.get('file_name') or
                                (image.get('path') if isinstance(image, dict) else '') or '')
                where = ({'image_bytes': data} if data else
                         {'image': self._image_path(file_name)})
                yield from self._expressions(str(row.get('question_id', '')),
                                             _texts(row.get('answer')), row.get('bbox'),
                                             file_name=file_name, **where)

    def _load_json(self, path: Path) -> Any:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise EvaluationError(f'{path}: {size} bytes, over the limit of {MAX_JSON_BYTES}')
        try:
            return json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvaluationError(f'{path}: not JSON: {exc}') from None

    def _mdetr(self, path: Path) -> Iterator[Expression]:
        data = self._load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get('images'), list) or \
                not isinstance(data.get('annotations'), list):
            raise EvaluationError(f'{path}: not the refexp layout of MDETR (a JSON object with '
                                  '"images" and "annotations" lists)')
        boxes: dict[Any, Any] = {}
        for ann in data['annotations']:
            if isinstance(ann, dict):
                boxes.setdefault(ann.get('image_id'), ann.get('bbox'))
        for entry in data['images']:
            if not isinstance(entry, dict) or not isinstance(entry.get('file_name'), str):
                raise EvaluationError(f'{path}: an image entry without a file_name: '
                                      f'{str(entry)[:120]}')
            if entry.get('dataset_name') and not self.dataset:
                self.dataset = dataset_name(str(entry['dataset_name']), path)
            width, height = entry.get('width'), entry.get('height')
            size = (int(width), int(height)) if isinstance(width, int) and \
                isinstance(height, int) else None
            yield from self._expressions(
                str(entry.get('id', '')), _texts(entry.get('caption')),
                boxes.get(entry.get('id')), image=self._image_path(entry['file_name']),
                file_name=entry['file_name'], image_size=size)

    def _json_lines(self, path: Path) -> Iterator[Expression]:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f'{path} line {number}: not JSON: {exc}') from None
                if not isinstance(row, dict):
                    raise EvaluationError(f'{path} line {number}: not a JSON object')
                if row.get('split') not in (None, self.split):
                    continue
                name = row.get('file_name') or row.get('image')
                if not isinstance(name, str) or not name:
                    raise EvaluationError(f'{path} line {number}: no file_name or image')
                texts: list[str] = []
                for key in ('sentences', 'expressions', 'answer', 'caption'):
                    texts += _texts(row.get(key))
                ident = next((row[k] for k in ('ref_id', 'ann_id', 'id') if k in row), number)
                yield from self._expressions(str(ident), texts, row.get('bbox'),
                                             image=self._image_path(name), file_name=name)
