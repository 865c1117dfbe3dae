"""What an idle stream costs under a real server: one task of its own, and a bounded heap.

Issue 14 (item 1): an idle HTTP/1.1 stream on trio_sse's worker is the connection's
reading task (hypercorn's protocol, which reads the socket anyway) plus the stream's own
task — no watchdog task beside it waiting for ``http.disconnect``, no nursery for one.
The connection's reading task tells the stream when its client leaves, and transport
write deadlines are one hub-wide task's. These tests pin that through a real server on
127.0.0.1, with raw client sockets (no client task, so every task counted is the server's).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from trio_sse.core.stream_state import StreamState
from trio_sse.runtime.hub import Hub

TIMEOUT = 20.0
STREAMS = 100
#: tracemalloc bytes per idle stream, server and raw client socket together. Measured
#: ~20.6 KB after issue 14 (one task per stream, fewer long-lived frames and objects); the
#: code before (a watchdog task, its nursery and scopes, the wait on hypercorn's receive
#: channel, the handler chain's frames) measured ~32.7 KB. The margin is for Python versions.
BYTES_PER_STREAM_BOUND = 23_000

pytestmark = pytest.mark.one_backend


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every live task of this trio run, by walking the task tree from the root."""
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        assert task is not None
        yield task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)


async def open_streams(base_url: str, count: int) -> list[trio.socket.SocketType]:
    """``count`` idle streams on raw sockets, each read up to its ``connected`` event."""
    url = urlsplit(base_url)
    socks = []
    with trio.fail_after(TIMEOUT):
        for _ in range(count):
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            await sock.connect((url.hostname, url.port))
            await sock.send(b"GET /sse/events?types=system_status HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"event: connected" not in received:
                data = await sock.recv(65536)
                assert data, "closed before the preamble"
                received += data
            socks.append(sock)
    return socks


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - the server's state is polled from outside, on the real clock
            await trio.sleep(0.01)


def all_idle(hub: Hub, count: int) -> bool:
    connections = hub.connections()
    return len(connections) == count and all(c.state is StreamState.IDLE for c in connections)


@asynccontextmanager
async def warm_server(live_server_factory: Callable[..., Any]) -> AsyncIterator[Any]:
    """A live server on which one stream has come and gone (lazy imports and caches are warm)."""
    async with live_server_factory(connection_limit=STREAMS + 10, client_connection_limit=STREAMS + 10) as server:
        (sock,) = await open_streams(server.base_url, 1)
        sock.close()
        await until(lambda: not server.hub.connections())
        yield server


async def test_an_idle_stream_is_one_task_beside_its_connections_reading_task(
    live_server_factory: Callable[..., Any],
) -> None:
    async with warm_server(live_server_factory) as server:
        hub = server.hub
        tasks_before = trio.lowlevel.current_statistics().tasks_living
        socks = await open_streams(server.base_url, STREAMS)
        try:
            await until(lambda: all_idle(hub, STREAMS))
            added = trio.lowlevel.current_statistics().tasks_living - tasks_before
            watchdogs = [t for t in all_tasks() if t.name.endswith("._watch")]
            # Per stream: hypercorn's connection task (reads the socket) and the request's
            # task, which is the stream's own. No watchdog beside it.
            assert added == 2 * STREAMS, f"{added / STREAMS:.2f} tasks per idle stream"
            assert watchdogs == []
        finally:
            for sock in socks:
                sock.close()
        # Gone clients are still noticed (by the reading task) and cleaned up at once.
        await until(lambda: not hub.connections())
        assert hub.snapshot()["disconnects"] == {"client_closed": STREAMS + 1}
        await until(lambda: trio.lowlevel.current_statistics().tasks_living == tasks_before)


async def test_an_idle_stream_holds_a_bounded_heap(live_server_factory: Callable[..., Any]) -> None:
    async with warm_server(live_server_factory) as server:
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.get_traced_memory()[0]
            socks = await open_streams(server.base_url, STREAMS)
            await until(lambda: all_idle(server.hub, STREAMS))
            gc.collect()
            per_stream = (tracemalloc.get_traced_memory()[0] - before) / STREAMS
        finally:
            tracemalloc.stop()
        for sock in socks:
            sock.close()
        await until(lambda: not server.hub.connections())
        assert per_stream <= BYTES_PER_STREAM_BOUND, f"{per_stream:,.0f} B per idle stream"
