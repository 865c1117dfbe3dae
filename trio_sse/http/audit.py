"""The audit log: one JSON line per refused request and per admin action.

Lines go to the standard ``logging`` logger ``trio_sse.audit`` at INFO, each message a
single JSON object: ``ts`` (UTC, ISO 8601), ``event`` (``request_refused`` or
``admin_action``), ``who`` (the token's ``sub``, else the client address), ``what``
(method and path), ``why`` (the reason), ``status``, plus a few fields per event.

What must never be written here: a token, a secret, a query string (it may hold
``access_token``) or a request header. Callers pass only the method, the path, the
caller's subject or address and messages the server wrote itself, and the path is cut
short so a hostile one cannot flood the log.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["AUDIT_LOGGER", "audit_admin", "audit_refusal", "who"]

AUDIT_LOGGER = "trio_sse.audit"
MAX_PATH_CHARS = 256

log = logging.getLogger(AUDIT_LOGGER)


def who(sub: str | None, client: str | None) -> str | None:
    """Whom a line is about: the authenticated subject when there is one, else the address."""
    return sub if sub else client


def _write(event: str, *, who: str | None, method: str, path: str, why: str, status: int, **extra: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "who": who,
        "what": f"{method[:16]} {path[:MAX_PATH_CHARS]}",
        "why": why,
        "status": status,
        **extra,
    }
    log.info(orjson.dumps(line).decode())


def audit_refusal(
    *, status: int, code: str, message: str, method: str, path: str, sub: str | None, client: str | None
) -> None:
    """A request answered with an error: who asked, for what, and the reason given to them."""
    _write(
        "request_refused",
        who=who(sub, client),
        method=method,
        path=path,
        why=message,
        status=status,
        error=code,
        client=client,
    )


def audit_admin(
    action: str, *, method: str, path: str, sub: str | None, client: str | None, status: int, **detail: Any
) -> None:
    """An action that needs (or, with auth off, would need) the ``admin`` right, after it succeeded."""
    _write(
        "admin_action",
        who=who(sub, client),
        method=method,
        path=path,
        why=action,
        status=status,
        action=action,
        client=client,
        **detail,
    )
