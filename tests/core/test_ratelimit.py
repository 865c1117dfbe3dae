"""Token buckets: a full period's burst, then one token every per/rate seconds."""

from __future__ import annotations

import gc
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.ratelimit import ZONE_SIZE, RateLimiter, TokenBucket


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


# -- the zone: O(1) admission, bounded memory (issue 11, item 5) -------------------------------


def _best_cost_per_admission(limiter: RateLimiter, prefix: str, *, ops: int = 2000, repeats: int = 7) -> float:
    """Seconds per admission of a never-seen key, the best of ``repeats`` runs of ``ops``.

    Best-of, with the garbage collector off, so a busy machine only makes some runs slow.
    Stops repeating after 2 s: a limiter that pays per key is measured once, not seven times.
    """
    best = float("inf")
    spent = 0.0
    gc.disable()
    try:
        for run in range(repeats):
            keys = [f"{prefix}-{run}-{i}" for i in range(ops)]
            started = time.perf_counter()
            for key in keys:
                limiter.take(key, 0.0)
            elapsed = time.perf_counter() - started
            best = min(best, elapsed / ops)
            spent += elapsed
            if spent > 2.0:
                break
    finally:
        gc.enable()
    return best


def test_admitting_a_new_key_costs_the_same_with_0_10_000_or_100_000_keys_tracked() -> None:
    # The prod connection_rate; every key admitted at the same instant, so none refills
    # (nothing can be forgotten for free: the worst case for a limiter that rescans).
    empty = _best_cost_per_admission(RateLimiter(120, 60.0), "a")
    for tracked in (10_000, 100_000):
        limiter = RateLimiter(120, 60.0)
        for i in range(tracked):
            limiter.take(f"existing-{i}", 0.0)
        cost = _best_cost_per_admission(limiter, "b")
        assert cost < 3 * empty, (tracked, cost, empty)
        assert len(limiter) <= ZONE_SIZE


@settings(max_examples=300, deadline=None)
@given(
    max_keys=st.integers(1, 6),
    plan=st.lists(st.tuples(st.integers(0, 12), st.floats(0, 2, allow_nan=False)), max_size=80),
)
def test_the_zone_never_holds_more_buckets_than_its_size(max_keys: int, plan: list[tuple[int, float]]) -> None:
    limiter = RateLimiter(3, 1.0, max_keys=max_keys)
    now = 0.0
    for key, step in plan:
        now += step
        assert limiter.take(f"k{key}", now) >= 0.0
        assert len(limiter) <= max_keys
        assert f"k{key}" in limiter._buckets  # the key just admitted is the most recent: never evicted


@settings(max_examples=200, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 4), st.floats(0, 1, allow_nan=False), st.sampled_from([1.0, 2.0, 5.0])),
        max_size=80,
    )
)
def test_with_room_for_every_key_the_zone_answers_exactly_as_one_bucket_per_key(plan) -> None:
    """Forgetting refilled buckets changes nothing: a full bucket is the same as a new one."""
    limiter = RateLimiter(3, 1.0, max_keys=5)
    reference: dict[int, TokenBucket] = {}
    now = 0.0
    for key, step, amount in plan:
        now += step
        bucket = reference.setdefault(key, full_bucket(3, 1.0, now))
        assert limiter.take(f"k{key}", now, amount) == pytest.approx(bucket.take(now, amount))


def test_a_full_zone_evicts_the_least_recently_used_bucket() -> None:
    limiter = RateLimiter(2, 60, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.take(key, 0.0)
    limiter.take("a", 0.0)  # a is now the most recent, and has spent its burst
    limiter.take("d", 0.0)  # the zone is full and nothing has refilled: b goes
    assert list(limiter._buckets) == ["c", "a", "d"]
    assert limiter.take("a", 0.0) > 0.0  # a kept its state


def test_an_evicted_bucket_starts_again_full_the_documented_approximation() -> None:
    limiter = RateLimiter(2, 60, max_keys=1)
    assert [limiter.take("a", 0.0) for _ in range(3)][2] > 0.0
    limiter.take("b", 0.0)  # pushes a out before it refilled
    assert limiter.take("a", 0.0) == 0.0  # one burst more than the rate: what ZONE_SIZE bounds


def test_a_zone_smaller_than_one_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(1, 1, max_keys=0)
