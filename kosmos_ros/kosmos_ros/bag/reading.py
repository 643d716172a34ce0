# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading bags for ``ground_bag``, ``play_bag`` and the demo: opening, errors, image topics.

Reads rosbag2 (MCAP, sqlite3) and ROS 1 bags with ``rosbags``; needs no rclpy. A missing,
unknown or damaged bag is a BagError naming the path and the reason, also when the damage
shows only while its messages are read (:func:`open_reader`). Image topics
(``sensor_msgs/Image`` and ``CompressedImage``) are picked automatically (every raw topic, and
every compressed topic without its raw twin, leaving out depth images) or checked by name
(:func:`select_image_topics`).
"""

from __future__ import annotations

import functools
from pathlib import Path
import sqlite3
import struct
from typing import Any, Iterator, Sequence

from kosmos_ros.admission import camera_namespace, image_topic
from kosmos_ros.bag import BagError
from kosmos_ros.bag.pairing import is_depth_name
from kosmos_ros.bag.records import TopicStats
from kosmos_ros.bag.typestore import COMPRESSED_IMAGE, IMAGE, IMAGE_TYPES, project_typestore

BAG_SUFFIXES = ('.mcap', '.db3', '.bag')
STORAGES = ('mcap', 'sqlite3')


def _check_storage(path: Path) -> None:
    if path.is_file() and path.suffix not in BAG_SUFFIXES:
        raise BagError(f'unknown storage for {path}: expected a rosbag2 folder, a .mcap or '
                       '.db3 file, or a ROS 1 .bag file')
    if path.is_dir():
        metadata = path / 'metadata.yaml'
        if not metadata.is_file():
            raise BagError(f'{path} is not a rosbag2 folder: it has no metadata.yaml')
        import yaml
        try:
            info = yaml.safe_load(metadata.read_text())['rosbag2_bagfile_information']
            storage = info['storage_identifier']
        except (yaml.YAMLError, KeyError, TypeError) as exc:
            raise BagError(f'{metadata} is not rosbag2 metadata: {exc}') from None
        if storage not in STORAGES:
            raise BagError(f'unknown storage {storage!r} in {metadata}; readable storages: '
                           + ', '.join(STORAGES))


@functools.cache
def _read_errors() -> tuple[type[BaseException], ...]:
    """Return what rosbags raises on a damaged or unreadable bag.

    Its own errors; the database errors of apsw and sqlite3, which its sqlite3 storage lets
    through (a page of zeros: ``apsw.CorruptError``); OSError; and the built-in
    errors of its MCAP and ROS 1 parsers, which index, decode and size the bytes they read
    without checks (an 8-byte MCAP: TypeError; a flipped byte: KeyError, AssertionError,
    UnicodeDecodeError, OverflowError, or MemoryError for a garbage length). Caught only around
    rosbags' own calls (opening a bag, taking its next message), never around this package's.
    """
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError

    errors: tuple[type[BaseException], ...] = (
        AnyReaderError, Ros1ReaderError, Ros2ReaderError, sqlite3.DatabaseError, OSError,
        AssertionError, EOFError, IndexError, KeyError, MemoryError, OverflowError,
        struct.error, TypeError, ValueError)
    try:
        import apsw
    except ImportError:  # a rosbags without apsw
        return errors
    return errors + (apsw.Error,)


def failure_reason(exc: BaseException) -> str:
    """Return why an operation failed, for a one-line message.

    A library's own message; an OS error's reason and path; for a parser's built-in error on
    damaged bytes, its type and text.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return f'{exc.strerror}: {exc.filename}' if exc.filename else exc.strerror
    text = str(exc)
    if type(exc).__module__ != 'builtins' or isinstance(exc, OSError):
        return text
    return f'damaged data ({type(exc).__name__}{": " + text if text else ""})'


@functools.cache
def _reader_class() -> type:
    """Return ``AnyReader`` whose message iteration raises BagError on a damaged bag."""
    from rosbags.highlevel import AnyReader

    class CheckedReader(AnyReader):
        def messages(self, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, int, Any]]:
            return _checked_messages(super().messages(*args, **kwargs), self.paths[0])

    return CheckedReader


def _checked_messages(messages: Iterator[tuple[Any, int, Any]],
                      path: Path) -> Iterator[tuple[Any, int, Any]]:
    """Yield from rosbags' ``messages``; its errors on a damaged bag become BagError."""
    try:
        while True:
            try:
                item = next(messages)
            except StopIteration:
                return
            except _read_errors() as exc:
                raise BagError(f'cannot read bag {path}: {failure_reason(exc)}') from None
            yield item
    finally:
        messages.close()


def open_reader(path: str | Path) -> Any:
    """Open a bag with ``rosbags.highlevel.AnyReader``; raise BagError with the reason.

    The reader's ``messages`` raises BagError too when the bag turns out to be damaged.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f'no bag at {path}: no such file or folder')
    _check_storage(path)
    store = project_typestore()
    try:
        reader = _reader_class()([path], default_typestore=store)
        reader.open()
    except _read_errors() as exc:
        raise BagError(f'cannot read bag {path}: {failure_reason(exc)}') from None
    return reader


def output_base(topic: str, msgtype: str) -> str:
    """Return the camera namespace of an image topic (``/cam/image_raw`` -> ``/cam``).

    A topic at the top level (``/image_raw``) is its own base.
    """
    compressed = msgtype == COMPRESSED_IMAGE
    return camera_namespace(topic, compressed) or image_topic(topic, compressed)


def select_image_topics(reader: Any, requested: Sequence[str] = (),
                        exclude: Sequence[str] = ()) -> list[TopicStats]:
    """Pick the image topics to ground (or check the requested ones); raise BagError.

    Automatic selection leaves out the depth image topics: those in ``exclude`` and those
    named as the depth pairing rule names them
    (:func:`~kosmos_ros.bag.depth_lifting.is_depth_name`).
    """
    topics = reader.topics
    images = {name: info.msgtype for name, info in topics.items()
              if info.msgtype in IMAGE_TYPES}
    described = ', '.join(f'{n} ({i.msgtype})' for n, i in sorted(topics.items())) or 'none'
    if requested:
        for name in requested:
            if name not in topics:
                raise BagError(f'topic {name} is not in the bag; image topics: '
                               + (', '.join(sorted(images)) or 'none'))
            if name not in images:
                raise BagError(f'topic {name} has type {topics[name].msgtype}, not '
                               'sensor_msgs/msg/Image or CompressedImage')
        chosen = list(dict.fromkeys(requested))
    else:
        colour = {n: t for n, t in images.items()
                  if n not in exclude and not (t == IMAGE and is_depth_name(n))}
        raw_bases = {output_base(n, t) for n, t in colour.items() if t == IMAGE}
        chosen = sorted(n for n, t in colour.items()
                        if t == IMAGE or output_base(n, t) not in raw_bases)
    if not chosen:
        raise BagError(f'no image topic (sensor_msgs/msg/Image or CompressedImage) in the '
                       f'bag; its topics: {described}')
    stats, used = [], set()
    for name in chosen:
        base = output_base(name, images[name])
        if base in used:
            base = name.rstrip('/')
        used.add(base)
        stats.append(TopicStats(name, images[name], base, base.rsplit('/', 1)[-1] or base))
    return stats
