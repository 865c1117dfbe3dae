"""An in-process SSE test client for trio_sse apps and any other ASGI app, for pytest-trio.

It drives the app's ASGI callable directly — no socket, no thread of its own — so it runs under
pytest-trio's ``autojump_clock``: a 30 s heartbeat or a 10 s send timeout is tested
in milliseconds of real time::

    async def test_heartbeat(autojump_clock):
        async with trio_sse.open_hub(Settings(heartbeat_interval=30)) as hub:
            async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
                async with client.stream("/sse/events") as stream:
                    await stream.next_event()            # connected
                    assert await stream.next_comment() == "heartbeat"

Like a browser, the client decodes a ``Content-Encoding: gzip`` (or ``zstd``) body as it arrives
(``stream.raw`` keeps the bytes as sent), so a gzip stream is read the same way; an
event the server has not flushed out of its compressor is not seen.

Other frameworks' streams are read the same way (tests/kit/ runs FastAPI's native SSE,
sse-starlette, Litestar and QuartTrio apps): those on anyio run on trio as they are, and
while an app waits for a worker thread the kit keeps ``autojump_clock`` from jumping
(:class:`_HoldVirtualTimeDuringThreads`). Plain ``quart.Quart`` runs on asyncio and is
refused with a message saying to use ``quart_trio.QuartTrio``.

To test code that uses :mod:`trio_sse.client`, httpx-sse or any httpx client in-process,
give httpx an :class:`ASGIStreamTransport`: unlike ``httpx.ASGITransport`` it streams.

The client runs the ASGI lifespan (startup on enter, shutdown on exit), so apps that
open their own hub while serving work too. ``stream.pause()`` stops reading, which
makes the app's writes block exactly like a client whose TCP window is full.

On top of the raw reads (``next_event``, ``next_comment``) sit assertion helpers —
``expect_event``, ``wait_for_event``, ``expect_comment``, ``assert_no_event_within`` —
that fail with an ``AssertionError`` saying what arrived instead, rather than hanging,
and ``client.publish`` / ``client.subscribe`` that go through the app's HTTP API as a
real publisher would. Events are named as in :mod:`trio_sse.client`: ``type``, ``data``,
``id``. The fixtures ``sse_settings``, ``sse_hub``, ``sse_app``, ``sse_client`` and
``sse_test_client`` (any ASGI app, no hub) come from :mod:`trio_sse.pytest_plugin`,
which pytest loads by itself once trio_sse is installed.

This module must never open a socket or read the wall clock: everything it waits
for is on trio's clock, which is what makes ``autojump_clock`` work.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import httpx
import orjson
import trio
import trio.testing
import zstandard

from .core.parser import Comment, ParsedEvent, SSEParser
from .settings import Settings

_Item = TypeVar("_Item")

__all__ = [
    "ANY",
    "DEFAULT_TIMEOUT",
    "TEST_OVERRIDES",
    "ASGIStreamTransport",
    "Comment",
    "ParsedEvent",
    "SSETestClient",
    "TestResponse",
    "TestStream",
    "settings_for_tests",
]

#: How long (trio seconds) the assertion helpers wait before failing. An assertion that
#: hangs tells you nothing; one that fails says what arrived instead. Under
#: ``autojump_clock`` this costs no real time at all.
DEFAULT_TIMEOUT: Final = 10.0


#: What :func:`settings_for_tests` (and so the ``sse_hub`` fixture) changes from
#: ``Settings()``, the dev profile ``trio-sse serve`` runs. A short shutdown grace, so a
#: test that leaves a stuck stream behind finishes its teardown in 1 s of real time
#: rather than 5 when it does not use ``autojump_clock``. Everything else stays as in
#: dev, so tests see the server's real behaviour.
TEST_OVERRIDES: Final[Mapping[str, Any]] = {"shutdown_grace": 1.0}


def settings_for_tests(**overrides: Any) -> Settings:
    """``Settings()`` with :data:`TEST_OVERRIDES`, then ``overrides``, applied."""
    return Settings(**{**TEST_OVERRIDES, **overrides})


class _Any:
    """Equal to every value, also nested: ``data={"connection_id": ANY, "project_id": "p1"}``."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ANY"


