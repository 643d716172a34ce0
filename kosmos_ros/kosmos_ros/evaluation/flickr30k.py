# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Flickr30k Entities read from its published files, for phrase grounding.

The dataset (github.com/BryanPlummer/flickr30k_entities) has, per image id:

- ``Sentences/<id>.txt``: five captions, one a line, each annotated phrase written
  ``[/EN#<chain id>/<type 1>/.../<type n> <word 1> ... <word n>]``. Phrases of one
  coreference chain share its id; the chain id ``0`` marks ``notvisual`` phrases, never boxed.
- ``Annotations/<id>.xml``: PASCAL-VOC-like: ``<size>`` (``width``, ``height``, ``depth``) and
  ``<object>`` elements, each with one or more ``<name>`` (the chain ids it belongs to) and
  either a ``<bndbox>`` (``xmin``, ``ymin``, ``xmax``, ``ymax``, pixels) or the flags
  ``<nobndbox>`` and ``<scene>``.
- ``train.txt``, ``val.txt``, ``test.txt``: the image ids of each split, one a line.

The images themselves come from Flickr30k (``<images>/<id>.jpg``). A sentence's text is its
words joined by single spaces (the brackets and tags removed); each phrase keeps its character
span in that text. A phrase's ground truth is every box of its chain (the article's evaluation
hits a phrase when the prediction hits any of them). Phrases without a box (``notvisual``,
scene-only or not visible chains) are skipped and counted, as the article's evaluation skips
them; so are phrases with a box that lies outside the image.

Every file is untrusted: a malformed sentence or XML file, or a missing one, is an
:class:`~kosmos_ros.evaluation.EvaluationError` naming the file and what is wrong; XML with a
document type or entities is refused before it is parsed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Iterator
import xml.etree.ElementTree as ElementTree

from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.benchmark_metrics import box_in_image

SPLITS = ('train', 'val', 'test')
MAX_FILE_BYTES = 4 << 20  # a sentence or annotation file is a few kilobytes
_OPEN = re.compile(r'\[/EN#(\d+)((?:/[^/\s\]]+)+)$')
_IMAGE_ID = re.compile(r'[0-9A-Za-z_-]+')

SKIP_NOT_VISUAL = 'phrase not visual (chain 0)'
SKIP_NO_BOX = 'phrase without a box (scene or not visible)'
SKIP_OUTSIDE = 'phrase with a box outside the image'


@dataclass(frozen=True)
class Phrase:
    """An annotated phrase of a sentence."""

    text: str
    start: int  # character span of the phrase in the sentence's text
    end: int
    first_word: int  # index of its first word among the sentence's words
    entity_id: str  # the coreference chain id ('0': not visual)
    types: tuple[str, ...]  # people, clothing, bodyparts, animals, vehicles, ...


@dataclass(frozen=True)
class Sentence:
    text: str
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class Annotation:
    """An image's ``Annotations/<id>.xml``."""

    width: int
    height: int
    depth: int
    boxes: dict[str, list[tuple[float, float, float, float]]]  # chain id -> its boxes
    no_box: frozenset[str]  # chains annotated as not visible
    scene: frozenset[str]  # chains annotated as the whole scene


@dataclass(frozen=True)
class PhraseSample:
    """One phrase to ground: the image, the sentence, the phrase and its boxes."""

    image_id: str
    image: Path
    sentence_index: int
    sentence: str
    phrase: Phrase
    boxes: tuple[tuple[float, float, float, float], ...]
    image_size: tuple[int, int]  # (width, height) the annotation gives

    @property
    def sample_id(self) -> str:
        return f'{self.image_id}/{self.sentence_index}/{self.phrase.start}'


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise EvaluationError(f'{path}: {size} bytes; a Flickr30k Entities file is a few '
                                  f'kilobytes (at most {MAX_FILE_BYTES})')
        return path.read_text(encoding='utf-8')
    except FileNotFoundError:
        raise EvaluationError(f'{path}: no such file (is the folder the Flickr30k Entities '
                              'annotations, with Sentences/ and Annotations/?)') from None
    except UnicodeDecodeError as exc:
        raise EvaluationError(f'{path}: not UTF-8 text ({exc.reason} at byte '
                              f'{exc.start})') from None
    except OSError as exc:
        raise EvaluationError(f'{path}: cannot be read: {exc.strerror or exc}') from None


