"""The event model: ids, event type names, JSON data and the wire bytes an event carries."""

from __future__ import annotations

import itertools
import string

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.errors import InvalidValue
from trio_sse.core.events import (
    DEFAULT_EVENT_TYPES,
    SYSTEM_EVENT_TYPES,
    EventIdGenerator,
    dumps_json,
    format_event_id,
    is_valid_event_type,
    make_event,
    parse_event_id,
    system_event,
)
from trio_sse.core.parser import ParsedEvent, SSEParser

NAME_FIRST = string.ascii_lowercase
NAME_REST = string.ascii_lowercase + string.digits + "_.:-"


def reference_is_valid(name: str) -> bool:
    """The contract's ``^[a-z][a-z0-9_.:-]{0,63}$``, spelled out (no trailing-newline loophole)."""
    return 1 <= len(name) <= 64 and name[0] in NAME_FIRST and all(c in NAME_REST for c in name[1:])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=70),
        st.text(st.sampled_from(NAME_REST + "A\n \u00e9\u0661"), max_size=70),
        st.builds(lambda a, b: a + b, st.sampled_from(NAME_FIRST), st.text(st.sampled_from(NAME_REST), max_size=66)),
    )
)
def test_event_type_names_follow_the_contract_pattern(name: str) -> None:
    assert is_valid_event_type(name) == reference_is_valid(name)


@pytest.mark.parametrize(
    "name", ["a", "commit", "file_change", "build.done", "ns:evt-2", "a" * 64, *DEFAULT_EVENT_TYPES]
)
def test_valid_event_type_names_are_accepted(name: str) -> None:
    assert is_valid_event_type(name)


@pytest.mark.parametrize("name", ["", "Commit", "1commit", "_x", "a" * 65, "commit\n", "com mit", "café", "a/b"])
def test_invalid_event_type_names_are_rejected(name: str) -> None:
    assert not is_valid_event_type(name)


def test_default_and_system_event_types_are_disjoint_and_as_documented() -> None:
    assert DEFAULT_EVENT_TYPES == {
        "file_change", "commit", "progress_update", "risk_alert", "task_update", "system_status",
    }  # fmt: skip
    assert SYSTEM_EVENT_TYPES == {"connected", "subscription_updated", "stream_reset"}
    assert not DEFAULT_EVENT_TYPES & SYSTEM_EVENT_TYPES


@settings(max_examples=200, deadline=None)
@given(ms=st.integers(0, 10**20 - 1), seq=st.integers(0, 10**20 - 1))
def test_formatted_event_id_parses_back_to_its_order(ms: int, seq: int) -> None:
    event_id = format_event_id((ms, seq))
    assert event_id == f"{ms}-{seq}"
    assert parse_event_id(event_id) == (ms, seq)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12) | st.text(st.sampled_from("0123456789-\u0661\u0662\u0663"), max_size=12))
def test_parse_event_id_accepts_only_ascii_digits_dash_digits(value: str) -> None:
    parts = value.split("-")
    well_formed = len(parts) == 2 and all(p and p.isascii() and p.isdigit() and len(p) <= 20 for p in parts)
    parsed = parse_event_id(value)
    if well_formed:
        assert parsed == (int(parts[0]), int(parts[1]))
    else:
        assert parsed is None


@pytest.mark.parametrize(
    "value", ["", "1", "1-", "-1", "1-2-3", "a-1", " 1-2", "1-2\n", "\u0661-\u0660", "1" * 21 + "-0"]
)
def test_malformed_event_ids_parse_to_none(value: str) -> None:
    assert parse_event_id(value) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**45), min_size=1, max_size=60))
def test_generated_ids_strictly_increase_even_when_the_clock_goes_backwards(clock: list[int]) -> None:
    generator = EventIdGenerator()
    orders = [generator.next(now) for now in clock]
    assert all(a < b for a, b in itertools.pairwise(orders))
    ids = [format_event_id(o) for o in orders]
    assert len(set(ids)) == len(ids)
    assert [parse_event_id(i) for i in ids] == orders
    high = 0
    for now, (ms, seq) in zip(clock, orders, strict=True):
        if now > high:  # a clock ahead of every earlier id is used as is
            assert (ms, seq) == (now, 0)
        high = max(high, ms)


def test_same_millisecond_and_backwards_clock_bump_the_sequence() -> None:
    generator = EventIdGenerator()
    assert [generator.next(t) for t in (100, 100, 90, 101, 50)] == [(100, 0), (100, 1), (100, 2), (101, 0), (101, 1)]


def test_generator_resumes_after_a_given_last_order() -> None:
    assert EventIdGenerator(last=(500, 7)).next(400) == (500, 8)


def test_made_event_carries_its_wire_block_with_id_and_type() -> None:
    data_json = orjson.dumps({"sha": "abc", "n": [1, 2]})
    event = make_event((1700000000000, 3), "commit", data_json, "p1", 12.5)
    assert event.id == "1700000000000-3"
    assert event.order == (1700000000000, 3)
    assert (event.type, event.project_id, event.published_at) == ("commit", "p1", 12.5)
    assert event.data == {"sha": "abc", "n": [1, 2]}
    assert event.wire == b'id: 1700000000000-3\nevent: commit\ndata: {"sha":"abc","n":[1,2]}\n\n'
    assert SSEParser().feed(event.wire) == [
        ParsedEvent("commit", data_json.decode(), "1700000000000-3", "1700000000000-3")
    ]


def test_events_are_immutable() -> None:
    event = make_event((1, 0), "commit", b"1", None, 0.0)
    with pytest.raises(AttributeError):
        event.type = "other"  # type: ignore[misc]


def test_system_event_has_no_id_line_and_may_carry_retry_first() -> None:
    wire = system_event("connected", {"connection_id": "c1", "event_types": None, "project_id": None}, retry=3000)
    assert wire.startswith(b"retry: 3000\nevent: connected\ndata: ")
    assert b"\nid:" not in wire and not wire.startswith(b"id:")
    parser = SSEParser()
    (parsed,) = parser.feed(wire)
    assert parsed.id is None and parsed.retry == 3000
    assert orjson.loads(parsed.data) == {"connection_id": "c1", "event_types": None, "project_id": None}


def test_system_event_data_with_newlines_in_strings_stays_one_data_line() -> None:
    wire = system_event("stream_reset", {"reason": "unknown_id", "last_event_id": "x\ny"})
    assert wire.count(b"data:") == 1
    (parsed,) = SSEParser().feed(wire)
    assert orjson.loads(parsed.data)["last_event_id"] == "x\ny"


@pytest.mark.parametrize("value", [{1, 2}, object(), 2**70, {"s": "\ud800"}])
def test_dumps_json_refuses_values_json_cannot_carry(value: object) -> None:
    with pytest.raises(InvalidValue, match="JSON"):
        dumps_json(value)


def test_dumps_json_is_compact() -> None:
    assert dumps_json({"a": [1, "b"], "c": None}) == b'{"a":[1,"b"],"c":null}'


def test_encoded_event_data_is_not_held_in_an_oversized_buffer() -> None:
    # orjson hands back a 4 KiB buffer for any output; an event kept in the history
    # must cost its own size, not 4 KiB (measured with tracemalloc, which sees the
    # allocation rather than the object's length).
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [dumps_json({"n": n}) for n in range(200)]
        per_item = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_item < 512, per_item
