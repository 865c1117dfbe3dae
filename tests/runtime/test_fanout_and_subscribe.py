"""Fan-out, filters, replay, live filter changes, system events and connection limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest
import trio

from trio_sse.core.parser import ParsedEvent, SSEParser
from trio_sse.http.errors import refusal_error
from trio_sse.http.introspection import health_answer
from trio_sse.runtime.connection import ClientInfo, Connection
from trio_sse.runtime.hub import ConnectionRefused, Hub
from trio_sse.testing import SSETestClient, TestStream

from .support import open_test_hub

#: Virtual seconds a read may wait: far beyond any deadline here, so a read that
#: would wait forever fails instead.
TIMEOUT = 300
ALL_TYPES = sorted(["commit", "file_change", "progress_update", "risk_alert", "system_status", "task_update"])


def payload(event: ParsedEvent) -> Any:
    return orjson.loads(event.data)


async def connected_id(stream: TestStream) -> str:
    event = await stream.expect_event("connected", timeout=TIMEOUT)
    value: str = payload(event)["connection_id"]
    assert value == stream.connection_id
    return value


async def read_ids(stream: TestStream, count: int) -> list[str | None]:
    return [e.id for e in await stream.events(count, timeout=TIMEOUT)]


async def assert_quiet(stream: TestStream) -> None:
    """Nothing more arrives (heartbeats aside) within a second of virtual time."""
    await stream.assert_no_event_within(1)


class FakeTransport:
    """A transport whose writes can be held back; keeps every write and parses them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.items: list[Any] = []
        self._parser = SSEParser()
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
        self.items.extend(self._parser.feed(data))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.open()

    async def wait_events(self, count: int) -> list[ParsedEvent]:
        while True:
            events = [item for item in self.items if isinstance(item, ParsedEvent)]
            if len(events) >= count:
                return events
            await self._changed.wait()


@asynccontextmanager
async def open_connection(
    hub: Hub, transport: FakeTransport, types: list[str] | None = None, **kwargs: Any
) -> AsyncIterator[Connection]:
    async def serve(*, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(types, None), **kwargs) as connection:
            task_status.started(connection)
            await connection.run(transport)

    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve)
        transport.closed.set()


# -- fan-out and filters ------------------------------------------------------------------


async def test_connected_event_comes_first_and_describes_the_filters(autojump_clock, client_factory) -> None:
    async with (
        client_factory(retry=1500) as (hub, client),
        client.stream(query={"types": "file_change,commit", "project": "p1"}) as stream,
    ):
        connected = await stream.next_event()
        assert stream.raw.startswith(b"retry: 1500\n")
        assert connected.type == "connected"
        assert connected.id is None
        assert payload(connected) == {
            "connection_id": hub.connections()[0].id,
            "event_types": ["commit", "file_change"],
            "project_id": "p1",
        }


async def test_every_matching_stream_gets_every_event_in_publish_order(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(client.stream()) for _ in range(5)]
        for stream in streams:
            await stream.next_event()
        types = ["commit", "file_change", "risk_alert", "task_update"]
        ids = [await hub.publish(types[n % 4], {"n": n}, project_id=["a", None][n % 2]) for n in range(40)]
        for stream in streams:
            received = await stream.events(40)
            assert [e.id for e in received] == ids
            assert [payload(e)["n"] for e in received] == list(range(40))
        assert ids == sorted(ids, key=lambda i: tuple(int(part) for part in i.split("-")))
        assert len(set(ids)) == 40
        assert hub.snapshot()["events_delivered"] == 200


