"""Token buckets for per-client connection and publish rates (sans-IO: the caller passes the time)."""

from __future__ import annotations

import attrs

__all__ = ["RateLimiter", "TokenBucket"]


@attrs.define(slots=True)
class TokenBucket:
    """``rate`` tokens per ``per`` seconds, holding at most ``rate`` (a full period's burst)."""

    rate: float
    per: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take one token. Returns 0.0 on success, else the seconds until one is available."""
        refill = self.rate / self.per
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * refill)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / refill


class RateLimiter:
    """One bucket per key; buckets that have refilled completely are forgotten."""

    __slots__ = ("_buckets", "_per", "_rate")

    def __init__(self, rate: float, per: float) -> None:
        self._rate = rate
        self._per = per
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._per, float(self._rate), now)
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        refill = self._rate / self._per
        self._buckets = {key: b for key, b in self._buckets.items() if b.tokens + (now - b.stamp) * refill < self._rate}
