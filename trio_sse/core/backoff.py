"""How long a client waits before it reconnects (sans-IO: numbers in, seconds out).

The server's ``retry:`` is the base, consecutive failed attempts double it, and the
result is always between a floor (``min_backoff``) and a cap (``max_backoff``),
whatever the server sends: ``retry: 0`` against a dead server must not become a
busy loop of connection attempts, and ``retry: 86400000000`` must not park a client
for three years. Jitter spreads clients that were dropped together (a server
restart) so that they do not all come back in the same instant.

This module must never sleep or read a clock; the client does the waiting.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BACKOFF", "DEFAULT_MIN_BACKOFF", "JITTER", "reconnect_delay"]

DEFAULT_MIN_BACKOFF = 0.1
"""Seconds. Against a dead server the doubling takes over after a few attempts, so the
floor only matters for a server that answers and closes each stream at once (a
``retry: 0`` long-poll style, or a crash loop behind a proxy): 0.1 s holds one client
to 10 connections a second there while adding at most a tenth of a second, which
nobody notices, to a server that really wants an immediate reconnect."""

DEFAULT_MAX_BACKOFF = 30.0
"""Seconds: the longest a client waits between attempts, also when the server asks for more."""

JITTER = 0.25
"""A delay is stretched by a random 0 to 25 %; at the cap it is shortened by up to 25 % instead."""


def reconnect_delay(
    failures: int,
    retry: float,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    rand: float = 0.0,
    *,
    min_backoff: float = DEFAULT_MIN_BACKOFF,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before the next connection attempt.

    ``failures`` is the number of failed attempts in a row (0 after a stream that
    delivered something), ``retry`` the server's ``retry:`` in seconds, ``rand`` a
    uniform random number in [0, 1) (the caller's RNG, so tests can fix it),
    ``retry_after`` a ``Retry-After`` header's seconds if the last answer had one.

    The base is ``retry`` raised to ``min_backoff``, doubled per failure: after a
    stream that worked the client waits what the server asked for (but at least
    ``min_backoff``), then 2, 4, 8... times that. Jitter lengthens it by up to
    ``JITTER``, so below the cap a delay is never shorter than the server's ``retry``.
    Once the doubled delay would pass ``max_backoff`` the jitter folds back below the
    cap (a delay between 0.75 and 1 times ``max_backoff``), so clients that all
    reached the cap still spread out. ``Retry-After`` makes the delay at least that
    long. Nothing goes past ``max_backoff``: it is the caller's bound, and a server's
    ``retry:`` or ``Retry-After`` beyond it is capped. If ``min_backoff`` is above
    ``max_backoff``, the cap wins.
    """
    cap = max(max_backoff, 0.0)
    floor = min(max(min_backoff, 0.0), cap)
    wanted = min(max(retry, floor), cap)  # the server's retry:, floored and capped
    # 2.0 ** 1024 would raise OverflowError; a product past the float range is inf, which min() caps.
    base = min(cap, wanted * 2.0 ** min(max(failures, 0), 1000))
    delay = base * (1.0 + JITTER * rand)
    if delay > cap:
        delay = 2.0 * cap - delay  # fold the overshoot back below the cap: within [0.75, 1] x cap
    delay = max(delay, wanted)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
