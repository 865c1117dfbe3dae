"""CORS: which browser origins may use the API, as headers added at the ASGI level.

``cors_origins`` lists allowed origins; ``*`` allows any origin without credentials.
A listed origin is echoed back with ``Access-Control-Allow-Credentials: true`` (so an
``EventSource`` with ``withCredentials`` can send the ``sse_token`` cookie). Preflight
requests for the POST endpoints are answered here, before any route runs; a
preflight from an origin that is not allowed gets a 403 JSON error.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ApiError

__all__ = ["CorsPolicy"]

_EXPOSED = b"X-SSE-Connection-Id, Last-Event-ID"
_METHODS = b"GET, POST, OPTIONS"
_DEFAULT_HEADERS = b"Authorization, Content-Type, Last-Event-ID"
_MAX_AGE = b"600"


class CorsPolicy:
    __slots__ = ("_any", "_listed")

    def __init__(self, origins: Sequence[str]) -> None:
        self._any = "*" in origins
        self._listed = frozenset(origin for origin in origins if origin != "*")

    def _allow(self, origin: str) -> list[tuple[bytes, bytes]] | None:
        if origin in self._listed:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
            ]
        if self._any:
            return [(b"access-control-allow-origin", b"*")]
        return None

    def response_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """Headers for an actual (non-preflight) response to ``origin``."""
        if origin is None:
            return []
        allowed = self._allow(origin)
        vary = [(b"vary", b"Origin")]
        if allowed is None:
            return vary  # no Allow-Origin: the browser withholds the response
        return [*allowed, (b"access-control-expose-headers", _EXPOSED), *vary]

    def preflight(self, origin: str, requested_headers: str | None) -> list[tuple[bytes, bytes]]:
        """Headers of a 204 preflight answer; a 403 :class:`ApiError` for a refused origin."""
        allowed = self._allow(origin)
        if allowed is None:
            raise ApiError(403, "origin_not_allowed", f"origin {origin!r} is not allowed", headers={"Vary": "Origin"})
        headers = requested_headers.encode("latin-1")[:1024] if requested_headers else _DEFAULT_HEADERS
        return [
            *allowed,
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", headers),
            (b"access-control-max-age", _MAX_AGE),
            (b"vary", b"Origin"),
        ]
