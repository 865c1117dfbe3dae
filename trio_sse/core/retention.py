"""One replay window: the newest events of a sequence, at absolute positions, oldest out first.

The history (:mod:`trio_sse.core.history`) keeps one window for the whole deployment
(the newest ``history_size`` events) and one per project (the newest
``project_history_size`` of that project; broadcasts are one more project). An event
stays replayable while either window that can hold it does; this module is only the
window, the rule is the history's.

A window is sorted by event order and positions are absolute (the n-th event ever
pushed is at position n), so a position found once stays valid until the event leaves,
and "the events after this one" is a slice, not a scan. Its storage grows up to its
capacity as events arrive, so a project that published one event costs one slot, not
``project_history_size``. It must never hold an event out of order.
"""

from __future__ import annotations

from collections.abc import Iterator

from .events import Event, EventOrder

__all__ = ["NEVER", "Window"]

#: An order below every event's: "nothing yet" for the ``*_through`` marks.
NEVER: EventOrder = (-1, -1)


class Window:
    """Events at positions ``[first, next)``, at most ``capacity`` of them.

    ``left_through`` is the order of the newest event that left the window (pushed out or
    evicted); ``evicted_through`` that of the newest that left the history altogether.
    The history keeps both, per window, to tell a complete replay from one with a gap.
    """

    __slots__ = ("_slots", "capacity", "evicted_through", "first", "left_through", "next")

    def __init__(self, capacity: int, floor: EventOrder = NEVER) -> None:
        self.capacity = capacity
        self._slots: list[Event | None] = []
        self.first = 0
        self.next = 0
        self.left_through = floor
        self.evicted_through = floor

    def __len__(self) -> int:
        return self.next - self.first

    @property
    def full(self) -> bool:
        return self.next - self.first >= self.capacity

    def holds(self, position: int) -> bool:
        return self.first <= position < self.next

    def at(self, position: int) -> Event:
        event = self._slots[position % self.capacity]
        assert event is not None
        return event

    @property
    def head(self) -> Event | None:
        return self.at(self.first) if self.next > self.first else None

    @property
    def tail(self) -> Event | None:
        return self.at(self.next - 1) if self.next > self.first else None

    def push(self, event: Event) -> int:
        """Add the newest event (the caller makes room first); returns its position."""
        assert not self.full
        position = self.next
        if len(self._slots) < self.capacity:
            self._slots.append(event)  # still growing: position == len(slots) here
        else:
            self._slots[position % self.capacity] = event
        self.next += 1
        return position

    def pop_head(self) -> Event:
        """Remove and return the oldest event (the window must not be empty)."""
        event = self.at(self.first)
        self._slots[self.first % self.capacity] = None
        self.first += 1
        self.left_through = event.order
        return event

    def position_after(self, order: EventOrder) -> int:
        """The position of the oldest event newer than ``order`` (``next`` if none): a bisection."""
        low, high = self.first, self.next
        while low < high:
            middle = (low + high) // 2
            if self.at(middle).order <= order:
                low = middle + 1
            else:
                high = middle
        return low

    def forward(self, position: int) -> Iterator[Event]:
        """The events from ``position`` (clamped to ``first``) to the newest, oldest first."""
        for pos in range(max(position, self.first), self.next):
            yield self.at(pos)

    def backward(self) -> Iterator[Event]:
        """The events from the newest to the oldest."""
        for pos in range(self.next - 1, self.first - 1, -1):
            yield self.at(pos)
