# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The min_score.yaml kosmos_eval writes is read by ROS as the node reads its params files.

The fragment goes through rcl's own params-file parser (``--ros-args --params-file``, what
``ros2 run`` and the launch file give the node), for a node named as the grounding node, and
the value it gives must be the calibrated score to the last bit and valid for the node's
``min_score`` parameter.
"""

from kosmos_ros.evaluation.calibration import params_fragment
from kosmos_ros.node.parameter_table import SPECS
from kosmos_ros.options import check_value


def test_the_node_reads_the_calibrated_min_score(tmp_path):
    import rclpy

    value = 0.12345678901234568  # 17 significant digits: every bit must come back
    calibration = {'target': {'precision': 0.9}, 'min_score': value,
                   'per_phrase': {'cup': 0.5, 'a "quoted"\nphrase': None}}
    path = tmp_path / 'min_score.yaml'
    path.write_text(params_fragment(calibration, str(tmp_path / 'labels.json'), 3, 'tiny'))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        nodes = [rclpy.create_node('kosmos_grounding', context=context, cli_args=args,
                                   automatically_declare_parameters_from_overrides=True)
                 for args in (['--ros-args', '--params-file', str(path)], [])]
        try:
            read = nodes[0].get_parameter('min_score').value
            names = [set(n.get_parameters_by_prefix('')) for n in nodes]
            assert names[0] - names[1] == {'min_score'}  # the file sets min_score alone
        finally:
            for node in nodes:
                node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert isinstance(read, float) and read == value
    assert check_value('min_score', SPECS['min_score'], read) is None
