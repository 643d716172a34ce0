# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tracks and the follow action over real DDS: camera-rate boxes with lasting ids.

The tiny model is steered into 'a cat' (one box) and 'two cups' (two boxes) on every frame
(``helpers.STEERED``); the camera streams a photograph from a thread. Box motion itself is
tested on generated scenes in ``test_tracking.py``; here: which frames the tracks ride on,
their headers, ids across model results, what tracking costs while unused, and how follow
goals stream and end.
"""

import contextlib
import time

from kosmos_ros_interfaces.action import Follow
import numpy as np
import pytest
from vision_msgs.msg import Detection2DArray

from kosmos_ros.model.boxes import normalized_to_pixels, patch_indices_to_normalized

from helpers import small, wait_for  # noqa: I100
from node_harness import ABORTED, CANCELED, NodeHarness, Stream  # noqa: I100

FRAME_HZ = 15.0


@pytest.fixture
def scene(photos):
    return small(photos['chelsea'], 320, 240)


def harness(ros, model_dir, steer, **params):
    values = dict(cameras=('front',), max_new_tokens=24, rate_hz=0.0, lost_timeout=1.5)
    values.update(params)
    return NodeHarness(ros, model_dir, steer=steer, **values)


@contextlib.contextmanager
def streaming(ros, model_dir, steer, scene, **params):
    """Yield a harness (``harness``'s settings, and ``params``) and its front camera streaming."""
    h = harness(ros, model_dir, steer, **params)
    stream = Stream(h, 'front', scene, FRAME_HZ)
    try:
        yield h, stream
    finally:
        stream.stop()
        h.close()


def header_key(header):
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def ids_by_phrase(msg):
    out = {}
    for det in msg.detections:
        out.setdefault(det.results[0].hypothesis.class_id, set()).add(det.id)
    return out


def test_tracks_ride_every_frame_with_its_header_and_keep_their_ids(ros, tiny_model_dir,
                                                                    steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene, rate_hz=2.0, tracks=True) as (h, stream):
        assert wait_for(lambda: len(h.results['front']) >= 4, 30.0), 'no model results'
        since = time.monotonic()
        results_before = len(h.results['front'])
        time.sleep(3.0)
        stream.stop()
        window = [m for t, m in h.tracks['front'] if t >= since]
        sent = [k for k, t in stream.sent.items() if t >= since]
        results = len(h.results['front']) - results_before
        # Every tracks message rides on a frame that was sent, with its header; at camera
        # rate (most frames), far above the model's rate.
        assert all(header_key(m.header) in stream.sent for m in window)
        assert all(header_key(d.header) == header_key(m.header)
                   for m in window for d in m.detections)
        assert len(window) >= 0.6 * len(sent), (len(window), len(sent))
        assert len(window) >= 3 * max(results, 1), (len(window), results)
        # One id for 'a cat' over every model result of the window; two for 'two cups'.
        cats = set().union(*(ids_by_phrase(m).get('a cat', set()) for m in window))
        cups = set().union(*(ids_by_phrase(m).get('two cups', set()) for m in window))
        assert len(cats) == 1 and len(cups) == 2, (cats, cups)
        assert results >= 3
        # The boxes are the model's (a still photograph: the flow does not move them).
        width, height = scene.shape[1], scene.shape[0]
        cat = [d for d in window[-1].detections
               if d.results[0].hypothesis.class_id == 'a cat'][0]
        box = normalized_to_pixels(patch_indices_to_normalized(44, 863), width, height)
        assert abs(cat.bbox.center.position.x - box.center[0]) < 4.0
        assert abs(cat.bbox.size_y - box.height) < 4.0


def test_unstamped_frames_get_their_results_at_the_stamp_they_were_tracked_at(
        ros, tiny_model_dir, steer, scene):
    """An unstamped frame is tracked at the node clock's time; its model result must land there.

    With the header's stamp (0) it would land on the oldest kept frame instead.
    """
    h = harness(ros, tiny_model_dir, steer, rate_hz=2.0)
    stream = Stream(h, 'front', scene, FRAME_HZ, unstamped=True)
    try:
        tracked = h.node._tracking.streams['front']
        frames, results = [], []
        on_frame, on_result = tracked.on_frame, tracked.on_result

        def spy_frame(stamp, frame):
            frames.append(stamp)
            return on_frame(stamp, frame)

        def spy_result(stamp, *args, **kwargs):
            results.append(stamp)
            return on_result(stamp, *args, **kwargs)

        tracked.on_frame, tracked.on_result = spy_frame, spy_result
        got = []
        h.client.create_subscription(Detection2DArray, 'front/tracks', got.append, 10)
        assert wait_for(lambda: len(results) >= 3 and len(got) >= 5, 30.0), (results, len(got))
        stream.stop()
        assert all(stamp > 0 for stamp in results), results
        assert all(stamp in frames for stamp in results), (results, frames[-10:])
        assert len({m.header.stamp.sec for m in got}) == 1 and got[0].header.stamp.sec == 0
    finally:
        stream.stop()
        h.close()


def test_tracking_costs_nothing_until_someone_subscribes(ros, tiny_model_dir, steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene, rate_hz=1.0) as (h, stream):
        pump = h.node._tracking
        assert wait_for(lambda: len(h.results['front']) >= 2, 30.0)
        assert not pump.owns('front') and pump.streams['front'].frames_tracked == 0
        got = []
        sub = h.client.create_subscription(Detection2DArray, 'front/tracks', got.append, 10)
        assert wait_for(lambda: len(got) >= 10, 10.0), 'no tracks after subscribing'
        assert pump.owns('front')
        h.client.destroy_subscription(sub)
        assert wait_for(lambda: not pump.owns('front'), 5.0), 'still tracking, nobody listens'
        tracked = pump.streams['front'].frames_tracked
        assert pump.streams['front'].tracks(include_lost=True) == []  # frames dropped
        time.sleep(1.0)
        assert pump.streams['front'].frames_tracked == tracked
        # Continuous grounding went on throughout, on the frames tracking handed over.
        count = len(h.results['front'])
        assert wait_for(lambda: len(h.results['front']) > count, 10.0)


def send_follow(h, timeout=15.0, **fields):
    """Send a follow goal; return its handle and the list its feedback goes to."""
    assert h.follow.wait_for_server(timeout_sec=10.0)
    feedback = []
    future = h.follow.send_goal_async(Follow.Goal(**fields),
                                      feedback_callback=lambda f: feedback.append(
                                          (time.monotonic(), f.feedback)))
    assert wait_for(future.done, timeout)
    handle = future.result()
    assert handle.accepted
    return handle, feedback


def result_of(handle, timeout=20.0):
    future = handle.get_result_async()
    assert wait_for(future.done, timeout), 'follow goal did not end'
    return future.result().status, future.result().result


def test_follow_streams_the_target_at_camera_rate_and_ends_on_cancel(ros, tiny_model_dir,
                                                                     steer, scene):
    # On demand with idle cameras unsubscribed: the goal subscribes its camera.
    with streaming(ros, tiny_model_dir, steer, scene, unsubscribe_idle_after=10.0) as (h, stream):
        assert not h.node._cameras['front'].intake.subscribed
        handle, feedback = send_follow(h, phrase='a cat', regrounding_hz=2.0)
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0), \
            [f.state for _, f in feedback][-5:]
        since = time.monotonic()
        time.sleep(2.0)
        window = [f for t, f in feedback if t >= since]
        sent = [k for k, t in stream.sent.items() if t >= since]
        assert len(window) >= 0.6 * len(sent), (len(window), len(sent))
        assert all(header_key(f.header) in stream.sent for f in window)
        assert {f.state for f in window} == {'tracking'}
        assert len({f.track_id for f in window}) == 1 and window[0].track_id >= 1
        ages = [f.since_confirmed.sec + f.since_confirmed.nanosec * 1e-9 for f in window]
        assert max(ages) < 2.0 and min(ages) >= 0.0  # confirmed again about twice a second
        assert window[-1].box.size_x > 0 and not window[-1].has_position  # no depth here
        handle.cancel_goal_async()
        status, result = result_of(handle)
        assert status == CANCELED and result.success, result.message
        assert result.track_id == window[0].track_id
        assert result.followed.sec >= 2


