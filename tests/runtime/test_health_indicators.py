"""``/sse/health`` operating indicators (contract section 5) and the latency behind ``/sse/stats``.

Each indicator is ``{"value", "limit", "state"}`` and turns ``warn`` at its contract
threshold: connections at 80 % of the limit (tests/http/test_introspection.py), queue fill
at 80 %, 5 errors in a minute, memory at 70 % of the machine's, p95 latency at 200 ms. A
``warn`` alone keeps the answer 200. On the virtual clock, so every figure is exact.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

import trio_sse
from trio_sse.runtime import hub as hub_module
from trio_sse.runtime.stats import machine_memory_bytes
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient

from .support import DEADLINE

INDICATORS = ("connections", "queue_fill", "error_rate_per_minute", "memory_bytes", "latency_p95_ms")


async def health(client: SSETestClient) -> tuple[int, dict[str, Any]]:
    reply = await client.get("/sse/health")
    return reply.status, reply.json()


async def test_indicators_report_their_contract_limits_and_start_ok(autojump_clock, client_factory) -> None:
    async with client_factory(connection_limit=10, queue_size=50) as (_hub, client):
        status, body = await health(client)
        assert (status, body["status"]) == (200, "ok")
        checks = body["checks"]
        assert {name: checks[name]["limit"] for name in INDICATORS} == {
            "connections": 8,
            "queue_fill": 0.8,
            "error_rate_per_minute": 5,
            "memory_bytes": int(0.7 * machine_memory_bytes()),
            "latency_p95_ms": 200.0,
        }
        assert all(checks[name]["state"] == "ok" for name in INDICATORS), checks


async def test_latency_is_publish_to_write_and_a_slow_p95_only_warns(autojump_clock, client_factory) -> None:
    """A stream that stops reading holds its writes back: that wait is the latency."""
    async with (
        client_factory(queue_size=5, send_timeout=100, heartbeat_interval=1000) as (hub, client),
        client.stream() as stream,
    ):
        await stream.next_event()
        stream.pause()
        await hub.publish("commit", {"n": 0})
        await trio.sleep(1)  # the write of event 0 is blocked
        for n in range(1, 5):
            await hub.publish("commit", {"n": n})
        await trio.sleep(0.1)  # one round: events 1-4 queued behind the blocked write
        assert hub.snapshot()["queue"]["max_fill"] == 4

        # Queue fill 4/5 is at the 80 % threshold: a warning, not an outage.
        status, body = await health(client)
        assert (status, body["status"]) == (200, "ok")
        assert body["checks"]["queue_fill"] == {"value": 0.8, "limit": 0.8, "state": "warn"}
        assert body["checks"]["latency_p95_ms"]["state"] == "ok"  # nothing written yet

        stream.resume()
        assert [e.data for e in await stream.events(5)] == [f'{{"n":{n}}}' for n in range(5)]
        # Event 0 was written 1.1 s after it was published, events 1-4 (one write) 0.1 s after.
        latency = (await client.get("/sse/stats")).json()["latency_ms"]
        assert latency == pytest.approx({"p50": 100.0, "p95": 1100.0, "p99": 1100.0})
        status, body = await health(client)
        assert (status, body["status"]) == (200, "ok")
        assert body["checks"]["latency_p95_ms"] == {"value": pytest.approx(1100.0), "limit": 200.0, "state": "warn"}
        assert body["checks"]["queue_fill"]["state"] == "ok"  # drained


async def test_error_rate_warns_at_5_errors_in_a_minute_and_recovers_after_it(autojump_clock, client_factory) -> None:
    async with client_factory(send_timeout=2, heartbeat_interval=1000) as (hub, client):

        async def time_out_streams(count: int) -> None:
            async with AsyncExitStack() as stack:
                streams = [await stack.enter_async_context(client.stream()) for _ in range(count)]
                for stream in streams:
                    await stream.next_event()
                    stream.pause()
                await hub.publish("commit", {})
                for stream in streams:
                    await stream.wait_ended()

        await time_out_streams(4)
        status, body = await health(client)
        assert (status, body["checks"]["error_rate_per_minute"]) == (200, {"value": 4, "limit": 5, "state": "ok"})
        await time_out_streams(1)
        status, body = await health(client)
        assert (status, body["status"]) == (200, "ok")
        assert body["checks"]["error_rate_per_minute"] == {"value": 5, "limit": 5, "state": "warn"}
        assert hub.snapshot()["disconnects"] == {"send_timeout": 5}

        await trio.sleep(30)  # still within the minute
        assert (await health(client))[1]["checks"]["error_rate_per_minute"]["value"] == 5
        await trio.sleep(31)  # the window has moved past all five
        status, body = await health(client)
        assert body["checks"]["error_rate_per_minute"] == {"value": 0, "limit": 5, "state": "ok"}


async def test_memory_warns_at_70_percent_of_the_machine_and_only_warns(
    autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "machine_memory_bytes", lambda: 10_000)
    rss = [6_999]
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(Settings(), read_rss=lambda: rss[0]) as hub:
            async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
                status, body = await health(client)
                assert (status, body["checks"]["memory_bytes"]) == (
                    200,
                    {"value": 6_999, "limit": 7_000, "state": "ok"},
                )
                rss[0] = 7_000
                status, body = await health(client)
                assert (status, body["status"]) == (200, "ok")
                assert body["checks"]["memory_bytes"] == {"value": 7_000, "limit": 7_000, "state": "warn"}
