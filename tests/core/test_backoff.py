"""reconnect_delay: the server's retry: is the base, but every delay is floored and capped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.core.backoff import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, JITTER, reconnect_delay


def test_retry_0_is_raised_to_min_backoff_and_doubles_from_there() -> None:
    assert [reconnect_delay(n, 0.0, 30.0, 0.0) for n in range(10)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0]
    )
    assert reconnect_delay(0, 0.0, 30.0, 0.0, min_backoff=1.0) == 1.0


def test_a_retry_above_max_backoff_is_capped_at_max_backoff() -> None:
    huge = 86_400_000_000 / 1000  # retry: 86400000000 (ms), what the issue saw waited in full
    assert reconnect_delay(0, huge, 30.0, 0.0) == 30.0
    assert reconnect_delay(5, huge, 30.0, 0.999) <= 30.0
    assert reconnect_delay(10**6, 10.0**300, 30.0, 0.5) <= 30.0  # no overflow for absurd inputs


def test_retry_after_is_honoured_up_to_max_backoff() -> None:
    assert reconnect_delay(0, 1.0, 30.0, 0.0, retry_after=7.0) == 7.0
    assert reconnect_delay(0, 1.0, 30.0, 0.0, retry_after=86_400.0) == 30.0


def test_the_cap_wins_over_a_floor_above_it() -> None:
    assert reconnect_delay(0, 0.0, 0.05, 0.0, min_backoff=1.0) == 0.05


def test_defaults_are_documented_values() -> None:
    assert (DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF, JITTER) == (0.1, 30.0, 0.25)


@given(
    failures=st.integers(0, 200),
    retry=st.floats(0, 1e12),
    max_backoff=st.floats(0.01, 3600),
    min_backoff=st.floats(0, 10),
    rand=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 1e9),
)
def test_every_delay_is_between_the_floor_and_the_cap_and_jitter_stays_within_a_quarter(
    failures: int, retry: float, max_backoff: float, min_backoff: float, rand: float, retry_after: float | None
) -> None:
    delay = reconnect_delay(failures, retry, max_backoff, rand, min_backoff=min_backoff, retry_after=retry_after)
    wanted = min(max(retry, min_backoff), max_backoff)  # the server's retry:, floored and capped
    assert wanted <= delay <= max_backoff
    assert delay >= min(min_backoff, max_backoff)
    if retry_after is not None:
        assert delay >= min(retry_after, max_backoff)
        return
    base = min(max_backoff, wanted * 2.0**failures)
    if base * (1 + JITTER) <= max_backoff:  # below the cap: jitter only lengthens, by up to 25 %
        assert base <= delay <= base * (1 + JITTER) + 1e-9
    else:  # near the cap: within the top quarter below it (or the server's retry:, if higher)
        assert max(wanted, max_backoff * (1 - JITTER)) - 1e-9 <= delay


def test_clients_at_the_cap_still_spread_over_its_top_quarter() -> None:
    delays = [reconnect_delay(20, 1.0, 30.0, i / 100) for i in range(100)]
    assert min(delays) >= 22.5 and max(delays) <= 30.0
    assert max(delays) - min(delays) > 7.0  # not all at 30 s: they do not come back together
