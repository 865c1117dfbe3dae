"""The replay history ring, checked against a plain list of everything ever appended."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.events import Event, EventIdGenerator, format_event_id, make_event, parse_event_id
from trio_sse.core.history import History, Replay, event_bytes
from trio_sse.core.matching import Subscription

TYPES = ("commit", "file_change", "risk_alert")
PROJECTS = (None, "p1", "p2")


def build_events(specs: list[tuple[int, str, str | None]]) -> list[Event]:
    generator = EventIdGenerator()
    return [make_event(generator.next(now), t, b"{}", p, 0.0) for now, t, p in specs]


def reference_replay(appended: list[Event], capacity: int, last_event_id: str, sub: Subscription) -> Replay:
    """What replay_after must answer, from the full list of appended events."""
    kept = appended[-capacity:]
    evicted = appended[: max(0, len(appended) - capacity)]
    kept_ids = [e.id for e in kept]
    if last_event_id in kept_ids:
        after = kept[kept_ids.index(last_event_id) + 1 :]
        return Replay([e for e in after if sub.accepts(e)])
    if last_event_id in {e.id for e in evicted}:
        return Replay([], "history_gap")
    order = parse_event_id(last_event_id)
    if order is not None and kept and order < kept[0].order:
        return Replay([], "history_gap")  # older than anything kept: events may have been missed
    return Replay([], "unknown_id")


event_specs = st.lists(st.tuples(st.integers(0, 30), st.sampled_from(TYPES), st.sampled_from(PROJECTS)), max_size=25)
subscriptions = st.builds(
    Subscription,
    st.none() | st.frozensets(st.sampled_from(TYPES)),
    st.sampled_from(PROJECTS),
)
foreign_ids = st.sampled_from(["", "garbage", "0-0", "99999-0", "5-", "\u0661-\u0660", "00-0"]) | st.builds(
    lambda ms, seq: format_event_id((ms, seq)), st.integers(0, 40), st.integers(0, 30)
)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 6),
    specs=event_specs,
    subscription=subscriptions,
    data=st.data(),
)
def test_replay_after_matches_a_reference_list(capacity, specs, subscription, data) -> None:
    appended = build_events(specs)
    history = History(capacity)
    for event in appended:
        history.append(event)

    candidates = [e.id for e in appended]
    queries = data.draw(st.lists(st.sampled_from(candidates) | foreign_ids if candidates else foreign_ids, max_size=6))
    for last_event_id in [*candidates, *queries]:
        expected = reference_replay(appended, capacity, last_event_id, subscription)
        assert history.replay_after(last_event_id, subscription.accepts) == expected

    kept = appended[-capacity:]
    assert list(history) == kept
    assert len(history) == len(kept)
    assert history.oldest == (kept[0] if kept else None)
    assert history.newest == (kept[-1] if kept else None)
    assert all((e.id in history) == (e in kept) for e in appended)


@settings(max_examples=100, deadline=None)
@given(capacity=st.integers(1, 5), specs=event_specs.filter(lambda s: len(s) > 5))
def test_evicted_ids_give_history_gap_and_never_issued_ids_give_unknown_id(capacity, specs) -> None:
    appended = build_events(specs)
    history = History(capacity)
    for event in appended:
        history.append(event)
    everything = Subscription().accepts
    for event in appended[:-capacity]:
        assert history.replay_after(event.id, everything) == Replay([], "history_gap")
    newest = appended[-1].order
    for never in ("nope", format_event_id((newest[0], newest[1] + 1)), format_event_id((newest[0] + 1, 0))):
        assert history.replay_after(never, everything) == Replay([], "unknown_id")


def test_replay_after_the_newest_id_is_empty_without_reset() -> None:
    history = History(3)
    events = build_events([(1, "commit", None), (2, "commit", None)])
    for event in events:
        history.append(event)
    assert history.replay_after(events[-1].id, Subscription().accepts) == Replay([], None)


def test_replay_applies_the_filter_and_keeps_publish_order() -> None:
    history = History(10)
    events = build_events([(1, "commit", "p1"), (2, "risk_alert", "p1"), (3, "commit", "p2"), (4, "commit", None)])
    for event in events:
        history.append(event)
    replay = history.replay_after(events[0].id, Subscription(frozenset({"commit"}), "p1").accepts)
    assert replay == Replay([events[3]])  # p2's commit is filtered, the broadcast is kept


def test_id_between_kept_events_that_was_never_issued_is_unknown() -> None:
    history = History(10)
    for event in build_events([(100, "commit", None), (300, "commit", None)]):
        history.append(event)
    assert history.replay_after("200-0", Subscription().accepts).reset == "unknown_id"


def test_well_formed_id_older_than_everything_kept_is_a_history_gap() -> None:
    history = History(10)
    for event in build_events([(100, "commit", None)]):
        history.append(event)
    assert history.replay_after("5-0", Subscription().accepts).reset == "history_gap"


def test_empty_history_knows_no_id() -> None:
    history = History(4)
    assert len(history) == 0
    assert history.oldest is None and history.newest is None
    assert list(history) == []
    assert history.replay_after("1-0", Subscription().accepts) == Replay([], "unknown_id")


def test_ring_evicts_the_oldest_once_full() -> None:
    history = History(2)
    events = build_events([(1, "commit", None), (2, "commit", None), (3, "commit", None)])
    for event in events:
        history.append(event)
    assert history.capacity == 2
    assert list(history) == events[1:]
    assert events[0].id not in history
    assert history.oldest is events[1] and history.newest is events[2]


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        History(capacity)


# -- the byte bound (issue 11, item 4) ---------------------------------------------------------


def sized_events(sizes: list[int]) -> list[Event]:
    """Events whose JSON data is ``size`` bytes (a string of that length less its quotes)."""
    generator = EventIdGenerator()
    return [
        make_event(generator.next(i), "commit", b'"' + b"x" * max(0, size - 2) + b'"', None, 0.0)
        for i, size in enumerate(sizes)
    ]


#: One step of a history's life: append an event of this data size, or set max_bytes.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(2, 400)),
        st.tuples(st.just("bound"), st.integers(0, 3000)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 12), max_bytes=st.integers(0, 3000), plan=steps)
def test_history_never_holds_more_than_its_byte_bound_and_keeps_the_newest(capacity, max_bytes, plan) -> None:
    events = iter(sized_events([size for op, size in plan if op == "append"]))
    history = History(capacity, max_bytes=max_bytes)
    kept: list[Event] = []  # the reference: oldest out first, the newest always stays
    appended: list[Event] = []
    for op, value in plan:
        if op == "append":
            event = next(events)
            history.append(event)
            appended.append(event)
            kept.append(event)
            if len(kept) > capacity:
                kept.pop(0)
        else:
            history.max_bytes = max_bytes = value
        while len(kept) > 1 and sum(map(event_bytes, kept)) > max_bytes:
            kept.pop(0)

        assert list(history) == kept
        assert history.nbytes == sum(map(event_bytes, kept))
        assert history.nbytes <= max_bytes or len(history) == 1  # only a lone event may exceed it
        assert len(history) <= capacity
        if appended:
            assert history.newest is appended[-1]  # the newest is never evicted
        orders = [e.order for e in history]
        assert orders == sorted(set(orders))  # ids strictly increase, oldest first
    everything = Subscription().accepts
    for event in appended:
        if event in kept:
            after = kept[kept.index(event) + 1 :]
            assert history.replay_after(event.id, everything) == Replay(after)
        else:
            assert history.replay_after(event.id, everything) == Replay([], "history_gap")


def test_an_event_counts_its_wire_block_and_its_data() -> None:
    (event,) = sized_events([64 * 1024])
    assert event_bytes(event) == len(event.wire) + len(event.data_json)
    assert 2 * 64 * 1024 < event_bytes(event) < 2 * 64 * 1024 + 64  # the id and type lines


def test_large_events_are_evicted_by_bytes_long_before_the_count_is_reached() -> None:
    events = sized_events([64 * 1024] * 100)
    history = History(100_000, max_bytes=10 * event_bytes(events[-1]))
    for event in events:
        history.append(event)
    assert list(history) == events[-10:]
    assert history.replay_after(events[0].id, Subscription().accepts) == Replay([], "history_gap")
    assert history.replay_after(events[-11].id, Subscription().accepts) == Replay([], "history_gap")
    assert history.replay_after(events[-10].id, Subscription().accepts) == Replay(events[-9:])


def test_lowering_the_byte_bound_evicts_at_once_and_raising_it_brings_nothing_back() -> None:
    events = sized_events([100] * 10)
    history = History(10)
    for event in events:
        history.append(event)
    assert history.max_bytes is None and len(history) == 10
    history.max_bytes = 3 * event_bytes(events[0])
    assert list(history) == events[-3:]
    history.max_bytes = 0
    assert list(history) == events[-1:]  # the newest stays: older ids still give history_gap
    assert history.replay_after(events[0].id, Subscription().accepts).reset == "history_gap"
    history.max_bytes = None
    assert list(history) == events[-1:]
    assert history.nbytes == event_bytes(events[-1])


def test_byte_accounting_touches_each_event_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """O(1) amortised per append: a running total, each event sized once in and once out."""
    import trio_sse.core.history as module

    calls = 0
    real = module.event_bytes

    def counting(event: Event) -> int:
        nonlocal calls
        calls += 1
        return real(event)

    monkeypatch.setattr(module, "event_bytes", counting)
    events = sized_events([50] * 5000)
    history = History(4000, max_bytes=1000 * real(events[0]))
    for event in events:
        history.append(event)
    history.max_bytes = 10
    assert len(history) == 1
    assert calls <= 2 * len(events)


def test_a_negative_byte_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        History(3, max_bytes=-1)
