"""Slow consumers: bounded queues, the overflow policies, and batched writes.

A paused test stream makes the app's write block like a full TCP window: the
connection's task is stuck in that write while the hub keeps offering it events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import trio

from trio_sse.core.parser import ParsedEvent
from trio_sse.http.introspection import connection_entry
from trio_sse.runtime.connection import CONTROL_RESERVE, Connection
from trio_sse.runtime.hub import Hub

from .support import open_test_hub


def sorted_types(changes: list[list[str]]) -> list[list[str]]:
    return [sorted(types) for types in changes]


def connection_id(connected: ParsedEvent) -> str:
    assert connected.type == "connected"
    value: str = orjson.loads(connected.data)["connection_id"]
    return value


async def test_disconnect_policy_closes_a_full_queue_with_reason_slow_consumer(autojump_clock, client_factory) -> None:
    async with client_factory(queue_size=3) as (hub, client):
        async with client.stream() as fast, client.stream() as slow:
            await fast.next_event()
            slow_id = connection_id(await slow.next_event())
            first = await hub.publish("commit", {"n": 0})
            assert (await slow.next_event()).id == first
            assert (await fast.next_event()).id == first
            slow.pause()
            start = trio.current_time()
            # 1 in the blocked write + 3 queued fit; the 5th overflows.
            for n in range(1, 11):
                before = trio.current_time()
                event_id = await hub.publish("commit", {"n": n})
                assert trio.current_time() == before  # the publisher never waits
                assert (await fast.next_event()).id == event_id  # nor does the fast stream
                assert trio.current_time() - before <= hub.settings.flush_interval + 1e-9
            await slow.wait_ended()
            # Closed by the overflow itself, long before send_timeout could have fired.
            assert trio.current_time() - start <= 10 * hub.settings.flush_interval < hub.settings.send_timeout
            snapshot = hub.snapshot()
            assert snapshot["disconnects"] == {"slow_consumer": 1}
            assert snapshot["active_connections"] == 1
            assert slow_id not in {c.id for c in hub.connections()}
            assert not any(isinstance(item, ParsedEvent) for item in slow.pending())

            # The fast stream keeps going after its neighbour was dropped.
            later = await hub.publish("commit", {"n": 11})
            assert (await fast.next_event()).id == later


async def test_slow_consumer_reconnects_with_last_event_id_and_loses_nothing(autojump_clock, client_factory) -> None:
    async with client_factory(queue_size=3) as (hub, client):
        async with client.stream() as slow:
            await slow.next_event()
            first = await hub.publish("commit", {"n": 0})
            last_seen = (await slow.next_event()).last_event_id
            assert last_seen == first
            slow.pause()
            missed = [await hub.publish("commit", {"n": n}) for n in range(1, 11)]
            await slow.wait_ended()
        assert hub.snapshot()["disconnects"] == {"slow_consumer": 1}

        async with client.stream(headers={"Last-Event-ID": last_seen}) as again:
            assert (await again.next_event()).type == "connected"
            replayed = await again.events(len(missed))
            assert [e.id for e in replayed] == missed
            assert [orjson.loads(e.data)["n"] for e in replayed] == list(range(1, 11))
            live = await hub.publish("commit", {"n": 11})
            event = await again.next_event()
            assert event.id == live
            assert again.pending() == []


async def test_drop_policy_drops_for_the_slow_connection_only_and_counts(autojump_clock, client_factory) -> None:
    async with client_factory(queue_size=3, overflow="drop") as (hub, client):
        async with client.stream() as fast, client.stream() as slow:
            await fast.next_event()
            slow_id = connection_id(await slow.next_event())
            slow.pause()
            start = trio.current_time()
            ids = []
            for n in range(10):
                before = trio.current_time()
                ids.append(await hub.publish("commit", {"n": n}))
                assert trio.current_time() == before  # the publisher never waits
                assert (await fast.next_event()).id == ids[-1]
            assert trio.current_time() - start <= 10 * hub.settings.flush_interval
            await trio.sleep(0.5)

            # ids[0] is in the blocked write, ids[1:4] are queued, ids[4:] were dropped.
            connection = hub.get_connection(slow_id)
            assert connection.close_reason is None
            assert connection.events_dropped == 6
            snapshot = hub.snapshot()
            assert snapshot["events_dropped"] == 6
            assert snapshot["disconnects"] == {}
            assert snapshot["active_connections"] == 2
            assert snapshot["queue"]["max_fill"] == 3
            assert connection_entry(hub.connection_statistics(connection))["events_dropped"] == 6

            slow.resume()
            assert [e.id for e in await slow.events(4)] == ids[:4]
            later = await hub.publish("commit", {"n": 10})
            assert (await slow.next_event()).id == later
            assert (await fast.next_event()).id == later
            assert slow.pending() == []
            assert hub.get_connection(slow_id).events_dropped == 6
            assert hub.snapshot()["events_dropped"] == 6


async def test_drop_policy_counts_each_slow_connection_separately(autojump_clock, client_factory) -> None:
    async with client_factory(queue_size=2, overflow="drop") as (hub, client):
        async with client.stream() as a, client.stream() as b:
            id_a = connection_id(await a.next_event())
            id_b = connection_id(await b.next_event())
            a.pause()
            b.pause()
            # A burst published without yielding: neither task runs in between, so each
            # queue takes 2 and drops 3.
            for n in range(5):
                await hub.publish("commit", {"n": n})
            await trio.sleep(0.5)
            assert hub.get_connection(id_a).events_dropped == 3
            assert hub.get_connection(id_b).events_dropped == 3
            assert hub.snapshot()["events_dropped"] == 6
            a.resume()
            assert [orjson.loads(e.data)["n"] for e in await a.events(2)] == [0, 1]
            assert hub.get_connection(id_b).close_reason is None


class GatedTransport:
    """Counts writes; while the gate is shut a write blocks, like a client not reading."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._gate = trio.Event()
        self._gate.set()
        self._changed = trio.Event()
        self.closed = trio.Event()

    def shut(self) -> None:
        if self._gate.is_set():
            self._gate = trio.Event()

    def open(self) -> None:
        self._gate.set()

    async def write(self, data: bytes) -> None:
        await self._gate.wait()
        self.writes.append(data)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.open()

    async def wait_writes(self, count: int) -> None:
        while len(self.writes) < count:
            await self._changed.wait()


