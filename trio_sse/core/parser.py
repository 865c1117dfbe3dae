"""A WHATWG ``text/event-stream`` parser: bytes in, parsed items out (sans-IO).

Used by :mod:`trio_sse.testing` and the client. It follows the HTML standard's
"event stream interpretation": lines end in CR, LF or CRLF; a blank line dispatches;
``data`` lines are joined with LF; an ``id`` containing NUL is ignored; ``retry``
must be all ASCII digits; a leading UTF-8 BOM is dropped.

It must stay O(bytes fed) whatever the server sends, like h11's receive buffer
("O(bytes read) to avoid DoS"): each byte is searched for a line end once (the new
chunk only, never the buffered part of a line again), a chunk is split into lines in
one pass, and the consumed part of the buffer is never copied per line. A peer that
sends a 4 MiB chunk of short lines costs four times a 1 MiB one, not sixteen.

It must also hold a bounded amount of the peer's bytes: a line (``max_line_bytes``)
and the data of the event being assembled (``max_event_bytes``) have limits, and
going past one raises :class:`SSELimitError` at once, without waiting for the end of
the line, so a line that never ends cannot grow the buffer without end.
"""

from __future__ import annotations

import math
import warnings

import attrs

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "DEFAULT_MAX_LINE_BYTES", "Comment", "ParsedEvent", "SSELimitError", "SSEParser"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
"""A line longer than this (terminator excluded) is refused. 16 times trio_sse's
default ``max_event_bytes`` (64 KiB) and any reasonable JSON document of another server."""

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
"""The data of one event (its ``data:`` values joined with LF) longer than this is refused."""

_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = (b"\r", b"\n")


@attrs.frozen(slots=True)
class ParsedEvent:
    """One dispatched event, named like :class:`trio_sse.client.Event`: ``type``, ``data``, ``id``."""

    type: str
    """The ``event:`` field (``"message"`` when the block had none)."""
    data: str
    id: str | None
    """The event's ``id:`` field if it had one (``None`` if it did not)."""
    last_event_id: str
    """The stream's last event id after this event (what a browser would send back)."""
    retry: int | None = None

    @property
    def event(self) -> str:
        """Deprecated alias of :attr:`type` (the name ``trio_sse.client.Event`` uses); goes in 0.3."""
        warnings.warn(
            "ParsedEvent.event is deprecated, use ParsedEvent.type (as trio_sse.client.Event does)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.type


@attrs.frozen(slots=True)
class Comment:
    text: str


class SSELimitError(ValueError):
    """A line or an event went past the parser's limit.

    ``items`` holds what the same :meth:`SSEParser.feed` call had parsed before the
    offending line, in order, so that nothing complete is lost with the error. After
    this the parser is broken: every later :meth:`~SSEParser.feed` raises again
    (a stream that went wrong once is not resynchronised; reconnect with a new parser).
    """

    def __init__(self, message: str, items: list[ParsedEvent | Comment]) -> None:
        super().__init__(message)
        self.items = items


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class SSEParser:
    """Feed bytes with :meth:`feed`; get back events and comments in stream order.

    ``max_line_bytes`` and ``max_event_bytes`` bound what the parser holds (``None``:
    no limit, for a peer you trust, such as your own app under test).
    """

    def __init__(
        self,
        *,
        max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        self._line_limit = math.inf if max_line_bytes is None else max_line_bytes
        self._buffer = bytearray()  # the start of a line whose end has not arrived yet
        self._first = True
        self._pending_cr = False
        self._data: list[str] = []
        self._data_bytes = 0
        self._event = ""
        self._id: str | None = None
        self._has_id = False
        self._broken: str | None = None
        self.last_event_id = ""
        #: ``last_event_id`` as of the last dispatched block (WHATWG's "last event ID
        #: string"): moved by an ``id:``-only block too, but not by an unfinished one.
        self.dispatched_last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ParsedEvent | Comment]:
        """Parse ``chunk``; return the events and comments it completed, in order.

        Raises :class:`SSELimitError` when a line or an event goes past its limit
        (including a line whose end has not arrived yet), and on every call after that.
        """
        if self._broken is not None:
            raise SSELimitError(self._broken, [])
        out: list[ParsedEvent | Comment] = []
        if not chunk:
            return out
        if self._pending_cr:
            # The previous chunk ended in CR, which ended a line; an LF now is the rest of that CRLF.
            self._pending_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return out
        # One C pass over the new bytes only: bytes.splitlines breaks at exactly CR, LF and CRLF.
        lines = chunk.splitlines()
        tail = b""
        if not chunk.endswith(_LINE_ENDS):
            tail = lines.pop()  # no end yet: the start of a line, kept in the buffer
        elif chunk.endswith(b"\r"):
            self._pending_cr = True  # a CR at the end of a chunk may be half of a CRLF
        if lines:
            if self._buffer:
                lines[0] = bytes(self._buffer) + lines[0]
                self._buffer.clear()
            if self._first:
                self._first = False
                lines[0] = lines[0].removeprefix(_BOM)
            process = self._process
            for line in lines:
                process(line, out)
        if tail:
            # The first line may still lose a BOM, which is not part of the line.
            if len(self._buffer) + len(tail) > self._line_limit + (len(_BOM) if self._first else 0):
                self._fail(f"a line is longer than {self.max_line_bytes} bytes", out)
            self._buffer += tail
        return out

    def _fail(self, message: str, out: list[ParsedEvent | Comment]) -> None:
        self._broken = message
        self._buffer.clear()
        self._data = []
        raise SSELimitError(message, out)

    def _process(self, line: bytes, out: list[ParsedEvent | Comment]) -> None:
        if len(line) > self._line_limit:
            self._fail(f"a line is longer than {self.max_line_bytes} bytes", out)
        if not line:
            self._dispatch(out)
            return
        colon = line.find(b":")
        if colon == 0:
            out.append(Comment(_decode(line[2:] if line.startswith(b": ") else line[1:])))
            return
        if colon < 0:  # a field name alone: its value is empty
            name, raw = line, b""
        else:
            name = line[:colon]
            # One slice for the value (a long data line is copied once, not once per step).
            raw = line[colon + 2 :] if line.startswith(b" ", colon + 1) else line[colon + 1 :]
        if name == b"data":
            self._data_bytes += len(raw) + (1 if self._data else 0)
            if self.max_event_bytes is not None and self._data_bytes > self.max_event_bytes:
                self._fail(f"an event's data is longer than {self.max_event_bytes} bytes", out)
            self._data.append(_decode(raw))
        elif name == b"event":
            self._event = _decode(raw)
        elif name == b"id":
            if b"\x00" not in raw:
                value = _decode(raw)
                self._id = value
                self._has_id = True
                self.last_event_id = value
        elif name == b"retry":
            if raw.isdigit():  # bytes.isdigit: ASCII digits only, and not empty
                # int() refuses more than 4300 digits; past 15 digits (31,000 years) the
                # value means "never" anyway, and every client caps it.
                digits = raw.lstrip(b"0")
                self.retry = int(digits or b"0") if len(digits) <= 15 else 10**15

    def _dispatch(self, out: list[ParsedEvent | Comment]) -> None:
        self.dispatched_last_event_id = self.last_event_id
        event_id = self._id if self._has_id else None
        data, event = self._data, self._event
        self._data, self._data_bytes, self._event, self._id, self._has_id = [], 0, "", None, False
        if not data:
            return
        out.append(ParsedEvent(event or "message", "\n".join(data), event_id, self.last_event_id, self.retry))
