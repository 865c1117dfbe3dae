"""Token buckets: a full period's burst, then one token every per/rate seconds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.ratelimit import RateLimiter, TokenBucket


def full_bucket(rate: float, per: float, now: float = 0.0) -> TokenBucket:
    return TokenBucket(rate, per, float(rate), now)


def test_a_full_bucket_allows_a_burst_of_rate_then_refuses() -> None:
    bucket = full_bucket(5, 60)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(12.0)  # one token per 60/5 seconds


def test_refusal_says_how_long_until_the_next_token() -> None:
    bucket = full_bucket(2, 1)
    bucket.take(0.0)
    bucket.take(0.0)
    wait = bucket.take(0.1)
    assert wait == pytest.approx(0.4)
    assert bucket.take(0.1 + wait - 0.01) > 0.0
    assert bucket.take(0.1 + wait + 1e-9) == 0.0


def test_tokens_never_exceed_one_period_of_burst_after_a_long_idle() -> None:
    bucket = full_bucket(3, 1)
    for _ in range(3):
        bucket.take(0.0)
    results = [bucket.take(1000.0) for _ in range(4)]
    assert results[:3] == [0.0, 0.0, 0.0]
    assert results[3] > 0.0


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 20),
    per=st.sampled_from([0.5, 1.0, 60.0]),
    steps=st.lists(st.floats(0, 5, allow_nan=False), max_size=80),
)
def test_granted_tokens_in_any_window_stay_within_burst_plus_refill(rate: int, per: float, steps: list[float]) -> None:
    bucket = full_bucket(rate, per)
    now = 0.0
    granted: list[float] = []
    for step in steps:
        now += step
        wait = bucket.take(now)
        assert wait >= 0.0
        if wait == 0.0:
            granted.append(now)
        else:
            assert wait <= per / rate + 1e-9
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            window = granted[j] - start
            assert j - i + 1 <= rate + window * rate / per + 1e-6


def test_limiter_keeps_one_bucket_per_key() -> None:
    limiter = RateLimiter(2, 60)
    assert [limiter.take("a", 0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", 0.0) > 0.0
    assert limiter.take("b", 0.0) == 0.0


def test_limiter_refills_over_time() -> None:
    limiter = RateLimiter(1, 10)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 5.0) == pytest.approx(5.0)
    assert limiter.take("a", 10.0) == 0.0


def test_limiter_forgets_fully_refilled_buckets_once_it_tracks_many_keys() -> None:
    limiter = RateLimiter(1, 1)
    for i in range(10_001):
        limiter.take(f"k{i}", 0.0)
    limiter.take("busy", 4.8)
    limiter.take("late", 5.0)  # a new key over the threshold: buckets refilled by now are dropped
    assert set(limiter._buckets) == {"busy", "late"}
    assert limiter.take("busy", 5.0) == pytest.approx(0.8)  # a bucket still refilling keeps its state