async def test_type_filter_delivers_only_those_types(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit,risk_alert"}) as stream:
        await stream.next_event()
        wanted = []
        for event_type in ["commit", "file_change", "risk_alert", "task_update", "commit"]:
            event_id = await hub.publish(event_type, {"t": event_type})
            if event_type in ("commit", "risk_alert"):
                wanted.append(event_id)
        assert await read_ids(stream, 3) == wanted
        await assert_quiet(stream)


async def test_project_filter_gets_its_project_and_broadcasts_never_another(autojump_clock, client_factory) -> None:
    async with (
        client_factory() as (hub, client),
        client.stream(query={"project": "p1"}) as p1,
        client.stream(query={"project_id": "p2"}) as p2,
        client.stream() as everyone,
    ):
        for stream in (p1, p2, everyone):
            await stream.next_event()
        published = []
        for project in ["p1", "p2", None, "p1", "p3", None, "p2"]:
            published.append((await hub.publish("progress_update", {"p": project}, project_id=project), project))
        assert await read_ids(p1, 4) == [i for i, p in published if p in ("p1", None)]
        assert await read_ids(p2, 4) == [i for i, p in published if p in ("p2", None)]
        assert await read_ids(everyone, 7) == [i for i, _ in published]
        await assert_quiet(p1)
        await assert_quiet(p2)


# -- replay -----------------------------------------------------------------------------


async def test_last_event_id_header_replays_matching_events_in_order_then_live(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client):
        published = [
            (await hub.publish(t, {"n": n}, project_id=p), t, p)
            for n, (t, p) in enumerate(
                [
                    ("commit", "p1"),
                    ("commit", "p1"),
                    ("file_change", "p1"),
                    ("commit", "p2"),
                    ("commit", None),
                    ("commit", "p1"),
                    ("risk_alert", "p1"),
                ]
            )
        ]
        resume_from = published[1][0]
        expected = [i for i, t, p in published[2:] if t == "commit" and p in ("p1", None)]
        async with client.stream(
            query={"types": "commit", "project": "p1"}, headers={"Last-Event-ID": resume_from}
        ) as stream:
            await stream.next_event()
            assert await read_ids(stream, 2) == expected
            live = await hub.publish("commit", {"live": True}, project_id="p1")
            event = await stream.next_event()
            assert (event.id, payload(event)) == (live, {"live": True})
            await assert_quiet(stream)


async def test_last_event_id_query_parameter_replays_and_the_header_wins(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client):
        ids = [await hub.publish("commit", {"n": n}) for n in range(5)]
        async with client.stream(query={"last_event_id": ids[2]}) as by_query:
            await by_query.next_event()
            assert await read_ids(by_query, 2) == ids[3:]
        async with client.stream(query={"last_event_id": ids[0]}, headers={"Last-Event-ID": ids[3]}) as both:
            await both.next_event()
            assert await read_ids(both, 1) == ids[4:]
            await assert_quiet(both)


async def test_replay_and_live_meet_without_gap_or_duplicate(autojump_clock) -> None:
    """Events published after registration but before the replay is read are sent once."""
    async with open_test_hub() as hub:
        before = [await hub.publish("commit", {"n": n}) for n in range(3)]
        transport = FakeTransport()
        transport.shut()  # the connection is registered but cannot write yet
        async with open_connection(hub, transport, last_event_id=before[0]):
            during = [await hub.publish("commit", {"n": n}) for n in range(3, 6)]
            await trio.sleep(1)
            transport.open()
            await transport.wait_events(1 + 5)
            after = await hub.publish("commit", {"n": 6})
            await transport.wait_events(1 + 5 + 1)
            await trio.sleep(1)
            assert [e.id for e in transport.items if isinstance(e, ParsedEvent)][1:] == [*before[1:], *during, after]


async def test_unknown_last_event_id_gives_one_stream_reset_then_live(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client):
        await hub.publish("commit", {"n": 0})
        for unknown in ["not-an-id", "99999999999999-0"]:
            async with client.stream(headers={"Last-Event-ID": unknown}) as stream:
                await stream.next_event()
                reset = await stream.next_event()
                assert reset.type == "stream_reset"
                assert reset.id is None
                assert payload(reset) == {"reason": "unknown_id", "last_event_id": unknown}
                live = await hub.publish("commit", {"n": 1})
                assert await read_ids(stream, 1) == [live]
                await assert_quiet(stream)


async def test_evicted_last_event_id_gives_stream_reset_history_gap(autojump_clock, client_factory) -> None:
    # project_history_size 0: the global window alone (these broadcasts would otherwise
    # stay in the broadcasts' window; tests/http/test_project_retention.py covers that).
    async with client_factory(history_size=5, project_history_size=0) as (hub, client):
        ids = [await hub.publish("commit", {"n": n}) for n in range(8)]
        assert hub.snapshot()["history"]["oldest_id"] == ids[3]
        async with client.stream(query={"last_event_id": ids[1]}) as stream:
            await stream.next_event()
            reset = await stream.next_event()
            assert (reset.type, reset.id) == ("stream_reset", None)
            assert payload(reset) == {"reason": "history_gap", "last_event_id": ids[1]}
            live = await hub.publish("commit", {"n": 8})
            assert await read_ids(stream, 1) == [live]
        # The history now holds ids[4:] and live: the oldest kept id still replays.
        async with client.stream(query={"last_event_id": ids[4]}) as still_kept:
            await still_kept.next_event()
            assert await read_ids(still_kept, 4) == [*ids[5:], live]


# -- changing filters -------------------------------------------------------------------


async def test_subscribe_announces_new_filters_before_any_event_under_them(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        cid = await connected_id(stream)
        reply = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["file_change"]})
        assert reply.status == 200
        assert reply.json() == {"connection_id": cid, "event_types": ["file_change"], "project_id": None}
        await hub.publish("commit", {"old": True})
        new = await hub.publish("file_change", {"new": True})
        updated, event = await stream.events(2)
        assert (updated.type, updated.id) == ("subscription_updated", None)
        assert payload(updated) == reply.json()
        assert event.id == new
        await assert_quiet(stream)


