"""The unusual ways a stream ends: in the middle of a long replay, with a write stuck, with
its queue full, twice at once, before it started, or on its very first write.

Whatever the path, afterwards the connection is unregistered, its disconnect is counted
once with the reason that won, no task is left, and a client that reconnects with the
last id it actually received gets every event it had not (nothing accepted is lost).

Fake transports on the virtual clock. ``Client(shielded=True)`` behaves like hypercorn:
a blocked write ignores cancellation, and only ``abort`` (closing the socket) frees it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trio_sse.core.parser import ParsedEvent, SSEParser
from trio_sse.runtime.connection import Connection
from trio_sse.runtime.hub import ConnectionRefused, Hub, UnknownConnection

from .support import open_test_hub
from .test_flusher import FakeTransport
from .test_lifecycle import task_names

EPS = 1e-6
SHIELDED = pytest.mark.parametrize("shielded", [False, True], ids=["cancellable", "shielded"])
#: A stuck write that nothing frees within this long fails the test instead of hanging it.
STUCK_FOREVER = 1000
#: About 1 KiB of data per event: 3000 of them make a replay of several ~1 MiB writes.
PAD = "x" * 1000


class Client:
    """A task-path transport that keeps every completed write and parses the stream they make.

    ``stall()`` (or ``stall_at``: before that many writes have completed) makes the next
    write block, like a client whose TCP window is full; ``resume()`` lets it complete.
    ``delay`` makes every write take that long (a client that reads, slowly).
    """

    def __init__(
        self, *, shielded: bool = False, stall_at: int | None = None, delay: float = 0, fail_first: bool = False
    ) -> None:
        self.shielded = shielded
        self.stall_at = stall_at
        self.delay = delay
        self.fail_first = fail_first
        self.writes: list[bytes] = []
        self.items: list[Any] = []
        self._parser = SSEParser()
        self._open = trio.Event()
        self._open.set()
        self.blocked = trio.Event()  # set when a write starts blocking
        self.closed = trio.Event()
        self.aborted = False
        self.changed = trio.Event()
        self.direct = None

    def stall(self) -> None:
        if self._open.is_set():
            self._open = trio.Event()

    def resume(self) -> None:
        self._open.set()

    async def write(self, data: bytes) -> None:
        if self.fail_first:
            raise trio.BrokenResourceError("connection reset on the first write")
        if self.aborted:
            raise trio.BrokenResourceError("socket closed")
        if self.stall_at is not None and len(self.writes) == self.stall_at:
            self.stall()
        if self.delay:
            await trio.sleep(self.delay)
        if not self._open.is_set():
            self.blocked.set()
            if self.shielded:
                with trio.CancelScope(shield=True) as stuck:
                    stuck.deadline = trio.current_time() + STUCK_FOREVER
                    await self._open.wait()
                if stuck.cancelled_caught:
                    raise AssertionError("a write stuck in a shielded send was never aborted")
            else:
                await self._open.wait()
            if self.aborted:
                raise trio.BrokenResourceError("socket closed under the write")
        self.writes.append(data)
        self.items.extend(self._parser.feed(data))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.aborted = True
        self._open.set()

    def events(self) -> list[ParsedEvent]:
        return [item for item in self.items if isinstance(item, ParsedEvent)]

    def ids(self) -> list[str]:
        """Ids of the events received (system events have none)."""
        return [e.id for e in self.events() if e.id is not None]


@asynccontextmanager
async def serve(hub: Hub, transport: Any, types: list[str] | None = None, **kwargs: Any) -> AsyncIterator[Connection]:
    """A registered connection running on ``transport``; leaving waits until it has ended."""

    async def run(*, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(types, None), **kwargs) as connection:
            task_status.started(connection)
            await connection.run(transport)

    async with trio.open_nursery() as nursery:
        yield await nursery.start(run)


async def publish_many(hub: Hub, count: int, event_type: str = "commit") -> list[str]:
    batch = [hub.prepare(event_type, {"n": n, "pad": PAD}) for n in range(count)]
    return await hub.publish_prepared(batch)


async def catch_up(hub: Hub, last_event_id: str, types: list[str] | None = None) -> list[str]:
    """What a client reconnecting with ``last_event_id`` gets: the replay, then anything live."""
    client = Client()
    async with serve(hub, client, types, last_event_id=last_event_id):
        await trio.sleep(1)  # replay written, then idle
        client.closed.set()
    return client.ids()


def assert_unregistered(hub: Hub, reason: str) -> None:
    """Gone from the registry and counted once, with ``reason``."""
    assert hub.connections() == []
    snapshot = hub.snapshot()
    assert snapshot["active_connections"] == 0
    assert snapshot["queue"]["total_queued"] == 0
    assert snapshot["disconnects"] == {reason: 1}


# -- ends in the middle of a long replay ----------------------------------------------------


@SHIELDED
async def test_client_leaving_in_the_middle_of_a_long_replay_is_gone_at_once_and_loses_nothing(
    autojump_clock, shielded: bool
) -> None:
    async with open_test_hub(history_size=5000, heartbeat_interval=1000, send_timeout=60) as hub:
        published = await publish_many(hub, 3000)
        before = task_names()
        client = Client(shielded=shielded, stall_at=2)  # the preamble, one replay write, then stuck
        async with serve(hub, client, last_event_id=published[0]) as connection:
            await client.blocked.wait()
            received = client.ids()
            assert 0 < len(received) < 2999
            assert received == published[1 : 1 + len(received)]  # a prefix, no gap
            live = await hub.publish("commit", {"n": "live"})  # committed during the replay
            await trio.sleep(1)
            assert connection.pending == 1
            left = trio.current_time()
            client.closed.set()
        assert trio.current_time() == left  # not at send_timeout: the blocked write was freed
        assert connection.close_reason == "client_closed"
        assert not connection.can_finish
        assert_unregistered(hub, "client_closed")
        assert task_names() == before
        assert received + await catch_up(hub, received[-1]) == [*published[1:], live]


async def test_graceful_shutdown_in_the_middle_of_a_long_replay_ends_cleanly_on_a_gap_free_prefix(
    autojump_clock,
) -> None:
    async with open_test_hub(history_size=5000, heartbeat_interval=1000, shutdown_grace=30) as hub:
        published = await publish_many(hub, 3000)
        before = task_names()
        client = Client(delay=0.5)  # reads, slowly: each replay write takes half a second
        async with serve(hub, client, last_event_id=published[0]) as connection:
            while not client.ids():
                await client.changed.wait()
            await hub.publish("commit", {"n": "live"})  # queued behind the replay
            started = trio.current_time()
            writes_before = len(client.writes)
            hub.begin_shutdown()
            with pytest.raises(ConnectionRefused):
                async with hub.connect(hub.subscription(None, None)):
                    pytest.fail("registered while shutting down")
        assert trio.current_time() - started <= 1.0 + EPS  # the write under way, not the whole replay
        assert len(client.writes) <= writes_before + 1
        assert connection.close_reason == "server_shutdown"
        assert connection.can_finish  # the response may end with its final chunk
        received = client.ids()
        assert received == published[1 : 1 + len(received)]  # the client resumes from received[-1]
        assert_unregistered(hub, "server_shutdown")
        assert hub.snapshot()["rejected_by_reason"] == {"server_shutdown": 1}
        assert task_names() == before


@SHIELDED
async def test_hub_closed_while_a_replay_write_is_stuck_is_forced_at_shutdown_grace(autojump_clock, shielded) -> None:
    async with open_test_hub(history_size=5000, heartbeat_interval=1000, shutdown_grace=3, send_timeout=60) as hub:
        published = await publish_many(hub, 3000)
        before = task_names()
        client = Client(shielded=shielded, stall_at=2)
        async with serve(hub, client, last_event_id=published[0]) as connection:
            await client.blocked.wait()
            started = trio.current_time()
            await hub.aclose()
            assert trio.current_time() - started == pytest.approx(3, abs=EPS)
            assert hub.connections() == []
        assert connection.close_reason == "server_shutdown"
        assert client.aborted  # a blocked write is aborted, whether it could be cancelled or not
        assert not connection.can_finish  # a write was cut short: no final chunk after it
        received = client.ids()
        assert received == published[1 : 1 + len(received)]
        assert_unregistered(hub, "server_shutdown")
        assert task_names() == before
        await hub.aclose()  # a second close (leaving open_hub does it again) changes nothing
        assert_unregistered(hub, "server_shutdown")


async def test_shutdown_during_a_subscribe_replay_ends_once_and_refuses_further_changes(autojump_clock) -> None:
    async with open_test_hub(history_size=5000, heartbeat_interval=1000, shutdown_grace=30) as hub:
        published = await publish_many(hub, 3000, "commit")
        before = task_names()
        client = Client()
        async with serve(hub, client, ["task_update"]) as connection:
            await trio.sleep(1)
            client.delay = 0.5
            hub.update_subscription(connection.id, ["commit"], mode="add", last_event_id=published[0])
            while not client.ids():
                await client.changed.wait()
            hub.begin_shutdown()
            with pytest.raises(UnknownConnection):
                hub.update_subscription(connection.id, ["risk_alert"], mode="add")
        assert connection.close_reason == "server_shutdown" and connection.can_finish
        assert [e.type for e in client.events()][:2] == ["connected", "subscription_updated"]
        received = client.ids()
        assert received == published[1 : 1 + len(received)]
        assert_unregistered(hub, "server_shutdown")
        assert task_names() == before


# -- token expiry and send timeout while a write is blocked ---------------------------------


@SHIELDED
async def test_token_expiring_while_a_write_is_stuck_ends_the_stream_by_send_timeout_at_the_latest(
    autojump_clock, shielded: bool
) -> None:
    """The token's end stops the writing; a write that ignores cancellation is still timed.

    Before the fix the expiry cancelled the watchdog together with the writing, so a
    hypercorn write stuck at that moment was never aborted: the stream stayed registered
    until the client read again or the hub closed.
    """
    async with open_test_hub(send_timeout=30, heartbeat_interval=1000) as hub:
        before = task_names()
        client = Client(shielded=shielded)
        async with serve(hub, client, expires_at=time.time() + 10) as connection:
            await trio.sleep(1)
            client.stall()
            await hub.publish("commit", {"n": 0})
            await client.blocked.wait()
            stuck = trio.current_time()
        ended = trio.current_time() - stuck
        if shielded:  # cannot be cancelled: aborted when the write misses its deadline
            assert ended == pytest.approx(30, abs=0.01)
            assert client.aborted
            assert connection.close_reason == "send_timeout"
            assert not connection.can_finish
        else:  # cancelled at the token's end
            assert ended == pytest.approx(10 - 1, abs=0.01)
            assert connection.close_reason == "token_expired"
            assert connection.can_finish
        assert_unregistered(hub, connection.close_reason)
        assert task_names() == before


async def test_write_in_progress_at_token_expiry_completes_and_the_stream_ends_cleanly(autojump_clock) -> None:
    async with open_test_hub(send_timeout=30, heartbeat_interval=1000) as hub:
        client = Client(shielded=True)
        async with serve(hub, client, expires_at=time.time() + 10) as connection:
            await trio.sleep(1)
            client.stall()
            event_id = await hub.publish("commit", {"n": 0})
            await trio.sleep(12)  # the token has expired during the write
            assert hub.connections() == [connection]
            client.resume()
        assert client.ids() == [event_id]
        assert connection.close_reason == "token_expired" and connection.can_finish
        assert_unregistered(hub, "token_expired")


async def test_token_expiring_during_a_direct_backlog_drain_ends_at_once_without_a_final_chunk(autojump_clock) -> None:
    async with open_test_hub(send_timeout=30, heartbeat_interval=1000) as hub:
        before = task_names()
        transport = FakeTransport(direct=True)
        assert transport.direct is not None
        start = trio.current_time()
        async with serve(hub, transport, expires_at=time.time() + 10) as connection:
            await trio.sleep(1)
            assert connection.direct_ready
            transport.direct.full = True
            await hub.publish("commit", {"n": 0})
            await trio.sleep(0.1)
            assert transport.direct.backlog
        assert trio.current_time() - start == pytest.approx(10, abs=0.01)
        assert connection.close_reason == "token_expired"
        assert not connection.can_finish  # half a chunk is out: no final chunk after it
        assert_unregistered(hub, "token_expired")
        assert task_names() == before


@SHIELDED
async def test_send_timeout_with_the_queue_exactly_full_is_counted_once_and_loses_nothing(
    autojump_clock, shielded: bool
) -> None:
    async with open_test_hub(queue_size=3, send_timeout=8, heartbeat_interval=1000) as hub:
        seed = await hub.publish("commit", {"n": -1})  # committed before the stream connects
        before = task_names()
        client = Client(shielded=shielded)
        async with serve(hub, client) as connection:
            assert connection.start_id == seed  # its Last-Event-ID response header
            await trio.sleep(1)
            client.stall()
            stuck = await hub.publish("commit", {"n": 0})
            await client.blocked.wait()
            started = trio.current_time()
            queued = [await hub.publish("commit", {"n": n}) for n in range(1, 4)]
            await trio.sleep(1)
            assert connection.pending == 3  # exactly the bound: nothing refused
            assert connection.close_reason is None
        assert trio.current_time() - started == pytest.approx(8, abs=EPS)
        assert connection.close_reason == "send_timeout"
        assert connection.events_dropped == 0
        assert_unregistered(hub, "send_timeout")
        snapshot = hub.snapshot()
        assert snapshot["errors_last_minute"] == 1 and snapshot["events_dropped"] == 0
        assert task_names() == before
        assert [e.type for e in client.events()] == ["connected"]
        # It never got an event: it resumes from the stream's Last-Event-ID header.
        later = await hub.publish("commit", {"n": 4})
        assert await catch_up(hub, seed) == [stuck, *queued, later]


async def test_client_leaving_behind_a_direct_backlog_loses_nothing(autojump_clock) -> None:
    async with open_test_hub(send_timeout=30, heartbeat_interval=1000) as hub:
        before = task_names()
        transport = FakeTransport(direct=True)
        assert transport.direct is not None
        async with serve(hub, transport) as connection:
            await trio.sleep(1)
            delivered = await hub.publish("commit", {"n": 0})
            await trio.sleep(0.1)
            transport.direct.full = True
            in_backlog = await hub.publish("commit", {"n": 1})
            await trio.sleep(0.1)
            queued = await hub.publish("commit", {"n": 2})
            await trio.sleep(0.1)
            assert transport.direct.backlog and connection.pending == 1
            left = trio.current_time()
            transport.closed.set()
        assert trio.current_time() == left
        assert transport.ids() == [delivered]
        assert_unregistered(hub, "client_closed")
        assert task_names() == before
        assert await catch_up(hub, delivered) == [in_backlog, queued]


# -- several reasons at once, before the start, on the first write ---------------------------


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        ([("close", "slow_consumer"), ("end", "server_shutdown"), ("close", "memory_pressure")], "slow_consumer"),
        ([("end", "server_shutdown"), ("close", "send_timeout"), ("client", None)], "server_shutdown"),
        ([("client", None), ("close", "slow_consumer"), ("end", "server_shutdown")], "client_closed"),
    ],
    ids=["close-first", "end-first", "client-first"],
)
async def test_several_ends_at_once_the_first_reason_wins_and_is_counted_once(
    autojump_clock, calls: list[tuple[str, str | None]], reason: str
) -> None:
    async with open_test_hub(heartbeat_interval=1000) as hub:
        before = task_names()
        client = Client()
        async with serve(hub, client) as connection:
            await trio.sleep(1)
            for call, why in calls:
                if call == "client":
                    client.closed.set()
                    while connection.close_reason is None:  # the watchdog sees it before the next call
                        await trio.lowlevel.checkpoint()
                elif call == "close":
                    connection.close(why or "")
                else:
                    connection.end(why or "")
                connection.close(reason)  # repeating the winner changes nothing either
        assert connection.close_reason == reason
        assert_unregistered(hub, reason)
        assert task_names() == before


async def test_stream_ended_between_registration_and_its_start_never_writes_and_leaves_nothing(
    autojump_clock,
) -> None:
    async with open_test_hub(heartbeat_interval=1000) as hub:
        before = task_names()
        client = Client()
        async with hub.connect(hub.subscription(None, None)) as connection:
            hub.begin_shutdown()
            with trio.fail_after(EPS):
                await connection.run(client)  # type: ignore[arg-type]
        assert client.writes == []
        assert connection.close_reason == "server_shutdown" and connection.can_finish
        assert_unregistered(hub, "server_shutdown")
        assert task_names() == before


async def test_transport_failing_on_its_very_first_write_is_client_closed(autojump_clock) -> None:
    async with open_test_hub(heartbeat_interval=1000) as hub:
        before = task_names()
        client = Client(fail_first=True)
        with trio.fail_after(EPS):
            async with serve(hub, client) as connection:
                pass
        assert client.writes == []
        assert connection.close_reason == "client_closed"
        assert not connection.can_finish
        assert_unregistered(hub, "client_closed")
        assert task_names() == before


@pytest.mark.parametrize("overflow", ["drop", "disconnect"])
async def test_a_round_that_only_partly_fits_the_queue(autojump_clock, overflow: str) -> None:
    """One round of five events meets three free slots: three are queued, two do not fit."""
    async with open_test_hub(queue_size=3, overflow=overflow, send_timeout=60, heartbeat_interval=1000) as hub:
        seed = await hub.publish("commit", {"n": -1})  # the stream's resume point (Last-Event-ID header)
        before = task_names()
        client = Client()
        async with serve(hub, client) as connection:
            await trio.sleep(1)
            client.stall()
            in_write = await hub.publish("commit", {"n": 0})
            await client.blocked.wait()
            burst = await publish_many(hub, 5)  # one batch, one round
            await trio.sleep(0.1)
            if overflow == "drop":
                assert connection.close_reason is None
                assert connection.pending == 3 and connection.events_dropped == 2
                assert hub.snapshot()["events_dropped"] == 2
                client.resume()
                await trio.sleep(0.1)
                assert client.ids() == [in_write, *burst[:3]]  # the two that did not fit are gone
                later = await hub.publish("commit", {"n": 6})
                await trio.sleep(0.1)
                assert client.ids()[-1] == later
                client.closed.set()
        if overflow == "drop":
            assert_unregistered(hub, "client_closed")
        else:
            assert connection.close_reason == "slow_consumer" and not connection.can_finish
            assert client.ids() == []
            assert_unregistered(hub, "slow_consumer")
            assert hub.snapshot()["events_dropped"] == 0
            assert connection.start_id == seed
            assert await catch_up(hub, seed) == [in_write, *burst]
        assert task_names() == before


async def test_events_published_during_a_graceful_end_do_not_abort_it(autojump_clock) -> None:
    """A stream that is ending only finishes its write under way: it must not be offered
    events any more, or enough of them overflow its queue and abort that write."""
    async with open_test_hub(queue_size=3, send_timeout=60, shutdown_grace=30, heartbeat_interval=1000) as hub:
        client = Client(shielded=True)
        async with serve(hub, client) as connection:
            await trio.sleep(1)
            client.stall()
            in_write = await hub.publish("commit", {"n": 0})
            await client.blocked.wait()
            hub.begin_shutdown()
            await publish_many(hub, 5)  # publishers carry on during the grace
            await trio.sleep(1)
            assert not client.aborted
            client.resume()
        assert client.ids() == [in_write]
        assert connection.close_reason == "server_shutdown"
        assert connection.can_finish  # the graceful end stayed graceful
        assert_unregistered(hub, "server_shutdown")
        assert hub.snapshot()["errors_last_minute"] == 0
