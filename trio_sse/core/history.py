"""The replay history: the events still replayable, by the retention rule, looked up by id.

The rule (docs/concepts.md): an event stays replayable while it is among the newest
``capacity`` events overall (the *global window*) **or** among the newest
``project_capacity`` events of its own project (its *project window*; broadcasts, the
events with no project, are one more project), and, when ``ttl`` > 0, younger than
``ttl`` seconds. So one busy project cannot push a quiet project's last events out.

Memory stays bounded three ways, oldest event out first whichever applies:

- by count: the project windows may hold at most ``capacity`` events beyond the global
  window (so at most ``2 * capacity`` events in all); past that the oldest event held
  only by its project goes first — with many one-event projects, the project idle the
  longest is forgotten first. A project with no event held is not tracked at all.
- by bytes (``max_bytes``, see :func:`event_bytes`), because a count alone lets large
  events take gigabytes (100,000 events of 64 KiB hold 12.5 GiB).
- by age (``ttl``), checked on every append and whenever ``now`` is given.

The newest event is kept whatever its size (not past its ``ttl``), so a well-formed id
older than it is told apart (``history_gap``) from one never issued (``unknown_id``).

Appending is O(1) amortised (each event enters and leaves each window once; the byte
total is a running sum) and so is an id lookup. A replay costs what it returns: the
events after an id are a slice of a window, found by position, never a scan of the
whole history (``replay_after``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from heapq import merge
from itertools import islice
from typing import Literal

import attrs

from .events import Event, EventOrder, parse_event_id
from .retention import NEVER, Window

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
    out: they are bounded by the count.
    """
    return len(event.wire) + len(event.data_json)


#: Where one held event is: ``(event, its position in the global window, its project's
#: window or None, its position there, its event_bytes)``. A tuple: the append path makes
#: one per event, and a tuple costs a tenth of an object with an ``__init__``.
_Held = tuple[Event, int, "Window | None", int, int]


def _order(event: Event) -> EventOrder:
    return event.order


