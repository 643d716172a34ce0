# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Install rules for the kosmos_ros ament_python package."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'kosmos_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
        ('share/' + PACKAGE + '/test_data/kosmos2_tokenizer',
         glob('test/data/kosmos2_tokenizer/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='kosmos_ros maintainers',
    maintainer_email='maintainers@kosmos-ros.dev',
    description='ROS 2 grounding node for Microsoft KOSMOS-2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'grounding_node = kosmos_ros.node.main:main',
            'build_tiny_model = kosmos_ros.testing.tiny_model:main',
            'make_sample_bag = kosmos_ros.bag.sample:main',
            'ground_bag = kosmos_ros.early_signals:ground_bag',
            'play_bag = kosmos_ros.bag.player:main',
            'kosmos_corpus = kosmos_ros.early_signals:kosmos_corpus',
            'kosmos_eval = kosmos_ros.early_signals:kosmos_eval',
        ],
    },
)
