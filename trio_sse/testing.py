"""An in-process SSE test client for trio_sse apps (and any ASGI app), for pytest-trio.

It drives the app's ASGI callable directly — no socket, no thread — so it runs under
pytest-trio's ``autojump_clock``: a 30 s heartbeat or a 10 s send timeout is tested
in milliseconds of real time::

    async def test_heartbeat(autojump_clock):
        async with trio_sse.open_hub(Settings(heartbeat_interval=30)) as hub:
            async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
                async with client.stream("/sse/events") as stream:
                    await stream.next_event()            # connected
                    assert await stream.next_comment() == "heartbeat"

Like a browser, the client decodes a ``Content-Encoding: gzip`` body as it arrives
(``stream.raw`` keeps the bytes as sent), so a gzip stream is read the same way; an
event the server has not flushed out of its compressor is not seen.

The client runs the ASGI lifespan (startup on enter, shutdown on exit), so apps that
open their own hub while serving work too. ``stream.pause()`` stops reading, which
makes the app's writes block exactly like a client whose TCP window is full.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import orjson
import trio

from .core.parser import Comment, ParsedEvent, SSEParser

__all__ = ["ParsedEvent", "SSETestClient", "TestResponse", "TestStream"]


class TestResponse:
    """A complete (non-streaming) response."""

    __test__ = False  # not a pytest test class

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.raw_headers = headers
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} {self.body[:200]!r}>"


def _scope(
    method: str,
    path: str,
    query: Mapping[str, Any] | str | None,
    headers: Mapping[str, str] | None,
    client: tuple[str, int],
) -> dict[str, Any]:
    if isinstance(query, str):
        query_string = query.encode()
    elif query:
        query_string = urlencode(query, doseq=True).encode()
    else:
        query_string = b""
    if "?" in path:
        path, _, extra = path.partition("?")
        query_string = extra.encode() + (b"&" + query_string if query_string else b"")
    raw_headers = [(b"host", b"testserver")] + [
        (k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in (headers or {}).items()
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "root_path": "",
        "headers": raw_headers,
        "client": client,
        "server": ("testserver", 80),
        "extensions": {},
        "state": {},
    }


class TestStream:
    """A live response being read as an event stream."""

    __test__ = False

    def __init__(self, client_gone: trio.Event) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.raw = b""
        self.ended = False
        self.parser = SSEParser()
        #: Set when the response is ``Content-Encoding: gzip``: bodies are inflated as they come.
        self.decompressor: Any = None
        self._client_gone = client_gone
        self._items: list[ParsedEvent | Comment] = []
        self._changed = trio.Event()
        self._readable = trio.Event()
        self._readable.set()
        self._started = trio.Event()

    # -- the app side ---------------------------------------------------------------

    async def _asgi_send(self, message: dict[str, Any]) -> None:
        await self._readable.wait()  # a paused reader makes writes block, like a full TCP window
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
            if self.headers.get("content-encoding") == "gzip":
                self.decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._started.set()
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.raw += body
            if self.decompressor is not None:
                body = self.decompressor.decompress(body)
            self._items.extend(self.parser.feed(body))
            if not message.get("more_body", False):
                self.ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the test side --------------------------------------------------------------

    @property
    def json(self) -> Any:
        """The body as JSON (for a refused stream, which gets a JSON error instead)."""
        return orjson.loads(self.raw)

    def pause(self) -> None:
        """Stop reading: the app's next write blocks until :meth:`resume`."""
        self._readable = trio.Event()

    def resume(self) -> None:
        self._readable.set()

    def disconnect(self) -> None:
        """Close the connection from the client side (the app sees ``http.disconnect``)."""
        self._client_gone.set()

    async def _next(self, kind: type, timeout: float) -> Any:
        with trio.fail_after(timeout):
            while True:
                for index, item in enumerate(self._items):
                    if isinstance(item, kind):
                        del self._items[: index + 1]
                        return item
                if self.ended:
                    raise EOFError("the stream ended")
                await self._changed.wait()

    async def next_event(self, timeout: float = math.inf) -> ParsedEvent:
        """The next event (skipping comments); ``EOFError`` if the stream ends first."""
        result: ParsedEvent = await self._next(ParsedEvent, timeout)
        return result

    async def next_comment(self, timeout: float = math.inf) -> str:
        result: Comment = await self._next(Comment, timeout)
        return result.text

    async def next_item(self, timeout: float = math.inf) -> ParsedEvent | Comment:
        """The next event or comment, whichever comes first."""
        result: ParsedEvent | Comment = await self._next(object, timeout)
        return result

    async def events(self, count: int, timeout: float = math.inf) -> list[ParsedEvent]:
        return [await self.next_event(timeout) for _ in range(count)]

    def pending(self) -> list[ParsedEvent | Comment]:
        """Items received but not yet read."""
        return list(self._items)

    async def wait_ended(self, timeout: float = math.inf) -> None:
        with trio.fail_after(timeout):
            while not self.ended:
                await self._changed.wait()


