# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Reliability and security of the node: bad input, injected faults, concurrency, secrets.

Bad inputs go through every interface the node has: the camera topics (raw and compressed), the
``~/ground`` service and action, the parameters, and the offline path (the conversion
``images.frame_from_message`` on ``rosbags`` messages read back from CDR, and ``ground_bag`` on
a bag of bad images). Each case is recorded with its outcome (refused with a clear error, or
handled as documented); the table and its counts are printed at the end of the module. While
they run, another camera streams continuously and its results must keep coming, each with the
header of its own frame.

Faults are injected only where this machine has no real device: CUDA out-of-memory is raised
from the text model's forward, as in test_engine.py; so are a crash and a slow model. Everything
else is real: rclpy over DDS on loopback, the tiny KOSMOS-2 through transformers.

Security checks that live elsewhere: a pickle-only model folder is refused with the reason
(test_loading.py::test_pickle_only_folder_is_refused) and ``local_files_only`` makes no network
attempt (test_loading.py::test_offline_mode_makes_no_network_attempt).
"""

import ast
import collections
import functools
import itertools
import math
import os
from pathlib import Path
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.msg import Grounding
from kosmos_ros_interfaces.srv import Ground
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
import numpy as np
import pytest
from rcl_interfaces.msg import Log
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
import torch
from vision_msgs.msg import BoundingBox2D

from kosmos_ros.datatypes import Query, Task
from kosmos_ros.engine import GroundingEngine
from kosmos_ros.errors import ImageError, PromptError
from kosmos_ros.images import frame_from_message
from kosmos_ros.node.grounding_node import GroundingNode
from kosmos_ros.node.queries import QUERY_QOS

import helpers  # noqa: I100
from helpers import wait_for, wait_for_state  # noqa: I100

PACKAGE = Path(__file__).resolve().parents[1]
SUCCEEDED, ABORTED = 4, 6  # action_msgs/GoalStatus
_names = itertools.count()


def status_mb(field):
    """Return a memory figure of this process from /proc (VmRSS, VmHWM), in MiB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class PeakMemory:
    """How far this process's peak RSS rose above its RSS at the start (Linux, MiB)."""

    def __enter__(self):
        try:  # reset VmHWM to the current RSS
            Path('/proc/self/clear_refs').write_text('5')
            self.resettable = True
        except OSError:
            self.resettable = False
        self.start = status_mb('VmRSS')
        return self

    def __exit__(self, *exc):
        self.growth = status_mb('VmHWM') - self.start if self.resettable else 0.0
        return False


# -- the ledger of cases --------------------------------------------------------------------

class Ledger:
    """Every case tried and its outcome; printed as a table at the end of the module."""

    def __init__(self):
        self.rows = []

    def add(self, interface, case, outcome, detail=''):
        assert outcome in ('refused', 'handled', 'refused by rclpy', 'survived'), outcome
        detail = ' '.join(str(detail).split())
        self.rows.append((interface, case, outcome, detail[:80]))

    def render(self):
        lines = ['', 'reliability cases (test_reliability.py): interface | case | outcome | '
                 'detail']
        for row in self.rows:
            lines.append(' | '.join(row))
        by_outcome = collections.Counter(r[2] for r in self.rows)
        by_interface = collections.Counter(r[0] for r in self.rows)
        lines.append(f'total {len(self.rows)} cases; ' + ', '.join(
            f'{k} {v}' for k, v in sorted(by_outcome.items())))
        lines.append('by interface: ' + ', '.join(
            f'{k} {v}' for k, v in sorted(by_interface.items())))
        return '\n'.join(lines)


@pytest.fixture(scope='module')
def ledger(request):
    book = Ledger()
    yield book
    text = book.render()
    path = os.environ.get('KOSMOS_ROS_RELIABILITY_TABLE')
    if path:
        Path(path).write_text(text + '\n')
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin('terminalreporter'), plugins.getplugin('capturemanager')
    if reporter is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        for line in text.splitlines():
            reporter.write_line(line)


# -- a node, a client and their streams -----------------------------------------------------

@pytest.fixture(scope='module')
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    crashed = []

    def spin():
        try:
            executor.spin()
        except BaseException as exc:  # a callback raised: every later test would hang
            crashed.append(exc)
            raise

    thread = threading.Thread(target=spin, name='executor', daemon=True)
    thread.start()
    yield context, executor, crashed
    assert not crashed, f'the executor stopped: {crashed[0]!r}'
    executor.shutdown(timeout_sec=5.0)
    rclpy.try_shutdown(context=context)


@pytest.fixture(autouse=True)
def executor_alive(ros):
    """Fail the test during which a callback raised out of the executor."""
    yield
    crashed = ros[2]
    assert not crashed, f'the executor stopped spinning: {crashed[0]!r}'


def small(photo, width=160, height=120):
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


class Rig:
    """A grounding node in its own namespace and a client node that talks to it over DDS."""

    def __init__(self, ros, model_dir, cameras=('front',), compressed=(), configure=True,
                 node_values=None, **params):
        context, executor = ros[:2]
        self.ns = f'/rel{next(_names)}'
        self.executor = executor
        values = dict(model=str(model_dir), device='cpu', local_files_only=True,
                      cameras=list(cameras), max_new_tokens=2, rate_hz=0.0,
                      max_frame_age=30.0, camera_timeout=0.0, diagnostics_period=0.5,
                      image_qos_reliability='reliable', unsubscribe_idle_after=0.0)
        values.update(params)
        values.update(node_values or {})  # given to the node alone (the client ignores them)
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        overrides += [Parameter(f'{c}.transport', value='compressed') for c in compressed]
        self.node = GroundingNode(context=context, namespace=self.ns,
                                  parameter_overrides=overrides)
        self.client = rclpy.create_node(f'client_{self.ns[1:]}', context=context,
                                        namespace=self.ns)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs, self.results, self.stamps = {}, {}, {}
        for cam in cameras:
            if cam in compressed:
                self.pubs[cam] = self.client.create_publisher(
                    CompressedImage, f'{cam}/image_raw/compressed', reliable)
            else:
                self.pubs[cam] = self.client.create_publisher(Image, f'{cam}/image_raw',
                                                              reliable)
            self.results[cam] = []
            self.client.create_subscription(
                Grounding, f'{cam}/grounding',
                lambda msg, cam=cam: self.results[cam].append((time.monotonic(), msg)), 100)
        self.logs = []
        self.diagnostics = []
        self.client.create_subscription(Log, '/rosout', self._on_log, 1000)
        self.client.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 100)
        # Callers that send many requests at once need a response queue as deep as their burst.
        self.service = self.client.create_client(Ground, 'kosmos_grounding/ground',
                                                 qos_profile=QUERY_QOS)
        self.action = ActionClient(self.client, GroundAction, 'kosmos_grounding/ground',
                                   goal_service_qos_profile=QUERY_QOS,
                                   result_service_qos_profile=QUERY_QOS,
                                   cancel_service_qos_profile=QUERY_QOS)
        # Entities first, then the executor: rclpy's ActionClient registers itself with its
        # node before its lock exists, and a spinning executor may look at it in between.
        executor.add_node(self.node)
        executor.add_node(self.client)
        if configure:
            self.start()

    def start(self):
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        for pub in self.pubs.values():
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

    @property
    def worker(self):
        return self.node._worker

    def counts(self, cam):
        return self.worker.snapshot()[cam]

    def next_stamp(self, cam, spacing=0.6):
        """Return a node-time stamp at least ``spacing`` after the camera's previous one."""
        now = self.node.get_clock().now().nanoseconds * 1e-9
        stamp = max(now, self.stamps.get(cam, 0.0) + spacing)
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

    def image(self, rgb, stamp=None, frame_id='camera', encoding='rgb8'):
        array = rgb if encoding == 'rgb8' else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                    step=rgb.shape[1] * 3, data=array.tobytes())
        seconds = self.node.get_clock().now().nanoseconds * 1e-9 if stamp is None else stamp
        return self.set_stamp(msg, seconds, frame_id)

    def jpeg(self, rgb, stamp, frame_id='camera'):
        ok, payload = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return self.set_stamp(CompressedImage(format='jpeg', data=payload.tobytes()), stamp,
                              frame_id)

    def call(self, timeout=60.0, **fields):
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
        self.node.stop_worker()
        self.executor.remove_node(self.node)
        self.executor.remove_node(self.client)
        self.node.destroy_node()
        self.client.destroy_node()


class Stream:
    """A camera streaming at a fixed rate from a thread; remembers what it sent."""

    def __init__(self, rig, cam, rgb, hz):
        self.rig, self.cam, self.rgb, self.period = rig, cam, rgb, 1.0 / hz
        self.sent = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for i in itertools.count():
            if self._stop.wait(self.period):
                return
            msg = self.rig.image(self.rgb, frame_id=f'{self.cam}_{i}')
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
            self.sent[key] = time.monotonic()
            self.rig.pubs[self.cam].publish(msg)

    def check(self, since, max_gap=6.0):
        """Results since ``since`` kept coming, each with the header of a frame sent."""
        def got():
            return [(t, m) for t, m in self.rig.results[self.cam] if t >= since]

        assert wait_for(got, max_gap), f'camera {self.cam}: no result since {since}'
        got = got()
        times = [since] + [t for t, _ in got] + [time.monotonic()]
        gap = float(np.max(np.diff(times)))
        assert gap < max_gap, f'camera {self.cam}: {gap:.1f} s without a result'
        h, w = self.rgb.shape[:2]
        for _, msg in got:
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
            assert key in self.sent, f'result with a header that was never sent: {key}'
            assert msg.camera == self.cam and (msg.image_width, msg.image_height) == (w, h)
        return len(got), gap

    def stop(self):
        self._stop.set()
        self._thread.join(5.0)