def test_follow_ends_when_the_target_is_lost(ros, tiny_model_dir, steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene, lost_timeout=1.0) as (h, stream):
        handle, feedback = send_follow(h, phrase='a cat', regrounding_hz=2.0)
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
        # The camera now sees a blank wall: no texture for the flow; the model still says
        # 'a cat' there, but the box cannot be followed: lost, then the goal ends.
        stream.rgb = np.full_like(scene, 128)
        status, result = result_of(handle, 20.0)
        assert status == ABORTED and not result.success
        assert result.message.startswith('lost: track'), result.message
        assert any(f.state == 'lost' for _, f in feedback)
        assert result.track_id == feedback[-1][1].track_id


def test_follow_ends_when_the_phrase_is_never_found(ros, tiny_model_dir, steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene, lost_timeout=1.0) as (h, stream):
        handle, feedback = send_follow(h, phrase='a red umbrella')
        status, result = result_of(handle, 20.0)
        assert status == ABORTED and result.message.startswith('not found'), result.message
        assert result.track_id == -1
        assert feedback and {f.state for _, f in feedback} == {'searching'}


@pytest.mark.parametrize('fields, reason', [
    (dict(phrase=''), 'phrase is empty'),
    (dict(phrase='a cat', camera='nope'), "unknown camera 'nope'"),
    (dict(phrase='a cat', regrounding_hz=float('nan')), 'regrounding_hz must be'),
    (dict(phrase='a cat', min_score=1.5), 'min_score must be'),
    (dict(phrase='a cat'), "no frame from camera 'front'"),  # nothing streams here
])
def test_bad_follow_goals_end_at_once_with_the_reason(ros, tiny_model_dir, steer, fields,
                                                      reason):
    h = harness(ros, tiny_model_dir, steer)
    try:
        handle, _ = send_follow(h, **fields)
        status, result = result_of(handle, 10.0)
        assert status == ABORTED and not result.success and result.message
        assert reason in result.message, result.message
        assert h.node._follow.running == 0
    finally:
        h.close()


