# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Planning a bag: which frames the admission rule grounds, split into chunks.

The admission rule (:func:`kosmos_ros.admission.admit`: unsupported encodings refused,
unstamped frames at their bag time, ``rate_hz`` in message time, per topic) depends only on
each message's encoding and stamps, so it is decided for the whole bag here, in one read of
its image messages, exactly as ``ground_bag`` decides it. The admitted frames are then split,
in bag order, into chunks of ``chunk_frames`` (never between two messages with the same bag
time), each a bag-time window that a worker reads on its own: a long bag is many chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kosmos_ros.admission import admit, stamp_seconds
from kosmos_ros.bag.offline import pair_depth
from kosmos_ros.bag.reading import open_reader, select_image_topics
from kosmos_ros.corpus.options import CorpusOptions


@dataclass(frozen=True)
class Chunk:
    """Admitted frames of one bag, in a bag-time window [start_ns, stop_ns]."""

    bag_id: str
    path: str
    index: int
    start_ns: int
    stop_ns: int
    frames: tuple[tuple[str, int], ...]  # (topic, bag time in ns)

    @property
    def name(self) -> str:
        return f'{self.bag_id}/{self.index:06d}'

    def record(self) -> dict[str, Any]:
        return {'index': self.index, 'start_ns': self.start_ns, 'stop_ns': self.stop_ns,
                'frames': [list(f) for f in self.frames]}

    @classmethod
    def from_record(cls, bag_id: str, path: str, record: dict[str, Any]) -> Chunk:
        return cls(bag_id, path, int(record['index']), int(record['start_ns']),
                   int(record['stop_ns']),
                   tuple((str(t), int(ns)) for t, ns in record['frames']))


@dataclass(frozen=True)
class BagPlan:
    """A bag's image topics, how many of its messages are admitted, and its chunks."""

    bag_id: str
    path: str
    topics: tuple[str, ...]
    messages: int
    chunks: tuple[Chunk, ...]

    @property
    def frames(self) -> int:
        return sum(len(c.frames) for c in self.chunks)

    def record(self) -> dict[str, Any]:
        return {'bag_id': self.bag_id, 'path': self.path, 'topics': list(self.topics),
                'messages': self.messages, 'chunks': [c.record() for c in self.chunks]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BagPlan:
        bag_id, path = str(record['bag_id']), str(record['path'])
        return cls(bag_id, path, tuple(record['topics']), int(record['messages']),
                   tuple(Chunk.from_record(bag_id, path, c) for c in record['chunks']))


def plan_bag(bag_id: str, path: Path, options: CorpusOptions) -> BagPlan:
    """Return the plan of one bag; BagError when it cannot be read or used as asked."""
    from rosbags.highlevel import AnyReaderError

    gb = options.bag_options(path, path)
    reader = open_reader(path)
    try:
        stats = select_image_topics(reader, gb.topics, gb.depth_topics)
        pair_depth(reader, stats, gb)  # the depth options fail here, as in ground_bag
        topics = tuple(s.topic for s in stats)
        connections = [c for c in reader.connections if c.topic in topics]
        last: dict[str, float] = {}
        admitted: list[tuple[str, int]] = []
        messages = 0
        for conn, timestamp, raw in reader.messages(connections=connections):
            messages += 1
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except AnyReaderError:
                continue  # ground_bag counts it as a skip, with the reason
            admission = admit(getattr(msg, 'encoding', None), stamp_seconds(msg),
                              timestamp * 1e-9, last.get(conn.topic), gb.rate_hz)
            if admission.refused or admission.throttled:
                continue
            last[conn.topic] = admission.stamp
            admitted.append((conn.topic, timestamp))
    finally:
        reader.close()
    return BagPlan(bag_id, str(path), topics, messages,
                   tuple(_chunks(bag_id, str(path), admitted, options.chunk_frames)))


def _chunks(bag_id: str, path: str, admitted: list[tuple[str, int]],
            size: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    current: list[tuple[str, int]] = []

    def flush() -> None:
        chunks.append(Chunk(bag_id, path, len(chunks), current[0][1], current[-1][1],
                            tuple(current)))

    for frame in admitted:
        if len(current) >= size and frame[1] != current[-1][1]:
            flush()
            current = []
        current.append(frame)
    if current:
        flush()
    return chunks
