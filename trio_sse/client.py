"""A trio EventSource client for trio_sse streams (and any ``text/event-stream``).

::

    async with trio_sse.client.connect("http://127.0.0.1:8000", types=["commit"]) as source:
        async for event in source:
            print(event.type, event.id, event.json())

It reconnects by itself: after the server ends or drops the stream, after an HTTP
429/5xx, after a network error, and when nothing at all (not even a heartbeat
comment) arrives for ``silence_timeout`` seconds. Each reconnection sends
``Last-Event-ID`` so the server replays what was missed, and waits the server's
``retry:`` delay (at least ``min_backoff``), doubled after each failed attempt, never
more than ``max_backoff``, with random jitter (so that clients dropped together do
not come back together): see :func:`trio_sse.core.backoff.reconnect_delay`. A line or
an event longer than ``max_line_bytes`` / ``max_event_bytes`` drops the connection
like a failed attempt, so a server cannot make the client buffer without end.

The client starts no task: all work happens inside ``__anext__``, in the caller's
task. So leaving the ``async with`` block — normally, by an exception or by
cancellation — closes the HTTP response and leaves nothing running. Events are read
from the network only when the caller asks for the next one, so a slow consumer
slows down reading (TCP backpressure) rather than filling an unbounded buffer.

Parsing is :mod:`trio_sse.core.parser` (the WHATWG algorithm); HTTP is httpx. This
module never imports the server side (``runtime``, ``http``).
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import Any, cast

import attrs
import httpx
import orjson
import trio

from .core.backoff import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, reconnect_delay
from .core.parser import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_LINE_BYTES, ParsedEvent, SSELimitError, SSEParser

__all__ = [
    "SYSTEM_EVENTS",
    "Event",
    "EventSource",
    "SSEClientError",
    "SSEConnectionError",
    "SSEHTTPError",
    "SSEProtocolError",
    "connect",
    "endpoint_url",
    "publish",
    "reconnect_delay",
]

log = logging.getLogger("trio_sse.client")

SYSTEM_EVENTS = frozenset({"connected", "subscription_updated", "stream_reset"})
"""Events the server sends by itself, without an ``id:``; they never move the resume point."""

DEFAULT_RETRY = 3.0
"""Seconds to wait before reconnecting until the server sends ``retry:`` (what browsers use)."""

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses worth trying again: the server is busy, restarting or behind a failing proxy.
Every other error status (400, 401, 403, 404, 422, ...) will not change by retrying."""

MAX_ERROR_BODY = 64 * 1024


# -- errors ----------------------------------------------------------------------------


class SSEClientError(Exception):
    """Base class of the errors this client raises."""


