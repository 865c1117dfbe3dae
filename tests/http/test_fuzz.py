"""Hypothesis against the HTTP API: any body or query gets a 2xx or a 4xx JSON error, never a 5xx,
and a refused publish changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_sse
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient, TestResponse

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVENT_TYPES = ["commit", "file_change", "system_status", "nope", "", "Commit", "connected", "a" * 70]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.sampled_from(EVENT_TYPES) | json_values,
        "data": json_values,
        "project_id": st.none() | st.text(max_size=8) | st.integers(),
    },
)
batches = st.fixed_dictionaries({"events": st.lists(event_like, max_size=4) | json_values})
publish_bodies = event_like | batches | json_values
subscribe_fields = st.fixed_dictionaries(
    {},
    optional={
        "connection_id": st.just("LIVE") | st.text(max_size=8) | json_values,
        "event_types": st.lists(st.sampled_from(EVENT_TYPES), max_size=3) | json_values,
        "mode": st.sampled_from(["replace", "add", "remove", "merge"]) | json_values,
        "project_id": st.none() | st.text(max_size=8) | json_values,
        "last_event_id": st.none() | st.text(max_size=8) | json_values,
    },
)
raw_bodies = st.binary(max_size=200) | st.text(max_size=100).map(str.encode)
QUERY_NAMES = ["types", "project", "project_id", "last_event_id", "access_token", "x"]
query_strings = st.text(max_size=80) | st.lists(
    st.tuples(
        st.sampled_from(QUERY_NAMES),
        st.sampled_from(["commit", "commit,file_change", "", ",", "nope", "%FF", "%00", "p1", "9" * 300])
        | st.text(max_size=12),
    ),
    max_size=5,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


@asynccontextmanager
async def fresh_client() -> AsyncIterator[tuple[trio_sse.Hub, SSETestClient]]:
    # A fresh hub per example: no example sees another's events or connections.
    config = Settings(max_body_bytes=4096, max_event_bytes=256, connection_rate=100_000, log_level="warning")
    async with trio_sse.open_hub(config) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as client:
        yield hub, client


def assert_ok_or_json_client_error(reply: TestResponse, ok: int) -> None:
    assert reply.status < 500, reply
    if reply.status != ok:
        assert 400 <= reply.status < 500, reply
        assert reply.headers["content-type"].startswith("application/json"), reply
        body = reply.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), reply


def encode(body: Any) -> bytes:
    # The stdlib encoder, not orjson: it also writes integers beyond 64 bits.
    return json.dumps(body, ensure_ascii=False).encode()


@FUZZ
@given(body=publish_bodies.map(encode) | raw_bodies)
async def test_publish_never_5xx_and_a_refusal_changes_nothing(body: bytes) -> None:
    async with fresh_client() as (hub, client):
        before = hub.snapshot()
        reply = await client.post("/sse/publish", body=body, headers={"content-type": "application/json"})
        assert_ok_or_json_client_error(reply, 202)
        after = hub.snapshot()
        if reply.status == 202:
            answer = reply.json()
            count = len(answer["ids"]) if "ids" in answer else 1
            assert after["events_published"] == count and after["history"]["size"] == count
        else:
            assert after["events_published"] == before["events_published"] == 0
            assert after["history"] == before["history"]


@FUZZ
@given(body=subscribe_fields.map(encode) | raw_bodies)
async def test_subscribe_never_5xx(body: bytes) -> None:
    async with fresh_client() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        connection_id = stream.headers["x-sse-connection-id"]
        reply = await client.post("/sse/subscribe", body=body.replace(b"LIVE", connection_id.encode()))
        assert_ok_or_json_client_error(reply, 200)
        if reply.status == 200:
            assert reply.json()["connection_id"] == connection_id
        # The stream survives whatever the answer was.
        await client.post("/sse/publish", json={"event_type": "commit", "data": 1})
        assert hub.snapshot()["active_connections"] == 1
        assert (await stream.next_event(timeout=5)).type == "connected"


@FUZZ
@given(body=(event_like | json_values).map(encode) | raw_bodies)
async def test_test_event_never_5xx(body: bytes) -> None:
    async with fresh_client() as (hub, client):
        reply = await client.post("/sse/test-event", body=body)
        assert_ok_or_json_client_error(reply, 202)
        assert hub.snapshot()["events_published"] == (1 if reply.status == 202 else 0)


@FUZZ
@given(query=query_strings)
async def test_stream_query_gives_a_stream_or_a_4xx_json_error(query: str) -> None:
    async with fresh_client() as (hub, client), client.stream(query=query) as stream:
        assert stream.status is not None and stream.status < 500, stream.raw
        if stream.status == 200:
            assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert (await stream.next_event(timeout=5)).type == "connected"
        else:
            assert 400 <= stream.status < 500
            assert stream.headers["content-type"].startswith("application/json")
            assert isinstance(stream.json.get("error"), str)
            assert hub.snapshot()["active_connections"] == 0


@FUZZ
@given(
    method_and_path=st.sampled_from(
        [
            ("POST", "/sse/publish"),
            ("POST", "/sse/subscribe"),
            ("POST", "/sse/test-event"),
            ("GET", "/sse/stats"),
            ("GET", "/sse/connections"),
            ("GET", "/sse/health"),
            ("GET", "/metrics"),
            ("GET", "/nowhere"),
        ]
    ),
    query=st.text(max_size=40),
)
async def test_any_query_on_other_endpoints_is_never_5xx(method_and_path: tuple[str, str], query: str) -> None:
    method, path = method_and_path
    async with fresh_client() as (_, client):
        reply = await client.request(method, path, query=query)
        assert reply.status < 500, reply
        if reply.status >= 400:
            assert isinstance(reply.json().get("error"), str)
