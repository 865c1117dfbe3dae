"""Hostile request heads through a real hypercorn on 127.0.0.1 (issue 11, item 2).

* A 60 KB ``sse_token`` cookie of backslashes stalled every stream for seconds before its
  401 (``SimpleCookie`` is quadratic in them on CPython 3.11.7, CVE-2024-7592): it must be
  a quick 401 that another stream does not notice.
* The 16 KiB head limit (``max_head_bytes``) holds however the head arrives: h11 bounds
  only a head still arriving, so a bigger one sent in one piece reached the app and was
  served. Now it is a JSON 431 from every route, and nothing happens.

Raw sockets, so nothing is cleaned up by a client library on the way. Real clock: each
wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import h11
import httpx
import jwt
import orjson
import pytest
import trio
from httpx_sse import aconnect_sse

pytestmark = pytest.mark.one_backend

SECRET = "heads-secret-of-reasonable-length-0123456789"
TIMEOUT = 10.0
STALL_TIMEOUT = 120.0
LIMIT = 16 * 1024


def token() -> str:
    claims = {"sub": "reader", "exp": int(time.time()) + 600, "sse": {"projects": ["*"], "publish": True}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def build(method: str, target: str, *headers: tuple[str, str], body: bytes = b"", size: int | None = None) -> bytes:
    """A request (``Connection: close``) whose head is padded with an ``x-pad`` header to
    exactly ``size`` bytes when given (the body not counted)."""
    fields = [("host", "127.0.0.1"), ("connection", "close"), *headers]
    if body:
        fields.append(("content-length", str(len(body))))
    lines = [f"{method} {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in fields]
    raw = "\r\n".join(lines).encode("latin-1") + b"\r\n"
    if size is not None:
        padding = size - len(raw) - len("x-pad: \r\n\r\n")
        assert padding >= 0
        raw += b"x-pad: " + b"a" * padding + b"\r\n"
    return raw + b"\r\n" + body


async def exchange(
    port: int, *pieces: bytes, pause: float = 0.0, timeout: float = TIMEOUT
) -> tuple[int, dict[str, str], bytes]:
    """Send ``pieces`` (``pause`` seconds apart) and read the answer until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        for index, piece in enumerate(pieces):
            if index and pause:
                await trio.sleep(pause)  # so the server reads the pieces apart
            await stream.send_all(piece)
        answer = b""
        with trio.fail_after(timeout):
            while chunk := await stream.receive_some():
                answer += chunk
                if b"event: connected" in answer:  # a stream: its first event is enough
                    break
    return read_answer(pieces[0].split(b" ", 1)[0], answer)


def read_answer(method: bytes, answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the bytes the server sent, framed by h11 (de-chunked;
    of a stream, as much as came). h11 is told of the request only so that it expects
    an answer: the request itself went out raw."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "127.0.0.1")]))
    conn.receive_data(answer)
    response: h11.Response | None = None
    body = b""
    while (event := conn.next_event()) is not h11.NEED_DATA and not isinstance(event, h11.EndOfMessage):
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
    assert response is not None, answer
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}
    return response.status_code, headers, body


def port_of(server: Any) -> int:
    return int(httpx.URL(server.base_url).port or 0)


