# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The KOSMOS-2 article's grounding benchmarks run through the engine.

Prompts follow the article's evaluation data (microsoft/unilm ``kosmos-2/evaluation``):

- **Flickr30k Entities** (phrase grounding): one query per annotated phrase, the sentence up
  to the phrase as context and the phrase marked, ``<grounding> A man in<phrase> a blue
  hat</phrase>``; the model's next tokens are the phrase's boxes. The article writes
  ``<grounding>A man in <phrase>a blue hat</phrase>`` for its own tokenizer; the form here
  gives every word its leading-space mark with the Hugging Face tokenizer (``▁A ▁man ▁in``,
  ``▁a ▁blue ▁hat``), as the model card's ``<grounding><phrase> a snowman</phrase>`` does.
  A RAW query carries it (:func:`phrase_prompt`: the dataset's text neutralised like every
  user text).
- **RefCOCO, RefCOCO+, RefCOCOg** (referring expressions): the FIND task,
  ``<grounding><phrase> the man on the left</phrase>``.

Greedy decoding, as the article (beam 1; ``no_repeat_ngram_size`` 3 by default, its setting).
The boxes counted are those the model gives the prompt's phrase (or a later phrase spelled
the same: the article's matching), in generation order; :mod:`.benchmark_metrics` scores them.
All queries of one image share one vision pass.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby, islice
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.errors import KosmosError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.benchmark_metrics import (best_iou, box_in_image, hit,
                                                     phrase_grounding, referring_expressions)
from kosmos_ros.images import Frame, frame_from_compressed
from kosmos_ros.model.prompts import CharReader, neutralize, NFKC_READER

SCHEMA = 'kosmos_eval_benchmark/1'
KINDS = ('flickr30k', 'refcoco')
# The article's figures (percent), as its repository's README gives them.
ARTICLE = {('flickr30k', 'val'): 77.8, ('flickr30k', 'test'): 78.7,
           ('refcoco', 'val'): 52.32, ('refcoco', 'testA'): 57.42, ('refcoco', 'testB'): 47.26,
           ('refcoco+', 'val'): 45.48, ('refcoco+', 'testA'): 50.73,
           ('refcoco+', 'testB'): 42.24, ('refcocog', 'val'): 60.57, ('refcocog', 'test'): 61.65}
PREDICTED_KEPT = 10  # boxes of a phrase kept in a row (recall@10 needs ten)

SKIP_IMAGE = 'image missing or unreadable'
SKIP_SIZE = 'image size differs from its annotation'
SKIP_OUTSIDE = 'box outside the image'
SKIP_PROMPT = 'prompt the engine refuses'


def phrase_prompt(sentence: str, start: int, end: int,
                  reader: CharReader = NFKC_READER) -> str:
    """Return the phrase-grounding prompt of ``sentence[start:end]`` with its left context."""
    before = ' '.join(neutralize(sentence[:start], reader).split())
    phrase = ' '.join(neutralize(sentence[start:end], reader).split())
    if not phrase:
        raise EvaluationError(f'empty phrase at characters {start}-{end} of {sentence!r}')
    return f'<grounding>{" " + before if before else ""}<phrase> {phrase}</phrase>'


def read_image(path: Path | None = None, data: bytes | None = None) -> Frame:
    """Return a JPEG or PNG file (or its bytes) as a frame, pixels as stored.

    The size its header declares is checked before it is decoded (as the node decodes
    compressed images); EXIF orientation is ignored: the annotations are on the stored pixels.
    Raises EvaluationError when it cannot be read.
    """
    try:
        raw = data if data is not None else Path(path).read_bytes()
        return frame_from_compressed(SimpleNamespace(format='jpeg or png', data=raw))
    except OSError as exc:
        raise EvaluationError(f'{path}: {exc.strerror or exc}') from None
    except KosmosError as exc:
        raise EvaluationError(f'{path or "embedded image"}: {exc}') from None


def _query(kind: str, sample: Any, reader: CharReader) -> tuple[Query, str]:
    """Return the query of a sample and its phrase as written in it."""
    if kind == 'flickr30k':
        p = sample.phrase
        return Query(Task.RAW, phrase_prompt(sample.sentence, p.start, p.end, reader)), p.text
    return Query(Task.FIND, sample.text), sample.text


