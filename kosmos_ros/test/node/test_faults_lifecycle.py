# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Faults around the lifecycle: requests and transitions at the wrong time, bad start-up values.

Requests while inactive or during model reloads, transitions while an inference runs, lifecycle
requests that are not valid now, start-up parameter values that break the rules of later
sets, entity leaks over configure/cleanup cycles, and an activate that fails. Each case is
recorded in the reliability table (ledger.py).
"""

import collections
import os
import re
import threading
import time

from kosmos_ros_interfaces.action import Ground as GroundAction
from kosmos_ros_interfaces.srv import Ground
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
import pytest
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

import helpers  # noqa: I100
from helpers import small, wait_for  # noqa: I100
from hostile import Fault  # noqa: I100
from node_harness import ABORTED, NodeHarness, RELIABILITY  # noqa: I100


def reliability_node(ros, model_dir, **params):
    """Return a node harness with the reliability suites' settings, and ``params``."""
    return NodeHarness(ros, model_dir, **{**RELIABILITY, **params})


def test_requests_while_inactive_or_reloading(ros, tiny_model_dir, photos, ledger):
    rig = reliability_node(ros, tiny_model_dir, configure=False)
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

        calls, goals, failures = [], [], []

        def answered():
            return sum(1 for f in list(calls) if f.done() and f.result().success)

        def reload():
            try:
                for _ in range(3):
                    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
                    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
                    assert rig.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
                    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
                    # Active until a request is answered (not a fixed time): every reload
                    # then meets requests answered as well as refused.
                    before = answered()
                    assert wait_for(lambda: answered() > before, 30), 'nothing answered'
            except BaseException as exc:
                failures.append(exc)

        reloader = threading.Thread(target=reload)
        reloader.start()
        while reloader.is_alive():
            calls.append(rig.service.call_async(Ground.Request(image=img)))
            goals.append(rig.action.send_goal_async(GroundAction.Goal(image=img)))
            time.sleep(0.03)  # a caller's pace, not a wait for something
        reloader.join()
        assert not failures, failures
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
        # A clear refusal is a fine answer: inactive, unloading, or busy (the caller's pace,
        # 66 requests/s, can outrun a loaded 2-core machine; the pending cap then answers at
        # once instead of queueing without bound, as documented).
        allowed = re.compile(r'not active \(state: (unconfigured|inactive|configuring)\)|'
                             r'cancelled: the model is being unloaded|'
                             r'busy: \d+ requests are pending')
        kinds = collections.Counter()
        for answer in answers:
            assert answer.success or allowed.search(answer.message), answer.message
            kind = 'answered' if answer.success else answer.message.split(';')[0]
            kinds['busy (max_pending_queries)' if kind.startswith('busy') else kind] += 1
        assert kinds['answered'] > 0 and len(kinds) > 1, kinds
        assert rig.call(image=img).success
        ledger.add('service+action', f'{len(answers)} requests during 3 model reloads',
                   'handled', ', '.join(f'{v} {k}' for k, v in kinds.most_common()))
    finally:
        rig.close()


def test_transitions_during_inference_stop_the_generation(ros, tiny_model_dir, photos,
                                                          monkeypatch, ledger):
    """Cleanup and shutdown during a generation stop it, and its goal is answered.

    The worker thread has ended when the transition returns (the node did not give up on it).
    Told by events, not by a bound in seconds: the node gives up waiting for its worker
    thread after 10 s (stop_worker) and returns anyway, leaving the thread running; a thread
    still alive after the transition is what that looks like.
    """
    rig = reliability_node(ros, tiny_model_dir, max_new_tokens=64, max_request_tokens=2000)
    try:
        img = rig.image(small(photos['coffee']), frame_id='long')
        long_goal = GroundAction.Goal(task=GroundAction.Goal.DETAILED_CAPTION, image=img,
                                      max_new_tokens=400)
        timings = {}  # for the table only
        for transition in ('cleanup', 'shutdown'):
            fault = Fault(monkeypatch, rig.node._engine)
            fault.delay = 0.05  # 400 tokens would take 20 s
            send = rig.action.send_goal_async(long_goal)
            assert wait_for(send.done, 10) and send.result().accepted
            result = send.result().get_result_async()
            assert wait_for(lambda: rig.worker.busy and fault.calls > 2, 20)
            assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            # Deactivate returned without waiting for the running query: it still generates.
            assert rig.worker.busy and not result.done(), \
                'deactivate is not expected to stop a running query'
            worker_thread = rig.worker._thread
            started = time.monotonic()
            if transition == 'cleanup':
                assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
            else:
                assert rig.node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
            timings[transition] = time.monotonic() - started
            # The worker thread ended within the transition: it was stopped, not left behind.
            assert not worker_thread.is_alive(), f'{transition} left the worker generating'
            # The transition cut the generation short rather than waiting for its end: fewer
            # forward passes ran than 400 tokens need, and the goal was aborted as cancelled.
            calls = fault.calls
            assert calls < 400, calls
            assert wait_for(result.done, 10), 'the running goal was never answered'
            wrapped = result.result()
            assert wrapped.status == ABORTED, wrapped.status
            assert 'cancelled: the model is being unloaded' in wrapped.result.message
            assert fault.calls == calls, 'the model ran on after the transition'
            if transition == 'cleanup':
                monkeypatch.undo()
                rig.start()
        ledger.add('fault', 'deactivate, cleanup, shutdown while an inference runs', 'survived',
                   f'cleanup {timings["cleanup"]:.2f} s, shutdown {timings["shutdown"]:.2f} s; '
                   'the running goal aborted as cancelled')
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
    rig = reliability_node(ros, tiny_model_dir, configure=False)
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
        assert wait_for(lambda: any('refused lifecycle transition' in m.msg
                                    for m in rig.logs), 10)
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
    rig = reliability_node(ros, tiny_model_dir, configure=False, node_values=params)
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
    rig = reliability_node(ros, tiny_model_dir, configure=False, camera_timeout=10,
                           depth_max=8, frame_wait_timeout='soon')
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
    rig = reliability_node(ros, tiny_model_dir)
    try:
        result = rig.node.set_parameters([Parameter('depth_min', value=20.0)])[0]
        assert not result.successful and 'must be below depth_max' in result.reason
        result = rig.node.set_parameters_atomically([Parameter('depth_min', value=20.0),
                                                     Parameter('depth_max', value=30.0)])
        assert result.successful, result.reason
        ledger.add('parameters', 'set depth_min above depth_max', 'refused', 'must be below')
    finally:
        rig.close()


