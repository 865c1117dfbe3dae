"""Every request limit at its threshold: the value itself is accepted, one more is refused,
and the server recovers. The stream limits' recovery (connection_limit, per-client,
connection_rate) is in tests/runtime/test_fanout_and_subscribe.py; publish_rate in
test_publish_rate.py; memory_limit in tests/runtime/test_memory_pressure.py."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import jwt
import trio

from trio_sse.http.params import MAX_QUERY_BYTES, MAX_QUERY_FIELDS, MAX_TYPES
from trio_sse.http.publish import MAX_BATCH
from trio_sse.testing import SSETestClient

SECRET = "limits-secret-of-reasonable-length-012345"


def body_of_size(size: int) -> bytes:
    """A valid publish body of exactly ``size`` bytes."""
    empty = b'{"event_type":"commit","data":""}'
    body = b'{"event_type":"commit","data":"' + b"x" * (size - len(empty)) + b'"}'
    assert len(body) == size
    return body


async def stream_status(client: SSETestClient, **kwargs: Any) -> tuple[int | None, Any]:
    async with client.stream(**kwargs) as stream:
        if stream.status == 200:
            return 200, (await stream.next_event(timeout=5)).type
        return stream.status, stream.json


async def test_max_body_bytes_accepts_exactly_the_limit_and_refuses_one_more(client_factory) -> None:
    async with client_factory(max_body_bytes=300) as (hub, client):
        for path, ok in (("/sse/publish", 202), ("/sse/test-event", 202)):
            assert (await client.post(path, body=body_of_size(300))).status == ok, path
            refused = await client.post(path, body=body_of_size(301))
            assert (refused.status, refused.json()["error"]) == (413, "body_too_large"), path
            assert (await client.post(path, body=body_of_size(300))).status == ok, path  # recovers
        assert hub.snapshot()["events_published"] == 4


async def test_max_event_bytes_accepts_exactly_the_limit_and_refuses_one_more(client_factory) -> None:
    async with client_factory(max_event_bytes=100) as (hub, client):
        at_limit = "x" * 98  # with its quotes, 100 bytes of JSON
        assert (await client.post("/sse/publish", json={"event_type": "commit", "data": at_limit})).status == 202
        over = await client.post("/sse/publish", json={"event_type": "commit", "data": at_limit + "x"})
        assert (over.status, over.json()["error"]) == (413, "event_too_large")
        assert hub.snapshot()["events_published"] == 1


async def test_a_batch_of_max_batch_events_is_accepted_and_one_more_refused(client: SSETestClient) -> None:
    event = {"event_type": "commit", "data": 0}
    assert (await client.post("/sse/publish", json={"events": [event] * MAX_BATCH})).status == 202
    refused = await client.post("/sse/publish", json={"events": [event] * (MAX_BATCH + 1)})
    assert (refused.status, refused.json()["error"]) == (413, "batch_too_large")


async def test_types_count_accepts_exactly_the_maximum_and_refuses_one_more(client_factory) -> None:
    names = [f"t{i}" for i in range(MAX_TYPES + 1)]
    async with client_factory(event_types=tuple(names)) as (_, client):
        assert await stream_status(client, query={"types": ",".join(names[:MAX_TYPES])}) == (200, "connected")
        status, body = await stream_status(client, query={"types": ",".join(names)})
        assert (status, body["error"]) == (400, "invalid_request")
        assert str(MAX_TYPES) in body["message"]


async def test_last_event_id_length_accepts_256_characters_and_refuses_257(client: SSETestClient) -> None:
    for where in ("header", "query"):

        def given(value: str, where: str = where) -> dict[str, Any]:
            return {"headers": {"Last-Event-ID": value}} if where == "header" else {"query": {"last_event_id": value}}

        assert (await stream_status(client, **given("1" * 256)))[0] == 200, where
        status, body = await stream_status(client, **given("1" * 257))
        assert (status, body["error"]) == (400, "invalid_request"), where


async def test_query_string_size_and_field_count_are_limited_exactly(client: SSETestClient) -> None:
    padding = "x=" + "a" * (MAX_QUERY_BYTES - 2)
    assert (await stream_status(client, query=padding))[0] == 200
    assert (await stream_status(client, query=padding + "a"))[0] == 400
    fields = "&".join(f"f{i}=1" for i in range(MAX_QUERY_FIELDS))
    assert (await stream_status(client, query=fields))[0] == 200
    assert (await stream_status(client, query=fields + "&one=more"))[0] == 400


async def test_a_full_server_still_answers_health_and_keeps_its_streams_delivering(
    autojump_clock, client_factory
) -> None:
    async with client_factory(connection_limit=2) as (hub, client), AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(client.stream()) for _ in range(2)]
        for stream in streams:
            await stream.next_event()
        refused = await stream_status(client)
        assert refused[0] == 503 and refused[1]["error"] == "connection_limit"

        health = await client.get("/sse/health")
        assert health.status == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["checks"]["limits"] == {"state": "exhausted"}
        assert (await client.get("/sse/stats")).json()["active_connections"] == 2
        published = await client.post("/sse/publish", json={"event_type": "commit", "data": "still here"})
        assert published.status == 202
        for stream in streams:
            assert (await stream.next_event(timeout=5)).id == published.json()["id"]

        streams[0].disconnect()
        await streams[0].wait_ended(timeout=5)
        await trio.sleep(1)  # virtual time: the hub unregisters the closed stream
        assert hub.snapshot()["active_connections"] == 1
        assert (await client.get("/sse/health")).status == 200
        assert await stream_status(client) == (200, "connected")


def token(sub: str) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 600, "sse": {"projects": ["*"]}}
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def test_per_client_limits_count_by_token_subject_not_by_address(client_factory) -> None:
    """Behind a proxy every user has the proxy's address; the token subject tells them apart."""
    async with client_factory(jwt_secret=SECRET, client_connection_limit=1) as (hub, client):
        async with (
            SSETestClient(client.app, client=("10.0.0.1", 1)) as proxy,
            SSETestClient(client.app, client=("10.0.0.2", 2)) as elsewhere,
        ):
            alice, bob = {"authorization": f"Bearer {token('alice')}"}, {"authorization": f"Bearer {token('bob')}"}
            async with proxy.stream(headers=alice) as first:
                assert first.status == 200
                assert await stream_status(proxy, headers=bob) == (200, "connected")  # same address, other user
                status, body = await stream_status(elsewhere, headers=alice)  # same user, other address
                assert (status, body["error"]) == (429, "client_connection_limit")
        assert hub.snapshot()["rejected_by_reason"] == {"client_connection_limit": 1}
