"""Parsing of query strings and headers for the stream endpoint (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import attrs

from ..core.errors import InvalidTags, InvalidValue
from ..core.validation import (
    MAX_EVENT_ID_LENGTH,
    TagFilter,
    check_project_id,
    check_rewind,
    check_tag_filter,
    has_forbidden_characters,
)
from .errors import ApiError

__all__ = ["MAX_QUERY_FIELDS", "MAX_TYPES", "StreamParams", "parse_stream_params", "request_head_size"]

MAX_TYPES = 64
MAX_QUERY_FIELDS = 100
MAX_QUERY_BYTES = 8192


@attrs.frozen(slots=True)
class StreamParams:
    event_types: tuple[str, ...] | None
    project_id: str | None
    last_event_id: str | None
    access_token: str | None
    #: From ``tag.<name>=v1,v2`` parameters; ``()`` = no tag filter.
    tags: TagFilter = ()
    #: Events to send from the newest end before live ones (``rewind=N``); always 0 with
    #: a ``last_event_id``: a reconnect resumes, it never rewinds.
    rewind: int = 0


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    if len(raw) > MAX_QUERY_BYTES:
        raise bad_request(f"query string longer than {MAX_QUERY_BYTES} bytes")
    try:
        return parse_qsl(
            raw.decode("ascii"),
            keep_blank_values=True,
            max_num_fields=MAX_QUERY_FIELDS,
            encoding="utf-8",
            errors="strict",
        )
    except UnicodeDecodeError:
        raise bad_request("query string is not valid UTF-8") from None
    except ValueError:
        raise bad_request(f"more than {MAX_QUERY_FIELDS} query parameters") from None


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes, encoding: str = "utf-8") -> str | None:
    """A header's value (the first one), decoded as ``encoding``; 400 if it cannot be."""
    for key, value in headers:
        if key.lower() == name:
            try:
                return value.decode(encoding)
            except UnicodeDecodeError:
                raise bad_request(f"header {name.decode()} is not valid UTF-8") from None
    return None


#: What a request line adds to its method and target: two spaces, ``HTTP/1.1`` and CRLF;
#: plus the CRLF of the blank line that ends the head.
_REQUEST_LINE_AND_END = 2 + len(b"HTTP/1.1") + 2 + 2


def request_head_size(scope: dict[str, Any]) -> int:
    """The bytes of an ASGI request's head as HTTP/1.1 puts it on the wire, as h11 counts
    its receive buffer against ``h11_max_incomplete_size``: the request line
    (``METHOD /path?query HTTP/1.1`` CRLF), one ``name: value`` CRLF line per header, the
    blank line. Whitespace around header values, which h11 strips, is not seen, so this
    never counts more than the client sent. HTTP/2 heads are counted the same way.
    """
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    size = len(scope["method"]) + len(path) + (len(query) + 1 if query else 0) + _REQUEST_LINE_AND_END
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


def client_address(scope: dict[str, Any]) -> str | None:
    """The peer address of an ASGI request, if the server gave one."""
    client = scope.get("client")
    return client[0] if client else None


def _single(values: list[str], name: str) -> str | None:
    distinct = set(values)
    if len(distinct) > 1:
        raise bad_request(f"{name} given more than once with different values")
    return values[0] if values else None


def _event_id(value: str | None, where: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_EVENT_ID_LENGTH or has_forbidden_characters(value):
        raise bad_request(
            f"{where} must be at most {MAX_EVENT_ID_LENGTH} characters without control characters or line separators"
        )
    return value


def parse_stream_params(
    query_string: bytes, headers: Sequence[tuple[bytes, bytes]], *, max_rewind: int = 100
) -> StreamParams:
    """Parameters of ``GET /sse/events``; raises a 400 :class:`ApiError` when malformed.

    ``types`` and ``tag.<name>`` may be comma-separated and/or repeated; ``project_id`` is an alias of
    ``project``; the ``Last-Event-ID`` header wins over the ``last_event_id`` parameter.
    ``rewind`` is checked against ``max_rewind`` (the setting) unless a last event id is
    given (see :func:`_rewind`). Unknown parameters are ignored (browsers and proxies add
    cache busters).
    """
    by_name: dict[str, list[str]] = {}
    for key, value in parse_query(query_string):
        by_name.setdefault(key, []).append(value)

    event_types: tuple[str, ...] | None = None
    if "types" in by_name:
        names = [n.strip() for raw in by_name["types"] for n in raw.split(",") if n.strip()]
        if not names:
            raise bad_request("types is empty; leave it out to receive every type")
        if len(set(names)) > MAX_TYPES:
            raise bad_request(f"at most {MAX_TYPES} event types per stream")
        event_types = tuple(dict.fromkeys(names))

    project_id = _single(by_name.get("project", []) + by_name.get("project_id", []), "project")
    if project_id == "":
        raise bad_request("project is empty")
    try:
        check_project_id(project_id)  # here, so a malformed one is a 400 before any rights check
    except InvalidValue as exc:
        raise bad_request(str(exc)) from None

    last_event_id = _event_id(header(headers, b"last-event-id"), "Last-Event-ID") or _event_id(
        _single(by_name.get("last_event_id", []), "last_event_id"), "last_event_id"
    )
    access_token = _single(by_name.get("access_token", []), "access_token")
    rewind = _rewind(_single(by_name.get("rewind", []), "rewind"), last_event_id is not None, max_rewind)
    return StreamParams(event_types, project_id, last_event_id, access_token, _tag_filter(by_name), rewind)


#: ``rewind`` as the query gives it: plain ASCII digits (no sign, no space, no exponent),
#: at most 18 of them so the number is read without a size surprise.
_REWIND = re.compile(r"[0-9]{1,18}")


def _rewind(raw: str | None, resuming: bool, max_rewind: int) -> int:
    """``rewind=N`` as a count; 0 when absent or when ``resuming`` (a last event id is given).

    A malformed value is a 400 either way. The bound (``max_rewind``) applies only when the
    rewind would be used: a browser's EventSource reconnects to the same URL with
    ``Last-Event-ID``, and gives up for good on a non-200 answer, so a ``max_rewind`` lowered
    since its first connect must not end its stream.
    """
    if raw is None:
        return 0
    if not _REWIND.fullmatch(raw):
        raise bad_request(f"rewind must be a whole number from 0 to {max_rewind} (max_rewind)")
    if resuming:
        return 0
    try:
        return check_rewind(int(raw), max_rewind)
    except InvalidValue as exc:
        raise bad_request(str(exc)) from None


TAG_PREFIX = "tag."


def _tag_filter(by_name: dict[str, list[str]]) -> TagFilter:
    """``tag.<name>=v1,v2`` parameters (repeatable, values joined) as a tag filter; 400 when malformed.

    A value cannot contain a comma here (it separates values); an empty value list is
    refused, as an empty ``types`` is: leave the parameter out to accept every value.
    """
    wanted: dict[str, list[str]] = {}
    for key, raws in by_name.items():
        if not key.startswith(TAG_PREFIX):
            continue
        name = key[len(TAG_PREFIX) :]
        values = [v.strip() for raw in raws for v in raw.split(",") if v.strip()]
        if not values:
            raise bad_request(f"{key} is empty; leave it out to accept every value")
        wanted[name] = list(dict.fromkeys(values))
    try:
        return check_tag_filter(wanted) if wanted else ()
    except InvalidTags as exc:
        raise bad_request(f"tag filter: {exc}") from None