class Fault:
    """Fault injection in the text model's forward: raise, out-of-memory or slow down."""

    def __init__(self, monkeypatch, engine):
        self.mode, self.delay, self.calls = None, 0.0, 0
        model = engine.model.text_model
        original = model.forward

        @functools.wraps(original)
        def forward(*args, **kwargs):
            self.calls += 1
            step = kwargs.get('input_ids') is not None and kwargs['input_ids'].shape[1] == 1
            if self.delay:
                time.sleep(self.delay)
            if self.mode == 'raise' and step:  # mid-inference: after the prompt pass
                raise RuntimeError('injected fault in the text model')
            if self.mode == 'oom':
                raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB')
            return original(*args, **kwargs)

        monkeypatch.setattr(model, 'forward', forward)


# -- bad inputs: one node with a bystander camera streaming throughout --------------------------

def serving(rig, since):
    """Check that the node still grounds and the bystander camera kept streaming."""
    response = rig.call(task=Ground.Request.CAPTION, image=rig.image(rig.photo,
                                                                     frame_id='health'))
    assert response.success, response.message
    assert response.grounding.header.frame_id == 'health'
    return rig.stream.check(since)


def raw_msg(width, height, encoding='rgb8', step=None, size=None, bigendian=0):
    bpp = {'rgb8': 3, 'mono8': 1, 'yuv422': 2, 'bayer_rggb8': 1, 'mono16': 2}.get(encoding, 4)
    step = width * bpp if step is None else step
    size = step * height if size is None else size
    return Image(width=width, height=height, encoding=encoding, step=step,
                 is_bigendian=bigendian, data=bytes(size))


