"""``GET /sse/stats/stream``: the hub's stats snapshot as one SSE event per second.

This feeds the live dashboard. It is a lean ASGI handler like ``/sse/events`` (Quart's
response timeout would cut a long stream, and the send deadline needs the raw
``send``), but it is *not* a hub connection: it never touches the event history or the
fan-out, so with a shared backend one instance's dashboard traffic never reaches
another instance, and it is not counted in ``active_connections``.

Each tick writes a ``system_status`` event (no ``id:``, like every system event) whose
data is the ``/sse/stats`` snapshot plus ``rates`` computed from the previous tick.
The loop runs in the request's own task and ends, with nothing left behind, when:

- the hub begins shutting down (``Hub.shutting_down``): the response is finished
  cleanly, so an ``EventSource`` reconnects on its own;
- the client goes away (``http.disconnect`` or a failed write);
- a write does not complete within ``send_timeout``: the socket is aborted;
- the caller's token expires.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from ..core.events import system_event
from ..core.stream_state import CloseReason, StreamState
from ..runtime.driver import StreamDriver
from ..runtime.hub import Hub
from .auth import authenticator_for, require_admin
from .errors import ApiError, send_refusal
from .params import parse_query
from .stream import AsgiTransport

__all__ = ["STATS_INTERVAL", "rates", "serve_stats_stream", "stats_payload"]

#: Seconds between two snapshots. One second is what a human watching a chart needs;
#: a snapshot costs a pass over the connections and a psutil call.
STATS_INTERVAL = 1.0

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

#: counter in the snapshot -> name of its per-second rate
_RATE_OF = {
    "events_published": "events_per_second",
    "events_delivered": "deliveries_per_second",
    "events_dropped": "drops_per_second",
}


def rates(previous: dict[str, Any] | None, current: dict[str, Any], elapsed: float) -> dict[str, float]:
    """Per-second rates between two snapshots (0.0 for the first one or no elapsed time).

    A counter that went down (the process restarted under the same stream — not
    possible today, but cheap to guard) gives 0.0 rather than a negative rate.
    """
    result: dict[str, float] = {}
    for counter, name in _RATE_OF.items():
        if previous is None or elapsed <= 0:
            result[name] = 0.0
        else:
            result[name] = round(max(0, current[counter] - previous[counter]) / elapsed, 3)
    return result


def stats_payload(previous: dict[str, Any] | None, current: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The data of one ``system_status`` tick: the snapshot, ``rates`` and the wall time."""
    return {**current, "rates": rates(previous, current, elapsed), "sampled_at": round(time.time(), 3)}


class _StatsFeed(StreamDriver):
    """One stats stream: the tick loop, driven like a hub connection (same watchdog,
    same deadlines, same states) but never offered events."""

    __slots__ = ("_timed_out_once", "hub", "transport")

    def __init__(self, hub: Hub, transport: AsgiTransport, expires_at: float | None) -> None:
        super().__init__(hub.settings.send_timeout)
        self.hub = hub
        self.transport = transport
        self.expires_at = expires_at
        self._timed_out_once = False

    async def run(self) -> str:
        """Stream until one of the ends in the module docstring; return its reason.

        ``send_timeout`` is returned even after another end (shutdown, expiry) when the
        stuck write had to be aborted: no final chunk can follow.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._until_shutdown)
            await self.drive(self.transport, self._ticks)
            nursery.cancel_scope.cancel()
        if self._timed_out_once:
            return CloseReason.SEND_TIMEOUT.value
        return self.close_reason or CloseReason.CLIENT_CLOSED.value

    async def _until_shutdown(self) -> None:
        await self.hub.shutting_down.wait()
        self.end(CloseReason.SERVER_SHUTDOWN)

    def _timed_out(self) -> None:
        self._timed_out_once = True
        super()._timed_out()

    async def _ticks(self, transport: AsgiTransport) -> None:
        settings = self.hub.settings
        previous: dict[str, Any] | None = None
        previous_at = next_tick = trio.current_time()
        retry: int | None = settings.retry  # sent once, in the first event
        while True:
            # Shared with the other viewers' ticks; rates use the snapshot's own time.
            taken_at, current = self.hub.shared_snapshot(STATS_INTERVAL / 2)
            elapsed = taken_at - previous_at
            block = system_event("system_status", stats_payload(previous, current, elapsed), retry=retry)
            await self.write(transport, block)
            if retry is not None:
                retry = None
                self.preamble_written()
            if self.state is _ENDING:
                return
            previous, previous_at = current, taken_at
            # A slow write skips ticks instead of bunching them up afterwards.
            while next_tick <= trio.current_time():
                next_tick += STATS_INTERVAL
            with trio.CancelScope(deadline=next_tick) as self._wait_scope:
                await trio.sleep_forever()
            self._wait_scope = None
            if self.state is _ENDING:
                return


_ENDING = StreamState.ENDING


async def serve_stats_stream(
    hub: Hub,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Handle one ``GET /sse/stats/stream`` request (admin-only when auth is on).

    Refusals (401 bad token, 403 not admin, 503 shutting down) are JSON errors sent
    before any stream byte. ``extra_headers``: CORS headers for the response.
    """
    extra = extra_headers or []
    headers = scope.get("headers", [])
    sub: str | None = None  # known once the token is verified, for the audit line of a refusal
    try:
        query = dict(parse_query(scope.get("query_string", b"")))
        principal = authenticator_for(hub.settings).authenticate(headers, query.get("access_token"))
        sub = principal.sub
        require_admin(principal, hub.settings)
        if hub.closing:
            raise ApiError(503, "server_shutdown", "the server is shutting down", headers={"Retry-After": "1"})
    except ApiError as error:
        await send_refusal(send, scope, error, extra, sub=sub)
        return
    # This stream writes only through ASGI ``send``: it never uses ``transport.direct``.
    transport = AsgiTransport(receive, send, [*_HEADERS, *extra], http_version=scope.get("http_version", "1.1"))
    reason = await _StatsFeed(hub, transport, principal.expires_at).run()
    if reason in ("server_shutdown", "token_expired") or not transport.started:
        with trio.CancelScope(shield=True):
            await transport.finish()
