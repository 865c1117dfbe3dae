"""The replay history: a bounded ring of the most recent events, looked up by id.

It is bounded twice: by a number of events (``capacity``) and by the bytes its events
hold (``max_bytes``, see :func:`event_bytes`), oldest out first, because a count alone
lets large events take gigabytes (100,000 events of 64 KiB hold 12.5 GiB). Appending is
O(1) amortised: the byte total is kept as a running sum, and each event is evicted once.
The newest event is always kept, whatever its size, so a well-formed id older than it is
always told apart (``history_gap``) from one never issued (``unknown_id``).

``replay_after`` answers "every event after this id that matches these filters", or says
why it cannot: the id fell out of the ring (``history_gap``) or was never in it (``unknown_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import attrs

from .events import Event, parse_event_id

__all__ = ["History", "Replay", "ResetReason", "event_bytes"]

ResetReason = Literal["history_gap", "unknown_id"]


@attrs.frozen(slots=True)
class Replay:
    """Events to send before live ones, or the reason the client must be told to reset."""

    events: list[Event]
    reset: ResetReason | None = None


def event_bytes(event: Event) -> int:
    """What one event counts against ``max_bytes``: the bytes it holds.

    Its wire block and its JSON data are both kept (fan-out and replay write the first;
    the data is the event's value), so an event of 64 KiB of data counts ~128 KiB.
    The objects around them (~0.5 KiB an event, measured in docs/settings.md) are left
    out: they are bounded by ``capacity``.
    """
    return len(event.wire) + len(event.data_json)


class History:
    """Ring buffer of events in publish order, bounded by count and by bytes.

    Positions are absolute (the n-th event ever appended is at position n), so an id
    maps to a position once and stays valid until the event is evicted. The events kept
    are those at positions ``[first, next)``; ``max_bytes=None`` bounds by count only.
    """

    __slots__ = ("_bytes", "_capacity", "_first", "_max_bytes", "_next", "_positions", "_ring")

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._ring: list[Event | None] = [None] * capacity
        self._positions: dict[str, int] = {}
        self._first = 0
        self._next = 0
        self._bytes = 0
        self._max_bytes: int | None = None
        self.max_bytes = max_bytes

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_bytes(self) -> int | None:
        """The byte bound (``None``: none). Lowering it evicts the oldest events at once."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"history max_bytes must be >= 0, got {value}")
        self._max_bytes = value
        self._evict_over_bytes()

    @property
    def nbytes(self) -> int:
        """The bytes the kept events hold (the sum of their :func:`event_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return self._next - self._first

    @property
    def oldest(self) -> Event | None:
        return self._ring[self._first % self._capacity] if self._next > self._first else None

    @property
    def newest(self) -> Event | None:
        return self._ring[(self._next - 1) % self._capacity] if self._next > self._first else None

    def append(self, event: Event) -> None:
        """Add the newest event; the caller guarantees ids increase.

        Then evicts the oldest events while over ``capacity`` or ``max_bytes`` (never
        the event just added).
        """
        if self._next - self._first == self._capacity:
            self._evict_oldest()
        self._ring[self._next % self._capacity] = event
        self._positions[event.id] = self._next
        self._next += 1
        self._bytes += event_bytes(event)
        self._evict_over_bytes()

    def _evict_over_bytes(self) -> None:
        limit = self._max_bytes
        if limit is not None:
            while self._bytes > limit and self._next - self._first > 1:
                self._evict_oldest()

    def _evict_oldest(self) -> None:
        slot = self._first % self._capacity
        evicted = self._ring[slot]
        assert evicted is not None
        self._ring[slot] = None
        del self._positions[evicted.id]
        self._bytes -= event_bytes(evicted)
        self._first += 1

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._positions

    def __iter__(self) -> Iterator[Event]:
        return self._iter_from(self._first)

    def _iter_from(self, position: int) -> Iterator[Event]:
        ring, capacity = self._ring, self._capacity
        for pos in range(position, self._next):
            event = ring[pos % capacity]
            assert event is not None
            yield event

    def newest_matching(self, count: int, matches: Callable[[Event], bool]) -> list[Event]:
        """The newest ``count`` events for which ``matches`` is true, oldest first (a rewind).

        Walks from the newest end and stops once it has ``count``: the cost follows the
        events returned and those skipped on the way, not the size of the ring.
        """
        found: list[Event] = []
        if count <= 0:
            return found
        ring, capacity = self._ring, self._capacity
        for pos in range(self._next - 1, self._first - 1, -1):
            event = ring[pos % capacity]
            assert event is not None
            if matches(event):
                found.append(event)
                if len(found) == count:
                    break
        found.reverse()
        return found

    def replay_after(self, last_event_id: str, matches: Callable[[Event], bool]) -> Replay:
        """Events published after ``last_event_id`` for which ``matches`` is true, oldest first.

        An id still in the ring gives the events after it (possibly none). An id that
        sorts before the oldest event kept gives ``history_gap``: events may have been
        missed. Any other id (malformed, from the future, or never issued) gives
        ``unknown_id``. A reset carries no events; the client continues live.
        """
        position = self._positions.get(last_event_id)
        if position is not None:
            return Replay([e for e in self._iter_from(position + 1) if matches(e)])
        order = parse_event_id(last_event_id)
        oldest = self.oldest
        if order is not None and oldest is not None and order < oldest.order:
            return Replay([], "history_gap")
        return Replay([], "unknown_id")