def test_a_region_chooses_among_boxes_of_the_phrase(ros, tiny_model_dir, steer, scene):
    from vision_msgs.msg import BoundingBox2D

    width, height = scene.shape[1], scene.shape[0]
    first, second = (normalized_to_pixels(patch_indices_to_normalized(a, b), width, height)
                     for a, b in ((100, 300), (520, 990)))
    with streaming(ros, tiny_model_dir, steer, scene) as (h, stream):
        targets = {}
        for name, cup in (('first', first), ('second', second)):
            region = BoundingBox2D(size_x=cup.width / 2, size_y=cup.height / 2)
            region.center.position.x, region.center.position.y = cup.center
            handle, feedback = send_follow(h, phrase='two cups', region=region)
            assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
            box = [f for _, f in feedback if f.state == 'tracking'][-1].box
            assert abs(box.center.position.x - cup.center[0]) < 4.0
            assert abs(box.center.position.y - cup.center[1]) < 4.0
            targets[name] = [f for _, f in feedback if f.state == 'tracking'][-1].track_id
            handle.cancel_goal_async()
            assert result_of(handle)[0] == CANCELED
        assert targets['first'] != targets['second']


def test_goals_beyond_max_follow_goals_are_refused_and_the_others_run(ros, tiny_model_dir,
                                                                      steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene, max_follow_goals=2) as (h, stream):
        first = [send_follow(h, phrase=p) for p in ('a cat', 'two cups')]
        third, _ = send_follow(h, phrase='a cat')
        status, result = result_of(third, 10.0)
        assert status == ABORTED and 'max_follow_goals 2' in result.message
        for _, feedback in first:
            assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
        for handle, _ in first:
            handle.cancel_goal_async()
            assert result_of(handle)[0] == CANCELED


