# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One camera of the node: its colour intake, depth source, outputs and idle policy.

A :class:`Camera` is made at configure (its output publishers), started at activate (its image
subscription, and its depth and camera-info subscriptions when it has depth) and stopped at
deactivate. On demand it drops its subscriptions after ``unsubscribe_idle_after`` seconds
without a query (:meth:`release_if_idle`, called on the worker thread between takes) and takes
them again on the next query (:meth:`take`). It turns a grounding result into its messages,
lifted to 3D with its depth, and publishes continuous results. Log lines about its frames are
throttled per kind.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import time
from typing import Any

from kosmos_ros_interfaces.msg import Grounding
from rclpy.event_handler import PublisherEventCallbacks
from vision_msgs.msg import Detection2DArray, Detection3DArray

from kosmos_ros.admission import stamp_seconds
from kosmos_ros.datatypes import GroundingResult
from kosmos_ros.depth import DepthSettings
from kosmos_ros.errors import InferenceError, KosmosError
from kosmos_ros.images import Frame
from kosmos_ros.messages import outputs_for
from kosmos_ros.node.camera_depth import DepthSource
from kosmos_ros.node.conversions import (apply_positions, detections_3d_msg, detections_msg,
                                         grounding_msg, markers_msg, TYPES)
from kosmos_ros.node.dds_writes import Writes
from kosmos_ros.node.intake import CameraIntake
from kosmos_ros.node.parameter_table import CameraConfig

LOG_PERIOD = 5.0  # seconds between two log lines of one camera's same kind of problem
# Publishers made and destroyed by transitions get no QoS event handlers: rclpy's executor
# may still add an event handler destroyed a moment before to its wait set, and then stops
# spinning with InvalidHandle.
NO_PUB_EVENTS = dict(event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))


@dataclass
class ResultMessages:
    """A result as messages: grounding, detections and, with depth, 3D detections."""

    grounding: Grounding
    detections: Detection2DArray
    detections_3d: Detection3DArray | None


def request_messages(result: GroundingResult, header: Any,
                     min_score: float) -> ResultMessages:
    """Return the messages of a result on an image sent with a request (no camera, no depth)."""
    grounding = grounding_msg(result, header, '')
    apply_positions(grounding, result, None, 'no depth for an image sent with the request')
    return ResultMessages(grounding, detections_msg(result, header, min_score), None)


