# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The boxes of an existing ``kosmos_corpus`` run scored against labels: nothing grounded twice.

A labelled bag frame (topic and header stamp) is looked up in the run's ``index.parquet``
(read and schema-checked by :mod:`kosmos_ros.corpus.index`) by topic and stamp: the index
holds the stamp in seconds (float64, as :func:`kosmos_ros.admission.stamp_seconds` computes
it), so the label's stamp is turned into seconds the same way and compared exactly. A label
entry may name its bag (``"bag"``: the bag's path as the run recorded it, or its SHA-256);
it must when the run holds that topic and stamp in more than one bag.

Every frame the run grounded has at least one index row (a frame without any box has one row
with null phrase and box), so a labelled frame with rows is grounded (with or without boxes)
and one without rows was not grounded by this run (throttled, skipped, its bag failed or not
given): a counted skip, never a miss. A frame whose rows are damaged (a non-finite or inverted
box, a non-finite score, a size that is not positive or that its rows disagree on) is skipped
as a whole and its damaged rows counted.

A run grounds one task and prompt (:func:`source_of`): a FIND run whose prompt is one
category's phrase scores that category only; a caption or detailed caption run scores the
phrases its captions name, matched to categories as the node's follow goals compare phrases
(:func:`~.run.asked_phrases`, :func:`~kosmos_ros.tracking.association.phrase_key`). Anything
else is refused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
import json
import math
from pathlib import Path
import time
from typing import Any

from kosmos_ros.corpus import CorpusError
from kosmos_ros.errors import PromptError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.bag_frames import SKIP_SIZE
from kosmos_ros.evaluation.labels import fit_boxes, LabelledImage, LabelSet
from kosmos_ros.evaluation.run import (asked_phrases, Detection, EvaluatedImage, GroundedSet,
                                       MAX_NOTES, SKIP_LABELS_OF_SKIPPED)
from kosmos_ros.tracking.association import phrase_key

SKIP_FILE = 'image file (--run scores bag frames only)'
SKIP_NOT_GROUNDED = 'bag frame the run did not ground (no index row)'
SKIP_SEVERAL_BAGS = 'bag frame in several bags of the run (name its "bag")'
SKIP_TWICE = 'bag frame grounded twice in one bag (same topic and stamp)'
SKIP_DAMAGED_FRAME = 'bag frame with damaged index rows'
SKIP_DAMAGED_ROW = 'damaged index row (non-finite or inverted box or score, bad size)'
SKIP_OTHER_CATEGORY = 'label box of a category the find run did not ask'
CAPTION_TASKS = ('caption', 'detailed_caption')
CAPTION_STATEMENT = ('boxes of a {task} run: these figures measure the phrases its captions '
                     'named, matched to categories by phrase, not a search for every category '
                     'on every image')
_COLUMNS = ('bag', 'bag_sha256', 'topic', 'bag_time_ns', 'stamp', 'width', 'height', 'phrase',
            'x1', 'y1', 'x2', 'y2', 'score', 'given')


@dataclass
class RunIndex:
    """A checked run folder: its manifest, its index (pyarrow table), its task and prompt."""

    folder: Path
    manifest: dict[str, Any]
    table: Any
    task: str
    prompt: str


def read_run(folder: Path) -> RunIndex:
    """Read and check a run folder's manifest and index; EvaluationError with the reason.

    Refused: a folder that is not a ``kosmos_corpus`` run, a damaged manifest, a missing or
    unreadable index, columns that are missing or of another type, an index without rows, and
    one that holds more than one task and prompt (a run grounds one).
    """
    from kosmos_ros.corpus import index, manifest
    import pyarrow.compute as pc

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f'--run {folder}: not a folder')
    if not manifest.is_run_folder(folder):
        raise EvaluationError(f'--run {folder}: not a kosmos_corpus run folder (no '
                              f'{manifest.NAME} written by kosmos_corpus)')
    try:
        data = manifest.read(folder)
        if data is None:
            raise CorpusError(f'{folder} has no {manifest.NAME} yet: the run has not started')
        table = index.read_table(folder)
        index.check_part(table)
    except CorpusError as exc:
        raise EvaluationError(f'--run: {exc}') from None
    if not table.num_rows:
        raise EvaluationError(f'--run {folder}: the run grounded no frame (its index is empty)')
    pairs = table.select(['task', 'prompt']).group_by(['task', 'prompt']).aggregate([])
    if pairs.num_rows > 1:
        found = ', '.join(f'{t!r}/{p!r}' for t, p in zip(
            pairs['task'].to_pylist(), pairs['prompt'].to_pylist()))
        raise EvaluationError(f'--run {folder}: its index holds more than one task and prompt '
                              f'({found}); a run grounds one')
    task, prompt = pairs['task'][0].as_py(), pairs['prompt'][0].as_py()
    if task is None or prompt is None or pc.any(pc.is_null(table['topic'])).as_py():
        raise EvaluationError(f'--run {folder}: its index has rows without a task, prompt or '
                              'topic')
    if task != 'find' and task not in CAPTION_TASKS:
        raise EvaluationError(f'--run: a {task} run cannot be scored: only a find run (its '
                              "prompt one category's phrase) or a caption run has boxes of "
                              'named phrases')
    return RunIndex(folder, data, table, task, prompt)


