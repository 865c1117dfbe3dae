"""Tag filters in the sans-IO core: the index against a reference predicate, and validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.errors import InvalidTags
from trio_sse.core.matching import Subscription, SubscriptionIndex
from trio_sse.core.validation import TAG_KEY_PATTERN, check_tag_filter, check_tag_value, check_tags, prepare_event

NAMES = st.sampled_from(["a", "b", "c"])
VALUES = st.sampled_from(["x", "y", "z"])
TYPES = st.sampled_from(["commit", "file_change"])
PROJECTS = st.none() | st.sampled_from(["p", "q"])
# An empty value set is what ``remove`` can leave: it matches nothing.
TAG_FILTERS = st.dictionaries(NAMES, st.frozensets(VALUES), max_size=3)
SUBSCRIPTIONS = st.builds(
    lambda types, project, tags: Subscription(types, project, tuple(sorted(tags.items()))),
    st.none() | st.frozensets(TYPES, min_size=1),
    PROJECTS,
    TAG_FILTERS,
)
EVENT_TAGS = st.none() | st.dictionaries(NAMES, VALUES, max_size=3)


def reference(sub: Subscription, event_type: str, project: str | None, tags: dict[str, str] | None) -> bool:
    """The rule as written in the docs, independent of the index and of ``tags_match``."""
    if sub.event_types is not None and event_type not in sub.event_types:
        return False
    if sub.project_id is not None and project is not None and project != sub.project_id:
        return False
    return all((tags or {}).get(name) in values for name, values in sub.tags)


@settings(max_examples=500, deadline=None)
@given(
    subs=st.lists(SUBSCRIPTIONS, max_size=12),
    removed=st.sets(st.integers(0, 11)),
    events=st.lists(st.tuples(TYPES, PROJECTS, EVENT_TAGS), min_size=1, max_size=8),
)
def test_index_matches_exactly_the_reference_predicate(
    subs: list[Subscription], removed: set[int], events: list[tuple[str, str | None, dict[str, str] | None]]
) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for key, sub in enumerate(subs):
        index.add(key, sub)
    for key in removed:
        index.remove(key)
    live = {k: s for k, s in enumerate(subs) if k not in removed}
    for event_type, project, tags in events:
        found = list(index.matching(event_type, project, tags))
        assert len(found) == len(set(found)), "a key was yielded twice"
        assert set(found) == {k for k, s in live.items() if reference(s, event_type, project, tags)}
        for sub in live.values():
            assert sub.matches(event_type, project, tags) == reference(sub, event_type, project, tags)
    for key in list(live):
        index.remove(key)
    assert len(index) == 0 and not index._by_type and not index._tagged


def test_an_event_among_1000_distinct_tag_filters_checks_only_its_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fan-out stays indexed: finding the one stream of 1,000 whose tag filter matches
    does not check the other 999 (a linear scan would call the predicate 1,000 times)."""
    from trio_sse.core import matching

    index: SubscriptionIndex[int] = SubscriptionIndex()
    for i in range(1000):
        tags = {"user": [f"u{i}"], **({"env": ["prod", "dev"]} if i % 2 else {})}
        index.add(i, Subscription(None, None, check_tag_filter(tags)))
    calls = 0
    real = matching.tags_match

    def counted(tag_filter: Any, tags: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(tag_filter, tags)

    monkeypatch.setattr(matching, "tags_match", counted)
    monkeypatch.setattr(Subscription, "accepts", lambda self, event: pytest.fail("scanned"))
    assert list(index.matching("commit", None, {"user": "u7", "env": "prod"})) == [7]
    assert list(index.matching("commit", "p", {"user": "u8", "env": "prod"})) == [8]
    assert list(index.matching("commit", None, {"env": "prod"})) == []
    assert calls <= 2


def test_and_across_names_or_within_one() -> None:
    sub = Subscription(tags=check_tag_filter({"env": ["prod", "staging"], "team": ["core"]}))
    assert sub.matches("commit", None, {"env": "prod", "team": "core"})
    assert sub.matches("commit", None, {"env": "staging", "team": "core", "other": "1"})
    assert not sub.matches("commit", None, {"env": "prod"})  # team missing
    assert not sub.matches("commit", None, {"env": "dev", "team": "core"})
    assert not sub.matches("commit", None, None)
    assert Subscription().matches("commit", None, {"env": "prod"})  # no filter: tags do not matter


BAD_TAGS: list[tuple[Any, list[str]]] = [
    ("env", ["tags"]),
    (["env"], ["tags"]),
    ({"Env": "x"}, ["Env"]),
    ({"1env": "x"}, ["1env"]),
    ({"e-nv": "x"}, ["e-nv"]),
    ({"a" * 33: "x"}, ["a" * 33]),
    ({"": "x"}, [""]),
    ({"env": 1}, ["env"]),
    ({"env": None}, ["env"]),
    ({"env": ["x"]}, ["env"]),
    ({"env": "x" * 129}, ["env"]),
    ({"env": "a\nb"}, ["env"]),
    ({"env": "a\u2028b"}, ["env"]),
    ({"env": "a\x00b"}, ["env"]),
    ({"ok": "x", "env": "a\rb"}, ["env"]),
    ({f"k{i}": "v" for i in range(17)}, ["k9"]),
]


@pytest.mark.parametrize(("tags", "named"), BAD_TAGS)
def test_bad_tags_are_refused_naming_them(tags: Any, named: list[str]) -> None:
    with pytest.raises(InvalidTags) as caught:
        prepare_event("commit", {}, None, registered=frozenset({"commit"}), max_event_bytes=1000, tags=tags)
    assert caught.value.names == named


def test_good_tags_are_kept() -> None:
    tags = {f"k{i}": "v" * 128 for i in range(16)}
    assert check_tags(tags) == tags
    assert check_tags({"a" * 32: ""}) == {"a" * 32: ""}
    assert check_tags(None) is None and check_tags({}) is None
    event = prepare_event("commit", {}, None, registered=frozenset({"commit"}), max_event_bytes=99, tags={"a": "b"})
    assert event.tags == {"a": "b"}


@pytest.mark.parametrize(
    "value", [{"env": []}, {"env": "prod"}, {"env": [1]}, {"Env": ["x"]}, {"env": ["a\nb"]}, ["env"]]
)
def test_bad_tag_filters_are_refused(value: Any) -> None:
    with pytest.raises(InvalidTags):
        check_tag_filter(value)


TAG_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
QUERY_VALUE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters=","), min_size=1, max_size=128
).filter(lambda v: v.strip() == v)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TAG_NAME, st.lists(QUERY_VALUE, min_size=1, max_size=4), min_size=1, max_size=16))
def test_tag_query_parameters_parse_back_to_the_filter(wanted: dict[str, list[str]]) -> None:
    from urllib.parse import urlencode

    from trio_sse.http.params import parse_stream_params

    query = urlencode({f"tag.{name}": ",".join(values) for name, values in wanted.items()}).encode()
    parsed = parse_stream_params(query, [])
    assert parsed.tags == check_tag_filter(wanted)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.text(max_size=200)), max_size=20))
def test_any_tag_query_is_a_filter_or_a_400(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode

    from trio_sse.http.errors import ApiError
    from trio_sse.http.params import parse_stream_params

    query = urlencode([(f"tag.{name}", value) for name, value in pairs]).encode()
    try:
        parsed = parse_stream_params(query, [])
    except ApiError as error:
        assert error.status == 400
        return
    for name, values in parsed.tags:
        assert TAG_KEY_PATTERN.fullmatch(name) and values and all(check_tag_value(v) for v in values)
