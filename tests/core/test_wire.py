"""The wire encoder: every event either refuses to encode or survives an independent WHATWG parser."""

from __future__ import annotations

import pytest
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.wire import WireFormatError, encode_comment, encode_event, encode_retry


def whatwg_lines(text: str) -> list[str]:
    """Complete lines of ``text``; CRLF, lone CR and lone LF each end one line (WHATWG)."""
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append("".join(current))
            current = []
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            current.append(char)
        i += 1
    return lines  # an unterminated last line is not a line yet


def decode_with_httpx_sse(wire: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = []
    for line in whatwg_lines(wire.decode("utf-8")):
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def normalise_line_breaks(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_with(chars: st.SearchStrategy[str], specials: list[str]) -> st.SearchStrategy[str]:
    """Text from ``chars`` with the ``specials`` made frequent."""
    return st.lists(st.text(chars, max_size=8) | st.sampled_from(specials), max_size=8).map("".join)


BREAKS = ["\r", "\n", "\r\n", "\x00", " ", ":"]
# Line breaks and NUL, but every character encodable.
multiline_text = text_with(st.characters(exclude_categories=("Cs",)), BREAKS)
# Any code point, lone surrogates included.
nasty_text = text_with(st.characters(exclude_categories=()), [*BREAKS, "\ud800", "\udfff"])
# Field values a publisher could legitimately send: anything but CR, LF, NUL and surrogates.
field_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=10)
any_field = st.none() | field_text | multiline_text | nasty_text


@settings(max_examples=300, deadline=None)
@given(data=multiline_text | nasty_text, event=any_field, event_id=any_field, as_bytes=st.booleans())
def test_any_event_is_rejected_or_decoded_back_by_httpx_sse(
    data: str, event: str | None, event_id: str | None, as_bytes: bool
) -> None:
    fields = [f for f in (event, event_id) if f is not None]
    must_reject = (
        event == "" or any(c in f for f in fields for c in "\r\n\x00") or any(has_surrogate(f) for f in [data, *fields])
    )
    payload: str | bytes = data.encode("utf-8") if as_bytes and not has_surrogate(data) else data
    try:
        wire = encode_event(payload, event=event, id=event_id)
    except WireFormatError:
        assert must_reject
        return
    assert not must_reject

    decoded = decode_with_httpx_sse(wire)

    assert len(decoded) == 1
    (parsed,) = decoded
    assert parsed.data == normalise_line_breaks(data)
    assert parsed.event == (event if event is not None else "message")
    assert parsed.id == (event_id if event_id is not None else "")
    assert (b"id:" in wire.split(b"\n")[0]) == (event_id is not None)


@settings(max_examples=100, deadline=None)
@given(
    data=st.text(max_size=30),
    event_id=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=10),
)
def test_bytes_data_encodes_like_the_same_text(data: str, event_id: str) -> None:
    as_text = encode_event(data, event="commit", id=event_id)
    as_bytes = encode_event(data.encode("utf-8"), event="commit", id=event_id)
    assert as_bytes == as_text


@settings(max_examples=100, deadline=None)
@given(text=st.lists(st.text(max_size=8) | st.sampled_from(["\r", "\n", "\r\n", ":", " "]), max_size=8).map("".join))
def test_comment_never_becomes_a_field_or_event(text: str) -> None:
    wire = encode_comment(text)
    assert wire.endswith(b"\n\n")
    lines = whatwg_lines(wire.decode("utf-8"))
    assert lines[-1] == ""
    assert all(line.startswith(":") for line in lines[:-1])
    assert decode_with_httpx_sse(wire) == []


def test_data_with_line_breaks_is_split_into_data_lines() -> None:
    wire = encode_event("a\r\nb\rc\nd", event="commit", id="1-0")
    assert wire == b"id: 1-0\nevent: commit\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_trailing_line_break_in_data_gives_an_empty_last_data_line() -> None:
    assert encode_event("a\n") == b"data: a\ndata: \n\n"


def test_empty_data_is_one_empty_data_line_so_the_event_still_dispatches() -> None:
    wire = encode_event("", event="commit")
    assert wire == b"event: commit\ndata: \n\n"
    (parsed,) = decode_with_httpx_sse(wire)
    assert (parsed.event, parsed.data) == ("commit", "")


def test_event_block_orders_id_then_event_then_data_and_ends_with_a_blank_line() -> None:
    assert encode_event(b'{"a":1}', event="commit", id="5-2") == b'id: 5-2\nevent: commit\ndata: {"a":1}\n\n'


def test_event_without_id_has_no_id_line() -> None:
    assert encode_event("x", event="commit") == b"event: commit\ndata: x\n\n"


def test_retry_is_written_first_in_the_same_block() -> None:
    wire = encode_event("x", event="connected", retry=3000)
    assert wire == b"retry: 3000\nevent: connected\ndata: x\n\n"
    (parsed,) = decode_with_httpx_sse(wire)
    assert (parsed.event, parsed.retry) == ("connected", 3000)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "a\x00b", "\n"])
@pytest.mark.parametrize("field", ["id", "event"])
def test_id_and_event_with_cr_lf_or_nul_are_rejected(field: str, bad: str) -> None:
    with pytest.raises(WireFormatError, match=field):
        encode_event("x", **{field: bad})


def test_empty_event_type_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="empty"):
        encode_event("x", event="")


@pytest.mark.parametrize("field", ["data", "id", "event"])
def test_lone_surrogate_in_any_text_is_rejected(field: str) -> None:
    values = {"data": "x", "id": "1-0", "event": "commit", field: "a\ud800b"}
    with pytest.raises(WireFormatError, match="UTF-8"):
        encode_event(values["data"], id=values["id"], event=values["event"])


def test_bytes_data_with_line_break_and_invalid_utf8_is_rejected() -> None:
    with pytest.raises(WireFormatError, match="UTF-8"):
        encode_event(b"\xff\n\xfe")


def test_bytes_data_with_line_breaks_is_split_like_text() -> None:
    assert encode_event(b"a\r\nb") == b"data: a\ndata: b\n\n"


def test_retry_field_is_its_own_block() -> None:
    assert encode_retry(1500) == b"retry: 1500\n\n"
    assert encode_retry(0) == b"retry: 0\n\n"


def test_negative_retry_is_rejected() -> None:
    with pytest.raises(WireFormatError):
        encode_retry(-1)
    with pytest.raises(WireFormatError):
        encode_event("x", retry=-1)


def test_empty_comment_is_a_bare_colon_line() -> None:
    assert encode_comment() == b":\n\n"
    assert encode_comment("") == b":\n\n"


def test_comment_with_line_breaks_becomes_several_comment_lines() -> None:
    assert encode_comment("ping\nid: 9\r\nevent: x") == b": ping\n: id: 9\n: event: x\n\n"


def test_comment_with_lone_surrogate_is_rejected() -> None:
    with pytest.raises(WireFormatError):
        encode_comment("\udc80")


def test_data_keeps_unicode_line_separators_that_whatwg_does_not_split_on() -> None:
    data = "a\u2028b\x85c\x0bd\x0ce"
    wire = encode_event(data)
    assert wire.count(b"data:") == 1
    (parsed,) = decode_with_httpx_sse(wire)
    assert parsed.data == data