class SSEHTTPError(SSEClientError):
    """The server refused the request with an HTTP error that retrying will not fix.

    ``status`` is the HTTP status, ``body`` the decoded JSON body (``None`` if the body
    was not JSON), ``text`` the raw body. trio_sse's errors carry ``error`` (a stable
    code) and ``message``, exposed as attributes of the same names.
    """

    def __init__(self, status: int, body: Any, text: str, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.text = text
        self.headers = dict(headers)
        fields = body if isinstance(body, dict) else {}
        self.error: str | None = fields.get("error")
        self.message: str = fields.get("message") or text.strip()[:200] or httpx.codes.get_reason_phrase(status)
        super().__init__(f"HTTP {status}: {self.error + ': ' if self.error else ''}{self.message}")


class SSEProtocolError(SSEClientError):
    """A successful answer that is not an event stream (wrong URL, or not an SSE server),
    or a stream that broke the client's limits (``max_line_bytes``, ``max_event_bytes``).

    The first is raised; the second drops the connection and counts as a failed
    attempt (it is the ``__cause__`` of the internal retry, and so of
    :class:`SSEConnectionError` if ``max_attempts`` runs out).
    """


class SSEConnectionError(SSEClientError):
    """``max_attempts`` consecutive connection attempts failed; ``__cause__`` is the last failure."""


# -- events ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Event:
    """One event as received. ``data`` is the raw text; :meth:`json` decodes it."""

    type: str
    data: str
    id: str | None = None
    """The event's ``id:`` (``None`` for system events and events sent without one)."""

    @property
    def is_system(self) -> bool:
        """``connected``, ``subscription_updated`` or ``stream_reset``."""
        return self.type in SYSTEM_EVENTS

    @property
    def is_reset(self) -> bool:
        """A ``stream_reset``: the server could not replay from our last id, events may be missed."""
        return self.type == "stream_reset"

    def json(self) -> Any:
        return orjson.loads(self.data)


# -- small pure helpers ----------------------------------------------------------------


def endpoint_url(url: str | httpx.URL, path: str = "/sse/events") -> httpx.URL:
    """The URL of ``path`` given a server base URL or the URL of any ``/sse/...`` endpoint.

    ``http://h:8000``, ``http://h:8000/`` and ``http://h:8000/sse/events`` all give
    ``http://h:8000/sse/events``; a prefix (``http://h/api``) is kept: ``http://h/api/sse/events``.
    The query string of ``url`` is kept.
    """
    parsed = httpx.URL(url)
    base = parsed.path.rstrip("/")
    head, sep, _ = base.rpartition("/sse/")
    if sep and "/" not in base[len(head) + len(sep) :]:
        base = head
    return parsed.copy_with(path=base + path)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (only the delay-seconds form; trio_sse sends no dates)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _types_param(types: str | Iterable[str] | None) -> str | None:
    if types is None:
        return None
    if isinstance(types, str):
        return types
    return ",".join(types)


async def _error_from(response: httpx.Response) -> SSEHTTPError:
    """Read (at most 64 KiB of) an error answer and turn it into :class:`SSEHTTPError`."""
    raw = b""
    async with aclosing(response.aiter_bytes()) as chunks:  # type: ignore[type-var]  # an async generator
        async for chunk in chunks:
            raw += chunk
            if len(raw) >= MAX_ERROR_BODY:
                break
    text = raw.decode("utf-8", errors="replace")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    return SSEHTTPError(response.status_code, body, text, response.headers)


class _Retry(Exception):
    """A connection attempt or stream failed in a way worth retrying (internal)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, delivered: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.delivered = delivered  # the stream had delivered an event or comment: the server was healthy


def redacted(url: httpx.URL) -> str:
    """``url`` fit for a log line or an error message: an ``access_token`` in the query
    and a password in the user info are replaced, so no credential is ever logged."""
    if "access_token" in url.params:
        url = url.copy_set_param("access_token", "REDACTED")
    if url.password:
        url = url.copy_with(password="REDACTED")
    return str(url)


# -- the event source ------------------------------------------------------------------


class EventSource:
    """A stream of :class:`Event` that reconnects by itself. Get one from :func:`connect`.

    Attributes kept up to date as events are returned:

    - ``last_event_id``: id of the last event returned that had one (sent as
      ``Last-Event-ID`` on every reconnection). A ``stream_reset`` does not clear it:
      reconnecting with it again makes the server say again that events may have been missed.
      Before the first such event it is the stream's ``Last-Event-ID`` response header
      (trio_sse and Mercure send it: the newest event when the stream opened), so a stream
      that drops before its first event still resumes with nothing missed.
    - ``connection_id``: the server's id for the current stream (from the
      ``X-SSE-Connection-Id`` header, then the ``connected`` event); use it with
      ``POST /sse/subscribe``. ``None`` while disconnected.
    - ``retry``: the server's reconnection delay in seconds (its ``retry:``), before the
      client's floor, cap and backoff.
    - ``connections``: how many streams were opened so far (1 + reconnections).

    Every event the server sends is returned, system events included (``connected``
    after each (re)connection, ``subscription_updated``, ``stream_reset``); see
    :attr:`Event.is_system`. Comments (heartbeats) are not returned.

    One task at a time may iterate. After :meth:`aclose` (or leaving the ``connect``
    block) iteration ends: ``__anext__`` raises ``StopAsyncIteration``, also in a task
    that was waiting for an event when another task closed the source.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        last_event_id: str | None,
        silence_timeout: float | None,
        max_backoff: float,
        max_attempts: int | None,
        connect_timeout: float,
        rng: random.Random,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.url = url
        self._shown_url = redacted(url)  # for log lines and messages: no token in them
        self.last_event_id = last_event_id or None
        self.connection_id: str | None = None
        self.retry = DEFAULT_RETRY
        self.connections = 0
        self.response: httpx.Response | None = None
        self._http = http
        self._headers = dict(headers)
        self._silence = math.inf if silence_timeout is None else silence_timeout
        self._max_backoff = max_backoff
        self._min_backoff = min_backoff
        self._limits = {"max_line_bytes": max_line_bytes, "max_event_bytes": max_event_bytes}
        self._max_attempts = max_attempts
        self._timeout = httpx.Timeout(connect_timeout, read=None)
        self._rng = rng
        self._chunks: AsyncGenerator[bytes, None] | None = None
        self._parser = SSEParser(**self._limits)
        self._pending: deque[Event] = deque()
        self._failures = 0
        self._delivered = False  # the current stream gave an event or a comment
        self._delay = 0.0
        self._closed = False
        self._ended = False  # the server answered 204: stop, as EventSource does
        self._interrupted = False
        self._wait_scope: trio.CancelScope | None = None
        self._waiting = trio.Event()
        self._waiting.set()

    # -- iteration ------------------------------------------------------------------

    def __aiter__(self) -> EventSource:
        return self

    async def __anext__(self) -> Event:
        """The next event; reconnects as often as needed to get it.

        Raises :class:`SSEHTTPError` when a (re)connection is refused for good (401,
        403, 404, 422, ...), :class:`SSEProtocolError` when the answer is not an event
        stream, :class:`SSEConnectionError` after ``max_attempts`` failed attempts in a
        row. Cancelling it loses nothing, but a cancel that hits a network read leaves
        the HTTP response unusable (httpx cannot resume a half-done read), so the next
        call reconnects at once with ``Last-Event-ID``: prefer one long ``async for`` to
        polling with short timeouts.
        """
        while not self._pending:
            if self._closed or self._ended:
                raise StopAsyncIteration
            await self._wait()
        return self._take(self._pending.popleft())

    async def _wait(self) -> None:
        """``_fill`` under a scope that :meth:`aclose` cancels from another task."""
        self._waiting = trio.Event()
        try:
            with trio.CancelScope() as self._wait_scope:
                await self._fill()
        finally:
            self._wait_scope = None
            self._waiting.set()

    async def _fill(self) -> None:
        """Read until at least one event is pending, reconnecting on any retryable failure."""
        while not self._pending and not self._ended:
            if self._interrupted:  # a cancelled read killed the response's iterator
                await self._drop()
                self._delay = 0.0
                log.info("stream to %s: a read was cancelled; reconnecting at once", self._shown_url)
            try:
                if self._chunks is None:
                    await self._reconnect()
                    continue
                await self._read_chunk()
            except _Retry as failure:
                await self._drop()
                self._schedule(failure)

    def _take(self, event: Event) -> Event:
        if event.id is not None:
            self.last_event_id = event.id or None  # an empty id: no Last-Event-ID any more (WHATWG)
        if event.type == "connected":
            self._note_connected(event)
        return event

    def _note_connected(self, event: Event) -> None:
        try:
            data = event.json()
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict) and isinstance(data.get("connection_id"), str):
            self.connection_id = data["connection_id"]

    # -- reading --------------------------------------------------------------------

    async def _read_chunk(self) -> None:
        """Wait for the next chunk under the silence window; parse it into pending events.

        The window is one ``move_on_after`` per wait, and the client only waits when
        it has handed over every parsed event, so the time the caller spends on an
        event never counts as silence.
        """
        assert self._chunks is not None
        with trio.move_on_after(self._silence) as silence:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise _Retry("the server ended the stream", delivered=self._delivered) from None
            except httpx.RequestError as exc:
                raise _Retry(f"the connection was lost ({exc!r})", delivered=self._delivered) from None
            except trio.Cancelled:
                self._interrupted = True
                raise
        if silence.cancelled_caught:
            raise _Retry(f"nothing received for {self._silence:g} s", delivered=self._delivered)
        self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        # A stream that gave a whole event or comment resets the backoff; bytes alone do
        # not (an endless line is bytes too), and a broken limit counts as a failure.
        broken: SSELimitError | None = None
        try:
            items = self._parser.feed(chunk)
        except SSELimitError as exc:
            items, broken = exc.items, exc
        self._delivered = self._delivered or bool(items)
        for item in items:
            if isinstance(item, ParsedEvent):
                self._pending.append(Event(item.event, item.data, item.id))
        if self._parser.retry is not None:
            self.retry = self._parser.retry / 1000.0
        if broken is not None:
            raise _Retry(f"protocol error ({broken})") from SSEProtocolError(f"{self._shown_url}: {broken}")

    # -- connecting -----------------------------------------------------------------

    def _schedule(self, failure: _Retry) -> None:
        if failure.delivered:
            self._failures = 0  # the server was talking: back to the plain retry delay
        else:
            self._failures += 1
            if self._max_attempts is not None and self._failures >= self._max_attempts:
                raise SSEConnectionError(f"gave up after {self._failures} failed attempts") from failure
        delay = reconnect_delay(
            self._failures,
            self.retry,
            self._max_backoff,
            self._rng.random(),
            min_backoff=self._min_backoff,
            retry_after=failure.retry_after,
        )
        self._delay = delay
        log.info("stream to %s: %s; reconnecting in %.1f s", self._shown_url, failure.reason, delay)

    async def _start(self) -> None:
        """Open the first stream, retrying like any reconnection (the first try is immediate)."""
        while self._chunks is None and not self._ended:
            try:
                await self._reconnect()
            except _Retry as failure:
                self._schedule(failure)

    async def _reconnect(self) -> None:
        """Wait the scheduled delay, then open a stream (``_Retry`` if that fails)."""
        await trio.sleep(self._delay)
        await self._open()

    def _request(self) -> httpx.Request:
        headers = dict(self._headers)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return self._http.build_request("GET", self.url, headers=headers, timeout=self._timeout)

    async def _open(self) -> None:
        """Send the request and check the answer; on success the stream is ready to read."""
        try:
            response = await self._http.send(self._request(), stream=True)
        except httpx.RequestError as exc:
            raise _Retry(f"cannot connect ({exc!r})") from None
        try:
            await self._check(response)
        except BaseException:
            with trio.CancelScope(shield=True):
                await response.aclose()
            raise
        if response.status_code == 204:  # "stop reconnecting" (WHATWG): iteration ends
            self._ended = True
            await response.aclose()
            return
        self.response = response
        self.connection_id = response.headers.get("x-sse-connection-id")
        if self.last_event_id is None:
            # Only with no id of our own: with one, the server is replaying up to the
            # header's id, and a drop mid-replay must resume from what was received.
            self.last_event_id = response.headers.get("last-event-id") or None
        self.connections += 1
        self._parser = SSEParser(**self._limits)
        self._delivered = False
        # httpx's iterators are async generators: keep it typed as one so it can be aclose()d.
        self._chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())

    async def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 204:
            return
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Retry(f"HTTP {status}", retry_after=retry_after)
        if status != 200:
            raise await _error_from(response)
        content_type = response.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "text/event-stream":
            what = content_type or "no content type"
            raise SSEProtocolError(f"{self._shown_url} answered {what}, not text/event-stream")

    async def _drop(self) -> None:
        """Close the current response (if any); the next read reconnects."""
        response, chunks = self.response, self._chunks
        self.response, self._chunks, self.connection_id = None, None, None
        self._interrupted = False
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            if chunks is not None:
                await chunks.aclose()
            if response is not None:
                await response.aclose()

    # -- closing --------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the stream. Idempotent; ends iteration in every task (see the class doc)."""
        self._closed = True
        if self._wait_scope is not None:
            # Another task is reading: the response's iterator cannot be closed under it,
            # so stop the reader first.
            self._wait_scope.cancel()
            with trio.CancelScope(shield=True):
                await self._waiting.wait()
        await self._drop()


