# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``ground_bag``: ground every image of a bag offline and write the results into a new bag.

Reads rosbag2 (MCAP, sqlite3) and ROS 1 bags with ``rosbags``; needs no rclpy. Image topics
(``sensor_msgs/Image`` and ``CompressedImage``) are picked automatically (every raw topic,
and every compressed topic without its raw twin) or by name. Each selected frame, or those a
message-time rate admits (:func:`kosmos_ros.node.worker.rate_allows`, the node's rule), goes
through the same :class:`~kosmos_ros.engine.GroundingEngine` as the node. The output MCAP bag
holds ``<base>/detections`` (``vision_msgs/Detection2DArray``) and ``<base>/grounding``
(``kosmos_ros_interfaces/Grounding``) with the source headers and bag times, where ``<base>``
is the camera namespace of the image topic (``/camera/image_raw`` -> ``/camera``).

Depth: when the bag also holds a registered depth image topic (``16UC1`` in mm or ``32FC1``
in m) and a ``sensor_msgs/CameraInfo`` topic for an image topic (named with ``--depth-topic``
and ``--camera-info-topic``, or paired automatically by camera namespace: ``NS/depth/...`` or
``NS/aligned_depth_to_color/image_raw`` and ``NS/camera_info``; the exact rule is in
:mod:`kosmos_ros.bag.spatial`), every box is lifted to 3D as the node does: the output also
holds ``<base>/detections_3d`` (``vision_msgs/Detection3DArray``, metres in the camera's
optical frame, one per grounded frame, empty when it has no 3D) and the phrases of
``<base>/grounding`` carry their 3D position. Depth frames are matched by header stamp within
a tolerance; a frame without a match, or with too few valid depth pixels, gets no 3D and its
reason is counted in the summary.

Frames that cannot be used (corrupt JPEG, unsupported encoding, ...) are counted skips with
their reason. A damaged bag, or an output that cannot be written, is a BagError naming the
path and the reason. No output (bag, HTML report, frames) may be, hold or lie inside the input
(:func:`~kosmos_ros.bag.safety.check_outputs`). The output bag is closed whatever happens, so
an interrupted run (Ctrl-C, pressed any number of times) leaves a valid bag holding the frames
done so far (:class:`~kosmos_ros.bag.safety.SigintGuard`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field, replace
import functools
import os
from pathlib import Path
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.report import HtmlReport
from kosmos_ros.bag.safety import check_outputs, SigintGuard
from kosmos_ros.bag.spatial import (DepthOptions, DepthPairing, DepthStats, header_stamp_ns,
                                    is_depth_name, Lifter, make_lifters, pair_depth_topics,
                                    PAIRING_RULE)
from kosmos_ros.bag.typestore import (COMPRESSED_IMAGE, DETECTION_2D_ARRAY,
                                      DETECTION_3D_ARRAY, detections_3d_msg, detections_msg,
                                      GROUNDING, grounding_msg, IMAGE, IMAGE_TYPES,
                                      project_typestore)
from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.errors import ImageError, KosmosError, ModelLoadError
from kosmos_ros.images import frame_from_message, SUPPORTED_ENCODINGS
from kosmos_ros.node.worker import rate_allows, stamp_seconds

BAG_SUFFIXES = ('.mcap', '.db3', '.bag')
STORAGES = ('mcap', 'sqlite3')


@dataclass(frozen=True)
class GroundBagOptions:
    """What to ground and where to write it.

    Attributes:
        bag: input bag: a rosbag2 folder, a ``.mcap`` or ``.db3`` file, or a ROS 1 ``.bag``.
        output: output rosbag2 folder (MCAP); must not exist unless ``overwrite``, and must
            lie apart from the input and the HTML report (:func:`check_outputs`).
        topics: image topics to ground; empty picks them automatically.
        task: caption, detailed_caption, find, question or raw (name or number).
        prompt: the phrase, question or raw prompt of the task.
        max_new_tokens: generation budget per frame; None for the engine's default.
        rate_hz: ground at most this many frames per second of message time per topic;
            0 grounds every frame.
        copy_input: also copy every input topic into the output bag.
        overwrite: replace an existing output bag.
        html: write an HTML report with the annotated frames to this file.
        html_embed: embed the frames in the HTML file instead of writing them beside it.
        limit: stop after this many grounded frames (0: no limit).
        min_score: leave boxes scoring below this out of the detections (the node's
            ``min_score``); the grounding messages keep every phrase.
        model_label: a label printed with every summary (the tiny model's warning).
        depth_topics: depth image topics: one for every image topic, or one per image topic
            in their order; empty pairs them automatically (:mod:`kosmos_ros.bag.spatial`).
        camera_info_topics: camera_info topics, given as ``depth_topics`` are.
        depth_tolerance: largest stamp gap (s) between a colour and its depth image.
        depth_min: smallest valid depth (m).
        depth_max: largest valid depth (m).
        use_depth: False grounds in 2D only, whatever depth the bag holds.
    """

    bag: Path
    output: Path
    topics: tuple[str, ...] = ()
    task: Task | int | str = Task.CAPTION
    prompt: str = ''
    max_new_tokens: int | None = None
    rate_hz: float = 0.0
    copy_input: bool = False
    overwrite: bool = False
    html: Path | None = None
    html_embed: bool = False
    limit: int = 0
    min_score: float = 0.0
    model_label: str = ''
    depth_topics: tuple[str, ...] = ()
    camera_info_topics: tuple[str, ...] = ()
    depth_tolerance: float = 0.05
    depth_min: float = 0.1
    depth_max: float = 10.0
    use_depth: bool = True

    @property
    def depth(self) -> DepthOptions:
        return DepthOptions(self.depth_tolerance, self.depth_min, self.depth_max)


@dataclass
class TopicStats:
    """Per image topic: where its results go and what happened to its frames."""

    topic: str
    msgtype: str
    base: str
    camera: str
    messages: int = 0
    grounded: int = 0
    throttled: int = 0
    skipped: Counter = field(default_factory=Counter)
    pairing: DepthPairing | None = None
    depth: DepthStats = field(default_factory=DepthStats)

    @property
    def outputs(self) -> list[str]:
        names = ['detections', 'grounding']
        if self.pairing is not None and self.pairing.enabled:
            names.append('detections_3d')
        return [f'{self.base}/{name}' for name in names]

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class FrameOutcome:
    """One selected image message: grounded (``result``), throttled or skipped (``reason``).

    ``lifted`` holds, when the topic has depth, the 3D of each box (per phrase, per box, a
    :class:`~kosmos_ros.depth.Lifted`) and ``depth_note`` why the frame has no 3D, if so.
    """

    topic: str
    bag_time_ns: int
    stamp: float
    frame_id: str
    result: GroundingResult | None = None
    reason: str = ''
    throttled: bool = False
    lifted: tuple | None = None
    depth_note: str = ''


@dataclass
class BagSummary:
    """What a run did: per topic counts, time, and whether it was interrupted."""

    bag: Path
    output: Path
    query: Query
    rate_hz: float
    model: str
    model_label: str = ''
    topics: dict[str, TopicStats] = field(default_factory=dict)
    elapsed_s: float = 0.0
    interrupted: bool = False
    html: Path | None = None
    not_copied: dict[str, str] = field(default_factory=dict)

    @property
    def grounded(self) -> int:
        return sum(s.grounded for s in self.topics.values())

    @property
    def skipped(self) -> int:
        return sum(s.skipped_total for s in self.topics.values())

    def describe(self) -> str:
        label = f' [{self.model_label}]' if self.model_label else ''
        rate = f'{self.rate_hz:g} Hz of message time' if self.rate_hz > 0 else 'every frame'
        lines = [f'ground_bag: {self.bag} -> {self.output} (mcap)',
                 f'model: {self.model}{label}',
                 f'task {self.query.task.name.lower()}, prompt {self.query.prompt!r}, '
                 f'rate: {rate}']
        for s in self.topics.values():
            lines.append(f'{s.topic} ({s.msgtype}): {s.messages} messages, {s.grounded} '
                         f'grounded, {s.throttled} throttled, {s.skipped_total} skipped -> '
                         + ', '.join(s.outputs))
            for reason, count in s.skipped.most_common(5):
                lines.append(f'  skipped {count}x: {reason}')
            if s.pairing is not None:
                lines.append(f'  {s.pairing.describe()}')
                if s.pairing.enabled:
                    lines.extend(s.depth.lines())
        for topic, reason in self.not_copied.items():
            lines.append(f'not copied: {topic} ({reason})')
        speed = self.grounded / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines.append(f'{self.grounded} frames grounded in {self.elapsed_s:.1f} s '
                     f'({speed:.2f} frames/s){label}')
        if self.interrupted:
            lines.append(f'interrupted: {self.output} is a valid bag holding the '
                         f'{self.grounded} frames grounded before the interruption')
        if self.html:
            lines.append(f'html report: {self.html}')
        return '\n'.join(lines)


# -- reading -----------------------------------------------------------------------------------

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


def _reason(exc: BaseException) -> str:
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
                raise BagError(f'cannot read bag {path}: {_reason(exc)}') from None
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
        raise BagError(f'cannot read bag {path}: {_reason(exc)}') from None
    return reader


def output_base(topic: str, msgtype: str) -> str:
    """Return the camera namespace of an image topic (``/cam/image_raw`` -> ``/cam``)."""
    name = topic.rstrip('/')
    if msgtype == COMPRESSED_IMAGE and name.endswith('/compressed'):
        name = name[:-len('/compressed')]
    return name.rsplit('/', 1)[0] or name


def select_image_topics(reader: Any, requested: Sequence[str] = (),
                        exclude: Sequence[str] = ()) -> list[TopicStats]:
    """Pick the image topics to ground (or check the requested ones); raise BagError.

    Automatic selection leaves out the depth image topics: those in ``exclude`` and those
    named as the depth pairing rule names them (:func:`~kosmos_ros.bag.spatial.is_depth_name`).
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


# -- writing -----------------------------------------------------------------------------------

@dataclass
class _Output:
    """The open output bag: its writer and the connections the results and copies go to.

    ``results`` maps an image topic to its (detections, grounding, detections_3d or None)
    connections; ``copies`` an input (topic, type) to its copy, None when it cannot be copied.
    """

    writer: Any
    results: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)
    copies: dict[tuple[str, str], Any] = field(default_factory=dict)


def _open_writer(options: GroundBagOptions) -> Any:
    """Create the output bag (replacing an old one with ``overwrite``); BagError on failure.

    The output paths are checked again right before anything is deleted.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    out = Path(options.output)
    check_outputs(options.bag, out, options.html, options.html_embed, options.overwrite)
    try:
        if out.exists():  # check_outputs let through only a rosbag2 folder, with overwrite
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
    except (OSError, WriterError) as exc:
        raise BagError(f'cannot write the output bag {out}: {_reason(exc)}') from None
    return writer


def _add_connections(writer: Any, options: GroundBagOptions, reader: Any, store: Any,
                     summary: BagSummary, lifters: dict[str, Lifter]) -> _Output:
    """Describe the run in the output's metadata and add its result and copy connections."""
    writer.set_custom_data('kosmos_ros.source', str(options.bag))
    writer.set_custom_data('kosmos_ros.model', summary.model)
    writer.set_custom_data('kosmos_ros.query',
                           f'{summary.query.task.name.lower()}: {summary.query.prompt}')
    if options.model_label:
        writer.set_custom_data('kosmos_ros.model_label', options.model_label)
    output = _Output(writer)
    for s in summary.topics.values():
        output.results[s.topic] = (
            writer.add_connection(f'{s.base}/detections', DETECTION_2D_ARRAY, typestore=store),
            writer.add_connection(f'{s.base}/grounding', GROUNDING, typestore=store),
            writer.add_connection(f'{s.base}/detections_3d', DETECTION_3D_ARRAY,
                                  typestore=store) if s.topic in lifters else None)
    if options.copy_input:
        for conn in reader.connections:
            if (conn.topic, conn.msgtype) not in output.copies:
                copied = _copy_connection(writer, reader, conn, store)
                output.copies[conn.topic, conn.msgtype] = copied
                if copied is None:
                    summary.not_copied[conn.topic] = f'{conn.msgtype} has no ROS 2 definition'
    return output


def _copy_connection(writer: Any, reader: Any, conn: Any, store: Any) -> Any:
    """Add an output connection for an input connection; None when it cannot be copied.

    rosbag2 connections keep their own definition; ROS 1 messages are converted to CDR with
    the ROS 2 definition of their type, so only types the project typestore knows are copied.
    """
    qos = list(getattr(conn.ext, 'offered_qos_profiles', []) or [])
    if reader.is2 and conn.msgdef.data and conn.digest:
        return writer.add_connection(conn.topic, conn.msgtype, msgdef=conn.msgdef.data,
                                     rihs01=conn.digest, offered_qos_profiles=qos)
    if conn.msgtype in store.fielddefs:
        return writer.add_connection(conn.topic, conn.msgtype, typestore=store,
                                     offered_qos_profiles=qos)
    if reader.is2:
        return writer.add_connection(conn.topic, conn.msgtype, typestore=reader.typestore,
                                     offered_qos_profiles=qos)
    return None


def _close_writer(writer: Any, out: Path) -> None:
    """Close the output bag: its index, then ``metadata.yaml``; BagError on failure."""
    from rosbags.rosbag2 import WriterError

    try:
        writer.close()
    except (OSError, WriterError) as exc:
        raise BagError(f'cannot finish the output bag {out}: {_reason(exc)}') from None


def _open_report(options: GroundBagOptions, summary: BagSummary) -> HtmlReport | None:
    """Create the HTML report's folders now, so that an unusable place fails before the run."""
    if not options.html:
        return None
    report = HtmlReport(options.html, options.html_embed, summary)
    try:
        report.path.parent.mkdir(parents=True, exist_ok=True)
        if not report.embed:
            report.folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise BagError(f'cannot write the HTML report {report.path}: {_reason(exc)}') from None
    return report


def _write_report(report: HtmlReport) -> None:
    try:
        report.write()
    except OSError as exc:
        raise BagError(f'cannot write the HTML report {report.path}: {_reason(exc)}') from None


def pair_depth(reader: Any, stats: Sequence[TopicStats],
               options: GroundBagOptions) -> dict[str, DepthPairing]:
    """Pair the selected image topics with depth and camera_info (:mod:`.spatial`); BagError."""
    options.depth.check()
    topics = {name: info.msgtype for name, info in reader.topics.items()}
    return pair_depth_topics(topics, [(s.topic, s.msgtype) for s in stats],
                             options.depth_topics, options.camera_info_topics,
                             options.use_depth)


def _frame_id(msg: Any) -> str:
    return str(getattr(getattr(msg, 'header', None), 'frame_id', ''))


def ground_bag(options: GroundBagOptions, engine: Any, *,
               on_frame: Callable[[FrameOutcome], None] | None = None,
               progress: bool = False, guard: SigintGuard | None = None) -> BagSummary:
    """Ground the bag as ``options`` say with ``engine``; return the summary.

    ``on_frame`` is called after every selected message (grounded, throttled or skipped).
    KeyboardInterrupt (Ctrl-C, also from ``on_frame``) ends the run early with
    ``interrupted`` set; the output bag is closed and valid in every case. ``guard`` (a new
    :class:`~kosmos_ros.bag.safety.SigintGuard` when None) keeps Ctrl-C from cutting short the
    writing of a frame's results or the closing of the output. Raises BagError or PromptError
    before any output is written when the bag, an output path or the query cannot be used;
    BagError when the bag turns out damaged or the output cannot be written, after closing
    the output bag with the results so far.
    """
    query = Query(Task.parse(options.task), options.prompt,
                  max_new_tokens=options.max_new_tokens)
    engine.prepare(query, 640, 480)  # PromptError now rather than on every frame
    check_outputs(options.bag, options.output, options.html, options.html_embed,
                  options.overwrite)
    store = project_typestore()
    with guard or SigintGuard() as sigint:
        reader = open_reader(options.bag)
        depth_reader = None
        try:
            stats = select_image_topics(reader, options.topics, options.depth_topics)
            pairings = pair_depth(reader, stats, options)
            for s in stats:
                s.pairing = pairings[s.topic]
            summary = BagSummary(Path(options.bag), Path(options.output), query,
                                 options.rate_hz, engine.describe(), options.model_label,
                                 {s.topic: s for s in stats}, html=options.html)
            lifters: dict[str, Lifter] = {}
            if any(p.enabled for p in pairings.values()):
                # A second reader: depth images are read back while the first one iterates.
                depth_reader = open_reader(options.bag)
                lifters = _index_depth(options, depth_reader, pairings, summary)
            report = _open_report(options, summary)
            _ground_into_output(options, engine, reader, store, summary, on_frame, progress,
                                lifters, report, sigint)
        finally:
            with sigint.shield():
                if depth_reader is not None:
                    depth_reader.close()
                reader.close()
    return summary


def _index_depth(options: GroundBagOptions, reader: Any, pairings: dict[str, DepthPairing],
                 summary: BagSummary) -> dict[str, Lifter]:
    try:
        return make_lifters(reader, pairings, options.depth,
                            {t: s.depth for t, s in summary.topics.items()})
    except BagError as exc:  # a damaged bag, from the reader's messages
        raise BagError(f'indexing the depth and camera_info topics failed: {exc}') from None


def _ground_into_output(options: GroundBagOptions, engine: Any, reader: Any, store: Any,
                        summary: BagSummary, on_frame: Callable | None, progress: bool,
                        lifters: dict[str, Lifter], report: HtmlReport | None,
                        sigint: SigintGuard) -> None:
    """Open the output bag, ground into it, and close it whole whatever happens.

    KeyboardInterrupt ends the run with ``summary.interrupted``; opening and closing the
    output are shielded from Ctrl-C.
    """
    writer = None
    try:
        with sigint.shield():
            writer = _open_writer(options)
            output = _add_connections(writer, options, reader, store, summary, lifters)
        _run(options, engine, reader, output, store, summary, on_frame, progress, lifters,
             report, sigint)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if writer is not None:
            with sigint.shield():
                _finish(options, summary, writer, report, sigint)


def _finish(options: GroundBagOptions, summary: BagSummary, writer: Any,
            report: HtmlReport | None, sigint: SigintGuard) -> None:
    """Close the output bag, then write the HTML report; say so first when interrupted."""
    if summary.interrupted:
        again = '; Ctrl-C again is ignored' if sigint.active else ''
        print(f'ground_bag: interrupted; finishing {options.output} with the '
              f'{summary.grounded} frames grounded so far{again}', file=sys.stderr)
    try:
        _close_writer(writer, Path(options.output))
    finally:
        if report is not None:
            _write_report(report)


def _run(options: GroundBagOptions, engine: Any, reader: Any, output: _Output, store: Any,
         summary: BagSummary, on_frame: Callable | None, progress: bool,
         lifters: dict[str, Lifter], report: HtmlReport | None, sigint: SigintGuard) -> None:
    """Ground the selected messages into ``output``; KeyboardInterrupt ends it (Ctrl-C).

    A first Ctrl-C that comes while a frame's results are written takes effect before the
    next message, so every frame is written whole.
    """
    from tqdm import tqdm

    if options.copy_input:
        connections = reader.connections
    else:
        connections = [c for c in reader.connections if c.topic in summary.topics]
    total = sum(c.msgcount for c in connections if c.topic in summary.topics)
    last_grounded: dict[str, float] = {}
    label = ' [TINY MODEL]' if options.model_label else ''
    bar = tqdm(total=total, unit=' frames', desc=f'grounding{label}', disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    started = time.monotonic()
    try:
        for conn, timestamp, raw in reader.messages(connections=connections):
            sigint.check()
            copy = output.copies.get((conn.topic, conn.msgtype))
            if copy is not None:
                data = raw if reader.is2 else store.ros1_to_cdr(raw, conn.msgtype)
                with sigint.shield():
                    output.writer.write(copy, timestamp, data)
            s = summary.topics.get(conn.topic)
            if s is None:
                continue
            outcome = _ground_one(options, engine, reader, conn, timestamp, raw, s,
                                  summary.query, last_grounded)
            if outcome.result is not None:
                _lift(outcome, lifters.get(s.topic), timestamp)
                with sigint.shield():  # a frame's results are written whole, or not at all
                    _write_results(output.writer, output.results[s.topic], store, outcome,
                                   options.min_score, s.camera, timestamp)
                    if report is not None:
                        report.add(outcome.public, outcome.frame)
            bar.update(1)
            bar.set_postfix(grounded=summary.grounded, skipped=summary.skipped, refresh=False)
            if on_frame is not None:
                on_frame(outcome.public)
            if options.limit and summary.grounded >= options.limit:
                break
    except BagError as exc:
        raise BagError(f'{exc}; {options.output} holds the {summary.grounded} frames grounded '
                       'before') from None
    except OSError as exc:
        raise BagError(f'writing the results failed after {summary.grounded} frames: '
                       f'{_reason(exc)}') from None
    finally:
        bar.close()
        summary.elapsed_s = time.monotonic() - started


def _lift(outcome: _Outcome, lifter: Lifter | None, timestamp: int) -> None:
    """Lift a grounded frame's boxes to 3D when its topic has depth (sets ``lifted``)."""
    if lifter is None:
        return
    header = outcome.header
    lift = lifter.lift(outcome.result, header_stamp_ns(header, timestamp),
                       str(header.frame_id))
    outcome.public = replace(outcome.public, lifted=lift.lifted, depth_note=lift.reason)


def _write_results(writer: Any, connections: tuple[Any, Any, Any], store: Any,
                   outcome: _Outcome, min_score: float, camera: str, timestamp: int) -> None:
    """Write a grounded frame's detections, grounding and (with depth) 3D detections."""
    det_conn, grd_conn, det3d_conn = connections
    header, result, lifted = outcome.header, outcome.result, outcome.public.lifted
    writer.write(det_conn, timestamp, store.serialize_cdr(
        detections_msg(store, result, header, min_score), DETECTION_2D_ARRAY))
    writer.write(grd_conn, timestamp, store.serialize_cdr(
        grounding_msg(store, result, header, camera, lifted), GROUNDING))
    if det3d_conn is not None:
        writer.write(det3d_conn, timestamp, store.serialize_cdr(
            detections_3d_msg(store, result, lifted, header, min_score), DETECTION_3D_ARRAY))


@dataclass
class _Outcome:
    public: FrameOutcome
    header: Any = None
    frame: Any = None

    @property
    def result(self) -> GroundingResult | None:
        return self.public.result


def _ground_one(options: GroundBagOptions, engine: Any, reader: Any, conn: Any,
                timestamp: int, raw: bytes, s: TopicStats, query: Query,
                last_grounded: dict[str, float]) -> _Outcome:
    """Deserialize, throttle, convert and ground one image message (the node's order)."""
    from rosbags.highlevel import AnyReaderError

    s.messages += 1

    def skip(reason: str, stamp: float = timestamp * 1e-9, frame_id: str = '') -> _Outcome:
        s.skipped[reason] += 1
        return _Outcome(FrameOutcome(s.topic, timestamp, stamp, frame_id, reason=reason))

    try:
        msg = reader.deserialize(raw, conn.msgtype)
    except AnyReaderError as exc:
        return skip(f'cannot deserialize {conn.msgtype}: {exc}')
    stamp = stamp_seconds(msg) or timestamp * 1e-9  # unstamped: bag time, as the node's clock
    frame_id = _frame_id(msg)
    encoding = getattr(msg, 'encoding', None)
    if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
        # The node refuses these before its throttle; so does this tool.
        return skip(f'unsupported image encoding {encoding!r}', stamp, frame_id)
    if options.rate_hz > 0 and not rate_allows(stamp, last_grounded.get(s.topic),
                                               options.rate_hz):
        s.throttled += 1
        return _Outcome(FrameOutcome(s.topic, timestamp, stamp, frame_id, throttled=True))
    last_grounded[s.topic] = stamp
    try:
        frame = frame_from_message(msg, engine.options.max_pixels)
    except ImageError as exc:
        return skip(str(exc), stamp, frame_id)
    try:
        result = engine.ground(frame, query)
    except KosmosError as exc:
        return skip(f'inference failed: {exc}', stamp, frame_id)
    s.grounded += 1
    return _Outcome(FrameOutcome(s.topic, timestamp, stamp, frame_id, result=result),
                    msg.header, frame)


# -- the command -------------------------------------------------------------------------------

def tiny_model_path() -> Path:
    """Return the folder of the tiny random model, building it there once.

    ``$KOSMOS_ROS_TINY_MODEL_DIR`` names the folder; by default it is
    ``$XDG_CACHE_HOME/kosmos_ros/tiny_model`` (``~/.cache/...``).
    """
    from kosmos_ros.tiny_model import build_tiny_model

    folder = os.environ.get('KOSMOS_ROS_TINY_MODEL_DIR')
    if folder:
        path = Path(folder)
    else:
        cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
        path = cache / 'kosmos_ros' / 'tiny_model'
    if (path / 'config.json').is_file() and any(path.glob('*.safetensors')):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.tiny_model-', dir=path.parent))
    build_tiny_model(staging)
    try:
        os.replace(staging, path)
    except OSError:  # another process finished first, or an unusable folder is there
        shutil.rmtree(staging, ignore_errors=True)
        if not (path / 'config.json').is_file():
            raise
    return path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model options shared by ground_bag and the demo."""
    from kosmos_ros.loading import DEFAULT_MODEL

    group = parser.add_argument_group('model')
    group.add_argument('--model', default=DEFAULT_MODEL,
                       help=f'hub id or local folder of KOSMOS-2 (default: {DEFAULT_MODEL})')
    group.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    group.add_argument('--dtype', default='auto', help='auto, float32, float16 or bfloat16')
    group.add_argument('--quantization', default='none', help='none, 8bit or 4bit (CUDA)')
    group.add_argument('--local-files-only', action='store_true',
                       help='use the local folder or Hugging Face cache only (no network)')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ground_bag', description='Ground the images of a bag with KOSMOS-2 and write '
        'the detections and groundings into an output MCAP bag (no ROS runtime needed). With '
        'a registered depth image (16UC1 mm or 32FC1 m) and camera_info for an image topic, '
        'the boxes are also lifted to 3D (<base>/detections_3d and the phrase positions).',
        epilog=PAIRING_RULE + ' Automatic image topic selection leaves those depth topics '
        'out. Depth must be registered to the colour image, and the images rectified.')
    parser.add_argument('bag', help='rosbag2 folder, .mcap or .db3 file, or ROS 1 .bag')
    parser.add_argument('-o', '--output',
                        help='output bag folder, apart from the input (default: BAG_grounded '
                             'beside the bag, or beside its rosbag2 folder)')
    parser.add_argument('--topic', action='append', default=[],
                        help='image topic to ground (repeatable; default: automatic)')
    parser.add_argument('--task', default='caption',
                        help='caption, detailed_caption, find, question or raw')
    parser.add_argument('--prompt', default='', help='phrase, question or raw prompt')
    parser.add_argument('--max-new-tokens', type=int, default=64)
    parser.add_argument('--rate', type=float, default=0.0,
                        help='frames per second of message time per topic (0: every frame)')
    parser.add_argument('--limit', type=int, default=0, help='stop after N grounded frames')
    parser.add_argument('--min-score', type=float, default=0.0,
                        help='leave boxes scoring below this out of the detections (the '
                        "node's min_score; grounding keeps every phrase)")
    parser.add_argument('--copy-input', action='store_true', help='copy the input topics')
    parser.add_argument('--overwrite', action='store_true', help='replace the output bag')
    parser.add_argument('--html', help='write an HTML report with annotated frames here')
    parser.add_argument('--html-embed', action='store_true',
                        help='embed the frames in the HTML file (default: files beside it)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    depth = parser.add_argument_group('depth (3D)')
    depth.add_argument('--depth-topic', action='append', default=[],
                       help='registered depth image topic (sensor_msgs/Image, 16UC1 mm or '
                            '32FC1 m): once for every image topic, or once per --topic in '
                            'the same order (default: automatic, see below)')
    depth.add_argument('--camera-info-topic', action='append', default=[],
                       help='sensor_msgs/CameraInfo topic of the (rectified) images, given as '
                            '--depth-topic is (default: automatic)')
    depth.add_argument('--depth-tolerance', type=float, default=0.05,
                       help='largest header stamp gap between a colour and its depth image, '
                            'in seconds (default: 0.05)')
    depth.add_argument('--depth-min', type=float, default=0.1,
                       help='smallest valid depth in metres (default: 0.1)')
    depth.add_argument('--depth-max', type=float, default=10.0,
                       help='largest valid depth in metres (default: 10.0)')
    depth.add_argument('--no-depth', action='store_true',
                       help='ground in 2D only, whatever depth the bag holds')
    add_model_arguments(parser)
    parser.add_argument('--tiny-model', action='store_true',
                        help='use the tiny RANDOM test model (pipeline checks only; its '
                             'words are random)')
    return parser


def default_output(bag: Path) -> Path:
    """Return ``<bag>_grounded`` beside the bag, or beside its rosbag2 folder for a file in one.

    Never inside the input: the output must lie apart from it (:func:`check_outputs`).
    """
    source = bag.parent if bag.is_file() and (bag.parent / 'metadata.yaml').is_file() else bag
    if source.name in ('', '.', '..'):
        source = Path(os.path.abspath(source))
    return source.with_name(source.stem + '_grounded')


def _options(args: argparse.Namespace, label: str) -> GroundBagOptions:
    """Return the options of the command line; ValueError for an invalid value."""
    task = Task.parse(args.task)
    if args.max_new_tokens < 1:
        raise ValueError(f'--max-new-tokens must be at least 1; got {args.max_new_tokens}')
    if args.rate < 0:
        raise ValueError(f'--rate must be 0 or more; got {args.rate}')
    if not 0.0 <= args.min_score <= 1.0:
        raise ValueError(f'--min-score must be between 0 and 1; got {args.min_score}')
    bag = Path(args.bag)
    return GroundBagOptions(
        bag=bag, output=Path(args.output) if args.output else default_output(bag),
        topics=tuple(args.topic), task=task, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens, rate_hz=args.rate, copy_input=args.copy_input,
        overwrite=args.overwrite, html=Path(args.html) if args.html else None,
        html_embed=args.html_embed, limit=args.limit, min_score=args.min_score,
        model_label=label,
        depth_topics=tuple(args.depth_topic), camera_info_topics=tuple(args.camera_info_topic),
        depth_tolerance=args.depth_tolerance, depth_min=args.depth_min,
        depth_max=args.depth_max, use_depth=not args.no_depth)


def _load_engine(args: argparse.Namespace) -> Any:
    """Load the model the command line names; ModelLoadError."""
    from kosmos_ros.engine import EngineOptions, GroundingEngine
    from kosmos_ros.loading import ModelOptions
    from kosmos_ros.tiny_model import TINY_LABEL

    if args.tiny_model:
        print(f'ground_bag: using the {TINY_LABEL}', file=sys.stderr)
        model = ModelOptions(model=str(tiny_model_path()), local_files_only=True,
                             device=args.device)
    else:
        model = ModelOptions(model=args.model, local_files_only=args.local_files_only,
                             device=args.device, dtype=args.dtype,
                             quantization=args.quantization)
    return GroundingEngine.load(model, EngineOptions(max_new_tokens=args.max_new_tokens))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (1: no model, 2: an error, 130: Ctrl-C).

    After a Ctrl-C, SIGINT stays ignored until the process exits: the output is closed
    whole, and a Ctrl-C during the exit prints no traceback.
    """
    args = _parser().parse_args(argv)
    with SigintGuard(ignore_after=True) as sigint:
        try:
            return _command(args, sigint)
        except KeyboardInterrupt:
            print('ground_bag: interrupted', file=sys.stderr)
            return 130


def _command(args: argparse.Namespace, sigint: SigintGuard) -> int:
    from kosmos_ros.tiny_model import TINY_LABEL

    try:
        options = _options(args, TINY_LABEL if args.tiny_model else '')
        reader = open_reader(options.bag)  # bag errors before the (slow) model load
        try:
            pair_depth(reader, select_image_topics(reader, args.topic, args.depth_topic),
                       options)
        finally:
            reader.close()
        check_outputs(options.bag, options.output, options.html, options.html_embed,
                      options.overwrite)
    except (BagError, ValueError) as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    try:
        engine = _load_engine(args)
    except ModelLoadError as exc:
        print(f'ground_bag: cannot load the model: {exc}', file=sys.stderr)
        return 1
    try:
        summary = ground_bag(options, engine, progress=not args.no_progress, guard=sigint)
    except KosmosError as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    print(summary.describe())
    return 130 if summary.interrupted else 0


if __name__ == '__main__':
    sys.exit(main())
