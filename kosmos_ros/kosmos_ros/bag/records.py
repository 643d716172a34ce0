# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The records of a ``ground_bag`` run: what it is asked, and what it did.

:class:`GroundBagOptions` in; per image topic :class:`TopicStats`, per selected message a
:class:`FrameOutcome`, and the whole run's :class:`BagSummary` out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kosmos_ros.bag.depth_lifting import DepthStats
from kosmos_ros.bag.pairing import DepthPairing
from kosmos_ros.datatypes import GroundingResult, Query, Task
from kosmos_ros.depth import DepthSettings


@dataclass(frozen=True)
class GroundBagOptions:
    """What to ground and where to write it.

    Attributes:
        bag: input bag: a rosbag2 folder, a ``.mcap`` or ``.db3`` file, or a ROS 1 ``.bag``.
        output: output rosbag2 folder (MCAP); must not exist unless ``overwrite``, and must
            lie apart from the input and the HTML report
            (:func:`~kosmos_ros.bag.safety.check_outputs`).
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
            in their order; empty pairs them automatically (:mod:`kosmos_ros.bag.pairing`).
        camera_info_topics: camera_info topics, given as ``depth_topics`` are.
        depth: how boxes are lifted to 3D (stamp tolerance, depth range, inner fraction).
        use_depth: False grounds in 2D only, whatever depth the bag holds.
        track: also follow the grounded boxes on every admitted frame (grounded or
            throttled) as tracks with lasting ids (the node's tracking,
            :class:`~kosmos_ros.tracking.stream.TrackStream`) and write them to
            ``<base>/tracks``, ``<base>/track_states`` (and, with depth, ``<base>/tracks_3d``),
            one message each per tracked frame.
        track_rate_hz: with ``track``, track at most this many frames per second of message
            time per topic (the node's ``track_rate_hz``); 0 tracks every admitted frame.
        track_max_age: with ``track``, seconds (message time) a track lives after the last
            model result that confirmed it (the node's ``track_max_age``).
        track_coast_time: with ``track``, seconds (message time) a track coasts on its motion
            model when the flow fails, before it is lost (the node's ``track_coast_time``).
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
    depth: DepthSettings = DepthSettings()
    use_depth: bool = True
    track: bool = False
    track_rate_hz: float = 0.0
    track_max_age: float = 3.0
    track_coast_time: float = 1.0

    @classmethod
    def from_grounding(cls, options: Any, bag: Path, output: Path,
                       **bag_fields: Any) -> GroundBagOptions:
        """Return the options of a bag run asked for by checked grounding ``options``.

        ``options`` is a :class:`~kosmos_ros.options.GroundingOptions` (its check done);
        ``bag_fields`` are the bag run's own (topics, output choices, depth topics, label).
        """
        return cls(bag=bag, output=output, task=Task.parse(options.task), prompt=options.prompt,
                   max_new_tokens=options.max_new_tokens, rate_hz=options.rate_hz,
                   min_score=options.min_score, depth=DepthSettings.of(options),
                   track=options.track,
                   track_rate_hz=options.track_rate_hz, track_max_age=options.track_max_age,
                   track_coast_time=options.track_coast_time, **bag_fields)


@dataclass
class TopicStats:
    """Per image topic: where its results go and what happened to its frames.

    With ``tracking``: ``tracks`` counts the tracks messages written (one per tracked frame,
    with ``<base>/tracks_3d`` beside each when the topic has depth) and ``not_tracked`` the
    admitted frames the tracker could not use, by reason.
    """

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
    tracking: bool = False
    tracks: int = 0
    not_tracked: Counter = field(default_factory=Counter)

    @property
    def has_depth(self) -> bool:
        return self.pairing is not None and self.pairing.enabled

    @property
    def outputs(self) -> list[str]:
        """Return the output topics of this image topic (:data:`kosmos_ros.messages.OUTPUTS`)."""
        from kosmos_ros.messages import outputs_for

        per = ('result', 'frame') if self.tracking else ('result',)
        return [self.output(out.name) for out in outputs_for(self.has_depth, per, offline=True)]

    def output(self, name: str) -> str:
        """Return the topic of the output ``name`` ('detections', 'tracks', ...)."""
        return f'{self.base}/{name}'

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class FrameOutcome:
    """One selected image message: grounded (``result``), throttled or skipped (``reason``).

    ``lifted`` holds, when the topic has depth, the 3D of each box (per phrase, per box, a
    :class:`~kosmos_ros.depth.Lifted`) and ``depth_note`` why the frame has no 3D, if so.
    ``tracks`` holds, with ``track``, the tracks (:class:`~kosmos_ros.tracking.track.Track`)
    written for the frame; None when no tracks message was written for it.
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
    tracks: tuple | None = None


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
    track_rate_hz: float | None = None  # None: no tracking

    @property
    def tracks(self) -> int:
        return sum(s.tracks for s in self.topics.values())

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
        if self.track_rate_hz is not None:
            lines[-1] += ', tracking: ' + (f'{self.track_rate_hz:g} Hz of message time'
                                           if self.track_rate_hz > 0 else 'every frame')
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
            if s.tracking:
                lines.append(f'  tracks: {s.tracks} messages on {s.output("tracks")}'
                             + (f' and {s.output("tracks_3d")}' if s.has_depth else '')
                             + f', {sum(s.not_tracked.values())} frames could not be tracked')
                for reason, count in s.not_tracked.most_common(5):
                    lines.append(f'  not tracked {count}x: {reason}')
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
