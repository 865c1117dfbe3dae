"""Per-project retention (issue 13, item 1): what stays replayable, checked against a model.

The model is the rule written out by brute force over the list of everything published:
an event is held while it is among the newest ``capacity`` overall or the newest
``project_capacity`` of its project (broadcasts one more project), younger than ``ttl``,
and not pushed out by the count cap (``2 * capacity`` events, oldest out first).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.events import Event, EventIdGenerator, make_event, parse_event_id
from trio_sse.core.history import History, Replay, event_bytes
from trio_sse.core.matching import Subscription

PROJECTS = (None, "a", "b", "c")
TYPES = ("commit", "file_change")


class Model:
    """The retention rule by brute force: O(n) per step, obviously right."""

    def __init__(self, capacity: int, project_capacity: int, ttl: float, max_bytes: int | None = None) -> None:
        self.capacity, self.project_capacity, self.ttl = capacity, project_capacity, ttl
        self.max_bytes = max_bytes
        self.appended: list[Event] = []
        self.held: list[Event] = []

    def append(self, event: Event) -> None:
        self.appended.append(event)
        in_global = set(e.id for e in self.appended[-self.capacity :])
        in_project: set[str] = set()
        if self.project_capacity:
            for project in {e.project_id for e in self.appended}:
                mine = [e for e in self.appended if e.project_id == project]
                in_project |= {e.id for e in mine[-self.project_capacity :]}
        self.held = [e for e in [*self.held, event] if e.id in in_global or e.id in in_project]
        self.expire(event.published_at)
        cap = 2 * self.capacity if self.project_capacity else self.capacity
        del self.held[: max(0, len(self.held) - cap)]
        while self.max_bytes is not None and len(self.held) > 1 and sum(map(event_bytes, self.held)) > self.max_bytes:
            del self.held[0]  # oldest out first; the newest always stays

    def expire(self, now: float) -> None:
        if self.ttl:
            self.held = [e for e in self.held if e.published_at > now - self.ttl]

    @property
    def evicted(self) -> list[Event]:
        held = {e.id for e in self.held}
        return [e for e in self.appended if e.id not in held]

    def replay(self, last_event_id: str, subscription: Subscription) -> Replay:
        held_ids = [e.id for e in self.held]
        if last_event_id not in held_ids:
            order = parse_event_id(last_event_id)
            evicted = self.evicted
            if order is not None and (
                (evicted and order <= max(e.order for e in evicted)) or (self.held and order < self.held[0].order)
            ):
                return Replay([], "history_gap")
            return Replay([], "unknown_id")
        start = self.held[held_ids.index(last_event_id)]
        project = subscription.project_id
        if project is None or not self.project_capacity:
            if last_event_id not in [e.id for e in self.appended[-self.capacity :]]:
                return Replay([], "history_gap")  # no project filter: the global window only
        else:
            if any(e.order > start.order and e.project_id in (project, None) for e in self.evicted):
                return Replay([], "history_gap")
        return Replay([e for e in self.held if e.order > start.order and subscription.accepts(e)])

    def rewind(self, count: int, subscription: Subscription) -> list[Event]:
        return [e for e in self.held if subscription.accepts(e)][-count:] if count > 0 else []


publishes = st.lists(
    st.tuples(st.sampled_from(PROJECTS), st.sampled_from(TYPES), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    max_size=40,
)
subscriptions = st.builds(Subscription, st.none() | st.frozensets(st.sampled_from(TYPES)), st.sampled_from(PROJECTS))


def published(plan: list[tuple[str | None, str, float]]) -> list[Event]:
    ids = EventIdGenerator()
    events, now = [], 0.0
    for i, (project, event_type, step) in enumerate(plan):
        now += step
        events.append(make_event(ids.next(i + 1), event_type, b"{}", project, now))
    return events


@settings(max_examples=400, deadline=None)
@given(
    capacity=st.integers(1, 6),
    project_capacity=st.integers(0, 3),
    ttl=st.sampled_from([0.0, 2.0, 5.0]),
    plan=publishes,
    late=st.sampled_from([0.0, 1.0, 4.0]),
    max_bytes=st.none() | st.integers(0, 600),
    data=st.data(),
)
def test_what_is_replayable_matches_the_retention_model(
    capacity, project_capacity, ttl, plan, late, max_bytes, data
) -> None:
    history = History(capacity, max_bytes, project_capacity=project_capacity, ttl=ttl)
    model = Model(capacity, project_capacity, ttl, max_bytes)
    for event in published(plan):
        history.append(event)
        model.append(event)
        assert list(history) == model.held
        assert max_bytes is None or history.nbytes <= max_bytes or len(history) == 1
    now = (model.appended[-1].published_at if model.appended else 0.0) + late
    history.expire(now)
    model.expire(now)
    assert list(history) == model.held
    assert len(history) <= 2 * capacity
    assert history.projects_tracked == (len({e.project_id for e in model.held}) if project_capacity else 0)
    subscription = data.draw(subscriptions)
    for event in model.appended:
        got = history.replay_after(event.id, subscription.accepts, project=subscription.project_id)
        assert got == model.replay(event.id, subscription), event
    for foreign in ("0-0", "0-5", "99-0", "garbage"):
        got = history.replay_after(foreign, subscription.accepts, project=subscription.project_id)
        assert got == model.replay(foreign, subscription)
    count = data.draw(st.integers(0, 8))
    assert history.newest_matching(count, subscription.accepts, project=subscription.project_id) == model.rewind(
        count, subscription
    )


def busy(history_size: int = 1000, project_history_size: int = 100) -> tuple[History, Event, Event]:
    """The issue's scenario: one event to ``a``, 5,000 to ``b``, one more to ``a``."""
    history = History(history_size, project_capacity=project_history_size)
    ids = EventIdGenerator()
    first = make_event(ids.next(1), "commit", b"1", "a", 0.0)
    history.append(first)
    for n in range(5000):
        history.append(make_event(ids.next(2 + n), "commit", b"{}", "b", 0.0))
    second = make_event(ids.next(9999), "commit", b"2", "a", 0.0)
    history.append(second)
    return history, first, second