def _row(kind: str, sample: Any, truth: list, predicted: list, scores: list,
         prompt: str) -> dict[str, Any]:
    best = best_iou(predicted, truth, 1)
    row: dict[str, Any] = {'id': sample.sample_id}
    if kind == 'flickr30k':
        p = sample.phrase
        row.update(image=str(sample.image), image_id=sample.image_id,
                   sentence=sample.sentence, phrase=p.text, span=[p.start, p.end],
                   entity_id=p.entity_id, types=list(p.types))
    else:
        row.update(dataset=sample.dataset, image=str(sample.image or sample.file_name),
                   expression=sample.text)
    row.update(prompt=prompt, truth=[list(b) for b in truth],
               predicted=predicted[:PREDICTED_KEPT], scores=scores[:PREDICTED_KEPT],
               iou=best, hit=hit(predicted, truth, 1))
    return row


def _image_key(kind: str, sample: Any) -> str:
    return str(sample.image) if kind == 'flickr30k' else sample.image_key


def _ground_image(kind: str, group: list, engine: Any, skipped: Counter) -> list[dict]:
    """Ground every sample of one image; return their rows (the rest counted in ``skipped``)."""
    first = group[0]
    try:
        frame = read_image(first.image, getattr(first, 'image_bytes', None))
    except EvaluationError:
        skipped[SKIP_IMAGE] += len(group)
        return []
    size = (frame.width, frame.height)
    reader = engine.tokens.reader
    work = []
    for sample in group:
        if kind == 'flickr30k':
            if sample.image_size != size:
                skipped[SKIP_SIZE] += 1
                continue
            truth = list(sample.boxes)
        else:
            box = box_in_image(sample.box, *size)
            if box is None or (sample.image_size and sample.image_size != size):
                skipped[SKIP_OUTSIDE if box is None else SKIP_SIZE] += 1
                continue
            truth = [box]
        try:
            query, phrase = _query(kind, sample, reader)
            engine.prepare(query, *size)
            spelled = engine.read_phrase(phrase)
        except (KosmosError, ValueError):
            skipped[SKIP_PROMPT] += 1
            continue
        work.append((sample, truth, query, spelled))
    if not work:
        return []
    results = engine.ground_many(frame, [q for _, _, q, _ in work])
    rows = []
    for (sample, truth, query, spelled), result in zip(work, results):
        boxes = [b for p in result.phrases if ' '.join(p.text.split()) == spelled
                 for b in p.boxes if not b.given]
        predicted = [[b.pixels.x1, b.pixels.y1, b.pixels.x2, b.pixels.y2] for b in boxes]
        rows.append(_row(kind, sample, truth, predicted, [b.score for b in boxes],
                         query.prompt))
    return rows


def run_benchmark(kind: str, samples: Iterable[Any], engine: Any, limit: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  split: str = '', dataset: str | None = None,
                  skipped: Counter | None = None) -> dict[str, Any]:
    """Ground ``samples`` (a reader's, image by image) and score them as the article does.

    ``kind``: 'flickr30k' (:class:`~.flickr30k.PhraseSample`, recall@1) or 'refcoco'
    (:class:`~.refcoco.Expression`, accuracy@0.5). ``skipped``: the reader's counts, added to
    those of the run. ``progress(images, samples)`` is called after each image. Returns the
    result (rows and totals) ready for :func:`write_benchmark`.
    """
    if kind not in KINDS:
        raise EvaluationError(f'unknown benchmark {kind!r}; expected one of {", ".join(KINDS)}')
    counts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    images = 0
    samples = islice(samples, limit) if limit is not None else samples
    for _, group in groupby(samples, key=lambda s: _image_key(kind, s)):
        rows += _ground_image(kind, list(group), engine, counts)
        images += 1
        if progress:
            progress(images, len(rows))
    if kind == 'flickr30k':
        scores, dataset = phrase_grounding(rows), 'flickr30k_entities'
        article = ARTICLE.get(('flickr30k', split))
    else:
        scores = referring_expressions(rows)
        article = ARTICLE.get((dataset or '', split))
    total = Counter(skipped or {})
    total.update(counts)
    return {'schema': SCHEMA, 'benchmark': kind, 'dataset': dataset, 'split': split,
            'model': engine.describe(), 'images': images, 'samples': len(rows),
            'skipped': dict(sorted(total.items())), **scores,
            'article': {'value': None if article is None else article / 100.0,
                        'source': 'github.com/microsoft/unilm kosmos-2/README.md'},
            'rows': rows}


def write_benchmark(result: dict[str, Any], out: Path) -> Path:
    """Write ``benchmark.json`` (everything but the rows) and ``rows.jsonl`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'rows.jsonl', 'w', encoding='utf-8') as f:
        for row in result['rows']:
            f.write(json.dumps(row, allow_nan=False) + '\n')
    totals = {k: v for k, v in result.items() if k != 'rows'}
    path = out / 'benchmark.json'
    path.write_text(json.dumps(totals, indent=1, allow_nan=False) + '\n', encoding='utf-8')
    return path
