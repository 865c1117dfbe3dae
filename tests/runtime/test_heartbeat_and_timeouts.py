"""Heartbeats and send timeouts, on the virtual clock (pytest-trio's ``autojump_clock``).

Every duration here is checked against ``trio.current_time()``: the clock only moves
when every task is blocked, so a deadline that fires at the wrong moment shows up as
an exact difference, not as a flaky sleep.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from fake_transports import ShieldedTransport

from trio_sse.core.parser import Comment, ParsedEvent
from trio_sse.runtime.connection import HEARTBEAT, Connection
from trio_sse.runtime.hub import Hub

from .support import open_test_hub

EPS = 1e-6


async def test_heartbeat_written_after_interval_of_silence_and_not_before(autojump_clock, client_factory) -> None:
    async with client_factory(heartbeat_interval=5) as (_hub, client), client.stream() as stream:
        assert (await stream.next_event()).type == "connected"
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await stream.next_item(timeout=5 - 0.001)
        assert await stream.next_comment() == "heartbeat"
        assert trio.current_time() - start == pytest.approx(5, abs=EPS)
        assert stream.raw.endswith(HEARTBEAT)


async def test_event_resets_heartbeat_silence_timer(autojump_clock, client_factory) -> None:
    async with client_factory(heartbeat_interval=5) as (hub, client), client.stream() as stream:
        await stream.next_event()
        start = trio.current_time()
        await trio.sleep(3)
        event_id = await hub.publish("commit", {"sha": "a"})
        item = await stream.next_item()
        assert isinstance(item, ParsedEvent) and item.id == event_id
        # 5 s after the event, not 5 s after the connected event.
        with pytest.raises(trio.TooSlowError):
            await stream.next_item(timeout=5 - 0.001)
        assert await stream.next_item() == Comment("heartbeat")
        assert trio.current_time() - start == pytest.approx(3 + 5, abs=EPS)


async def test_heartbeats_repeat_every_interval_while_silent(autojump_clock, client_factory) -> None:
    async with client_factory(heartbeat_interval=5) as (_hub, client), client.stream() as stream:
        await stream.next_event()
        start = trio.current_time()
        times = []
        for _ in range(4):
            assert await stream.next_item() == Comment("heartbeat")
            times.append(trio.current_time() - start)
        assert times == pytest.approx([5, 10, 15, 20], abs=EPS)


async def test_heartbeat_does_not_disturb_events_or_last_event_id(autojump_clock, client_factory) -> None:
    async with client_factory(heartbeat_interval=5) as (hub, client), client.stream() as stream:
        await stream.next_event()
        first = await hub.publish("commit", {"n": 1})
        assert (await stream.next_event()).id == first
        assert await stream.next_comment() == "heartbeat"
        second = await hub.publish("commit", {"n": 2})
        event = await stream.next_event()
        assert (event.id, event.last_event_id, event.data) == (second, second, '{"n":2}')


async def test_paused_client_is_closed_after_send_timeout_and_not_before(autojump_clock, client_factory) -> None:
    async with client_factory(send_timeout=4, heartbeat_interval=1000) as (hub, client), client.stream() as stream:
        await stream.next_event()
        stream.pause()
        await hub.publish("commit", {"sha": "a"})
        start = trio.current_time()
        await trio.sleep(4 - 0.001)
        assert len(hub.connections()) == 1
        assert "send_timeout" not in hub.snapshot()["disconnects"]
        await stream.wait_ended()
        assert trio.current_time() - start == pytest.approx(4, abs=EPS)
        snapshot = hub.snapshot()
        assert snapshot["disconnects"] == {"send_timeout": 1}
        assert snapshot["active_connections"] == 0
        assert snapshot["errors_last_minute"] == 1
        assert hub.connections() == []


async def test_idle_paused_client_is_closed_when_its_heartbeat_write_times_out(autojump_clock, client_factory) -> None:
    async with client_factory(send_timeout=3, heartbeat_interval=5) as (hub, client), client.stream() as stream:
        await stream.next_event()
        start = trio.current_time()
        stream.pause()
        await stream.wait_ended()
        assert trio.current_time() - start == pytest.approx(5 + 3, abs=EPS)
        assert hub.snapshot()["disconnects"] == {"send_timeout": 1}


async def test_slow_but_progressing_writes_are_not_timed_out(autojump_clock, client_factory) -> None:
    """The deadline covers one write; a client that keeps reading, however slowly, stays."""
    async with client_factory(send_timeout=4, heartbeat_interval=1000) as (hub, client), client.stream() as stream:
        await stream.next_event()
        for n in range(5):
            stream.pause()
            await hub.publish("commit", {"n": n})
            await trio.sleep(3)  # each write waits 3 s of a 4 s allowance
            stream.resume()
            assert (await stream.next_event()).data == f'{{"n":{n}}}'
        assert len(hub.connections()) == 1
        assert hub.snapshot()["disconnects"] == {}


async def test_publisher_is_never_blocked_by_a_paused_client(autojump_clock, client_factory) -> None:
    async with (
        client_factory(send_timeout=30, queue_size=100) as (hub, client),
        client.stream() as slow,
        client.stream() as fast,
    ):
        await slow.next_event()
        await fast.next_event()
        slow.pause()
        await hub.publish("commit", {"n": 0})
        await trio.sleep(1)  # the slow connection is now stuck in its write
        start = trio.current_time()
        with trio.fail_after(0.001):
            ids = [await hub.publish("commit", {"n": n}) for n in range(1, 51)]
        assert trio.current_time() == start
        received = await fast.events(51)
        assert [e.id for e in received[1:]] == ids
        assert trio.current_time() == start  # and the fast one was not held up either
        assert len(hub.connections()) == 2


@asynccontextmanager
async def open_connection(hub: Hub, transport: object) -> AsyncIterator[Connection]:
    async def serve(*, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(None, None)) as connection:
            task_status.started(connection)
            await connection.run(transport)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve)


async def test_stuck_shielded_write_is_aborted_at_send_timeout(autojump_clock) -> None:
    transport = ShieldedTransport()
    async with open_test_hub(send_timeout=4, heartbeat_interval=1000) as hub:
        async with open_connection(hub, transport) as connection:
            await trio.sleep(1)  # the preamble goes out normally
            transport.stuck = True
            await hub.publish("commit", {"sha": "a"})
            start = trio.current_time()
        # The nursery only exits once run() has returned: the abort is what freed it.
        assert transport.aborted_at - start == pytest.approx(4, abs=EPS)
        assert trio.current_time() - start == pytest.approx(4, abs=EPS)
        assert connection.close_reason == "send_timeout"
        assert not connection.can_finish
        assert hub.snapshot()["disconnects"] == {"send_timeout": 1}
        assert hub.connections() == []
