"""Reading one cookie out of ``Cookie`` headers, in time linear in their length (no I/O).

Why not :class:`http.cookies.SimpleCookie`: its parser is quadratic in the backslashes
of a quoted value on CPython before 3.11.10, 3.12.6 and 3.13 (CVE-2024-7592): one
unauthenticated request whose ``sse_token`` cookie was a quoted run of 60 KB of
backslashes held the event loop, and so every stream of the server, for 4.4 s.
Whatever the interpreter, this reader makes one pass over each header.

Why not werkzeug's ``parse_cookie`` (installed with Quart): it is linear too, but it
builds every cookie of the header and decodes backslash escapes we do not want, and it
costs ~13 ms per 64 KB of ``;`` where this costs well under one. The only cookie
trio_sse reads is ``sse_token``, a JWT: base64url and dots, never a quote or a backslash.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["cookie_value"]

#: Whitespace RFC 6265 lets surround a name or value (SP and HTAB, ``WSP``).
_WSP = " \t"


def cookie_value(headers: Iterable[str], name: str) -> str | None:
    """The value of the cookie ``name`` in these ``Cookie`` header values, or ``None``.

    Each value is ``name=value`` pairs separated by ``;`` (RFC 6265 section 4.2.1,
    parsed leniently as section 5.4 asks of servers): a pair is split at its first
    ``=``, the name and the value are stripped of spaces and tabs, and one pair of
    double quotes around the value is removed. A pair without ``=`` is not a cookie of
    that name. Backslash escapes are left as they are (RFC 6265 has none).

    When the name occurs more than once — in one header, or across the several
    ``cookie`` fields HTTP/2 may split one header into (RFC 9113 section 8.2.3) — the
    last one wins, as with ``SimpleCookie``. Time and memory are linear in the input.
    """
    found: str | None = None
    for header in headers:
        if name not in header:
            continue
        for pair in header.split(";"):
            key, equals, value = pair.partition("=")
            if equals and key.strip(_WSP) == name:
                value = value.strip(_WSP)
                if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                    value = value[1:-1]
                found = value
    return found
