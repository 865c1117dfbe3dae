"""Who is calling: one way, from the ASGI scope, for the Quart routes and the lean handlers.

Both stacks hand over the raw ASGI scope (Quart's ``request.scope``), so the headers
are read as the server received them — never re-encoded from a parsed form — and the
``access_token`` query parameter is found by the same parser everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import Settings
from .auth import Principal, authenticator_for
from .params import parse_query

__all__ = ["caller_of"]


def caller_of(settings: Settings, scope: Mapping[str, Any]) -> Principal:
    """The principal of an ASGI request (401 :class:`ApiError` when a token is required and bad)."""
    query = scope.get("query_string", b"")
    query_token = dict(parse_query(query)).get("access_token") if query else None
    return authenticator_for(settings).authenticate(scope.get("headers", []), query_token)
