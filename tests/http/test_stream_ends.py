"""Unusual ends of the two lean stream handlers, ``/sse/events`` and ``/sse/stats/stream``.

The stats stream is not a hub connection, so the hub's shutdown does not wait for it:
each of its ends must finish on its own, also when its write is stuck in a send that
ignores cancellation (hypercorn shields its socket writes; only closing the socket frees
them). And a client that is gone by the very first write must not make either handler
raise into the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from fake_transports import ShieldedTransport

import trio_sse
from trio_sse.http.stats_stream import _StatsFeed, serve_stats_stream
from trio_sse.http.stream import serve_stream
from trio_sse.runtime.hub import Hub
from trio_sse.runtime.stats import trio_tasks
from trio_sse.settings import Settings

EPS = 1e-6


@asynccontextmanager
async def open_hub(**settings: Any) -> AsyncIterator[Hub]:
    with trio.fail_after(3600):
        async with trio_sse.open_hub(Settings(**{"shutdown_grace": 2, **settings})) as hub:
            yield hub


async def run_feed(hub: Hub, transport: ShieldedTransport, reasons: list[str], expires_at: float | None = None) -> None:
    reasons.append(await _StatsFeed(hub, transport, expires_at).run())  # type: ignore[arg-type]


# -- the stats stream with a stuck write -----------------------------------------------------


@pytest.mark.parametrize("end", ["shutdown", "expiry"])
async def test_stats_stream_stuck_when_it_should_end_is_aborted_at_send_timeout(autojump_clock, end: str) -> None:
    """Before the fix, shutdown or the token's end cancelled the send-timeout watcher with
    the tick loop, and the stuck write was never aborted: the stream outlived the hub."""
    async with open_hub(send_timeout=30) as hub:
        before = trio_tasks()
        transport = ShieldedTransport()
        reasons: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_feed, hub, transport, reasons, time.time() + 5 if end == "expiry" else None)
            await trio.sleep(1.5)  # two ticks out
            transport.stuck = True
            await transport.blocked.wait()
            stuck = trio.current_time()
            if end == "shutdown":
                hub.begin_shutdown()
        assert trio.current_time() - stuck == pytest.approx(30, abs=EPS)  # at the write's deadline
        assert transport.aborted_at - stuck == pytest.approx(30, abs=EPS)
        assert reasons == ["send_timeout"]  # aborted: no final chunk will follow
        assert trio_tasks() == before


@pytest.mark.parametrize("end", ["shutdown", "expiry"])
async def test_stats_stream_write_completing_after_its_end_then_ends_cleanly(autojump_clock, end: str) -> None:
    async with open_hub(send_timeout=30) as hub:
        transport = ShieldedTransport()
        reasons: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_feed, hub, transport, reasons, time.time() + 5 if end == "expiry" else None)
            await trio.sleep(1.5)
            transport.stuck = True
            await transport.blocked.wait()
            if end == "shutdown":
                hub.begin_shutdown()
            await trio.sleep(10)
            assert not reasons  # the write under way may still finish
            written = len(transport.writes)
            transport.unstick()
        assert len(transport.writes) == written + 1  # that write, and no tick after it
        assert transport.aborted_at == math.inf
        assert reasons == ["server_shutdown" if end == "shutdown" else "token_expired"]


# -- a client gone by the first write ---------------------------------------------------------


def scope_of(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


@pytest.mark.parametrize("error", [OSError, trio.BrokenResourceError, trio.ClosedResourceError])
@pytest.mark.parametrize("path", ["/sse/events", "/sse/stats/stream"])
async def test_send_failing_from_the_first_write_ends_the_handler_quietly(
    autojump_clock, path: str, error: type[Exception]
) -> None:
    """Servers may raise from ``send`` once the client is gone (the ASGI spec allows an
    ``OSError``). Before the fix the handler's attempt to finish the response raised it
    again, out of the handler and into the server."""
    async with open_hub() as hub:
        before = trio_tasks()
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            raise error("the client is gone")

        async def receive() -> dict[str, Any]:
            await trio.sleep_forever()
            raise AssertionError

        handler = serve_stream if path == "/sse/events" else serve_stats_stream
        with trio.fail_after(EPS):
            await handler(hub, scope_of(path), receive, send)
        assert sent and sent[0]["type"] == "http.response.start"
        assert hub.connections() == []
        expected = {"client_closed": 1} if path == "/sse/events" else {}  # the stats stream is no connection
        assert hub.snapshot()["disconnects"] == expected
        assert trio_tasks() == before


def test_the_stats_stream_is_driven_by_the_same_driver_as_hub_streams() -> None:
    """One watchdog and one set of deadlines (send_timeout, token expiry, graceful end):
    neither the stats stream nor a hub connection keeps a second one of its own."""
    from trio_sse.runtime.connection import Connection
    from trio_sse.runtime.driver import StreamDriver

    assert issubclass(_StatsFeed, StreamDriver) and issubclass(Connection, StreamDriver)
    for name in ("drive", "_watch", "write", "close", "end"):
        assert name not in vars(_StatsFeed) and name not in vars(Connection)