def test_a_quiet_project_keeps_its_window_whatever_a_busy_one_publishes() -> None:
    history, first, second = busy()
    a = Subscription(None, "a")
    assert history.replay_after(first.id, a.accepts, project="a") == Replay([second])


def test_without_a_project_filter_only_the_global_window_is_replayable() -> None:
    history, first, _ = busy()
    assert history.replay_after(first.id, Subscription().accepts) == Replay([], "history_gap")


def test_without_project_windows_the_busy_project_evicts_the_quiet_one() -> None:
    history, first, _ = busy(project_history_size=0)
    a = Subscription(None, "a")
    assert history.replay_after(first.id, a.accepts, project="a") == Replay([], "history_gap")


def test_a_broadcast_lost_after_the_id_is_a_gap_for_a_project_stream() -> None:
    history = History(3, project_capacity=1)
    ids = EventIdGenerator()
    events = [make_event(ids.next(n), "commit", b"{}", p, 0.0) for n, p in enumerate(["a", None, None, "b", "b", "b"])]
    for event in events:
        history.append(event)
    # the first broadcast left the broadcasts' window (the second pushed it) and the global one
    assert events[1].id not in history
    assert history.replay_after(events[0].id, Subscription(None, "a").accepts, project="a").reset == "history_gap"


def test_events_older_than_the_ttl_are_not_replayable() -> None:
    history = History(100, project_capacity=10, ttl=60.0)
    ids = EventIdGenerator()
    old = make_event(ids.next(1), "commit", b"{}", "a", 0.0)
    young = make_event(ids.next(2), "commit", b"{}", "a", 30.0)
    history.append(old)
    history.append(young)
    assert history.replay_after(old.id, Subscription(None, "a").accepts, project="a", now=59.0) == Replay([young])
    assert history.replay_after(old.id, Subscription(None, "a").accepts, project="a", now=60.0).reset == "history_gap"
    assert list(history) == [young]
    history.expire(90.0)
    assert len(history) == 0 and history.projects_tracked == 0
    assert history.replay_after(young.id, Subscription().accepts).reset == "history_gap"  # not unknown_id


def test_projects_tracked_and_events_held_stay_bounded_by_the_count_cap() -> None:
    """100,000 one-event projects: the history holds 2 x capacity events and tracks as many
    projects at most; the project idle the longest is forgotten first."""
    history = History(1000, project_capacity=100)
    ids = EventIdGenerator()
    events = [make_event(ids.next(n), "commit", b"{}", f"p{n}", 0.0) for n in range(100_000)]
    for event in events:
        history.append(event)
        assert len(history) <= 2000
    assert history.projects_tracked == 2000
    assert [e.id for e in history] == [e.id for e in events[-2000:]]
    for event, expected in ((events[-2000], Replay([])), (events[-2001], Replay([], "history_gap"))):
        project = event.project_id
        assert history.replay_after(event.id, Subscription(None, project).accepts, project=project) == expected


def test_a_project_replay_costs_the_projects_events_not_the_history() -> None:
    """Replay from the newest end: 100,000 events of another project after the id are not looked at."""
    history = History(100_000, project_capacity=1000)
    ids = EventIdGenerator()
    mine = make_event(ids.next(0), "commit", b"{}", "a", 0.0)
    history.append(mine)
    for n in range(100_000):
        history.append(make_event(ids.next(n + 1), "commit", b"{}", "b", 0.0))
    later = make_event(ids.next(200_000), "commit", b"{}", "a", 0.0)
    history.append(later)
    looked_at = []

    def matches(event: Event) -> bool:
        looked_at.append(event)
        return event.project_id in ("a", None)

    assert history.replay_after(mine.id, matches, project="a") == Replay([later])
    assert len(looked_at) == 1
    looked_at.clear()
    assert history.newest_matching(5, matches, project="a") == [mine, later]
    assert len(looked_at) == 2


@pytest.mark.parametrize("bad", [{"project_capacity": -1}, {"ttl": -1.0}, {"ttl": float("nan")}])
def test_bad_retention_bounds_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        History(10, **bad)  # type: ignore[arg-type]