def png_bomb(width, height):
    """Return a valid PNG of black RGB pixels: ~300 KB sent, width*height*3 bytes decoded."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data)))

    compressor = zlib.compressobj(9)
    rows = bytes(1 + 3 * width) * 500
    body = b''.join(compressor.compress(rows) for _ in range(height // 500))
    body += compressor.flush()
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', body) +
            chunk(b'IEND', b''))


def jpeg_declaring(width, height):
    """Return a small JPEG whose frame header declares width x height (a decoder allocates it)."""
    ok, payload = cv2.imencode('.jpg', np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(payload.tobytes())
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def compressed_cases(photo):
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    ok, png = cv2.imencode('.png', cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    jpeg, png = jpeg.tobytes(), png.tobytes()
    scrambled = bytearray(jpeg)
    middle = (jpeg.find(b'\xff\xda') + len(jpeg)) // 2
    for k in range(middle, middle + 64):
        scrambled[k] = (scrambled[k] * 7 + 13) & 0x7f  # no 0xff: markers stay intact
    return [
        # (case, format, payload, expected reason or None when decoded)
        ('compressed: empty payload', 'jpeg', b'', 'compressed image has no data'),
        ('compressed: truncated JPEG', 'jpeg', jpeg[:len(jpeg) // 2], 'truncated JPEG'),
        ('compressed: truncated PNG', 'png', png[:len(png) // 2], 'corrupt compressed image'),
        ('compressed: JPEG header then zeros', 'jpeg', jpeg[:20] + bytes(300) + b'\xff\xd9',
         'cannot establish the size of the JPEG'),
        ('compressed: corrupt JPEG scan data (markers intact)', 'jpeg', bytes(scrambled),
         None),
        ('compressed: GIF payload', 'gif', b'GIF89a' + bytes(100), 'neither JPEG nor PNG'),
        ('compressed: random bytes', 'jpeg', bytes(range(256)) * 4, 'neither JPEG nor PNG'),
        ('compressed: compressedDepth', 'png; compressedDepth', png,
         'compressed depth images'),
        ('compressed: PNG declaring 10000x10000 (300 MB decoded)', 'png',
         png_bomb(10000, 10000), 'exceeds the limit'),
        ('compressed: JPEG declaring 10000x10000', 'jpeg', jpeg_declaring(10000, 10000),
         'exceeds the limit'),
        ('compressed: small JPEG declaring 32767x32767 behind a stray byte', 'jpeg',
         stray_byte(jpeg_declaring(32767, 32767)), 'exceeds the limit'),
        ('compressed: JPEG without a frame header', 'jpeg', without_sof(jpeg),
         'cannot establish the size of the JPEG: no frame header'),
        ('compressed: PNG whose first chunk is not IHDR', 'png',
         png[:8] + b'\x00\x00\x00\x00tEXt\x00\x00\x00\x00' + png[8:],
         'cannot establish the size of the PNG'),
        ('compressed: valid JPEG and 100 zero bytes of padding', 'jpeg', jpeg + bytes(100),
         None),
        ('compressed: valid JPEG with a stray byte between segments', 'jpeg', stray_byte(jpeg),
         None),
    ]


def stray_byte(jpeg):
    """Insert one extraneous byte before the frame header (libjpeg skips it, warning)."""
    sof = jpeg.find(b'\xff\xc0')
    return jpeg[:sof] + b'\x00' + jpeg[sof:]


def without_sof(jpeg):
    sof = jpeg.find(b'\xff\xc0')
    length = struct.unpack('>H', jpeg[sof + 2:sof + 4])[0]
    return jpeg[:sof] + jpeg[sof + 2 + length:]


RAW_CASES = [
    # (case, message, expected reason or None when grounded)
    ('image 0x0', raw_msg(0, 0), r'image is empty \(0x0\)'),
    ('image 1x1', raw_msg(1, 1), None),
    ('image 1x4000 (one row)', raw_msg(4000, 1), None),
    ('image 10000x10000 declared, 16 bytes of data', raw_msg(10000, 10000, size=16),
     'exceeds the limit'),
    ('image 4000x4000 declared, 16 bytes of data', raw_msg(4000, 4000, size=16),
     'data holds 16 bytes but step'),
    ('step smaller than a row', raw_msg(8, 8, step=10), 'step 10 is smaller than width'),
    ('data shorter than step*height', raw_msg(8, 8, size=100), 'data holds 100 bytes'),
    ('data longer than step*height', raw_msg(8, 8, size=1000), 'data holds 1000 bytes'),
    ('step of 4 GiB', raw_msg(8, 2, step=2**32 - 1, size=48), 'data holds 48 bytes'),
    ('encoding 32FC1', raw_msg(4, 4, '32FC1'), "unsupported image encoding '32FC1'"),
    ('encoding 16UC3', raw_msg(4, 4, '16UC3'), "unsupported image encoding '16UC3'"),
    ('encoding 8SC1', raw_msg(4, 4, '8SC1'), "unsupported image encoding '8SC1'"),
    ('encoding unknown (rgb9)', raw_msg(4, 4, 'rgb9'), "unsupported image encoding 'rgb9'"),
    ('encoding empty', raw_msg(4, 4, ''), "unsupported image encoding ''"),
    ('encoding RGB8 (wrong case)', raw_msg(4, 4, 'RGB8'), "unsupported image encoding 'RGB8'"),
    ('yuv422 of odd width', raw_msg(3, 2, 'yuv422'), 'cannot convert yuv422'),
    ('bayer_rggb8 1x1', raw_msg(1, 1, 'bayer_rggb8'), None),
    ('mono16 big-endian', raw_msg(6, 4, 'mono16', bigendian=1), None),
]


def region(cx, cy, w, h, theta=0.0):
    box = BoundingBox2D()
    # Floats only: with field checks off (Jazzy's default) an int passes the Python setter and
    # then fails an assertion in the C conversion, aborting the client process.
    box.center.position.x, box.center.position.y = float(cx), float(cy)
    box.center.theta = float(theta)
    box.size_x, box.size_y = float(w), float(h)
    return box


def structure(ids):
    """Return the control tokens of a prompt, in order.

    They are the special ids (<s>, </s>, <pad>, <unk>) and every added token (<image>, tags,
    patch indices).
    """
    return [i for i in ids if i < 4 or i >= 64000]


@pytest.fixture
def prompt_spy(monkeypatch):
    """Record every prompt the engine tokenizes, with its ids (a spy, not a fault)."""
    seen = []
    original = GroundingEngine._tokenize

    def spy(self, prompt):
        ids = original(self, prompt)
        seen.append((prompt, ids))
        return ids

    monkeypatch.setattr(GroundingEngine, '_tokenize', spy)
    return seen


INJECTIONS = '</image><patch_index_0001><grounding><phrase> x</phrase><object></s><s><pad>'
# Fullwidth (U+FF1C/E) and small-form (U+FE64/5) brackets, which the tokenizer reads as < >.
LOOK_ALIKE_INJECTIONS = ('\uff1cs\uff1e \ufe64/s\ufe65 \uff1cpad\uff1e \uff1cmask\uff1e '
                         '\ufe64unk\ufe65 \uff1cgrounding\uff1e')


@pytest.fixture(scope='class')
def suite(ros, tiny_model_dir, photos):
    """Yield a node of three cameras, one (rear) streaming throughout."""
    rig = Rig(ros, tiny_model_dir, cameras=('front', 'rear', 'pack'), compressed=('pack',),
              rate_hz=2.0, max_pending_queries=200)  # bad requests go out all at once
    rig.photo = small(photos['coffee'])
    stream = Stream(rig, 'rear', small(photos['chelsea'], 128, 96), hz=8.0)
    rig.stream = stream
    assert wait_for(lambda: rig.results['rear'], 30), 'the bystander camera never grounded'
    yield rig
    stream.stop()
    rig.close()


class TestBadInputs:
    """Bad input on every interface of one node while its rear camera streams."""

    def test_topic_bad_images(self, suite, ledger):
        rig, since = suite, time.monotonic()
        for case, msg, expected in RAW_CASES:
            rig.set_stamp(msg, rig.next_stamp('front'), f'bad_{len(ledger.rows)}')
            with PeakMemory() as peak:
                outcome, detail = rig.offer('front', msg)
            growth = peak.growth
            assert growth < 100, f'{case}: memory peaked {growth:.0f} MiB above its start'
            if expected is None:
                assert outcome == 'handled', (case, detail)
                assert detail.header == msg.header
                assert (detail.image_width, detail.image_height) == (msg.width, msg.height)
                detail = f'grounded ({msg.width}x{msg.height}, header kept)'
            else:
                assert outcome == 'refused' and re.search(expected, detail), (case, detail)
            ledger.add('topic (raw)', case, outcome, detail)
        good = rig.image(rig.photo, rig.next_stamp('front'), 'front_good')
        assert rig.grounds('front', good).header == good.header
        serving(rig, since)

    def test_compressed_bad_images(self, suite, ledger, photos):
        rig, since = suite, time.monotonic()
        for case, fmt, payload, expected in compressed_cases(small(photos['astronaut'])):
            msg = rig.set_stamp(CompressedImage(format=fmt, data=payload), rig.next_stamp('pack'),
                                f'bad_{len(ledger.rows)}')
            with PeakMemory() as peak:
                outcome, detail = rig.offer('pack', msg)
            growth = peak.growth
            assert growth < 100, f'{case}: memory peaked {growth:.0f} MiB above its start'
            if expected is None:
                assert outcome == 'handled', (case, detail)
                detail = ('decoded as libjpeg does (garbled pixels, no error); grounded'
                          if 'corrupt' in case else 'decoded and grounded')
            else:
                assert outcome == 'refused' and re.search(expected, detail), (case, detail)
                if 'declaring' in case:
                    detail = f'peak memory +{max(growth, 0):.0f} MiB; {detail}'
            ledger.add('topic (compressed)', case, outcome, detail)
        good = rig.jpeg(small(photos['astronaut']), rig.next_stamp('pack'), 'pack_good')
        assert rig.grounds('pack', good).header == good.header
        serving(rig, since)

    def test_service_bad_requests(self, suite, ledger, prompt_spy):
        rig, since = suite, time.monotonic()
        img = rig.image(rig.photo, frame_id='req')  # 160x120
        rig.grounds('front', rig.image(rig.photo, rig.next_stamp('front'), 'front_newest'))
        rig.grounds('pack', rig.jpeg(rig.photo, rig.next_stamp('pack'), 'pack_newest'))
        q = Ground.Request.QUESTION
        long_text = 'cup ' * 25000
        cases = [
            # (case, request fields, expected error or None when answered)
            ('image 0x0 with data', dict(image=Image(width=0, height=0, encoding='rgb8',
                                                     data=bytes(3))), r'image is empty \(0x0\)'),
            ('image 0x0 without data (means: use the camera)', dict(image=Image()), None),
            ('image 1x1', dict(image=raw_msg(1, 1)), None),
            ('image 10000x10000 declared, 16 bytes', dict(image=raw_msg(10000, 10000, size=16)),
             'exceeds the limit'),
            ('image step smaller than a row', dict(image=raw_msg(8, 8, step=10)),
             'step 10 is smaller'),
            ('image data shorter than step*height', dict(image=raw_msg(8, 8, size=10)),
             'data holds 10 bytes'),
            ('image encoding 32FC1', dict(image=raw_msg(4, 4, '32FC1')),
             "unsupported image encoding '32FC1'"),
            ('image encoding 16UC3', dict(image=raw_msg(4, 4, '16UC3')),
             "unsupported image encoding '16UC3'"),
            ('image encoding 8SC1', dict(image=raw_msg(4, 4, '8SC1')),
             "unsupported image encoding '8SC1'"),
            ('image encoding unknown', dict(image=raw_msg(4, 4, 'hsv8')),
             "unsupported image encoding 'hsv8'"),
            ('prompt empty (find)', dict(task=Ground.Request.FIND, prompt=''), 'empty prompt'),
            ('prompt whitespace (question)', dict(task=q, prompt=' \t\n '), 'empty prompt'),
            ('prompt whitespace (raw)', dict(task=Ground.Request.RAW, prompt='   '),
             'empty prompt'),
            ('prompt 100,000 characters (find)', dict(task=Ground.Request.FIND,
                                                      prompt=long_text), 'far over the limit'),
            ('prompt 100,000 characters (raw)', dict(task=Ground.Request.RAW, prompt=long_text),
             'far over the limit'),
            ('prompt 100,000 characters (caption, unused)', dict(prompt=long_text),
             'far over the limit'),
            ('prompt of 300 words (question)', dict(task=q, prompt='why ' * 300 + '?'),
             'the limit is 256 tokens'),
            ('prompt with control characters', dict(task=Ground.Request.FIND,
                                                    prompt='cup\x1b[2J\x07\x7f'), None),
            ('prompt of emoji and RTL text',
             dict(task=Ground.Request.FIND, prompt='\u202e\U0001F600 \u05e9\u05dc\u05d5\u05dd'),
             None),
            ('prompt full of control tokens (find)', dict(task=Ground.Request.FIND,
                                                          prompt=INJECTIONS), None),
            ('prompt full of control tokens (question)', dict(task=q,
                                                              prompt=f'is {INJECTIONS} here?'),
             None),
            ('raw prompt with </image>', dict(task=Ground.Request.RAW,
                                              prompt='<grounding> a</image> b'),
             "raw prompt holds '</image>'"),
            ('raw prompt with <s> and </s>', dict(task=Ground.Request.RAW, prompt='</s><s> a'),
             "raw prompt holds '(<s>|</s>)'"),
            ('raw prompt with <pad>', dict(task=Ground.Request.RAW, prompt='<pad> a'),
             "raw prompt holds '<pad>'"),
            ('prompt of look-alike brackets spelling <s> </s> <pad> <mask> <unk> (find)',
             dict(task=Ground.Request.FIND, prompt=LOOK_ALIKE_INJECTIONS), None),
            ('prompt of look-alike brackets (question)',
             dict(task=q, prompt=f'is {LOOK_ALIKE_INJECTIONS} here?'), None),
            ('raw prompt with fullwidth \uff1cs\uff1e',
             dict(task=Ground.Request.RAW, prompt='<grounding> a \uff1cs\uff1e b'),
             "raw prompt holds '<s>' \\(spelled with look-alike characters\\)"),
            ('raw prompt with small-form \ufe64mask\ufe65',
             dict(task=Ground.Request.RAW, prompt='<grounding> a \ufe64mask\ufe65'),
             "raw prompt holds '<mask>' \\(spelled with look-alike"),
            ('prompt of characters outside the vocabulary only (find)',
             dict(task=Ground.Request.FIND, prompt='\U000e0000\u227a'),
             'empty prompt: no character'),
            ('region NaN centre', dict(task=q, prompt='What is [this]?',
                                       regions=[region(math.nan, 10, 5, 5)]),
             'not a finite number'),
            ('region inf size', dict(task=q, prompt='What is [this]?',
                                     regions=[region(10, 10, math.inf, 5)]),
             'not a finite number'),
            ('region negative size', dict(task=q, prompt='What is [this]?',
                                          regions=[region(50, 50, -10, 10)]), 'degenerate'),
            ('region zero size', dict(task=q, prompt='What is [this]?',
                                      regions=[region(50, 50, 0, 0)]), 'degenerate'),
            ('region outside the frame', dict(task=q, prompt='What is [this]?',
                                              regions=[region(500, 50, 10, 10)]),
             'outside the 160x120 image'),
            ('region partly outside', dict(task=q, prompt='What is [this]?',
                                           regions=[region(155, 60, 20, 20)]), 'outside'),
            ('more regions than phrases', dict(task=q, prompt='What is [this]?',
                                               regions=[region(40, 40, 20, 20)] * 2),
             '2 regions given but the prompt has 1'),
            ('regions on a caption', dict(regions=[region(40, 40, 20, 20)]),
             'caption takes no regions'),
            ('region rotated', dict(task=q, prompt='What is [this]?',
                                    regions=[region(40, 40, 20, 20, theta=0.3)]), 'rotated'),
            ('region theta NaN', dict(task=q, prompt='What is [this]?',
                                      regions=[region(40, 40, 20, 20, theta=math.nan)]),
             'rotated'),
            ('region valid', dict(task=q, prompt='What is [this]?',
                                  regions=[region(40, 40, 20, 20)]), None),
            ('task 9', dict(task=9), 'unknown task 9'),
            ('task 255', dict(task=255), 'unknown task 255'),
            ('max_new_tokens 4294967295', dict(max_new_tokens=2**32 - 1),
             r'max_new_tokens 4294967295 is more than a request may ask for'),
            ('max_new_tokens 257 (max_request_tokens 256)', dict(max_new_tokens=257),
             r'\(max_request_tokens 256\)'),
        ]
        camera_cases = [
            ('camera unknown', dict(camera='left'), "unknown camera 'left'"),
            ('camera path-like', dict(camera='../front'), "unknown camera '../front'"),
            ('camera name of 10,000 characters', dict(camera='c' * 10000), 'unknown camera'),
            ('camera empty (means: the first camera)', dict(camera=''), None),
            ('camera of the bystander stream', dict(camera='rear'), None),
            ('camera with compressed transport', dict(camera='pack'), None),
            ('camera with image set (label only)', dict(camera='left', image=img), None),
        ]
        futures = []
        for case, fields, expected in cases + camera_cases:
            fields = dict(fields)
            if 'image' not in fields and 'camera' not in fields:
                fields['image'] = img
            futures.append((case, fields, expected,
                            rig.service.call_async(Ground.Request(**fields))))
        assert wait_for(lambda: all(f.done() for *_, f in futures), 90), \
            ('calls not answered', [c for c, _, _, f in futures if not f.done()])
        for case, fields, expected, future in futures:
            response = future.result()
            if expected is None:
                assert response.success, (case, response.message)
                detail = 'answered'
                if fields.get('image') is not None and fields['image'].width:
                    assert response.grounding.header == fields['image'].header, case
                if fields.get('camera') == 'rear':
                    stamp = response.grounding.header.stamp
                    key = (stamp.sec, stamp.nanosec, response.grounding.header.frame_id)
                    assert key in rig.stream.sent, 'rear answered with a header never sent'
                    detail = "answered on the camera's newest frame, its header kept"
                newest = {'': 'front_newest', 'pack': 'pack_newest'}
                if fields.get('image') is not None and fields['image'].width == 0 or \
                        fields.get('camera') in newest and 'image' not in fields:
                    expected_id = newest[fields.get('camera', '')]
                    assert response.grounding.header.frame_id == expected_id, case
                    detail = f"answered on the camera's newest frame ({expected_id})"
                ledger.add('service', case, 'handled', detail)
            else:
                assert not response.success and re.search(expected, response.message), \
                    (case, response.message)
                ledger.add('service', case, 'refused', response.message)
        # Control tokens in user text: same control-token structure as a plain phrase.
        template = {task: structure(rig.node._engine.prepare(Query(task, 'cup'), 160, 120)[0])
                    for task in (Task.FIND, Task.QUESTION)}
        injected = [(p, ids) for p, ids in prompt_spy
                    if '\u2039/image\u203a' in p or '\u2039pad\u203a' in p]
        assert len(injected) >= 4, 'the injected prompts never reached the model'
        for prompt, ids in injected:
            task = Task.FIND if prompt.startswith('<grounding><phrase>') else Task.QUESTION
            assert structure(ids) == template[task], prompt
        ledger.add('service', 'control tokens: token structure checked', 'handled',
                   'neutralised to \u2039 \u203a; control-token ids identical to a plain prompt')
        serving(rig, since)

    def test_prompts_that_cannot_cross_rclpy(self, suite, ledger):
        """Lone surrogates cannot be serialised; NUL ends a string; bad UTF-8 becomes U+FFFD."""
        rig, since = suite, time.monotonic()
        img = rig.image(rig.photo, frame_id='req')
        with pytest.raises(UnicodeEncodeError, match='surrogates not allowed'):
            rig.service.call_async(Ground.Request(task=Ground.Request.FIND, prompt='cup \udcff',
                                                  image=img))
        ledger.add('service', 'prompt with a lone surrogate', 'refused by rclpy',
                   'UnicodeEncodeError in call_async: the request is never sent')
        with pytest.raises(UnicodeEncodeError):
            rig.action.send_goal_async(GroundAction.Goal(task=2, prompt='\ud800', image=img))
        ledger.add('action', 'prompt with a lone surrogate', 'refused by rclpy',
                   'UnicodeEncodeError in send_goal_async: the goal is never sent')
        # At our boundary (in-process callers, parameters): refused with the reason.
        with pytest.raises(PromptError, match='not valid Unicode'):
            rig.node._engine.prepare(Query(Task.FIND, 'cup \udcff'), 160, 120)
        result = rig.node.set_parameters_atomically([Parameter('task', value='find'),
                                                     Parameter('prompt', value='cup \udcff')])
        reason = result.reason
        assert not result.successful and 'not valid Unicode' in reason, reason
        assert rig.node.get_parameter('task').value == 'caption'
        ledger.add('parameter', 'continuous prompt with a lone surrogate', 'refused', reason)
        # What a non-Python client's invalid UTF-8 becomes: rclpy decodes with 'replace'.
        wire = serialize_message(Ground.Request(task=Ground.Request.FIND, prompt='cupABCDcup'))
        request = deserialize_message(wire.replace(b'ABCD', b'\xff\xfe\xc3\x28'), Ground.Request)
        assert request.prompt == 'cup\ufffd\ufffd\ufffd(cup'
        request.image = img
        future = rig.service.call_async(request)
        assert wait_for(future.done, 30) and future.result().success, future.result().message
        ledger.add('service', 'prompt of invalid UTF-8 bytes', 'handled',
                   'rclpy decodes them as U+FFFD; answered')
        nul = deserialize_message(serialize_message(Ground.Request(prompt='cup\x00<grounding>')),
                                  Ground.Request)
        assert nul.prompt == 'cup'
        ledger.add('service', 'prompt with NUL', 'handled',
                   'rclpy strings end at NUL: the rest never arrives')
        serving(rig, since)

    def test_action_bad_goals(self, suite, ledger):
        rig, since = suite, time.monotonic()
        img = rig.image(rig.photo, frame_id='goal')
        goal = GroundAction.Goal
        cases = [
            ('prompt empty (find)', goal(task=goal.FIND, prompt='', image=img), 'empty prompt'),
            ('prompt 100,000 characters', goal(task=goal.FIND, prompt='x' * 100000, image=img),
             'far over the limit'),
            ('prompt full of control tokens', goal(task=goal.FIND, prompt=INJECTIONS,
                                                   image=img), None),
            ('region NaN', goal(task=goal.QUESTION, prompt='What is [this]?', image=img,
                                regions=[region(math.nan, 1, 1, 1)]), 'not a finite number'),
            ('more regions than phrases', goal(task=goal.QUESTION, prompt='What?', image=img,
                                               regions=[region(40, 40, 10, 10)]),
             '1 regions given but the prompt has 0'),
            ('camera unknown', goal(camera='nope'), "unknown camera 'nope'"),
            ('image encoding 32FC1', goal(image=raw_msg(4, 4, '32FC1')),
             "unsupported image encoding '32FC1'"),
            ('image data inconsistent', goal(image=raw_msg(8, 8, size=7)), 'data holds 7 bytes'),
            ('task 7', goal(task=7, image=img), 'unknown task 7'),
            ('valid caption', goal(image=img), None),
        ]
        outcomes = rig.goals([g for _, g, _ in cases])
        for (case, g, expected), (status, result) in zip(cases, outcomes):
            if expected is None:
                assert status == SUCCEEDED and result.success, (case, result.message)
                assert result.grounding.header == img.header
                ledger.add('action', case, 'handled', 'succeeded')
            else:
                assert status == ABORTED and not result.success, (case, status)
                assert re.search(expected, result.message), (case, result.message)
                ledger.add('action', case, 'refused', f'aborted: {result.message}')
        serving(rig, since)

    def test_parameters_cannot_inject_or_break(self, suite, ledger, prompt_spy):
        rig, since = suite, time.monotonic()
        node = rig.node

        def refused(params, expected, case):
            result = node.set_parameters_atomically(params)
            assert not result.successful and re.search(expected, result.reason), \
                (case, result.reason)
            ledger.add('parameter', case, 'refused', result.reason)

        refused([Parameter('task', value='find'), Parameter('prompt', value='cup ' * 25000)],
                'far over the limit', 'continuous prompt of 100,000 characters')
        refused([Parameter('task', value='question'), Parameter('prompt', value='why ' * 300)],
                'limit is 256 tokens', 'continuous prompt of 300 words')
        refused([Parameter('task', value='raw'), Parameter('prompt', value='</image> a')],
                "raw prompt holds '</image>'", 'continuous raw prompt with </image>')
        refused([Parameter('rate_hz', value=math.nan)], 'rate_hz', 'rate_hz NaN')
        refused([Parameter('rate_hz', value=math.inf)], 'rate_hz', 'rate_hz inf')
        refused([Parameter('max_image_pixels', value=0)], 'max_image_pixels',
                'max_image_pixels 0')
        refused([Parameter('front.topic', value='/elsewhere')], 'needs a reload',
                'camera topic while active')
        assert node.get_parameter('task').value == 'caption'
        # Control tokens in the continuous prompt: neutralised, the structure of a plain phrase.
        assert node.set_parameters_atomically([Parameter('task', value='find'),
                                               Parameter('prompt', value=INJECTIONS)]).successful
        msg = rig.image(rig.photo, rig.next_stamp('front'), 'front_injected')
        result = rig.grounds('front', msg)
        assert result.task == Ground.Request.FIND and result.prompt == INJECTIONS
        assert result.text.startswith('\u2039/image\u203a\u2039patch_index_0001\u203a')
        plain = structure(node._engine.prepare(Query(Task.FIND, 'cup'), 160, 120)[0])
        seen = [ids for p, ids in prompt_spy if '\u2039grounding\u203a' in p]
        assert seen and all(structure(ids) == plain for ids in seen)
        ledger.add('parameter', 'continuous find prompt full of control tokens', 'handled',
                   'neutralised: control-token ids identical to a plain phrase')
        # A runtime limit applies to every camera's frames; other cameras go on.
        assert node.set_parameters([Parameter('max_image_pixels', value=15_000)])[0].successful
        big = rig.image(rig.photo, rig.next_stamp('front'), 'front_big')  # 19,200 pixels
        outcome, reason = rig.offer('front', big)  # the rear camera's frames have 12,288 pixels
        assert outcome == 'refused' and 'exceeds the limit of 15000 pixels' in reason, reason
        ledger.add('parameter', 'max_image_pixels lowered at runtime', 'handled',
                   f'next frame over it refused for its camera only: {reason}')
        rig.stream.check(since)
        assert node.set_parameters_atomically([
            Parameter('max_image_pixels', value=50_000_000), Parameter('task', value='caption'),
            Parameter('prompt', value='')]).successful
        serving(rig, since)

    def test_diagnostics_report_the_refusals(self, suite):
        rig = suite
        assert wait_for(lambda: any('front' in s.name for _, s in rig.diagnostics), 10)
        front = [s for _, s in rig.diagnostics if s.name.endswith('camera front')][-1]
        values = {kv.key: kv.value for kv in front.values}
        assert int(values['errors']) >= len([c for c in RAW_CASES if c[2]])
        assert values['last error']


# -- the offline path: rosbags messages through the shared conversion ---------------------------

def test_offline_path_bad_images(ledger, engine, photos):
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=1, nanosec=0), frame_id='bag')

    def from_bag(msg, msgtype):
        """Serialize to CDR and read back, as a bag reader hands messages out."""
        return store.deserialize_cdr(store.serialize_cdr(msg, msgtype), msgtype)

    image_type = 'sensor_msgs/msg/Image'
    for case, ros_msg, expected in RAW_CASES:
        msg = from_bag(types[image_type](
            header=header, height=ros_msg.height, width=ros_msg.width,
            encoding=ros_msg.encoding, is_bigendian=ros_msg.is_bigendian, step=ros_msg.step,
            data=np.frombuffer(bytes(ros_msg.data), np.uint8)), image_type)
        if expected is None:
            frame = frame_from_message(msg)
            result = engine.ground(frame, Query(Task.CAPTION, max_new_tokens=2))
            assert result.image_size == (ros_msg.width, ros_msg.height)
            ledger.add('offline (rosbags)', case, 'handled', 'converted and grounded')
        else:
            with pytest.raises(ImageError, match=expected) as info:
                frame_from_message(msg)
            ledger.add('offline (rosbags)', case, 'refused', info.value)
    compressed_type = 'sensor_msgs/msg/CompressedImage'
    for case, fmt, payload, expected in compressed_cases(small(photos['rocket'])):
        msg = from_bag(types[compressed_type](header=header, format=fmt,
                                              data=np.frombuffer(payload, np.uint8)),
                       compressed_type)
        with PeakMemory() as peak:
            if expected is None:
                assert frame_from_message(msg).width == 160
                ledger.add('offline (rosbags)', case, 'handled', 'decoded as libjpeg does')
            else:
                with pytest.raises(ImageError, match=expected) as info:
                    frame_from_message(msg)
                ledger.add('offline (rosbags)', case, 'refused', info.value)
        assert peak.growth < 100, case


def test_ground_bag_skips_bad_images_with_their_reason(ledger, engine, photos, tmp_path):
    """The offline tool on a bag holding every bad image: each skipped with its reason."""
    bag_tool = pytest.importorskip('kosmos_ros.bag.ground_bag')
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types
    image_type, compressed_type = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'
    good = small(photos['coffee'])
    raw_cases = RAW_CASES + [('good frame', raw_msg(160, 120), None)]
    packed = compressed_cases(small(photos['rocket']))
    expected, t = {}, 1_700_000_000 * 10**9
    bag = tmp_path / 'bad_images'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        raw = writer.add_connection('/cam/image_raw', image_type, typestore=store)
        jpg = writer.add_connection('/pack/image_raw/compressed', compressed_type,
                                    typestore=store)
        for i, (case, ros_msg, reason) in enumerate(raw_cases):
            t += 100_000_000
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9),
                frame_id=f'raw{i}')
            data = good.reshape(-1) if case == 'good frame' else np.frombuffer(
                bytes(ros_msg.data), np.uint8)
            msg = types[image_type](header=header, height=ros_msg.height, width=ros_msg.width,
                                    encoding=ros_msg.encoding, is_bigendian=ros_msg.is_bigendian,
                                    step=ros_msg.step, data=data)
            writer.write(raw, t, store.serialize_cdr(msg, image_type))
            expected[f'raw{i}'] = (case, reason)
        for i, (case, fmt, payload, reason) in enumerate(packed):
            t += 100_000_000
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=t // 10**9, nanosec=t % 10**9),
                frame_id=f'jpg{i}')
            msg = types[compressed_type](header=header, format=fmt,
                                         data=np.frombuffer(payload, np.uint8))
            writer.write(jpg, t, store.serialize_cdr(msg, compressed_type))
            expected[f'jpg{i}'] = (case, reason)
    outcomes = []
    with PeakMemory() as peak:
        summary = bag_tool.ground_bag(
            bag_tool.GroundBagOptions(bag=bag, output=tmp_path / 'out', max_new_tokens=2,
                                      topics=('/cam/image_raw', '/pack/image_raw/compressed')),
            engine, on_frame=outcomes.append)
    assert peak.growth < 100, f'memory peaked {peak.growth:.0f} MiB above its start'
    assert sorted(o.frame_id for o in outcomes) == sorted(expected)
    for outcome in outcomes:
        case, reason = expected[outcome.frame_id]
        if reason is None:
            assert outcome.result is not None, (case, outcome.reason)
            ledger.add('offline (ground_bag)', case, 'handled', 'grounded, written to the bag')
        else:
            assert outcome.result is None and re.search(reason, outcome.reason), \
                (case, outcome.reason)
            ledger.add('offline (ground_bag)', case, 'refused', f'skipped: {outcome.reason}')
    with AnyReader([tmp_path / 'out']) as reader:
        written = sum(c.msgcount for c in reader.connections if c.topic.endswith('/grounding'))
    assert written == summary.grounded == sum(1 for o in outcomes if o.result is not None)


# -- injected faults ------------------------------------------------------------------------------

@pytest.fixture
def streaming(ros, tiny_model_dir, photos):
    """Yield a node grounding one camera continuously (rate 4 Hz of message time)."""
    rig = Rig(ros, tiny_model_dir, cameras=('front',), rate_hz=4.0, max_new_tokens=3)
    rig.photo = small(photos['coffee'])
    yield rig
    rig.close()


def test_engine_raising_mid_inference(streaming, monkeypatch, ledger):
    rig = streaming
    fault = Fault(monkeypatch, rig.node._engine)
    assert rig.grounds('front', rig.image(rig.photo, rig.next_stamp('front'), 'ok_0'))
    fault.mode = 'raise'
    outcome, reason = rig.offer('front', rig.image(rig.photo, rig.next_stamp('front'), 'f1'))
    assert outcome == 'refused' and 'generation failed: RuntimeError: injected' in reason
    response = rig.call(image=rig.image(rig.photo, frame_id='q'))
    assert not response.success
    assert 'model failure: generation failed: RuntimeError: injected fault' in \
        response.message
    assert wait_for(lambda: any('injected fault' in m.msg for m in rig.logs), 10)
    fault.mode = None
    msg = rig.image(rig.photo, rig.next_stamp('front'), 'ok_1')
    assert rig.grounds('front', msg).header == msg.header
    assert rig.call(image=rig.image(rig.photo, frame_id='q2')).success
    ledger.add('fault', 'engine raises mid-inference', 'survived',
               'frame counted as an error and logged; caller told "model failure"; next '
               'frame grounded')


def test_cuda_out_of_memory_is_reported_and_recovered(streaming, monkeypatch, ledger):
    rig = streaming
    fault = Fault(monkeypatch, rig.node._engine)
    assert rig.grounds('front', rig.image(rig.photo, rig.next_stamp('front'), 'ok_0'))
    assert rig.worker.cameras['front'].encoded is not None  # cached vision features
    emptied = []
    fault.mode = 'oom'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: emptied.append(1))
    outcome, reason = rig.offer('front', rig.image(rig.photo, rig.next_stamp('front'), 'oom'))
    assert outcome == 'refused' and 'out of memory in generation' in reason, reason
    assert emptied, 'the CUDA cache was not freed'
    assert rig.worker.cameras['front'].encoded is None, 'cached features were kept'
    response = rig.call(image=rig.image(rig.photo, frame_id='q'))
    assert not response.success and 'model failure (out of memory)' in response.message
    assert wait_for(lambda: any('out of memory' in m.msg and m.level >= Log.ERROR
                                for m in rig.logs), 10)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    fault.mode = None
    msg = rig.image(rig.photo, rig.next_stamp('front'), 'after')
    assert rig.grounds('front', msg).header == msg.header
    ledger.add('fault', 'CUDA out of memory (simulated)', 'survived',
               'logged as an error, CUDA cache and cached features freed, caller told '
               '"out of memory"; next frame grounded')


def test_slow_inference_newest_frame_wins(streaming, monkeypatch, ledger):
    rig = streaming
    rig.node.set_parameters([Parameter('rate_hz', value=100.0)])
    fault = Fault(monkeypatch, rig.node._engine)
    fault.delay = 0.08  # ~0.5 s per inference against a 40 Hz camera
    sent = {}
    base = rig.next_stamp('front')
    for i in range(100):
        msg = rig.image(rig.photo, base + i / 40.0, f's{i}')
        sent[msg.header.frame_id] = time.monotonic()
        rig.pubs['front'].publish(msg)
        time.sleep(1 / 40.0)
    last = msg.header
    assert wait_for(lambda: any(m.header == last for _, m in rig.results['front']), 20), \
        'the newest frame was never grounded'
    got = [(t, m) for t, m in rig.results['front'] if m.header.frame_id in sent]
    counts = rig.counts('front')
    order = [int(m.header.frame_id[1:]) for _, m in got]
    assert order == sorted(order)
    assert len(got) <= 20, f'{len(got)} inferences for 100 frames: frames were queued'
    # Frames left in DDS are replaced there; taken ones not grounded are superseded.
    published = rig.node._cameras['front'].intake.published or 0
    passed_over = published - counts['frames_in'] + counts['superseded']
    assert published >= 90 and passed_over >= 100 - len(got) - 10, (published, counts)
    assert rig.worker.pending_jobs() == 0
    lags = [t - sent[m.header.frame_id] for t, m in got]
    assert max(lags) < 3.0, lags  # each result is about a frame of the last second or so
    ledger.add('fault', 'inference slower than the camera', 'survived',
               f'{len(got)} of 100 frames grounded, {passed_over} passed over for newer ones, '
               f'max lag {max(lags):.2f} s, no queue')


def test_camera_stops_and_restarts(ros, tiny_model_dir, photos, ledger):
    rig = Rig(ros, tiny_model_dir, cameras=('front',), rate_hz=2.0, camera_timeout=0.6,
              diagnostics_period=0.2)
    try:
        photo = small(photos['coffee'])
        stream = Stream(rig, 'front', photo, hz=10.0)
        assert wait_for(lambda: rig.results['front'], 20)
        stream.stop()
        stopped = time.monotonic()

        def warned():
            return [s for t, s in rig.diagnostics if t > stopped and
                    s.name.endswith('camera front') and s.level == DiagnosticStatus.WARN and
                    s.message.startswith('no image for')]

        assert wait_for(warned, 10), 'no diagnostics warning after camera_timeout'
        assert wait_for(lambda: any('camera front: no image for' in m.msg and
                                    m.level == Log.WARN for m in rig.logs), 10)
        restarted = time.monotonic()
        stream = Stream(rig, 'front', photo, hz=10.0)
        assert wait_for(lambda: any(t > restarted for t, _ in rig.results['front']), 20)
        assert wait_for(lambda: any(t > restarted + 0.3 and s.name.endswith('camera front') and
                                    s.level == DiagnosticStatus.OK
                                    for t, s in rig.diagnostics), 10)
        stream.stop()
        stream.check(restarted)
        ledger.add('fault', 'camera stops, then restarts', 'survived',
                   f'WARN "{warned()[0].message}" after camera_timeout 0.6 s; OK and results '
                   'again after the restart')
    finally:
        rig.close()


def test_time_jumps_backwards_under_sim_time(ros, tiny_model_dir, photos, ledger):
    rig = Rig(ros, tiny_model_dir, cameras=('front',), rate_hz=2.0, max_frame_age=5.0,
              diagnostics_period=0.25, use_sim_time=True)
    try:
        clock = rig.client.create_publisher(Clock, '/clock', 10)
        assert wait_for(lambda: clock.get_subscription_count() > 0)
        photo = small(photos['coffee'])
        for loop in range(2):  # a 2 s bag, played twice: time jumps back 2 s
            started = time.monotonic()
            for i in range(20):
                t = 100.0 + i * 0.1
                stamp = Clock()
                stamp.clock.sec, stamp.clock.nanosec = int(t), int(round((t % 1) * 1e9))
                clock.publish(stamp)
                rig.pubs['front'].publish(rig.image(photo, t, f'loop{loop}_{i}'))
                time.sleep(0.05)
            assert wait_for(lambda: any(m.header.frame_id.startswith(f'loop{loop}_')
                                        for _, m in rig.results['front']), 20), loop
            diag = [t for t, _ in rig.diagnostics if t > started]
            assert diag, f'no diagnostics during loop {loop}'
        second = [m for _, m in rig.results['front'] if m.header.frame_id.startswith('loop1')]
        assert len(second) >= 2, 'continuous grounding did not resume after the jump'
        answer = rig.call(camera='front')
        assert answer.success and answer.grounding.header.frame_id.startswith('loop1_')
        ledger.add('fault', 'time jumps backwards (looping bag, use_sim_time)', 'survived',
                   f'{len(second)} results in the second loop; queries answered')
    finally:
        rig.close()


def test_requests_while_inactive_or_reloading(ros, tiny_model_dir, photos, ledger):
    rig = Rig(ros, tiny_model_dir, cameras=('front',), configure=False)
    try:
        img = rig.image(small(photos['coffee']), frame_id='r')
        response = rig.call(image=img)
        assert 'not active (state: unconfigured)' in response.message
        ledger.add('service', 'request while unconfigured', 'refused', response.message)
        assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        response = rig.call(image=img)
        assert 'not active (state: inactive)' in response.message
        ledger.add('service', 'request while inactive', 'refused', response.message)
        status, result = rig.goals([GroundAction.Goal(image=img)])[0]
        assert status == ABORTED and 'not active (state: inactive)' in result.message
        ledger.add('action', 'goal while inactive', 'refused', result.message)
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.call(image=img).success

        def reload():
            for _ in range(3):
                assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
                assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
                assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
                assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
                time.sleep(0.2)

        reloader = threading.Thread(target=reload)
        reloader.start()
        calls, goals = [], []
        while reloader.is_alive():
            calls.append(rig.service.call_async(Ground.Request(image=img)))
            goals.append(rig.action.send_goal_async(GroundAction.Goal(image=img)))
            time.sleep(0.03)
        reloader.join()
        assert wait_for(lambda: all(f.done() for f in calls + goals), 30), 'calls were lost'
        results = [g.result().get_result_async() for g in goals]
        if not wait_for(lambda: all(r.done() for r in results), 30):
            lost = [bytes(goals[i].result().goal_id.uuid) for i, r in enumerate(results)
                    if not r.done()]
            handles = rig.node._queries.action._goal_handles  # the server's view of the lost goals
            raise AssertionError(f'{len(lost)} of {len(results)} goal results lost; server: '
                                 + repr([(handles[u].status if u in handles else 'unknown')
                                         for u in lost]))
        answers = [f.result() for f in calls] + [r.result().result for r in results]
        allowed = re.compile(r'not active \(state: (unconfigured|inactive|configuring)\)|'
                             r'cancelled: the model is being unloaded')
        kinds = collections.Counter()
        for answer in answers:
            assert answer.success or allowed.search(answer.message), answer.message
            kinds['answered' if answer.success else answer.message.split(';')[0]] += 1
        assert kinds['answered'] > 0 and len(kinds) > 1, kinds
        assert rig.call(image=img).success
        ledger.add('service+action', f'{len(answers)} requests during 3 model reloads',
                   'handled', ', '.join(f'{v} {k}' for k, v in kinds.most_common()))
    finally:
        rig.close()


def test_transitions_during_inference_complete_in_bounded_time(ros, tiny_model_dir, photos,
                                                               monkeypatch, ledger):
    rig = Rig(ros, tiny_model_dir, cameras=('front',), max_new_tokens=64,
              max_request_tokens=2000)
    try:
        img = rig.image(small(photos['coffee']), frame_id='long')
        long_goal = GroundAction.Goal(task=GroundAction.Goal.DETAILED_CAPTION, image=img,
                                      max_new_tokens=400)
        timings = {}
        for transition in ('cleanup', 'shutdown'):
            fault = Fault(monkeypatch, rig.node._engine)
            fault.delay = 0.05  # 400 tokens would take 20 s
            send = rig.action.send_goal_async(long_goal)
            assert wait_for(send.done, 10) and send.result().accepted
            result = send.result().get_result_async()
            assert wait_for(lambda: rig.worker.busy and fault.calls > 2, 20)
            started = time.monotonic()
            assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            deactivate_s = time.monotonic() - started
            assert rig.worker.busy, 'deactivate is not expected to stop a running query'
            started = time.monotonic()
            if transition == 'cleanup':
                assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            else:
                assert rig.node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
            timings[transition] = time.monotonic() - started
            assert timings[transition] < 3.0, timings
            assert deactivate_s < 1.0, deactivate_s
            assert wait_for(result.done, 10), 'the running goal was never answered'
            wrapped = result.result()
            assert wrapped.status == ABORTED, wrapped.status
            assert 'cancelled: the model is being unloaded' in wrapped.result.message
            if transition == 'cleanup':
                monkeypatch.undo()
                rig.start()
        ledger.add('fault', 'deactivate, cleanup, shutdown while an inference runs', 'survived',
                   f'cleanup {timings["cleanup"]:.2f} s, shutdown {timings["shutdown"]:.2f} s; '
                   'the running goal aborted as cancelled')
    finally:
        rig.close()


def test_process_exits_on_sigint_during_inference(ros, tiny_model_dir, photos, ledger):
    context, executor = ros[:2]
    ns = f'/proc{next(_names)}'
    node = subprocess.Popen(
        [sys.executable, '-m', 'kosmos_ros.node.main', '--ros-args', '-r', f'__ns:={ns}',
         '-p', f'model:={tiny_model_dir}', '-p', 'local_files_only:=true', '-p',
         'device:=cpu', '-p', 'rate_hz:=0.0', '-p', 'cameras:=[front]', '-p',
         'max_request_tokens:=2000'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = rclpy.create_node(f'client{ns[1:]}', context=context, namespace=ns)
    action = ActionClient(client, GroundAction, 'kosmos_grounding/ground')
    executor.add_node(client)  # after the ActionClient (see Rig)
    try:
        assert action.wait_for_server(timeout_sec=60.0), 'the node process did not start'
        assert wait_for_state(client, 'kosmos_grounding', 'active') == 'active'
        stages = []
        img = Image(width=160, height=120, encoding='rgb8', step=480,
                    data=small(photos['coffee']).tobytes())
        goal = GroundAction.Goal(task=1, image=img, max_new_tokens=1900)  # about a minute
        send = action.send_goal_async(goal, feedback_callback=lambda f: stages.append(
            f.feedback.stage))
        assert wait_for(lambda: 'generating' in stages, 60), stages
        started = time.monotonic()
        node.send_signal(signal.SIGINT)
        output, _ = node.communicate(timeout=20)
        elapsed = time.monotonic() - started
        assert node.returncode == 0, output
        assert elapsed < 12.0, elapsed
        assert 'Traceback' not in output, output
        assert send.done()
        ledger.add('fault', 'SIGINT to the node process while it generates', 'survived',
                   f'exited with status 0 in {elapsed:.1f} s, no traceback')
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        executor.remove_node(client)
        client.destroy_node()


def test_many_concurrent_callers_all_answered(ros, tiny_model_dir, photos, ledger):
    rig = Rig(ros, tiny_model_dir, cameras=('front',), rate_hz=2.0, max_pending_queries=64)
    try:
        photo = small(photos['coffee'], 48, 32)
        stream = Stream(rig, 'front', small(photos['chelsea'], 64, 48), hz=8.0)
        assert wait_for(lambda: rig.results['front'], 20)
        assert rig.action.wait_for_server(timeout_sec=10.0)
        clients = [rig.client.create_client(Ground, 'kosmos_grounding/ground',
                                            qos_profile=QUERY_QOS) for _ in range(4)]
        for c in clients:
            assert c.wait_for_service(timeout_sec=10.0)
        started = time.monotonic()
        calls, sends = [], []
        for i in range(40):  # 40 service calls and 20 goals at once; every 8th is invalid
            fields = dict(image=rig.image(photo, frame_id=f'call{i}'))
            if i % 8 == 7:
                fields.update(task=Ground.Request.FIND, prompt='')
            calls.append((fields, clients[i % 4].call_async(Ground.Request(**fields))))
        for i in range(20):
            goal = GroundAction.Goal(image=rig.image(photo, frame_id=f'goal{i}'))
            sends.append((goal, rig.action.send_goal_async(goal)))
        assert wait_for(lambda: all(f.done() for _, f in calls + sends), 120)
        results = [(g, s.result().get_result_async()) for g, s in sends]
        assert wait_for(lambda: all(r.done() for _, r in results), 120), 'goals were lost'
        elapsed = time.monotonic() - started
        failed = 0
        for fields, future in calls:
            response = future.result()
            if fields.get('prompt') == '':
                assert not response.success and 'empty prompt' in response.message
                failed += 1
            else:
                assert response.success, response.message
                assert response.grounding.header == fields['image'].header  # not mixed up
        for goal, future in results:
            wrapped = future.result()
            assert wrapped.status == SUCCEEDED, wrapped.result.message
            assert wrapped.result.grounding.header == goal.image.header
        assert elapsed < 90.0, elapsed
        burst = [t for t, _ in rig.results['front'] if started <= t <= started + elapsed]
        stream.stop()
        # The camera keeps a place in every batch: its longest gap is about one cycle, which
        # grows with the number of callers awaiting an answer (rclpy's executor resumes each
        # awaiting callback at every wake-up, and that takes CPU from the worker).
        count, gap = stream.check(started, max_gap=10.0)
        ledger.add('fault', '40 service calls and 20 goals at once', 'survived',
                   f'all 60 answered in {elapsed:.1f} s ({failed} invalid refused), none lost '
                   f'or mixed up; the camera kept grounding ({len(burst)} results, longest '
                   f'gap {gap:.1f} s)')
    finally:
        rig.close()


# -- security -------------------------------------------------------------------------------------

def _python_sources(*roots):
    for root in roots:
        if root.is_dir():
            yield from (p for p in sorted(root.rglob('*.py')) if '__pycache__' not in p.parts)


# -- back-pressure ------------------------------------------------------------------------------

def test_pending_requests_are_bounded_by_count_and_bytes(ros, tiny_model_dir, photos,
                                                         monkeypatch, ledger):
    """A flood is refused as busy at once; memory stays bounded; the rest is answered."""
    rig = Rig(ros, tiny_model_dir, max_pending_queries=4, max_pending_image_mb=2.0,
              max_new_tokens=8)
    try:
        fault = Fault(monkeypatch, rig.node._engine)
        fault.delay = 0.05  # every forward pass: queued requests stay pending a while
        small_img = rig.image(small(photos['coffee']), frame_id='small')  # 57 kB
        calls = [rig.service.call_async(Ground.Request(image=small_img)) for _ in range(12)]
        assert wait_for(lambda: all(c.done() for c in calls), 60), 'requests not answered'
        answers = [c.result() for c in calls]
        busy = [a for a in answers if not a.success]
        assert 0 < len(busy) <= 8 and any(a.success for a in answers), \
            [a.message for a in answers]
        assert all(re.search(r'busy: \d+ requests are pending \(max_pending_queries 4\)',
                             a.message) for a in busy), busy[0].message
        ledger.add('service', '12 requests at once, max_pending_queries 4', 'refused',
                   f'{len(busy)} refused at once as busy, {12 - len(busy)} answered')
        big = rig.image(cv2.resize(photos['coffee'], (800, 600)), frame_id='big')  # 1.4 MB
        calls = [rig.service.call_async(Ground.Request(image=big)) for _ in range(3)]
        assert wait_for(lambda: all(c.done() for c in calls), 60)
        answers = [c.result() for c in calls]
        busy = [a for a in answers if not a.success]
        assert len(busy) >= 1 and any(a.success for a in answers), [a.message for a in answers]
        assert all('max_pending_image_mb 2' in a.message for a in busy), busy[0].message
        ledger.add('service', '3 requests of 1.4 MB images, max_pending_image_mb 2', 'refused',
                   busy[0].message)
        huge = rig.image(cv2.resize(photos['coffee'], (1280, 960)), frame_id='huge')
        answer = rig.call(image=huge)
        assert not answer.success and 'is larger than max_pending_image_mb' in answer.message
        fault.delay = 0.0
        assert rig.call(image=small_img).success
        assert rig.node._queries.pending.count == 0 and rig.node._queries.pending.bytes == 0
    finally:
        rig.close()


def test_short_queries_do_not_wait_for_a_long_one(ros, tiny_model_dir, photos, monkeypatch,
                                                  ledger):
    """A request with a large token budget is not batched with short ones."""
    rig = Rig(ros, tiny_model_dir, max_new_tokens=8, max_request_tokens=2000)
    try:
        fault = Fault(monkeypatch, rig.node._engine)
        fault.delay = 0.01
        img = rig.image(small(photos['coffee']), frame_id='q')
        blocker = rig.service.call_async(Ground.Request(image=img, max_new_tokens=8))
        assert wait_for(lambda: rig.worker.busy, 20)
        long = rig.service.call_async(Ground.Request(task=Ground.Request.DETAILED_CAPTION,
                                                     image=img, max_new_tokens=1500))
        shorts = [rig.service.call_async(Ground.Request(image=img, max_new_tokens=8))
                  for _ in range(3)]
        assert wait_for(lambda: all(s.done() for s in shorts), 60), 'short queries lost'
        assert not long.done(), 'the short queries waited for the long generation'
        assert all(s.result().success for s in shorts + [blocker])
        fault.delay = 0.0
        assert wait_for(long.done, 120) and long.result().success, long.result().message
        ledger.add('service', 'short queries beside one of max_new_tokens 1500', 'handled',
                   'shorts answered while the long one still generated')
    finally:
        rig.close()


# -- lifecycle requests and start-up values ---------------------------------------------------

def change_state(rig, transition_id, timeout=30.0):
    """Send a lifecycle ChangeState request over DDS; return its success flag."""
    client = rig.client.create_client(ChangeState, 'kosmos_grounding/change_state')
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert wait_for(future.done, timeout), 'ChangeState not answered'
        return future.result().success
    finally:
        rig.client.destroy_client(client)


def lifecycle_state(rig):
    return helpers.lifecycle_state(rig.client, 'kosmos_grounding')


def error_lines(rig, since=0):
    return [m.msg for m in rig.logs[since:] if m.level >= Log.ERROR]


def test_invalid_lifecycle_requests_are_refused_not_fatal(ros, tiny_model_dir, photos, ledger):
    """A lifecycle manager's request that is not valid now answers false; the node lives."""
    rig = Rig(ros, tiny_model_dir, configure=False)
    try:
        cases = [('deactivate while unconfigured', Transition.TRANSITION_DEACTIVATE),
                 ('activate while unconfigured', Transition.TRANSITION_ACTIVATE),
                 ('cleanup while unconfigured', Transition.TRANSITION_CLEANUP),
                 ('unknown transition id 99', 99)]
        for case, transition in cases:
            assert change_state(rig, transition) is False, case
            assert lifecycle_state(rig) == 'unconfigured'
            ledger.add('lifecycle', f'ChangeState {case}', 'refused',
                       'success: false; state unconfigured; node keeps running')
        assert change_state(rig, Transition.TRANSITION_CONFIGURE) is True
        assert change_state(rig, Transition.TRANSITION_CONFIGURE) is False
        assert change_state(rig, Transition.TRANSITION_ACTIVATE) is True
        assert lifecycle_state(rig) == 'active'
        assert rig.call(image=rig.image(small(photos['coffee']))).success
        assert any('refused lifecycle transition' in m.msg for m in rig.logs)
    finally:
        rig.close()