class SSETestClient:
    """Drives an ASGI app in-process. Use as ``async with SSETestClient(app) as client``."""

    __test__ = False

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self.client = client
        self._nursery: trio.Nursery | None = None
        self._lifespan_send: trio.MemorySendChannel[dict[str, Any]] | None = None
        self._lifespan_events: trio.MemoryReceiveChannel[dict[str, Any]] | None = None

    async def __aenter__(self) -> SSETestClient:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        to_app, app_receive = trio.open_memory_channel[dict[str, Any]](4)
        app_send, from_app = trio.open_memory_channel[dict[str, Any]](4)
        self._lifespan_send, self._lifespan_events = to_app, from_app

        async def lifespan() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
            try:
                await self.app(scope, app_receive.receive, app_send.send)
            except Exception:
                await app_send.send({"type": "lifespan.unsupported"})

        self._nursery.start_soon(lifespan)
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"app startup failed: {reply.get('message')}")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._nursery is not None and self._lifespan_send is not None and self._lifespan_events is not None
        with trio.CancelScope(shield=True):
            await self._lifespan_send.send({"type": "lifespan.shutdown"})
            with trio.move_on_after(30):
                await self._lifespan_events.receive()
        self._nursery.cancel_scope.cancel()
        await self._nursery_manager.__aexit__(*exc_info)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | str | None = None,
    ) -> TestResponse:
        """Send one request and return the whole response."""
        headers = dict(headers or {})
        if json is not None:
            body = orjson.dumps(json)
            headers.setdefault("content-type", "application/json")
        payload = body or b""
        if payload:
            headers.setdefault("content-length", str(len(payload)))
        scope = _scope(method, path, query, headers, self.client)
        sent = False
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        done = trio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self.app(scope, receive, send)
        done.set()
        return TestResponse(status, response_headers, b"".join(chunks))

    async def get(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> TestResponse:
        return await self.request("POST", path, **kwargs)

    @asynccontextmanager
    async def stream(
        self,
        path: str = "/sse/events",
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | str | None = None,
    ) -> AsyncIterator[TestStream]:
        """Open a stream; waits for the response to start. Leaving the block disconnects."""
        assert self._nursery is not None, "use 'async with SSETestClient(app) as client'"
        scope = _scope("GET", path, query, headers, self.client)
        gone = trio.Event()
        stream = TestStream(gone)
        finished = trio.Event()
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def run_app() -> None:
            try:
                await self.app(scope, receive, stream._asgi_send)
            finally:
                stream.ended = True
                stream._wake()
                stream._started.set()
                finished.set()

        self._nursery.start_soon(run_app)
        await stream._started.wait()
        if stream.status is not None and not 200 <= stream.status < 300:
            await finished.wait()  # a refused stream: its whole body is the JSON error
        try:
            yield stream
        finally:
            gone.set()
            stream.resume()
            with trio.CancelScope(shield=True), trio.move_on_after(60):
                await finished.wait()
