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
their reason. The output bag is closed whatever happens, so an interrupted run (Ctrl-C) leaves
a valid bag holding the frames done so far.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field, replace
import os
from pathlib import Path
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from kosmos_ros.bag import BagError
from kosmos_ros.bag.report import HtmlReport
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
        output: output rosbag2 folder (MCAP); must not exist unless ``overwrite``.
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


def open_reader(path: str | Path) -> Any:
    """Open a bag with ``rosbags.highlevel.AnyReader``; raise BagError with the reason."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = Path(path)
    if not path.exists():
        raise BagError(f'no bag at {path}: no such file or folder')
    _check_storage(path)
    try:
        reader = AnyReader([path], default_typestore=project_typestore())
        reader.open()
    except (AnyReaderError, FileNotFoundError, ValueError) as exc:  # ValueError: bad bytes
        raise BagError(f'cannot read bag {path}: {exc}') from None
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

def _open_writer(options: GroundBagOptions, store: Any) -> Any:
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    out = Path(options.output)
    if out.resolve() == Path(options.bag).resolve():
        raise BagError(f'the output {out} is the input bag')
    if out.exists():
        if not options.overwrite:
            raise BagError(f'output {out} exists already; choose another or pass --overwrite')
        if not (out / 'metadata.yaml').is_file():
            raise BagError(f'refusing to overwrite {out}: it is not a rosbag2 folder')
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    try:
        writer.open()
    except WriterError as exc:
        raise BagError(f'cannot write {out}: {exc}') from None
    return writer


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
               progress: bool = False) -> BagSummary:
    """Ground the bag as ``options`` say with ``engine``; return the summary.

    ``on_frame`` is called after every selected message (grounded, throttled or skipped).
    KeyboardInterrupt (also from ``on_frame``) ends the run early with ``interrupted`` set;
    the output bag is closed and valid in every case. Raises BagError or PromptError before
    any output is written when the bag or the query cannot be used.
    """
    query = Query(Task.parse(options.task), options.prompt,
                  max_new_tokens=options.max_new_tokens)
    engine.prepare(query, 640, 480)  # PromptError now rather than on every frame
    store = project_typestore()
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
        writer = _open_writer(options, store)
        try:
            _run(options, engine, reader, writer, store, summary, query, on_frame, progress,
                 lifters)
        finally:
            writer.close()
    finally:
        if depth_reader is not None:
            depth_reader.close()
        reader.close()
    return summary


def _index_depth(options: GroundBagOptions, reader: Any, pairings: dict[str, DepthPairing],
                 summary: BagSummary) -> dict[str, Lifter]:
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError

    try:
        return make_lifters(reader, pairings, options.depth,
                            {t: s.depth for t, s in summary.topics.items()})
    except (Ros1ReaderError, Ros2ReaderError) as exc:
        raise BagError(f'indexing the depth and camera_info topics of {options.bag} failed: '
                       f'{exc}') from None


def _run(options: GroundBagOptions, engine: Any, reader: Any, writer: Any, store: Any,
         summary: BagSummary, query: Query, on_frame: Callable | None, progress: bool,
         lifters: dict[str, Lifter]) -> None:
    from rosbags.rosbag1 import ReaderError as Ros1ReaderError
    from rosbags.rosbag2 import ReaderError as Ros2ReaderError
    from tqdm import tqdm

    writer.set_custom_data('kosmos_ros.source', str(options.bag))
    writer.set_custom_data('kosmos_ros.model', summary.model)
    writer.set_custom_data('kosmos_ros.query', f'{query.task.name.lower()}: {query.prompt}')
    if options.model_label:
        writer.set_custom_data('kosmos_ros.model_label', options.model_label)
    outputs = {}
    for s in summary.topics.values():
        outputs[s.topic] = (writer.add_connection(f'{s.base}/detections', DETECTION_2D_ARRAY,
                                                  typestore=store),
                            writer.add_connection(f'{s.base}/grounding', GROUNDING,
                                                  typestore=store),
                            writer.add_connection(f'{s.base}/detections_3d',
                                                  DETECTION_3D_ARRAY, typestore=store)
                            if s.topic in lifters else None)
    copies: dict[tuple[str, str], Any] = {}
    if options.copy_input:
        for conn in reader.connections:
            if (conn.topic, conn.msgtype) not in copies:
                copied = _copy_connection(writer, reader, conn, store)
                copies[conn.topic, conn.msgtype] = copied
                if copied is None:
                    summary.not_copied[conn.topic] = f'{conn.msgtype} has no ROS 2 definition'
        connections = reader.connections
    else:
        connections = [c for c in reader.connections if c.topic in summary.topics]
    total = sum(c.msgcount for c in connections if c.topic in summary.topics)
    report = HtmlReport(options.html, options.html_embed, summary) if options.html else None
    last_grounded: dict[str, float] = {}
    label = ' [TINY MODEL]' if options.model_label else ''
    bar = tqdm(total=total, unit=' frames', desc=f'grounding{label}', disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    started = time.monotonic()
    try:
        for conn, timestamp, raw in reader.messages(connections=connections):
            copy = copies.get((conn.topic, conn.msgtype))
            if copy is not None:
                data = raw if reader.is2 else store.ros1_to_cdr(raw, conn.msgtype)
                writer.write(copy, timestamp, data)
            s = summary.topics.get(conn.topic)
            if s is None:
                continue
            outcome = _ground_one(options, engine, reader, conn, timestamp, raw, s, query,
                                  last_grounded)
            if outcome.result is not None:
                det_conn, grd_conn, det3d_conn = outputs[s.topic]
                msg = outcome.header
                lifted = None
                if det3d_conn is not None:
                    lift = lifters[s.topic].lift(outcome.result,
                                                 header_stamp_ns(msg, timestamp),
                                                 str(msg.frame_id))
                    lifted = lift.lifted
                    outcome.public = replace(outcome.public, lifted=lifted,
                                             depth_note=lift.reason)
                writer.write(det_conn, timestamp, store.serialize_cdr(
                    detections_msg(store, outcome.result, msg), DETECTION_2D_ARRAY))
                writer.write(grd_conn, timestamp, store.serialize_cdr(
                    grounding_msg(store, outcome.result, msg, s.camera, lifted), GROUNDING))
                if det3d_conn is not None:
                    writer.write(det3d_conn, timestamp, store.serialize_cdr(
                        detections_3d_msg(store, outcome.result, lifted, msg),
                        DETECTION_3D_ARRAY))
                if report is not None:
                    report.add(outcome.public, outcome.frame)
            bar.update(1)
            bar.set_postfix(grounded=summary.grounded, skipped=summary.skipped, refresh=False)
            if on_frame is not None:
                on_frame(outcome.public)
            if options.limit and summary.grounded >= options.limit:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    except (Ros1ReaderError, Ros2ReaderError) as exc:
        raise BagError(f'reading {options.bag} failed after {bar.n} image messages: {exc}; '
                       f'{options.output} holds the results so far') from None
    finally:
        bar.close()
        summary.elapsed_s = time.monotonic() - started
        if report is not None:
            report.write()


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='ground_bag', description='Ground the images of a bag with KOSMOS-2 and write '
        'the detections and groundings into an output MCAP bag (no ROS runtime needed). With '
        'a registered depth image (16UC1 mm or 32FC1 m) and camera_info for an image topic, '
        'the boxes are also lifted to 3D (<base>/detections_3d and the phrase positions).',
        epilog=PAIRING_RULE + ' Automatic image topic selection leaves those depth topics '
        'out. Depth must be registered to the colour image, and the images rectified.')
    parser.add_argument('bag', help='rosbag2 folder, .mcap or .db3 file, or ROS 1 .bag')
    parser.add_argument('-o', '--output', help='output bag folder (default: BAG_grounded)')
    parser.add_argument('--topic', action='append', default=[],
                        help='image topic to ground (repeatable; default: automatic)')
    parser.add_argument('--task', default='caption',
                        help='caption, detailed_caption, find, question or raw')
    parser.add_argument('--prompt', default='', help='phrase, question or raw prompt')
    parser.add_argument('--max-new-tokens', type=int, default=64)
    parser.add_argument('--rate', type=float, default=0.0,
                        help='frames per second of message time per topic (0: every frame)')
    parser.add_argument('--limit', type=int, default=0, help='stop after N grounded frames')
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
    args = parser.parse_args(argv)

    from kosmos_ros.engine import EngineOptions, GroundingEngine
    from kosmos_ros.loading import ModelOptions
    from kosmos_ros.tiny_model import TINY_LABEL

    bag = Path(args.bag)
    output = Path(args.output) if args.output else bag.with_name(bag.stem + '_grounded')
    label = TINY_LABEL if args.tiny_model else ''
    try:
        task = Task.parse(args.task)
        if args.max_new_tokens < 1:
            raise ValueError(f'--max-new-tokens must be at least 1; got {args.max_new_tokens}')
        if args.rate < 0:
            raise ValueError(f'--rate must be 0 or more; got {args.rate}')
        options = GroundBagOptions(
            bag=bag, output=output, topics=tuple(args.topic), task=task, prompt=args.prompt,
            max_new_tokens=args.max_new_tokens, rate_hz=args.rate,
            copy_input=args.copy_input, overwrite=args.overwrite,
            html=Path(args.html) if args.html else None, html_embed=args.html_embed,
            limit=args.limit, model_label=label, depth_topics=tuple(args.depth_topic),
            camera_info_topics=tuple(args.camera_info_topic),
            depth_tolerance=args.depth_tolerance, depth_min=args.depth_min,
            depth_max=args.depth_max, use_depth=not args.no_depth)
        reader = open_reader(bag)  # bag errors before the (slow) model load
        try:
            pair_depth(reader, select_image_topics(reader, args.topic, args.depth_topic),
                       options)
        finally:
            reader.close()
    except (BagError, ValueError) as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    try:
        if args.tiny_model:
            print(f'ground_bag: using the {TINY_LABEL}', file=sys.stderr)
            model = ModelOptions(model=str(tiny_model_path()), local_files_only=True,
                                 device=args.device)
        else:
            model = ModelOptions(model=args.model, local_files_only=args.local_files_only,
                                 device=args.device, dtype=args.dtype,
                                 quantization=args.quantization)
        engine = GroundingEngine.load(model, EngineOptions(max_new_tokens=args.max_new_tokens))
    except ModelLoadError as exc:
        print(f'ground_bag: cannot load the model: {exc}', file=sys.stderr)
        return 1
    try:
        summary = ground_bag(options, engine, progress=not args.no_progress)
    except KosmosError as exc:
        print(f'ground_bag: error: {exc}', file=sys.stderr)
        return 2
    print(summary.describe())
    return 130 if summary.interrupted else 0


if __name__ == '__main__':
    sys.exit(main())
