"""Memory pressure: when the process's resident memory is above ``memory_limit``.

The hub samples RSS once per :data:`SAMPLE_INTERVAL` through a reader it is given (a
plain callable, so tests drive it with a fake and ``autojump_clock``). While the last
sample is above the limit, new streams are refused and, at every sample, a share of
the live streams is shed, fullest queues first. Nothing here awaits or touches HTTP:
the hub calls :meth:`MemoryGuard.sample` and acts on what it answers.

The shedding rule (documented in ``docs/security.md``): memory is assumed to grow with
the number of streams, so each sample over the limit sheds the same share of the live
streams as the share of RSS that is over the limit — ``ceil(live * (rss - limit) / rss)``,
at least one — and the next sample, a second later, measures again. A stream with a
full queue holds the most (its queued events and write buffers) and is the furthest
behind, so it loses least by reconnecting and catching up from history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import attrs

__all__ = ["SAMPLE_INTERVAL", "MemoryGuard", "fullest_first", "shed_count"]

#: Seconds between two RSS samples: often enough to act before the OOM killer does,
#: rarely enough that reading ``/proc`` costs nothing.
SAMPLE_INTERVAL = 1.0


class _Queued(Protocol):
    @property
    def pending(self) -> int: ...


Q = TypeVar("Q", bound=_Queued)


def shed_count(live: int, rss: int, limit: int) -> int:
    """How many of ``live`` streams to shed for one sample of ``rss`` against ``limit``.

    0 at or below the limit (the limit itself is allowed); above it, the share of the
    streams equal to the share of memory over the limit, at least one, at most all.
    """
    if limit <= 0 or rss <= limit or live <= 0:
        return 0
    return min(live, max(1, math.ceil(live * (rss - limit) / rss)))


def fullest_first(connections: Iterable[Q], count: int) -> list[Q]:
    """The ``count`` connections with the most queued events; ties keep their given order."""
    if count <= 0:
        return []
    return sorted(connections, key=lambda c: -c.pending)[:count]


@attrs.define
class MemoryGuard:
    """The last RSS sample and whether it was over ``limit`` (0 = the guard is off)."""

    limit: int
    read_rss: Callable[[], int]
    rss: int = 0
    over: bool = False

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def sample(self) -> bool:
        """Read RSS once; True when the state changed (went over, or came back under)."""
        self.rss = int(self.read_rss())
        over = self.enabled and self.rss > self.limit
        changed = over != self.over
        self.over = over
        return changed

    def to_shed(self, connections: Sequence[Q]) -> list[Q]:
        """The connections to shed after the last sample (none while under the limit)."""
        return fullest_first(connections, shed_count(len(connections), self.rss, self.limit))
