"""The fan-out fast path under a real hypercorn: direct chunked writes to the socket.

Every test runs a real server on 127.0.0.1 (real clock: waits are short polls bounded by
``fail_after``). Streams are read either with httpx-sse or with a raw socket whose HTTP/1.1
chunked body is de-chunked here, so the framing of direct writes is checked byte for byte.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import orjson
import pytest
import trio
from http_support import hypercorn_like_send
from httpx_sse import aconnect_sse

from trio_sse.core.parser import Comment, ParsedEvent, SSEParser
from trio_sse.http.fastpath import ChunkedSocketWriter
from trio_sse.runtime.connection import Connection

TIMEOUT = 10.0
PAD = "x" * 20_000

# These tests count the fast path's own writes, which depend on how events reach the
# hub (one batch in-process vs. reads from Redis), not on the backend's behaviour.
pytestmark = pytest.mark.one_backend


async def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - the server's state is polled from outside, on the real clock
            await trio.sleep(0.005)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


# -- a raw HTTP/1.1 client ----------------------------------------------------------------


class ChunkDecoder:
    """Strict HTTP/1.1 chunked-body decoder: ``<hex size>CRLF<data>CRLF`` ... ``0CRLF CRLF``."""

    def __init__(self) -> None:
        self._buffer = b""
        self.bodies: list[bytes] = []
        self.finished = False

    @property
    def chunks(self) -> int:
        return len(self.bodies)

    @property
    def at_boundary(self) -> bool:
        """Nothing half-read: every byte received so far belongs to a complete chunk."""
        return self._buffer == b""

    def feed(self, data: bytes) -> bytes:
        """The body bytes of every complete chunk in ``data`` (and what came before)."""
        self._buffer += data
        out: list[bytes] = []
        while not self.finished:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                assert len(self._buffer) < 32, f"chunk-size line too long: {self._buffer[:40]!r}"
                break
            size_line = self._buffer[:line_end]
            assert size_line and all(c in b"0123456789abcdefABCDEF" for c in size_line), (
                f"bad chunk-size line {size_line[:40]!r}"
            )
            size = int(size_line, 16)
            start = line_end + 2
            if size == 0:
                if len(self._buffer) < start + 2:
                    break
                assert self._buffer[start : start + 2] == b"\r\n", "no trailer allowed after the last chunk"
                self._buffer = self._buffer[start + 2 :]
                self.finished = True
                break
            if len(self._buffer) < start + size + 2:
                break
            assert self._buffer[start + size : start + size + 2] == b"\r\n", "chunk data not followed by CRLF"
            body = self._buffer[start : start + size]
            out.append(body)
            self.bodies.append(body)
            self._buffer = self._buffer[start + size + 2 :]
        return b"".join(out)

    @property
    def leftover(self) -> bytes:
        return self._buffer


@attrs.define
class RawStream:
    """A ``GET /sse/events`` over a plain socket, read (or not) by the test."""

    sock: trio.socket.SocketType
    headers: dict[str, str]
    decoder: ChunkDecoder = attrs.Factory(ChunkDecoder)
    parser: SSEParser = attrs.Factory(SSEParser)
    items: list[ParsedEvent | Comment] = attrs.Factory(list)
    eof: bool = False
    #: For a ``Content-Encoding: gzip`` body: inflates what each chunk brings, as it comes.
    inflate: Any = None

    def feed(self, data: bytes) -> None:
        body = self.decoder.feed(data)
        if self.inflate is not None:
            body = self.inflate.decompress(body)
        self.items.extend(self.parser.feed(body))

    async def read_some(self) -> None:
        data = await self.sock.recv(1 << 16)
        if not data:
            self.eof = True
        self.feed(data)

    def events(self) -> list[ParsedEvent]:
        return [item for item in self.items if isinstance(item, ParsedEvent)]

    async def read_until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while not condition():
                assert not self.eof, "the server closed the connection"
                await self.read_some()

    async def read_to_eof(self, timeout: float = TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while not self.eof:
                try:
                    await self.read_some()
                except ConnectionResetError:
                    self.eof = True


@asynccontextmanager
async def raw_stream(
    base_url: str, query: str = "", *, rcvbuf: int | None = None, accept_encoding: str | None = None
) -> AsyncIterator[RawStream]:
    """Open a stream with a raw socket and read its response head (and what follows it)."""
    url = urlsplit(base_url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    with sock:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((url.hostname, url.port))
        target = "/sse/events" + (f"?{query}" if query else "")
        accept = f"Accept-Encoding: {accept_encoding}\r\n" if accept_encoding else ""
        await sock.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n{accept}\r\n".encode())
        received = b""
        with trio.fail_after(TIMEOUT):
            while b"\r\n\r\n" not in received:
                data = await sock.recv(4096)
                assert data, "connection closed before the response head"
                received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 200"), status_line
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        stream = RawStream(sock, headers)
        if headers.get("content-encoding") == "gzip":
            stream.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        stream.feed(rest)
        await stream.read_until(lambda: any(e.type == "connected" for e in stream.events()))
        yield stream


# -- counting direct writes -----------------------------------------------------------------


@attrs.define
class DirectWrite:
    payload: bytes
    complete: bool | None  # None: raised
    at: float


@pytest.fixture
def direct_writes(monkeypatch: pytest.MonkeyPatch) -> list[DirectWrite]:
    """Every ``ChunkedSocketWriter.write_now`` call: its payload, whether the kernel took it all."""
    calls: list[DirectWrite] = []
    original = ChunkedSocketWriter.write_now

    def spy(self: ChunkedSocketWriter, parts: list[bytes]) -> bool:
        call = DirectWrite(b"".join(parts), None, trio.current_time())
        calls.append(call)
        call.complete = original(self, parts)
        return call.complete

    monkeypatch.setattr(ChunkedSocketWriter, "write_now", spy)
    return calls


def the_connection(server: Any, connection_id: str) -> Connection:
    connection: Connection = server.hub.get_connection(connection_id)
    return connection


async def publish_big(hub: Any, n: int, event_type: str = "commit", *, incompressible: bool = False) -> str:
    """An event of ~20 KB; ``incompressible`` pads with random text so gzip cannot shrink it."""
    pad = base64.b64encode(os.urandom(15_000)).decode() if incompressible else PAD
    event_id: str = await hub.publish(event_type, {"n": n, "pad": pad})
    return event_id


# -- the writer itself ----------------------------------------------------------------------------------


async def test_chunked_socket_writer_frames_each_write_as_one_chunk_and_keeps_order_through_its_backlog() -> None:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer = ChunkedSocketWriter(ours)
        assert writer.write_now([]) and writer.backlog == 0
        sent: list[bytes] = []
        results = []
        for _ in range(10_000):  # until the kernel takes no more
            parts = [b"%d:" % len(sent), b"y" * 1500, b"|"]
            sent.append(b"".join(parts))
            results.append(writer.write_now(parts))
            if results[-3:] == [False] * 3:
                break
        assert results[0] and results[-3:] == [False] * 3 and writer.backlog > 0
        # Once behind, every write joins the backlog whole, in order.
        before = writer.backlog
        many = [b"z"] * 1500  # more buffers than one writev takes
        sent.append(b"".join(many))
        assert writer.write_now(many) is False
        assert writer.backlog == before + len(b"5dc\r\n") + 1500 + 2
        assert writer.write_now([]) is False

        decoder = ChunkDecoder()
        chunks: list[bytes] = []
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.drain)
                while decoder.chunks < len(sent):
                    data = await theirs.recv(1 << 16)
                    assert data
                    chunks.append(decoder.feed(data))
        assert writer.backlog == 0
        assert decoder.bodies == sent and decoder.at_boundary  # one chunk per write
        assert b"".join(chunks) == b"".join(sent)
        assert writer.write_now([b"after"])  # caught up: straight to the kernel again
        assert decoder.feed(await theirs.recv(100)) == b"after"
        theirs.close()
        with pytest.raises(OSError):
            for _ in range(10):
                writer.write_now([b"into the void"])


# -- 1. the direct path is taken, and what it writes parses ----------------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "asgi"])
async def test_idle_stream_under_hypercorn_http11_uses_direct_writes_and_events_parse_in_order(
    live_server_factory, direct_writes: list[DirectWrite], direct: bool
) -> None:
    async with (
        live_server_factory(direct_writes=direct) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", "/sse/events", params={"types": "commit,file_change"}) as source,
    ):
        events = source.aiter_sse()
        with trio.fail_after(TIMEOUT):
            connected = await anext(events)
        assert connected.event == "connected"
        connection = the_connection(server, connected.json()["connection_id"])
        if direct:
            await wait_until(lambda: connection.direct_ready)
            assert isinstance(connection._direct, ChunkedSocketWriter)
        else:
            await trio.sleep(0.05)  # idle, yet never in direct mode
            assert connection._direct is None
            assert not connection.direct_ready

        published: list[tuple[str, str, int]] = []
        for n in range(5):  # one round each
            published.append((await server.hub.publish("commit", {"n": n}), "commit", n))
            await wait_until(lambda: connection.events_sent == len(published))
        # A burst in one scheduler step: one round, one write.
        for n in range(5, 25):
            event_type = "commit" if n % 2 else "file_change"
            published.append((await server.hub.publish(event_type, {"n": n}), event_type, n))
        received = []
        with trio.fail_after(TIMEOUT):
            while len(received) < len(published):
                event = await anext(events)
                received.append((event.id, event.event, event.json()["n"]))
        assert received == published
        # Through ASGI the count moves once hypercorn's send returns, maybe after the client read.
        await wait_until(lambda: connection.events_sent == len(published))
        assert connection.last_event_id == published[-1][0]
        if direct:
            assert len(direct_writes) == 6
            assert all(call.complete for call in direct_writes)
            burst = SSEParser().feed(direct_writes[-1].payload)
            assert [e.id for e in burst if isinstance(e, ParsedEvent)] == [p[0] for p in published[5:]]
            await wait_until(lambda: connection.direct_ready)  # back to idle, still direct
        else:
            assert direct_writes == []


# -- 2. a full socket: backlog, then everything exactly once -----------------------------------------


async def test_full_socket_backlog_is_drained_in_order_with_valid_chunk_framing(
    live_server_factory, direct_writes: list[DirectWrite]
) -> None:
    small, total = 10, 210
    async with live_server_factory(overflow="drop", queue_size=100_000, send_timeout=30) as server:
        hub = server.hub
        async with raw_stream(server.base_url, "types=commit", rcvbuf=4096) as stream:
            connection = the_connection(server, stream.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            # Stop reading. Small events first, one round each: the kernel takes them whole.
            published = []
            for n in range(small):
                published.append(await hub.publish("commit", {"n": n, "pad": ""}))
                await wait_until(lambda: connection.events_sent == len(published))
            assert [call.complete for call in direct_writes] == [True] * small
            # Then rounds of 4 events (80 KB) while the socket fills up.
            left_direct_mode = queued_behind_backlog = 0
            for n in range(small, total):
                published.append(await publish_big(hub, n))
                if n % 4 == 3:
                    await trio.sleep(0.01)
                    left_direct_mode += not connection.direct_ready and connection._direct.backlog > 0
                    queued_behind_backlog = max(queued_behind_backlog, connection.pending)
            incomplete = [call for call in direct_writes if call.complete is False]
            assert incomplete, "the kernel took everything: the backlog path was not exercised"
            assert left_direct_mode
            assert queued_behind_backlog, "no event was queued behind a backlog"
            assert connection.close_reason is None and connection.events_dropped == 0

            # Read again: every event exactly once, in order, framing intact throughout.
            await stream.read_until(lambda: len(stream.events()) >= 1 + total, timeout=20)
            events = stream.events()
            assert [e.type for e in events] == ["connected"] + ["commit"] * total
            assert [e.id for e in events[1:]] == published
            expected = [{"n": n, "pad": "" if n < small else PAD} for n in range(total)]
            assert [orjson.loads(e.data) for e in events[1:]] == expected
            assert stream.decoder.at_boundary and stream.parser._buffer == b""
            assert not stream.decoder.finished
            await wait_until(lambda: connection.direct_ready)  # the task handed back to the flusher
            assert connection._direct.backlog == 0
            assert hub.snapshot()["events_dropped"] == 0

            # Back in direct mode after the backlog, then a clean final chunk.
            later = await publish_big(hub, total)
            await stream.read_until(lambda: len(stream.events()) == 2 + total)
            assert stream.events()[-1].id == later
            hub.begin_shutdown()
            await stream.read_until(lambda: stream.decoder.finished)
            assert stream.decoder.leftover == b"" and stream.parser._buffer == b""
        await wait_until(lambda: not hub.connections())
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 1}


# -- 3. send_timeout while draining a direct-path backlog -------------------------------------------


async def test_direct_path_client_that_never_reads_is_closed_at_send_timeout(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        live_server_factory(send_timeout=1) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", "/sse/events", params={"types": "risk_alert"}) as other,
    ):
        hub = server.hub
        other_events = other.aiter_sse()
        with trio.fail_after(TIMEOUT):
            assert (await anext(other_events)).event == "connected"
        async with raw_stream(server.base_url, "types=commit", rcvbuf=4096) as stuck:
            connection = the_connection(server, stuck.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            with trio.fail_after(TIMEOUT):
                n = 0
                while not any(call.complete is False for call in direct_writes):
                    await publish_big(hub, n)
                    n += 1
                    if n % 4 == 0:
                        await trio.sleep(0.005)
            backlog_at = next(call.at for call in direct_writes if call.complete is False)
            alert = await hub.publish("risk_alert", {"while": "stuck"})
            with trio.fail_after(TIMEOUT):
                event = await anext(other_events)
            assert (event.id, event.json()) == (alert, {"while": "stuck"})

            await wait_until(lambda: connection.close_reason is not None, timeout=5)
            closed_after = trio.current_time() - backlog_at
            assert connection.close_reason == "send_timeout"
            assert 1.0 - 0.05 <= closed_after < 4
            await wait_until(lambda: len(hub.connections()) == 1)
            snapshot = hub.snapshot()
            assert snapshot["disconnects"] == {"send_timeout": 1}
            assert snapshot["active_connections"] == 1
            assert not connection.can_finish
            # The client sees its body cut off, never a final chunk after a half-written one.
            await stuck.read_to_eof()
            assert not stuck.decoder.finished

        # The other stream and the server carry on.
        later = await hub.publish("risk_alert", {"after": "timeout"})
        with trio.fail_after(TIMEOUT):
            event = await anext(other_events)
        assert event.id == later
        health = await http.get("/sse/health")
        assert health.status_code == 200
        assert errors_logged(caplog) == []


# -- 4. the client leaves while in direct mode ---------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_client_closing_a_direct_mode_stream_is_cleaned_up(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture, how: str
) -> None:
    async with (
        live_server_factory() as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):
        hub = server.hub
        async with raw_stream(server.base_url) as stream:
            connection = the_connection(server, stream.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            if how == "rst":  # close with a reset: the next direct write fails at once
                stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Closed; publish before the server had a chance to notice.
        for n in range(3):
            await hub.publish("commit", {"n": n})
        await trio.sleep(0.02)
        for n in range(3, 6):
            await publish_big(hub, n)
        await wait_until(lambda: hub.snapshot()["active_connections"] == 0)
        assert connection.close_reason == "client_closed"
        if how == "rst":
            # The flusher's round runs before hypercorn's reader has reported the reset:
            # the direct write itself found the client gone.
            assert [call.complete for call in direct_writes] == [None]
        assert hub.snapshot()["disconnects"] == {"client_closed": 1}
        assert not connection.direct_ready
        health = await http.get("/sse/health")
        assert health.status_code == 200
        # A new stream works as before.
        async with aconnect_sse(http, "GET", "/sse/events") as source:
            events = source.aiter_sse()
            with trio.fail_after(TIMEOUT):
                assert (await anext(events)).event == "connected"
            event_id = await hub.publish("commit", {"n": "again"})
            with trio.fail_after(TIMEOUT):
                assert (await anext(events)).id == event_id
    assert errors_logged(caplog) == []


# -- 5. graceful shutdown of a direct-mode stream -----------------------------------------------------------


async def test_shutdown_ends_an_idle_direct_mode_stream_with_the_final_chunk(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture
) -> None:
    async with live_server_factory() as server:
        hub = server.hub
        async with raw_stream(server.base_url) as stream:
            connection = the_connection(server, stream.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            event_id = await hub.publish("commit", {"n": 1})
            await stream.read_until(lambda: len(stream.events()) == 2)
            assert stream.events()[-1].id == event_id
            assert [call.complete for call in direct_writes] == [True]
            await wait_until(lambda: connection.direct_ready)

            hub.begin_shutdown()
            await stream.read_until(lambda: stream.decoder.finished)
            assert stream.decoder.leftover == b""
            assert stream.parser._buffer == b""
            assert [e.type for e in stream.events()] == ["connected", "commit"]
            # ...and then closes the keep-alive connection (hypercorn would keep it open
            # for 5 s), so the client's reconnect goes to a fresh connection.
            await stream.read_to_eof(timeout=2)
        await wait_until(lambda: not hub.connections())
        assert connection.close_reason == "server_shutdown"
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 1}
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
async def test_shutdown_during_a_backlog_drains_it_then_sends_the_final_chunk(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture, gzip: bool
) -> None:
    async with live_server_factory(send_timeout=30, gzip=gzip) as server:
        hub = server.hub
        async with raw_stream(server.base_url, "types=commit", rcvbuf=4096, accept_encoding="gzip") as stream:
            assert (stream.inflate is not None) is gzip
            connection = the_connection(server, stream.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            published = []
            with trio.fail_after(TIMEOUT):
                while not any(call.complete is False for call in direct_writes):
                    published.append(await publish_big(hub, len(published), incompressible=gzip))
                    await trio.sleep(0.005)
            for _ in range(3):  # queued behind the backlog
                published.append(await publish_big(hub, len(published), incompressible=gzip))
                await trio.sleep(0.01)
            assert connection.pending and connection._direct.backlog

            hub.begin_shutdown()
            await trio.sleep(0.2)
            assert connection in hub.connections()  # waiting for the client, not cut off
            await stream.read_until(lambda: stream.decoder.finished)
            assert [e.id for e in stream.events()[1:]] == published
            assert stream.decoder.leftover == b"" and stream.parser._buffer == b""
            if gzip:  # the gzip trailer came before the final chunk, and its CRC matched
                assert stream.inflate.eof and stream.inflate.unused_data == b""
        await wait_until(lambda: not hub.connections())
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 1}
    assert errors_logged(caplog) == []


async def test_queue_overflow_behind_a_direct_backlog_closes_as_slow_consumer_without_a_final_chunk(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        live_server_factory(queue_size=5, send_timeout=30) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):
        hub = server.hub
        async with raw_stream(server.base_url, "types=commit", rcvbuf=4096) as stuck:
            connection = the_connection(server, stuck.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            start = trio.current_time()
            with trio.fail_after(TIMEOUT):
                n = 0
                while connection.close_reason is None:
                    await publish_big(hub, n)
                    n += 1
                    if n % 4 == 0:
                        await trio.sleep(0.005)
            assert connection.close_reason == "slow_consumer"
            assert any(call.complete is False for call in direct_writes)
            # Closed by the overflow, long before send_timeout; the drain under way was given up.
            await wait_until(lambda: not hub.connections())
            assert trio.current_time() - start < 5
            assert hub.snapshot()["disconnects"] == {"slow_consumer": 1}
            assert not connection.can_finish
            await stuck.read_to_eof()
            assert not stuck.decoder.finished
        assert (await http.get("/sse/health")).status_code == 200
    assert errors_logged(caplog) == []


async def test_under_tls_direct_writes_are_off_but_a_stuck_write_can_still_be_aborted() -> None:
    import ssl

    from trio_sse.http.hypercorn_trio import plain_socket_of

    left, right = trio.socket.socketpair()
    plain = trio.SocketStream(left)
    tls = trio.SSLStream(plain, ssl.create_default_context(), server_hostname="example.invalid")
    for stream, direct in ((plain, True), (tls, False)):
        send = hypercorn_like_send(stream)
        assert (plain_socket_of(send) is left) is direct
        assert plain_socket_of(send, through_tls=True) is left
    assert plain_socket_of(lambda message: None) is None
    left.close()
    right.close()


# -- 6. gzip streams keep the direct path, and every byte is compressed ----------------------------------


async def test_gzip_stream_takes_direct_writes_and_each_event_is_decodable_as_soon_as_it_is_written(
    live_server_factory, direct_writes: list[DirectWrite], caplog: pytest.LogCaptureFixture
) -> None:
    async with live_server_factory(gzip=True, heartbeat_interval=0.2) as server:
        hub = server.hub
        async with raw_stream(server.base_url, "types=commit", accept_encoding="gzip") as stream:
            assert stream.headers["content-encoding"] == "gzip"
            assert stream.headers["vary"] == "Accept-Encoding"
            connection = the_connection(server, stream.headers["x-sse-connection-id"])
            await wait_until(lambda: connection.direct_ready)
            published = []
            for n in range(5):
                published.append(await hub.publish("commit", {"n": n}))
                # Decodable from what the client has: nothing held back in the compressor.
                await stream.read_until(lambda: len(stream.events()) == 1 + len(published))
                assert stream.decoder.at_boundary and stream.parser._buffer == b""
            assert [e.id for e in stream.events()[1:]] == published
            assert len(direct_writes) == 5 and all(call.complete for call in direct_writes)
            # Heartbeats go through the same compressor.
            await stream.read_until(lambda: any(isinstance(i, Comment) for i in stream.items))
            hub.begin_shutdown()
            await stream.read_until(lambda: stream.decoder.finished)
            assert stream.inflate.eof and stream.inflate.unused_data == b""
        await wait_until(lambda: not hub.connections())
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 1}
    assert errors_logged(caplog) == []