def source_of(run: RunIndex, labels: LabelSet, engine: Any) -> tuple[LabelSet, dict[str, Any]]:
    """Return the labels the run can answer and ``eval.json``'s ``source`` (what was scored).

    ``engine`` only reads phrases (:meth:`~kosmos_ros.model.engine.GroundingEngine.read_phrase`),
    never grounds. EvaluationError for a run whose boxes answer no category.
    """
    source = {'run': str(run.folder.absolute()), 'status': run.manifest.get('status'),
              'task': run.task, 'prompt': run.prompt,
              'model': _run_model(run), 'min_score': _run_min_score(run)}
    if run.task in CAPTION_TASKS:
        source['statement'] = CAPTION_STATEMENT.format(task=run.task)
        return labels, source
    try:
        asked = phrase_key(engine.read_phrase(run.prompt))
    except PromptError as exc:
        raise EvaluationError(f"--run: the find run's prompt {run.prompt!r} cannot be read: "
                              f'{exc}') from None
    keys = asked_phrases(engine, labels.categories)
    chosen = [c for c in labels.categories if keys[c.category_id] == asked]
    if not chosen:
        raise EvaluationError(f'--run: the find run asked {run.prompt!r}, which is no '
                              "category's phrase: nothing to score (use --phrases to word a "
                              'category as the run asked it)')
    category, = chosen
    skipped = Counter(labels.skipped)
    images = []
    for image in labels.images:
        kept = tuple(b for b in image.boxes if b.category_id == category.category_id)
        skipped[SKIP_OTHER_CATEGORY] += len(image.boxes) - len(kept)
        images.append(replace(image, boxes=kept))
    source['statement'] = (f'boxes of a find run for {run.prompt!r}: only category '
                           f'{category.category_id} ({category.phrase!r}) is scored')
    return LabelSet(labels.path, tuple(images), (category,), +skipped), source


def _run_model(run: RunIndex) -> str:
    model = run.manifest.get('model', {}).get('description', '')
    if model:
        return model
    values = run.table['model'].unique().to_pylist()
    return values[0] if len(values) == 1 and values[0] else 'unknown'