def test_deactivate_ends_follow_goals_with_the_reason(ros, tiny_model_dir, steer, scene):
    with streaming(ros, tiny_model_dir, steer, scene) as (h, stream):
        handle, feedback = send_follow(h, phrase='a cat')
        assert wait_for(lambda: len(feedback) >= 3, 20.0)
        h.node.trigger_deactivate()
        status, result = result_of(handle, 10.0)
        assert status == ABORTED and 'deactivated' in result.message
        assert wait_for(lambda: not h.node._tracking.owns('front'), 2.0)
        handle, _ = send_follow(h, phrase='a cat')
        status, result = result_of(handle, 10.0)
        assert status == ABORTED and 'not active' in result.message, result.message


def test_tracks_3d_and_follow_positions_with_depth(ros, tiny_model_dir, steer, scene):
    from sensor_msgs.msg import Image
    from test_node_3d import expected_center, OBJECT, publish_scene

    h = NodeHarness(ros, tiny_model_dir, steer=steer, depth=('front',), tracks=True,
                    cameras=('front',), max_new_tokens=24, rate_hz=0.0, depth_tolerance=0.02)
    h.depth_seen = []
    h.client.create_subscription(Image, 'front/depth', h.depth_seen.append, 10)
    try:
        handle, feedback = send_follow(h, phrase='a cat', regrounding_hz=2.0)
        sent = []
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and \
                sum(f.has_position for _, f in feedback) < 5:
            sent.append(publish_scene(h, scene)[0].header)
            time.sleep(0.05)
        positioned = [f for _, f in feedback if f.has_position]
        assert len(positioned) >= 5, [f.state for _, f in feedback][-5:]
        color, box = publish_scene(h, scene)
        sent.append(color.header)
        x, y, z = expected_center(box, OBJECT)
        last = positioned[-1]
        assert last.state == 'tracking' and abs(last.position.z - z) < 0.05
        assert abs(last.position.x - x) < 0.05 and abs(last.position.y - y) < 0.05
        # The same target on NAME/tracks_3d, with the track's id, on the frames' headers.
        assert wait_for(lambda: any(d.id == str(last.track_id)
                                    for m in h.tracks_3d['front'] for d in m.detections), 5.0)
        keys = {header_key(s) for s in sent}
        assert all(header_key(m.header) in keys for m in h.tracks_3d['front'])
        handle.cancel_goal_async()
        assert result_of(handle)[0] == CANCELED
    finally:
        h.close()


