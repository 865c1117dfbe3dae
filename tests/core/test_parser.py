"""SSEParser: WHATWG event-stream interpretation, checked against httpx-sse and across chunkings."""

from __future__ import annotations

import math
import signal
import time

import pytest
from httpx_sse._decoders import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.core.parser import Comment, ParsedEvent, SSELimitError, SSEParser
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
    return [(i.type, i.data, i.last_event_id) for i in items if isinstance(i, ParsedEvent)]


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
    assert (event.type, event.data) == (" spaced", " x")


def test_block_without_data_dispatches_nothing_but_keeps_the_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\nevent: commit\n\n") == []
    assert parser.last_event_id == "7"
    (event,) = parser.feed(b"data: x\n\n")
    assert (event.type, event.id, event.last_event_id) == ("message", None, "7")


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


# -- the same events as the plain WHATWG algorithm, for any bytes and any chunking --------


class ReferenceParser:
    """The WHATWG algorithm written the plain way (main's parser before issue 11): the
    whole buffer re-searched and re-sliced for each line. Quadratic, so only for small
    inputs, but obviously right: the fast parser must agree with it on every stream."""

    def __init__(self) -> None:
        self.buffer = b""
        self.first = True
        self.pending_cr = False
        self.data: list[str] = []
        self.event = ""
        self.id: str | None = None
        self.has_id = False
        self.last_event_id = ""
        self.dispatched_last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ParsedEvent | Comment]:
        self.buffer += chunk
        out: list[ParsedEvent | Comment] = []
        while True:
            buf = self.buffer
            if self.pending_cr and buf:
                buf = buf.removeprefix(b"\n")
                self.pending_cr = False
            ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
            if not ends:
                self.buffer = buf
                return out
            end = min(ends)
            raw, skip = buf[:end], 2 if buf[end : end + 2] == b"\r\n" else 1
            self.pending_cr = skip == 1 and buf[end : end + 1] == b"\r" and end + 1 == len(buf)
            self.buffer = buf[end + skip :]
            line = raw.decode("utf-8", errors="replace")
            if self.first:
                self.first = False
                line = line.removeprefix("\ufeff")
            self.line(line, out)

    def line(self, line: str, out: list[ParsedEvent | Comment]) -> None:
        if line == "":
            self.dispatched_last_event_id = self.last_event_id
            event_id = self.id if self.has_id else None
            if self.data:
                out.append(
                    ParsedEvent(self.event or "message", "\n".join(self.data), event_id, self.last_event_id, self.retry)
                )
            self.data, self.event, self.id, self.has_id = [], "", None, False
            return
        if line.startswith(":"):
            out.append(Comment(line[1:].removeprefix(" ")))
            return
        name, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\x00" not in value:
            self.id, self.has_id, self.last_event_id = value, True, value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)


SSE_TOKENS = [
    b"data",
    b"event",
    b"id",
    b"retry",
    b"dat",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xef\xbb",
    b"\xff",
    b"\xe2\x82",
    b"\xc3\xa9",
    b"7",
    b"0012",
    b"x",
]
sse_bytes = st.lists(st.sampled_from(SSE_TOKENS) | st.binary(max_size=4), max_size=40).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(stream=sse_bytes, data=st.data())
def test_parser_matches_the_plain_whatwg_algorithm_on_any_bytes_and_any_split(stream: bytes, data) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    reference = ReferenceParser()
    expected = reference.feed(stream)
    for chunks in (feed_in_chunks, lambda s, c: feed_in_chunks(s, list(range(len(s))))):
        assert chunks(stream, cuts) == expected
    parser = SSEParser()
    assert parser.feed(stream) == expected
    assert (parser.last_event_id, parser.dispatched_last_event_id, parser.retry) == (
        reference.last_event_id,
        reference.dispatched_last_event_id,
        reference.retry,
    )
    assert bytes(parser._buffer) == reference.buffer  # the same unfinished line is kept


def test_a_retry_too_long_for_int_means_never_and_does_not_crash() -> None:
    parser = SSEParser()
    parser.feed(b"retry: " + b"9" * 5000 + b"\n\n")  # int() refuses more than 4300 digits
    assert parser.retry == 10**15  # 31,000 years: every client caps it anyway
    parser.feed(b"retry: 000000000000000000000000250\n\n")
    assert parser.retry == 250


# -- linear time ---------------------------------------------------------------------------

MIB = 1024 * 1024


class TooSlow(Exception):
    pass