async def test_subscription_change_takes_its_place_in_the_stream_order(autojump_clock) -> None:
    """Events queued under the old filters go first, then the announcement, then the new ones."""
    async with open_test_hub() as hub:
        transport = FakeTransport()
        async with open_connection(hub, transport, types=["commit"]) as connection:
            await transport.wait_events(1)
            transport.shut()
            c1 = await hub.publish("commit", {"n": 1})
            await trio.sleep(1)  # blocked writing c1
            c2 = await hub.publish("commit", {"n": 2})
            hub.update_subscription(connection.id, ["file_change"])
            f1 = await hub.publish("file_change", {"n": 1})
            await hub.publish("commit", {"n": 3})
            transport.open()
            events = await transport.wait_events(5)
            await trio.sleep(1)
            assert [(e.type, e.id) for e in transport.items] == [
                ("connected", None),
                ("commit", c1),
                ("commit", c2),
                ("subscription_updated", None),
                ("file_change", f1),
            ]
            assert payload(events[3])["event_types"] == ["file_change"]


async def test_subscribe_modes_replace_add_and_remove(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        cid = await connected_id(stream)
        steps: list[tuple[dict[str, Any], list[str]]] = [
            ({"event_types": ["file_change"], "mode": "add"}, ["commit", "file_change"]),
            ({"event_types": ["commit"], "mode": "remove"}, ["file_change"]),
            ({"event_types": ["risk_alert", "task_update"]}, ["risk_alert", "task_update"]),
            ({"event_types": ["task_update"], "mode": "replace"}, ["task_update"]),
        ]
        for body, expected in steps:
            reply = await client.post("/sse/subscribe", json={"connection_id": cid, **body})
            assert reply.status == 200, reply
            assert reply.json()["event_types"] == expected
            assert payload(await stream.next_event())["event_types"] == expected
            ids = {t: await hub.publish(t, {"t": t}) for t in ALL_TYPES}
            assert await read_ids(stream, len(expected)) == [ids[t] for t in ALL_TYPES if t in expected]
            await assert_quiet(stream)


async def test_subscribe_add_to_an_unfiltered_stream_keeps_every_type(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream() as stream:
        cid = await connected_id(stream)
        hub.update_subscription(cid, ["commit"], mode="add")
        assert payload(await stream.next_event())["event_types"] == ALL_TYPES
        hub.update_subscription(cid, ["commit"], mode="remove")
        assert payload(await stream.next_event())["event_types"] == [t for t in ALL_TYPES if t != "commit"]
        skipped = await hub.publish("commit", {})
        kept = await hub.publish("risk_alert", {})
        assert await read_ids(stream, 1) == [kept]
        assert skipped != kept


async def test_subscribe_changes_and_clears_the_project(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"project": "p1"}) as stream:
        cid = await connected_id(stream)

        async def publish_each() -> dict[str | None, str]:
            return {p: await hub.publish("commit", {"p": p}, project_id=p) for p in ("p1", "p2", None)}

        reply = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": [], "mode": "add", "project_id": "p2"}
        )
        assert reply.json()["project_id"] == "p2"
        assert payload(await stream.next_event())["project_id"] == "p2"
        ids = await publish_each()
        assert await read_ids(stream, 2) == [ids["p2"], ids[None]]

        # Leaving project_id out keeps the project.
        await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"]})
        updated = payload(await stream.next_event())
        assert updated == {"connection_id": cid, "event_types": ["commit"], "project_id": "p2"}

        reply = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "project_id": None}
        )
        assert reply.json()["project_id"] is None
        assert payload(await stream.next_event())["project_id"] is None
        ids = await publish_each()
        assert await read_ids(stream, 3) == [ids["p1"], ids["p2"], ids[None]]
        await assert_quiet(stream)


