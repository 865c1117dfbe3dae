"""Memory pressure: when the process's resident memory is above ``memory_limit``.

The hub samples RSS once per :data:`SAMPLE_INTERVAL` through a reader it is given (a
plain callable, so tests drive it with a fake and ``autojump_clock``). While the last
sample is above the limit, new streams are refused and, at every sample, the history
is shrunk first and only then, if that was not enough, a share of the live streams is
shed, fullest queues first. Nothing here awaits or touches HTTP: the hub calls
:meth:`MemoryGuard.sample` and acts on what it answers.

The history rule (documented in ``docs/security.md``): history is the one thing the hub
can give back without ending a stream (a replay that needs an evicted event gets
``stream_reset`` ``history_gap``), and it is what a publisher of large events fills. So
each sample over the limit first cuts the history's byte bound to what it holds less
half of it or less the overshoot, whichever evicts more (:func:`history_keep`), and
streams are shed only for the part of the overshoot that the eviction did not cover —
all of it once the history holds :data:`HISTORY_FLOOR` or less. Freed memory is handed
back to the system (:func:`release_freed_memory`), else RSS would not fall. Once back
under the limit, the bound grows back by :data:`HISTORY_REGROW` of ``history_bytes`` per
sample: a multiplicative decrease and an additive increase (as TCP's congestion window),
so a load that does not fit settles below the limit instead of swinging over it.

The shedding rule (documented in ``docs/security.md``): memory is assumed to grow with
the number of streams, so each sample over the limit sheds the same share of the live
streams as the share of RSS that is over the limit — ``ceil(live * (rss - limit) / rss)``,
at least one — and the next sample, a second later, measures again. A stream with a
full queue holds the most (its queued events and write buffers) and is the furthest
behind, so it loses least by reconnecting and catching up from history.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import attrs

from ..core.history import History

__all__ = [
    "HISTORY_FLOOR",
    "HISTORY_REGROW",
    "SAMPLE_INTERVAL",
    "MemoryGuard",
    "fullest_first",
    "history_keep",
    "regrown_bound",
    "release_freed_memory",
    "shed_count",
]

#: Seconds between two RSS samples: often enough to act before the OOM killer does,
#: rarely enough that reading ``/proc`` costs nothing.
SAMPLE_INTERVAL = 1.0
#: A history holding this many bytes or fewer is "already small": pressure sheds streams
#: instead of shrinking it further. 1 MiB keeps a few seconds of ordinary events for the
#: shed streams to catch up from, and is nothing next to any ``memory_limit``.
HISTORY_FLOOR = 1024 * 1024
#: Share of ``history_bytes`` the history's bound grows back by per sample under the
#: limit: from nothing to the full bound in 16 samples (16 s).
HISTORY_REGROW = 1 / 16


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


def history_keep(held: int, rss: int, limit: int, floor: int = HISTORY_FLOOR) -> int | None:
    """The bytes of history to keep after one sample of ``rss`` over ``limit``, or ``None``.

    ``None`` when the history holds ``floor`` bytes or fewer (already small: shed streams
    instead). Otherwise what it holds less half of it or less the overshoot, whichever
    evicts more, and never below ``floor``.
    """
    if limit <= 0 or rss <= limit or held <= floor:
        return None
    return max(floor, min(held // 2, held - (rss - limit)))


def regrown_bound(current: int, configured: int) -> int:
    """The history's byte bound one sample under the limit after ``current``: a step back up to ``configured``."""
    return min(configured, current + max(1, int(configured * HISTORY_REGROW)))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # no C library by that name, or not glibc (musl, macOS)
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Hand the C allocator's free memory back to the system; False where that cannot be done.

    Why: glibc keeps freed blocks under its mmap threshold (128 KiB; an event of 64 KiB
    is two such blocks) for reuse, so evicting 190 MiB of history lowers RSS by nothing
    until ``malloc_trim`` returns the free pages (measured: 377 MiB stays 377 MiB, then
    188 MiB after the trim, which took 15 ms for 380 MiB). Elsewhere the allocator's
    own policy applies and the next sample measures what it did.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


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
    #: Below this the history is "already small" (see :func:`history_keep`).
    history_floor: int = HISTORY_FLOOR

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

    def shrink_history(self, history: History) -> int:
        """After a sample over the limit, lower ``history``'s byte bound by the rule; the bytes evicted.

        0 (nothing changed) while under the limit or when the history is already small.
        """
        keep = history_keep(history.nbytes, self.rss, self.limit, self.history_floor)
        if keep is None:
            return 0
        held = history.nbytes
        history.max_bytes = keep
        evicted = held - history.nbytes
        if evicted:
            release_freed_memory()
        return evicted

    def regrow_history(self, history: History, configured: int) -> None:
        """After a sample under the limit, let a bound that pressure lowered grow back a step."""
        current = history.max_bytes
        if current is not None and current < configured:
            history.max_bytes = regrown_bound(current, configured)

    def to_shed(self, connections: Sequence[Q], relieved: int = 0) -> list[Q]:
        """The connections to shed after the last sample (none while under the limit).

        ``relieved`` bytes (history just evicted) are taken off the overshoot first:
        streams are shed only for the rest.
        """
        return fullest_first(connections, shed_count(len(connections), self.rss - relieved, self.limit))
