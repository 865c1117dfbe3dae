"""A WHATWG ``text/event-stream`` parser: bytes in, parsed items out (sans-IO).

Used by :mod:`trio_sse.testing` and the client. It follows the HTML standard's
"event stream interpretation": lines end in CR, LF or CRLF; a blank line dispatches;
``data`` lines are joined with LF; an ``id`` containing NUL is ignored; ``retry``
must be all ASCII digits; a leading UTF-8 BOM is dropped.
"""

from __future__ import annotations

import attrs

__all__ = ["Comment", "ParsedEvent", "SSEParser"]


@attrs.frozen(slots=True)
class ParsedEvent:
    event: str
    data: str
    id: str | None
    """The event's ``id:`` field if it had one (``None`` if it did not)."""
    last_event_id: str
    """The stream's last event id after this event (what a browser would send back)."""
    retry: int | None = None


@attrs.frozen(slots=True)
class Comment:
    text: str


class SSEParser:
    """Feed bytes with :meth:`feed`; get back events and comments in stream order."""

    def __init__(self) -> None:
        self._buffer = b""
        self._first = True
        self._pending_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._has_id = False
        self.last_event_id = ""
        #: ``last_event_id`` as of the last dispatched block (WHATWG's "last event ID
        #: string"): moved by an ``id:``-only block too, but not by an unfinished one.
        self.dispatched_last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ParsedEvent | Comment]:
        self._buffer += chunk
        out: list[ParsedEvent | Comment] = []
        while True:
            line, ok = self._next_line()
            if not ok:
                return out
            self._process(line, out)

    def _next_line(self) -> tuple[str, bool]:
        buf = self._buffer
        if self._pending_cr and buf:
            if buf.startswith(b"\n"):
                buf = buf[1:]
            self._pending_cr = False
        cr, lf = buf.find(b"\r"), buf.find(b"\n")
        ends = [i for i in (cr, lf) if i >= 0]
        if not ends:
            self._buffer = buf
            return "", False
        end = min(ends)
        raw = buf[:end]
        if buf[end : end + 2] == b"\r\n":
            rest = buf[end + 2 :]
        else:
            rest = buf[end + 1 :]
            if buf[end : end + 1] == b"\r" and end + 1 == len(buf):
                self._pending_cr = True  # a CR at the end of a chunk may be half of a CRLF
        self._buffer = rest
        text = raw.decode("utf-8", errors="replace")
        if self._first:
            self._first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        return text, True

    def _process(self, line: str, out: list[ParsedEvent | Comment]) -> None:
        if line == "":
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(Comment(line[1:].removeprefix(" ")))
            return
        name, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id = value
                self._has_id = True
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self, out: list[ParsedEvent | Comment]) -> None:
        self.dispatched_last_event_id = self.last_event_id
        event_id = self._id if self._has_id else None
        data, event = self._data, self._event
        self._data, self._event, self._id, self._has_id = [], "", None, False
        if not data:
            return
        out.append(ParsedEvent(event or "message", "\n".join(data), event_id, self.last_event_id, self.retry))
