"""A stream whose server tells it when the client leaves is one task (issue 14, item 1).

The transport's ``watch_client`` (trio_sse's worker: the connection's reading task) stands
in for the watchdog task each stream used to run beside its own; the send deadline of a
transport write is then an entry of the hub's one ``WriteDeadlines`` task. Everything a
watchdog did must still happen at the same virtual moment: a stuck write aborted at
``send_timeout`` (also across a token's expiry), a gone client closed at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from fake_transports import ShieldedTransport

from trio_sse.core.stream_state import StreamState
from trio_sse.runtime.connection import Connection
from trio_sse.runtime.hub import Hub

from .support import open_test_hub

EPS = 1e-6


class WatchedTransport(ShieldedTransport):
    """A hypercorn-like transport whose server reports the client leaving (``watch_client``)."""

    def __init__(self) -> None:
        super().__init__()
        self.watcher: Any = None
        self.watch_calls: list[Any] = []

    def watch_client(self, watcher: Any) -> bool:
        self.watch_calls.append(watcher)
        self.watcher = watcher
        return True

    def client_leaves(self) -> None:
        """What the server's reading task does when it reads EOF."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.client_gone()


@asynccontextmanager
async def open_streams(hub: Hub, transports: list[WatchedTransport], **connect: Any) -> AsyncIterator[list[Connection]]:
    async def serve(transport: WatchedTransport, *, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(None, None), **connect) as connection:
            task_status.started(connection)
            await connection.run(transport)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        yield [await nursery.start(serve, t) for t in transports]


async def test_a_stream_whose_server_watches_its_client_is_one_task(autojump_clock) -> None:
    async with open_test_hub(heartbeat_interval=1000) as hub:
        before = trio.lowlevel.current_statistics().tasks_living
        transports = [WatchedTransport() for _ in range(20)]
        async with open_streams(hub, transports) as connections:
            await trio.sleep(1)
            assert all(c.state is StreamState.WRITING for c in connections)  # preamble out, waiting
            # One task each (the serve task above, which runs the stream): no watchdog beside it.
            assert trio.lowlevel.current_statistics().tasks_living - before == 20
            for transport in transports:
                transport.client_leaves()
        assert hub.connections() == []


async def test_client_reported_gone_by_the_server_is_closed_at_once_and_unwatched(autojump_clock) -> None:
    transport = WatchedTransport()
    async with open_test_hub(heartbeat_interval=1000) as hub:
        async with open_streams(hub, [transport]) as (connection,):
            await trio.sleep(1)
            start = trio.current_time()
            transport.client_leaves()
        assert trio.current_time() == start
        assert connection.close_reason == "client_closed"
        assert not connection.can_finish
        assert hub.snapshot()["disconnects"] == {"client_closed": 1}
        # Watched for the stream's life, then released (the connection may carry another request).
        assert transport.watch_calls == [connection, None]


async def test_stuck_write_of_a_one_task_stream_is_aborted_at_send_timeout_by_the_hub(autojump_clock) -> None:
    transport = WatchedTransport()
    async with open_test_hub(send_timeout=4, heartbeat_interval=1000) as hub:
        async with open_streams(hub, [transport]) as (connection,):
            await trio.sleep(1)
            transport.stuck = True
            await hub.publish("commit", {"sha": "a"})
            start = trio.current_time()
        assert transport.aborted_at - start == pytest.approx(4, abs=EPS)
        assert trio.current_time() - start == pytest.approx(4, abs=EPS)
        assert connection.close_reason == "send_timeout"
        assert not connection.can_finish
        assert hub.snapshot()["disconnects"] == {"send_timeout": 1}


async def test_writes_that_complete_are_never_timed_out_later(autojump_clock) -> None:
    transport = WatchedTransport()
    async with open_test_hub(send_timeout=4, heartbeat_interval=3) as hub:
        async with open_streams(hub, [transport]) as (connection,):
            for n in range(5):
                await hub.publish("commit", {"n": n})
                await trio.sleep(2)
            await trio.sleep(20)  # heartbeats every 3 s, each write disarmed when it returns
            assert connection.close_reason is None
            assert transport.aborted_at == float("inf")
            transport.client_leaves()


async def test_token_expiry_during_a_stuck_write_still_aborts_it_at_send_timeout(autojump_clock) -> None:
    transport = WatchedTransport()
    async with open_test_hub(send_timeout=4, heartbeat_interval=1000) as hub:
        async with open_streams(hub, [transport], expires_at=time.time() + 2) as (connection,):
            await trio.sleep(1)
            transport.stuck = True
            await hub.publish("commit", {"sha": "a"})
            start = trio.current_time()
        # The expiry (1 s in) cannot stop a shielded write; the hub's deadline still frees it.
        assert transport.aborted_at - start == pytest.approx(4, abs=EPS)
        assert connection.close_reason == "send_timeout"


async def test_token_expiry_ends_an_idle_one_task_stream_on_time(autojump_clock) -> None:
    transport = WatchedTransport()
    async with open_test_hub(heartbeat_interval=1000) as hub:
        start = trio.current_time()
        async with open_streams(hub, [transport], expires_at=time.time() + 5) as (connection,):
            pass
        assert trio.current_time() - start == pytest.approx(5, abs=0.01)
        assert connection.close_reason == "token_expired"
        assert connection.can_finish
