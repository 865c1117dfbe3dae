"""Request bodies, read one way for the Quart routes and the lean ASGI handlers.

:func:`read_body` is the one body reader: it refuses (413) as soon as a body is known to
exceed its limit — from ``Content-Length`` before reading, else while reading — and
never buffers more than the limit. Each stack only says where its chunks come from
(:func:`asgi_chunks` for ``receive``; Quart's ``request.body``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

from .errors import ApiError
from .params import header

__all__ = ["asgi_chunks", "declared_length", "json_object", "parse_json", "read_body", "too_large"]


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body is larger than {max_bytes} bytes")


def declared_length(scope: dict[str, Any]) -> int | None:
    """An ASGI request's ``Content-Length``, when it is a plain number."""
    length = header(scope.get("headers", []), b"content-length")
    return int(length) if length is not None and length.isdigit() else None


async def asgi_chunks(receive: Any) -> AsyncIterator[bytes]:
    """The body chunks of an ASGI request; 400 ``client_disconnected`` if it goes away first."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, "client_disconnected", "the client went away before sending its body")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def read_body(chunks: AsyncIterable[bytes], max_bytes: int, length: int | None = None) -> bytes:
    """The whole body from ``chunks``; 413 as soon as it is known to exceed ``max_bytes``.

    ``length`` is the declared ``Content-Length`` (refused before anything is read).
    """
    if length is not None and length > max_bytes:
        raise too_large(max_bytes)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json(body: bytes, *, required: bool = True) -> Any:
    """``body`` as JSON; 400 when malformed (or empty and required). Empty and optional gives None."""
    if not body.strip():
        if required:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc.msg}") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"{what} must be a JSON object")
    return value