def parse_sentence(line: str, where: str = 'sentence') -> Sentence:
    """Return the text and annotated phrases of one line of a ``Sentences`` file."""
    words: list[str] = []
    phrases: list[Phrase] = []
    length = 0  # characters of the text so far
    current: tuple[str, tuple[str, ...], int, int] | None = None  # id, types, start, word

    def add_word(word: str) -> int:
        nonlocal length
        if words:
            length += 1
        words.append(word)
        length += len(word)
        return length - len(word)

    for token in line.split():
        if current is None and token.startswith('['):
            match = _OPEN.match(token)
            if not match:
                raise EvaluationError(f'{where}: {token!r} does not open a phrase as '
                                      '[/EN#<chain id>/<type> <words>] does')
            types = tuple(match.group(2).strip('/').split('/'))
            current = (match.group(1), types, -1, len(words))
            continue
        if current is not None:
            closing = token.endswith(']')
            word = token[:-1] if closing else token
            if not word:
                raise EvaluationError(f'{where}: a phrase of chain {current[0]} has an empty '
                                      'word before its ]')
            if '[' in word or ']' in word:
                raise EvaluationError(f'{where}: {token!r}: a bracket inside a phrase of chain '
                                      f'{current[0]} (phrases do not nest)')
            start = add_word(word)
            if current[2] < 0:
                current = (current[0], current[1], start, current[3])
            if closing:
                chain, types, begin, first = current
                phrases.append(Phrase(' '.join(words[first:]), begin, length, first, chain,
                                      types))
                current = None
            continue
        if ']' in token:
            raise EvaluationError(f'{where}: {token!r} closes a phrase that was not opened')
        add_word(token)
    if current is not None:
        raise EvaluationError(f'{where}: the phrase of chain {current[0]} is not closed by ]')
    return Sentence(' '.join(words), tuple(phrases))


def read_sentences(path: Path) -> list[Sentence]:
    """Return the sentences of a ``Sentences/<id>.txt`` file (blank lines skipped)."""
    path = Path(path)
    return [parse_sentence(line, f'{path} line {number}')
            for number, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]


def _number(element: ElementTree.Element, tag: str, where: str) -> int:
    found = element.find(tag)
    if found is None or found.text is None:
        raise EvaluationError(f'{where}: <{tag}> is missing')
    try:
        return int(found.text.strip())
    except ValueError:
        raise EvaluationError(f'{where}: <{tag}> is {found.text.strip()[:40]!r}, not a whole '
                              'number') from None


