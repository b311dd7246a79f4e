"""Token buckets per key (overlaynet.ratelimit): pure, time passed in."""

from __future__ import annotations

import pytest

from overlaynet.ratelimit import TokenBuckets

pytestmark = pytest.mark.unit


def test_burst_then_rate_per_key() -> None:
    buckets = TokenBuckets(rate=10, burst=20)
    assert sum(buckets.allow("a", 0.0) for _ in range(100)) == 20  # the burst, then nothing
    assert buckets.allow("b", 0.0)  # another key has its own bucket
    assert sum(buckets.allow("a", 1.0) for _ in range(100)) == 10  # one second refills `rate`
    assert sum(buckets.allow("a", 100.0) for _ in range(100)) == 20  # never more than the burst


def test_the_table_stays_bounded_and_keeps_busy_keys() -> None:
    buckets = TokenBuckets(rate=1, burst=2, max_keys=64)
    for _ in range(2):
        buckets.allow("busy", 0.0)
    for i in range(10_000):  # a flood of distinct (spoofed) sources
        buckets.allow(i, 0.0)
        buckets.allow("busy", 0.0)  # stays recently used: never forgotten, never refilled
        assert len(buckets) <= 64
    assert not buckets.allow("busy", 0.0)
