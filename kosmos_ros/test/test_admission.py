# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The frame-admission rule, stamps and topic names: plain functions, no DDS, no model."""

from types import SimpleNamespace

import pytest

from kosmos_ros.admission import (admit, camera_namespace, compressed_topic, image_topic,
                                  rate_allows, stamp_nanoseconds, stamp_seconds)

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model


def _header(sec, nanosec, frame_id='cam'):
    return SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id=frame_id)


def test_stamps_of_messages_and_headers():
    msg = SimpleNamespace(header=_header(12, 500_000_000))
    assert stamp_seconds(msg) == stamp_seconds(msg.header) == 12.5
    assert stamp_nanoseconds(msg) == stamp_nanoseconds(msg.header) == 12_500_000_000
    assert stamp_seconds(SimpleNamespace()) == 0.0 and stamp_nanoseconds(None) == 0


def test_rate_allows_in_message_time():
    assert not rate_allows(10.0, None, 0.0)  # no rate: nothing is due
    assert rate_allows(10.0, None, 2.0)  # the first frame
    assert not rate_allows(10.3, 10.0, 2.0) and rate_allows(10.5, 10.0, 2.0)
    assert rate_allows(3.0, 10.0, 2.0)  # time went backwards (a looping bag)


def test_admit_refuses_an_encoding_before_the_throttle():
    refused = admit('32FC1', 10.0, 99.0, last_grounded=10.0, rate_hz=1.0)
    assert not refused.admitted and not refused.throttled
    assert refused.refused == "unsupported image encoding '32FC1'"
    assert refused.detail.startswith("refusing images of unsupported encoding '32FC1' "
                                     '(supported: ')
    assert admit('rgb8', 10.0, 99.0).admitted
    assert admit(None, 10.0, 99.0).admitted  # a CompressedImage: its format is checked later


@pytest.mark.parametrize('stamp, expected', [(10.0, 10.0), (0.0, 99.0)])
def test_admit_takes_the_clock_for_an_unstamped_frame(stamp, expected):
    assert admit('bgr8', stamp, 99.0).stamp == expected


def test_admit_throttles_by_rate():
    assert admit('rgb8', 10.2, 0.0, last_grounded=10.0, rate_hz=2.0).throttled
    assert admit('rgb8', 10.5, 0.0, last_grounded=10.0, rate_hz=2.0).admitted
    assert admit('rgb8', 10.2, 0.0, last_grounded=10.0).admitted  # no rate: every frame


def test_topic_helpers():
    assert compressed_topic('/cam/image_raw') == '/cam/image_raw/compressed'
    assert image_topic('/cam/image_raw/compressed') == '/cam/image_raw'
    assert image_topic('/cam/compressed', compressed=False) == '/cam/compressed'
    assert camera_namespace('/cam/image_raw') == '/cam'
    assert camera_namespace('/cam/color/image_raw/compressed', compressed=True) == '/cam/color'
    assert camera_namespace('/image_raw') == ''