async def test_subscribe_replay_uses_the_new_filters_and_repeats_nothing_delivered(
    autojump_clock, client_factory
) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        cid = await connected_id(stream)
        c1 = await hub.publish("commit", {"n": 1})
        c2 = await hub.publish("commit", {"n": 2})
        assert await read_ids(stream, 2) == [c1, c2]
        f1 = await hub.publish("file_change", {"n": 1})
        r1 = await hub.publish("risk_alert", {"n": 1})
        f2 = await hub.publish("file_change", {"n": 2})
        reply = await client.post(
            "/sse/subscribe",
            json={"connection_id": cid, "event_types": ["file_change"], "mode": "add", "last_event_id": c1},
        )
        assert reply.status == 200
        assert (await stream.next_event()).type == "subscription_updated"
        assert await read_ids(stream, 2) == [f1, f2]  # c2 was already delivered; r1 does not match
        c3 = await hub.publish("commit", {"n": 3})
        assert await read_ids(stream, 1) == [c3]
        await assert_quiet(stream)
        assert r1 not in {e.id for e in stream.pending() if isinstance(e, ParsedEvent)}


async def test_subscribe_replay_includes_new_filter_events_older_than_the_last_delivered(
    autojump_clock, client_factory
) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        cid = await connected_id(stream)
        c1 = await hub.publish("commit", {"n": 1})
        f1 = await hub.publish("file_change", {"n": 1})
        c2 = await hub.publish("commit", {"n": 2})
        assert await read_ids(stream, 2) == [c1, c2]
        hub.update_subscription(cid, ["file_change"], mode="add", last_event_id=c1)
        assert (await stream.next_event()).type == "subscription_updated"
        c3 = await hub.publish("commit", {"n": 3})
        received = await read_ids(stream, 2)
        assert received == [f1, c3]  # f1 matches the new filters and was never sent; c2 is not repeated


async def test_subscribe_errors_change_nothing(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        cid = await connected_id(stream)
        unknown = await client.post("/sse/subscribe", json={"connection_id": "nope", "event_types": ["commit"]})
        assert unknown.status == 404
        bad_type = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["nope", "commit"]})
        assert bad_type.status == 422
        assert bad_type.json()["invalid_types"] == ["nope"]
        bad_mode = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "mode": "toggle"}
        )
        assert bad_mode.status == 400
        assert hub.get_connection(cid).subscription.event_types == frozenset({"commit"})
        event_id = await hub.publish("commit", {})
        assert await read_ids(stream, 1) == [event_id]  # no subscription_updated in between


# -- system events ----------------------------------------------------------------------