@asynccontextmanager
async def connect(
    url: str | httpx.URL,
    *,
    types: str | Iterable[str] | None = None,
    project: str | None = None,
    token: str | None = None,
    last_event_id: str | None = None,
    silence_timeout: float | None = 90.0,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    min_backoff: float = DEFAULT_MIN_BACKOFF,
    max_attempts: int | None = None,
    connect_timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    http: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
    max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
) -> AsyncIterator[EventSource]:
    """Open an :class:`EventSource` on a trio_sse server for the duration of the block.

    ``url`` is the server's base URL (``http://127.0.0.1:8000``) or the full
    ``/sse/events`` URL. ``types`` (a list or a comma-separated string) and
    ``project`` are the stream's filters; ``token`` is sent as ``Authorization:
    Bearer``; ``last_event_id`` resumes after that id from the first connection on.

    ``silence_timeout`` (seconds, ``None`` to disable): reconnect when nothing — no
    event, no heartbeat comment — arrives for that long. The default, 90 s, is three
    of the server's default 30 s heartbeat intervals. ``min_backoff`` and
    ``max_backoff`` (seconds) bound the delay before a reconnection, whatever the
    server's ``retry:`` (see :func:`~trio_sse.core.backoff.reconnect_delay`);
    ``max_attempts`` (default: never) gives up with :class:`SSEConnectionError` after
    that many failed attempts in a row. ``max_line_bytes`` and ``max_event_bytes``
    (default 1 MiB each, ``None``: no limit) bound what one line and one event's data
    may hold: past them the connection is dropped as a failed attempt
    (:class:`SSEProtocolError` is its cause) and the client reconnects.

    The first connection is made on entering the block, so a refusal
    (:class:`SSEHTTPError`, e.g. 401, 403, 422) or a non-SSE answer
    (:class:`SSEProtocolError`) is raised here; network errors and 429/5xx answers
    are retried as described in the module doc.

    ``http`` is an ``httpx.AsyncClient`` to use (it is not closed here), e.g. one
    sharing a connection pool or with custom TLS settings; ``transport`` makes a
    private client on that transport instead (for tests, see
    :class:`trio_sse.testing.ASGIStreamTransport`). Leaving the block closes the
    response and the private client; nothing started here keeps running.
    """
    params: dict[str, str] = {}
    if (joined := _types_param(types)) is not None:
        params["types"] = joined
    if project is not None:
        params["project"] = project
    request_headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    if token is not None:
        request_headers["Authorization"] = f"Bearer {token}"
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        source = EventSource(
            http,
            endpoint_url(url).copy_merge_params(params),
            headers=request_headers,
            last_event_id=last_event_id,
            silence_timeout=silence_timeout,
            max_backoff=max_backoff,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            rng=rng or random.Random(),
            min_backoff=min_backoff,
            max_line_bytes=max_line_bytes,
            max_event_bytes=max_event_bytes,
        )
        stack.push_async_callback(source.aclose)
        await source._start()
        yield source


async def publish(
    url: str | httpx.URL,
    event_type: str,
    data: Any,
    *,
    project: str | None = None,
    token: str | None = None,
    http: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """``POST /sse/publish`` one event and return its id.

    ``url`` is the server base URL or any ``/sse/...`` URL of it. Raises
    :class:`SSEHTTPError` with the server's JSON error for any refusal (400, 401,
    403, 413, 422, 429, ...) and ``httpx.TransportError`` if the server cannot be reached.
    It does not retry: a publish that may have been stored must not be sent twice blindly.
    httpx's default 5 s timeouts apply (or those of ``http``); wrap it in ``trio.fail_after``
    for an overall deadline.
    """
    body: dict[str, Any] = {"event_type": event_type, "data": data}
    if project is not None:
        body["project_id"] = project
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        response = await http.post(endpoint_url(url, "/sse/publish"), content=orjson.dumps(body), headers=headers)
        if response.status_code != 202:
            raise await _error_from(response)
        event_id: str = response.json()["id"]
        return event_id