KINDS = ('publishers', 'subscriptions', 'services', 'clients', 'timers', 'guards', 'waitables')


def own_nodes(rig):
    return {'node': rig.node, 'intake': rig.node._intake_node}


def graph_names(rig, node):
    """Return the names DDS shows for ``node``: publishers, subscriptions, services, clients."""
    client = rig.client
    queries = {'publishers': client.get_publisher_names_and_types_by_node,
               'subscriptions': client.get_subscriber_names_and_types_by_node,
               'services': client.get_service_names_and_types_by_node,
               'clients': client.get_client_names_and_types_by_node}
    return {kind: sorted(name for name, _ in query(node.get_name(), node.get_namespace()))
            for kind, query in queries.items()}


def graph_differences(rig):
    """Return where the DDS graph differs from what rclpy holds (empty once it shows it all).

    Compared by node and kind: publishers, subscriptions, services and clients.

    Left out: what rcl makes itself (the /rosout publisher, the lifecycle state machine's
    transition_event publisher) and the actions' topics and services (``/_action/``), which
    rclpy keeps inside its action servers; those are compared cycle to cycle instead.
    """
    rcl_own = ('/rosout', f'{rig.node.get_fully_qualified_name()}/transition_event')
    differences = {}
    for label, node in own_nodes(rig).items():
        shown = graph_names(rig, node)
        topic, service = node.resolve_topic_name, node.resolve_service_name
        held = {'publishers': {topic(p.topic_name) for p in node.publishers},
                'subscriptions': {topic(s.topic_name) for s in node.subscriptions},
                'services': {service(s.srv_name) for s in node.services},
                'clients': {service(c.srv_name) for c in node.clients}}
        for kind, names in held.items():
            seen = {n for n in shown[kind] if '/_action/' not in n and n not in rcl_own}
            if seen != names:
                differences[f'{label} {kind}'] = dict(only_in_the_graph=sorted(seen - names),
                                                      only_in_rclpy=sorted(names - seen))
    return differences


def entity_census(rig):
    """Count every entity the node made, by kind, as rclpy holds them and as DDS shows them.

    The node and its intake helper node: publishers, subscriptions, services, clients, timers,
    guard conditions and waitables (action servers, QoS events) in rclpy's lists, and their
    names in the DDS graph; and this process's threads: Python ones by name (numbers left
    out; the executor's pool threads too, which it starts as it needs them) and native ones
    (DDS, torch) by count.
    """
    census = {}
    for label, node in own_nodes(rig).items():
        for kind in KINDS:
            census[f'{label} {kind}'] = len(list(getattr(node, kind)))
        for kind, names in graph_names(rig, node).items():
            census[f'{label} {kind} in the graph'] = names
    python = threading.enumerate()
    names = collections.Counter(re.sub(r'\d+', 'N', t.name) for t in python
                                if not t.name.startswith('ThreadPoolExecutor'))
    census['python threads'] = sorted(names.items())
    census['native threads'] = len(os.listdir('/proc/self/task')) - len(python)
    return census


def census_differences(census, first):
    return {k: (first[k], census[k]) for k in first if census[k] != first[k]}


def test_lifecycle_cycles_leak_no_entities(ros, tiny_model_dir):
    """Every configure/activate/deactivate/cleanup cycle leaves the same entities.

    A census of every entity (:func:`entity_census`) is taken active and unconfigured at each
    of four cycles, once DDS shows what rclpy holds; each must equal the first cycle's.
    """
    rig = reliability_node(ros, tiny_model_dir, cameras=('front', 'rear'))
    try:
        first = {}
        for cycle in range(4):
            for state in ('active', 'unconfigured'):
                if state == 'active' and cycle:
                    rig.start()
                if state == 'unconfigured':
                    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
                    assert rig.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
                assert wait_for(lambda: not graph_differences(rig), 10), \
                    (cycle, state, 'the DDS graph never showed what rclpy holds',
                     graph_differences(rig))
                census = entity_census(rig)
                first.setdefault(state, census)
                assert wait_for(lambda: not census_differences(entity_census(rig),
                                                               first[state]), 10), \
                    (cycle, state, census_differences(entity_census(rig), first[state]))
        active, cleaned = first['active'], first['unconfigured']
        assert active['intake subscriptions'] == 2 and cleaned['intake subscriptions'] == 0
        # The census sees what configure makes: the cameras' output publishers.
        assert active['node publishers'] > cleaned['node publishers'], (active, cleaned)
    finally:
        rig.close()


def test_failed_activate_keeps_the_model(ros, tiny_model_dir, photos, monkeypatch, ledger):
    """A failed activate logs why, stays inactive with the model loaded, and can retry."""
    rig = reliability_node(ros, tiny_model_dir, configure=False)
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
