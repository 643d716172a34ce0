# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Follow goals with an owner, over real DDS: every accepted goal ends, and says how.

What an outside planner author found: a planner that exits without cancelling left its goal
running (enough of them exhaust ``max_follow_goals``); goals sent while ``deactivate`` ran were
accepted after the goals were ended and got no result until cleanup; goals sent while the node
configured were accepted and aborted; a goal cancelled while searching said ``success: true``;
a goal phrase with fullwidth letters or a control character never matched the model's phrase.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from helpers import wait_for  # noqa: I100
from node_harness import ABORTED, CANCELED, NodeHarness, Stream  # noqa: I100
from test_tracks_node import FRAME_HZ, harness, result_of, send_follow  # noqa: I100

CLIENT = textwrap.dedent('''
    import os, sys, time
    import rclpy
    from rclpy.action import ActionClient
    from kosmos_ros_interfaces.action import Follow
    rclpy.init()
    node = rclpy.create_node('planner')
    client = ActionClient(node, Follow, sys.argv[1])
    assert client.wait_for_server(timeout_sec=20.0)
    states = []
    future = client.send_goal_async(Follow.Goal(phrase='a cat'),
                                    feedback_callback=lambda f: states.append(f.feedback.state))
    deadline = time.monotonic() + 30.0
    while 'tracking' not in states and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print('tracking' if 'tracking' in states else 'never tracking', flush=True)
    if sys.argv[2] == 'exit':
        os._exit(0)  # no cancel, no clean-up: a planner that crashed or forgot its goal
    while True:
        rclpy.spin_once(node, timeout_sec=0.1)
''')


# A participant lease of 2 s (Fast DDS's default is 20 s): a process that dies without
# leaving the graph is noticed by the others when its lease runs out.
LEASE = textwrap.dedent('''\
    <?xml version="1.0" encoding="UTF-8" ?>
    <profiles xmlns="http://www.eprosima.com">
      <participant profile_name="short_lease" is_default_profile="true">
        <rtps>
          <builtin>
            <discovery_config>
              <leaseDuration><sec>2</sec></leaseDuration>
              <leaseAnnouncement><nanosec>500000000</nanosec></leaseAnnouncement>
            </discovery_config>
          </builtin>
        </rtps>
      </participant>
    </profiles>
''')


@pytest.fixture(scope='module')
def short_lease(tmp_path_factory):
    path = tmp_path_factory.mktemp('dds') / 'short_lease.xml'
    path.write_text(LEASE)
    return dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(path),
                FASTRTPS_DEFAULT_PROFILES_FILE=str(path))  # Fast DDS 3 and 2


