"""trio_sse.client: reconnection, resume, silence, errors and cleanup.

Most tests run the client against a scripted in-process ASGI app (``FakeSSE``) or the
real hub in-process, through :class:`trio_sse.testing.ASGIStreamTransport`, under
``autojump_clock``: every delay is checked in trio time, in milliseconds of real time.
The last ones use a real hypercorn on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import jwt
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_sse
from trio_sse.client import (
    Event,
    EventSource,
    SSEConnectionError,
    SSEHTTPError,
    SSEProtocolError,
    State,
    connect,
    endpoint_url,
    publish,
    reconnect_delay,
)
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings
from trio_sse.testing import ASGIStreamTransport

BASE = "http://testserver"
HANG = 3600  # trio seconds: a client that waits forever fails the test instead of hanging it
SSE_HEAD = [(b"content-type", b"text/event-stream; charset=utf-8")]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Script = Callable[[Send], Awaitable[None]]


class NoJitter(random.Random):
    """``random()`` is always 0: delays are exactly ``retry`` times the backoff."""

    def random(self) -> float:
        return 0.0


def block(event_id: str | None = None, event: str = "message", data: Any = None, retry: int | None = None) -> bytes:
    lines = [f"retry: {retry}"] if retry is not None else []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"event: {event}", f"data: {orjson.dumps(data).decode()}", "", ""]
    return "\n".join(lines).encode()


def sse(*chunks: bytes, then: str = "end") -> Script:
    """A 200 event stream writing ``chunks``, then ending (``end``), hanging (``stall``) or
    failing mid-response (``cut``, which the client sees as a lost connection)."""

    async def script(send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEAD})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if then == "stall":
            await trio.sleep_forever()
        if then == "cut":
            raise RuntimeError("connection cut")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return script


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Script:
    async def script(send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        content = orjson.dumps(body) if body is not None else b""
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    return script


@attrs.define
class Request:
    at: float
    path: str
    query: str
    headers: dict[str, str]


@attrs.define
class FakeSSE:
    """A scripted SSE server: request n runs ``scripts[n]``; every request is recorded."""

    scripts: list[Script]
    requests: list[Request] = attrs.Factory(list)
    disconnected: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Request(trio.current_time(), scope["path"], scope["query_string"].decode(), headers))
        assert self.scripts, "the client made more requests than the test scripted"
        try:
            await self.scripts.pop(0)(send)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(0):
                await receive()  # notes whether the client had already gone
            self.disconnected += 1

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [round(b.at - a.at, 6) for a, b in zip(self.requests, self.requests[1:], strict=False)]


@asynccontextmanager
async def fake_source(app: Any, **kwargs: Any) -> AsyncIterator[EventSource]:
    kwargs.setdefault("rng", NoJitter())
    with trio.fail_after(HANG):
        async with httpx.AsyncClient(transport=ASGIStreamTransport(app)) as http:
            async with connect(BASE, http=http, **kwargs) as source:
                yield source


async def take(source: EventSource, count: int) -> list[Event]:
    return [await anext(source) for _ in range(count)]


# -- pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8000", "http://h:8000/sse/events"),
        ("http://h:8000/", "http://h:8000/sse/events"),
        ("http://h:8000/sse/events", "http://h:8000/sse/events"),
        ("http://h:8000/sse/publish", "http://h:8000/sse/events"),
        ("http://h/api/sse/events?types=commit", "http://h/api/sse/events?types=commit"),
        ("http://h/api", "http://h/api/sse/events"),
    ],
)
def test_endpoint_url_accepts_a_base_or_any_sse_url(given: str, expected: str) -> None:
    assert str(endpoint_url(given)) == expected


def test_reconnect_delay_doubles_per_failure_up_to_the_cap_and_never_undercuts_retry() -> None:
    assert [reconnect_delay(n, 1.0, 10.0, 0.0) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert reconnect_delay(0, 1.0, 10.0, 0.999) == pytest.approx(1.25, abs=0.001)
    # Until issue 11 (item 7) a retry: above the cap was waited in full; now the cap wins:
    # see test_a_retry_above_max_backoff_is_capped_at_max_backoff in tests/core/test_backoff.py.
    assert reconnect_delay(3, 60.0, 10.0, 0.0) == 10.0


# -- reconnection and resume -----------------------------------------------------------


async def test_reconnects_after_the_server_ends_the_stream_and_resumes_with_the_last_id(autojump_clock) -> None:
    app = FakeSSE(
        [
            sse(block(None, "connected", {"connection_id": "c1"}, retry=1000), block("1", data=1), block("2", data=2)),
            sse(block(None, "connected", {"connection_id": "c2"}), block("3", data=3), then="stall"),
        ]
    )
    async with fake_source(app) as source:
        events = await take(source, 5)
        assert source.last_event_id == "3" and source.connection_id == "c2"
    assert [(e.type, e.id) for e in events] == [
        ("connected", None),
        ("message", "1"),
        ("message", "2"),
        ("connected", None),
        ("message", "3"),
    ]
    assert "last-event-id" not in app.requests[0].headers
    assert app.requests[1].headers["last-event-id"] == "2"
    assert app.gaps() == [1.0]  # the server's retry: 1000 ms


async def test_lost_connection_is_resumed_without_duplicates(autojump_clock) -> None:
    app = FakeSSE(
        [
            sse(block("1", data=1, retry=500), block("2", data=2), then="cut"),
            sse(block("3", data=3), then="stall"),
        ]
    )
    async with fake_source(app) as source:
        events = await take(source, 3)
        assert source.last_event_id == "3" and source.connections == 2
    assert [e.json() for e in events] == [1, 2, 3]
    assert app.requests[1].headers["last-event-id"] == "2"


async def test_a_stream_lost_before_its_first_event_resumes_from_the_last_event_id_header(autojump_clock) -> None:
    head = [*SSE_HEAD, (b"last-event-id", b"7")]

    async def opens_then_cut(send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": block(None, "connected", {}, retry=500), "more_body": True})
        raise RuntimeError("connection cut")

    app = FakeSSE([opens_then_cut, sse(block("8", data=8), then="stall")])
    async with fake_source(app) as source:
        assert (await anext(source)).type == "connected"
        assert source.last_event_id == "7"  # before any event: where the stream started
        assert (await anext(source)).id == "8"
    assert "last-event-id" not in app.requests[0].headers
    assert app.requests[1].headers["last-event-id"] == "7"


async def test_the_header_never_replaces_an_id_the_client_already_has(autojump_clock) -> None:
    # With an id of its own the server is replaying up to the header's id: a drop during
    # that replay must resume from the last event received, not skip the rest of it.
    head = [*SSE_HEAD, (b"last-event-id", b"9")]

    async def replay_cut(send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": block("4", data=4, retry=500), "more_body": True})
        raise RuntimeError("connection cut")

    app = FakeSSE([replay_cut, sse(block("5", data=5), then="stall")])
    async with fake_source(app, last_event_id="3") as source:
        assert [e.id for e in await take(source, 2)] == ["4", "5"]
    assert app.requests[0].headers["last-event-id"] == "3"
    assert app.requests[1].headers["last-event-id"] == "4"


async def test_log_lines_and_errors_never_show_a_token_from_the_url(autojump_clock, caplog) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=500), then="cut"), answer(200, {"not": "a stream"})])
    url = "http://user:pa55word@testserver/sse/events?types=commit&access_token=s3cret-token"
    with caplog.at_level(logging.INFO, logger="trio_sse.client"), trio.fail_after(HANG):
        async with httpx.AsyncClient(transport=ASGIStreamTransport(app)) as http:
            async with connect(url, http=http, rng=NoJitter()) as source:
                assert (await anext(source)).id == "1"
                with pytest.raises(SSEProtocolError) as refused:
                    await anext(source)
    assert app.requests[0].query == "types=commit&access_token=s3cret-token"  # still sent, of course
    shown = caplog.text + str(refused.value)
    assert "reconnecting" in caplog.text and "access_token=REDACTED" in shown
    assert "s3cret" not in shown and "pa55word" not in shown


async def test_silent_stream_is_reconnected_after_the_silence_window(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=1000), then="stall"), sse(block("2", data=2), then="stall")])
    async with fake_source(app, silence_timeout=20) as source:
        assert (await anext(source)).id == "1"
        start = trio.current_time()
        assert (await anext(source)).id == "2"
    assert trio.current_time() - start == pytest.approx(21.0)  # 20 s of silence + retry
    assert app.requests[1].headers["last-event-id"] == "1"
    assert app.disconnected >= 1  # the stalled response was closed, not leaked


async def test_heartbeat_comments_keep_a_quiet_stream_open(autojump_clock) -> None:
    async def heartbeats(send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEAD})
        await send({"type": "http.response.body", "body": block("1", data=1), "more_body": True})
        for _ in range(10):
            await trio.sleep(15)
            await send({"type": "http.response.body", "body": b": heartbeat\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": block("2", data=2), "more_body": True})
        await trio.sleep_forever()

    app = FakeSSE([heartbeats])
    async with fake_source(app, silence_timeout=20) as source:
        assert [e.id for e in await take(source, 2)] == ["1", "2"]
    assert len(app.requests) == 1  # 150 s with no event, but never 20 s without a byte


async def test_failed_attempts_back_off_exponentially_up_to_the_cap(autojump_clock) -> None:
    app = FakeSSE(
        [
            sse(block("1", data=1, retry=1000)),
            *[answer(500, {"error": "boom"})] * 5,
            sse(block("2", data=2)),
            sse(block("3", data=3), then="stall"),
        ]
    )
    async with fake_source(app, max_backoff=10) as source:
        assert [e.id for e in await take(source, 3)] == ["1", "2", "3"]
    assert app.gaps() == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 1.0]  # a stream that worked resets the backoff
    assert app.requests[-2].headers["last-event-id"] == "1"


async def test_jitter_only_lengthens_the_delay(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=1000))] * 20 + [sse(then="stall")])
    async with fake_source(app, rng=random.Random(7)) as source:
        await take(source, 20)
    gaps = app.gaps()
    assert all(1.0 <= gap < 1.25 for gap in gaps), gaps
    assert len(set(gaps)) > 10  # really random: clients dropped together spread out


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_for_429_and_503(autojump_clock, status: int) -> None:
    app = FakeSSE(
        [
            answer(status, {"error": "connection_limit"}, {"retry-after": "7"}),
            sse(block("1", data=1), then="stall"),
        ]
    )
    async with fake_source(app) as source:
        assert (await anext(source)).id == "1"
    assert app.gaps() == [7.0]


async def test_gives_up_after_max_attempts_failures_in_a_row(autojump_clock) -> None:
    app = FakeSSE([answer(502)] * 3)
    with pytest.raises(SSEConnectionError) as raised:
        async with fake_source(app, max_attempts=3):
            pass  # pragma: no cover
    assert len(app.requests) == 3
    assert "HTTP 502" in str(raised.value.__cause__)


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": "invalid_token", "message": "missing token"}),
        (403, {"error": "forbidden", "message": "project p2 is not allowed"}),
        (404, {"error": "not_found", "message": "no such path"}),
        (422, {"error": "unknown_event_types", "message": "unknown event types: x", "invalid_types": ["x"]}),
    ],
)
async def test_refusal_raises_http_error_with_status_and_json_body(autojump_clock, status: int, body: Any) -> None:
    app = FakeSSE([answer(status, body)])
    with pytest.raises(SSEHTTPError) as raised:
        async with fake_source(app):
            pass  # pragma: no cover
    error = raised.value
    assert (error.status, error.body, error.error, error.message) == (status, body, body["error"], body["message"])
    assert str(status) in str(error) and body["message"] in str(error)
    assert len(app.requests) == 1  # not retried


async def test_refusal_on_reconnection_is_raised_from_iteration(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1)), answer(401, {"error": "invalid_token", "message": "token expired"})])
    async with fake_source(app) as source:
        assert (await anext(source)).id == "1"
        with pytest.raises(SSEHTTPError) as raised:
            await anext(source)
    assert raised.value.status == 401 and raised.value.error == "invalid_token"


async def test_a_200_that_is_not_an_event_stream_is_a_protocol_error(autojump_clock) -> None:
    app = FakeSSE([answer(200, {"status": "ok"}, {"content-type": "application/json"})])
    with pytest.raises(SSEProtocolError, match="application/json"):
        async with fake_source(app):
            pass  # pragma: no cover


async def test_request_carries_filters_token_and_initial_last_event_id(autojump_clock) -> None:
    app = FakeSSE([sse(block("9", data=9), then="stall")])
    async with fake_source(app, types=["commit", "task_update"], project="p1", token="t0k", last_event_id="8") as src:
        await anext(src)
    request = app.requests[0]
    assert request.path == "/sse/events"
    assert httpx.QueryParams(request.query) == httpx.QueryParams({"types": "commit,task_update", "project": "p1"})
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["last-event-id"] == "8"
    assert request.headers["accept"] == "text/event-stream"


# -- against the real hub, in-process --------------------------------------------------


@asynccontextmanager
async def hub_source(hub: Hub, **kwargs: Any) -> AsyncIterator[tuple[EventSource, ASGIStreamTransport]]:
    transport = ASGIStreamTransport(trio_sse.create_app(hub=hub))
    with trio.fail_after(HANG):
        async with httpx.AsyncClient(transport=transport) as http:
            async with connect(BASE, http=http, **kwargs) as source:
                yield source, transport


async def test_stream_reset_is_surfaced_and_the_stream_continues_live(autojump_clock) -> None:
    async with trio_sse.open_hub(Settings()) as hub, hub_source(hub, last_event_id="42-nonsense") as (source, _):
        connected, reset = await take(source, 2)
        assert connected.type == "connected" and connected.is_system
        assert reset.is_reset and reset.is_system and reset.id is None
        assert reset.json() == {"reason": "unknown_id", "last_event_id": "42-nonsense"}
        assert source.last_event_id == "42-nonsense"  # kept: a later reconnection reports the gap again
        live = await hub.publish("commit", {"n": 1})
        event = await anext(source)
        assert (event.type, event.id, event.json(), event.is_system) == ("commit", live, {"n": 1}, False)
        assert source.last_event_id == live


async def test_dropped_connection_resumes_from_history_with_every_event_once(autojump_clock) -> None:
    async with trio_sse.open_hub(Settings(retry=500)) as hub, hub_source(hub, types="commit") as (source, _):
        assert (await anext(source)).type == "connected"
        first_id = source.connection_id
        published = [await hub.publish("commit", n) for n in range(3)]
        received = [e.id for e in await take(source, 3)]
        hub.get_connection(first_id).close("slow_consumer")  # type: ignore[arg-type]
        published += [await hub.publish("commit", n) for n in range(3, 6)]  # while away
        connected = await anext(source)
        assert connected.type == "connected" and source.connection_id not in (None, first_id)
        assert connected.json()["connection_id"] == source.connection_id
        published += [await hub.publish("commit", 6)]
        received += [e.id for e in await take(source, 4)]
        assert received == published
        assert source.connections == 2


async def test_a_real_stream_dropped_before_its_first_event_misses_nothing(autojump_clock) -> None:
    async with trio_sse.open_hub(Settings(retry=500)) as hub:
        before = await hub.publish("commit", 0)  # not for this stream: it was there before it
        async with hub_source(hub, types="commit") as (source, _):
            assert (await anext(source)).type == "connected"
            assert source.last_event_id == before
            hub.get_connection(source.connection_id).close("slow_consumer")  # type: ignore[arg-type]
            away = [await hub.publish("commit", n) for n in range(1, 4)]
            assert (await anext(source)).type == "connected"
            assert [e.id for e in await take(source, 3)] == away
            assert source.connections == 2


async def test_leaving_the_block_closes_the_response_and_leaves_no_task(autojump_clock) -> None:
    async with trio_sse.open_hub(Settings()) as hub:
        transport = ASGIStreamTransport(trio_sse.create_app(hub=hub))
        async with httpx.AsyncClient(transport=transport) as http:
            app_nursery = transport._runner._nursery
            assert app_nursery is not None
            before = set(app_nursery.child_tasks)  # the app's lifespan
            with trio.move_on_after(5) as scope:
                async with connect(BASE, http=http) as source:
                    response = source.response
                    await anext(source)
                    assert hub.snapshot()["active_connections"] == 1
                    await anext(source)  # nothing comes: cancelled while waiting
            assert scope.cancelled_caught
            assert response is not None and response.is_closed
            assert source.response is None
            await trio.testing.wait_all_tasks_blocked()
            assert set(app_nursery.child_tasks) == before  # the stream's task has ended
            assert hub.snapshot()["active_connections"] == 0
            assert hub.snapshot()["disconnects"] == {"client_closed": 1}
            with pytest.raises(StopAsyncIteration):
                await anext(source)  # closed for good


async def test_aclose_from_another_task_ends_iteration(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1), then="stall")])
    seen: list[str | None] = []
    async with fake_source(app, silence_timeout=None) as source:

        async def consume() -> None:
            async for event in source:
                seen.append(event.id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.sleep(100)
            response = source.response
            await source.aclose()
            assert response is not None and response.is_closed and source.response is None
    assert seen == ["1"]
    assert app.disconnected == 1


# -- against a real hypercorn ----------------------------------------------------------


async def test_real_server_publish_receive_drop_and_resume(live_server_factory) -> None:
    async with live_server_factory(retry=50) as server:
        with trio.fail_after(10):
            async with connect(server.base_url, types=["commit"]) as source:
                assert (await anext(source)).type == "connected"
                assert source.connection_id is not None and source.retry == 0.05
                first = await publish(server.base_url, "commit", {"n": 1})
                assert (await anext(source)).id == first
                server.hub.get_connection(source.connection_id).close("slow_consumer")
                second = await publish(server.base_url + "/sse/publish", "commit", {"n": 2})
                assert (await anext(source)).type == "connected"
                event = await anext(source)
                assert (event.id, event.json()) == (second, {"n": 2})
                assert source.connections == 2


async def test_real_server_errors_carry_the_json_body(live_server_factory) -> None:
    async with live_server_factory() as server:
        with trio.fail_after(10):
            with pytest.raises(SSEHTTPError) as raised:
                async with connect(server.base_url, types="commit,nope"):
                    pass  # pragma: no cover
            assert raised.value.status == 422 and raised.value.body["invalid_types"] == ["nope"]
            with pytest.raises(SSEHTTPError) as raised:
                await publish(server.base_url, "nope", 1)
            assert raised.value.status == 422 and raised.value.error == "unknown_event_types"


async def test_real_server_with_auth_needs_the_bearer_token(live_server_factory) -> None:
    secret = "s" * 32
    claims = {"sub": "alice", "exp": int(time.time()) + 600, "sse": {"projects": ["*"], "publish": True}}
    good = jwt.encode(claims, secret, algorithm="HS256")
    async with live_server_factory(jwt_secret=secret) as server:
        with trio.fail_after(10):
            with pytest.raises(SSEHTTPError) as raised:
                async with connect(server.base_url):
                    pass  # pragma: no cover
            assert raised.value.status == 401 and raised.value.error == "invalid_token"
            async with connect(server.base_url, token=good, types="commit") as source:
                assert (await anext(source)).type == "connected"
                event_id = await publish(server.base_url, "commit", 1, token=good)
                assert (await anext(source)).id == event_id


async def test_a_cancelled_wait_loses_nothing_and_reconnects_at_once(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=5000), then="stall"), sse(block("2", data=2), then="stall")])
    async with fake_source(app) as source:
        assert (await anext(source)).id == "1"
        with trio.move_on_after(2):
            await anext(source)
        assert (await anext(source)).id == "2"
    assert app.gaps() == [2.0]  # not the 5 s retry: nothing failed
    assert app.requests[1].headers["last-event-id"] == "1"


async def test_204_means_stop_reconnecting(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1)), answer(204)])
    async with fake_source(app) as source:
        assert [event.id async for event in source] == ["1"]
        assert source.response is None
    assert len(app.requests) == 2


# -- initial delay and restart() (issue 11, item 8) ------------------------------------------


async def test_initial_delay_is_the_reconnection_delay_until_the_server_sends_retry(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1)), sse(block("2", data=2, retry=1000)), sse(block("3", data=3), then="stall")])
    async with fake_source(app, initial_delay=0.25) as source:
        assert source.retry == 0.25
        assert [e.id for e in await take(source, 3)] == ["1", "2", "3"]
    assert app.gaps() == [0.25, 1.0]


async def test_restart_from_another_task_reconnects_at_once_with_the_last_id(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=5000), then="stall"), sse(block("2", data=2), then="stall")])
    seen: list[str | None] = []
    async with fake_source(app, silence_timeout=None) as source, trio.open_nursery() as nursery:

        async def consume() -> None:
            async for event in source:
                seen.append(event.id)

        nursery.start_soon(consume)
        await trio.sleep(10)
        assert seen == ["1"] and source.connections == 1
        source.restart()
        await trio.sleep(1)
        assert seen == ["1", "2"] and source.connections == 2
        nursery.cancel_scope.cancel()
    assert app.gaps() == [10.0]  # at once: not after the 5 s retry
    assert app.requests[1].headers["last-event-id"] == "1"
    assert app.disconnected >= 1  # the first response was closed


async def test_restart_cuts_a_wait_for_the_next_attempt_short(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=60_000)), sse(block("2", data=2), then="stall")])
    async with fake_source(app) as source, trio.open_nursery() as nursery:
        assert (await anext(source)).id == "1"
        nursery.start_soon(anext, source)  # reads the end of the stream, then waits 60 s
        await trio.sleep(5)
        source.restart()
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert app.gaps() == [5.0]


async def test_restart_hands_over_the_events_already_received_first(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1) + block("2", data=2) + block("3", data=3), then="stall"), sse(then="stall")])
    async with fake_source(app) as source:
        assert (await anext(source)).id == "1"
        source.restart()
        assert [e.id for e in await take(source, 2)] == ["2", "3"]  # received before the restart
        assert source.connections == 1
        with trio.move_on_after(1):
            await anext(source)
        assert source.connections == 2
    assert app.requests[1].headers["last-event-id"] == "3"  # nothing replayed twice, nothing skipped


async def test_a_final_refusal_closes_the_source(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1)), answer(403, {"error": "forbidden", "message": "no"})])
    async with fake_source(app) as source:
        assert (await anext(source)).id == "1"
        with pytest.raises(SSEHTTPError):
            await anext(source)
        assert source.state is State.CLOSED
        with pytest.raises(StopAsyncIteration):
            await anext(source)  # as EventSource: a failed connection is not retried
        source.restart()  # does nothing once closed
    assert len(app.requests) == 2


# -- the resume point, whatever the chunking (WHATWG "last event ID") ---------------------

_ids = st.sampled_from(["", "a", "b", "7"])
_blocks = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.none() | _ids),
        st.tuples(st.just("id_only"), _ids),
        st.tuples(st.just("comment"), st.none()),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(blocks=_blocks, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
async def test_every_event_and_the_reconnection_carry_the_whatwg_last_event_id_however_the_stream_is_cut(
    blocks: list[tuple[str, str | None]], cuts: list[int]
) -> None:
    text, expected, last = "", [], ""
    for n, (kind, value) in enumerate(blocks):
        if kind == "event":
            text += (f"id: {value}\n" if value is not None else "") + f"data: {n}\n\n"
            last = value if value is not None else last
            expected.append((str(n), last or None))
        elif kind == "id_only":
            text += f"id: {value}\n\n"
            last = value
        else:
            text += ": note\n"
    text += "id: cut\ndata: never dispatched"  # the connection is lost in the middle of a block
    raw = text.encode()
    points = sorted({0, len(raw), *(cut for cut in cuts if cut < len(raw))})
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    app = FakeSSE([sse(*chunks, then="cut"), sse(block(None, data="after"), then="stall")])
    async with fake_source(app, silence_timeout=None, initial_delay=0) as source:
        events = await take(source, len(expected) + 1)
    assert [(e.data, e.last_event_id) for e in events] == [*expected, ('"after"', last or None)]
    assert app.requests[1].headers.get("last-event-id") == (last or None)