@pytest.mark.parametrize('case, params, reason', [
    ('image_qos_reliability relaible', dict(image_qos_reliability='relaible'),
     r'image_qos_reliability must be one of best_effort, reliable'),
    ('cameras [front, front]', dict(cameras=['front', 'front']), r'cameras must be unique'),
    ('cameras [a/b]', dict(cameras=['a/b']), r"camera name 'a/b' must be ASCII letters"),
    ('cameras [""]', dict(cameras=['']), r"camera name '' must be ASCII letters"),
    ('cameras [cámara]', dict(cameras=['cámara']), r"camera name 'cámara' must be ASCII"),
    ('camera topic "bad topic"', {'front.topic': 'bad topic'},
     r"front.topic: 'bad topic' is not a valid topic name"),
    ('depth_min above depth_max', dict(depth_min=5.0, depth_max=2.0),
     r'depth_min \(5 m\) must be below depth_max \(2 m\)'),
    ('max_new_tokens 0', dict(max_new_tokens=0), r'max_new_tokens must be at least 1'),
    ('a string for a float: camera_timeout "ten"', dict(camera_timeout='ten'),
     r"parameter camera_timeout: expected a floating-point number, got a string 'ten'"),
])
def test_start_up_values_are_validated(ros, tiny_model_dir, ledger, case, params, reason):
    """-p and params-file values get the rules of later sets: configure fails with why."""
    rig = Rig(ros, tiny_model_dir, configure=False, node_values=params)
    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert wait_for(lambda: error_lines(rig), 10), 'no log line says why'
        lines = [m for m in error_lines(rig) if 'configure failed' in m]
        assert len(lines) == 1 and re.search(reason, lines[0]), error_lines(rig)
        assert 'the node stays unconfigured' in lines[0]
        assert rig.node._engine is None and not rig.node._cameras
        ledger.add('parameters', f'start-up value: {case}', 'refused', lines[0])
    finally:
        rig.close()


