"""trio_sse.client against hostile or broken servers: retry: 0, a huge retry:, a line that
never ends, an event that never ends (issue 11, items 6 and 7).

The timing tests run under ``autojump_clock`` with the scripted app of ``test_client``;
the endless line also goes through a real socket on 127.0.0.1.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from test_client import BASE, HANG, SSE_HEAD, FakeSSE, NoJitter, Send, answer, block, sse

from trio_sse.client import EventSource, SSEConnectionError, SSEProtocolError, connect
from trio_sse.testing import ASGIStreamTransport

MIB = 1024 * 1024


@asynccontextmanager
async def source_on(app: FakeSSE, *, buffer: int = 64, **kwargs: Any) -> AsyncIterator[EventSource]:
    """A client on ``app`` in-process (``buffer``: chunks in flight), failing rather than hanging."""
    kwargs.setdefault("rng", NoJitter())
    with trio.fail_after(HANG):
        async with httpx.AsyncClient(transport=ASGIStreamTransport(app, buffer=buffer)) as http:
            async with connect(BASE, http=http, **kwargs) as source:
                yield source


class DiesAfter(httpx.AsyncBaseTransport):
    """Serves the first ``alive`` requests from ``inner``; every later attempt is refused,
    like a server that was killed. Attempt times are recorded (trio's clock)."""

    def __init__(self, inner: ASGIStreamTransport, alive: int) -> None:
        self.inner = inner
        self.alive = alive
        self.attempts: list[float] = []

    async def __aenter__(self) -> DiesAfter:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.alive:
            self.alive -= 1
            return await self.inner.handle_async_request(request)
        self.attempts.append(trio.current_time())
        if len(self.attempts) > 10_000:  # main's client: no time passes between attempts
            raise RuntimeError("a busy loop of connection attempts")
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


async def attempts_within(seconds: float, app: FakeSSE, alive: int = 1, **kwargs: Any) -> list[float]:
    """Times (from the moment the server died) of the connection attempts made in ``seconds``."""
    transport = DiesAfter(ASGIStreamTransport(app), alive)
    kwargs.setdefault("rng", NoJitter())
    with trio.fail_after(HANG):
        async with httpx.AsyncClient(transport=transport) as http:
            async with connect(BASE, http=http, **kwargs) as source:
                assert (await anext(source)).id == "1"
                died = trio.current_time()  # the stream has ended: the client finds out on its next read
                with trio.move_on_after(seconds):
                    await anext(source)
    return [round(at - died, 6) for at in transport.attempts]


# -- item 7: backoff -----------------------------------------------------------------------


async def test_retry_0_against_a_dead_server_backs_off_from_min_backoff(autojump_clock) -> None:
    attempts = await attempts_within(5, FakeSSE([sse(block("1", data=1, retry=0))]))
    assert attempts == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1])  # 0.1 s, doubled per failure
    assert len(attempts) <= 60  # main's client: 20,390 real attempts in 5 s


async def test_retry_0_with_jitter_stays_bounded_and_each_delay_within_a_quarter(autojump_clock) -> None:
    attempts = await attempts_within(60, FakeSSE([sse(block("1", data=1, retry=0))]), rng=random.Random(11))
    gaps = [b - a for a, b in zip([0.0, *attempts], attempts, strict=False)]
    for failures, gap in enumerate(gaps):
        base = min(30.0, 0.1 * 2**failures)
        low, high = (base, base * 1.25) if base * 1.25 <= 30 else (22.5, 30.0)
        assert low - 1e-6 <= gap <= high + 1e-6, (failures, gaps)
    assert len(attempts) <= 12 and len({round(g / min(30, 0.1 * 2**i), 3) for i, g in enumerate(gaps)}) > 5


async def test_min_backoff_is_a_setting(autojump_clock) -> None:
    attempts = await attempts_within(5, FakeSSE([sse(block("1", data=1, retry=0))]), min_backoff=1.0)
    assert attempts == [1.0, 3.0]


async def test_a_huge_retry_is_capped_at_max_backoff(autojump_clock, caplog) -> None:
    app = FakeSSE([sse(block("1", data=1, retry=86_400_000_000)), sse(block("2", data=2), then="stall")])
    with caplog.at_level(logging.INFO, logger="trio_sse.client"):
        async with source_on(app, max_backoff=30) as source:
            assert [(await anext(source)).id for _ in range(2)] == ["1", "2"]
    assert app.gaps() == [30.0]
    assert "reconnecting in 30.0 s" in caplog.text


async def test_a_retry_after_longer_than_max_backoff_is_capped(autojump_clock) -> None:
    app = FakeSSE([answer(503, {"error": "busy"}, {"retry-after": "86400"}), sse(block("1", data=1), then="stall")])
    async with source_on(app, max_backoff=10) as source:
        assert (await anext(source)).id == "1"
    assert app.gaps() == [10.0]