#: "Do not check this": the default of the helpers' ``data`` and ``id``, and usable inside
#: an expected ``data`` value (like ``unittest.mock.ANY``).
ANY: Final[Any] = _Any()
_UNSET: Final[Any] = object()


def _merged(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """Header mappings merged, later ones winning, by lower-cased name (as HTTP compares them)."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update((name.lower(), value) for name, value in (layer or {}).items())
    return merged


def _decoded(data: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data  # not JSON (another server's stream): compare the text itself


def _mismatch(event: ParsedEvent, event_type: str | None, data: Any, event_id: Any) -> str | None:
    """Why ``event`` does not match (``None`` when it does)."""
    if event_type is not None and event.type != event_type:
        return f"type {event.type!r} != {event_type!r}"
    if event_id is not ANY and event.id != event_id:
        return f"id {event.id!r} != {event_id!r}"
    if data is not ANY:
        value = _decoded(event.data)
        if callable(data):
            if not data(value):
                return f"data {value!r} does not satisfy {data!r}"
        elif value != data:
            return f"data {value!r} != {data!r}"
    return None


def _describe(event_type: str | None, data: Any, event_id: Any) -> str:
    parts = [f"type={event_type!r}"] if event_type is not None else []
    if data is not ANY:
        parts.append(f"data={data!r}")
    if event_id is not ANY:
        parts.append(f"id={event_id!r}")
    return "an event with " + ", ".join(parts) if parts else "an event"


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


def _request_then_disconnect(body: bytes, gone: trio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive``: the whole request body once, then ``http.disconnect`` when ``gone`` is set."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


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

    def __init__(self, client_gone: trio.Event, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.status: int | None = None
        #: Default ``timeout`` of the assertion helpers (not of the raw ``next_*`` reads).
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        self.raw = b""
        self.ended = False
        # No limits: this reads the app under test, whose output is the thing tested;
        # a limit here would turn a big event into an error raised in the app's send().
        self.parser = SSEParser(max_line_bytes=None, max_event_bytes=None)
        #: Set when the response is ``Content-Encoding: gzip`` or ``zstd``: bodies are decoded as they come.
        self.decompressor: Any = None
        self._client_gone = client_gone
        #: What the app raised, if it did (the client's block then fails with it too).
        self.app_error: Exception | None = None
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
            elif self.headers.get("content-encoding") == "zstd":
                self.decompressor = zstandard.ZstdDecompressor().decompressobj()
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
                    if self.app_error is not None:
                        # A reader inside the client's block is being cancelled by the app's
                        # crash: let that win, so the test fails with the app's error alone.
                        await trio.lowlevel.checkpoint()
                        raise EOFError(f"the stream ended: the app raised {self.app_error!r}") from self.app_error
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

    def _why_ended(self) -> str:
        return f" (the app raised {self.app_error!r})" if self.app_error is not None else ""

    # -- assertions -----------------------------------------------------------------
    #
    # They wait at most ``timeout`` (default ``self.timeout``) seconds of trio time and
    # fail with an AssertionError naming what arrived, so a wrong stream fails the test
    # at the line that expected something else instead of hanging it.

    @property
    def connection_id(self) -> str:
        """The stream's ``X-SSE-Connection-Id`` (what ``/sse/subscribe`` wants)."""
        return self.headers["x-sse-connection-id"]

    async def expect_event(
        self,
        type: str | None = None,
        data: Any = ANY,
        *,
        id: Any = ANY,
        timeout: float | None = None,
    ) -> ParsedEvent:
        """The next event, which must match; returns it.

        ``type`` is the ``event:`` field; ``data`` is compared with the decoded JSON
        payload (or is a predicate called with it); ``id`` is the ``id:`` field
        (``None`` for system events, which have none). Comments are skipped. Fails
        with ``AssertionError`` when the next event differs, when none arrives within
        ``timeout`` or when the stream ends first; the event that did not match is
        consumed.
        """
        wanted = _describe(type, data, id)
        event = await self._next_or_fail(self.next_event, wanted, timeout)
        why = _mismatch(event, type, data, id)
        if why is not None:
            raise AssertionError(f"expected {wanted}; got {event!r} ({why})")
        return event

    async def _next_or_fail(
        self, read: Callable[[float], Awaitable[_Item]], wanted: str, timeout: float | None
    ) -> _Item:
        """``read(limit)``, with a timeout or the stream's end turned into the ``AssertionError``
        an ``expect_*`` helper fails with (naming what was wanted and why the stream ended)."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await read(limit)
        except trio.TooSlowError:
            raise AssertionError(f"expected {wanted}; nothing arrived within {limit} s") from None
        except EOFError:
            raise AssertionError(f"expected {wanted}; the stream ended first{self._why_ended()}") from None

    async def wait_for_event(
        self,
        type: str | None = None,
        data: Any = ANY,
        *,
        id: Any = ANY,
        timeout: float | None = None,
    ) -> ParsedEvent:
        """Like :meth:`expect_event`, but events that do not match are skipped (and consumed).

        For streams that carry other traffic the test does not care about.
        """
        wanted = _describe(type, data, id)
        limit = self.timeout if timeout is None else timeout
        skipped: list[ParsedEvent] = []
        try:
            with trio.fail_after(limit):
                while True:
                    event = await self.next_event()
                    if _mismatch(event, type, data, id) is None:
                        return event
                    skipped.append(event)
        except trio.TooSlowError:
            raise AssertionError(f"expected {wanted} within {limit} s; skipped {skipped!r}") from None
        except EOFError:
            raise AssertionError(
                f"expected {wanted}; the stream ended first{self._why_ended()}; skipped {skipped!r}"
            ) from None

    async def expect_comment(self, text: Any = ANY, *, timeout: float | None = None) -> str:
        """The next comment (a heartbeat or ping), skipping events before it; returns its text.

        ``text`` is compared with the comment's text (without the ``:``) or is a predicate
        called with it: ``expect_comment("ping")``, ``expect_comment(lambda t: t.startswith("ping"))``.
        Fails with ``AssertionError`` when the next comment differs, when none arrives within
        ``timeout`` or when the stream ends first.
        """
        wanted = "a comment" if text is ANY else f"a comment {text!r}"
        comment = await self._next_or_fail(self.next_comment, wanted, timeout)
        if text is not ANY and not (text(comment) if callable(text) else comment == text):
            raise AssertionError(f"expected {wanted}; got {comment!r}")
        return comment

    async def expect_events(self, *expected: str, timeout: float | None = None) -> list[ParsedEvent]:
        """The next events, whose types must be ``expected`` in that order."""
        return [await self.expect_event(event_type, timeout=timeout) for event_type in expected]

    async def assert_no_event_within(self, seconds: float) -> None:
        """Fail if an event is unread now or arrives within ``seconds`` of trio time.

        Comments (heartbeats) do not count and stay unread. The stream ending also
        fails: a closed stream receives nothing, which would make the check vacuous.
        Under ``autojump_clock`` the wait costs no real time; without it, it is a real
        wait of ``seconds``.
        """
        start = trio.current_time()
        with trio.move_on_after(seconds):
            try:
                event = await self.next_event()
            except EOFError:
                raise AssertionError(
                    f"expected no event for {seconds} s, but the stream ended after {trio.current_time() - start:g} s"
                ) from None
            raise AssertionError(
                f"expected no event for {seconds} s; got {event!r} after {trio.current_time() - start:g} s"
            )


def _refuse_asyncio_only(app: Any) -> None:
    """Fail at once, saying why, for an app that can only run on asyncio.

    The kit runs the app inside the test's own trio run. Frameworks built on anyio
    (Starlette, FastAPI, sse-starlette, Litestar) run there as they are: anyio finds
    trio running and uses its trio backend. Plain Quart calls asyncio directly and would
    fail later with "no running event loop" in the middle of a request.
    """
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(app).__mro__}
    if "quart.app.Quart" in names and "quart_trio.app.QuartTrio" not in names:
        raise TypeError(
            "this is a quart.Quart app, which runs on asyncio; the test kit runs apps on trio. "
            "Make it a quart_trio.QuartTrio (the same API on trio, as trio_sse.create_app() is)"
        )


class _HoldVirtualTimeDuringThreads(trio.abc.Instrument):
    """Keeps ``autojump_clock`` from jumping while a worker thread of trio's default limiter runs.

    Frameworks on anyio hop to a thread now and then: Litestar's SSE response reads its
    first chunk with ``sync_to_thread``, Starlette and FastAPI run ``def`` endpoints,
    dependencies and sync generators in the threadpool. A trio task waiting for a thread
    looks blocked, so a ``MockClock`` with ``autojump_threshold=0`` sees every task blocked
    and jumps to the next deadline — the test's own timeout, typically — before the thread
    has returned: the test fails at once in virtual time for no reason of its own.

    After each task step this checks the limiter's borrowed tokens (anyio's default
    limiter under trio lends trio's): while one is out, the clock's ``autojump_threshold``
    is ``inf``, and it is put back once they are all returned. Threads of another limiter
    are not seen. A thread that waits for virtual time itself (``from_thread.run(sleep, 60)``)
    would then wait forever: give such code a clock with ``autojump_threshold`` above 0.
    """

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self._clock = clock
        self._limiter = trio.to_thread.current_default_thread_limiter()
        self._threshold: float | None = None  # the clock's own, while this holds it

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        busy = self._limiter.borrowed_tokens > 0
        if busy and self._threshold is None and self._clock.autojump_threshold != math.inf:
            self._threshold = self._clock.autojump_threshold
            self._clock.autojump_threshold = math.inf
        elif not busy:
            self.restore()

    def restore(self) -> None:
        if self._threshold is not None:
            self._clock.autojump_threshold, self._threshold = self._threshold, None


def _hold_virtual_time_during_threads() -> Callable[[], None]:
    """Put a :class:`_HoldVirtualTimeDuringThreads` on this run; returns what takes it off.

    Each open client has its own: the first to see a thread busy holds the clock and
    saves its threshold, the others see it held (``inf``) and leave it alone.
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        return lambda: None  # the real clock: nothing jumps
    hold = _HoldVirtualTimeDuringThreads(clock)
    trio.lowlevel.add_instrument(hold)

    def release() -> None:
        hold.restore()
        trio.lowlevel.remove_instrument(hold)

    return release


class SSETestClient:
    """Drives an ASGI app in-process. Use as ``async with SSETestClient(app) as client``."""

    __test__ = False

    def __init__(
        self,
        app: Any,
        *,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        prefix: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``prefix`` is where the API is mounted (a blueprint's ``url_prefix``): it is
        put before ``/sse/...`` by :meth:`stream`'s default path, :meth:`publish` and
        :meth:`subscribe`. ``headers`` go with every request (say, an
        ``Authorization`` header); a request's own headers win. ``timeout`` is the
        streams' default for the assertion helpers.
        """
        self.app = app
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.headers = _merged(headers)
        self.timeout = timeout
        self._nursery: trio.Nursery | None = None
        self._lifespan_send: trio.MemorySendChannel[dict[str, Any]] | None = None
        self._lifespan_events: trio.MemoryReceiveChannel[dict[str, Any]] | None = None
        self._release_time: Callable[[], None] | None = None

    async def __aenter__(self) -> SSETestClient:
        _refuse_asyncio_only(self.app)
        self._release_time = _hold_virtual_time_during_threads()
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
            self._nursery.cancel_scope.cancel()
            try:
                await self._nursery_manager.__aexit__(None, None, None)
            finally:
                self._release_time()
                self._release_time = None
            raise RuntimeError(f"app startup failed: {reply.get('message')}")
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._nursery is not None and self._lifespan_send is not None and self._lifespan_events is not None
        with trio.CancelScope(shield=True):
            await self._lifespan_send.send({"type": "lifespan.shutdown"})
            with trio.move_on_after(30):
                await self._lifespan_events.receive()
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_manager.__aexit__(*exc_info)
        finally:
            if self._release_time is not None:
                self._release_time()
                self._release_time = None

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
        headers = _merged(self.headers, headers)
        if json is not None:
            body = orjson.dumps(json)
            headers.setdefault("content-type", "application/json")
        payload = body or b""
        if payload:
            headers.setdefault("content-length", str(len(payload)))
        scope = _scope(method, path, query, headers, self.client)
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        done = trio.Event()

        receive = _request_then_disconnect(payload, done)

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

    # -- the API, as a client of it would call it ---------------------------------------

    @property
    def hub(self) -> Any:
        """The running hub behind a trio_sse app (also one that opened its own hub).

        Raises ``LookupError`` for an app that is not (directly) a trio_sse app.
        """
        extensions = getattr(self.app, "extensions", None)
        slot = extensions.get("trio_sse") if isinstance(extensions, dict) else None
        if slot is None:
            raise LookupError("this app is not a trio_sse app made by create_app()")
        return slot.get()

    async def publish(
        self,
        event_type: str,
        data: Any = None,
        project_id: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """``POST /sse/publish`` one event (with ``tags``, if given) and return its id.

        Going through HTTP checks what a real publisher gets (validation, auth, rate
        limits), unlike ``hub.publish``. A refusal fails with ``AssertionError``
        carrying the status and error body; to test refusals, use :meth:`post`.
        """
        body: dict[str, Any] = {"event_type": event_type, "data": data}
        if project_id is not None:
            body["project_id"] = project_id
        if tags is not None:
            body["tags"] = dict(tags)
        reply = await self.post(f"{self.prefix}/sse/publish", json=body, headers=headers)
        if reply.status != 202:
            raise AssertionError(f"publish {event_type!r} answered {reply.status}: {reply.body!r}")
        event_id: str = reply.json()["id"]
        return event_id

    async def publish_many(
        self, events: Iterable[Mapping[str, Any]], *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        """Publish a batch (``{"events": [...]}``, each ``{"event_type", "data", "project_id"?}``); the ids in order."""
        reply = await self.post(f"{self.prefix}/sse/publish", json={"events": list(events)}, headers=headers)
        if reply.status != 202:
            raise AssertionError(f"batch publish answered {reply.status}: {reply.body!r}")
        ids: list[str] = reply.json()["ids"]
        return ids

    async def subscribe(
        self,
        stream: TestStream | str,
        event_types: Iterable[str],
        *,
        mode: str = "replace",
        project_id: Any = _UNSET,
        last_event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """``POST /sse/subscribe`` for ``stream`` (or a connection id); returns the 200 body.

        Leave ``project_id`` out to keep the project filter; ``None`` clears it. The
        stream then receives ``subscription_updated``. Anything but 200 fails with
        ``AssertionError``.
        """
        connection_id = stream.connection_id if isinstance(stream, TestStream) else stream
        body: dict[str, Any] = {"connection_id": connection_id, "event_types": list(event_types), "mode": mode}
        if project_id is not _UNSET:
            body["project_id"] = project_id
        if last_event_id is not None:
            body["last_event_id"] = last_event_id
        reply = await self.post(f"{self.prefix}/sse/subscribe", json=body, headers=headers)
        if reply.status != 200:
            raise AssertionError(f"subscribe answered {reply.status}: {reply.body!r}")
        return reply.json()

    @asynccontextmanager
    async def stream(
        self,
        path: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | str | None = None,
        types: str | Iterable[str] | None = None,
        project: str | None = None,
        last_event_id: str | None = None,
    ) -> AsyncIterator[TestStream]:
        """Open a stream; waits for the response to start. Leaving the block disconnects.

        ``path`` defaults to ``<prefix>/sse/events``. ``types``, ``project`` and
        ``last_event_id`` are shortcuts for the query parameters and the
        ``Last-Event-ID`` header.
        """
        assert self._nursery is not None, "use 'async with SSETestClient(app) as client'"
        path = path or f"{self.prefix}/sse/events"
        headers = _merged(self.headers, headers)
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        extra: dict[str, str] = {}
        if types is not None:
            extra["types"] = types if isinstance(types, str) else ",".join(types)
        if project is not None:
            extra["project"] = project
        if extra:
            joined = urlencode(extra)
            if isinstance(query, str):
                query = f"{query}&{joined}" if query else joined
            else:
                query = {**(query or {}), **extra}
        scope = _scope("GET", path, query, headers, self.client)
        gone = trio.Event()
        stream = TestStream(gone, timeout=self.timeout)
        finished = trio.Event()
        receive = _request_then_disconnect(b"", gone)

        async def run_app() -> None:
            try:
                await self.app(scope, receive, stream._asgi_send)
            except Exception as exc:
                stream.app_error = exc
                raise  # into the client's nursery: the test fails with it, whatever it was waiting for
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


class _ASGIResponseStream(httpx.AsyncByteStream):
    """The body of a response an in-process app is still writing."""

    def __init__(self, chunks: trio.MemoryReceiveChannel[bytes], gone: trio.Event, failure: list[BaseException]):
        self._chunks = chunks
        self._gone = gone
        self._failure = failure

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
        if self._failure:
            raise httpx.ReadError(f"the app failed mid-response: {self._failure[0]!r}")

    async def aclose(self) -> None:
        self._gone.set()  # the app's receive() now answers http.disconnect
        await self._chunks.aclose()  # and its next write fails, like on a closed socket


class ASGIStreamTransport(httpx.AsyncBaseTransport):
    """An httpx transport that streams responses from an in-process ASGI app.

    ``httpx.ASGITransport`` collects the whole body before returning the response,
    so it never returns for an event stream. This one runs each request as a task of
    its own nursery (opened with the ``httpx.AsyncClient`` block; the app's lifespan
    runs too) and hands body chunks over as the app writes them, through a bounded
    channel: a client that stops reading makes the app's writes block, as a full TCP
    window would. Closing the response makes the app see ``http.disconnect``. An app
    that raises after starting its answer looks like a cut connection (``httpx.ReadError``);
    before, like a 500. Everything runs on trio's clock, so ``autojump_clock`` works::

        async with httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url="http://test") as http:
            async with trio_sse.client.connect("http://test", http=http) as source: ...

    Leaving the client's block cancels whatever the app is still running.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 50000), buffer: int = 64) -> None:
        self._runner = SSETestClient(app, client=client)
        self._buffer = buffer

    async def __aenter__(self) -> ASGIStreamTransport:
        await self._runner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        # The block's own exception is not handed to the nursery, which would wrap it in
        # an ExceptionGroup: httpx re-raises it unchanged once this returns.
        await self._runner.__aexit__(None, None, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        nursery = self._runner._nursery
        assert nursery is not None, "use the transport in 'async with httpx.AsyncClient(transport=...)'"
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        scope = _scope(request.method, request.url.path, request.url.query.decode(), None, self._runner.client)
        scope["headers"] = [(k.lower(), v) for k, v in request.headers.raw]
        send_chunk, chunks = trio.open_memory_channel[bytes](self._buffer)
        gone, started = trio.Event(), trio.Event()
        head: dict[str, Any] = {"status": 500, "headers": []}
        failure: list[BaseException] = []
        nursery.start_soon(self._run_app, scope, body, send_chunk, gone, started, head, failure)
        await started.wait()
        stream = _ASGIResponseStream(chunks, gone, failure)
        return httpx.Response(head["status"], headers=head["headers"], stream=stream, request=request)

    async def _run_app(
        self,
        scope: dict[str, Any],
        body: bytes,
        send_chunk: trio.MemorySendChannel[bytes],
        gone: trio.Event,
        started: trio.Event,
        head: dict[str, Any],
        failure: list[BaseException],
    ) -> None:
        receive = _request_then_disconnect(body, gone)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head.update(status=message["status"], headers=list(message.get("headers", [])))
                started.set()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await send_chunk.send(message["body"])  # BrokenResourceError once the client closed
                if not message.get("more_body", False):
                    await send_chunk.aclose()

        async with send_chunk:
            try:
                await self._runner.app(scope, receive, send)
            except Exception as exc:
                failure.append(exc)
            finally:
                started.set()
