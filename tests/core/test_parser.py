"""SSEParser: WHATWG event-stream interpretation, checked against httpx-sse and across chunkings."""

from __future__ import annotations

import pytest
from httpx_sse._decoders import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.parser import Comment, ParsedEvent, SSEParser
from trio_sse.core.wire import WireFormatError, encode_comment, encode_event


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
    return lines


def httpx_sse_view(stream: bytes) -> list[tuple[str, str, str]]:
    """(event, data, last event id) of each event httpx-sse decodes from ``stream``."""
    decoder = SSEDecoder()
    out = []
    for line in whatwg_lines(stream.decode("utf-8")):
        event = decoder.decode(line)
        if event is not None:
            out.append((event.event, event.data, event.id))
    return out


def normalise_line_breaks(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def our_view(items: list[ParsedEvent | Comment]) -> list[tuple[str, str, str]]:
    return [(i.event, i.data, i.last_event_id) for i in items if isinstance(i, ParsedEvent)]


def feed_in_chunks(stream: bytes, cuts: list[int]) -> list[ParsedEvent | Comment]:
    parser = SSEParser()
    out: list[ParsedEvent | Comment] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += parser.feed(stream[start:cut])
        start = cut
    return out


def text_with(chars: st.SearchStrategy[str], specials: list[str]) -> st.SearchStrategy[str]:
    """Text from ``chars`` with the ``specials`` made frequent."""
    return st.lists(st.text(chars, max_size=6) | st.sampled_from(specials), max_size=6).map("".join)


BREAKS = ["\r", "\n", "\r\n", "\x00", " ", ":", "\ufeff"]
multiline_text = text_with(st.characters(exclude_categories=("Cs",)), BREAKS)
nasty_text = multiline_text | text_with(st.characters(exclude_categories=()), [*BREAKS, "\ud800"])
field_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=10)
blocks = st.one_of(
    st.tuples(st.just("event"), nasty_text, st.none() | field_text | nasty_text, st.none() | field_text | nasty_text),
    st.tuples(st.just("comment"), nasty_text, st.none(), st.none()),
)


def encode_blocks(
    parts: list[tuple[str, str, str | None, str | None]],
) -> list[tuple[str, bytes, tuple[str | None, str]]]:
    """The blocks that encode: (kind, bytes, (id, data) for an event or (None, text) for a comment)."""
    out = []
    for kind, text, event, event_id in parts:
        try:
            if kind == "comment":
                out.append((kind, encode_comment(text), (None, text)))
            else:
                out.append((kind, encode_event(text, event=event, id=event_id), (event_id, text)))
        except WireFormatError:
            continue
    return out


def with_line_endings(stream: bytes, endings: list[bytes]) -> bytes:
    """Re-terminate every LF-ended line of ``stream`` with the next of ``endings`` (cycled)."""
    lines = stream.split(b"\n")[:-1]
    out = b""
    previous = b"\n"
    for i, line in enumerate(lines):
        ending = endings[i % len(endings)]
        if previous == b"\r" and line == b"" and ending == b"\n":
            ending = b"\r\n"  # CR then an empty LF line would read as one CRLF
        out += line + ending
        previous = ending
    return out


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(blocks, max_size=5),
    endings=st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=1, max_size=6),
    data=st.data(),
)
def test_parser_agrees_with_httpx_sse_however_the_stream_is_chunked(parts, endings, data) -> None:
    encoded = encode_blocks(parts)
    stream = with_line_endings(b"".join(block for _, block, _ in encoded), endings)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts")
    cr_lf_splits = [i + 1 for i in range(len(stream) - 1) if stream[i : i + 2] == b"\r\n"]
    cuts += data.draw(st.lists(st.sampled_from(cr_lf_splits), max_size=3), label="cr|lf") if cr_lf_splits else []

    whole = SSEParser().feed(stream)
    chunked = feed_in_chunks(stream, cuts)
    byte_by_byte = feed_in_chunks(stream, list(range(len(stream))))

    assert chunked == whole
    assert byte_by_byte == whole
    # httpx-sse dispatches an empty event for a comment block once an id was seen (WHATWG
    # does not), so it is given the same stream without the comment blocks.
    events_only = with_line_endings(b"".join(block for kind, block, _ in encoded if kind == "event"), endings)
    assert our_view(whole) == httpx_sse_view(events_only)
    assert [(e.id, e.data) for e in whole if isinstance(e, ParsedEvent)] == [
        (event_id, normalise_line_breaks(text)) for kind, _, (event_id, text) in encoded if kind == "event"
    ]
    assert [c.text for c in whole if isinstance(c, Comment)] == [
        line for kind, _, (_, text) in encoded if kind == "comment" for line in normalise_line_breaks(text).split("\n")
    ]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [ParsedEvent("message", "a", None, "")]
    assert parser.feed(b"\ndata: b\n\n") == [ParsedEvent("message", "b", None, "")]