class Camera:
    """A camera NAME: subscriptions, depth, output publishers and its log throttle."""

    def __init__(self, node: Any, config: CameraConfig, writes: Writes):
        """Create the camera's output publishers on ``node`` (a lifecycle node).

        Every message goes out through ``writes`` (:mod:`.dds_writes`).
        """
        self.name, self.config, self._node, self.writes = config.name, config, node, writes
        self.intake: CameraIntake | None = None
        self.depth: DepthSource | None = None
        self._logged: dict[str, float] = {}
        self.outputs = {
            out.name: node.create_lifecycle_publisher(
                TYPES.message_class(out.type_name), f'{config.name}/{out.name}',
                out.qos_depth, **NO_PUB_EVENTS)
            for out in outputs_for(depth=bool(config.depth_topic))}

    def destroy(self) -> None:
        """Stop and destroy the output publishers (cleanup)."""
        self.stop()
        for publisher in self.outputs.values():
            self._node.destroy_lifecycle_publisher(publisher)
        self.outputs = {}

    # -- subscriptions -----------------------------------------------------------------------

    def start(self, intake_node: Any, reliability: str, depth: int, subscribe: bool) -> None:
        """Create the intake (and depth source); subscribe now unless ``subscribe`` is False."""
        config, log = self.config, self._node.get_logger()
        self.intake = CameraIntake(intake_node, config.subscribed_topic,
                                   config.transport == 'compressed', reliability, depth,
                                   subscribe=subscribe)
        log.info(f'camera {self.name}: {config.transport} images on {self.intake.topic}'
                 + ('' if subscribe else ' (subscribed only while queries use it)'))
        if config.depth_topic:
            self.depth = DepthSource(intake_node, config.depth_topic,
                                     config.camera_info_topic, subscribe=subscribe)
            log.info(f'camera {self.name}: 3D from {self.depth.depth_topic} and '
                     f'{self.depth.info_topic}')

    def stop(self) -> None:
        """Drop the subscriptions for good (deactivate); later takes find nothing."""
        if self.intake is not None:
            self.intake.close()
            self.intake = None
        if self.depth is not None:
            self.depth.destroy()
            self.depth = None

    def acquire(self) -> bool:
        """Mark the camera used; subscribe if needed (True if it subscribed just now)."""
        intake, depth = self.intake, self.depth
        if intake is None:
            return False
        if depth is not None and not intake.subscribed:
            depth.acquire()  # first: depth should flow by the first colour frame
        return intake.acquire()

    def take(self, use: bool) -> Any:
        """Take the newest frame from DDS (None if none); ``use`` marks the camera used."""
        if use and self.acquire():
            self._node.get_logger().debug(f'camera {self.name}: subscribed again')
        intake = self.intake
        taken = intake.take() if intake is not None else None
        return None if taken is None else taken.msg

    def release_if_idle(self, after: float, waited_for: bool) -> bool:
        """Drop the subscriptions after ``after`` seconds without a query; True if dropped."""
        intake = self.intake
        if intake is None or not intake.subscribed or waited_for or \
                time.monotonic() - intake.last_used < after:
            return False
        intake.release()
        if self.depth is not None:
            self.depth.release()
        self._node.get_logger().debug(f'camera {self.name}: unsubscribed after {after:g} s '
                                      'without a query')
        return True

    # -- results -----------------------------------------------------------------------------

    def messages(self, result: GroundingResult, header: Any, min_score: float,
                 depth: DepthSettings) -> ResultMessages:
        """Return the result's messages, its boxes lifted to 3D when the camera has depth."""
        grounding = grounding_msg(result, header, self.name)
        source = self.depth
        if source is None:
            apply_positions(grounding, result, None, 'no depth_topic configured for this camera')
            return ResultMessages(grounding, detections_msg(result, header, min_score), None)
        lifted = source.lift(stamp_seconds(header), result, depth)
        apply_positions(grounding, result, lifted)
        missing = sorted({lb.reason for boxes in lifted for lb in boxes if lb.box is None})
        if missing:
            self._node.get_logger().info(f'camera {self.name}: no 3D for some boxes: '
                                         f'{missing[0]}', throttle_duration_sec=LOG_PERIOD)
        return ResultMessages(grounding, detections_msg(result, header, min_score),
                              detections_3d_msg(result, lifted, header, min_score))

    def publish(self, result: GroundingResult, header: Any, frame: Frame, min_score: float,
                depth: DepthSettings, debug_images: Any) -> None:
        """Publish a continuous result: detections and grounding first, then the rest."""
        outputs = self.outputs
        if not outputs:
            return
        out = self.messages(result, header, min_score, depth)
        self.send('detections', out.detections)
        self.send('grounding', out.grounding)
        if out.detections_3d is not None and 'detections_3d' in outputs:
            self.send('detections_3d', out.detections_3d)
            if outputs['markers'].get_subscription_count() > 0:
                self.send('markers', markers_msg(out.detections_3d))
        debug = outputs['debug_image']
        if debug_images is not None and debug.get_subscription_count() > 0:
            debug_images.offer(self.name, lambda msg: self.send('debug_image', msg), frame,
                               result, header)

    def send(self, output: str, msg: Any) -> bool:
        """Publish ``msg`` on the output topic ``output``; False when DDS refused it."""
        return self.writes.publish(self.outputs[output], msg, f'camera {self.name}: {output}')

    def report(self, error: Exception) -> None:
        """Log a problem with this camera's frames: one line per kind per LOG_PERIOD.

        Model failures (out of memory included) are errors; bad frames are warnings.
        """
        kind, now = type(error).__name__, time.monotonic()
        if now - self._logged.get(kind, -math.inf) < LOG_PERIOD:
            return
        self._logged[kind] = now
        log = self._node.get_logger()
        if isinstance(error, InferenceError):
            log.error(f'camera {self.name}: {error}')
        elif isinstance(error, KosmosError):
            log.warning(f'camera {self.name}: {error}')
        else:
            log.error(f'camera {self.name}: internal error: {kind}: {error}')


def may_unsubscribe(unsubscribe_idle_after: float, rate_hz: float) -> bool:
    """Whether idle cameras drop their subscriptions (on demand, unsubscribe_idle_after set)."""
    return unsubscribe_idle_after > 0 and rate_hz <= 0


def sync_subscriptions(cameras: dict[str, Camera], worker: Any, unsubscribe_idle_after: float,
                       rate_hz: float) -> None:
    """Drop the subscriptions of cameras no query used lately, or keep every one subscribed.

    On the worker thread, between its takes (a frame the worker took before a release is
    forgotten with it). Without the on-demand policy (continuous grounding, or
    ``unsubscribe_idle_after`` 0) every camera is subscribed again.
    """
    lazy = may_unsubscribe(unsubscribe_idle_after, rate_hz)
    for name, camera in list(cameras.items()):
        if not lazy:
            camera.acquire()
        elif camera.release_if_idle(unsubscribe_idle_after, worker.waiting(name)):
            worker.forget_frames(name)