def test_start_up_type_errors_recover_with_a_set(ros, tiny_model_dir, photos, ledger):
    """An integer for a float is taken; a wrong type is refused until set right."""
    rig = Rig(ros, tiny_model_dir, configure=False, camera_timeout=10, depth_max=8,
              frame_wait_timeout='soon')
    try:
        assert rig.node.get_parameter('camera_timeout').value == 10.0
        assert rig.node.get_parameter('depth_max').value == 8.0
        assert rig.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert wait_for(lambda: any('frame_wait_timeout' in m for m in error_lines(rig)), 10)
        result = rig.node.set_parameters([Parameter('frame_wait_timeout', value=1.5)])[0]
        assert result.successful, result.reason
        rig.start()
        assert rig.call(image=rig.image(small(photos['coffee']))).success
        ledger.add('parameters', 'start-up integer for a float (camera_timeout: 10)', 'handled',
                   'taken as 10.0')
        ledger.add('parameters', 'start-up string for a float, then set right', 'handled',
                   'configure refused with the reason until the set; then active')
    finally:
        rig.close()


def test_runtime_depth_range_must_stay_ordered(ros, tiny_model_dir, ledger):
    rig = Rig(ros, tiny_model_dir)
    try:
        result = rig.node.set_parameters([Parameter('depth_min', value=20.0)])[0]
        assert not result.successful and 'must be below depth_max' in result.reason
        result = rig.node.set_parameters_atomically([Parameter('depth_min', value=20.0),
                                                     Parameter('depth_max', value=30.0)])
        assert result.successful, result.reason
        ledger.add('parameters', 'set depth_min above depth_max', 'refused', 'must be below')
    finally:
        rig.close()


