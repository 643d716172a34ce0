# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Writes DDS refuses: the node drops the message, counts it, and goes on serving.

Seen in CI (Kilted, two cores, four test processes): Fast DDS gave up on the status publish of
a ``~/follow`` goal that was starting (``RCLError: Failed publish goal status array: cannot
publish data``); it raised out of the executor, which stopped spinning, and the goal never ran.

DDS refusing a write is injected where rcl reports it: :class:`Refused` makes chosen calls of a
publish method of rclpy's extension (on one entity's handle) raise the RCLError rcl raises.
The rest is real: rclpy over DDS on loopback, the tiny KOSMOS-2, the node's own executor loop
(:func:`kosmos_ros.node.spinning.spin`, which the ``ros`` fixture spins with) and, in the last
test, the node's process as ``ros2 run`` starts it.
"""

import os
import signal
import subprocess
import sys
import textwrap

from action_msgs.msg import GoalStatus
from kosmos_ros_interfaces.action import Ground as GroundAction
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from sensor_msgs.msg import Image

from kosmos_ros.node.queries import QUERY_QOS

from helpers import small, wait_for, wait_for_state  # noqa: I100
from node_harness import CANCELED, Stream, SUCCEEDED  # noqa: I100
from test_tracks_node import FRAME_HZ, harness, result_of, send_follow  # noqa: I100

REFUSAL = 'cannot publish data, at rmw_publish.cpp (injected)'


class Refused:
    """Make the ``calls`` (1-based) of ``cls.name`` on ``handle`` raise a refused write."""

    def __init__(self, monkeypatch, cls, name, handle, calls):
        self.calls, self.count, self.refused = set(calls), 0, 0
        real = getattr(cls, name)

        def method(this, *args, **kwargs):
            if this is handle:
                self.count += 1
                if self.count in self.calls:
                    self.refused += 1
                    raise _rclpy.RCLError(f'Failed {name}: {REFUSAL}')
            return real(this, *args, **kwargs)

        monkeypatch.setattr(cls, name, method)


def send_ground(h, photo):
    """Send a ~/ground FIND goal on ``photo``; return the goal handle."""
    assert h.action.wait_for_server(timeout_sec=10.0)
    goal = GroundAction.Goal(task=GroundAction.Goal.FIND, prompt='a cat',
                             image=h.image(photo, frame_id='q'))
    sent = h.action.send_goal_async(goal)
    assert wait_for(sent.done, 15.0)
    assert sent.result().accepted
    return sent.result()


def refused_lines(h):
    return [m.msg for m in h.logs if 'a write failed' in m.msg]


@pytest.fixture
def rig(ros, tiny_model_dir, steer, photos):
    h = harness(ros, tiny_model_dir, steer, diagnostics_period=0.5)
    h.photo = small(photos['coffee'])
    yield h
    h.close()


# (publish_status call refused, what the node logs): the first is made by rclpy as it accepts
# the goal, the second as the goal starts executing, the third as it ends.
STATUS_CASES = {'starts executing': 2, 'ends': 3}


@pytest.mark.parametrize('when', sorted(STATUS_CASES))
def test_a_ground_goal_whose_status_publish_is_refused_ends_with_its_result(
        rig, monkeypatch, ledger, ros, when):
    server = rig.node._queries.action
    refused = Refused(monkeypatch, _rclpy.ActionServer, 'publish_status', server._handle,
                      {STATUS_CASES[when]})
    handle = send_ground(rig, rig.photo)
    status, result = result_of(handle, 60.0)
    assert refused.refused == 1
    assert status == SUCCEEDED and result.success, result.message
    assert 'a cat' in [d.results[0].hypothesis.class_id for d in result.detections.detections]
    assert rig.node.writes.refused == 1 and not ros.errors
    assert wait_for(lambda: refused_lines(rig), 5.0)
    assert '~/ground status' in refused_lines(rig)[0]
    ledger.add('fault', f'DDS refuses the status of a ~/ground goal as it {when}', 'survived',
               'the goal runs and ends with its result; the write is logged and counted')


def test_a_goal_whose_acceptance_status_is_refused_is_started_by_the_sweep(
        rig, monkeypatch, ledger, ros):
    """The publish rclpy makes raises out of the executor: it goes on, and the goal runs."""
    server = rig.node._queries.action
    refused = Refused(monkeypatch, _rclpy.ActionServer, 'publish_status', server._handle, {1})
    handle = send_ground(rig, rig.photo)
    status, result = result_of(handle, 60.0)
    assert refused.refused == 1
    assert status == SUCCEEDED and result.success, result.message
    # rclpy hands the exception of a goal request's task to the executor twice.
    assert ros.errors and all(REFUSAL in str(e) for e in ros.errors), ros.errors
    ros.errors.clear()  # provoked: the loop handed it on and went on spinning
    assert wait_for(lambda: any('accepted but never started' in m.msg for m in rig.logs), 5.0)
    # A second goal is served as usual.
    status, result = result_of(send_ground(rig, rig.photo), 60.0)
    assert status == SUCCEEDED and result.success
    ledger.add('fault', 'DDS refuses the status of a goal as rclpy accepts it', 'survived',
               'the executor goes on; the goal is started within 2 s and ends with its result')


def test_refused_feedback_and_topic_messages_are_dropped_and_counted(
        rig, monkeypatch, ledger, ros):
    server = rig.node._queries.action
    Refused(monkeypatch, _rclpy.ActionServer, 'publish_feedback', server._handle, {1, 2})
    diagnostics = rig.node._diagnostics.publisher.handle
    Refused(monkeypatch, _rclpy.Publisher, 'publish', diagnostics, {1, 2})
    status, result = result_of(send_ground(rig, rig.photo), 60.0)
    assert status == SUCCEEDED and result.success, result.message
    # The diagnostics go on after two refused, and say how many writes were refused.

    def counted():
        for _, status in rig.diagnostics:
            values = {v.key: v.value for v in status.values}
            if values.get('DDS writes refused') == '4':
                return values
        return None

    assert wait_for(counted, 10.0), rig.diagnostics[-1:]
    assert counted()['executor errors'] == '0'
    assert not ros.errors
    ledger.add('fault', 'DDS refuses feedback and /diagnostics messages', 'survived',
               'dropped and counted (diagnostics: "DDS writes refused"); the goal ends as usual')


def test_a_follow_goal_whose_start_status_is_refused_tracks(
        ros, tiny_model_dir, steer, scene, monkeypatch, ledger):
    """The case CI met: the ~/follow goal starting while DDS could not write its status."""
    h = harness(ros, tiny_model_dir, steer)
    stream = Stream(h, 'front', scene, FRAME_HZ)
    try:
        server = h.node._follow.action
        refused = Refused(monkeypatch, _rclpy.ActionServer, 'publish_status', server._handle,
                          {2})
        handle, feedback = send_follow(h, phrase='a cat')
        assert wait_for(lambda: any(f.state == 'tracking' for _, f in feedback), 20.0)
        handle.cancel_goal_async()
        status, result = result_of(handle)
        assert refused.refused == 1 and status == CANCELED and result.success, result.message
        assert h.node.writes.refused == 1 and not ros.errors
    finally:
        stream.stop()
        h.close()
    ledger.add('fault', 'DDS refuses the status of a ~/follow goal as it starts', 'survived',
               'the goal tracks and ends when cancelled')


def test_the_goal_handles_the_sweep_reads_exist(rig):
    """The sweep reads ``_goal_handles`` (rclpy keeps no public list of goals): each distro."""
    server = rig.node._queries.action
    assert isinstance(server._goal_handles, dict)
    handle = send_ground(rig, rig.photo)
    assert bytes(handle.goal_id.uuid) in server._goal_handles
    result_of(handle, 60.0)


def send_goal(action, goal, tries=3):
    """Send ``goal``; send it again when no answer comes in 10 s (the answer's future).

    A client made a moment ago can send before the server's DDS reader has matched its writer:
    that request is lost, and rclpy never answers it (seen once under load).
    """
    for _ in range(tries):
        sent = action.send_goal_async(goal)
        if wait_for(sent.done, 10.0):
            assert sent.result().accepted
            return sent
    raise AssertionError(f'no answer to {tries} goals')


NODE = textwrap.dedent('''
    import sys
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    real = _rclpy.ActionServer.publish_status
    calls = []

    def publish_status(handle):  # the first status publish is refused, as in test_dds_writes
        calls.append(1)
        if len(calls) == 1:
            raise _rclpy.RCLError('Failed publish goal status array: cannot publish data')
        return real(handle)

    _rclpy.ActionServer.publish_status = publish_status
    from kosmos_ros.node.main import main
    sys.exit(main())
''')


def test_the_node_process_goes_on_after_a_callback_raised(ros, tiny_model_dir, photos):
    ns = f'/dds_{os.getpid()}'
    args = ['--ros-args', '-r', f'__ns:={ns}', '-p', f'model:={tiny_model_dir}',
            '-p', 'local_files_only:=true', '-p', 'device:=cpu', '-p', 'rate_hz:=0.0',
            '-p', 'max_new_tokens:=4']
    proc = subprocess.Popen([sys.executable, '-c', NODE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client = rclpy.create_node('dds_client', namespace=ns, context=ros.context)
    action = ActionClient(client, GroundAction, 'kosmos_grounding/ground',
                          goal_service_qos_profile=QUERY_QOS,
                          result_service_qos_profile=QUERY_QOS,
                          cancel_service_qos_profile=QUERY_QOS)
    ros.executor.add_node(client)
    output = ''
    try:
        assert wait_for_state(client, f'{ns}/kosmos_grounding', 'active', 90.0) == 'active'
        assert action.wait_for_server(timeout_sec=10.0)
        rgb = small(photos['coffee'])
        image = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                      step=rgb.shape[1] * 3, data=rgb.tobytes())
        results = []
        for _ in range(2):  # the first goal's acceptance is refused; the second is as usual
            sent = send_goal(action, GroundAction.Goal(task=0, image=image))
            got = sent.result().get_result_async()
            assert wait_for(got.done, 60.0), 'goal never ended'
            results.append(got.result())
        assert [r.status for r in results] == [GoalStatus.STATUS_SUCCEEDED] * 2, \
            [r.result.message for r in results]
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60.0)
        assert proc.returncode == 0, output[-3000:]
        assert 'a callback raised RCLError (1 so far); the node goes on serving' in output
        assert 'accepted but never started' in output
    except AssertionError as exc:  # with what the node said
        if proc.poll() is None:
            proc.kill()
            output = proc.communicate()[0]
        raise AssertionError(f'{exc}\nthe node said:\n{output[-4000:]}') from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ros.executor.remove_node(client)
        client.destroy_node()
