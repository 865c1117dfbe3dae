"""A trio EventSource client for trio_sse streams (and any ``text/event-stream``).

::

    async with trio_sse.client.connect("http://127.0.0.1:8000", types=["commit"]) as source:
        async for event in source:
            print(event.type, event.id, event.json())

:func:`connect` takes the base URL of a trio_sse hub (it adds ``/sse/events`` and the
filters); :func:`open_url` opens the exact URL of any event stream, with any method
and body (SSE over ``POST``, as MCP servers and LLM APIs stream).

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

Parsing is :mod:`trio_sse.core.parser` (the WHATWG algorithm); HTTP is httpx, with
redirects followed here (a bounded number, so that a reconnection goes back to the
URL it was given and a redirect with no ``Location`` is an error, not a loop). This
module never imports the server side (``runtime``, ``http``).

Behaviour is checked against LaunchDarkly's SSE client contract tests
(``github.com/launchdarkly/sse-contract-tests``): ``tests/client/test_contract.py``
ports them and names each one.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs
import httpx
import orjson
import trio

from .core.backoff import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, reconnect_delay
from .core.parser import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    Comment,
    ParsedEvent,
    SSELimitError,
    SSEParser,
)

__all__ = [
    "SYSTEM_EVENTS",
    "Event",
    "EventSource",
    "PublishOutcomeUnknown",
    "Publisher",
    "PublisherClosed",
    "SSEClientError",
    "SSEConnectionError",
    "SSEHTTPError",
    "SSEProtocolError",
    "SSEStreamError",
    "State",
    "StateChange",
    "SyncPublisher",
    "connect",
    "endpoint_url",
    "open_publisher",
    "open_url",
    "publish",
    "reconnect_delay",
    "tag_params",
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

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
"""Redirects followed per connection attempt (browsers follow 20; a stream needs one or two)."""


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
    """An answer that is not an event stream: a ``200`` of another content type (wrong
    URL, or not an SSE server), a redirect with no ``Location`` or to a non-HTTP URL, or
    more than ``max_redirects`` redirects in a row. Retrying would get the same answer.

    Also a stream that broke the client's limits (``max_line_bytes``,
    ``max_event_bytes``): that one is not raised; it drops the connection and counts as
    a failed attempt (it is the ``__cause__`` of the retried :class:`SSEStreamError`,
    and so of :class:`SSEConnectionError` if ``max_attempts`` runs out).
    """


class SSEStreamError(SSEClientError):
    """The stream broke or could not be opened, and the client will try again.

    Never raised out of the iteration: it is what the ``on_state`` hook gets as the
    ``error`` of an ``ERROR`` change (and the ``__cause__`` of :class:`SSEConnectionError`).
    ``__cause__`` is the underlying ``httpx`` error if there was one; ``status`` is the
    HTTP status of a refused attempt (429, 503, ...), else ``None``.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SSEConnectionError(SSEClientError):
    """``max_attempts`` consecutive connection attempts failed; ``__cause__`` is the last failure."""


# -- states ----------------------------------------------------------------------------


class State(enum.Enum):
    """Where an :class:`EventSource` is, as told to its ``on_state`` hook."""

    CONNECTING = "connecting"
    """A connection attempt starts (the first one, after a failure, or after :meth:`EventSource.restart`)."""
    OPEN = "open"
    """The server answered ``200 text/event-stream``: events can flow."""
    ERROR = "error"
    """An attempt or a stream failed; ``error`` says why, ``delay`` when the next attempt is
    (``None`` when the failure is final: ``CLOSED`` follows)."""
    CLOSED = "closed"
    """For good: :meth:`EventSource.aclose` or the end of the ``connect`` block, a ``204``,
    a refusal that retrying will not fix, or ``max_attempts`` failures in a row."""


@attrs.frozen(slots=True)
class StateChange:
    """What the ``on_state`` hook is called with."""

    state: State
    error: BaseException | None = None
    """With ``ERROR``: an :class:`SSEStreamError` (will retry) or the :class:`SSEClientError` that is raised."""
    delay: float | None = None
    """With a retried ``ERROR``: seconds until the next attempt."""


