"""Parsing ``rewind=N`` of ``GET /sse/events``: every value is a count in 0..max_rewind or a 400."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_sse.core.errors import InvalidValue
from trio_sse.core.validation import check_rewind
from trio_sse.http.errors import ApiError
from trio_sse.http.params import parse_stream_params

LAST_EVENT_ID = [(b"last-event-id", b"1700000000000-0")]


def parse(value: str, max_rewind: int, *, header: bool = False, query_id: bool = False) -> int:
    query = {"rewind": value, **({"last_event_id": "1700000000000-0"} if query_id else {})}
    return parse_stream_params(urlencode(query).encode(), LAST_EVENT_ID if header else [], max_rewind=max_rewind).rewind


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.text(max_size=25), st.integers(-5, 10**20).map(str)),
    max_rewind=st.integers(0, 1000),
    resuming=st.sampled_from(["no", "header", "query"]),
)
@example(value="٣", max_rewind=10, resuming="no")  # a digit to str.isdigit(), not to the query
@example(value="007", max_rewind=10, resuming="no")
@example(value="1" * 19, max_rewind=10, resuming="header")
def test_rewind_is_a_count_up_to_max_rewind_or_a_400(value: str, max_rewind: int, resuming: str) -> None:
    well_formed = re.fullmatch(r"[0-9]{1,18}", value) is not None
    try:
        got = parse(value, max_rewind, header=resuming == "header", query_id=resuming == "query")
    except ApiError as error:
        assert error.status == 400 and "rewind" in error.message
        assert not well_formed or (resuming == "no" and int(value) > max_rewind)
        return
    assert well_formed
    # With a last event id (header or query) the stream resumes: never a rewind, whatever N.
    assert got == (0 if resuming != "no" else int(value))
    assert 0 <= got <= max_rewind


@given(st.integers(0, 1000), st.data())
def test_every_count_up_to_max_rewind_parses_back(max_rewind: int, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, max_rewind))
    assert parse(str(count), max_rewind) == count


def test_no_rewind_parameter_is_no_rewind_and_a_repeated_one_must_agree() -> None:
    assert parse_stream_params(b"", []).rewind == 0
    assert parse_stream_params(b"rewind=3&rewind=3", []).rewind == 3
    with pytest.raises(ApiError):
        parse_stream_params(b"rewind=3&rewind=4", [])


@given(st.one_of(st.integers(-10, 200), st.booleans(), st.floats(), st.text(max_size=3), st.none()))
def test_a_subscribe_body_rewind_is_a_whole_number_in_range(value: object) -> None:
    in_range = type(value) is int and 0 <= value <= 100
    try:
        assert check_rewind(value, 100) == value
    except InvalidValue:
        assert not in_range
    else:
        assert in_range