def test_lifecycle_cycles_leak_no_entities(ros, tiny_model_dir):
    """Every configure/activate/deactivate/cleanup cycle leaves the same publishers."""
    rig = Rig(ros, tiny_model_dir, cameras=('front', 'rear'))
    try:
        def census():
            names = rig.node.get_publisher_names_and_types_by_node(
                'kosmos_grounding', rig.ns)
            return sorted(name for name, _ in names)

        first = census()
        for _ in range(3):
            assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            rig.start()
        assert wait_for(lambda: census() == first, 10), (census(), first)
        assert len(list(rig.node._intake_node.subscriptions)) == 2
    finally:
        rig.close()


def test_failed_activate_keeps_the_model(ros, tiny_model_dir, photos, monkeypatch, ledger):
    """A failed activate logs why, stays inactive with the model loaded, and can retry."""
    rig = Rig(ros, tiny_model_dir, configure=False)
    try:
        assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        engine = rig.node._engine
        import kosmos_ros.node.camera as module

        def broken(*args, **kwargs):
            raise OSError('cannot open the camera transport')
        monkeypatch.setattr(module, 'CameraIntake', broken)
        assert rig.node.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert wait_for(lambda: any('activate failed' in m for m in error_lines(rig)), 10)
        line = [m for m in error_lines(rig) if 'activate failed' in m][0]
        assert 'OSError: cannot open the camera transport' in line, line
        assert rig.node._engine is engine and engine.model is not None
        assert lifecycle_state(rig) == 'inactive'
        monkeypatch.undo()
        assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.call(image=rig.image(small(photos['coffee']))).success
        ledger.add('fault', 'activate fails (camera subscription raises)', 'survived',
                   'one log line with the reason; inactive, model kept; activate again works')
    finally:
        rig.close()


