# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Bad inputs on every interface of the node, and on the offline path.

The camera topics (raw and compressed), the ``~/ground`` service and action, the parameters,
and the offline path (the conversion ``images.frame_from_message`` on ``rosbags`` messages
read back from CDR, and ``ground_bag`` on a bag of bad images). Each case is recorded in the
reliability table (ledger.py) with its outcome: refused with a clear error, or handled as
documented. While they run, another camera streams continuously and its results must keep
coming, each with the header of its own frame.

Control tokens in prompts are tested in test_security.py; faults in test_faults.py and
test_faults_lifecycle.py.
"""

import itertools
import math
import re
import time

from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.srv import Ground
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from kosmos_ros.bag import ground_bag as bag_tool
from kosmos_ros.datatypes import Query, Task
from kosmos_ros.errors import ImageError, PromptError
from kosmos_ros.images import frame_from_message

from helpers import PeakRise, skip_unless_measured, small, wait_for  # noqa
from hostile import compressed_cases, RAW_CASES, raw_msg, region  # noqa: I100
from node_harness import ABORTED, NodeHarness, RELIABILITY, Stream, SUCCEEDED  # noqa: I100

_frame_ids = itertools.count()  # frame ids of the bad frames, unique in the module


def serving(rig, since):
    """Check that the node still grounds and the bystander camera kept streaming."""
    response = rig.call(task=Ground.Request.CAPTION, image=rig.image(rig.photo,
                                                                     frame_id='health'))
    assert response.success, response.message
    assert response.grounding.header.frame_id == 'health'
    return rig.stream.check(since)


@pytest.fixture(scope='class')
def suite(ros, tiny_model_dir, photos):
    """Yield a node of three cameras, one (rear) streaming throughout."""
    rig = NodeHarness(ros, tiny_model_dir, **{
        **RELIABILITY, 'cameras': ('front', 'rear', 'pack'), 'compressed': ('pack',),
        'rate_hz': 2.0, 'max_pending_queries': 200})  # bad requests go out all at once
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
        measured = []
        for case, msg, expected in RAW_CASES:
            rig.set_stamp(msg, rig.next_stamp('front'), f'bad_{next(_frame_ids)}')
            with PeakRise() as peak:
                outcome, detail = rig.offer('front', msg)
            measured.append(peak.below(100, case))
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
        skip_unless_measured(measured, 'bad raw images')

    def test_compressed_bad_images(self, suite, ledger, photos):
        rig, since = suite, time.monotonic()
        measured = []
        for case, fmt, payload, expected in compressed_cases(small(photos['astronaut'])):
            msg = rig.set_stamp(CompressedImage(format=fmt, data=payload), rig.next_stamp('pack'),
                                f'bad_{next(_frame_ids)}')
            with PeakRise() as peak:
                outcome, detail = rig.offer('pack', msg)
            measured.append(peak.below(100, case))
            if expected is None:
                assert outcome == 'handled', (case, detail)
                detail = ('decoded as libjpeg does (garbled pixels, no error); grounded'
                          if 'corrupt' in case else 'decoded and grounded')
            else:
                assert outcome == 'refused' and re.search(expected, detail), (case, detail)
                if 'declaring' in case and peak.growth is not None:
                    detail = f'peak memory +{max(peak.growth, 0):.0f} MiB; {detail}'
            ledger.add('topic (compressed)', case, outcome, detail)
        good = rig.jpeg(small(photos['astronaut']), rig.next_stamp('pack'), 'pack_good')
        assert rig.grounds('pack', good).header == good.header
        serving(rig, since)
        skip_unless_measured(measured, 'bad compressed images')

    def test_service_bad_requests(self, suite, ledger):
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

    def test_bad_parameters_are_refused(self, suite, ledger):
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
        refused([Parameter('rate_hz', value=math.nan)], 'rate_hz', 'rate_hz NaN')
        refused([Parameter('rate_hz', value=math.inf)], 'rate_hz', 'rate_hz inf')
        refused([Parameter('max_image_pixels', value=0)], 'max_image_pixels',
                'max_image_pixels 0')
        refused([Parameter('front.topic', value='/elsewhere')], 'needs a reload',
                'camera topic while active')
        assert node.get_parameter('task').value == 'caption'
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
        """The front camera's diagnostics count the frames it refused, and say the last."""
        rig = suite
        before = rig.counts('front')['errors']
        refused = [(case, msg, reason) for case, msg, reason in RAW_CASES if reason][:3]
        for case, msg, reason in refused:  # refused here, whatever ran before
            rig.set_stamp(msg, rig.next_stamp('front'), f'bad_{next(_frame_ids)}')
            outcome, detail = rig.offer('front', msg)
            assert outcome == 'refused' and re.search(reason, detail), (case, detail)
        counted, last = before + len(refused), refused[-1][2]
        since = time.monotonic()

        def report():  # the first front report sent after the refusals that counts them
            for t, status in rig.diagnostics:
                values = {kv.key: kv.value for kv in status.values}
                if t > since and status.name.endswith('camera front') and \
                        int(values['errors']) >= counted:
                    return values
            return None

        assert wait_for(report, 10), [s.values for t, s in rig.diagnostics if t > since][-2:]
        values = report()
        assert int(values['errors']) == counted, (values['errors'], counted)
        assert re.search(last, values['last error']), values['last error']


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
    measured = []
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
        with PeakRise() as peak:
            if expected is None:
                assert frame_from_message(msg).width == 160
                ledger.add('offline (rosbags)', case, 'handled', 'decoded as libjpeg does')
            else:
                with pytest.raises(ImageError, match=expected) as info:
                    frame_from_message(msg)
                ledger.add('offline (rosbags)', case, 'refused', info.value)
        measured.append(peak.below(100, case))
    skip_unless_measured(measured, 'offline bad images')


def test_ground_bag_skips_bad_images_with_their_reason(ledger, engine, photos, tmp_path):
    """The offline tool on a bag holding every bad image: each skipped with its reason."""
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
    with PeakRise() as peak:
        summary = bag_tool.ground_bag(
            bag_tool.GroundBagOptions(bag=bag, output=tmp_path / 'out', max_new_tokens=2,
                                      topics=('/cam/image_raw', '/pack/image_raw/compressed')),
            engine, on_frame=outcomes.append)
    measured = peak.below(100, 'ground_bag')
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
    skip_unless_measured([measured], 'ground_bag on bad images')
