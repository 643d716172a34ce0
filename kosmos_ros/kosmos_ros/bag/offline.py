# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Offline grounding of a whole bag: :func:`ground_bag`, the run behind the command.

Each selected image message is deserialized and admitted by the node's rule
(:func:`kosmos_ros.admission.admit`: unsupported encodings refused before the throttle,
unstamped frames take their bag time, ``rate_hz`` in message time), converted, grounded by
the same :class:`~kosmos_ros.model.engine.GroundingEngine` as the node, lifted to 3D when its topic
has depth (:mod:`kosmos_ros.bag.depth_lifting`), and its results written whole into the output bag
(:mod:`kosmos_ros.bag.output`). Frames that cannot be used are counted skips with their
reason. The output bag is closed whatever happens, so an interrupted run (Ctrl-C, pressed any
number of times) leaves a valid bag holding the frames done so far
(:class:`~kosmos_ros.bag.safety.SigintGuard`).

With ``track``, each selected topic has one :class:`~kosmos_ros.tracking.stream.TrackStream`
(the node's tracking). Every admitted frame (grounded or throttled by ``rate_hz``) is converted
once and given to its ``on_frame``, unless the stream's ``track_rate_hz`` skips it (then it is
not converted for tracking); a grounded frame's result follows with ``on_result`` right after.
Each tracked frame's tracks are written to ``<base>/tracks`` (and, with depth, lifted to
``<base>/tracks_3d``) with the frame's header, at its bag time, in the same shielded write as
its results. A frame the tracker cannot use (:class:`~kosmos_ros.tracking.flow.TrackingError`,
or a throttled frame that cannot be converted) is counted in ``TopicStats.not_tracked`` and
gets no tracks message; when it is grounded, its result still goes to the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
from pathlib import Path
import sys
import time
from typing import Any, Callable, Sequence, TYPE_CHECKING

from kosmos_ros.admission import admit, stamp_seconds
from kosmos_ros.bag import BagError
from kosmos_ros.bag.depth_lifting import Lifter, make_lifters, stamp_ns
from kosmos_ros.bag.output import (add_connections, close_writer, open_report, open_writer, Output,
                                   write_report, write_results, write_tracks)
from kosmos_ros.bag.pairing import DepthPairing, pair_depth_topics
from kosmos_ros.bag.reading import failure_reason, open_reader, select_image_topics
from kosmos_ros.bag.records import BagSummary, FrameOutcome, GroundBagOptions, TopicStats
from kosmos_ros.bag.report import HtmlReport
from kosmos_ros.bag.safety import check_outputs, SigintGuard
from kosmos_ros.bag.typestore import project_typestore
from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.errors import ImageError, KosmosError
from kosmos_ros.images import Frame, frame_from_message

if TYPE_CHECKING:  # tracking needs OpenCV and scipy: imported only with options.track
    from kosmos_ros.tracking.stream import TrackStream
    from kosmos_ros.tracking.tracker import Track


def pair_depth(reader: Any, stats: Sequence[TopicStats],
               options: GroundBagOptions) -> dict[str, DepthPairing]:
    """Pair the selected image topics with depth and camera_info (:mod:`.pairing`); BagError."""
    topics = {name: info.msgtype for name, info in reader.topics.items()}
    return pair_depth_topics(topics, [(s.topic, s.msgtype) for s in stats],
                             options.depth_topics, options.camera_info_topics,
                             options.use_depth)


@dataclass(frozen=True)
class BagRunPlan:
    """A bag run checked before any model loads: its image topics and their depth pairing."""

    options: GroundBagOptions
    stats: tuple[TopicStats, ...]
    pairings: dict[str, DepthPairing]


def plan_bag_run(options: GroundBagOptions) -> BagRunPlan:
    """Check a bag run without the model; return its plan for :func:`ground_bag`.

    The tracking options, the output paths (apart from the input), the bag (it opens), its
    image topics and their depth pairing: BagError or TrackingError naming what cannot be
    used, before the (slow) model load.
    """
    check_tracking(options)
    check_outputs(options.bag, options.output, options.html, options.html_embed,
                  options.overwrite)
    reader = open_reader(options.bag)
    try:
        stats = select_image_topics(reader, options.topics, options.depth_topics)
        pairings = pair_depth(reader, stats, options)
    finally:
        reader.close()
    return BagRunPlan(options, tuple(stats), pairings)