def planner(h, how, env=None):
    """Start a planner process that sends a follow goal; return it once the goal tracks."""
    proc = subprocess.Popen([sys.executable, '-c', CLIENT, f'{h.ns}/kosmos_grounding/follow',
                             how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    line = proc.stdout.readline().strip()
    assert line == 'tracking', (line, proc.stderr.read() if proc.poll() is not None else '')
    return proc


def ends_of(h):
    """Record every goal end of the node's follow server: (kind, message)."""
    ends = []
    server = h.node._follow
    end = server._end

    def spy(goal, kind, message):
        ends.append((kind, message))
        return end(goal, kind, message)

    server._end = spy
    return ends


def test_a_goal_whose_client_is_gone_ends_and_a_live_clients_goes_on(
        ros, tiny_model_dir, steer, scene, short_lease):
    h = harness(ros, tiny_model_dir, steer, follow_client_timeout=0.5, max_follow_goals=2)
    h.follow.destroy()  # only the planners subscribe to the feedback
    stream = Stream(h, 'front', scene, FRAME_HZ)
    ends = ends_of(h)
    procs = []
    try:
        # A planner that dies without cancelling (os._exit: no clean-up, as a crash): its
        # goal ends once DDS notices (its 2 s lease) and follow_client_timeout, saying why.
        procs.append(planner(h, 'exit', short_lease))
        assert procs[-1].wait(10.0) == 0
        started = time.monotonic()
        assert wait_for(lambda: h.node._follow.running == 0, 15.0), ends
        assert time.monotonic() - started < 2.0 + 0.5 + 3.0
        assert len(ends) == 1 and ends[0][1].startswith('client gone'), ends
        # A planner that stays: its goal runs on, also while another planner comes and goes
        # (whose goal, sent while the first one listened, runs on too: the documented limit).
        live = planner(h, 'stay')
        procs.append(live)
        procs.append(planner(h, 'exit', short_lease))
        assert procs[-1].wait(10.0) == 0
        time.sleep(4.0)
        assert h.node._follow.running == 2 and len(ends) == 1, ends
        # The staying planner stops (SIGTERM): both goals end as their clients are gone.
        live.terminate()
        live.wait(10.0)
        assert wait_for(lambda: h.node._follow.running == 0, 10.0), ends
        assert len(ends) == 3 and all(m.startswith('client gone') for _, m in ends), ends
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        stream.stop()
        h.close()


def test_goals_sent_while_deactivate_runs_end_with_a_result(ros, tiny_model_dir, steer, scene):
    """A goal that passed the activity check when deactivate ended the goals is not taken."""
    h = harness(ros, tiny_model_dir, steer)
    stream = Stream(h, 'front', scene, FRAME_HZ)
    server = h.node._follow
    session = server._session
    raced = []

    def racing_session():
        got = session()
        if not raced:  # deactivate runs between this goal's checks and its registration
            raced.append(True)
            done = threading.Event()
            threading.Thread(target=lambda: (h.node.trigger_deactivate(), done.set())).start()
            assert done.wait(10.0)
        return got

    server._session = racing_session
    try:
        handle, _ = send_follow(h, phrase='a cat')
        status, result = result_of(handle, 10.0)
        assert status == ABORTED and not result.success
        assert 'leaving the active state' in result.message, result.message
        assert server.running == 0
        assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        server._session = session
        handle, feedback = send_follow(h, phrase='a cat')
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
        handle.cancel_goal_async()
        assert result_of(handle)[0] == CANCELED
    finally:
        stream.stop()
        h.close()


@pytest.mark.parametrize('limit, ends_as', [(30.0, 'runs'), (0.5, 'times out')])
def test_goals_sent_while_the_node_configures_wait_for_it(ros, tiny_model_dir, steer, scene,
                                                          limit, ends_as):
    h = NodeHarness(ros, tiny_model_dir, steer=steer, configure=False, cameras=('front',),
                    max_new_tokens=24, rate_hz=0.0, follow_activation_timeout=limit)
    configure = h.node._configure

    def slow_configure():  # a model that takes a while to load
        time.sleep(2.0)
        return configure()

    h.node._configure = slow_configure
    stream = Stream(h, 'front', scene, FRAME_HZ)
    try:
        h.node._transitions.start(['configure', 'activate'], lambda label: None)
        assert wait_for(lambda: h.node._transitions.state() == 'configuring', 5.0)
        handle, feedback = send_follow(h, phrase='a cat')
        if ends_as == 'runs':
            assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 30.0)
            handle.cancel_goal_async()
            status, result = result_of(handle)
            assert status == CANCELED and result.success, result.message
        else:
            status, result = result_of(handle, 10.0)
            assert status == ABORTED and 'follow_activation_timeout' in result.message, \
                result.message
        assert wait_for(lambda: h.node._state == 'active', 10.0)
        assert h.node._transitions.state() == 'active'
    finally:
        stream.stop()
        h.close()


def test_cancel_means_success_only_while_the_target_was_followed(ros, tiny_model_dir, steer,
                                                                 scene):
    with_stream = harness(ros, tiny_model_dir, steer, lost_timeout=30.0)
    stream = Stream(with_stream, 'front', scene, FRAME_HZ)
    try:
        handle, feedback = send_follow(with_stream, phrase='a red umbrella')  # never found
        assert wait_for(lambda: len(feedback) >= 5, 20.0)
        handle.cancel_goal_async()
        status, result = result_of(handle)
        assert status == CANCELED and not result.success
        assert 'searching' in result.message, result.message
    finally:
        stream.stop()
        with_stream.close()


@pytest.mark.parametrize('phrase', ['\uff41 \uff43\uff41\uff54', 'a\x07cat', '  A   CAT '])
def test_goal_phrases_match_as_the_model_spells_them(ros, tiny_model_dir, steer, scene,
                                                     phrase):
    h = harness(ros, tiny_model_dir, steer)
    stream = Stream(h, 'front', scene, FRAME_HZ)
    try:
        handle, feedback = send_follow(h, phrase=phrase, regrounding_hz=2.0)
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0), \
            {f.state for _, f in feedback}
        handle.cancel_goal_async()
        assert result_of(handle)[0] == CANCELED
    finally:
        stream.stop()
        h.close()


def test_engine_reads_phrases_as_its_results_spell_them(engine):
    """read_phrase equals the phrase of a steered FIND result, for hostile spellings."""
    import numpy as np

    from kosmos_ros.datatypes import Query, Task
    from kosmos_ros.images import frame_from_array

    from helpers import steer_for

    frame = frame_from_array(np.zeros((120, 160, 3), np.uint8), 'rgb')
    steered = engine.with_options(max_new_tokens=6, logits_processors=(steer_for(
        engine.tokenizer, '<object><patch_index_0044><patch_index_0863></object>'),))
    for phrase in ('a [red] cup', '\uff41 \uff43\uff55\uff50', 'a\x07cup', 'a \uff1ccup\uff1e',
                   'the <phrase> cup', 'tab\tcup', '\ufb01sh', '  x  ', 'caf\u00e9'):
        result = steered.ground(frame, Query(Task.FIND, phrase))
        assert result.phrases, phrase
        assert result.phrases[0].text == engine.read_phrase(phrase), phrase
    assert os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE') == 'LOCALHOST'
