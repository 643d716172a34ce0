# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The worker's scheduling, request accounting and debug images: plain functions, no DDS."""

import threading
import time

import pytest

from kosmos_ros.node.scheduling import (budget_group, camera_places, choose_batch,
                                        PendingRequests)

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model


def test_budget_groups():
    assert [budget_group(b, 64) for b in (1, 64, 65, 128, 129, 256, 1024)] == \
        [0, 0, 1, 1, 2, 2, 4]


def test_short_queries_go_first_and_never_beside_a_long_one():
    # Queue: a long query arrived first, then three within the usual budget.
    assert choose_batch([1500, 8, 64, 32], [0, 0, 0, 0], count=8, normal=64) == [1, 2, 3]
    assert choose_batch([1500, 8, 64, 32], [0, 0, 0, 0], count=2, normal=64) == [1, 2]


def test_long_queries_batch_with_their_own_rank():
    assert choose_batch([1500, 1200, 200], [0, 0, 0], count=8, normal=64) == [2]
    assert choose_batch([1500, 1200], [1, 1], count=8, normal=64) == [0, 1]
    assert choose_batch([200, 1500, 180], [0, 0, 0], count=8, normal=64) == [0, 2]


def test_a_query_passed_over_enough_times_leads():
    assert choose_batch([1500, 8, 8], [4, 0, 0], count=8, normal=64, patience=4) == [0]
    assert choose_batch([1500, 8, 8], [3, 0, 0], count=8, normal=64, patience=4) == [1, 2]


def test_cameras_and_queries_share_a_batch():
    assert camera_places(due=3, queued=0, size=8, camera_went_last=False) == 3
    assert camera_places(due=9, queued=0, size=8, camera_went_last=False) == 8
    assert camera_places(due=9, queued=2, size=8, camera_went_last=False) == 7  # one left
    assert camera_places(due=2, queued=5, size=1, camera_went_last=False) == 1  # they alternate
    assert camera_places(due=2, queued=5, size=1, camera_went_last=True) == 0
    assert camera_places(due=0, queued=5, size=8, camera_went_last=False) == 0


def test_nothing_to_choose():
    assert choose_batch([], [], count=4, normal=64) == []
    assert choose_batch([8], [0], count=0, normal=64) == []


def test_pending_requests_limits():
    pending = PendingRequests()
    mib = 2 ** 20
    assert pending.admit(mib, max_count=2, max_bytes=3 * mib) is None
    assert pending.admit(mib, max_count=2, max_bytes=3 * mib) is None
    assert 'busy: 2 requests are pending (max_pending_queries 2)' in pending.admit(
        0, max_count=2, max_bytes=3 * mib)
    pending.release(mib)
    assert 'max_pending_image_mb 3' in pending.admit(3 * mib, max_count=5, max_bytes=3 * mib)
    assert 'larger than max_pending_image_mb' in pending.admit(4 * mib, 5, 3 * mib)
    pending.release(mib)
    assert (pending.count, pending.bytes) == (0, 0)


def test_pending_requests_are_thread_safe():
    pending = PendingRequests()

    def churn():
        for _ in range(2000):
            if pending.admit(10, max_count=10**9, max_bytes=10**12) is None:
                pending.release(10)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (pending.count, pending.bytes) == (0, 0)


def test_debug_images_never_block_the_caller_and_the_newest_wins():
    """A slow debug-image subscriber delays only the debug images, never the offer."""
    import numpy as np

    from kosmos_ros.datatypes import GroundingResult, Task
    from kosmos_ros.images import frame_from_array
    from kosmos_ros.node.debug import DebugImages

    release, published, errors = threading.Event(), [], []

    def slow_publish(msg):
        release.wait(10)  # DDS blocked by a slow reliable subscriber
        published.append(msg)

    images = DebugImages(lambda rgb, header: (header, rgb.shape), lambda c, e: errors.append(e))
    frame = frame_from_array(np.zeros((48, 64, 3), np.uint8))
    result = GroundingResult(Task.CAPTION, '', 'An image of', (), (64, 48), '', 0)
    for i in range(50):
        images.offer('front', slow_publish, frame, result, f'header{i}')
    # All 50 offers returned while the publisher was still blocked (nothing published until
    # the release): told by the order of events, not by how long the offers took.
    assert not published
    release.set()
    assert wait_until(lambda: published and published[-1][0] == 'header49')
    images.close()
    assert len(published) <= 3 and images.dropped >= 47
    assert not errors


def test_debug_image_errors_are_reported_not_raised():
    import numpy as np

    from kosmos_ros.datatypes import GroundingResult, Task
    from kosmos_ros.images import frame_from_array
    from kosmos_ros.node.debug import DebugImages

    errors = []

    def broken(msg):
        raise RuntimeError('publisher destroyed')

    images = DebugImages(lambda rgb, header: rgb, lambda c, e: errors.append((c, e)))
    frame = frame_from_array(np.zeros((8, 8, 3), np.uint8))
    result = GroundingResult(Task.CAPTION, '', '', (), (8, 8), '', 0)
    images.offer('rear', broken, frame, result, None)
    assert wait_until(lambda: errors)
    images.offer('rear', lambda msg: errors.append(('ok', msg)), frame, result, None)
    assert wait_until(lambda: len(errors) == 2)  # the thread survived the error
    images.close()
    assert errors[0][0] == 'rear' and 'destroyed' in str(errors[0][1])


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()