async def test_a_stream_that_delivers_nothing_is_a_failed_attempt_and_backs_off(autojump_clock) -> None:
    # A 200 event stream that ends at once, again and again (a crash loop behind a proxy):
    # only a stream that gave an event or a comment resets the backoff.
    app = FakeSSE(
        [
            sse(block("1", data=1, retry=0)),
            *[sse()] * 4,
            sse(b": hello\n"),
            sse(),
            sse(block("2", data=2), then="stall"),
        ]
    )
    async with source_on(app) as source:
        assert [(await anext(source)).id for _ in range(2)] == ["1", "2"]
    assert app.gaps() == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 0.1, 0.2])


# -- item 6: a line or an event that never ends ---------------------------------------------


def endless(sent: list[int], *, prologue: bytes = b"", piece: bytes = b"x" * 4096, head: bytes = b"data: ") -> Any:
    """A 200 event stream that writes ``prologue``, then ``head`` and ``piece`` forever
    (up to 16 MiB, then cuts: a client without limits fails the test instead of filling
    memory). ``sent`` gets the bytes written once the client goes away."""

    async def script(send: Send) -> None:
        total = 0
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEAD})
        try:
            for chunk in (prologue + head, *[piece] * (16 * MIB // len(piece))):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                total += len(chunk)
        except trio.BrokenResourceError:
            pass  # the client closed the response
        sent.append(total)
        raise RuntimeError("connection cut")

    return script


async def test_a_line_that_never_ends_drops_the_connection_and_reconnects_with_backoff(autojump_clock) -> None:
    sent: list[int] = []
    app = FakeSSE(
        [
            endless(sent, prologue=block("1", data=1, retry=1000)),
            endless(sent),
            endless(sent),
            sse(block("2", data=2), then="stall"),
        ]
    )
    # One chunk in flight at a time, so what the app wrote is what the client read.
    async with source_on(app, buffer=1, silence_timeout=20) as source:
        assert [(await anext(source)).id for _ in range(2)] == ["1", "2"]
        assert source.connections == 4
    assert len(sent) == 3 and all(MIB < total <= MIB + 3 * 4096 + 200 for total in sent), sent  # default 1 MiB
    assert app.gaps() == [2.0, 4.0, 8.0]  # each a failed attempt: retry doubled, not reset
    assert [r.headers.get("last-event-id") for r in app.requests] == [None, "1", "1", "1"]


async def test_an_event_that_never_ends_drops_the_connection_and_gives_up_after_max_attempts(autojump_clock) -> None:
    sent: list[int] = []
    app = FakeSSE([endless(sent, head=b"", piece=b"data: 1234567\n" * 100)] * 2)
    with pytest.raises(SSEConnectionError) as raised:
        async with source_on(app, buffer=1, max_event_bytes=64 * 1024, max_attempts=2) as source:
            await anext(source)
    # The limit counts the data (7 bytes and a joining LF per 14-byte line): 8,192 lines, ~112 KiB on the wire.
    assert len(sent) == 2 and all(total <= (64 * 1024 // 8 + 200) * 14 for total in sent), sent
    cause = raised.value.__cause__.__cause__  # the last failure, and why it failed
    assert isinstance(cause, SSEProtocolError) and "event's data is longer than 65536 bytes" in str(cause)


async def test_events_complete_before_an_overlong_line_are_delivered_once(autojump_clock) -> None:
    # One chunk: two events, then the start of a line already past the limit.
    chunk = block("1", data=1, retry=500) + block("2", data=2) + b"data: " + b"x" * (2 * MIB)
    app = FakeSSE([sse(chunk, then="stall"), sse(block("3", data=3), then="stall")])
    async with source_on(app) as source:
        assert [(await anext(source)).id for _ in range(3)] == ["1", "2", "3"]
    assert app.requests[1].headers["last-event-id"] == "2"


async def test_max_line_bytes_none_lets_a_long_line_through(autojump_clock) -> None:
    big = b"data: " + b"x" * (3 * MIB) + b"\n\n"
    app = FakeSSE([sse(big, then="stall")])
    async with source_on(app, max_line_bytes=None, max_event_bytes=None) as source:
        assert len((await anext(source)).data) == 3 * MIB


# -- the endless line through a real socket ---------------------------------------------------


async def test_a_real_server_streaming_an_endless_line_is_dropped_at_the_limit(nursery) -> None:
    written: list[int] = []
    opened = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal opened
        opened += 1
        number = opened
        total = 0
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive_some(65536)
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            body = f"retry: 50\nid: {number}\ndata: {number}\n\n".encode()
            try:
                await stream.send_all(head + body + (b"data: " if number == 1 else b""))
                while number == 1 and total < 64 * MIB:  # only the first connection: an endless line
                    await stream.send_all(b"x" * 65536)
                    total += 65536
                if number > 1:
                    await trio.sleep_forever()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            written.append(total)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(20):
        async with connect(f"http://127.0.0.1:{port}", silence_timeout=5) as source:
            assert [(await anext(source)).id for _ in range(2)] == ["1", "2"]
            assert source.connections == 2
    # The client read 1 MiB, then closed: what the server wrote past that sat in socket
    # buffers (a few MiB on loopback). main's client read all 64 MiB and never gave up.
    assert written and written[0] < 16 * MIB, written
