"""Memory pressure: when the process's resident memory is above ``memory_limit``.

The hub samples RSS once per :data:`SAMPLE_INTERVAL` through a reader it is given (a
plain callable, so tests drive it with a fake and ``autojump_clock``). While the last
sample is above the limit, new streams are refused and, at every sample, the history
is shrunk first and only then, if that was not enough, a share of the live streams is
shed, fullest queues first. :class:`MemoryGuard` is the rule (it never awaits);
:class:`MemoryWatch` is the hub's task that samples and acts on what the guard answers.
Nothing here touches HTTP.

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
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

import attrs
import trio

from ..core.history import History

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "HISTORY_FLOOR",
    "HISTORY_REGROW",
    "SAMPLE_INTERVAL",
    "MemoryGuard",
    "MemoryWatch",
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

log = logging.getLogger("trio_sse.hub")


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


class MemoryWatch:
    """The hub's memory task: samples RSS, evicts history, then sheds streams (see the module docstring)."""

    def __init__(self, guard: MemoryGuard, registry: Registry, history: History | None, history_bytes: int) -> None:
        self.guard = guard
        self._registry = registry
        #: The backend's in-process ring, bounded by ``history_bytes`` (``None`` if it has none).
        self._history = history
        self._history_bytes = history_bytes
        if history is not None:
            history.max_bytes = history_bytes
        #: RSS reads that failed (``OSError``, e.g. ``EMFILE`` when the process is out of
        #: descriptors): each is skipped, the last good sample stands.
        self.samples_failed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample RSS every :data:`SAMPLE_INTERVAL` seconds for as long as the hub lives.

        The first sample is taken before reporting ready, so the very first stream is
        already judged against it. Sample times do not drift: each is an absolute deadline.
        """
        self.check()
        task_status.started()
        next_sample = trio.current_time()
        while True:
            next_sample += SAMPLE_INTERVAL
            await trio.sleep_until(next_sample)
            self.check()

    def check(self) -> None:
        """Take one RSS sample; while over ``memory_limit``, evict history, then shed the fullest streams.

        History goes first: streams are shed only for the part of the overshoot that
        evicting history did not cover. Shed streams are closed with reason
        ``memory_pressure``: out of the index at once, so they cost the publisher nothing
        more, and they reconnect and catch up from history once the pressure is gone.
        """
        guard = self.guard
        try:
            changed = guard.sample()
        except OSError as exc:
            # Reading RSS opens /proc: at the descriptor limit it fails, and the guard
            # task must not die of it (it would take the hub's nursery, and the process,
            # down). The sample is skipped; the last one stands until the next.
            self._rss_failed(exc)
            return
        if changed:
            state = "above" if guard.over else "back under"
            log.warning("memory %s memory_limit: rss %d bytes, limit %d", state, guard.rss, guard.limit)
        if not guard.over:
            if self._history is not None:
                guard.regrow_history(self._history, self._history_bytes)
            return
        relieved = self._shrink_history()
        if relieved >= guard.rss - guard.limit:
            return
        live = [c for c in self._registry.connections.values() if c.close_reason is None]
        shed = guard.to_shed(live, relieved)
        for connection in shed:
            self._registry.close(connection, "memory_pressure")
        if shed:
            log.warning("memory pressure: shed %d of %d streams, fullest queues first", len(shed), len(live))

    def _shrink_history(self) -> int:
        """Over ``memory_limit``: evict history first; the bytes evicted."""
        history = self._history
        if history is None:
            return 0
        events = len(history)
        evicted = self.guard.shrink_history(history)
        if evicted:
            log.warning(
                "memory pressure: history cut to %d bytes (%d events and %d bytes evicted, oldest first)",
                history.max_bytes,
                events - len(history),
                evicted,
            )
        return evicted

    def _rss_failed(self, exc: OSError) -> None:
        self.samples_failed += 1
        if self.samples_failed == 1 or self.samples_failed % 100 == 0:
            log.warning("memory: RSS sample failed (%s), skipped (%d so far)", exc, self.samples_failed)

    def read_rss(self) -> int:
        """RSS now for the stats, or the last sample when it cannot be read (counted)."""
        try:
            return int(self.guard.read_rss())
        except OSError as exc:
            self._rss_failed(exc)
            return self.guard.rss
