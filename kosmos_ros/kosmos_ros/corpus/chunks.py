# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A finished chunk's results on disk: JSON with a schema, checked field by field when read.

A run folder may sit on shared storage where others can write, so nothing read back from it
may run code: a chunk is plain JSON (never a pickle), and :func:`load` accepts only the shape
:func:`dump` writes (every field's type and range, the chunk it belongs to), raising
:class:`DamagedChunk` otherwise; the run then grounds that chunk again. Floats survive the round
trip exactly (Python writes the shortest text that reads back to the same float; NaN as
``NaN``), so a resumed run's outputs equal an uninterrupted run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from typing import Any
import zlib

import numpy as np

from kosmos_ros.datatypes import (GroundedBox, GroundedPhrase, GroundingResult, PixelBox, Task,
                                  Timings)

FrameKey = tuple[int, int, int]


def frame_key(frame: Any) -> FrameKey:
    """Return (width, height, CRC-32 of the pixels) of a frame."""
    pixels = np.ascontiguousarray(frame.array)
    return frame.width, frame.height, zlib.crc32(pixels.data) ^ zlib.crc32(frame.order.encode())


@dataclass
class ChunkResult:
    """A grounded chunk: each frame's result, or the reason inference failed for it."""

    bag_id: str
    index: int
    results: dict[FrameKey, GroundingResult | str] = field(default_factory=dict)
    frames: int = 0
    worker: str = ''
    error: str = ''  # why the chunk's bag could not be read (no results then)


FORMAT = 1
SUFFIX = '.json'
MAX_TEXT = 1 << 20  # characters of one text field
MAX_ITEMS = 1 << 16  # frames of a chunk, phrases of a result, boxes of a phrase


class DamagedChunk(ValueError):
    """A chunk file that is not what :func:`dump` writes (the reason names the field)."""


def dump(result: ChunkResult) -> bytes:
    """Return the chunk's results as JSON bytes."""
    frames = []
    for key, value in result.results.items():
        entry: dict[str, Any] = {'key': list(key)}
        if isinstance(value, str):
            entry['error'] = value
        else:
            entry['result'] = _result_record(value)
        frames.append(entry)
    record = {'format': FORMAT, 'bag_id': result.bag_id, 'index': result.index,
              'frames': result.frames, 'worker': result.worker, 'results': frames}
    return json.dumps(record, ensure_ascii=True, separators=(',', ':')).encode('ascii')


def load(data: bytes, bag_id: str, index: int) -> ChunkResult:
    """Return chunk ``index`` of ``bag_id`` read from ``data``; DamagedChunk otherwise."""
    try:
        record = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DamagedChunk(f'not JSON ({exc})') from None
    r = _Reader(record, 'chunk')
    if r.field('format', int) != FORMAT:
        raise DamagedChunk(f'format is not {FORMAT}')
    if r.field('bag_id', str) != bag_id or r.field('index', int) != index:
        raise DamagedChunk(f'it is not chunk {index} of {bag_id}')
    out = ChunkResult(bag_id, index, frames=r.field('frames', int, low=0),
                      worker=r.field('worker', str))
    for entry in r.items('results'):
        key = tuple(entry.items('key', int))
        if len(key) != 3 or min(key) < 0:
            raise DamagedChunk(f'{entry.where}.key is not (width, height, checksum)')
        if 'error' in entry.record:
            out.results[key] = entry.field('error', str)
        else:
            out.results[key] = _result(entry.child('result'))
    return out


def _result_record(result: GroundingResult) -> dict[str, Any]:
    t = result.timings
    return {'task': int(result.task), 'prompt': result.prompt, 'text': result.text,
            'answer': result.answer, 'raw_text': result.raw_text,
            'image_size': list(result.image_size), 'tokens': result.num_generated_tokens,
            'timings': [t.preprocess, t.vision, t.generate, t.postprocess],
            'phrases': [{'text': p.text, 'start': p.start, 'end': p.end,
                         'boxes': [{'pixels': [b.pixels.x1, b.pixels.y1, b.pixels.x2,
                                               b.pixels.y2],
                                    'normalized': list(b.normalized),
                                    'patches': list(b.patch_indices), 'score': b.score,
                                    'given': b.given} for b in p.boxes]}
                        for p in result.phrases]}


def _result(r: _Reader) -> GroundingResult:
    try:
        task = Task(r.field('task', int))
    except ValueError:
        raise DamagedChunk(f'{r.where}.task is not a task number') from None
    size = r.items('image_size', int)
    if len(size) != 2 or min(size) < 1:
        raise DamagedChunk(f'{r.where}.image_size is not (width, height)')
    timings = r.items('timings', float)
    if len(timings) != 4:
        raise DamagedChunk(f'{r.where}.timings does not hold 4 stages')
    phrases = []
    for p in r.items('phrases'):
        boxes = []
        for b in p.items('boxes'):
            pixels, normalized = b.items('pixels', float), b.items('normalized', float)
            patches = b.items('patches', int)
            if len(pixels) != 4 or len(normalized) != 4 or len(patches) != 2:
                raise DamagedChunk(f'{b.where} is not a box (4 corners, 2 patches)')
            boxes.append(GroundedBox(PixelBox(*pixels), tuple(normalized), tuple(patches),
                                     b.field('score', float), b.field('given', bool)))
        phrases.append(GroundedPhrase(p.field('text', str), p.field('start', int, low=0),
                                      p.field('end', int, low=0), tuple(boxes)))
    return GroundingResult(task, r.field('prompt', str), r.field('text', str), tuple(phrases),
                           (size[0], size[1]), r.field('raw_text', str),
                           r.field('tokens', int, low=0), Timings(*timings),
                           r.field('answer', str))


class _Reader:
    """A JSON object read strictly: each field of the asked type, or DamagedChunk naming it."""

    def __init__(self, record: Any, where: str):
        if not isinstance(record, dict):
            raise DamagedChunk(f'{where} is not an object')
        self.record, self.where = record, where

    def _get(self, name: str) -> Any:
        if name not in self.record:
            raise DamagedChunk(f'{self.where}.{name} is missing')
        return self.record[name]

    def field(self, name: str, kind: type, low: int | None = None) -> Any:
        return _value(self._get(name), kind, f'{self.where}.{name}', low)

    def child(self, name: str) -> _Reader:
        return _Reader(self._get(name), f'{self.where}.{name}')

    def items(self, name: str, kind: type | None = None) -> list[Any]:
        values = self._get(name)
        where = f'{self.where}.{name}'
        if not isinstance(values, list) or len(values) > MAX_ITEMS:
            raise DamagedChunk(f'{where} is not a list')
        if kind is None:
            return [_Reader(v, f'{where}[{i}]') for i, v in enumerate(values)]
        return [_value(v, kind, f'{where}[{i}]') for i, v in enumerate(values)]


def _value(value: Any, kind: type, where: str, low: int | None = None) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DamagedChunk(f'{where} is not a number')
        return float(value)  # NaN and infinities too: kept as the engine gave them
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DamagedChunk(f'{where} is not an integer')
    if not isinstance(value, kind):
        raise DamagedChunk(f'{where} is not {kind.__name__}')
    if kind is str and len(value) > MAX_TEXT:
        raise DamagedChunk(f'{where} is too long')
    if low is not None and value < low:
        raise DamagedChunk(f'{where} is below {low}')
    return value
