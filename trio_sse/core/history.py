"""The replay history: a bounded ring of the most recent events, looked up by id.

Appending is O(1) and evicts the oldest event once full. ``replay_after`` answers
"every event after this id that matches these filters", or says why it cannot:
the id fell out of the ring (``history_gap``) or was never in it (``unknown_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import attrs

from .events import Event, parse_event_id

__all__ = ["History", "Replay", "ResetReason"]

ResetReason = Literal["history_gap", "unknown_id"]


@attrs.frozen(slots=True)
class Replay:
    """Events to send before live ones, or the reason the client must be told to reset."""

    events: list[Event]
    reset: ResetReason | None = None


class History:
    """Fixed-capacity ring buffer of events in publish order.

    Positions are absolute (the n-th event ever appended is at position n), so an id
    maps to a position once and stays valid until the event is evicted.
    """

    __slots__ = ("_capacity", "_next", "_positions", "_ring")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._ring: list[Event | None] = [None] * capacity
        self._positions: dict[str, int] = {}
        self._next = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return min(self._next, self._capacity)

    @property
    def _first(self) -> int:
        return max(0, self._next - self._capacity)

    @property
    def oldest(self) -> Event | None:
        return self._ring[self._first % self._capacity] if self._next else None

    @property
    def newest(self) -> Event | None:
        return self._ring[(self._next - 1) % self._capacity] if self._next else None

    def append(self, event: Event) -> None:
        """Add the newest event; the caller guarantees ids increase."""
        slot = self._next % self._capacity
        evicted = self._ring[slot]
        if evicted is not None:
            del self._positions[evicted.id]
        self._ring[slot] = event
        self._positions[event.id] = self._next
        self._next += 1

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