def test_cr_at_chunk_end_followed_by_cr_is_a_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [ParsedEvent("message", "a", None, "")]


def test_empty_chunk_after_cr_keeps_waiting_for_a_possible_lf() -> None:
    parser = SSEParser()
    parser.feed(b"data: a\r")
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [ParsedEvent("message", "a", None, "")]


def test_data_lines_are_joined_with_lf() -> None:
    assert SSEParser().feed(b"data: a\ndata:b\ndata\n\n") == [ParsedEvent("message", "a\nb\n", None, "")]


def test_only_one_leading_space_of_a_value_is_dropped() -> None:
    (event,) = SSEParser().feed(b"event:  spaced\ndata:  x\n\n")
    assert (event.event, event.data) == (" spaced", " x")


def test_block_without_data_dispatches_nothing_but_keeps_the_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\nevent: commit\n\n") == []
    assert parser.last_event_id == "7"
    (event,) = parser.feed(b"data: x\n\n")
    assert (event.event, event.id, event.last_event_id) == ("message", None, "7")


def test_last_event_id_persists_across_events_without_id() -> None:
    items = SSEParser().feed(b"id: 1-0\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n")
    assert [(e.id, e.last_event_id) for e in items] == [("1-0", "1-0"), (None, "1-0"), ("", "")]


def test_id_containing_nul_is_ignored() -> None:
    parser = SSEParser()
    (event,) = parser.feed(b"id: 1\n\nid: a\x00b\ndata: x\n\n")
    assert (event.id, event.last_event_id) == (None, "1")


def test_retry_with_only_ascii_digits_is_kept_and_anything_else_ignored() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 2500\n\n")
    assert parser.retry == 2500
    for bad in (b"retry: 12x\n\n", b"retry: -5\n\n", b"retry: \xd9\xa1\n\n", b"retry:\n\n"):
        parser.feed(bad)
        assert parser.retry == 2500
    (event,) = parser.feed(b"retry: 100\ndata: x\n\n")
    assert event.retry == 100


def test_comments_are_reported_without_the_colon_and_one_space() -> None:
    assert SSEParser().feed(b":\n: ping\n:  two\n") == [Comment(""), Comment("ping"), Comment(" two")]


def test_unknown_fields_are_ignored() -> None:
    assert SSEParser().feed(b"foo: bar\ndata: x\nDATA: y\n\n") == [ParsedEvent("message", "x", None, "")]


def test_leading_bom_is_dropped_only_at_the_start_of_the_stream() -> None:
    parser = SSEParser()
    first = parser.feed(b"\xef\xbb")
    assert first == []
    (event,) = parser.feed(b"\xbfdata: a\n\n")
    assert event.data == "a"
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == []  # "\ufeffdata" is an unknown field


def test_multibyte_character_split_across_chunks_is_decoded_whole() -> None:
    encoded = "data: é€😀\n\n".encode()
    parser = SSEParser()
    out = []
    for i in range(len(encoded)):
        out += parser.feed(encoded[i : i + 1])
    assert out == [ParsedEvent("message", "é€😀", None, "")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    (event,) = SSEParser().feed(b"data: a\xffb\n\n")
    assert event.data == "a\ufffdb"


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_dispatches(ending: bytes) -> None:
    stream = b"event: commit" + ending + b"data: x" + ending + ending
    assert SSEParser().feed(stream) == [ParsedEvent("commit", "x", None, "")]


def test_unterminated_event_is_not_dispatched() -> None:
    assert SSEParser().feed(b"data: x\n") == []
    assert SSEParser().feed(b"data: x") == []
