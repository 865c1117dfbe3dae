"""Token buckets for per-client connection and publish rates (sans-IO: the caller passes the time).

The buckets of a :class:`RateLimiter` live in a fixed-size zone, like nginx's
``limit_req_zone``: every admission is O(1) whatever the number of keys, and the memory
is bounded. The zone is kept in least-recently-used order; a new key first forgets the
least recently used buckets that have refilled completely (a full bucket is the same as
no bucket), and when the zone is still full it evicts the least recently used bucket
even if it has not refilled. That eviction is the one approximation: the key evicted
starts again from a full bucket, so a client whose bucket was pushed out by
:data:`ZONE_SIZE` other keys used after it may get up to one burst more than its rate.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

__all__ = ["ZONE_SIZE", "RateLimiter", "TokenBucket"]

#: Buckets one limiter keeps at most. A bucket costs ~290 bytes (its key included,
#: measured), so a full zone is ~29 MB: ten times prod's ``connection_limit`` of clients
#: can be rate limited exactly at once, and an attacker cycling more keys than this only
#: makes the least recently used ones start over (see the module docstring).
ZONE_SIZE = 100_000


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

    def full_at(self, now: float) -> bool:
        """Whether the bucket has refilled completely by ``now`` (then it can be forgotten)."""
        return self.tokens + (now - self.stamp) * (self.rate / self.per) >= self.rate


class RateLimiter:
    """One bucket per key, at most ``max_keys`` of them, least recently used out first.

    Admission is O(1) amortised: a lookup and a move to the most recent end, and for a
    new key, pops from the least recent end (each bucket is popped at most once).
    """

    __slots__ = ("_buckets", "_max_keys", "_per", "_rate")

    def __init__(self, rate: float, per: float, *, max_keys: int = ZONE_SIZE) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self._rate = rate
        self._per = per
        self._max_keys = max_keys
        # OrderedDict, not dict: popping the first item of a plain dict over and over
        # is O(n) per pop (iteration skips the deleted slots), OrderedDict's is O(1).
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float, amount: float = 1.0) -> float:
        """Charge ``amount`` to ``key``'s bucket: 0.0 when allowed, else the seconds to wait."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = buckets[key] = TokenBucket(self._rate, self._per, float(self._rate), now)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, amount)

    def _make_room(self, now: float) -> None:
        """Forget refilled buckets from the least recent end, then evict one if the zone is still full."""
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if len(buckets) < self._max_keys and not oldest.full_at(now):
                return
            buckets.popitem(last=False)