def json_error(status: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    assert headers["content-type"].startswith("application/json"), (status, headers, body)
    return status, orjson.loads(body)["error"]


# -- the cookie --------------------------------------------------------------------------

BACKSLASH_COOKIE = 'sse_token="' + "\\" * 60_000 + '"'  # an even run: each backslash escapes the next


ATTEMPTS = 3


@pytest.mark.parametrize("target", ["/sse/events", "/sse/connections"], ids=["lean stream", "quart route"])
async def test_a_60_kb_backslash_cookie_is_a_quick_401_that_another_stream_does_not_notice(
    live_server_factory, target: str
) -> None:
    # A stream gets an event every ~5 ms here: the refusal must not hold the loop for more
    # than ~50 ms (it held it 4.4 s before, 15 s on a loaded machine). What the same
    # stream saw as its worst gap just before is the machine's own noise, allowed on top.
    # The stall was the same for every such request; a busy machine's pauses are not, so
    # up to three requests are timed and one within the bound is enough.
    seen = await stall_seen_by_a_stream(live_server_factory, target, lambda gap, before: gap < 0.05 + before)
    gap_while_refusing, gap_before = seen[-1]
    assert gap_while_refusing < 0.05 + gap_before, seen


async def stall_seen_by_a_stream(
    live_server_factory: Any, target: str, good_enough: Callable[[float, float], bool]
) -> list[tuple[float, float]]:
    """For up to :data:`ATTEMPTS` hostile requests, until one is ``good_enough``: (the
    worst gap between a stream's events while it is answered, the worst gap in the quarter
    of a second before it)."""
    arrivals: list[float] = []

    def worst_gap(start: float, end: float, *, within: bool) -> float:
        """The longest time between two successive events of the stream: both within
        [start, end], or (``within=False``) any two whose interval meets it."""
        pairs = itertools.pairwise(arrivals)
        if within:
            return max(b - a for a, b in pairs if a >= start and b <= end)
        return max(b - a for a, b in pairs if b >= start and a <= end)

    seen: list[tuple[float, float]] = []
    async with (
        live_server_factory(jwt_secret=SECRET, max_head_bytes=128 * 1024, flush_interval=0.001) as server,
        # Timeouts long enough for the stall before the fix (seconds), so that it fails
        # on the gap it measures rather than on a timeout.
        httpx.AsyncClient(base_url=server.base_url, timeout=STALL_TIMEOUT) as http,
        trio.open_nursery() as nursery,
    ):
        headers = {"authorization": f"Bearer {token()}"}
        async with aconnect_sse(http, "GET", "/sse/events", headers=headers) as source:
            events = source.aiter_sse()
            with trio.fail_after(TIMEOUT):
                assert (await anext(events)).event == "connected"

            async def publish() -> None:
                for n in range(100_000):
                    await server.hub.publish("commit", n)
                    await trio.sleep(0.005)

            async def read() -> None:
                async for _ in events:
                    arrivals.append(trio.current_time())

            nursery.start_soon(publish)
            nursery.start_soon(read)
            await trio.sleep(0.05)
            for _ in range(ATTEMPTS):
                await trio.sleep(0.25)
                sent = trio.current_time()
                status, answer_headers, body = await exchange(
                    port_of(server), build("GET", target, ("cookie", BACKSLASH_COOKIE)), timeout=STALL_TIMEOUT
                )
                answered = trio.current_time()
                assert json_error(status, answer_headers, body) == (401, "invalid_token")
                await trio.sleep(0.05)
                seen.append((worst_gap(sent, answered, within=False), worst_gap(sent - 0.25, sent, within=True)))
                if good_enough(*seen[-1]):
                    break
            nursery.cancel_scope.cancel()
    return seen


# -- the head limit ------------------------------------------------------------------------

PUBLISH = b'{"event_type": "commit", "data": 1}'
#: route: (method, target, body, the status when served)
ROUTES = {
    "stream (lean)": ("GET", "/sse/events", b"", 200),
    "publish (lean)": ("POST", "/sse/publish", PUBLISH, 202),
    "subscribe (quart)": ("POST", "/sse/subscribe", b'{"connection_id": "x", "event_types": []}', 404),
    "test-event (quart)": ("POST", "/sse/test-event", b"", 202),
    "health (quart)": ("GET", "/sse/health", b"", 200),
    "unknown path": ("GET", "/nowhere", b"", 404),
}


def request(route: str, size: int) -> bytes:
    method, target, body, _ = ROUTES[route]
    return build(method, target, ("content-type", "application/json"), body=body, size=size)


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_60_kb_head_sent_in_one_piece_is_a_431_json_error_and_changes_nothing(
    live_server_factory, route: str
) -> None:
    async with live_server_factory() as server:
        status, headers, body = await exchange(port_of(server), request(route, 60_000))
        assert json_error(status, headers, body) == (431, "head_too_large")
        assert orjson.loads(body)["message"] == f"the request head is 60000 bytes; the limit is {LIMIT}"
        stats = server.hub.snapshot()
        assert (stats["events_published"], stats["total_connections"]) == (0, 0)
        status, _, _ = await exchange(port_of(server), request("health (quart)", 1000))
        assert status == 200  # and the server serves on


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_15_kb_head_is_served(live_server_factory, route: str) -> None:
    async with live_server_factory() as server:
        status, _, body = await exchange(port_of(server), request(route, 15 * 1024))
        assert status == ROUTES[route][3], body
        if route == "stream (lean)":
            assert b"event: connected" in body
        if route == "publish (lean)":
            assert server.hub.snapshot()["events_published"] == 1


async def test_the_limit_counts_the_head_as_sent_the_limit_itself_is_served_one_byte_more_is_refused(
    live_server_factory,
) -> None:
    async with live_server_factory() as server:
        assert (await exchange(port_of(server), request("health (quart)", LIMIT)))[0] == 200
        status, headers, body = await exchange(port_of(server), request("health (quart)", LIMIT + 1))
        assert json_error(status, headers, body) == (431, "head_too_large")


async def test_a_refused_head_from_a_listed_origin_carries_the_cors_headers(live_server_factory) -> None:
    async with live_server_factory(cors_origins=("https://app.example",)) as server:
        raw = build("GET", "/sse/health", ("origin", "https://app.example"), size=60_000)
        status, headers, _ = await exchange(port_of(server), raw)
    assert status == 431 and headers["access-control-allow-origin"] == "https://app.example"


async def test_max_head_bytes_is_also_the_bound_on_a_head_still_arriving(live_server_factory) -> None:
    # hypercorn's h11_max_incomplete_size follows the setting: raised, a 40 KB head in two
    # pieces is served; at the default, a head still arriving past 16 KiB gets hypercorn's
    # own 431 (no body: hypercorn answers before trio_sse sees the request).
    raw = request("health (quart)", 40_000)
    async with live_server_factory(max_head_bytes=64 * 1024) as server:
        assert (await exchange(port_of(server), raw[:30_000], raw[30_000:], pause=0.05))[0] == 200
    async with live_server_factory() as server:
        status, headers, body = await exchange(port_of(server), raw[:30_000], raw[30_000:], pause=0.05)
        assert (status, body) == (431, b"") and "content-type" not in headers


async def test_the_head_limit_holds_over_http2_too(live_server_factory, tls: Any) -> None:
    # hypercorn's HTTP/2 limit (h2_max_header_list_size) is 64 KiB: the app's check is what
    # holds max_head_bytes there, counting the head as HTTP/1.1 would carry it.
    async with (
        live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile) as server,
        httpx.AsyncClient(base_url=server.base_url, http2=True, verify=tls.client_context, timeout=TIMEOUT) as http,
    ):
        refused = await http.get("/sse/health", headers={"x-pad": "a" * 30_000})
        assert refused.http_version == "HTTP/2"
        assert (refused.status_code, refused.json()["error"]) == (431, "head_too_large")
        served = await http.get("/sse/health", headers={"x-pad": "a" * 15_000})
        assert (served.http_version, served.status_code) == ("HTTP/2", 200)
