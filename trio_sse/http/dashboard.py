"""Browser assets: the live dashboard page and the ``client.js`` helper.

Both are static files shipped in ``trio_sse/http/static/`` (package data) and served
as they are — no build step, no CDN, nothing fetched from outside the machine. The
dashboard is admin-only when auth is on (it shows every connection's figures); the
page's data comes from ``GET /sse/stats/stream`` (:mod:`trio_sse.http.stats_stream`).
``client.js`` is public: it holds no data, and pages of other origins load it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources

from quart import Blueprint, Response

from ..runtime.hub import Hub
from .auth import Principal, require_admin

__all__ = ["DASHBOARD_CSP", "asset", "register_browser_routes"]

#: The page may run its own inline script and style and talk to its own origin, nothing
#: else: a browser then enforces "self-contained" too.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def asset(name: str) -> bytes:
    """A file of ``trio_sse/http/static/``, read once."""
    return resources.files("trio_sse.http").joinpath("static", name).read_bytes()


def register_browser_routes(bp: Blueprint, get_hub: Callable[[], Hub], caller: Callable[[Hub], Principal]) -> None:
    """Add ``GET /sse/dashboard`` and ``GET /sse/client.js`` to ``bp``.

    ``caller`` authenticates the current request (401 for a missing or bad token when
    auth is on; the ``sse_token`` cookie and ``access_token`` query both work, so a
    browser can open the page).
    """

    @bp.get("/sse/dashboard")
    async def dashboard() -> Response:
        hub = get_hub()
        require_admin(caller(hub), hub.settings)
        return Response(
            asset("dashboard.html"),
            content_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": DASHBOARD_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",  # the URL may carry access_token
            },
        )

    @bp.get("/sse/client.js")
    async def client_js() -> Response:
        return Response(
            asset("client.js"),
            content_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )
