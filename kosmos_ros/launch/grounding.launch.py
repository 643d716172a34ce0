# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Start the kosmos_grounding node: ros2 launch kosmos_ros grounding.launch.py.

Parameters come from the params file (default: the installed config/grounding.yaml). The
arguments model, device, dtype, quantization, rate_hz, use_sim_time and autostart override
the file only when given on the command line (``rate_hz:=0.5``); left out, the file's value
(or the node's default) stands. image_topic remaps the default camera's topic; namespace and
log_level are the usual options.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import (LaunchConfiguration, NotEqualsSubstitution,
                                  PathJoinSubstitution)
from launch_ros.actions import Node, SetParameter, SetParametersFromFile
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('namespace', '', 'Namespace of the node and its topics.'),
    ('params_file', PathJoinSubstitution([FindPackageShare('kosmos_ros'), 'config',
                                          'grounding.yaml']),
     'YAML file with the node parameters.'),
    ('image_topic', 'camera/image_raw',
     'Image topic of the default camera "camera" (its compressed transport adds /compressed).'),
    ('log_level', 'info', 'Logging level of the node.'),
)
# Node parameters a launch argument may set; empty (the default) leaves the params file's value.
OVERRIDES = (
    ('model', 'Hugging Face hub id or local model folder.'),
    ('device', 'auto, cpu, cuda or cuda:N.'),
    ('dtype', 'auto, float32, float16 or bfloat16.'),
    ('quantization', 'none, 8bit or 4bit (bitsandbytes, CUDA), int8 (torchao, CUDA or CPU) or '
                     'int4 (torchao, CUDA).'),
    ('rate_hz', 'Continuous grounding per camera per second of message time; 0: off.'),
    ('use_sim_time', 'Use /clock (bag replay): true or false.'),
    ('autostart', 'Configure and activate without a lifecycle manager: true or false.'),
)
NOT_GIVEN = ''


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=description)
            for name, default, description in ARGUMENTS]
    args += [DeclareLaunchArgument(name, default_value=NOT_GIVEN, description=(
        f'{description} Overrides the params file when given; by default the file decides.'))
        for name, description in OVERRIDES]
    config = {name: LaunchConfiguration(name) for name in
              [a[0] for a in ARGUMENTS] + [o[0] for o in OVERRIDES]}
    # Parameters in order, later ones winning: the file, then each argument that was given.
    parameters = [SetParametersFromFile(config['params_file'])] + [
        SetParameter(name, config[name], condition=IfCondition(
            NotEqualsSubstitution(config[name], NOT_GIVEN)))
        for name, _ in OVERRIDES]
    node = Node(
        package='kosmos_ros',
        executable='grounding_node',
        name='kosmos_grounding',
        namespace=config['namespace'],
        output='screen',
        emulate_tty=True,
        remappings=[
            ('camera/image_raw', config['image_topic']),
            ('camera/image_raw/compressed', [config['image_topic'], '/compressed']),
        ],
        arguments=['--ros-args', '--log-level', config['log_level']],
    )
    return LaunchDescription(args + [GroupAction(parameters + [node], scoped=True)])
