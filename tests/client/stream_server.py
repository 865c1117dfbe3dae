"""A scriptable HTTP/1.1 server on 127.0.0.1 for client tests (trio + h11, no framework).

It plays the stream endpoints of LaunchDarkly's SSE contract-test harness: each
request is recorded (method, path, query, headers, body); a path answers either with a
canned response (any status, headers — an empty ``Location`` included — and body) or
with a stream the test writes to, chunk by chunk, then ends or breaks (the socket is
closed in the middle of the chunked body, as a dying server or a cut network does).

Real sockets, so tests that use it run on the real clock and keep their delays short.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import h11
import trio

STREAM_HEAD = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


@attrs.define
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), ``None`` if absent."""
        values = [v for k, v in self.headers if k == name.lower()]
        return values[-1] if values else None


@attrs.frozen
class Canned:
    status: int
    headers: list[tuple[str, str]] = attrs.Factory(list)
    body: bytes = b""


@attrs.define(eq=False)
class StreamConnection:
    """One open stream: the test sends chunks, then ends or breaks it."""

    request: Recorded
    _stream: trio.SocketStream
    _conn: h11.Connection
    closed: trio.Event = attrs.Factory(trio.Event)
    """Set once the stream is over: the client went away, or the test ended or broke it."""

    async def send(self, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        await self._stream.send_all(self._conn.send(h11.Data(data=raw)) or b"")

    async def send_in_chunks(self, data: str | bytes, size: int, pause: float = 0.0) -> None:
        raw = data.encode() if isinstance(data, str) else data
        for start in range(0, len(raw), size):
            await self.send(raw[start : start + size])
            await trio.sleep(pause)

    async def end(self) -> None:
        """End the response properly (the terminating chunk), then close."""
        await self._stream.send_all(self._conn.send(h11.EndOfMessage()) or b"")
        await self.break_connection()

    async def break_connection(self) -> None:
        """Close the socket in the middle of the body."""
        self.closed.set()
        await self._stream.aclose()


@attrs.define(eq=False)
class StreamServer:
    """``routes`` maps a path to a :class:`Canned` answer, or to a list of them answered
    in turn (the last one then for good); any other path is a stream."""

    host: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Canned | list[Canned]] = attrs.Factory(dict)
    requests: list[Recorded] = attrs.Factory(list)
    _recorded: trio.Event = attrs.Factory(trio.Event)
    _send: trio.MemorySendChannel[StreamConnection] | None = None
    _receive: trio.MemoryReceiveChannel[StreamConnection] | None = None

    def url(self, path: str = "/stream") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def await_connection(self, timeout: float = 5.0) -> StreamConnection:
        """The next stream opened (in order), or fail after ``timeout`` seconds."""
        assert self._receive is not None
        with trio.fail_after(timeout):
            return await self._receive.receive()

    async def wait_requests(self, prefix: str, count: int, timeout: float = 5.0) -> list[Recorded]:
        """Once ``count`` requests to paths starting with ``prefix`` came: those requests."""
        with trio.fail_after(timeout):
            while len(found := [r for r in self.requests if r.path.startswith(prefix)]) < count:
                await self._recorded.wait()
        return found

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(stream, conn)
                if request is None:
                    return
                self.requests.append(request)
                self._recorded.set()
                self._recorded = trio.Event()
                canned = self.routes.get(request.path)
                if isinstance(canned, list):
                    canned = canned.pop(0) if len(canned) > 1 else canned[0]
                if canned is None:
                    await self._stream(stream, conn, request)
                    return
                head = [(k.encode(), v.encode()) for k, v in canned.headers]
                if canned.status not in (204, 304):
                    head.append((b"content-length", str(len(canned.body)).encode()))
                out = conn.send(h11.Response(status_code=canned.status, headers=head)) or b""
                if canned.body:
                    out += conn.send(h11.Data(data=canned.body)) or b""
                out += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(out)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection) -> Recorded | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                path, _, query = head.target.decode().partition("?")
                headers = [(k.decode().lower(), v.decode()) for k, v in head.headers]
                return Recorded(head.method.decode(), path, query, headers, body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _stream(self, stream: trio.SocketStream, conn: h11.Connection, request: Recorded) -> None:
        assert self._send is not None
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=STREAM_HEAD)) or b"")
        connection = StreamConnection(request, stream, conn)
        self._send.send_nowait(connection)
        try:
            while not connection.closed.is_set():
                if not await stream.receive_some(65536):
                    break  # the client closed its side
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            connection.closed.set()


@asynccontextmanager
async def stream_server(routes: dict[str, Canned | list[Canned]] | None = None) -> AsyncIterator[StreamServer]:
    """Serve on an ephemeral port of 127.0.0.1 for the block; every socket is closed after."""
    server = StreamServer(routes=dict(routes or {}))
    server._send, server._receive = trio.open_memory_channel[StreamConnection](math.inf)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server._handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