def feed_time(chunks: list[bytes], budget: float) -> float:
    """Seconds to feed ``chunks`` to a parser with no limits; ``TooSlow`` past ``budget``
    (a quadratic parser would otherwise take minutes to fail)."""

    def expire(signum: int, frame: object) -> None:
        raise TooSlow(f"more than {budget:.2f} s")

    parser = SSEParser(max_line_bytes=None, max_event_bytes=None)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        start = time.perf_counter()
        for chunk in chunks:
            parser.feed(chunk)
        return time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def short_lines(size: int) -> list[bytes]:
    return [b"data: x\n\n" * (size // 9)]


def one_long_line(size: int) -> list[bytes]:
    return [b"data: " + b"x" * (size - 8) + b"\n\n"]


def long_line_in_pieces(size: int) -> list[bytes]:
    piece = 16 * 1024  # what a socket read returns while a server streams an endless line
    return [b"data: ", *[b"x" * piece] * (size // piece), b"\n\n"]


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
@pytest.mark.parametrize("shape", [short_lines, one_long_line, long_line_in_pieces])
def test_parsing_time_grows_linearly_with_the_chunk(shape) -> None:
    # 4 times the bytes must cost well under 8 times the time (a quadratic parser: 16
    # times, and ~70 for main's parser on short lines). Best of 3 for the 1 MiB time; the
    # 4 MiB one is tried up to 3 times, until one run is fast enough: the first run of
    # the long-line shapes also pays for the allocator mapping fresh 4 MiB blocks.
    small = min(feed_time(shape(MIB), 60) for _ in range(3))
    # A floor for the sub-millisecond shapes, where page faults on fresh 4 MiB blocks (1 MiB
    # ones reuse the heap) weigh more than the parsing: 4 MiB parsed in 50 ms is fine anyway.
    budget = max(8 * small, 0.05)
    ratios: list[float] = []
    while len(ratios) < 3 and not (ratios and ratios[-1] * small < budget):
        big = shape(4 * MIB)
        try:
            ratios.append(feed_time(big, budget) / small)
        except TooSlow:
            ratios.append(math.inf)
    assert ratios[-1] * small < budget, (small, ratios)


# -- bounds --------------------------------------------------------------------------------


def test_a_line_longer_than_max_line_bytes_is_refused_with_what_came_before() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(SSELimitError, match="line is longer than 100 bytes") as refused:
        parser.feed(b"data: a\n\n: hi\n" + b"data: " + b"x" * 95 + b"\n\n")
    assert refused.value.items == [ParsedEvent("message", "a", None, ""), Comment("hi")]
    with pytest.raises(SSELimitError):  # broken for good: the caller must start again
        parser.feed(b"data: b\n\n")


def test_a_line_of_exactly_max_line_bytes_is_accepted() -> None:
    line = b"data: " + b"x" * 94
    assert len(line) == 100
    for ending in (b"\n", b"\r", b"\r\n"):
        expected = [ParsedEvent("message", "x" * 94, None, "")]
        assert SSEParser(max_line_bytes=100).feed(line + ending + ending) == expected


def test_a_line_that_never_ends_is_refused_once_it_passes_the_limit_and_holds_no_more() -> None:
    parser = SSEParser(max_line_bytes=MIB)
    parser.feed(b"data: ")
    fed = 6
    with pytest.raises(SSELimitError):
        while True:
            fed += 4096
            parser.feed(b"x" * 4096)
            assert len(parser._buffer) <= MIB
    assert MIB < fed <= MIB + 4096  # refused at the chunk that crossed the limit, not at a line end
    assert not parser._buffer  # and what it held is let go


def test_an_event_whose_data_passes_max_event_bytes_is_refused() -> None:
    parser = SSEParser(max_line_bytes=100, max_event_bytes=1000)
    with pytest.raises(SSELimitError, match="event's data is longer than 1000 bytes"):
        for _ in range(1000):
            parser.feed(b"data: 123456789\n")  # 9 bytes + the joining LF each: refused at the 101st
    assert not parser._data


def test_an_event_of_exactly_max_event_bytes_is_accepted_and_the_count_restarts_after_it() -> None:
    parser = SSEParser(max_event_bytes=20)
    block = b"data: 123456789\ndata: 123456789\n: comments do not count\nevent: nor the type\n\n"
    (event,) = [i for i in parser.feed(block) if isinstance(i, ParsedEvent)]
    assert len(event.data.encode()) == 19
    assert len([i for i in parser.feed(block * 50) if isinstance(i, ParsedEvent)]) == 50
    assert parser.feed(b"data: 123456789\ndata: 1234567890\n\n")  # 9 + 1 + 10 = 20 is fine, 21 is not
    with pytest.raises(SSELimitError):
        SSEParser(max_event_bytes=20).feed(b"data: 123456789\ndata: 12345678901\n\n")


def test_limits_of_none_accept_anything() -> None:
    parser = SSEParser(max_line_bytes=None, max_event_bytes=None)
    big = b"x" * (3 * MIB)
    (event,) = parser.feed(b"data: " + big + b"\ndata: " + big + b"\n\n")
    assert len(event.data) == 6 * MIB + 1


def test_the_default_limits_are_one_mib() -> None:
    parser = SSEParser()
    assert (parser.max_line_bytes, parser.max_event_bytes) == (MIB, MIB)
    with pytest.raises(SSELimitError):
        parser.feed(b"data: " + b"x" * MIB)


# -- web-platform-tests' eventsource format cases -----------------------------------------
# The streams of WPT's eventsource/format-*.any.js (as their message.py sends them, with
# the final blank line it adds), each with what a browser dispatches: (type, data, last id).

WPT_FORMAT_CASES = {
    "bom": (
        b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
        [("message", "1", ""), ("message", "3", "")],
        None,
    ),
    "bom-2": (
        b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n",
        [("message", "2", ""), ("message", "3", "")],
        None,
    ),
    "comments": (
        b"data:1\r:\0\n:\r\ndata:2\n:" + b"x" * 2049 + b"\rdata:3\n:data:fail\r:" + b"y" * 2049 + b"\ndata:4\n\n",
        [("message", "1\n2\n3\n4", "")],
        None,
    ),
    "data-before-final-empty-line": (
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        [("message", "test1", "")],
        1000,
    ),
    "field-data": (
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        [("message", "", ""), ("message", "\n", ""), ("message", "test", "")],
        None,
    ),
    "field-event": (b"event:test\ndata:x\n\ndata:x\n\n", [("test", "x", ""), ("message", "x", "")], None),
    "field-event-empty": (b"event: \ndata:data\n\n", [("message", "data", "")], None),
    "field-id": (b"id: 1\ndata: x\n\nid:\ndata:y\n\n", [("message", "x", "1"), ("message", "y", "")], None),
    "field-id-null": (b"id:1\x00\ndata:x\n\n", [("message", "x", "")], None),
    "field-parsing": (
        b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n"
        b" data:32\ndata:4\n\n",
        [("message", "\0\n 2\n1\n3\n\n4", "")],
        None,
    ),
    "field-retry": (b"retry:03000\ndata:x\n\n", [("message", "x", "")], 3000),
    "field-retry-bogus": (b"retry:3000\nretry:1000x\ndata:x\n\n", [("message", "x", "")], 3000),
    "field-retry-empty": (b"retry\ndata:test\n\n", [("message", "test", "")], None),
    "field-unknown": (
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        [("message", "test\n\ntest", "")],
        None,
    ),
    "leading-space": (b"data:\x20\x20test\n\n", [("message", " test", "")], None),
    "newlines": (b"data:test\r\ndata\ndata:test\r\n\r\n", [("message", "test\n\ntest", "")], None),
    "null-character": (b"data:\0\n\n\n\n", [("message", "\0", "")], None),
    "utf-8": (b"data:ok\xe2\x80\xa6\n\n", [("message", "ok\u2026", "")], None),
}


@pytest.mark.parametrize("name", list(WPT_FORMAT_CASES))
def test_wpt_eventsource_format_cases_give_what_a_browser_dispatches(name: str) -> None:
    stream, expected, retry = WPT_FORMAT_CASES[name]
    for cuts in ([], list(range(len(stream))), *[[i] for i in range(len(stream))]):
        parser = SSEParser()
        items: list[ParsedEvent | Comment] = []
        start = 0
        for cut in [*cuts, len(stream)]:
            items += parser.feed(stream[start:cut])
            start = cut
        assert [(e.type, e.data, e.last_event_id) for e in items if isinstance(e, ParsedEvent)] == expected, cuts
        assert parser.retry == retry


def feed_until_refused(stream: bytes, cuts: list[int], **limits: int) -> tuple[list[ParsedEvent | Comment], bool]:
    """Everything parsed from ``stream`` fed in pieces, and whether a limit stopped it."""
    parser = SSEParser(**limits)
    out: list[ParsedEvent | Comment] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        try:
            out += parser.feed(stream[start:cut])
        except SSELimitError as exc:
            return out + exc.items, True
        start = cut
    return out, False


@settings(max_examples=300, deadline=None)
@given(
    stream=sse_bytes,
    max_line_bytes=st.integers(0, 24),
    max_event_bytes=st.integers(0, 32),
    data=st.data(),
)
def test_limits_refuse_the_same_streams_with_the_same_items_however_they_are_split(
    stream: bytes, max_line_bytes: int, max_event_bytes: int, data
) -> None:
    limits = {"max_line_bytes": max_line_bytes, "max_event_bytes": max_event_bytes}
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts")
    whole = feed_until_refused(stream, [], **limits)
    assert feed_until_refused(stream, cuts, **limits) == whole
    assert feed_until_refused(stream, list(range(len(stream))), **limits) == whole
    items, refused = whole
    if not refused:  # under its limits a stream parses exactly as with none
        assert items == SSEParser(max_line_bytes=None, max_event_bytes=None).feed(stream)


def test_a_leading_bom_does_not_count_towards_the_first_line() -> None:
    stream = b"\xef\xbb\xbfdata: xx\n\n"  # an 8-byte line after the BOM
    for cut in range(len(stream) + 1):
        parser = SSEParser(max_line_bytes=8)
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == [ParsedEvent("message", "xx", None, "")]
