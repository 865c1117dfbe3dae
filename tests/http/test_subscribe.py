"""``POST /sse/subscribe``: changing a live stream's filters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from http_support import assert_error

from trio_sse.testing import SSETestClient, TestStream


async def connection_id_of(stream: TestStream) -> str:
    connected = await stream.next_event(timeout=5)
    assert connected.type == "connected"
    connection_id: str = json.loads(connected.data)["connection_id"]
    return connection_id


async def publish(client: SSETestClient, event_type: str, data: Any = None, project_id: str | None = None) -> str:
    return await client.publish(event_type, data, project_id)


async def test_subscribe_is_200_with_the_new_filters(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        body = {"connection_id": cid, "event_types": ["file_change", "commit"]}
        reply = await client.post("/sse/subscribe", json=body)
        assert reply.status == 200
        assert reply.json() == {"connection_id": cid, "event_types": ["commit", "file_change"], "project_id": None}


async def test_subscription_updated_arrives_before_any_event_under_the_new_filters(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        old = await publish(client, "commit", 1)
        reply = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["file_change"], "project_id": "p1"}
        )
        assert reply.status == 200
        await publish(client, "commit", 2)  # no longer wanted
        new = await publish(client, "file_change", 3, project_id="p1")
        events = await stream.events(3, timeout=5)
        assert [e.type for e in events] == ["commit", "subscription_updated", "file_change"]
        assert events[0].id == old and events[2].id == new
        update = events[1]
        assert update.id is None
        assert (
            json.loads(update.data)
            == reply.json()
            == {
                "connection_id": cid,
                "event_types": ["file_change"],
                "project_id": "p1",
            }
        )
        assert stream.pending() == []


async def test_mode_add_and_remove_change_the_type_set(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        added = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["risk_alert"], "mode": "add"}
        )
        assert added.json()["event_types"] == ["commit", "risk_alert"]
        removed = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "mode": "remove"}
        )
        assert removed.json()["event_types"] == ["risk_alert"]
        await publish(client, "commit", 1)
        alert = await publish(client, "risk_alert", 2)
        events = await stream.events(3, timeout=5)
        assert [e.type for e in events] == ["subscription_updated", "subscription_updated", "risk_alert"]
        assert events[2].id == alert


async def test_mode_replace_is_the_default(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit,file_change"}) as stream:
        cid = await connection_id_of(stream)
        reply = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["task_update"]})
        assert reply.json()["event_types"] == ["task_update"]
        explicit = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "mode": "replace"}
        )
        assert explicit.json()["event_types"] == ["commit"]
        # The stream itself follows: only commit now, neither file_change (replaced by
        # the default mode) nor task_update (replaced explicitly).
        for event_type in ("file_change", "task_update"):
            await publish(client, event_type, 0)
        commit = await publish(client, "commit", 1)
        events = await stream.events(3, timeout=5)
        assert [e.type for e in events] == ["subscription_updated", "subscription_updated", "commit"]
        assert events[2].id == commit
        assert stream.pending() == []


async def test_project_id_null_clears_and_absent_keeps_the_project(client: SSETestClient) -> None:
    async with client.stream(query={"project": "p1"}) as stream:
        cid = await connection_id_of(stream)
        kept = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"]})
        assert kept.json()["project_id"] == "p1"
        cleared = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "project_id": None}
        )
        assert cleared.json()["project_id"] is None
        other = await publish(client, "commit", 1, project_id="p9")
        events = await stream.events(3, timeout=5)
        assert [e.type for e in events] == ["subscription_updated", "subscription_updated", "commit"]
        assert events[2].id == other


async def test_last_event_id_replays_matching_events_under_the_new_filters(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        start = await publish(client, "commit", 0)
        missed = [await publish(client, "file_change", n) for n in range(3)]
        await publish(client, "risk_alert", "not wanted")
        reply = await client.post(
            "/sse/subscribe",
            json={"connection_id": cid, "event_types": ["file_change"], "last_event_id": start},
        )
        assert reply.status == 200
        live = await publish(client, "file_change", "live")
        events = await stream.events(6, timeout=5)
        assert [e.type for e in events] == ["commit", "subscription_updated", *["file_change"] * 4]
        assert [e.id for e in events[2:]] == [*missed, live]
        assert stream.pending() == []


async def test_last_event_id_unknown_gives_stream_reset(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        reply = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"], "last_event_id": "nope"}
        )
        assert reply.status == 200
        update, reset = await stream.events(2, timeout=5)
        assert update.type == "subscription_updated"
        assert reset.type == "stream_reset"
        assert json.loads(reset.data) == {"reason": "unknown_id", "last_event_id": "nope"}


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"\xff",
        b"[]",
        b'"text"',
        b"null",
        json.dumps({"event_types": ["commit"]}).encode(),
        json.dumps({"connection_id": "", "event_types": ["commit"]}).encode(),
        json.dumps({"connection_id": 5, "event_types": ["commit"]}).encode(),
        json.dumps({"connection_id": "CID"}).encode(),
        json.dumps({"connection_id": "CID", "event_types": "commit"}).encode(),
        json.dumps({"connection_id": "CID", "event_types": [1]}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "mode": "merge"}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "mode": None}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "last_event_id": 7}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "last_event_id": "x" * 300}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "project_id": 3}).encode(),
        json.dumps({"connection_id": "CID", "event_types": ["commit"], "project_id": ""}).encode(),
    ],
)
async def test_bad_json_or_shape_is_400_and_changes_nothing(client: SSETestClient, body: bytes) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        reply = await client.post("/sse/subscribe", body=body.replace(b"CID", cid.encode()))
        assert_error(reply, 400)
        event_id = await publish(client, "commit", 1)
        event = await stream.next_event(timeout=5)
        assert (event.type, event.id) == ("commit", event_id)


async def test_unknown_connection_is_404(client: SSETestClient) -> None:
    reply = await client.post("/sse/subscribe", json={"connection_id": "nobody", "event_types": ["commit"]})
    body = assert_error(reply, 404)
    assert body["error"] == "unknown_connection"


async def test_closed_connection_is_404(client: SSETestClient) -> None:
    async with client.stream() as stream:
        cid = await connection_id_of(stream)
    reply = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["commit"]})
    assert_error(reply, 404)


async def test_unknown_types_are_422_with_invalid_types_and_change_nothing(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        cid = await connection_id_of(stream)
        reply = await client.post(
            "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit", "zeta", "alpha"]}
        )
        body = assert_error(reply, 422)
        assert body["invalid_types"] == ["alpha", "zeta"]
        event_id = await publish(client, "commit", 1)
        event = await stream.next_event(timeout=5)
        assert (event.type, event.id) == ("commit", event_id)


async def test_body_too_large_is_413(client_factory) -> None:
    async with client_factory(max_body_bytes=256) as (_, client), client.stream() as stream:
        cid = await connection_id_of(stream)
        body = {"connection_id": cid, "event_types": ["commit"] * 100}
        assert_error(await client.post("/sse/subscribe", json=body), 413)
        raw = json.dumps(body).encode()
        assert_error(await client.post("/sse/subscribe", body=raw, headers={"content-length": "10"}), 413)