class History:
    """The replayable events in publish order (see the module docstring).

    ``project_capacity=0`` turns project windows off (the global window alone: one ring
    bounded by count and bytes); ``max_bytes=None`` bounds by count only; ``ttl=0`` by
    no age. ``ttl`` is in seconds on the clock of the events' ``published_at``.
    """

    __slots__ = (
        "_bytes",
        "_evicted_through",
        "_forgotten_through",
        "_global",
        "_held",
        "_max_bytes",
        "_max_held",
        "_project_capacity",
        "_projects",
        "_ttl",
    )

    def __init__(
        self, capacity: int, max_bytes: int | None = None, *, project_capacity: int = 0, ttl: float = 0.0
    ) -> None:
        if capacity < 1:
            raise ValueError(f"history capacity must be >= 1, got {capacity}")
        if project_capacity < 0:
            raise ValueError(f"history project_capacity must be >= 0, got {project_capacity}")
        if not ttl >= 0:
            raise ValueError(f"history ttl must be >= 0, got {ttl}")
        self._global = Window(capacity)
        self._global._slots = [None] * capacity  # the one window that is always full: allocated once
        self._project_capacity = project_capacity
        self._ttl = ttl
        #: Project (``None``: broadcasts) -> its window, for projects with an event held.
        self._projects: dict[str | None, Window] = {}
        #: Every held event by id, oldest first (an ordered dict: O(1) lookup, O(1)
        #: removal of the oldest, and a walk from either end).
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._max_held = 2 * capacity if project_capacity else capacity
        #: The newest event evicted so far, whatever its project.
        self._evicted_through = NEVER
        #: The newest event evicted of any project no longer tracked: a project seen
        #: (again) starts from it, as it may be one of those forgotten.
        self._forgotten_through = NEVER
        self._bytes = 0
        self._max_bytes: int | None = None
        self.max_bytes = max_bytes

    @property
    def capacity(self) -> int:
        """The global window's size (``history_size``)."""
        return self._global.capacity

    @property
    def project_capacity(self) -> int:
        """Each project window's size (``project_history_size``; 0: none)."""
        return self._project_capacity

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def projects_tracked(self) -> int:
        """Projects (broadcasts counted as one) with at least one event held."""
        return len(self._projects)

    @property
    def max_bytes(self) -> int | None:
        """The byte bound (``None``: none). Lowering it evicts the oldest events at once."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError(f"history max_bytes must be >= 0, got {value}")
        self._max_bytes = value
        self._evict_over_bounds()

    @property
    def nbytes(self) -> int:
        """The bytes the kept events hold (the sum of their :func:`event_bytes`)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._held)

    @property
    def oldest(self) -> Event | None:
        return next(iter(self._held.values()))[0] if self._held else None

    @property
    def newest(self) -> Event | None:
        return next(reversed(self._held.values()))[0] if self._held else None

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._held

    def __iter__(self) -> Iterator[Event]:
        return (held[0] for held in self._held.values())

    # -- appending and evicting --------------------------------------------------------

    def append(self, event: Event) -> None:
        """Add the newest event; the caller guarantees ids increase.

        Then applies the rule: an event pushed out of one window leaves the history if
        the other does not hold it either, and the oldest events go while over the
        count, ``max_bytes`` (never the event just added) or ``ttl`` (measured from
        this event's ``published_at``).
        """
        # The publish path: the windows' push is written out here (no method calls).
        window = None
        project_position = -1
        if self._project_capacity:
            window = self._projects.get(event.project_id)
            if window is None:
                window = self._projects[event.project_id] = Window(self._project_capacity, self._forgotten_through)
            elif window.next - window.first >= window.capacity:
                self._leave_project_window(window)
            project_position = window.push(event)
        glob = self._global
        position = glob.next
        if position - glob.first >= glob.capacity:
            self._leave_global_window()
        glob._slots[position % glob.capacity] = event
        glob.next = position + 1
        size = event_bytes(event)
        held = self._held
        held[event.id] = (event, position, window, project_position, size)
        self._bytes += size
        limit = self._max_bytes
        if len(held) > self._max_held or self._ttl or (limit is not None and self._bytes > limit):
            self._evict_over_bounds(event.published_at)

    def expire(self, now: float) -> None:
        """Evict the events older than ``ttl`` at ``now`` (nothing when ``ttl`` is 0)."""
        if self._ttl:
            self._evict_over_bounds(now)

    def _leave_global_window(self) -> None:
        glob = self._global
        event = glob.pop_head()
        held = self._held[event.id]
        window, position = held[2], held[3]
        if window is None or position < window.first:
            self._forget(held)

    def _leave_project_window(self, window: Window) -> None:
        event = window.pop_head()
        held = self._held[event.id]
        if held[1] < self._global.first:
            self._forget(held, drop_empty=False)  # an event is pushed onto it next

    def _evict_over_bounds(self, now: float | None = None) -> None:
        held_events = self._held
        limit = self._max_bytes
        while len(held_events) > self._max_held or (limit is not None and self._bytes > limit and len(held_events) > 1):
            self._evict_oldest()
        if self._ttl and now is not None:
            deadline = now - self._ttl
            while held_events and next(iter(held_events.values()))[0].published_at <= deadline:
                self._evict_oldest()

    def _evict_oldest(self) -> None:
        # The oldest event held is at the head of each window that holds it.
        held = next(iter(self._held.values()))
        if self._global.holds(held[1]):
            self._global.pop_head()
        window = held[2]
        if window is not None and window.holds(held[3]):
            window.pop_head()
        self._forget(held)

    def _forget(self, held: _Held, *, drop_empty: bool = True) -> None:
        """``held`` is in no window any more: out of the history (its project untracked
        once nothing of it is held, unless ``drop_empty`` is false: it is being pushed to)."""
        event = held[0]
        del self._held[event.id]
        self._bytes -= held[4]
        order = event.order
        if order > self._evicted_through:
            self._evicted_through = order
        window = held[2]
        if window is not None:
            if order > window.evicted_through:
                window.evicted_through = order
            if drop_empty and window.next == window.first:
                # Its older events left before it (oldest first): nothing of it is held.
                del self._projects[event.project_id]
                self._forgotten_through = max(self._forgotten_through, window.evicted_through)

    # -- questions -----------------------------------------------------------------------

    def newest_matching(
        self, count: int, matches: Callable[[Event], bool], *, project: str | None = None, now: float | None = None
    ) -> list[Event]:
        """The newest ``count`` held events for which ``matches`` is true, oldest first (a rewind).

        ``project``: the stream's project filter, when it has one (``matches`` must then
        refuse other projects' events). Walks from the newest end and stops once it has
        ``count``: the cost follows the events returned and those skipped on the way —
        for a project filter, within that project's window and the broadcasts', when
        those hold all that the project has — never the size of the whole history.
        """
        if now is not None:
            self.expire(now)
        if count <= 0:
            return []
        candidates: Iterator[Event]
        windows = self._filter_windows(project)
        if windows is not None and all(w.left_through == w.evicted_through for w in windows):
            # Every held event of these projects is in their windows.
            candidates = merge(*(w.backward() for w in windows), key=_order, reverse=True)
        else:
            candidates = (held[0] for held in reversed(self._held.values()))
        found = list(islice((e for e in candidates if matches(e)), count))
        found.reverse()
        return found

    def replay_after(
        self,
        last_event_id: str,
        matches: Callable[[Event], bool],
        *,
        project: str | None = None,
        now: float | None = None,
    ) -> Replay:
        """Events published after ``last_event_id`` for which ``matches`` is true, oldest first.

        ``project`` is the stream's project filter (``None``: none; ``matches`` must
        refuse other projects' events when it is set). The id must still be held. Then:

        - with no project filter, the id must be in the global window, which holds every
          event after it (else ``history_gap``);
        - with project P, the replay is the events of P and broadcasts after the id,
          from their windows (and the global window), unless one of them has been
          evicted since (``history_gap``): as long as P's window and the broadcasts'
          hold what came after, no reset, whatever other projects published.

        An id not held that may have been (well-formed, older than the oldest kept or
        than one evicted) gives ``history_gap``; any other (malformed, from the future,
        never issued) ``unknown_id``. A reset carries no events; the client continues
        live. The cost is the events after the id in the windows read, not the history.
        """
        if now is not None:
            self.expire(now)
        held = self._held.get(last_event_id)
        if held is None:
            return Replay([], self._missing(last_event_id))
        event, global_position, own_window, project_position, _ = held
        glob = self._global
        windows = self._filter_windows(project)
        if windows is None:
            if not glob.holds(global_position):
                return Replay([], "history_gap")
            return Replay([e for e in glob.forward(global_position + 1) if matches(e)])
        order = event.order
        floor = max(self._forgotten_through if w is None else w.evicted_through for w in self._tracked(project))
        if floor > order:
            return Replay([], "history_gap")  # an event of this filter after the id is gone
        parts: list[Iterator[Event]] = []
        if all(w.left_through <= order for w in windows):
            # Nothing of these projects after the id ever left their windows.
            for window in windows:
                start = project_position + 1 if own_window is window else window.position_after(order)
                parts.append(window.forward(start))
        else:
            # Some of it left a project window and is only in the global one: the events
            # older than the global window come from the project windows, the rest from it.
            glob_head = glob.head
            cut = glob_head.order if glob_head is not None else NEVER
            for window in windows:
                older = window.forward(window.position_after(order))
                parts.append(e for e in older if e.order < cut)
            start = global_position + 1 if glob.holds(global_position) else glob.first
            parts.append(glob.forward(start))
        return Replay([e for e in merge(*parts, key=_order) if matches(e)])

    def _tracked(self, project: str | None) -> list[Window | None]:
        return [self._projects.get(project), self._projects.get(None)]

    def _filter_windows(self, project: str | None) -> list[Window] | None:
        """The windows of a project filter's events (its own and the broadcasts'), or
        ``None`` when there is no filter or no project windows (the global rule applies)."""
        if project is None or not self._project_capacity:
            return None
        return [w for w in self._tracked(project) if w is not None]

    def _missing(self, last_event_id: str) -> ResetReason:
        order = parse_event_id(last_event_id)
        if order is None:
            return "unknown_id"
        oldest = self.oldest
        if order <= self._evicted_through or (oldest is not None and order < oldest.order):
            return "history_gap"
        return "unknown_id"
