# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The output of ``ground_bag``: an MCAP bag of results (and copies), and the HTML report.

Per grounded image topic the bag holds ``<base>/detections`` (``vision_msgs/Detection2DArray``)
and ``<base>/grounding`` (``kosmos_ros_interfaces/Grounding``), and with depth
``<base>/detections_3d`` (``vision_msgs/Detection3DArray``), built by
:mod:`kosmos_ros.messages` as the node builds them, with the source headers and bag times.
With ``--track`` it also holds, per tracked frame, ``<base>/tracks``
(``vision_msgs/Detection2DArray``, :func:`kosmos_ros.messages.tracks_msg`),
``<base>/track_states`` (``kosmos_ros_interfaces/TrackArray``, every track with its state,
:func:`kosmos_ros.messages.track_states_msg`) and with depth
``<base>/tracks_3d`` (``vision_msgs/Detection3DArray``,
:func:`kosmos_ros.messages.tracks_3d_msg`). Every failure to write is a BagError naming the path
and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import shutil
from typing import Any, Collection, Sequence

from kosmos_ros import messages
from kosmos_ros.bag import BagError
from kosmos_ros.bag.reading import failure_reason
from kosmos_ros.bag.records import BagSummary, GroundBagOptions, TopicStats
from kosmos_ros.bag.report import HtmlReport
from kosmos_ros.bag.safety import check_outputs
from kosmos_ros.bag.typestore import RosbagsTypes
from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.messages import outputs_for


@dataclass
class Output:
    """The open output bag: its writer and the connections the results and copies go to.

    ``connections`` maps an image topic to its output connections by output name (the
    offline ones of :data:`kosmos_ros.messages.OUTPUTS`: per grounded frame, and with
    ``--track`` per tracked frame; the 3D ones when the topic has depth); ``copies`` an input
    (topic, type) to its copy, None when it cannot be copied.
    """

    writer: Any
    types: RosbagsTypes
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    copies: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.types.store


def open_writer(options: GroundBagOptions) -> Any:
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
        raise BagError(f'cannot write the output bag {out}: {failure_reason(exc)}') from None
    return writer


def add_connections(writer: Any, options: GroundBagOptions, reader: Any, store: Any,
                    summary: BagSummary, with_depth: Collection[str]) -> Output:
    """Describe the run in the output's metadata and add its result and copy connections.

    ``with_depth`` holds the image topics whose boxes are lifted to 3D.
    """
    writer.set_custom_data('kosmos_ros.source', str(options.bag))
    writer.set_custom_data('kosmos_ros.model', summary.model)
    writer.set_custom_data('kosmos_ros.query',
                           f'{summary.query.task.name.lower()}: {summary.query.prompt}')
    if options.model_label:
        writer.set_custom_data('kosmos_ros.model_label', options.model_label)
    output = Output(writer, RosbagsTypes(store))
    per = ('result', 'frame') if options.track else ('result',)
    for s in summary.topics.values():
        output.connections[s.topic] = {
            out.name: writer.add_connection(s.output(out.name), out.type_name, typestore=store)
            for out in outputs_for(s.topic in with_depth, per, offline=True)}
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


def write_results(output: Output, stats: TopicStats, timestamp: int, header: Any,
                  result: GroundingResult, lifted: Any, min_score: float) -> None:
    """Write a grounded frame's detections, grounding and (with depth) 3D detections."""
    types = output.types
    _write(output, stats, timestamp, {
        'detections': lambda: messages.detections_msg(types, result, header, min_score),
        'grounding': lambda: messages.grounding_msg(types, result, header, stats.camera, lifted),
        'detections_3d': lambda: messages.detections_3d_msg(types, result, lifted, header,
                                                            min_score)})


def _write(output: Output, stats: TopicStats, timestamp: int, built: dict[str, Any]) -> None:
    """Write each output the topic has a connection for, from its builder in ``built``."""
    for name, conn in output.connections[stats.topic].items():
        if name in built:
            output.writer.write(conn, timestamp,
                                output.store.serialize_cdr(built[name](), conn.msgtype))


def write_tracks(output: Output, stats: TopicStats, timestamp: int, header: Any,
                 tracks: Sequence[Any], lifted: Sequence[Any] | None, states: Sequence[Any],
                 stamp: float) -> None:
    """Write a tracked frame's tracks, every track's state and, with depth, the tracks' 3D.

    ``states`` holds every track, lost ones too; ``lifted`` one ``Lifted`` per track.
    """
    types = output.types
    _write(output, stats, timestamp, {
        'tracks': lambda: messages.tracks_msg(types, tracks, header),
        'track_states': lambda: messages.track_states_msg(types, states, header, stamp),
        'tracks_3d': lambda: messages.tracks_3d_msg(types, tracks, lifted, header)})
    stats.tracks += 1


def close_writer(writer: Any, out: Path) -> None:
    """Close the output bag: its index, then ``metadata.yaml``; BagError on failure."""
    from rosbags.rosbag2 import WriterError

    try:
        writer.close()
    except (OSError, WriterError) as exc:
        raise BagError(f'cannot finish the output bag {out}: {failure_reason(exc)}') from None


def open_report(options: GroundBagOptions, summary: BagSummary) -> HtmlReport | None:
    """Create the HTML report's folders now, so that an unusable place fails before the run."""
    if not options.html:
        return None
    report = HtmlReport(options.html, options.html_embed, summary)
    try:
        report.path.parent.mkdir(parents=True, exist_ok=True)
        if not report.embed:
            report.folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise _report_error(report, exc) from None
    return report


def write_report(report: HtmlReport) -> None:
    try:
        report.write()
    except OSError as exc:
        raise _report_error(report, exc) from None


def _report_error(report: HtmlReport, exc: OSError) -> BagError:
    return BagError(f'cannot write the HTML report {report.path}: {failure_reason(exc)}')
