"""The one exception that crosses the HTTP boundary, and its JSON form.

Routes raise :class:`ApiError` (or a core/runtime error that :func:`to_api_error`
knows); it becomes ``{"error": code, "message": ..., ...}`` with its status and
headers in exactly one place.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.errors import EventTooLarge, InvalidTags, InvalidValue, UnknownEventTypes
from ..runtime.admission import Refusal, Refused
from ..runtime.backends import BackendUnavailable
from ..runtime.registry import UnknownConnection
from ..runtime.subscriptions import TooManyPendingChanges
from .audit import audit_refusal

__all__ = ["JSON_HEADERS", "REFUSALS", "ApiError", "error_headers", "refusal_error", "send_error", "to_api_error"]

JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]

#: What each refusal of the runtime is on the wire: its status, and its ``Retry-After``
#: (seconds) unless the refusal knows a longer wait (a rate limit's bucket). 503 says
#: "this server, now"; 429 says "you, too often". The one place a reason becomes a status.
REFUSALS: dict[Refusal, tuple[int, int]] = {
    Refusal.SERVER_SHUTDOWN: (503, 1),  # another instance takes it at once
    Refusal.MEMORY_PRESSURE: (503, 5),  # a few memory samples' time
    Refusal.CONNECTION_LIMIT: (503, 5),
    Refusal.CLIENT_CONNECTION_LIMIT: (429, 5),
    Refusal.CONNECTION_RATE: (429, 1),
    Refusal.PUBLISH_RATE: (429, 1),
}


class ApiError(Exception):
    """An HTTP error answer: status, machine-readable code, human message, extra fields."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> bytes:
        return orjson.dumps({"error": self.code, "message": self.message, **self.extra})


def to_api_error(exc: BaseException) -> ApiError | None:
    """The HTTP form of a known error, or None for a real bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownEventTypes):
        return ApiError(422, "unknown_event_types", str(exc), invalid_types=exc.names)
    if isinstance(exc, InvalidTags):
        return ApiError(422, "invalid_tags", str(exc), invalid_tags=exc.names)
    if isinstance(exc, EventTooLarge):
        return ApiError(413, "event_too_large", str(exc))
    if isinstance(exc, InvalidValue):
        return ApiError(400, "invalid_request", str(exc))
    if isinstance(exc, UnknownConnection):
        return ApiError(404, "unknown_connection", f"no live connection with id {exc.args[0]!r}")
    if isinstance(exc, TooManyPendingChanges):
        return ApiError(
            429, "too_many_pending_changes", "earlier filter changes are not applied yet", headers={"Retry-After": "1"}
        )
    if isinstance(exc, Refused):
        return refusal_error(exc)
    if isinstance(exc, BackendUnavailable):
        return ApiError(
            503, "backend_unavailable", str(exc) or "the backend is unreachable", headers={"Retry-After": "1"}
        )
    return None


def refusal_error(refused: Refused) -> ApiError:
    """A runtime refusal as its answer: :data:`REFUSALS`' status, code = the reason."""
    status, retry_after = REFUSALS[refused.reason]
    wait = max(retry_after, int(refused.wait + 0.999))  # whole seconds, a hair's rounding forgiven
    return ApiError(status, refused.reason.value, str(refused), headers={"Retry-After": str(wait)})


def log_refusal(error: ApiError, method: str, path: str, client: str | None, sub: str | None = None) -> None:
    """One audit line for a refused request (who, what, why): see :mod:`trio_sse.http.audit`."""
    audit_refusal(
        status=error.status,
        code=error.code,
        message=error.message,
        method=method,
        path=path,
        sub=sub,
        client=client,
    )


async def send_refusal(
    send: Any,
    scope: dict[str, Any],
    error: ApiError,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    *,
    sub: str | None = None,
) -> None:
    """Log a refused ASGI request (one audit line) and answer it with ``error``.

    Every refusal of the lean ASGI handlers goes through here, so none is answered unlogged.
    ``sub`` is the caller's token subject once the token has been verified.
    """
    client = scope.get("client")
    log_refusal(error, scope.get("method", ""), scope.get("path", ""), client[0] if client else None, sub)
    await send_error(send, error, extra_headers)


def error_headers(error: ApiError) -> list[tuple[bytes, bytes]]:
    """The headers an error answer carries besides its content type, on either stack."""
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    if error.status == 401:
        headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
    return headers


async def send_error(send: Any, error: ApiError, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer an ASGI request with ``error`` (for the lean handlers outside Quart)."""
    headers = [*JSON_HEADERS, *error_headers(error), *(extra_headers or ())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": error.body(), "more_body": False})
