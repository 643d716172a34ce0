# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Start the kosmos_grounding node: ros2 launch kosmos_ros grounding.launch.py.

Arguments select the model and device, the camera topic of the default single-camera set-up,
the rate of continuous grounding and the usual namespace, sim-time and log-level options; every
other parameter comes from the params file (default: the installed config/grounding.yaml).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('namespace', '', 'Namespace of the node and its topics.'),
    ('params_file', PathJoinSubstitution([FindPackageShare('kosmos_ros'), 'config',
                                          'grounding.yaml']),
     'YAML file with the node parameters.'),
    ('image_topic', 'camera/image_raw',
     'Image topic of the default camera "camera" (its compressed transport adds /compressed).'),
    ('model', 'microsoft/kosmos-2-patch14-224', 'Hugging Face hub id or local model folder.'),
    ('device', 'auto', 'auto, cpu, cuda or cuda:N.'),
    ('dtype', 'auto', 'auto, float32, float16 or bfloat16.'),
    ('quantization', 'none', 'none, 8bit or 4bit (bitsandbytes, CUDA only).'),
    ('rate_hz', '1.0', 'Continuous grounding per camera per second of message time; 0: off.'),
    ('use_sim_time', 'false', 'Use /clock (bag replay).'),
    ('autostart', 'true', 'Configure and activate without a lifecycle manager.'),
    ('log_level', 'info', 'Logging level of the node.'),
)


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=description)
            for name, default, description in ARGUMENTS]
    config = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    node = Node(
        package='kosmos_ros',
        executable='grounding_node',
        name='kosmos_grounding',
        namespace=config['namespace'],
        output='screen',
        emulate_tty=True,
        parameters=[
            config['params_file'],
            {
                'model': config['model'],
                'device': config['device'],
                'dtype': config['dtype'],
                'quantization': config['quantization'],
                'rate_hz': ParameterValue(config['rate_hz'], value_type=float),
                'use_sim_time': ParameterValue(config['use_sim_time'], value_type=bool),
                'autostart': ParameterValue(config['autostart'], value_type=bool),
            },
        ],
        remappings=[
            ('camera/image_raw', config['image_topic']),
            ('camera/image_raw/compressed', [config['image_topic'], '/compressed']),
        ],
        arguments=['--ros-args', '--log-level', config['log_level']],
    )
    return LaunchDescription(args + [node])