def _run_min_score(run: RunIndex) -> float | None:
    try:
        value = json.loads(run.table['options'][0].as_py() or '{}').get('min_score')
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def stamp_seconds(stamp_ns: int) -> float:
    """Return a stamp in seconds exactly as the index holds it (the header's sec + nanosec)."""
    return float(stamp_ns // 1_000_000_000) + float(stamp_ns % 1_000_000_000) * 1e-9


def grounded_from_run(run: RunIndex, labels: LabelSet, engine: Any,
                      limit: int = 0) -> GroundedSet:
    """Build, from the run's index rows, the grounded set a grounding of ``labels`` gives.

    A label entry's ``"bag"`` picks among the bags holding its frame. Images and detections
    keep the label file's order; ``limit`` uses the first N usable images only (0: all).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.monotonic()
    keys = asked_phrases(engine, labels.categories)
    category_of = {key: category_id for category_id, key in keys.items()}
    grounded = GroundedSet(labels, skipped=Counter(labels.skipped))
    topics = sorted({i.topic for i in labels.images if i.is_frame})
    wanted = pa.array(topics, pa.string())
    table = run.table.filter(pc.is_in(run.table['topic'], value_set=wanted))
    frames: dict[tuple[str, float], dict[tuple[str, int], list[dict]]] = defaultdict(
        lambda: defaultdict(list))
    for row in table.select(list(_COLUMNS)).to_pylist():
        frames[(row['topic'], row['stamp'])][(row['bag_sha256'], row['bag_time_ns'])].append(row)
    for image in labels.images:
        if limit and len(grounded.images) >= limit:
            break
        if not image.is_frame:
            _skip(grounded, image, SKIP_FILE, '')
            continue
        found = frames.get((image.topic, stamp_seconds(image.stamp_ns)), {})
        named = image.bag
        if named is not None:
            found = {k: rows for k, rows in found.items()
                     if named in (k[0], rows[0]['bag'])}
        where = f'{image.topic} at {image.stamp_ns} ns' + (f' in {named}' if named else '')
        if not found:
            _skip(grounded, image, SKIP_NOT_GROUNDED, f'no index row for {where}')
        elif len({sha for sha, _ in found}) > 1:
            _skip(grounded, image, SKIP_SEVERAL_BAGS, ', '.join(sorted(
                {rows[0]['bag'] for rows in found.values()})))
        elif len(found) > 1:
            _skip(grounded, image, SKIP_TWICE, where)
        else:
            rows, = found.values()
            _add(grounded, image, rows, category_of)
    grounded.skipped = +grounded.skipped
    grounded.elapsed_s = time.monotonic() - started
    return grounded


def _add(grounded: GroundedSet, image: LabelledImage, rows: list[dict],
         category_of: dict[str, int]) -> None:
    width, height = rows[0]['width'], rows[0]['height']
    damaged = sum(1 for row in rows if _damaged(row, width, height))
    if damaged:
        grounded.skipped[SKIP_DAMAGED_ROW] += damaged
        _skip(grounded, image, SKIP_DAMAGED_FRAME, f'{damaged} of its {len(rows)} rows')
        return
    if image.width not in (None, width) or image.height not in (None, height):
        _skip(grounded, image, SKIP_SIZE, f'the run grounded it at {width}x{height}, the label '
                                          f'entry says {image.width}x{image.height}')
        return
    boxes = fit_boxes(image, width, height, grounded.skipped)
    grounded.images.append(EvaluatedImage(image.image_id, Path(rows[0]['bag']), width, height,
                                          boxes))
    for row in rows:
        category_id = None if row['phrase'] is None or row['given'] else \
            category_of.get(phrase_key(row['phrase']))
        if category_id is not None:
            grounded.detections.append(Detection(
                image.image_id, category_id, (row['x1'], row['y1'], row['x2'], row['y2']),
                float(row['score'])))


def _damaged(row: dict, width: Any, height: Any) -> bool:
    """Whether an index row is not what the run writes (a size, box or score it cannot hold)."""
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return True
    if (row['width'], row['height']) != (width, height):
        return True
    values = [row[name] for name in ('x1', 'y1', 'x2', 'y2', 'score')]
    if row['phrase'] is None:  # a frame without boxes: its row has none
        return any(v is not None for v in values)
    if any(v is None or not math.isfinite(v) for v in values) or row['given'] is None:
        return True
    return row['x2'] < row['x1'] or row['y2'] < row['y1']


def _skip(grounded: GroundedSet, image: LabelledImage, reason: str, detail: str) -> None:
    grounded.skipped[reason] += 1
    if image.boxes:
        grounded.skipped[SKIP_LABELS_OF_SKIPPED] += len(image.boxes)
    if len(grounded.notes) < MAX_NOTES:
        grounded.notes.append(f'image {image.image_id} ({image.file_name}): {reason}'
                              + (f': {detail}' if detail else ''))
