"""WHATWG EventSource wire encoding.

Turns fields into the bytes of one ``text/event-stream`` block. It validates what a
publisher controls so that no value can inject a field or a second event: ``id`` and
``event`` may not contain CR, LF or NUL, and data with line breaks is split into
several ``data:`` lines, exactly as the WHATWG parser joins them back.
"""

from __future__ import annotations

import re

__all__ = [
    "WireFormatError",
    "encode_comment",
    "encode_event",
    "encode_retry",
]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


class WireFormatError(ValueError):
    """A value cannot be written as an SSE field without changing its meaning."""


def _check_field(name: str, value: str) -> None:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise WireFormatError(f"{name} must not contain CR, LF or NUL: {value!r}")


def _utf8(value: str, name: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireFormatError(f"{name} is not encodable as UTF-8: {exc.reason}") from exc


def encode_data_lines(data: str | bytes) -> bytes:
    """``data:`` lines for a payload; a payload with line breaks becomes several lines.

    ``bytes`` must be UTF-8 (as JSON from orjson always is); a payload with no line
    break, the common case for compact JSON, is framed without being decoded.
    """
    if isinstance(data, bytes):
        if b"\n" not in data and b"\r" not in data:
            return b"data: " + data + b"\n"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"data is not valid UTF-8: {exc.reason}") from exc
    else:
        text = data
    return b"".join(b"data: " + _utf8(line, "data") + b"\n" for line in _LINE_BREAK.split(text))


def encode_event(
    data: str | bytes,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event block, terminated by the blank line that dispatches it.

    Raises :class:`WireFormatError` when ``id`` or ``event`` contains CR, LF or NUL,
    when ``event`` is empty (a parser would turn it into ``message``), or when text
    cannot be encoded as UTF-8. Nothing is written in that case. ``retry`` (ms) is
    written first, in the same block, so clients that report retry-only blocks as
    events (httpx-sse does) see no empty event.
    """
    head = b"" if retry is None else encode_retry(retry)[:-1]
    if id is not None:
        _check_field("id", id)
        head += b"id: " + _utf8(id, "id") + b"\n"
    if event is not None:
        if not event:
            raise WireFormatError("event type must not be empty")
        _check_field("event", event)
        head += b"event: " + _utf8(event, "event") + b"\n"
    return head + encode_data_lines(data) + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """The ``retry:`` field telling clients how long to wait before reconnecting."""
    if milliseconds < 0:
        raise WireFormatError(f"retry must be >= 0, got {milliseconds}")
    return b"retry: %d\n\n" % milliseconds


def encode_comment(text: str = "") -> bytes:
    """A comment block (ignored by clients, keeps proxies from closing an idle stream).

    Line breaks in ``text`` start new comment lines, so a comment can never become a field.
    """
    lines = _LINE_BREAK.split(text) if text else [""]
    return b"".join(b":" + (b" " + _utf8(line, "comment") if line else b"") + b"\n" for line in lines) + b"\n"
