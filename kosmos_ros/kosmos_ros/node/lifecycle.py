# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Lifecycle transitions that never block the node's services and never end its process.

rclpy runs a ``ChangeState`` request inside the service callback, in the node's default
(mutually exclusive) callback group, which also serves ``GetState`` and the parameter
services. Two things follow that a robot cannot live with:

- during a model load (seconds from disk, minutes when a hub is retried) nothing else the
  node offers answers, and with ``autostart`` the load ran before the executor spun at all;
- on rclpy 7.1 (Jazzy) a request for a transition that is not valid in the current state
  (``deactivate`` while unconfigured, as a lifecycle manager sends to shut down a node whose
  configure failed) raises ``RCLError: Transition is not registered`` out of the executor and
  ends the process.

:class:`TransitionRunner` replaces the ``ChangeState`` callback with a coroutine: it answers
``success: false`` for a transition that is not valid now (or while another one runs), and
otherwise runs the transition on a thread of its own and awaits it, so the executor keeps
serving. The lifecycle and parameter services move to a reentrant callback group, so
``GetState`` and parameter requests are answered during a transition. Autostart uses the same
thread. Transitions run one at a time.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from lifecycle_msgs.msg import Transition
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.task import Future

try:  # where rclpy keeps the exception type of the C extension
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
    RCLError, InvalidHandle = _rclpy.RCLError, _rclpy.InvalidHandle
except (ImportError, AttributeError):  # pragma: no cover - older layouts
    RCLError = InvalidHandle = RuntimeError

# The public trigger of each primary transition.
_TRIGGERS = {
    Transition.TRANSITION_CONFIGURE: 'trigger_configure',
    Transition.TRANSITION_CLEANUP: 'trigger_cleanup',
    Transition.TRANSITION_ACTIVATE: 'trigger_activate',
    Transition.TRANSITION_DEACTIVATE: 'trigger_deactivate',
    Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: 'trigger_shutdown',
    Transition.TRANSITION_INACTIVE_SHUTDOWN: 'trigger_shutdown',
    Transition.TRANSITION_ACTIVE_SHUTDOWN: 'trigger_shutdown',
}
_LIFECYCLE_SERVICES = ('change_state', 'get_state', 'get_available_states',
                       'get_available_transitions', 'get_transition_graph')


class TransitionRunner:
    """Runs a lifecycle node's transitions off the executor, one at a time."""

    def __init__(self, node: Any):
        self._node = node
        self._busy = threading.Lock()
        self._closing = False
        group = ReentrantCallbackGroup()
        for service in node.services:
            # Parameter and lifecycle services: answered while a transition runs.
            if service.srv_name.rsplit('/', 1)[-1] in _LIFECYCLE_SERVICES + (
                    'describe_parameters', 'get_parameter_types', 'get_parameters',
                    'list_parameters', 'set_parameters', 'set_parameters_atomically',
                    'get_type_description'):
                service.callback_group = group
                group.add_entity(service)
        change_state = getattr(node, '_service_change_state', None)
        if change_state is not None:
            change_state.callback = self._on_change_state

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def close(self) -> None:
        """Refuse transitions from now on (the process is stopping)."""
        self._closing = True

    def state(self) -> str:
        """Return the label of the lifecycle state now, transitional states included."""
        return self._node._state_machine.current_state[1]

    def valid(self) -> dict[int, str]:
        """Transitions valid in the current state: id -> label."""
        return {t[0]: t[1] for t in self._node._state_machine.available_transitions}

    def start(self, labels: list[str], on_failed: Callable[[str], None]) -> bool:
        """Run transitions by label in the background (autostart); False if one runs."""
        if not self._busy.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                for label in labels:
                    ids = {v: k for k, v in self.valid().items()}
                    if self._closing or label not in ids:
                        if not self._closing:
                            on_failed(label)
                        return
                    if self._trigger(ids[label]) != TransitionCallbackReturn.SUCCESS:
                        on_failed(label)
                        return
            finally:
                self._busy.release()
        threading.Thread(target=run, name='kosmos_lifecycle', daemon=True).start()
        return True

    def _trigger(self, transition_id: int) -> TransitionCallbackReturn:
        try:
            return getattr(self._node, _TRIGGERS[transition_id])()
        except RCLError as exc:  # the state changed under us, or the context ended
            if not self._closing:
                self._node.get_logger().error(f'lifecycle transition failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception:
            if self._closing:  # the node was destroyed while the transition ran (a load)
                return TransitionCallbackReturn.FAILURE
            raise

    async def _on_change_state(self, request: Any, response: Any) -> Any:
        node = self._node
        transition_id = int(request.transition.id)
        label = request.transition.label
        valid = self.valid()
        if label:
            matches = [k for k, v in valid.items() if v == label]
            transition_id = matches[0] if matches else -1
        state = self.state()
        if transition_id not in valid or transition_id not in _TRIGGERS or self._closing:
            what = repr(label) if label else f'id {request.transition.id}'
            allowed = ', '.join(sorted(set(valid.values()))) or 'none'
            node.get_logger().warning(f'refused lifecycle transition {what} in state '
                                      f'{state!r} (valid now: {allowed})')
            response.success = False
            return response
        if not self._busy.acquire(blocking=False):
            node.get_logger().warning(f'refused lifecycle transition {valid[transition_id]!r}: '
                                      f'another transition is running (state {state!r})')
            response.success = False
            return response
        future = Future(executor=node.executor)
        future.add_done_callback(lambda f: None)  # wakes the executor when set

        def run() -> None:
            result = TransitionCallbackReturn.FAILURE
            try:
                result = self._trigger(transition_id)
            finally:
                self._busy.release()
                future.set_result(result)
        threading.Thread(target=run, name='kosmos_lifecycle', daemon=True).start()
        response.success = await future == TransitionCallbackReturn.SUCCESS
        return response