def ground_bag(options: GroundBagOptions | BagRunPlan, engine: Any, *,
               on_frame: Callable[[FrameOutcome], None] | None = None,
               progress: bool = False, guard: SigintGuard | None = None) -> BagSummary:
    """Ground the bag as ``options`` say with ``engine``; return the summary.

    ``on_frame`` is called after every selected message (grounded, throttled or skipped).
    KeyboardInterrupt (Ctrl-C, also from ``on_frame``) ends the run early with
    ``interrupted`` set; the output bag is closed and valid in every case. ``guard`` (a new
    :class:`~kosmos_ros.bag.safety.SigintGuard` when None) keeps Ctrl-C from cutting short the
    writing of a frame's results or the closing of the output. Raises BagError, PromptError or
    TrackingError before any output is written when the bag, an output path, the query or the
    tracking options cannot be used; BagError when the bag turns out damaged or the output
    cannot be written, after closing the output bag with the results so far. Given a
    :class:`BagRunPlan` (:func:`plan_bag_run`, checked before the model loaded), its topics
    and pairing are used as they are; given options, they are planned here.
    """
    plan = options if isinstance(options, BagRunPlan) else plan_bag_run(options)
    options = plan.options
    query = Query(Task.parse(options.task), options.prompt,
                  max_new_tokens=options.max_new_tokens)
    engine.prepare(query, 640, 480)  # PromptError now rather than on every frame
    with guard or SigintGuard() as sigint:
        reader = open_reader(options.bag)
        depth_reader = None
        try:
            stats = [replace(s) for s in plan.stats]  # counted afresh by this run
            pairings = plan.pairings
            for s in stats:
                s.pairing = pairings[s.topic]
                s.tracking = options.track
            summary = BagSummary(Path(options.bag), Path(options.output), query,
                                 options.rate_hz, engine.describe(), options.model_label,
                                 {s.topic: s for s in stats}, html=options.html,
                                 track_rate_hz=options.track_rate_hz if options.track else None)
            lifters: dict[str, Lifter] = {}
            if any(p.enabled for p in pairings.values()):
                # A second reader: depth images are read back while the first one iterates.
                depth_reader = open_reader(options.bag)
                lifters = _index_depth(options, depth_reader, pairings, summary)
            run = _BagRun(options, engine, reader, summary, lifters,
                          open_report(options, summary), sigint, on_frame,
                          track_streams(options, stats))
            run.ground_into_output(progress)
        finally:
            with sigint.shield():
                if depth_reader is not None:
                    depth_reader.close()
                reader.close()
    return summary


def check_tracking(options: GroundBagOptions) -> None:
    """Raise TrackingError for tracking options that cannot be used (with ``track`` only)."""
    if not options.track:
        return
    from kosmos_ros.tracking.tracker import TrackerSettings, TrackingError

    rate = options.track_rate_hz
    if not (math.isfinite(rate) and rate >= 0.0):
        raise TrackingError(f'track_rate_hz must be 0 or more; got {rate}')
    TrackerSettings(track_max_age=options.track_max_age,  # TrackingError when invalid
                    coast_seconds=options.track_coast_time)


def track_streams(options: GroundBagOptions,
                  stats: Sequence[TopicStats]) -> dict[str, TrackStream]:
    """Return one track stream per selected image topic with ``track``; none without."""
    if not options.track:
        return {}
    from kosmos_ros.tracking.stream import TrackStream
    from kosmos_ros.tracking.tracker import TrackerSettings

    settings = TrackerSettings(track_max_age=options.track_max_age,
                               coast_seconds=options.track_coast_time)
    return {s.topic: TrackStream(settings, options.track_rate_hz) for s in stats}


def _index_depth(options: GroundBagOptions, reader: Any, pairings: dict[str, DepthPairing],
                 summary: BagSummary) -> dict[str, Lifter]:
    try:
        return make_lifters(reader, pairings, options.depth,
                            {t: s.depth for t, s in summary.topics.items()})
    except BagError as exc:  # a damaged bag, from the reader's messages
        raise BagError(f'indexing the depth and camera_info topics failed: {exc}') from None