# -- events ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Event:
    """One event as received. ``data`` is the raw text; :meth:`json` decodes it."""

    type: str
    data: str
    id: str | None = None
    """The event's ``id:`` (``None`` for system events and events sent without one)."""
    last_event_id: str | None = attrs.field(default=None, eq=False)
    """The stream's last event id once this event is received (WHATWG's ``lastEventId``):
    its own ``id:`` or, without one, the last one before it (an ``id:``-only block
    included); ``None`` when there is none. It is what a reconnection would send. Not
    compared by ``==``: ``Event(type, data, id)`` still equals the event received."""

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


def tag_params(tags: Mapping[str, str | Iterable[str]] | None) -> dict[str, str]:
    """A tag filter as the stream's query parameters: ``{"env": ["prod", "dev"]}`` gives
    ``{"tag.env": "prod,dev"}`` (a single string is one value).

    Raises ``ValueError`` for a value with a comma (the query separates values with
    commas, so it would turn into two) and for a name with no values; the server judges
    the rest (400 for a malformed name or value).
    """
    params: dict[str, str] = {}
    for name, given in (tags or {}).items():
        values = [given] if isinstance(given, str) else list(given)
        if not values:
            raise ValueError(f"tags[{name!r}] is empty: leave the name out to accept every value")
        for value in values:
            if "," in value:
                raise ValueError(f"tags[{name!r}]: {value!r} holds a comma, which a tag filter value cannot")
        params[f"tag.{name}"] = ",".join(values)
    return params


def _check_rewind(rewind: int | None) -> int | None:
    if rewind is not None and (not isinstance(rewind, int) or isinstance(rewind, bool) or rewind < 0):
        raise ValueError(f"rewind must be a whole number >= 0, got {rewind!r}")
    return rewind


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


