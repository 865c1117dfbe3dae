"""A real hypercorn (trio worker) on 127.0.0.1, driven by httpx and httpx-sse.

These run on the real clock: every wait is a short poll bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import ServerSentEvent, aconnect_sse

TIMEOUT = 10.0


async def next_sse(events: AsyncIterator[ServerSentEvent], timeout: float = TIMEOUT) -> ServerSentEvent:
    with trio.fail_after(timeout):
        return await anext(events)


def resume_args(last_id: str, via: str, **params: str) -> dict[str, Any]:
    """``aconnect_sse`` keyword arguments resuming after ``last_id`` by header or by query."""
    if via == "header":
        return {"params": params, "headers": {"Last-Event-ID": last_id}}
    return {"params": {**params, "last_event_id": last_id}}


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - the server's state is polled from outside, on the real clock
            await trio.sleep(0.01)


async def test_stream_headers_and_connected_event_over_the_network(live_server_factory) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        async with aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}) as source:
            response = source.response
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            connected = await next_sse(source.aiter_sse())
            assert connected.event == "connected" and connected.id in ("", None)
            assert connected.retry == 3000
            data = connected.json()
            assert data == {
                "connection_id": response.headers["x-sse-connection-id"],
                "event_types": ["commit"],
                "project_id": None,
            }


async def test_refused_stream_is_a_json_error_over_the_network(live_server_factory) -> None:
    async with (
        live_server_factory(connection_limit=1) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):
        bad = await http.get("/sse/events", params={"types": "nope"})
        assert bad.status_code == 422 and bad.json()["invalid_types"] == ["nope"]
        async with aconnect_sse(http, "GET", "/sse/events") as source:
            await next_sse(source.aiter_sse())
            full = await http.get("/sse/events")
            assert full.status_code == 503 and "retry-after" in full.headers
            assert full.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("via", ["header", "query"])
async def test_reconnect_with_last_id_receives_every_event_once_in_order(live_server_factory, via: str) -> None:
    total = 60
    published: list[str] = []
    received: list[tuple[str, int]] = []
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:

        async def publisher() -> None:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as pub:
                for n in range(total):
                    reply = await pub.post("/sse/publish", json={"event_type": "commit", "data": n})
                    assert reply.status_code == 202
                    published.append(reply.json()["id"])
                    await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            async with aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}) as source:
                events = source.aiter_sse()
                assert (await next_sse(events)).event == "connected"
                nursery.start_soon(publisher)
                while len(received) < 15:
                    event = await next_sse(events)
                    received.append((event.id, event.json()))
            # Away: events keep being published meanwhile.
            await wait_until(lambda: len(published) >= len(received) + 10)
            assert len(published) < total, "the publisher should still be running at reconnection"
            resume = resume_args(received[-1][0], via, types="commit")
            async with aconnect_sse(http, "GET", "/sse/events", **resume) as source:
                events = source.aiter_sse()
                assert (await next_sse(events)).event == "connected"
                while len(received) < total:
                    event = await next_sse(events)
                    assert event.event == "commit"
                    received.append((event.id, event.json()))
    assert [event_id for event_id, _ in received] == published
    assert [n for _, n in received] == list(range(total))


async def test_stream_reset_for_an_unknown_id(live_server_factory) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        await http.post("/sse/publish", json={"event_type": "commit", "data": 0})
        async with aconnect_sse(http, "GET", "/sse/events", headers={"Last-Event-ID": "42-nonsense"}) as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            reset = await next_sse(events)
            assert reset.event == "stream_reset" and reset.id in ("", None)
            assert reset.json() == {"reason": "unknown_id", "last_event_id": "42-nonsense"}
            live = (await http.post("/sse/publish", json={"event_type": "commit", "data": 1})).json()["id"]
            event = await next_sse(events)
            assert (event.id, event.json()) == (live, 1)


@pytest.mark.parametrize("via", ["header", "query"])
async def test_stream_reset_history_gap_for_an_evicted_id(live_server_factory, backend, via: str) -> None:
    # Redis trims with MAXLEN ~ (whole nodes of up to 100 entries), so it needs more events.
    published = 10 if backend["backend"] == "memory" else 250
    async with (
        live_server_factory(history_size=3) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):
        batch = [{"event_type": "commit", "data": n} for n in range(published)]
        ids = (await http.post("/sse/publish", json={"events": batch})).json()["ids"]
        async with aconnect_sse(http, "GET", "/sse/events", **resume_args(ids[0], via)) as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            reset = await next_sse(events)
            assert reset.event == "stream_reset"
            assert reset.json() == {"reason": "history_gap", "last_event_id": ids[0]}
            live = (await http.post("/sse/publish", json={"event_type": "commit", "data": "live"})).json()["id"]
            assert (await next_sse(events)).id == live
        # An id still in the history replays normally.
        async with aconnect_sse(http, "GET", "/sse/events", **resume_args(ids[-2], via)) as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            assert [(await next_sse(events)).id for _ in range(2)] == [ids[-1], live]


async def test_subscription_updated_precedes_new_events_over_the_network(live_server_factory) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        async with aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}) as source:
            events = source.aiter_sse()
            cid = (await next_sse(events)).json()["connection_id"]
            reply = await http.post("/sse/subscribe", json={"connection_id": cid, "event_types": ["risk_alert"]})
            assert reply.status_code == 200
            await http.post("/sse/publish", json={"event_type": "commit", "data": "old filter"})
            alert = (await http.post("/sse/publish", json={"event_type": "risk_alert", "data": "new"})).json()["id"]
            update = await next_sse(events)
            assert update.event == "subscription_updated"
            assert update.json() == {"connection_id": cid, "event_types": ["risk_alert"], "project_id": None}
            event = await next_sse(events)
            assert (event.event, event.id) == ("risk_alert", alert)


async def test_a_client_closing_its_connection_is_unregistered(live_server_factory) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        async with aconnect_sse(http, "GET", "/sse/events") as source:
            await next_sse(source.aiter_sse())
            assert server.hub.snapshot()["active_connections"] == 1
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 0)
        assert server.hub.snapshot()["disconnects"] == {"client_closed": 1}
        stats = (await http.get("/sse/stats")).json()
        assert stats["active_connections"] == 0 and stats["disconnects"]["client_closed"] == 1


async def test_stress_reconnecting_client_gets_2000_events_exactly_once_in_order(live_server_factory) -> None:
    total, batch_size, reconnects_wanted = 2000, 10, 20
    per_connection = total // (reconnects_wanted + 1)
    published: list[str] = []
    received: list[tuple[str, int]] = []
    reconnects = 0
    reconnects_while_publishing = 0
    publishing = False
    async with (
        live_server_factory(history_size=5000) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):

        async def publisher() -> None:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as pub:
                for start in range(0, total, batch_size):
                    batch = [{"event_type": "progress_update", "data": n} for n in range(start, start + batch_size)]
                    reply = await pub.post("/sse/publish", json={"events": batch})
                    assert reply.status_code == 202
                    published.extend(reply.json()["ids"])
                    await trio.sleep(0.004)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                kwargs: dict[str, Any] = {"params": {"types": "progress_update"}}
                while len(received) < total:
                    async with aconnect_sse(http, "GET", "/sse/events", **kwargs) as source:
                        events = source.aiter_sse()
                        assert (await next_sse(events)).event == "connected"
                        if not publishing:
                            publishing = True
                            nursery.start_soon(publisher)
                        goal = min(total, len(received) + per_connection)
                        async for event in events:
                            assert event.event == "progress_update", event
                            received.append((event.id, event.json()))
                            if len(received) >= goal:
                                break
                    if len(received) < total:
                        reconnects += 1
                        reconnects_while_publishing += len(published) < total
                        via = "header" if reconnects % 2 else "query"
                        kwargs = resume_args(received[-1][0], via, types="progress_update")
    assert reconnects >= reconnects_wanted
    assert reconnects_while_publishing >= 1
    assert len(received) == total
    assert [event_id for event_id, _ in received] == published
    assert [n for _, n in received] == list(range(total))
    assert server.hub.snapshot()["events_published"] == total


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sse/health", b""),
        ("GET", "/sse/stats", b""),
        ("GET", "/sse/no-such-route", b""),
        ("POST", "/sse/subscribe", b"{}"),
        ("POST", "/sse/publish", b'{"event_type": "commit", "data": 1}'),
    ],
)
@pytest.mark.parametrize("version", ["HTTP/1.1 + Connection: close", "HTTP/1.0"])
async def test_a_connection_that_must_close_is_closed_right_after_the_answer(
    live_server_factory, method: str, path: str, body: bytes, version: str
) -> None:
    # Load balancers' health probes (HTTP/1.0) and one-shot tools read until EOF: the
    # socket must close with the answer, not when hypercorn's 75 s keep-alive runs out.
    request_line, close = ("HTTP/1.1", b"Connection: close\r\n") if "1.1" in version else ("HTTP/1.0", b"")
    async with live_server_factory() as server:
        url = httpx.URL(server.base_url)
        stream = await trio.open_tcp_stream(url.host, url.port)
        async with stream:
            await stream.send_all(
                f"{method} {path} {request_line}\r\nHost: test\r\n".encode()
                + close
                + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            answer = b""
            with trio.fail_after(3):  # hypercorn's keep-alive timeout is 75 s
                while chunk := await stream.receive_some():
                    answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert 200 <= status < 500, answer  # a complete answer, then EOF
    assert answer.count(b"HTTP/1.1 ") == 1