def test_trust_remote_code_is_never_enabled():
    """No source enables remote code; the package's Auto* loads pass it as False explicitly."""
    everything = [PACKAGE / 'kosmos_ros', PACKAGE / 'launch', PACKAGE / 'test',
                  PACKAGE.parent / 'benchmarks', PACKAGE.parent / 'tools']
    for path in _python_sources(*everything):
        text = path.read_text()
        if path == Path(__file__):
            continue
        assert not re.search(r'trust_remote_code\s*=\s*True', text), path
        assert not re.search(r"['\"]trust_remote_code['\"]\s*:\s*True", text), path
    checked = 0
    for path in _python_sources(PACKAGE / 'kosmos_ros'):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            safe_dicts = set()
            for node in ast.walk(func):  # names bound to dict(..., trust_remote_code=False)
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                        getattr(node.value.func, 'id', '') == 'dict' and any(
                            k.arg == 'trust_remote_code' and
                            isinstance(k.value, ast.Constant) and k.value.value is False
                            for k in node.value.keywords):
                    safe_dicts.update(t.id for t in node.targets if isinstance(t, ast.Name))
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and
                        node.func.attr == 'from_pretrained'):
                    continue
                owner = node.func.value
                name = getattr(owner, 'id', getattr(owner, 'attr', ''))
                if not name.startswith('Auto'):
                    continue  # a concrete class runs no code from the model folder
                explicit = [k for k in node.keywords if k.arg == 'trust_remote_code']
                spread = [k for k in node.keywords if k.arg is None and
                          getattr(k.value, 'id', None) in safe_dicts]
                ok = (explicit and isinstance(explicit[0].value, ast.Constant) and
                      explicit[0].value.value is False) or (not explicit and spread)
                assert ok, f'{path}:{node.lineno}: {name}.from_pretrained without ' \
                    'trust_remote_code=False'
                checked += 1
    assert checked >= 2  # the processor and the model in loading.py