@dataclass
class _Outcome:
    """A frame's public outcome, with what writing its results and tracks needs.

    ``tracks`` is None when no tracks message is written for the frame.
    """

    public: FrameOutcome
    header: Any = None
    frame: Any = None
    tracks: list[Track] | None = None

    @property
    def result(self) -> GroundingResult | None:
        return self.public.result


@dataclass
class _BagRun:
    """One run over an open bag: the messages in, the output bag and the report out."""

    options: GroundBagOptions
    engine: Any
    reader: Any
    summary: BagSummary
    lifters: dict[str, Lifter]
    report: HtmlReport | None
    sigint: SigintGuard
    on_frame: Callable[[FrameOutcome], None] | None = None
    streams: dict[str, TrackStream] = field(default_factory=dict)

    def ground_into_output(self, progress: bool) -> None:
        """Open the output bag, ground into it, and close it whole whatever happens.

        KeyboardInterrupt ends the run with ``summary.interrupted``; opening and closing the
        output are shielded from Ctrl-C.
        """
        writer = None
        try:
            with self.sigint.shield():
                writer = open_writer(self.options)
                output = add_connections(writer, self.options, self.reader,
                                         project_typestore(), self.summary, self.lifters)
            self._loop(output, progress)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            if writer is not None:
                with self.sigint.shield():
                    self._finish(writer)

    def _finish(self, writer: Any) -> None:
        """Close the output bag, then write the HTML report; say so first when interrupted."""
        options, summary = self.options, self.summary
        if summary.interrupted:
            again = '; Ctrl-C again is ignored' if self.sigint.active else ''
            print(f'ground_bag: interrupted; finishing {options.output} with the '
                  f'{summary.grounded} frames grounded so far{again}', file=sys.stderr)
        try:
            close_writer(writer, Path(options.output))
        finally:
            if self.report is not None:
                write_report(self.report)

    def _loop(self, output: Output, progress: bool) -> None:
        """Ground the selected messages into ``output``; KeyboardInterrupt ends it (Ctrl-C).

        A first Ctrl-C that comes while a frame's results are written takes effect before the
        next message, so every frame is written whole.
        """
        from tqdm import tqdm

        options, summary, reader = self.options, self.summary, self.reader
        connections = [c for c in reader.connections
                       if options.copy_input or c.topic in summary.topics]
        total = sum(c.msgcount for c in connections if c.topic in summary.topics)
        last_grounded: dict[str, float] = {}
        label = ' [TINY MODEL]' if options.model_label else ''
        bar = tqdm(total=total, unit=' frames', desc=f'grounding{label}', disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        started = time.monotonic()
        try:
            for conn, timestamp, raw in reader.messages(connections=connections):
                self.sigint.check()
                self._copy(output, conn, timestamp, raw)
                s = summary.topics.get(conn.topic)
                if s is None:
                    continue
                outcome = self._ground_one(conn, timestamp, raw, s, last_grounded)
                if outcome.result is not None or outcome.tracks is not None:
                    self._write(output, s, timestamp, outcome)
                bar.update(1)
                bar.set_postfix(grounded=summary.grounded, skipped=summary.skipped,
                                refresh=False)
                if self.on_frame is not None:
                    self.on_frame(outcome.public)
                if options.limit and summary.grounded >= options.limit:
                    break
        except BagError as exc:
            raise BagError(f'{exc}; {options.output} holds the {summary.grounded} frames '
                           'grounded before') from None
        except OSError as exc:
            raise BagError(f'writing the results failed after {summary.grounded} frames: '
                           f'{failure_reason(exc)}') from None
        finally:
            bar.close()
            summary.elapsed_s = time.monotonic() - started

    def _copy(self, output: Output, conn: Any, timestamp: int, raw: Any) -> None:
        """Copy an input message into the output bag when its topic is copied."""
        copy = output.copies.get((conn.topic, conn.msgtype))
        if copy is not None:
            data = raw if self.reader.is2 else output.store.ros1_to_cdr(raw, conn.msgtype)
            with self.sigint.shield():
                output.writer.write(copy, timestamp, data)

    def _write(self, output: Output, s: TopicStats, timestamp: int, outcome: _Outcome) -> None:
        """Lift a frame to 3D when its topic has depth, then write its results and tracks."""
        lifter = self.lifters.get(s.topic)
        header = outcome.header
        tracks_3d = None
        if lifter is not None:
            stamp = stamp_ns(header, timestamp)
            if outcome.result is not None:
                lift = lifter.lift(outcome.result, stamp, str(header.frame_id))
                outcome.public = replace(outcome.public, lifted=lift.lifted,
                                         depth_note=lift.reason)
            if outcome.tracks is not None:
                frame = outcome.frame
                tracks_3d = lifter.lift_boxes([t.box for t in outcome.tracks],
                                              (frame.width, frame.height), stamp,
                                              str(header.frame_id))
        with self.sigint.shield():  # a frame's messages are written whole, or not at all
            if outcome.result is not None:
                write_results(output, s, timestamp, header, outcome.result,
                              outcome.public.lifted, self.options.min_score)
            if outcome.tracks is not None:
                write_tracks(output, s, timestamp, header, outcome.tracks, tracks_3d,
                             self.streams[s.topic].tracks(include_lost=True),
                             outcome.public.stamp)
            if self.report is not None and outcome.result is not None:
                self.report.add(outcome.public, outcome.frame)

    def _ground_one(self, conn: Any, timestamp: int, raw: bytes, s: TopicStats,
                    last_grounded: dict[str, float]) -> _Outcome:
        """Deserialize, admit, convert, track and ground one image message (the node's order)."""
        from rosbags.highlevel import AnyReaderError

        s.messages += 1

        def skip(reason: str, stamp: float = timestamp * 1e-9, frame_id: str = '') -> _Outcome:
            s.skipped[reason] += 1
            return _Outcome(FrameOutcome(s.topic, timestamp, stamp, frame_id, reason=reason))

        try:
            msg = self.reader.deserialize(raw, conn.msgtype)
        except AnyReaderError as exc:
            return skip(f'cannot deserialize {conn.msgtype}: {exc}')
        frame_id = str(getattr(getattr(msg, 'header', None), 'frame_id', ''))
        # Unstamped frames take their bag time, as the node takes its clock's.
        admission = admit(getattr(msg, 'encoding', None), stamp_seconds(msg), timestamp * 1e-9,
                          last_grounded.get(s.topic), self.options.rate_hz)
        if admission.refused:
            return skip(admission.refused, admission.stamp, frame_id)
        stream = self.streams.get(s.topic)
        if admission.throttled:
            s.throttled += 1
            outcome = _Outcome(FrameOutcome(s.topic, timestamp, admission.stamp, frame_id,
                                            throttled=True), msg.header)
            if stream is not None and stream.wants(admission.stamp):
                try:
                    outcome.frame = frame_from_message(msg, self.engine.options.max_pixels)
                except ImageError as exc:
                    s.not_tracked[str(exc)] += 1
                    return outcome
                outcome.tracks = self._track(stream, s, admission.stamp, outcome.frame)
                outcome.public = replace(outcome.public, tracks=_tuple(outcome.tracks))
            return outcome
        last_grounded[s.topic] = stamp = admission.stamp
        try:
            frame = frame_from_message(msg, self.engine.options.max_pixels)
        except ImageError as exc:
            return skip(str(exc), stamp, frame_id)
        tracks = self._track(stream, s, stamp, frame) if stream is not None else None
        try:
            result = self.engine.ground(frame, self.summary.query)
        except KosmosError as exc:
            outcome = skip(f'inference failed: {exc}', stamp, frame_id)
            outcome.header, outcome.frame, outcome.tracks = msg.header, frame, tracks
            outcome.public = replace(outcome.public, tracks=_tuple(tracks))
            return outcome
        s.grounded += 1
        if stream is not None:
            stream.on_result(stamp, result, self.options.min_score)
            if tracks is not None:
                tracks = stream.tracks()
        return _Outcome(FrameOutcome(s.topic, timestamp, stamp, frame_id, result=result,
                                     tracks=_tuple(tracks)), msg.header, frame, tracks)

    @staticmethod
    def _track(stream: TrackStream, s: TopicStats, stamp: float,
               frame: Frame) -> list[Track] | None:
        """Move the stream's tracks onto a frame; None when it is skipped or refused (counted)."""
        from kosmos_ros.tracking.tracker import TrackingError

        try:
            return stream.on_frame(stamp, frame)
        except TrackingError as exc:
            s.not_tracked[str(exc)] += 1
            return None


def _tuple(tracks: list[Track] | None) -> tuple | None:
    return None if tracks is None else tuple(tracks)
