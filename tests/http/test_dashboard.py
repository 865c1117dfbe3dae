"""``/sse/dashboard``, ``/sse/client.js`` and the stats stream, in-process (autojump_clock)."""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
import orjson
import pytest
import trio

import trio_sse
from trio_sse.http.stats_stream import STATS_INTERVAL, rates
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient, TestStream

SECRET = "dashboard-test-secret-0123456789abcdef"
STATS_PATH = "/sse/stats/stream"
STATS_KEYS = {"active_connections", "events_published", "events_delivered", "events_dropped", "queue", "latency_ms"}
EXTERNAL = re.compile(rb"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def token(*, admin: bool, expires_in: float = 3600) -> str:
    claims = {"sub": "ops", "exp": int(time.time() + expires_in), "sse": {"projects": ["*"], "admin": admin}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def next_status(stream: TestStream) -> tuple[float, Any]:
    event = await stream.next_event(timeout=5)
    assert event.type == "system_status" and event.id in (None, "")
    return trio.current_time(), orjson.loads(event.data)


# -- the page and the script ----------------------------------------------------------


async def test_dashboard_is_one_self_contained_html_page(client: SSETestClient) -> None:
    reply = await client.get("/sse/dashboard")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    # Nothing outside the machine: no absolute URL, no external script/style/font,
    # and a CSP that lets the browser enforce it.
    assert not re.search(rb"https?://", reply.body), EXTERNAL.findall(reply.body)
    assert not re.search(rb"<(script|link|img|iframe)[^>]+(src|href)=", reply.body)
    assert b'new EventSource(streamUrl("stats/stream"))' in reply.body
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp


async def test_client_js_is_served_as_javascript_without_external_references(client: SSETestClient) -> None:
    reply = await client.get("/sse/client.js")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"root.TrioSSE" in reply.body and b"navigator.locks" in reply.body
    assert not re.search(rb"https?://", reply.body)


async def test_browser_assets_are_listed_as_package_data() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["trio_sse.http"]
    static = Path(trio_sse.__file__).parent / "http" / "static"
    shipped = {path.name for pattern in patterns for path in static.parent.glob(pattern)}
    assert {"dashboard.html", "client.js"} <= shipped


# -- the stats stream -----------------------------------------------------------------


async def test_stats_stream_sends_one_snapshot_per_second(autojump_clock, client: SSETestClient) -> None:
    async with client.stream(STATS_PATH) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        opened = trio.current_time()
        ticks = [await next_status(stream) for _ in range(4)]
        assert stream.parser.retry == 3000
    assert [round(at - opened, 6) for at, _ in ticks] == [0.0, 1.0, 2.0, 3.0]
    for _, data in ticks:
        assert STATS_KEYS <= set(data)
        assert set(data["rates"]) == {"events_per_second", "deliveries_per_second", "drops_per_second"}


async def test_stats_stream_rates_come_from_successive_snapshots(autojump_clock, hub, client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as subscriber, client.stream(STATS_PATH) as stats:
        await subscriber.next_event(timeout=5)  # connected
        _, first = await next_status(stats)
        assert first["rates"] == {"events_per_second": 0.0, "deliveries_per_second": 0.0, "drops_per_second": 0.0}
        for n in range(6):
            await hub.publish("commit", n)
        await hub.publish("risk_alert", "nobody listens")
        await subscriber.events(6, timeout=5)
        _, second = await next_status(stats)
        assert second["events_published"] - first["events_published"] == 7
        assert second["rates"]["events_per_second"] == 7.0
        assert second["rates"]["deliveries_per_second"] == 6.0
        _, third = await next_status(stats)
        assert third["rates"]["events_per_second"] == 0.0


async def test_viewers_ticking_close_together_share_one_snapshot(autojump_clock, hub, client: SSETestClient) -> None:
    # A snapshot costs ~8 ms of the loop at 10,000 streams: a second viewer must not double it.
    taken: list[float] = []
    snapshot = hub.snapshot

    def counted() -> dict[str, Any]:
        taken.append(trio.current_time())
        return snapshot()

    def figures(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in ("sampled_at", "rates")}

    hub.snapshot = counted
    async with client.stream(STATS_PATH) as first:
        start = trio.current_time()
        firsts = [(await next_status(first))[1]]  # t = 0
        await trio.sleep(0.3)
        async with client.stream(STATS_PATH) as second:
            seconds = []
            for _ in range(3):  # second at 0.3, 1.3, 2.3; first at 1, 2, 3
                seconds.append((await next_status(second))[1])
                firsts.append((await next_status(first))[1])
            assert [figures(d) for d in seconds] == [figures(d) for d in firsts[:3]]  # the same snapshots
            await hub.publish("commit", 1)  # at t = 3, after that tick's snapshot
            stale = (await next_status(second))[1]  # 3.3: the 3.0 snapshot, at most half a tick old
            fresh_first, fresh_second = (await next_status(first))[1], (await next_status(second))[1]
    assert stale["events_published"] == 0
    for fresh in (fresh_first, fresh_second):  # 4.0 and 4.3
        assert fresh["events_published"] == 1 and fresh["rates"]["events_per_second"] == 1.0
    assert [round(at - start, 6) for at in taken] == [0.0, 1.0, 2.0, 3.0, 4.0]  # one per second, not two


def test_rates_are_per_second_and_never_negative() -> None:
    before = {"events_published": 10, "events_delivered": 40, "events_dropped": 5}
    after = {"events_published": 30, "events_delivered": 100, "events_dropped": 0}
    assert rates(before, after, 2.0) == {
        "events_per_second": 10.0,
        "deliveries_per_second": 30.0,
        "drops_per_second": 0.0,
    }
    assert rates(None, after, 1.0)["events_per_second"] == 0.0
    assert rates(before, after, 0.0)["events_per_second"] == 0.0


async def test_stats_stream_never_publishes_into_the_history(autojump_clock, hub, client: SSETestClient) -> None:
    async with client.stream() as subscriber, client.stream(STATS_PATH) as stats:
        await subscriber.next_event(timeout=5)
        for _ in range(3):
            await next_status(stats)
        await trio.sleep(1)
        assert subscriber.pending() == []  # not a single system_status reached /sse/events
    snapshot = hub.snapshot()
    assert snapshot["events_published"] == 0 and snapshot["history"]["size"] == 0
    assert snapshot["total_connections"] == 1  # the stats stream is not a hub connection


async def test_stats_stream_ends_cleanly_when_the_hub_shuts_down(autojump_clock, hub, client: SSETestClient) -> None:
    async with client.stream(STATS_PATH) as stream:
        await next_status(stream)
        hub.begin_shutdown()
        await stream.wait_ended(timeout=1)
        assert stream.raw.endswith(b"\n\n")  # complete events, then the final (empty) body
    refused = await client.get(STATS_PATH)
    assert refused.status == 503 and refused.json()["error"] == "server_shutdown"


async def test_stats_stream_ends_with_the_hub_block_leaving_no_task(autojump_clock) -> None:
    async with trio_sse.open_hub(Settings(shutdown_grace=5)) as hub:
        app = trio_sse.create_app(hub=hub)
        async with SSETestClient(app) as client, client.stream(STATS_PATH) as stream:
            await next_status(stream)
            started = trio.current_time()
            with trio.CancelScope(shield=True):
                await hub.aclose()
            await stream.wait_ended(timeout=1)
            # Nothing was left for the grace period to wait for.
            assert trio.current_time() - started < STATS_INTERVAL


async def test_stats_stream_task_ends_when_the_client_disconnects(autojump_clock, client: SSETestClient) -> None:
    async with client.stream(STATS_PATH) as stream:
        await next_status(stream)
        left = trio.current_time()
        stream.disconnect()
        await stream.wait_ended(timeout=STATS_INTERVAL / 2)
    assert trio.current_time() - left < STATS_INTERVAL


async def test_stats_stream_stuck_write_ends_at_send_timeout(autojump_clock, client_factory) -> None:
    async with client_factory(send_timeout=7) as (_hub, client), client.stream(STATS_PATH) as stream:
        await next_status(stream)
        stream.pause()  # the next tick's write blocks, like a full TCP window
        paused = trio.current_time()
        await stream.wait_ended(timeout=20)
        assert 7 <= trio.current_time() - paused <= 7 + STATS_INTERVAL


async def test_stats_stream_ends_when_the_token_expires(autojump_clock, client_factory) -> None:
    async with client_factory(jwt_secret=SECRET) as (_hub, client):
        async with client.stream(STATS_PATH, query={"access_token": token(admin=True, expires_in=4)}) as stream:
            assert stream.status == 200
            opened = trio.current_time()
            await stream.wait_ended(timeout=10)
            assert 2 <= trio.current_time() - opened <= 4.5


async def test_stats_stream_carries_cors_headers_for_another_origin(client: SSETestClient) -> None:
    async with client.stream(STATS_PATH, headers={"origin": "http://elsewhere.test"}) as stream:
        assert stream.status == 200
        assert stream.headers["access-control-allow-origin"] == "*"


# -- admin-only with auth on ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/sse/dashboard", STATS_PATH])
async def test_dashboard_and_stats_stream_are_admin_only_with_auth(client_factory, path: str) -> None:
    async with client_factory(jwt_secret=SECRET) as (_hub, client):
        anonymous = await client.get(path)
        assert anonymous.status == 401 and anonymous.json()["error"] == "invalid_token"
        assert anonymous.headers["content-type"].startswith("application/json")
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        not_admin = await client.get(path, query={"access_token": token(admin=False)})
        assert not_admin.status == 403 and not_admin.json()["error"] == "forbidden"
        admin = token(admin=True)
        if path == STATS_PATH:
            for way in ({"query": {"access_token": admin}}, {"headers": {"cookie": f"sse_token={admin}"}}):
                async with client.stream(path, **way) as stream:
                    assert stream.status == 200
                    assert (await stream.next_event(timeout=5)).type == "system_status"
        else:
            for way in ({"query": {"access_token": admin}}, {"headers": {"cookie": f"sse_token={admin}"}}):
                page = await client.get(path, **way)
                assert page.status == 200 and page.body.startswith(b"<!doctype html>")


async def test_client_js_needs_no_token(client_factory) -> None:
    async with client_factory(jwt_secret=SECRET) as (_hub, client):
        assert (await client.get("/sse/client.js")).status == 200