async def test_system_events_carry_no_id_and_keep_the_resume_point(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client):
        first = await hub.publish("commit", {"n": 0})
        async with client.stream(headers={"Last-Event-ID": "unknown"}, query={"types": "commit"}) as stream:
            cid = await connected_id(stream)
            assert (await stream.next_event()).type == "stream_reset"
            real = await hub.publish("commit", {"n": 1})
            assert (await stream.next_event()).id == real
            hub.update_subscription(cid, ["commit", "file_change"])
            updated = await stream.next_event()
            assert updated.type == "subscription_updated"
            assert updated.last_event_id == real  # an id-less event does not move the resume point
        blocks = [block for block in stream.raw.split(b"\n\n") if block.strip()]
        system = [
            b
            for b in blocks
            if any(b"event: " + name in b for name in (b"connected", b"stream_reset", b"subscription_updated"))
        ]
        assert len(system) == 3
        for block in system:
            assert not any(line.startswith(b"id:") for line in block.split(b"\n"))
        assert first not in stream.raw.decode()


# -- connection limits ------------------------------------------------------------------


async def test_global_connection_limit_refuses_with_503_and_retry_after(autojump_clock, client_factory) -> None:
    async with client_factory(connection_limit=2) as (hub, client):
        async with client.stream() as a, client.stream() as b:
            await a.next_event()
            await b.next_event()
            assert health_answer(hub.statistics(), hub.machine_memory())[1]["status"] == "degraded"
            async with client.stream() as refused:
                await refused.wait_ended()
                assert refused.status == 503
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json["error"] == "connection_limit"
            with pytest.raises(ConnectionRefused) as info:
                async with hub.connect(hub.subscription(None, None), client=ClientInfo("10.0.0.1")):
                    pytest.fail("admitted over the limit")
            assert (refusal_error(info.value).status, info.value.reason) == (503, "connection_limit")
            assert int(refusal_error(info.value).headers["Retry-After"]) >= 1
            assert len(hub.connections()) == 2
        async with client.stream() as again:
            assert (await again.next_event()).type == "connected"
        snapshot = hub.snapshot()
        assert snapshot["rejected_by_reason"] == {"connection_limit": 2}
        assert snapshot["rejected_connections"] == 2


async def test_per_client_connection_limit_refuses_with_429_for_that_client_only(
    autojump_clock, client_factory
) -> None:
    async with client_factory(client_connection_limit=2) as (hub, client):
        async with SSETestClient(client.app, client=("10.0.0.2", 40000)) as other:
            async with client.stream() as a, client.stream() as b:
                await a.next_event()
                await b.next_event()
                async with client.stream() as refused:
                    await refused.wait_ended()
                    assert refused.status == 429
                    assert int(refused.headers["retry-after"]) >= 1
                    assert refused.json["error"] == "client_connection_limit"
                async with other.stream() as elsewhere:
                    assert (await elsewhere.next_event()).type == "connected"
            async with client.stream() as after_leaving:
                assert (await after_leaving.next_event()).type == "connected"
        assert hub.snapshot()["rejected_by_reason"] == {"client_connection_limit": 1}


async def test_connection_rate_refuses_with_429_then_recovers_after_retry_after(autojump_clock, client_factory) -> None:
    async with client_factory(connection_rate=3) as (hub, client):
        for _ in range(3):
            async with client.stream() as stream:
                await stream.next_event()
        async with client.stream() as refused:
            await refused.wait_ended()
            assert refused.status == 429
            assert refused.json["error"] == "connection_rate"
            retry_after = int(refused.headers["retry-after"])
        assert retry_after == 20  # one token every 60 s / 3
        await trio.sleep(retry_after - 1)
        async with client.stream() as still_refused:
            await still_refused.wait_ended()
            assert still_refused.status == 429
            assert still_refused.headers["retry-after"] == "1"
        await trio.sleep(1)
        async with client.stream() as admitted:
            assert admitted.status == 200
            assert (await admitted.next_event()).type == "connected"
        assert hub.snapshot()["rejected_by_reason"] == {"connection_rate": 2}
