"""Validation of publish and subscribe input: clean values out, or a typed error and no change."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.core.errors import EventTooLarge, InvalidValue, UnknownEventTypes, ValidationError
from trio_sse.core.events import DEFAULT_EVENT_TYPES
from trio_sse.core.validation import (
    MAX_PROJECT_ID_LENGTH,
    NewEvent,
    check_event_types,
    check_project_id,
    has_forbidden_characters,
    prepare_event,
)


def prepare(event_type: object, data: object, project_id: object = None, max_event_bytes: int = 64) -> NewEvent:
    return prepare_event(event_type, data, project_id, registered=DEFAULT_EVENT_TYPES, max_event_bytes=max_event_bytes)


def test_every_refusal_is_a_validation_error_and_a_value_error() -> None:
    for cls in (InvalidValue, EventTooLarge, UnknownEventTypes):
        assert issubclass(cls, ValidationError)
    assert issubclass(ValidationError, ValueError)


def test_unknown_event_types_error_names_each_unknown_type_once_sorted() -> None:
    error = UnknownEventTypes(["zz", "aa", "zz"])
    assert error.names == ["aa", "zz"]
    assert "aa, zz" in str(error)


@pytest.mark.parametrize("value", [None, "p1", "a" * MAX_PROJECT_ID_LENGTH, "projet é/1 ✓", " spaced "])
def test_valid_project_ids_are_returned_unchanged(value: str | None) -> None:
    assert check_project_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "a" * (MAX_PROJECT_ID_LENGTH + 1), "p\n1", "p\r", "p\x00", "\x1f", "p\x7f", 5, ["p"], True]
)
def test_bad_project_ids_are_refused_as_invalid_values(value: object) -> None:
    with pytest.raises(InvalidValue, match="project_id"):
        check_project_id(value)


#: Line breaks for someone: NEL, LS and PS (str.splitlines(), JavaScript before ES2019),
#: VT, FF and the C0 separators (str.splitlines()), and every other C0 and C1 control.
FORBIDDEN = sorted({*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), "\u2028", "\u2029"})


@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
def test_project_ids_with_a_control_character_or_a_line_separator_are_refused(char: str) -> None:
    for value in (f"p{char}1", char, f"p{char}"):
        with pytest.raises(InvalidValue, match="without control characters or line separators"):
            check_project_id(value)
        assert has_forbidden_characters(value)


def test_every_character_str_splitlines_breaks_at_is_forbidden() -> None:
    breaks = {chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) > 1}
    assert breaks <= set(FORBIDDEN)


@given(st.text(st.characters(blacklist_characters=FORBIDDEN), min_size=1, max_size=MAX_PROJECT_ID_LENGTH))
def test_project_ids_without_them_are_accepted(value: str) -> None:
    assert check_project_id(value) == value
    assert not has_forbidden_characters(value)


def test_registered_event_types_are_returned_as_a_set() -> None:
    assert check_event_types(["commit", "commit", "risk_alert"], DEFAULT_EVENT_TYPES) == {"commit", "risk_alert"}


def test_unregistered_event_types_are_all_named() -> None:
    with pytest.raises(UnknownEventTypes) as info:
        check_event_types(["commit", "nope", "connected"], DEFAULT_EVENT_TYPES)
    assert info.value.names == ["connected", "nope"]


def test_prepare_event_serialises_data_once_as_compact_json() -> None:
    event = prepare("commit", {"sha": "abc", "files": [1, 2]}, "p1")
    assert event == NewEvent("commit", b'{"sha":"abc","files":[1,2]}', "p1")


@pytest.mark.parametrize("data", [None, 0, "text", [1, "a"], {"nested": {"x": True}}, 1.5])
def test_any_json_value_is_accepted_as_data(data: object) -> None:
    assert orjson.loads(prepare("progress_update", data).data_json) == data


def test_data_exactly_at_the_size_limit_is_accepted_and_one_byte_more_is_too_large() -> None:
    at_limit = "x" * (64 - 2)  # the quotes make it 64 bytes of JSON
    assert len(prepare("commit", at_limit).data_json) == 64
    with pytest.raises(EventTooLarge, match="65 bytes"):
        prepare("commit", at_limit + "x")


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(EventTooLarge):
        prepare("commit", "é" * 32)  # 32 characters, 66 bytes of JSON


@pytest.mark.parametrize("event_type", [None, 5, ["commit"], b"commit"])
def test_non_string_event_type_is_an_invalid_value(event_type: object) -> None:
    with pytest.raises(InvalidValue, match="event_type"):
        prepare(event_type, {})


@pytest.mark.parametrize("event_type", ["nope", "connected", "stream_reset", "Commit"])
def test_unregistered_or_system_event_type_cannot_be_published(event_type: str) -> None:
    with pytest.raises(UnknownEventTypes) as info:
        prepare(event_type, {})
    assert info.value.names == [event_type]


def test_bad_project_on_publish_is_an_invalid_value() -> None:
    with pytest.raises(InvalidValue, match="project_id"):
        prepare("commit", {}, "p\n2")


def test_data_json_cannot_carry_is_an_invalid_value() -> None:
    with pytest.raises(InvalidValue, match="JSON"):
        prepare("commit", {"when": object()})
