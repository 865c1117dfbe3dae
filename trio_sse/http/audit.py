"""The audit log: one JSON line per refused request and per admin action.

Lines go to the standard ``logging`` logger ``trio_sse.audit`` at INFO, each message a
single JSON object: ``ts`` (UTC, ISO 8601), ``event`` (``request_refused`` or
``admin_action``), ``who`` (the token's ``sub``, else the client address), ``what``
(method and path), ``why`` (the reason), ``status``, plus a few fields per event.

What must never be written here: a token, a secret, a query string (it may hold
``access_token``) or a request header. Callers pass only the method, the path, the
caller's subject or address and messages the server wrote itself. Those messages may
quote what the client sent (``unknown event types: …``, a connection id), so every
field of a line is cut to :data:`MAX_FIELD_CHARS` (the path included): a hostile request
cannot make a line longer than a few KiB. Characters that break lines for some readers
though JSON allows them raw (C1 controls such as NEL, U+2028, U+2029) are written as
``\\uXXXX`` escapes, so one line stays one line for ``str.splitlines()`` too.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["AUDIT_LOGGER", "audit_admin", "audit_refusal", "who"]

AUDIT_LOGGER = "trio_sse.audit"
#: The longest a string field of an audit line may be, in characters; longer ones end
#: in "…". Enough for every message trio_sse writes, a token ``sub``, a path.
MAX_FIELD_CHARS = 256
MAX_METHOD_CHARS = 16
#: Written as JSON escapes: JSON allows them raw in strings, orjson writes them raw, and
#: they are line breaks for str.splitlines() (NEL, U+2028, U+2029) or invisible controls.
_RAW_BREAKS = re.compile(r"[\x80-\x9f\u2028\u2029]")

log = logging.getLogger(AUDIT_LOGGER)


def who(sub: str | None, client: str | None) -> str | None:
    """Whom a line is about: the authenticated subject when there is one, else the address."""
    return sub if sub else client


def _cut(value: Any) -> Any:
    """``value`` bounded for a line: strings cut to :data:`MAX_FIELD_CHARS`, numbers,
    booleans and ``None`` kept, anything else by its cut ``str``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _write(event: str, *, who: str | None, method: str, path: str, why: str, status: int, **extra: Any) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "who": _cut(who),
        "what": f"{method[:MAX_METHOD_CHARS]} {_cut(path)}",
        "why": _cut(why),
        "status": status,
        **{name: _cut(value) for name, value in extra.items()},
    }
    # Outside strings JSON has no such characters, so escaping them everywhere is exact.
    log.info(_RAW_BREAKS.sub(_escape, orjson.dumps(line).decode()))


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
