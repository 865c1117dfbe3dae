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

    def take(self, now: float, amount: float = 1.0) -> float:
        """Take ``amount`` tokens. Returns 0.0 on success, else the seconds until they are available.

        An amount larger than the bucket holds is allowed from a full bucket (it then
        owes the rest), so a large batch is slowed down, never refused forever.
        """
        refill = self.rate / self.per
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * refill)
        self.stamp = now
        needed = min(amount, self.rate)
        if self.tokens >= needed:
            self.tokens -= amount
            return 0.0
        return (needed - self.tokens) / refill


class RateLimiter:
    """One bucket per key; buckets that have refilled completely are forgotten."""

    __slots__ = ("_buckets", "_per", "_rate")

    def __init__(self, rate: float, per: float) -> None:
        self._rate = rate
        self._per = per
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, amount: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._per, float(self._rate), now)
        return bucket.take(now, amount)

    def _forget_full(self, now: float) -> None:
        refill = self._rate / self._per
        self._buckets = {key: b for key, b in self._buckets.items() if b.tokens + (now - b.stamp) * refill < self._rate}
