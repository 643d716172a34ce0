# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One node harness for every test that talks to the grounding node over DDS.

:class:`NodeHarness` puts a :class:`GroundingNode` in a namespace of its own (the process id is
part of it, so concurrent test runs in one DDS domain never share a node name) and a client
node beside it: a publisher per camera (raw or compressed; depth and camera info where asked),
subscriptions to every result topic, ``/rosout`` (this node's lines) and ``/diagnostics``
(this node's statuses), and a service and an action client. Both nodes spin on the ``ros``
fixture's executor. :class:`Stream` publishes a camera from a thread.

The presets hold what each group of tests runs with; a test passes them with its own values::

    NodeHarness(ros, model_dir, **{**NODE_TESTS, 'rate_hz': 5.0})
"""

import itertools
import os
import threading
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from kosmos_ros_interfaces.action import Follow
from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.msg import Grounding
from kosmos_ros_interfaces.srv import Ground
from rcl_interfaces.msg import Log
import rclpy
from rclpy.action import ActionClient
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray

from kosmos_ros.node.grounding_node import GroundingNode
from kosmos_ros.node.queries import QUERY_QOS

from helpers import wait_for  # noqa: I100

SUCCEEDED, CANCELED, ABORTED = 4, 5, 6  # action_msgs/GoalStatus
# For a subscription a test destroys while the executor spins: no QoS event handler, which the
# executor may be adding to its wait set as it is destroyed (rclpy then raises InvalidHandle
# out of the executor; seen once in test_tracks_node).
NO_SUB_EVENTS = dict(event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))

# The node tests: two cameras (rear compressed), long generations and requests allowed.
NODE_TESTS = dict(cameras=('front', 'rear'), compressed=('rear',), max_new_tokens=24,
                  max_request_tokens=2000)
# The reliability suites: one camera subscribed reliably, two-token generations, diagnostics
# twice a second.
RELIABILITY = dict(cameras=('front',), max_new_tokens=2, diagnostics_period=0.5,
                   image_qos_reliability='reliable')

_names = itertools.count()


class NodeHarness:
    """A grounding node in its own namespace and a client node that talks to it over DDS.

    ``cameras`` are the node's cameras; those in ``compressed`` take JPEG/PNG, those in
    ``depth`` get a depth topic (``CAM/depth``) and camera info. ``params`` go to the node as
    parameter overrides (on top of: the model in ``model_dir`` on the CPU, no continuous
    grounding, frames valid for 30 s, no camera timeout, subscriptions kept at all times:
    most tests publish one frame and then query it, and the subscriptions that come and go are
    tested on their own); ``node_values`` are added last, for values only the node would
    accept (start-up checks).
    """

    def __init__(self, ros, model_dir, cameras=('front',), compressed=(), depth=(), steer=None,
                 configure=True, node_values=None, tracks=False, **params):
        self.ns = f'/n{os.getpid()}_{next(_names)}'
        self.executor = ros.executor
        self.cameras = tuple(cameras)
        values = dict(model=str(model_dir), device='cpu', local_files_only=True,
                      cameras=list(cameras), rate_hz=0.0, max_frame_age=30.0,
                      camera_timeout=0.0, unsubscribe_idle_after=0.0)
        values.update(params)
        values.update(node_values or {})
        values.update({f'{c}.transport': 'compressed' for c in compressed})
        values.update({f'{c}.depth_topic': f'{c}/depth' for c in depth})
        self.node = GroundingNode(context=ros.context, namespace=self.ns,
                                  parameter_overrides=[Parameter(k, value=v)
                                                       for k, v in values.items()],
                                  logits_processors=(steer,) if steer else ())
        self.client = rclpy.create_node(f'client_{self.ns[1:]}', context=ros.context,
                                        namespace=self.ns)
        self._make_client_entities(compressed, depth, tracks)
        # Entities first, then the executor: rclpy's ActionClient registers itself with its
        # node before its lock exists, and a spinning executor may look at it in between.
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        if configure:
            self.start()

    def _make_client_entities(self, compressed, depth, tracks):
        client = self.client
        # Reliable publishers match best-effort and reliable subscriptions alike.
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs, self.depth_pubs, self.info_pubs = {}, {}, {}
        self.results, self.detections, self.detections_3d = {}, {}, {}
        self.stamps = {}
        for cam in self.cameras:
            if cam in compressed:
                self.pubs[cam] = client.create_publisher(
                    CompressedImage, f'{cam}/image_raw/compressed', reliable)
            else:
                self.pubs[cam] = client.create_publisher(Image, f'{cam}/image_raw', reliable)
            self.results[cam], self.detections[cam] = [], []
            client.create_subscription(
                Grounding, f'{cam}/grounding',
                lambda msg, cam=cam: self.results[cam].append((time.monotonic(), msg)), 100)
            client.create_subscription(Detection2DArray, f'{cam}/detections',
                                       self.detections[cam].append, 100)
        for cam in depth:
            self.depth_pubs[cam] = client.create_publisher(Image, f'{cam}/depth', 10)
            self.info_pubs[cam] = client.create_publisher(CameraInfo, f'{cam}/camera_info', 10)
            self.detections_3d[cam] = []
            client.create_subscription(Detection3DArray, f'{cam}/detections_3d',
                                       self.detections_3d[cam].append, 10)
        self.logs, self.diagnostics = [], []
        client.create_subscription(Log, '/rosout', self._on_log, 1000)
        client.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 100)
        # Callers that send many requests at once need a response queue as deep as their burst.
        self.service = client.create_client(Ground, 'kosmos_grounding/ground',
                                            qos_profile=QUERY_QOS)
        self.action = ActionClient(client, GroundAction, 'kosmos_grounding/ground',
                                   goal_service_qos_profile=QUERY_QOS,
                                   result_service_qos_profile=QUERY_QOS,
                                   cancel_service_qos_profile=QUERY_QOS)
        self.follow = ActionClient(client, Follow, 'kosmos_grounding/follow',
                                   goal_service_qos_profile=QUERY_QOS,
                                   result_service_qos_profile=QUERY_QOS,
                                   cancel_service_qos_profile=QUERY_QOS)
        self.tracks, self.tracks_3d = {}, {}
        if tracks:  # NAME/tracks (and tracks_3d) of every camera, kept with arrival times
            for cam in self.cameras:
                self.tracks[cam] = []
                client.create_subscription(
                    Detection2DArray, f'{cam}/tracks',
                    lambda msg, cam=cam: self.tracks[cam].append((time.monotonic(), msg)), 100)
            for cam in depth:
                self.tracks_3d[cam] = []
                client.create_subscription(Detection3DArray, f'{cam}/tracks_3d',
                                           self.tracks_3d[cam].append, 100)

    def start(self):
        """Configure and activate; wait until the cameras and the service are matched."""
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        rate, idle = self.node.get_parameter('rate_hz').value, \
            self.node.get_parameter('unsubscribe_idle_after').value
        if idle == 0 or rate > 0:  # subscribed at all times (else only while queried)
            for pub in [*self.pubs.values(), *self.depth_pubs.values(),
                        *self.info_pubs.values()]:
                assert wait_for(lambda: pub.get_subscription_count() > 0)
        assert self.service.wait_for_service(timeout_sec=10.0)

    def _on_log(self, msg):
        if msg.name.startswith(self.ns[1:].replace('/', '.') + '.kosmos_grounding'):
            self.logs.append(msg)

    def _on_diag(self, msg):
        prefix = f'{self.ns}/kosmos_grounding: '
        for status in msg.status:
            if status.name.startswith(prefix):
                self.diagnostics.append((time.monotonic(), status))

    # -- the node's state ------------------------------------------------------------------

    @property
    def worker(self):
        return self.node._worker

    def counts(self, cam):
        return self.worker.snapshot()[cam]

    def groundings(self, cam):
        """Return the Grounding messages received on ``cam``, in order."""
        return [msg for _, msg in self.results[cam]]

    def newest_is(self, cam, header):
        """Take the newest frame of ``cam`` from DDS; True once it is the one of ``header``."""
        msg = self.worker.take_latest(cam)[0]
        return msg is not None and msg.header == header

    # -- stamps and messages ---------------------------------------------------------------

    def now(self, offset=0.0):
        """Return the node's time in seconds, plus ``offset``."""
        return self.node.get_clock().now().nanoseconds * 1e-9 + offset

    def next_stamp(self, cam, spacing=0.6):
        """Return a node-time stamp at least ``spacing`` after the camera's previous one."""
        stamp = max(self.now(), self.stamps.get(cam, 0.0) + spacing)
        self.stamps[cam] = stamp
        return stamp

    @staticmethod
    def set_stamp(msg, seconds, frame_id):
        sec = int(seconds)
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec, int(round((seconds - sec) * 1e9))
        if msg.header.stamp.nanosec >= 1_000_000_000:
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec + 1, 0
        msg.header.frame_id = frame_id
        return msg

    def image(self, rgb, stamp=None, frame_id='camera', encoding='rgb8', offset=0.0):
        """Return an Image of ``rgb`` stamped ``stamp`` (default: now plus ``offset``)."""
        array = rgb if encoding == 'rgb8' else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                    step=rgb.shape[1] * 3, data=array.tobytes())
        return self.set_stamp(msg, self.now(offset) if stamp is None else stamp, frame_id)

    def jpeg(self, rgb, stamp=None, frame_id='camera', offset=0.0):
        ok, payload = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return self.set_stamp(CompressedImage(format='jpeg', data=payload.tobytes()),
                              self.now(offset) if stamp is None else stamp, frame_id)

    # -- requests --------------------------------------------------------------------------

    def call(self, timeout=60.0, **fields):
        assert self.service.wait_for_service(timeout_sec=10.0)
        future = self.service.call_async(Ground.Request(**fields))
        assert wait_for(future.done, timeout), f'service call not answered: {fields.keys()}'
        return future.result()

    def goals(self, goals, timeout=60.0):
        """Send goals at once; return (status, result) of each, in order."""
        assert self.action.wait_for_server(timeout_sec=10.0)
        sends = [self.action.send_goal_async(g) for g in goals]
        assert wait_for(lambda: all(s.done() for s in sends), timeout)
        assert all(s.result().accepted for s in sends)
        results = [s.result().get_result_async() for s in sends]
        assert wait_for(lambda: all(r.done() for r in results), timeout), 'goal not answered'
        return [(r.result().status, r.result().result) for r in results]

    # -- frames ----------------------------------------------------------------------------

    def offer(self, cam, msg, timeout=15.0):
        """Publish one frame and wait until the node refused or grounded it.

        Returns ('refused', reason) or ('handled', grounding message).
        """
        before = self.counts(cam)
        got = len(self.results[cam])
        self.pubs[cam].publish(msg)

        def settled():
            now = self.counts(cam)
            return now['errors'] > before['errors'] or len(self.results[cam]) > got

        assert wait_for(settled, timeout), f'frame on {cam} neither grounded nor refused'
        after = self.counts(cam)
        if after['errors'] > before['errors']:
            return 'refused', after['last_error']
        return 'handled', self.results[cam][got][1]

    def grounds(self, cam, msg, timeout=30.0):
        """Publish a good frame; return its grounding once it arrives (header checked)."""
        self.pubs[cam].publish(msg)
        header = msg.header

        def arrived():
            return [m for _, m in self.results[cam] if m.header == header]

        assert wait_for(arrived, timeout), f'no result for the frame on {cam}'
        return arrived()[0]

    def close(self):
        """Stop the node as the process does (goals ended, threads stopped), then destroy.

        Between leaving the executor and destruction, the executor gets a moment to finish
        the wait it is in: an action server destroyed while the executor still holds it in a
        wait set makes rclpy raise InvalidHandle out of the executor.
        """
        self.node.close()
        self.executor.remove_node(self.node)
        self.executor.remove_node(self.client)
        time.sleep(0.2)
        self.node.destroy_node()
        self.client.destroy_node()


class Stream:
    """A camera streaming at a fixed rate from a thread, freshly stamped; remembers its frames.

    Frame ids are ``CAM_<n>``; :attr:`sent` maps each frame's (sec, nanosec, frame_id) to the
    monotonic time it was published.
    """

    def __init__(self, harness, cam, rgb, hz, unstamped=False):
        self.harness, self.cam, self.rgb, self.period = harness, cam, rgb, 1.0 / hz
        self.unstamped = unstamped  # header stamps left 0 (the node stamps them)
        self.sent = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for i in itertools.count():
            if self._stop.wait(self.period):
                return
            msg = self.harness.image(self.rgb, frame_id=f'{self.cam}_{i}')
            if self.unstamped:
                msg.header.stamp.sec = msg.header.stamp.nanosec = 0
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
            self.sent[key] = time.monotonic()
            self.harness.pubs[self.cam].publish(msg)

    def check(self, since, timeout=30.0):
        """Check this camera was grounded since ``since`` and still is; return the count.

        Events only, no bound in seconds: results came after ``since``, another comes after
        this call, and every one carries the header of a frame this stream sent, with its
        camera and size. ``timeout`` only ends a hang.
        """
        results = self.harness.results[self.cam]
        assert wait_for(lambda: any(t >= since for t, _ in results), timeout), \
            f'camera {self.cam}: no result since the phase began'
        now = time.monotonic()
        assert wait_for(lambda: any(t > now for t, _ in results), timeout), \
            f'camera {self.cam}: results stopped'
        got = [m for t, m in results if t >= since]
        h, w = self.rgb.shape[:2]
        for msg in got:
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
            assert key in self.sent, f'result with a header that was never sent: {key}'
            assert msg.camera == self.cam and (msg.image_width, msg.image_height) == (w, h)
        return len(got)

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)
