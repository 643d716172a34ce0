# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Labelled frames of bags: found by topic and header stamp, read as ``ground_bag`` reads them.

A label entry naming a ``topic`` and a stamp (:class:`~.labels.LabelledImage.is_frame`) is the
frame of that image topic whose header stamp is exactly that many nanoseconds; the record time
is never used, so an unstamped frame (stamp 0) is found only by a label of stamp 0, and two of
them on one topic are ambiguous. Each bag is opened with :func:`kosmos_ros.bag.reading.open_reader`
(rosbag2 MCAP and sqlite3, ROS 1) and read once, in order, only the labelled topics, until every
labelled frame is found; each frame is converted by
:func:`kosmos_ros.images.frame_from_message`, raw or compressed, and none is held once grounded.

A labelled frame that cannot be used is a counted skip with its reason: its topic is in no bag
or is not an image topic, no frame has its stamp, it cannot be decoded, its size differs from
its label entry, or a second frame with its topic and stamp turns up (ambiguous: the first
one's grounding is undone). A second copy read after the last labelled frame was found is
not seen: reading stops there.

The report's thumbnails need image files: :class:`WorstFrames` keeps, as JPEG bytes, only the
frames that may be among the worst misses and false positives (about 40, ties aside), and
writes those ``eval.json`` lists into ``OUT/frames/``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.evaluation import EvaluationError
from kosmos_ros.evaluation.labels import Category, LabelledImage
from kosmos_ros.evaluation.run import Detection, EvaluatedImage, Skip
from kosmos_ros.images import DEFAULT_MAX_PIXELS, Frame

FRAMES_FOLDER = 'frames'
SKIP_TOPIC_ABSENT = 'bag frame whose topic is in no bag'
SKIP_NOT_IMAGE = 'bag frame whose topic is not an image topic'
SKIP_NO_STAMP = 'bag frame not found (no frame with that stamp)'
SKIP_UNDECODED = 'bag frame that cannot be decoded'
SKIP_SIZE = 'bag frame size differs from its label entry'
SKIP_AMBIGUOUS = 'bag frame found twice (same topic and stamp)'
SKIP_UNDESERIALIZED = 'bag message on a labelled topic that cannot be deserialized'


def frame_file(output: Path, image_id: int) -> Path:
    """Return the absolute path a bag frame's thumbnail image is written to."""
    return Path(output).absolute() / FRAMES_FOLDER / f'image_{image_id}.jpg'


def check_bags(bags: Sequence[Path]) -> None:
    """Open and close every bag; EvaluationError naming the first that cannot be opened."""
    from kosmos_ros.bag.reading import open_reader

    for bag in bags:
        try:
            open_reader(bag).close()
        except BagError as exc:
            raise EvaluationError(f'--bag: {exc}') from None


@dataclass
class BagFrames:
    """The labelled frames of ``bags`` (a :class:`~.run.FrameSource`), read in bag order."""

    bags: Sequence[Path]
    images: Sequence[LabelledImage]
    output: Path
    max_pixels: int = DEFAULT_MAX_PIXELS
    skipped: Counter = field(default_factory=Counter)

    def __iter__(self) -> Iterator[tuple[LabelledImage, tuple[Path, Frame] | Skip]]:
        wanted = {(i.topic, i.stamp_ns): i for i in self.images if i.is_frame}
        found: set[tuple[str, int]] = set()
        ambiguous: set[tuple[str, int]] = set()
        topics: dict[str, str] = {}  # every labelled topic seen: its message type
        for bag in self.bags:
            if len(found) == len(wanted):
                break  # every labelled frame is found: the other bags are not opened
            for image, opened in self._read(bag, wanted, found, topics):
                key = (image.topic, image.stamp_ns)
                if key in ambiguous:
                    continue
                if isinstance(opened, Skip) and opened.reason == SKIP_AMBIGUOUS:
                    ambiguous.add(key)
                yield image, opened
        for key, image in wanted.items():
            if key in found:
                continue
            if image.topic not in topics:
                yield image, Skip(SKIP_TOPIC_ABSENT, f'{image.topic} is in none of the bags')
            elif topics[image.topic] not in _image_types():
                yield image, Skip(SKIP_NOT_IMAGE, f'{image.topic} is {topics[image.topic]}')
            else:
                yield image, Skip(SKIP_NO_STAMP, f'no frame of {image.topic} is stamped '
                                                 f'{image.stamp_ns} ns')

    def _read(self, bag: Path, wanted: dict[tuple[str, int], LabelledImage],
              found: set[tuple[str, int]],
              topics: dict[str, str]) -> Iterator[tuple[LabelledImage, tuple[Path, Frame] | Skip]]:
        from rosbags.highlevel import AnyReaderError

        from kosmos_ros.admission import stamp_nanoseconds
        from kosmos_ros.bag.reading import open_reader

        labelled = {topic for topic, _ in wanted}
        reader = open_reader(bag)
        try:
            connections = [c for c in reader.connections if c.topic in labelled]
            topics.update((c.topic, c.msgtype) for c in connections)
            images = [c for c in connections if c.msgtype in _image_types()]
            if not images:
                return
            for conn, _, raw in reader.messages(connections=images):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except AnyReaderError:
                    self.skipped[SKIP_UNDESERIALIZED] += 1
                    continue
                key = (conn.topic, stamp_nanoseconds(msg))
                image = wanted.get(key)
                if image is None:
                    continue
                if key in found:
                    yield image, Skip(SKIP_AMBIGUOUS, f'{key[0]} at {key[1]} ns in {bag}')
                    continue
                found.add(key)
                yield image, self._frame(image, msg)
                if len(found) == len(wanted):
                    return
        finally:
            reader.close()

    def _frame(self, image: LabelledImage, msg: Any) -> tuple[Path, Frame] | Skip:
        from kosmos_ros.errors import ImageError
        from kosmos_ros.images import frame_from_message

        try:
            frame = frame_from_message(msg, self.max_pixels)
        except ImageError as exc:
            return Skip(SKIP_UNDECODED, str(exc))
        if image.width not in (None, frame.width) or image.height not in (None, frame.height):
            return Skip(SKIP_SIZE, f'the frame is {frame.width}x{frame.height}, the label '
                                   f'entry says {image.width}x{image.height}')
        return frame_file(self.output, image.image_id), frame


def _image_types() -> tuple[str, ...]:
    from kosmos_ros.bag.typestore import IMAGE_TYPES

    return tuple(IMAGE_TYPES)


@dataclass
class WorstFrames:
    """Keeps the frames that may be in ``eval.json``'s worst lists (a :class:`~.run.FrameKeeper`).

    Each grounded frame's own misses (by area) and false positives (by score), at
    ``min_score``, are ranked with those seen so far; a frame is kept, as JPEG bytes, while
    one of them is among the ``count`` worst of its kind (ties kept).
    """

    categories: Sequence[Category]
    min_score: float
    count: int
    misses: list[tuple[float, int]] = field(default_factory=list)  # (area, image id)
    false_positives: list[tuple[float, int]] = field(default_factory=list)  # (score, id)
    jpegs: dict[int, bytes] = field(default_factory=dict)

    def keep(self, image: EvaluatedImage, frame: Frame, detections: list[Detection]) -> None:
        """Rank a grounded frame's misses and false positives; keep it if one may be shown."""
        import cv2

        from kosmos_ros.evaluation.matching import IOU_THRESHOLD, match, worst

        own = worst([image], match([image], detections, IOU_THRESHOLD), self.categories,
                    self.min_score, self.count)
        self.misses += [((b[2] - b[0]) * (b[3] - b[1]), image.image_id)
                        for b in (m['label_box'] for m in own['misses'])]
        self.false_positives += [(f['score'], image.image_id) for f in own['false_positives']]
        self.misses, self.false_positives = self._top(self.misses), \
            self._top(self.false_positives)
        if image.image_id in self._needed():
            ok, data = cv2.imencode('.jpg', cv2.cvtColor(frame.to_rgb(), cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                self.jpegs[image.image_id] = data.tobytes()
        for image_id in set(self.jpegs) - self._needed():
            del self.jpegs[image_id]

    def drop(self, image_id: int) -> None:
        """Forget a frame whose grounding was undone."""
        self.misses = [m for m in self.misses if m[1] != image_id]
        self.false_positives = [f for f in self.false_positives if f[1] != image_id]
        self.jpegs.pop(image_id, None)

    def _top(self, entries: list[tuple[float, int]]) -> list[tuple[float, int]]:
        if len(entries) <= self.count:
            return entries
        entries.sort(key=lambda e: -e[0])
        floor = entries[self.count - 1][0]
        return [e for e in entries if e[0] >= floor]

    def _needed(self) -> set[int]:
        return {i for _, i in self.misses} | {i for _, i in self.false_positives}

    def write(self, worst: dict[str, list[dict[str, Any]]], output: Path) -> list[Path]:
        """Write the frames ``worst`` shows into ``output/frames``; return their paths.

        The ``image_*.jpg`` files an earlier run left there are removed first.
        """
        folder = Path(output) / FRAMES_FOLDER
        wanted = {entry['image_id'] for entries in worst.values() for entry in entries
                  if entry['image_id'] in self.jpegs}
        written = []
        if wanted:
            folder.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():  # frames of an earlier run must not pass for this one's
            for stale in folder.glob('image_*.jpg'):
                stale.unlink()
        for image_id in sorted(wanted):
            path = frame_file(output, image_id)
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_bytes(self.jpegs[image_id])
            tmp.replace(path)
            written.append(path)
        return written