def test_secrets_from_the_environment_are_not_logged(ros, tiny_model_dir, photos, monkeypatch,
                                                     capfd, caplog):
    secrets = {'HF_TOKEN': 'hf_FAKEsecretTOKEN0123456789', 'HUGGING_FACE_HUB_TOKEN':
               'hf_FAKEhubTOKEN9876543210', 'AWS_SECRET_ACCESS_KEY': 'FAKEawsSECRETkey/123',
               'KOSMOS_TEST_PASSWORD': 'FAKEpassw0rd!'}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    caplog.set_level('DEBUG')
    rig = Rig(ros, tiny_model_dir, cameras=('front',), rate_hz=2.0)
    failing = Rig(ros, tiny_model_dir, cameras=('front',), configure=False,
                  model='someone/not-cached-model')
    try:
        photo = small(photos['coffee'])
        assert rig.grounds('front', rig.image(photo, rig.next_stamp('front'), 'a'))
        assert rig.call(task=Ground.Request.FIND, prompt='the cup', image=rig.image(photo))
        assert not rig.call(task=Ground.Request.FIND, prompt='', image=rig.image(photo)).success
        rig.node.set_parameters_atomically([Parameter('task', value='question'),
                                            Parameter('prompt', value='why ' * 300)])
        rig.pubs['front'].publish(raw_msg(4, 4, '32FC1'))
        assert failing.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert wait_for(lambda: any('not-cached-model' in m.msg for m in failing.logs), 10)
        time.sleep(0.5)
        logs = [m.msg for m in rig.logs + failing.logs]
        out, err = capfd.readouterr()
        text = '\n'.join(logs + [out, err, caplog.text])
        assert str(tiny_model_dir) in text and 'loading' in text  # logging did happen
        for key, value in secrets.items():
            assert value not in text, f'{key} leaked into the logs'
    finally:
        rig.close()
        failing.close()
