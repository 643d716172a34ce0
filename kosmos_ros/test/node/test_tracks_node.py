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

from helpers import wait_for  # noqa: I100
from node_harness import ABORTED, CANCELED, NO_SUB_EVENTS, NodeHarness, Stream  # noqa: I100

FRAME_HZ = 15.0


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


def seconds_of(header):
    """Return a header's stamp in seconds."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


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
        # A window of four model results (events, not a span of seconds).
        assert wait_for(lambda: len(h.results['front']) - results_before >= 4, 30.0), \
            'model results stopped'
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
        sub = h.client.create_subscription(Detection2DArray, 'front/tracks', got.append, 10,
                                           **NO_SUB_EVENTS)
        assert wait_for(lambda: len(got) >= 10, 10.0), 'no tracks after subscribing'
        assert pump.owns('front')
        h.client.destroy_subscription(sub)
        assert wait_for(lambda: not pump.owns('front'), 5.0), 'still tracking, nobody listens'
        tracked = pump.streams['front'].frames_tracked
        assert pump.streams['front'].tracks(include_lost=True) == []  # frames dropped
        # Continuous grounding goes on, on the frames tracking hands over: while two more
        # model results come (the camera streams at 15 Hz), no frame is tracked.
        count = len(h.results['front'])
        assert wait_for(lambda: len(h.results['front']) >= count + 2, 20.0)
        assert pump.streams['front'].frames_tracked == tracked


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

        def ages():
            return [f.since_confirmed.sec + f.since_confirmed.nanosec * 1e-9
                    for t, f in feedback if t >= since]

        def confirmations():  # the age since the model's last confirmation starts again
            seen = ages()
            return sum(1 for a, b in zip(seen, seen[1:]) if b < a)

        # A window in which the model confirmed the target three times (events).
        assert wait_for(lambda: confirmations() >= 3, 30.0), ages()[-20:]
        window = [f for t, f in feedback if t >= since]
        sent = [k for k, t in stream.sent.items() if t >= since]
        assert len(window) >= 0.6 * len(sent), (len(window), len(sent))
        assert all(header_key(f.header) in stream.sent for f in window)
        assert {f.state for f in window} == {'tracking'}
        assert len({f.track_id for f in window}) == 1 and window[0].track_id >= 1
        assert min(ages()) >= 0.0
        assert window[-1].box.size_x > 0 and not window[-1].has_position  # no depth here
        handle.cancel_goal_async()
        status, result = result_of(handle)
        assert status == CANCELED and result.success, result.message
        assert result.track_id == window[0].track_id
        # Followed (node clock) for at least the message time the window spans.
        span = seconds_of(window[-1].header) - seconds_of(window[0].header)
        followed = result.followed.sec + result.followed.nanosec * 1e-9
        assert span > 0 and followed >= span, (followed, span)


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
    """Fuzzed follow goals: each ends as expected, with its reason; the node serves on.

    Outcomes: ``refused`` (ends at once with the reason, no feedback), ``not found`` (a valid
    goal whose phrase the steered model never boxes: it searches, then ends after
    lost_timeout) or ``runs`` (a valid goal that tracks 'a cat' until cancelled).
    """
    from vision_msgs.msg import BoundingBox2D

    def region(x=100.0, y=100.0, w=50.0, h=50.0, theta=0.0):
        box = BoundingBox2D(size_x=w, size_y=h)
        box.center.position.x, box.center.position.y, box.center.theta = x, y, theta
        return box

    nan, inf = float('nan'), float('inf')
    refused, not_found, runs = 'refused', 'not found', 'runs'
    finite = 'must be a finite number; got nan'
    bad_region = 'region must be finite with a positive size'
    cases = {  # case: (goal fields, outcome, what its result message says)
        'empty phrase': (dict(phrase=''), refused, 'phrase is empty'),
        'blank phrase': (dict(phrase=' \t\n'), refused, 'phrase is empty'),
        '100,000-character phrase': (dict(phrase='cup ' * 25_000), refused, 'over the limit'),
        'control tokens in the phrase': (dict(phrase='<s></s><pad><mask> cup'), not_found,
                                         'not found: the model found no box of'),
        'fullwidth look-alike brackets': (dict(phrase='\uff1cs\uff1e cup \uff1c/s\uff1e'),
                                          not_found, 'not found: the model found no box of'),
        'NUL in the phrase (rclpy sends the text before it)': (
            dict(phrase='a\x00cup'), not_found, "not found: the model found no box of 'a' "),
        'unknown camera': (dict(phrase='a cat', camera='nope'), refused,
                           "unknown camera 'nope'; cameras: front"),
        '10,000-character camera': (dict(phrase='a cat', camera='c' * 10_000), refused,
                                    "unknown camera 'cccc"),
        'regrounding_hz NaN': (dict(phrase='a cat', regrounding_hz=nan), refused,
                               f'regrounding_hz {finite}'),
        'regrounding_hz inf': (dict(phrase='a cat', regrounding_hz=inf), refused,
                               'regrounding_hz must be a finite number; got inf'),
        'regrounding_hz negative': (dict(phrase='a cat', regrounding_hz=-1.0), refused,
                                    'regrounding_hz must be at least 0.01; got -1.0'),
        'regrounding_hz 1e9': (dict(phrase='a cat', regrounding_hz=1e9), refused,
                               'regrounding_hz must be at most 100; got 1000000000.0'),
        'min_score NaN': (dict(phrase='a cat', min_score=nan), refused, f'min_score {finite}'),
        'min_score 2': (dict(phrase='a cat', min_score=2.0), refused,
                        'min_score must be at most 1; got 2.0'),
        'rotated region': (dict(phrase='a cat', region=region(theta=0.5)), refused, 'rotated'),
        'region of NaN size': (dict(phrase='a cat', region=region(w=nan)), refused, bad_region),
        'region of negative size': (dict(phrase='a cat', region=region(w=-10.0)), refused,
                                    bad_region),
        'region at infinity': (dict(phrase='a cat', region=region(x=inf)), refused, bad_region),
        'region of 1e30 pixels': (dict(phrase='a cat', region=region(w=1e30, h=1e30)), runs,
                                  'cancelled while following track'),
    }
    with streaming(ros, tiny_model_dir, steer, scene, max_follow_goals=8) as (h, stream):
        for case, (fields, outcome, reason) in cases.items():
            handle, feedback = send_follow(h, **fields)
            if outcome == runs:  # taken as a valid goal: it tracks until cancelled
                assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback),
                                20.0), (case, [f.state for _, f in feedback][-5:])
                assert not handle.get_result_async().done(), case
                handle.cancel_goal_async()
                status, result = result_of(handle, 20.0)
                assert status == CANCELED and result.success, (case, status, result.message)
                assert result.message.startswith(reason), (case, result.message)
                ledger.add('action ~/follow', case, 'handled', 'ran until cancelled')
                continue
            status, result = result_of(handle, 20.0)
            assert status == ABORTED and not result.success, (case, status, result.message)
            assert reason in result.message, (case, result.message)
            if outcome == refused:
                assert not feedback, (case, 'a refused goal sent feedback')
                ledger.add('action ~/follow', case, 'refused', result.message)
            else:  # searched, then gave up after lost_timeout: never a target
                assert result.message.startswith('not found'), (case, result.message)
                assert feedback and {f.state for _, f in feedback} == {'searching'}, case
                assert result.track_id == -1, case
                ledger.add('action ~/follow', case, 'handled', result.message)
        assert wait_for(lambda: h.node._follow.running == 0, 10.0), h.node._follow.running
        # A burst beyond max_follow_goals: exactly eight run, the other twelve end at once
        # with the reason; then the eight are cancelled.
        burst = [send_follow(h, phrase='a cat') for _ in range(20)]
        results = [handle.get_result_async() for handle, _ in burst]
        assert wait_for(lambda: sum(r.done() for r in results) >= 12, 30.0), \
            sum(r.done() for r in results)
        assert wait_for(lambda: h.node._follow.running == 8, 10.0), \
            f'{h.node._follow.running} follow goals run, not max_follow_goals 8'
        ended = [(b, r) for b, r in zip(burst, results) if r.done()]
        going = [(b, r) for b, r in zip(burst, results) if not r.done()]
        assert len(ended) == 12 and len(going) == 8, (len(ended), len(going))
        for _, r in ended:
            assert r.result().status == ABORTED, r.result().status
            assert '8 follow goals are running (max_follow_goals 8)' in \
                r.result().result.message, r.result().result.message
        for (_, feedback), _ in going:  # running: their feedback streams
            assert wait_for(lambda: feedback, 20.0), 'a running goal sent no feedback'
        for (handle, _), _ in going:
            handle.cancel_goal_async()
        assert all(result_of(handle, 20.0)[0] == CANCELED for (handle, _), _ in going)
        ledger.add('action ~/follow', '20 goals at once, max_follow_goals 8', 'handled',
                   '8 ran until cancelled, 12 refused at once with the reason')
        assert wait_for(lambda: h.node._follow.running == 0, 10.0)
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
        # Uncovered once the target coasts (an event, not a span of seconds).
        assert wait_for(lambda: any(f.state == 'predicted' for t, f in feedback if t > hidden),
                        10.0), [f.state for _, f in feedback][-20:]
        uncovered = time.monotonic()
        stream.rgb = scene
        assert wait_for(lambda: [f.state for t, f in feedback if t > uncovered][-3:]
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