def test_hostile_follow_goals_end_with_a_reason_and_the_node_serves_on(
        ros, tiny_model_dir, steer, scene, ledger):
    """Fuzzed follow goals: each ends (refused with its reason, or runs until cancelled)."""
    from vision_msgs.msg import BoundingBox2D

    def region(x=100.0, y=100.0, w=50.0, h=50.0, theta=0.0):
        box = BoundingBox2D(size_x=w, size_y=h)
        box.center.position.x, box.center.position.y, box.center.theta = x, y, theta
        return box

    nan, inf = float('nan'), float('inf')
    cases = {
        'empty phrase': dict(phrase=''),
        'blank phrase': dict(phrase=' \t\n'),
        '100,000-character phrase': dict(phrase='cup ' * 25_000),
        'control tokens in the phrase': dict(phrase='<s></s><pad><mask> cup'),
        'fullwidth look-alike brackets': dict(phrase='\uff1cs\uff1e cup \uff1c/s\uff1e'),
        'NUL in the phrase (rclpy sends the text before it)': dict(phrase='a\x00cup'),
        'unknown camera': dict(phrase='a cat', camera='nope'),
        '10,000-character camera': dict(phrase='a cat', camera='c' * 10_000),
        'regrounding_hz NaN': dict(phrase='a cat', regrounding_hz=nan),
        'regrounding_hz inf': dict(phrase='a cat', regrounding_hz=inf),
        'regrounding_hz negative': dict(phrase='a cat', regrounding_hz=-1.0),
        'regrounding_hz 1e9': dict(phrase='a cat', regrounding_hz=1e9),
        'min_score NaN': dict(phrase='a cat', min_score=nan),
        'min_score 2': dict(phrase='a cat', min_score=2.0),
        'rotated region': dict(phrase='a cat', region=region(theta=0.5)),
        'region of NaN size': dict(phrase='a cat', region=region(w=nan)),
        'region of negative size': dict(phrase='a cat', region=region(w=-10.0)),
        'region at infinity': dict(phrase='a cat', region=region(x=inf)),
        'region of 1e30 pixels': dict(phrase='a cat', region=region(w=1e30, h=1e30)),
    }
    reasons = {'empty phrase': 'phrase is empty', '100,000-character phrase': 'over the limit',
               'unknown camera': 'unknown camera', 'regrounding_hz NaN': 'regrounding_hz must',
               'min_score NaN': 'min_score must', 'rotated region': 'rotated',
               'region of NaN size': 'region must be finite with a positive size',
               'region of negative size': 'region must be finite with a positive size',
               'region at infinity': 'region must be finite with a positive size'}
    with streaming(ros, tiny_model_dir, steer, scene, max_follow_goals=8) as (h, stream):
        for case, fields in cases.items():
            handle, _ = send_follow(h, **fields)
            future = handle.get_result_async()
            if wait_for(future.done, 3.0):  # ended by itself: it must say why
                status, result = future.result().status, future.result().result
                assert status == ABORTED and result.message, (case, status)
                assert reasons.get(case, '') in result.message, (case, result.message)
                # 'not found': a valid goal whose phrase the model never found (lost_timeout)
                ledger.add('action ~/follow', case, 'handled' if result.message.startswith(
                    'not found') else 'refused', result.message)
                continue
            assert case not in reasons, f'{case}: still running'
            handle.cancel_goal_async()  # still running: it was taken as a valid goal
            status, result = result_of(handle, 10.0)
            assert status == CANCELED, (case, status, result.message)
            ledger.add('action ~/follow', case, 'handled', 'ran until cancelled')
        # A burst beyond max_follow_goals: eight run, the rest end at once; all cancel.
        burst = [send_follow(h, phrase='a cat')[0] for _ in range(20)]
        ended = [h_ for h_ in burst if wait_for(h_.get_result_async().done, 0.5)]
        assert len(burst) - len(ended) <= 8
        for handle in burst:
            handle.cancel_goal_async()
        assert all(result_of(handle, 15.0)[0] in (CANCELED, ABORTED) for handle in burst)
        ledger.add('action ~/follow', '20 goals at once, max_follow_goals 8', 'handled',
                   f'{len(ended)} refused at once, the others cancelled')
        assert wait_for(lambda: h.node._follow.running == 0, 5.0)
        response = h.call(task=0)  # the node still answers queries
        assert response.success, response.message


def test_a_hidden_target_is_predicted_then_found_again_under_its_id(ros, tiny_model_dir, steer,
                                                                    scene):
    """Grey frames (a hand over the lens): the target coasts as 'predicted', keeps its id."""
    from kosmos_ros_interfaces.msg import Track, TrackArray

    with streaming(ros, tiny_model_dir, steer, scene, lost_timeout=5.0) as (h, stream):
        states = []
        h.client.create_subscription(TrackArray, 'front/track_states', states.append, 100)
        handle, feedback = send_follow(h, phrase='a cat', regrounding_hz=0.5)
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
        target = [f for _, f in feedback if f.state == 'tracking'][-1].track_id
        hidden = time.monotonic()
        stream.rgb = np.full_like(scene, 128)
        time.sleep(0.4)
        stream.rgb = scene
        assert wait_for(lambda: [f.state for t, f in feedback if t > hidden + 0.4][-3:]
                        == ['tracking'] * 3, 10.0), [f.state for _, f in feedback][-20:]
        after = [f for t, f in feedback if t > hidden]
        assert 'predicted' in {f.state for f in after}, [f.state for f in after]
        assert 'lost' not in {f.state for f in after}
        assert {f.track_id for f in after} == {target}
        # NAME/track_states said so too, with the same id.
        said = {t.state for m in states for t in m.tracks if t.track_id == target}
        assert Track.PREDICTED in said and Track.TRACKED in said, said
        handle.cancel_goal_async()
        status, result = result_of(handle)
        assert status == CANCELED and result.success