@asynccontextmanager
async def open_connection(hub: Hub, transport: GatedTransport) -> AsyncIterator[Connection]:
    async def serve(*, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(None, None)) as connection:
            task_status.started(connection)
            await connection.run(transport)

    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve)
        transport.closed.set()


async def test_events_queued_before_the_task_runs_go_out_in_one_write(autojump_clock) -> None:
    async with open_test_hub() as hub:
        transport = GatedTransport()
        async with open_connection(hub, transport) as connection:
            # hub.publish never checkpoints with the memory backend: all five are
            # queued before the connection's task gets to run again.
            ids = [await hub.publish("commit", {"n": n}) for n in range(5)]
            await transport.wait_writes(2)
            await trio.sleep(1)
            assert len(transport.writes) == 2
            preamble, batch = transport.writes
            assert preamble.startswith(b"retry: ") and b"event: connected\n" in preamble
            assert [line for line in batch.split(b"\n") if line.startswith(b"id: ")] == [
                b"id: " + i.encode() for i in ids
            ]
            assert connection.events_sent == 5
            assert connection.last_event_id == ids[-1]
            assert hub.snapshot()["events_delivered"] == 5


async def test_events_queued_during_a_blocked_write_go_out_in_one_write(autojump_clock) -> None:
    async with open_test_hub() as hub:
        transport = GatedTransport()
        async with open_connection(hub, transport):
            await transport.wait_writes(1)
            transport.shut()
            first = await hub.publish("commit", {"n": 0})
            await trio.sleep(1)  # the connection is now blocked writing the first event
            rest = [await hub.publish("commit", {"n": n}) for n in range(1, 6)]
            await trio.sleep(1)
            transport.open()
            await transport.wait_writes(3)
            await trio.sleep(1)
            assert len(transport.writes) == 3
            assert b"id: " + first.encode() in transport.writes[1]
            assert transport.writes[2].count(b"id: ") == 5
            for event_id in rest:
                assert b"id: " + event_id.encode() + b"\n" in transport.writes[2]
            assert hub.snapshot()["events_delivered"] == 6


async def test_filter_changes_reach_a_stream_whose_queue_is_full_and_refusals_beyond_the_reserve_change_nothing(
    autojump_clock, client_factory
) -> None:
    """System events are always delivered: a full queue drops events, never ``subscription_updated``.

    Changes have CONTROL_RESERVE slots of their own; one more while they are all taken
    is a 429 JSON refusal that leaves the filters as they were.
    """
    async with client_factory(queue_size=2, overflow="drop", send_timeout=100) as (hub, client):
        async with client.stream(query={"types": "commit"}) as stream:
            cid = connection_id(await stream.next_event())
            stream.pause()
            ids = [await hub.publish("commit", {"n": 0})]
            await trio.sleep(1)  # blocked writing event 0
            ids += [await hub.publish("commit", {"n": n}) for n in range(1, 6)]
            await trio.sleep(1)  # events 1 and 2 fill the queue, 3-5 are dropped
            assert hub.get_connection(cid).events_dropped == 3

            wanted = [["commit", "file_change"], ["commit", "risk_alert"]] * (CONTROL_RESERVE // 2)
            for types in wanted:
                reply = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": types})
                assert reply.status == 200, reply
            one_more = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["task_update"]})
            assert one_more.status == 429
            assert one_more.headers["content-type"].startswith("application/json")
            assert one_more.json()["error"] == "too_many_pending_changes"
            assert int(one_more.headers["retry-after"]) >= 1
            assert hub.get_connection(cid).subscription.event_types == frozenset(wanted[-1])
            assert hub.get_connection(cid).events_dropped == 3  # the changes took no event slot

            stream.resume()
            received = await stream.events(3 + CONTROL_RESERVE)
            assert [e.id for e in received[:3]] == ids[:3]
            updates = received[3:]
            assert [(e.type, e.id) for e in updates] == [("subscription_updated", None)] * CONTROL_RESERVE
            assert [orjson.loads(e.data)["event_types"] for e in updates] == sorted_types(wanted)
            alert = await hub.publish("risk_alert", {})
            await hub.publish("task_update", {})  # the refused change did not apply
            assert (await stream.next_event()).id == alert
            await stream.assert_no_event_within(1)
