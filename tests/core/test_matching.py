"""Subscription filters and the index, checked against a brute-force scan."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.events import make_event
from trio_sse.core.matching import Subscription, SubscriptionIndex

TYPES = ("a", "b", "c")
PROJECTS = (None, "p", "q", "")

subscriptions = st.builds(
    Subscription,
    st.none() | st.frozensets(st.sampled_from(TYPES)),
    st.sampled_from(PROJECTS),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 7), subscriptions),
        st.tuples(st.just("remove"), st.integers(0, 9), st.none()),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_index_matching_equals_a_brute_force_scan_and_yields_each_key_once(ops) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    model: dict[int, Subscription] = {}
    for op, key, subscription in ops:
        if op == "add":
            index.add(key, subscription)
            model[key] = subscription
        else:
            index.remove(key)
            model.pop(key, None)
        assert len(index) == len(model)
        for key_ in range(10):
            assert (key_ in index) == (key_ in model)
            assert index.get(key_) == model.get(key_)
        for event_type in (*TYPES, "z"):
            for project in PROJECTS:
                found = list(index.matching(event_type, project))
                assert len(found) == len(set(found)), found
                expected = {k for k, s in model.items() if s.matches(event_type, project)}
                assert set(found) == expected


def test_no_type_filter_means_every_type() -> None:
    assert Subscription().matches("anything", None)
    assert Subscription(None, "p").matches("anything", "p")


def test_type_filter_keeps_only_listed_types() -> None:
    sub = Subscription(frozenset({"a", "b"}))
    assert sub.matches("a", None) and sub.matches("b", "p")
    assert not sub.matches("c", None)


def test_empty_type_set_matches_nothing() -> None:
    assert not Subscription(frozenset()).matches("a", None)


def test_project_filter_receives_its_project_and_broadcasts_only() -> None:
    sub = Subscription(None, "p1")
    assert sub.matches("a", "p1")
    assert sub.matches("a", None)
    assert not sub.matches("a", "p2")


def test_no_project_filter_receives_every_project() -> None:
    assert Subscription().matches("a", "p1") and Subscription().matches("a", "p2")


def test_accepts_uses_the_event_type_and_project() -> None:
    sub = Subscription(frozenset({"commit"}), "p1")
    assert sub.accepts(make_event((1, 0), "commit", b"1", "p1", 0.0))
    assert sub.accepts(make_event((1, 1), "commit", b"1", None, 0.0))
    assert not sub.accepts(make_event((1, 2), "commit", b"1", "p2", 0.0))
    assert not sub.accepts(make_event((1, 3), "risk_alert", b"1", "p1", 0.0))


def test_adding_a_key_again_replaces_its_subscription() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("k", Subscription(frozenset({"a"})))
    index.add("k", Subscription(frozenset({"b"})))
    assert list(index.matching("a", None)) == []
    assert list(index.matching("b", None)) == ["k"]
    assert len(index) == 1


def test_removing_an_unknown_key_is_ignored() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.remove("ghost")
    index.add("k", Subscription())
    index.remove("ghost")
    assert list(index.matching("a", "p")) == ["k"]


def test_removed_key_no_longer_matches() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("k", Subscription(frozenset({"a"}), "p"))
    index.remove("k")
    assert "k" not in index
    assert list(index.matching("a", "p")) == []
    assert list(index.matching("a", None)) == []