class _Retry(SSEStreamError):
    """A connection attempt or stream failed in a way worth retrying (raised internally)."""

    def __init__(
        self, reason: str, *, retry_after: float | None = None, delivered: bool = False, status: int | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after
        self.delivered = delivered  # the stream had delivered an event or comment: the server was healthy


def _token_out_of_query(
    url: httpx.URL, token: str | None, headers: Mapping[str, str] | None
) -> tuple[httpx.URL, str | None]:
    """``url`` without its ``access_token`` query parameter, and the token to send as
    ``Authorization: Bearer`` instead.

    httpx logs every request's full URL at INFO (logger ``httpx``), so a token left in
    the query ends up in the embedding app's logs. trio_sse reads the header first
    (``trio_sse.http.auth``; RFC 6750 makes every bearer server accept it), so the
    header carries the same credential. A ``token`` or an ``Authorization`` header
    already given wins, and the query token is dropped. A URL with user info keeps
    its token: httpx sends the user info as ``Authorization: Basic``, which would
    replace the bearer header.
    """
    if "access_token" not in url.params or url.userinfo:
        return url, token
    given = token is not None or any(name.lower() == "authorization" for name in headers or {})
    query_token = url.params["access_token"]
    return url.copy_remove_param("access_token"), token if given or not query_token else query_token


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
    - ``retry``: the server's reconnection delay in seconds (its ``retry:``;
      ``initial_delay`` until it sends one), before the client's floor, cap and backoff.
    - ``connections``: how many streams were opened so far (1 + reconnections).
    - ``state``: a :class:`State`: ``CONNECTING``, ``OPEN`` or ``CLOSED`` (``on_state``
      hears every change, errors included).

    ``rewind`` (from :func:`connect`) is added to the URL (``rewind=N``) until a stream
    has opened and only while there is no ``last_event_id``: the first stream starts
    with the newest N events, a reconnection resumes with ``Last-Event-ID`` and never
    asks for a rewind again.

    The resume point moves as WHATWG says: with each event's ``id:``, and with an
    ``id:``-only block (no ``data:``, so no event), once the events before it are
    returned. A block cut by a lost connection moves nothing.

    Every event the server sends is returned, system events included (``connected``
    after each (re)connection, ``subscription_updated``, ``stream_reset``); see
    :attr:`Event.is_system`. Comments (heartbeats) are not returned; ``on_comment``
    gets them, in stream order with the events.

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
        method: str = "GET",
        body: bytes | None = None,
        initial_delay: float = DEFAULT_RETRY,
        max_redirects: int = MAX_REDIRECTS,
        on_comment: Callable[[str], object] | None = None,
        on_state: Callable[[StateChange], object] | None = None,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
        rewind: int | None = None,
    ) -> None:
        self.url = url
        self._rewind = _check_rewind(rewind)
        self._shown_url = redacted(url)  # for log lines and messages: no token in them
        self.last_event_id = last_event_id or None
        self.connection_id: str | None = None
        self.retry = initial_delay
        self.connections = 0
        self.response: httpx.Response | None = None
        self.state = State.CONNECTING
        self._http = http
        self._headers = httpx.Headers(headers)
        self._method = method.upper()
        self._body = body
        self._max_redirects = max_redirects
        self._on_comment = on_comment
        self._on_state = on_state
        self._restarting = False
        self._queued_id = ""  # the resume point once every pending event is returned
        self._silence = math.inf if silence_timeout is None else silence_timeout
        self._max_backoff = max_backoff
        self._min_backoff = min_backoff
        self._limits = {"max_line_bytes": max_line_bytes, "max_event_bytes": max_event_bytes}
        self._max_attempts = max_attempts
        self._timeout = httpx.Timeout(connect_timeout, read=None)
        self._rng = rng
        self._chunks: AsyncGenerator[bytes, None] | None = None
        self._parser = SSEParser(**self._limits)
        self._pending: deque[Event | Comment | _ResumePoint] = deque()
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
        while True:
            while not self._pending:
                if self._closed or self._ended:
                    raise StopAsyncIteration
                await self._wait()
            item = self._pending.popleft()
            if isinstance(item, Event):
                return self._take(item)
            if isinstance(item, Comment):
                assert self._on_comment is not None  # only queued for a hook
                self._on_comment(item.text)
            else:
                self.last_event_id = item.id or None

    async def _wait(self) -> None:
        """``_fill`` under a scope that :meth:`aclose` and :meth:`restart` cancel from another task.

        A refusal that retrying will not fix closes the source (WHATWG's "fail the
        connection"): the hook hears ``ERROR`` then ``CLOSED``, and iteration ends after
        the exception.
        """
        self._waiting = trio.Event()
        try:
            with trio.CancelScope() as self._wait_scope:
                await self._fill()
        except SSEClientError as exc:
            self._fail(exc)
            raise
        finally:
            self._wait_scope = None
            self._waiting.set()

    async def _fill(self) -> None:
        """Read until at least one event is pending, reconnecting on any retryable failure."""
        while not self._pending and not self._ended:
            if self._interrupted or self._restarting:  # a cancelled read killed the response's iterator
                why = "restart() was called" if self._restarting else "a read was cancelled"
                await self._drop()
                self._delay = 0.0
                log.info("stream to %s: %s; reconnecting at once", self._shown_url, why)
            try:
                if self._chunks is None:
                    await self._reconnect()
                    continue
                await self._read_chunk()
            except _Retry as failure:
                await self._drop()
                self._retry_later(failure)

    def _retry_later(self, failure: _Retry) -> None:
        """Schedule the next attempt and tell the hook (``SSEConnectionError`` if giving up)."""
        self.state = State.CONNECTING
        self._schedule(failure)
        self._notify(State.ERROR, failure, self._delay)

    def _fail(self, error: SSEClientError) -> None:
        """A final failure: the source is closed, the hook hears ``ERROR`` then ``CLOSED``."""
        if self._closed:
            return
        self._closed = True
        self._notify(State.ERROR, error)
        self._set_closed()

    def _notify(self, state: State, error: BaseException | None = None, delay: float | None = None) -> None:
        if state is not State.ERROR:
            self.state = state
        if self._on_state is not None:
            self._on_state(StateChange(state, error, delay))

    def _set_closed(self) -> None:
        if self.state is not State.CLOSED:
            self._notify(State.CLOSED)

    def _take(self, event: Event) -> Event:
        self.last_event_id = event.last_event_id  # an empty id: no Last-Event-ID any more (WHATWG)
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
                raise _Retry(f"the connection was lost ({exc!r})", delivered=self._delivered) from exc
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
        self._queue(items)
        if self._parser.retry is not None:
            self.retry = self._parser.retry / 1000.0
        if broken is not None:
            raise _Retry(f"protocol error ({broken})") from SSEProtocolError(f"{self._shown_url}: {broken}")

    def _queue(self, items: Iterable[ParsedEvent | Comment]) -> None:
        """Queue parsed events (and comments, for ``on_comment``) in stream order.

        Each event carries the resume point it brings (the parser's last event id, which
        ``_open`` seeds with ours). An ``id:``-only block dispatches no event but still
        moves the point (WHATWG): the parser's ``dispatched_last_event_id`` then differs
        from the last queued event's, and a marker queued after the events applies it
        once they are returned. Only dispatched blocks count, so a block cut by a lost
        connection moves nothing.
        """
        for item in items:
            if isinstance(item, ParsedEvent):
                resume = item.last_event_id or None
                self._pending.append(Event(item.type, item.data, item.id, resume))
                self._queued_id = item.last_event_id
            elif self._on_comment is not None:
                self._pending.append(item)
        dispatched = self._parser.dispatched_last_event_id
        if dispatched != self._queued_id:
            self._pending.append(_ResumePoint(dispatched))
            self._queued_id = dispatched

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
        try:
            while self._chunks is None and not self._ended:
                try:
                    await self._reconnect()
                except _Retry as failure:
                    self._retry_later(failure)
        except SSEClientError as exc:
            self._fail(exc)
            raise

    async def _reconnect(self) -> None:
        """Wait the scheduled delay, then open a stream (``_Retry`` if that fails)."""
        await trio.sleep(self._delay)
        await self._open()

    def _request(self) -> httpx.Request:
        """The request of every attempt: same method, URL, headers and body each time
        (plus ``rewind`` before the first stream opens, see the class doc)."""
        headers = httpx.Headers(self._headers)
        url = self.url
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        elif self._rewind is not None and self.connections == 0:
            url = url.copy_set_param("rewind", str(self._rewind))
        return self._http.build_request(self._method, url, headers=headers, content=self._body, timeout=self._timeout)

    def _redirect(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
        """The request that follows a 3xx ``response`` (as fetch and httpx do it).

        307 and 308 keep the method and body; 303, and 301/302 after a ``POST``, turn
        into a body-less ``GET``. ``Authorization`` is not sent to another origin.
        """
        location = response.headers.get("location", "").strip()
        status = response.status_code
        if not location:
            raise SSEProtocolError(f"{redacted(request.url)} answered {status} with no Location to go to")
        try:
            url = request.url.join(location)
        except httpx.InvalidURL as exc:
            raise SSEProtocolError(f"{redacted(request.url)} answered {status} to a bad Location") from exc
        if url.scheme not in ("http", "https"):
            raise SSEProtocolError(f"{redacted(request.url)} answered {status} to a non-HTTP URL")
        method, content = request.method, self._body
        headers = httpx.Headers(request.headers)
        for name in ("host", "cookie", "content-length", "transfer-encoding"):
            headers.pop(name, None)  # set again for the new request (cookies from the client's jar)
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method, content = "GET", None
            headers.pop("content-type", None)
        if (url.scheme, url.host, url.port) != (request.url.scheme, request.url.host, request.url.port):
            headers.pop("authorization", None)
        return self._http.build_request(method, url, headers=headers, content=content, timeout=self._timeout)

    async def _send(self) -> httpx.Response:
        """Send the request, following up to ``max_redirects`` redirects."""
        request = self._request()
        for _ in range(self._max_redirects + 1):
            response = await self._http.send(request, stream=True, follow_redirects=False)
            if response.status_code not in REDIRECT_STATUSES:
                return response
            with trio.CancelScope(shield=True):
                await response.aclose()
            request = self._redirect(request, response)
        raise SSEProtocolError(f"{self._shown_url}: more than {self._max_redirects} redirects")

    async def _open(self) -> None:
        """Send the request and check the answer; on success the stream is ready to read."""
        self._notify(State.CONNECTING)
        try:
            response = await self._send()
        except httpx.RequestError as exc:
            raise _Retry(f"cannot connect ({exc!r})") from exc
        try:
            await self._check(response)
        except BaseException:
            with trio.CancelScope(shield=True):
                await response.aclose()
            raise
        if response.status_code == 204:  # "stop reconnecting" (WHATWG): iteration ends
            self._ended = True
            await response.aclose()
            self._set_closed()
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
        # The last event id belongs to the source, not to one connection (WHATWG): the
        # new parser starts from ours, so an event without an id keeps it.
        self._queued_id = self._parser.last_event_id = self._parser.dispatched_last_event_id = self.last_event_id or ""
        # httpx's iterators are async generators: keep it typed as one so it can be aclose()d.
        self._chunks = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
        self._notify(State.OPEN)

    async def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 204:
            return
        if status in RETRYABLE_STATUSES:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Retry(f"HTTP {status}", retry_after=retry_after, status=status)
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
        self._interrupted = self._restarting = False
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            if chunks is not None:
                await chunks.aclose()
            if response is not None:
                await response.aclose()

    # -- restarting and closing -----------------------------------------------------

    def restart(self) -> None:
        """Drop the current connection and reconnect at once, with ``Last-Event-ID``.

        For a stream that looks stale, or to pick up new credentials in ``headers``
        (they are read on each attempt). Events already received on the old
        connection are still returned first, so the resume point is exact; a wait for
        the next attempt's delay is cut short. Callable from any task, also while
        another one waits in ``async for``; it does nothing once the source is closed.
        """
        if self._closed or self._ended:
            return
        self._restarting = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # the reader's wait ends, and its next one reconnects

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
        self._set_closed()


@attrs.frozen(slots=True)
class _ResumePoint:
    """Queued after the events before an ``id:``-only block: the resume point it sets."""

    id: str


@asynccontextmanager
async def connect(
    url: str | httpx.URL,
    *,
    types: str | Iterable[str] | None = None,
    project: str | None = None,
    tags: Mapping[str, str | Iterable[str]] | None = None,
    rewind: int | None = None,
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
    initial_delay: float = DEFAULT_RETRY,
    max_redirects: int = MAX_REDIRECTS,
    on_comment: Callable[[str], object] | None = None,
    on_state: Callable[[StateChange], object] | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
    max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
) -> AsyncIterator[EventSource]:
    """Open an :class:`EventSource` on a trio_sse server for the duration of the block.

    ``url`` is the server's base URL (``http://127.0.0.1:8000``) or the full
    ``/sse/events`` URL (see :func:`endpoint_url`; :func:`open_url` opens any URL as
    it is). ``types`` (a list or a comma-separated string), ``project`` and ``tags``
    (``{"env": ["prod", "staging"]}``: for every name given, the event's tag must be one
    of the values; see :func:`tag_params`) are the stream's filters; ``token`` is sent as
    ``Authorization: Bearer``, and so is an ``access_token`` in ``url``'s query (moved out
    of the URL, which httpx logs); ``last_event_id`` resumes after that id from the first
    connection on. ``rewind=N`` starts the first stream with the newest N events its
    filters match (at most the server's ``max_rewind``, else :class:`SSEHTTPError` 400);
    it is sent until a stream opens and never with a last event id, so a reconnection
    resumes and does not rewind. With ``last_event_id`` it is not sent at all.

    ``silence_timeout`` (seconds, ``None`` to disable): reconnect when nothing — no
    event, no heartbeat comment — arrives for that long. The default, 90 s, is three
    of the server's default 30 s heartbeat intervals. ``initial_delay`` is the
    reconnection delay until the server sends ``retry:``. ``min_backoff`` and
    ``max_backoff`` (seconds) bound the delay before a reconnection, whatever the
    server's ``retry:`` (see :func:`~trio_sse.core.backoff.reconnect_delay`);
    ``max_attempts`` (default: never) gives up with :class:`SSEConnectionError` after
    that many failed attempts in a row. ``max_redirects`` bounds the redirects followed
    per attempt. ``max_line_bytes`` and ``max_event_bytes`` (default 1 MiB each,
    ``None``: no limit) bound what one line and one event's data may hold: past them the
    connection is dropped as a failed attempt (:class:`SSEProtocolError` is its cause)
    and the client reconnects.

    ``on_comment(text)`` is called with each comment line (without its ``:``), in
    stream order with the events; ``on_state(change)`` with each :class:`StateChange`
    (connecting, open, error with its cause, closed). Both run in the iterating task,
    while it waits in ``async for``; an exception they raise comes out of it.

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
    params.update(tag_params(tags))
    _check_rewind(rewind)
    target, token = _token_out_of_query(endpoint_url(url).copy_merge_params(params), token, headers)
    async with open_url(
        target,
        token=token,
        last_event_id=last_event_id,
        silence_timeout=silence_timeout,
        max_backoff=max_backoff,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        headers=headers,
        http=http,
        transport=transport,
        rng=rng,
        initial_delay=initial_delay,
        max_redirects=max_redirects,
        on_comment=on_comment,
        on_state=on_state,
        min_backoff=min_backoff,
        max_line_bytes=max_line_bytes,
        max_event_bytes=max_event_bytes,
        rewind=rewind,
    ) as source:
        yield source


@asynccontextmanager
async def open_url(
    url: str | httpx.URL,
    *,
    method: str = "GET",
    body: str | bytes | None = None,
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
    initial_delay: float = DEFAULT_RETRY,
    max_redirects: int = MAX_REDIRECTS,
    on_comment: Callable[[str], object] | None = None,
    on_state: Callable[[StateChange], object] | None = None,
    max_line_bytes: int | None = DEFAULT_MAX_LINE_BYTES,
    max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    rewind: int | None = None,
) -> AsyncIterator[EventSource]:
    """Open an :class:`EventSource` on exactly ``url``, any ``text/event-stream`` server.

    Like :func:`connect` (same options, same errors, same reconnection), but the URL
    is used as it is: no ``/sse/events``, no filters, and the query is left alone
    (put credentials in ``token`` or ``headers``: httpx logs URLs at INFO).

    ``method`` and ``body`` (``str`` is sent as UTF-8) make the request, e.g. ``POST``
    with a JSON body for an MCP server or an LLM API. The same request — method, body,
    ``headers`` — is sent on every reconnection, with ``Last-Event-ID``. A body goes
    with ``Content-Type: text/plain; charset=utf-8`` unless ``headers`` has one. Such
    APIs end the stream after their last event: leave the loop at that event, or the
    client reconnects and sends the request again, as an EventSource would.

    ``rewind`` adds ``rewind=N`` to the URL of the attempts before the first stream
    opens, while there is no last event id (trio_sse's rewind, see :func:`connect`).
    """
    request_headers = httpx.Headers({"Accept": "text/event-stream", "Cache-Control": "no-cache"})
    request_headers.update(headers or {})
    if token is not None:
        request_headers["Authorization"] = f"Bearer {token}"
    content = body.encode() if isinstance(body, str) else body
    if content is not None and "content-type" not in request_headers:
        request_headers["Content-Type"] = "text/plain; charset=utf-8"
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        source = EventSource(
            http,
            httpx.URL(url),
            headers=request_headers,
            last_event_id=last_event_id,
            silence_timeout=silence_timeout,
            max_backoff=max_backoff,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            rng=rng or random.Random(),
            method=method,
            body=content,
            initial_delay=initial_delay,
            max_redirects=max_redirects,
            on_comment=on_comment,
            on_state=on_state,
            min_backoff=min_backoff,
            max_line_bytes=max_line_bytes,
            max_event_bytes=max_event_bytes,
            rewind=rewind,
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
    tags: Mapping[str, str] | None = None,
    token: str | None = None,
    http: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """``POST /sse/publish`` one event and return its id (``tags``: for the streams'
    tag filters; the server checks them, 422 ``invalid_tags``, and never sends them on).

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
    if tags is not None:
        body["tags"] = dict(tags)
    target, token = _token_out_of_query(endpoint_url(url, "/sse/publish"), token, None)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        response = await http.post(target, content=orjson.dumps(body), headers=headers)
        if response.status_code != 202:
            raise await _error_from(response)
        event_id: str = response.json()["id"]
        return event_id


# -- the batching publishers, from trio_sse.publisher -----------------------------------

if TYPE_CHECKING:
    from .publisher import Publisher, PublisherClosed, PublishOutcomeUnknown, SyncPublisher, open_publisher

_PUBLISHER_NAMES = frozenset(
    {"Publisher", "PublisherClosed", "PublishOutcomeUnknown", "SyncPublisher", "open_publisher"}
)


def __getattr__(name: str) -> Any:
    """The publishers resolve lazily (PEP 562): :mod:`trio_sse.publisher` imports this module."""
    if name not in _PUBLISHER_NAMES:
        raise AttributeError(f"module 'trio_sse.client' has no attribute {name!r}")
    from . import publisher

    value = getattr(publisher, name)
    globals()[name] = value
    return value
