"""``/sse/stats``, ``/sse/connections``, ``/sse/health``, ``/metrics``, and JSON errors elsewhere."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

import pytest
from http_support import assert_error

from trio_sse.testing import SSETestClient, TestStream

STATS_KEYS = {
    "active_connections",
    "total_connections",
    "rejected_connections",
    "events_published",
    "events_delivered",
    "events_dropped",
    "disconnects",
    "queue",
    "latency_ms",
    "history",
    "backend",
    "connection_limit",
    "uptime_seconds",
    "memory_rss_bytes",
}
CONNECTION_KEYS = {
    "connection_id",
    "client",
    "user_agent",
    "connected_at",
    "event_types",
    "project_id",
    "last_event_id",
    "queue_size",
    "events_sent",
    "events_dropped",
}


async def open_streams(stack: AsyncExitStack, client: SSETestClient, count: int, **query: str) -> list[TestStream]:
    streams = []
    for _ in range(count):
        stream = await stack.enter_async_context(client.stream(query=query or None))
        assert stream.status == 200
        await stream.next_event(timeout=5)
        streams.append(stream)
    return streams


# -- /sse/stats ---------------------------------------------------------------------------------


async def test_stats_has_every_contract_key_with_sane_values_after_traffic(backend, client_factory) -> None:
    async with client_factory(connection_limit=3, history_size=50, queue_size=20) as (_, client):
        async with client.stream(query={"types": "commit"}) as stream:
            await stream.next_event(timeout=5)
            batch = [{"event_type": "commit", "data": n} for n in range(4)]
            ids = (await client.post("/sse/publish", json={"events": batch})).json()["ids"]
            await client.post("/sse/publish", json={"event_type": "file_change", "data": 0})
            await stream.events(4, timeout=5)
            async with client.stream(query={"types": "nope"}):
                pass
            async with client.stream(), client.stream(), client.stream() as refused:
                assert refused.status == 503
                reply = await client.get("/sse/stats")
                assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
                stats = reply.json()
        assert STATS_KEYS <= set(stats)
        assert stats["active_connections"] == 3
        assert stats["total_connections"] == 3
        assert stats["rejected_connections"] == 1
        assert stats["events_published"] == 5
        assert stats["events_delivered"] == 4
        assert stats["events_dropped"] == 0
        assert isinstance(stats["disconnects"], dict)
        assert stats["queue"]["capacity"] == 20
        assert stats["queue"]["max_fill"] == 0 and stats["queue"]["fill_ratio"] == 0  # every stream has read all
        assert set(stats["latency_ms"]) >= {"p50", "p95", "p99"}
        assert 0 <= stats["latency_ms"]["p50"] <= stats["latency_ms"]["p95"] <= stats["latency_ms"]["p99"]
        history = stats["history"]
        assert (history["size"], history["capacity"]) == (5, 50)
        assert history["oldest_id"] == ids[0]
        assert history["newest_id"] not in ids and isinstance(history["newest_id"], str)
        if backend["backend"] == "memory":
            assert stats["backend"] == {"kind": "memory", "status": "ok"}
        else:
            assert stats["backend"]["kind"] == "redis" and stats["backend"]["status"] == "ok"
            assert stats["backend"]["stream"] == backend["redis_stream"]
            assert stats["backend"]["last_read_id"] == history["newest_id"]
        assert stats["connection_limit"] == 3
        assert stats["uptime_seconds"] >= 0
        assert stats["memory_rss_bytes"] > 1_000_000

        after = (await client.get("/sse/stats")).json()
        assert after["active_connections"] == 0
        assert after["disconnects"]["client_closed"] == 3


async def test_stats_count_tasks_and_descriptors_and_both_return_to_idle(client: SSETestClient) -> None:
    idle = (await client.get("/sse/stats")).json()
    assert idle["open_fds"] > 0 and idle["trio_tasks"] > 0
    async with AsyncExitStack() as stack:
        for _ in range(10):
            stream = await stack.enter_async_context(client.stream())
            await stream.next_event()
        busy = (await client.get("/sse/stats")).json()
        assert busy["active_connections"] == 10
        assert busy["trio_tasks"] >= idle["trio_tasks"] + 10  # at least one task per stream
    after = (await client.get("/sse/stats")).json()
    assert after["active_connections"] == 0
    assert after["trio_tasks"] == idle["trio_tasks"]  # every stream's tasks ended with it


async def test_stats_on_a_fresh_hub(client: SSETestClient) -> None:
    stats = (await client.get("/sse/stats")).json()
    assert STATS_KEYS <= set(stats)
    assert stats["active_connections"] == stats["total_connections"] == stats["events_published"] == 0
    assert stats["history"]["size"] == 0 and stats["history"]["oldest_id"] is None
    assert stats["connection_limit"] == 100
    assert stats["queue"]["capacity"] == 1000


# -- /sse/connections -------------------------------------------------------------------------


async def test_connections_lists_each_live_stream(client: SSETestClient) -> None:
    empty = await client.get("/sse/connections")
    assert empty.status == 200 and empty.json()["total"] == 0 and empty.json()["connections"] == []
    async with client.stream(query={"types": "commit", "project": "p1"}, headers={"User-Agent": "probe/1.0"}) as stream:
        connected = json.loads((await stream.next_event(timeout=5)).data)
        event_id = (await client.post("/sse/publish", json={"event_type": "commit", "data": 1})).json()["id"]
        await stream.next_event(timeout=5)
        body = (await client.get("/sse/connections")).json()
    assert body["total"] == 1
    (entry,) = body["connections"]
    assert CONNECTION_KEYS <= set(entry)
    assert entry["connection_id"] == connected["connection_id"]
    assert entry["client"] == "127.0.0.1"
    assert entry["user_agent"] == "probe/1.0"
    assert isinstance(entry["connected_at"], str) and entry["connected_at"][:2] == "20"
    assert entry["event_types"] == ["commit"] and entry["project_id"] == "p1"
    assert entry["last_event_id"] == event_id
    assert entry["queue_size"] == 0
    assert entry["events_sent"] == 1 and entry["events_dropped"] == 0


async def test_connections_pagination_defaults_to_100_and_clamps_at_1000(client_factory) -> None:
    settings = {"connection_limit": 200, "client_connection_limit": 200, "connection_rate": 10_000}
    async with client_factory(**settings) as (_, client), AsyncExitStack() as stack:
        streams = await open_streams(stack, client, 105)
        ids = [s.headers["x-sse-connection-id"] for s in streams]

        page = (await client.get("/sse/connections")).json()
        assert page["total"] == 105 and len(page["connections"]) == 100
        assert (page["limit"], page["offset"]) == (100, 0)
        assert [c["connection_id"] for c in page["connections"]] == ids[:100]

        rest = (await client.get("/sse/connections", query={"offset": 100})).json()
        assert [c["connection_id"] for c in rest["connections"]] == ids[100:]

        window = (await client.get("/sse/connections", query={"limit": 3, "offset": 10})).json()
        assert window["total"] == 105 and [c["connection_id"] for c in window["connections"]] == ids[10:13]

        clamped = (await client.get("/sse/connections", query={"limit": 5000})).json()
        assert clamped["limit"] == 1000 and len(clamped["connections"]) == 105

        beyond = (await client.get("/sse/connections", query={"offset": 500})).json()
        assert beyond["total"] == 105 and beyond["connections"] == []


async def test_connections_filtered_by_project(client: SSETestClient) -> None:
    async with AsyncExitStack() as stack:
        p1 = await open_streams(stack, client, 2, project="p1")
        await open_streams(stack, client, 3, project="p2")
        await open_streams(stack, client, 1)
        body = (await client.get("/sse/connections", query={"project": "p1"})).json()
        assert body["total"] == 2
        assert {c["connection_id"] for c in body["connections"]} == {s.headers["x-sse-connection-id"] for s in p1}
        assert all(c["project_id"] == "p1" for c in body["connections"])
        assert (await client.get("/sse/connections", query={"project": "zz"})).json()["total"] == 0
        assert (await client.get("/sse/connections")).json()["total"] == 6


@pytest.mark.parametrize(
    "query", [{"limit": "abc"}, {"limit": "0"}, {"limit": "-5"}, {"offset": "-1"}, {"offset": "x"}, {"limit": "1.5"}]
)
async def test_connections_bad_integers_are_400(client: SSETestClient, query: dict[str, str]) -> None:
    assert_error(await client.get("/sse/connections", query=query), 400)


# -- /sse/health --------------------------------------------------------------------------------


async def test_health_is_200_ok_with_indicator_checks(client: SSETestClient) -> None:
    reply = await client.get("/sse/health")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    indicators = [c for c in checks.values() if isinstance(c, dict) and "value" in c]
    assert len(indicators) >= 5
    for check in indicators:
        assert {"value", "limit", "state"} <= set(check)
        assert check["state"] in ("ok", "warn")
    assert checks["connections"] == {"value": 0, "limit": 80, "state": "ok"}


async def test_health_warn_alone_stays_200(client_factory) -> None:
    async with client_factory(connection_limit=5) as (_, client), AsyncExitStack() as stack:
        await open_streams(stack, client, 4)  # 80 % of the limit: a warning, not an outage
        reply = await client.get("/sse/health")
        assert reply.status == 200
        body = reply.json()
        assert body["status"] == "ok"
        assert body["checks"]["connections"]["state"] == "warn"
        assert body["checks"]["connections"]["value"] == 4


async def test_health_is_503_degraded_when_the_connection_limit_is_exhausted(client_factory) -> None:
    async with client_factory(connection_limit=2) as (_, client):
        async with AsyncExitStack() as stack:
            await open_streams(stack, client, 2)
            reply = await client.get("/sse/health")
            assert reply.status == 503
            assert reply.json()["status"] == "degraded"
            assert reply.headers["content-type"].startswith("application/json")
        recovered = await client.get("/sse/health")
        assert (recovered.status, recovered.json()["status"]) == (200, "ok")


# -- /metrics -----------------------------------------------------------------------------------


async def test_metrics_is_prometheus_text_with_the_hub_figures(client: SSETestClient) -> None:
    async with client.stream() as stream:
        await stream.next_event(timeout=5)
        await client.post("/sse/publish", json={"event_type": "commit", "data": 1})
        await stream.next_event(timeout=5)
        reply = await client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples["trio_sse_active_connections"] == 1
    assert samples["trio_sse_events_published_total"] == 1
    assert samples["trio_sse_events_delivered_total"] == 1
    assert samples["trio_sse_connection_limit"] == 100
    assert "# TYPE trio_sse_active_connections gauge" in text
    for name in ("memory_rss_bytes", "uptime_seconds", "history_size", "latency_ms", "disconnects_total"):
        assert f"trio_sse_{name}" in text


# -- errors everywhere are JSON, never 5xx ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/sse", 404),
        ("POST", "/sse/unknown", 404),
        ("GET", "/sse/publish", 405),
        ("GET", "/sse/subscribe", 405),
        ("POST", "/sse/stats", 405),
        ("DELETE", "/sse/health", 405),
    ],
)
async def test_unknown_paths_and_methods_are_json_errors(
    client: SSETestClient, method: str, path: str, status: int
) -> None:
    assert_error(await client.request(method, path), status)


async def test_connections_without_a_token_is_401_when_auth_is_configured(client_factory) -> None:
    async with client_factory(jwt_secret="s3cret") as (_, client):
        reply = await client.get("/sse/connections")
        assert_error(reply, 401)
        assert reply.headers["www-authenticate"].startswith("Bearer")
