# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Every ROS name the docs tell a user to type exists on a running node, as written.

An outside reader typed ``ros2 topic echo /kosmos_grounding/camera/tracks`` from README; the
topic is ``/camera/tracks`` (camera topics live in the node's namespace, not under its name).
This reads README.md and docs/*.md: the names in ``ros2 topic|service|action`` commands and in
client code, and the ``NAME/...`` outputs of the topic tables, and finds each among the topics,
services and actions of a node started with the documented defaults (camera ``camera``, with
depth so that the 3D outputs exist), in a namespace of its own.
"""

from pathlib import Path
import re

from rclpy.action import get_action_server_names_and_types_by_node

from node_harness import NodeHarness  # noqa: I100

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r'ros2 (?:topic (?:echo|hz|info|bw)|service call|action (?:send_goal|info))'
                     r'(?: --\S+)* (/[A-Za-z0-9_/~]+)')
CODE = re.compile(r"(?:create_client|create_subscription|ActionClient)\([^'\n]*'(/[^']+)'")
TABLE_OUT = re.compile(r'^\| `(NAME/[A-Za-z0-9_]+)` \| [^|]+ \| out \|', re.M)
GLOBAL = ('/diagnostics', '/rosout', '/parameter_events', '/clock', '/tf', '/tf_static')


def documented_names():
    """Return {name: where} of every ROS name the docs give to type or use."""
    names = {}
    for doc in [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('**/*.md'))]:
        text = doc.read_text(encoding='utf-8')
        for pattern in (COMMAND, CODE):
            for match in pattern.finditer(text):
                names.setdefault(match.group(1), doc.name)
        for match in TABLE_OUT.finditer(text):
            names.setdefault('/' + match.group(1).replace('NAME', 'camera', 1), doc.name)
    return names


def test_the_docs_name_topics_services_and_actions_that_exist(ros, tiny_model_dir):
    names = documented_names()
    assert '/kosmos_grounding/ground' in names and '/camera/tracks' in names, names
    h = NodeHarness(ros, tiny_model_dir, cameras=('camera',), depth=('camera',))
    try:
        node = h.node
        ns, name = node.get_namespace(), node.get_name()
        topics = {t for t, _ in node.get_publisher_names_and_types_by_node(name, ns)}
        topics |= {t for t, _ in node.get_subscriber_names_and_types_by_node(name, ns)}
        services = {s for s, _ in node.get_service_names_and_types_by_node(name, ns)}
        actions = {a for a, _ in get_action_server_names_and_types_by_node(node, name, ns)}
        missing = []
        for documented, where in sorted(names.items()):
            actual = documented if documented in GLOBAL else ns + documented
            if actual not in topics | services | actions:
                missing.append(f'{documented} ({where})')
        assert not missing, f'named in the docs, not on the node: {missing}'
    finally:
        h.close()