def read_annotation(path: Path) -> Annotation:
    """Return an ``Annotations/<id>.xml`` file's size, boxes by chain and flags."""
    path = Path(path)
    text = _read_text(path)
    if '<!DOCTYPE' in text or '<!ENTITY' in text:
        raise EvaluationError(f'{path}: XML with a document type or entities is refused (the '
                              'annotations have none; entities can expand without bound)')
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise EvaluationError(f'{path}: not well-formed XML: {exc}') from None
    if root.tag != 'annotation':
        raise EvaluationError(f'{path}: the root element is <{root.tag}>, not <annotation>')
    size = root.find('size')
    if size is None:
        raise EvaluationError(f'{path}: <size> is missing')
    width = _number(size, 'width', f'{path} <size>')
    height = _number(size, 'height', f'{path} <size>')
    depth = _number(size, 'depth', f'{path} <size>') if size.find('depth') is not None else 3
    if width <= 0 or height <= 0:
        raise EvaluationError(f'{path}: the image size {width}x{height} is empty')
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    no_box: set[str] = set()
    scene: set[str] = set()
    for index, obj in enumerate(root.findall('object')):
        where = f'{path} <object> {index + 1}'
        names = [n.text.strip() for n in obj.findall('name') if n.text and n.text.strip()]
        if not names:
            raise EvaluationError(f'{where}: no <name> (the chain ids it belongs to)')
        bndbox = obj.find('bndbox')
        if bndbox is not None:
            box = tuple(float(_number(bndbox, t, f'{where} <bndbox>'))
                        for t in ('xmin', 'ymin', 'xmax', 'ymax'))
            for name in names:
                boxes.setdefault(name, []).append(box)
            continue
        flags = {t: _number(obj, t, where) for t in ('nobndbox', 'scene')
                 if obj.find(t) is not None}
        if not flags:
            raise EvaluationError(f'{where}: neither <bndbox> nor the <nobndbox>/<scene> flags')
        if flags.get('nobndbox', 0) > 0:
            no_box.update(names)
        if flags.get('scene', 0) > 0:
            scene.update(names)
    return Annotation(width, height, depth, boxes, frozenset(no_box), frozenset(scene))


def read_split(path: Path) -> list[str]:
    """Return the image ids of a split file (``test.txt``), one a line."""
    path = Path(path)
    ids = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        image_id = line.strip()
        if not image_id:
            continue
        if not _IMAGE_ID.fullmatch(image_id):
            raise EvaluationError(f'{path} line {number}: {image_id[:60]!r} is not an image id')
        ids.append(image_id)
    return ids


@dataclass
class Flickr30kEntities:
    """The annotations folder (``Sentences/``, ``Annotations/``, split files) and the images.

    ``images`` defaults to ``<root>/flickr30k-images``. :meth:`samples` yields the phrases of a
    split image by image; :attr:`skipped` counts the phrases left out and why.
    """

    root: Path
    images: Path | None = None
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.images = Path(self.images) if self.images else self.root / 'flickr30k-images'
        missing = [n for n in ('Sentences', 'Annotations') if not (self.root / n).is_dir()]
        if missing:
            raise EvaluationError(f'{self.root}: no {" or ".join(missing)} folder; give the '
                                  'Flickr30k Entities annotations folder (unpacked '
                                  'annotations.zip of github.com/BryanPlummer/flickr30k_entities)')

    def split_ids(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise EvaluationError(f'unknown split {split!r}; Flickr30k Entities has '
                                  f'{", ".join(SPLITS)}')
        return read_split(self.root / f'{split}.txt')

    def image_samples(self, image_id: str) -> list[PhraseSample]:
        """Return the phrases of one image that have boxes (the others are counted)."""
        sentences = read_sentences(self.root / 'Sentences' / f'{image_id}.txt')
        annotation = read_annotation(self.root / 'Annotations' / f'{image_id}.xml')
        image = self.images / f'{image_id}.jpg'
        size = (annotation.width, annotation.height)
        out = []
        for index, sentence in enumerate(sentences):
            for phrase in sentence.phrases:
                reason = None
                boxes = annotation.boxes.get(phrase.entity_id, [])
                fitted = [box_in_image(b, *size) for b in boxes]
                if phrase.entity_id == '0':
                    reason = SKIP_NOT_VISUAL
                elif not boxes:
                    reason = SKIP_NO_BOX
                elif any(b is None for b in fitted):
                    reason = SKIP_OUTSIDE
                if reason:
                    self.skipped[reason] += 1
                    continue
                out.append(PhraseSample(image_id, image, index, sentence.text, phrase,
                                        tuple(fitted), size))
        return out

    def samples(self, split: str = 'test', limit: int | None = None
                ) -> Iterator[PhraseSample]:
        """Yield the boxed phrases of a split, image by image (at most ``limit`` phrases)."""
        given = 0
        for image_id in self.split_ids(split):
            for sample in self.image_samples(image_id):
                if limit is not None and given >= limit:
                    return
                given += 1
                yield sample
