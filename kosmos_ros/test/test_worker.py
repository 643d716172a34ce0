# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The worker's scheduling and request accounting, as plain functions (no DDS, no model)."""

import threading

from kosmos_ros.node.worker import budget_group, choose_batch, PendingRequests


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
