"""Publishers that batch by themselves: many concurrent ``publish()`` calls, few ``POST /sse/publish``.

::

    async with trio_sse.client.open_publisher("http://127.0.0.1:8000") as publisher:
        event_id = await publisher.publish("commit", {"sha": "abc"}, project_id="p1")

    publisher = trio_sse.client.SyncPublisher("http://127.0.0.1:8000")   # Django, Flask, Celery
    event_id = publisher.publish("task_update", {"task": 7})             # from any thread

One request per event costs a server about 400 µs of CPU (hypercorn's per-request work,
see docs/performance.md), a batch of 1,000 about as much per request plus about 10 µs per
event. So the publishers collect the events of concurrent callers and send them as one
``{"events": [...]}`` batch: once ``max_batch`` events wait, or ``linger`` seconds after the
oldest waiting one arrived, whichever comes first; and while a batch is on its way, the
next one fills. Each caller gets its own event's id (the server answers the ids in batch
order). One batch is in flight at a time, so events are stored in the order ``publish()``
was called, across callers, also when a batch is retried.

**What is sent again, and what never is.** An event is sent twice only if the server
can be known to have stored none of it: the batch is sent again after a ``429`` or a
``503`` (trio_sse refuses those before storing anything; the contract: "a rejected
publish changes nothing"), waiting at least the answer's ``Retry-After``, and after a
connection that could not be opened (``ConnectError``, ``ConnectTimeout``,
``PoolTimeout``) or a request that could not be written out in time (``WriteTimeout``:
the server never had the whole body, so it cannot have parsed it), with jittered
exponential backoff (:func:`trio_sse.core.backoff.reconnect_delay`), ``max_attempts``
attempts in all. Once the whole request may have reached the server — a read timeout, a
connection lost before the answer, a 500, a proxy's 502/504 — the batch may have been
stored, and sending it again could publish every event twice with new ids: its callers
get :class:`PublishOutcomeUnknown` instead. (httpcore reports a failed write as the read
error that follows it, so a lost connection is never known to be "before sending".) The
server has one such case of its own: with the Redis backend, a ``503
backend_unavailable`` whose ``EXEC`` ran but whose answer was lost (docs/deploy.md).

**One bad event does not fail the others.** What can be checked here is checked in
``publish()`` with the server's own rules (:mod:`trio_sse.core.validation`: event type
name, ``project_id``, ``tags``, JSON data, ``max_event_bytes``), so the caller gets the
error at once and nothing is queued. What only the server knows (an event type it does
not register, a project the token may not publish to) comes back as a refusal of the
whole batch, which stored nothing: a refusal naming one event (``"index": i``) fails that
caller and the rest is sent again at once; a 4xx naming none (a ``403`` for a project, a
``413`` for a server whose batch limit is below ``max_batch``) splits the batch in two
halves, sent in order, down to the events that cause it. A ``401`` fails the batch: the
token is the same for every event in it.

**Cancelling a caller.** While its event waits in the queue, the event is withdrawn and
never sent. Once its batch is sent, cancellation is prompt too (a deadline is kept), but
the event is published or not with the batch, like every other event in it: the other
callers still get their ids, the cancelled one does not learn its own.

**Backpressure.** At most ``max_pending`` events wait; past that ``publish()`` blocks (the
trio one waits, the sync one blocks its thread, ``timeout`` bounds it), so a server that
is down or rate-limiting slows the producers instead of filling memory.

This module never imports the server side (``runtime``, ``http``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import attrs
import httpx
import orjson
import trio

from .client import (
    SSEClientError,
    SSEConnectionError,
    SSEHTTPError,
    _token_out_of_query,
    endpoint_url,
    parse_retry_after,
    redacted,
)
from .core.backoff import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF, reconnect_delay
from .core.errors import InvalidValue, UnknownEventTypes
from .core.events import EVENT_TYPE_PATTERN
from .core.validation import EventTooLarge, check_project_id, check_tags

__all__ = [
    "DEFAULT_LINGER",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_PENDING",
    "PublishOutcomeUnknown",
    "Publisher",
    "PublisherClosed",
    "SyncPublisher",
    "encode_event",
    "open_publisher",
]

log = logging.getLogger("trio_sse.publisher")

DEFAULT_LINGER = 0.005
"""Seconds the oldest waiting event waits for others. 5 ms is noise beside a request's
round trip, and at a few hundred events per second it already puts several in a request;
under load batches fill while the previous one is in flight, so linger stops mattering."""

DEFAULT_MAX_BATCH = 1000
"""Events per request: the server's batch limit (``trio_sse.http.publish.MAX_BATCH``)."""

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
"""Body bytes per request: the server's default ``max_body_bytes``. A batch stops growing
before it would pass this; an event bigger than it alone is sent alone (and refused)."""

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
"""The server's default ``max_event_bytes``: bigger data is refused here, before queueing."""

DEFAULT_MAX_PENDING = 10 * DEFAULT_MAX_BATCH
"""Events that may wait before ``publish()`` blocks: ten full batches."""

DEFAULT_MAX_ATTEMPTS = 10
"""Attempts per batch against 429/503/unreachable: with the default backoff (0.1 s doubling,
capped at 30 s) about a minute of retrying before the callers get the error."""

DEFAULT_TIMEOUT = 10.0
"""Seconds for each phase of one request (connect, write, read; httpx's ``Timeout``)."""

RETRY_STATUSES = frozenset({429, 503})
"""Answers that say the server stored nothing and will later: sent again after ``Retry-After``."""

RESENDABLE_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteTimeout,
)
"""Transport errors raised before the server could have the whole request (see the module doc)."""

_BATCH_HEAD, _BATCH_TAIL = b'{"events":[', b"]}"


class PublisherClosed(SSEClientError):
    """The publisher is closed (or was closed before this event could be sent): not published."""


class PublishOutcomeUnknown(SSEClientError):
    """The event's batch may or may not have been stored: the request was sent but no
    answer says which (a read timeout, a lost connection, a 5xx other than 503, the
    publisher cancelled mid-request). It is not sent again, which could publish it twice;
    ``__cause__`` is what happened. Look for the event (by an id of your own in its data)
    before publishing it again."""


# -- the part both publishers share: encoding, and what to do with an answer ------------


def encode_event(
    event_type: str,
    data: Any,
    project_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
) -> bytes:
    """One batch item's JSON, checked with the server's rules (see the module doc).

    Raises :class:`~trio_sse.core.errors.UnknownEventTypes` for a type name no server can
    register, :class:`~trio_sse.core.errors.InvalidValue` (a type that is not a string, a
    bad ``project_id``, data JSON cannot carry), :class:`~trio_sse.core.errors.InvalidTags` or
    :class:`~trio_sse.core.errors.EventTooLarge` (data over ``max_event_bytes``; ``None``
    leaves that check to the server). Whether the server registers the type is its to say.
    """
    if not isinstance(event_type, str):
        raise InvalidValue("event_type must be a string")
    if event_type not in _VALID_TYPES:
        if not EVENT_TYPE_PATTERN.fullmatch(event_type):
            raise UnknownEventTypes([event_type])  # no server can register it: its 422
        if len(_VALID_TYPES) < 1024:
            _VALID_TYPES.add(event_type)
    project = None if project_id is None else check_project_id(project_id)
    checked_tags = None if tags is None else check_tags(tags)
    try:
        # Not dumps_json: its copy is for events kept in a history; this one is sent and dropped.
        data_json = orjson.dumps(data)
    except TypeError as exc:  # orjson.JSONEncodeError subclasses TypeError
        raise InvalidValue(f"data is not JSON-serialisable: {exc}") from exc
    if max_event_bytes is not None and len(data_json) > max_event_bytes:
        raise EventTooLarge(f"event data is {len(data_json)} bytes; the limit is {max_event_bytes}")
    # Written out rather than orjson.dumps({...}): the data is serialised once, and a
    # valid type name needs no escaping. This is most of publish()'s own cost.
    parts = [b'{"event_type":"', event_type.encode(), b'","data":', data_json]
    if project is not None:
        parts += (b',"project_id":', orjson.dumps(project))
    if checked_tags is not None:
        parts += (b',"tags":', orjson.dumps(checked_tags))
    parts.append(b"}")
    return b"".join(parts)


#: Type names already checked against :data:`EVENT_TYPE_PATTERN` (a program uses a few).
_VALID_TYPES: set[str] = set()


class _Item(Protocol):
    """A queued event as the delivery sees it: its JSON, and how its caller learns the end."""

    body: bytes

    def settle(self, event_id: str | None, error: BaseException | None) -> None: ...


@attrs.frozen(slots=True)
class _Send:
    items: list[_Item]


@attrs.frozen(slots=True)
class _Sleep:
    seconds: float


_Step = _Send | _Sleep
_Result = httpx.Response | httpx.TransportError | None
_Delivery = Generator[_Step, _Result, None]


def _batch_body(items: list[_Item]) -> bytes:
    return _BATCH_HEAD + b",".join(item.body for item in items) + _BATCH_TAIL


def _fail(items: list[_Item], error: Callable[[], BaseException]) -> None:
    """Give each caller an exception of its own (one instance raised in many tasks would
    have its traceback grown by each)."""
    for item in items:
        item.settle(None, error())


def _caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def _http_error(response: httpx.Response) -> SSEHTTPError:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    return SSEHTTPError(response.status_code, body, response.text, response.headers)


def _refused(items: list[_Item], response: httpx.Response) -> None:
    _fail(items, lambda: _http_error(response))


def _unknown(items: list[_Item], message: str, cause: BaseException) -> None:
    _fail(items, lambda: _caused(PublishOutcomeUnknown(message), cause))


def _unreachable(items: list[_Item], message: str, cause: BaseException) -> None:
    _fail(items, lambda: _caused(SSEConnectionError(message), cause))


def _ids(response: httpx.Response, count: int) -> list[str] | None:
    """The ``ids`` of a 202, or None if the answer is not one for ``count`` events."""
    try:
        ids = orjson.loads(response.content)["ids"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def _delivery(
    items: list[_Item], where: str, max_attempts: int, backoff: Callable[[int, float | None], float]
) -> _Delivery:
    """The plan for one batch, as steps a driver carries out: ``_Send`` (answer it with the
    response or the transport error) and ``_Sleep``. Every item is settled by the end.

    Sans-IO so that the trio publisher and the threaded one follow one rule book.
    ``backoff(failures, retry_after)`` is the delay before the next attempt.
    """
    failures = 0
    while items:
        result = yield _Send(items)
        if isinstance(result, httpx.TransportError):
            if not isinstance(result, RESENDABLE_ERRORS):
                _unknown(items, f"{where}: no answer ({result!r}); the batch may be stored", result)
                return
            failures += 1
            if failures >= max_attempts:
                _unreachable(items, f"{where}: {failures} attempts failed ({result!r})", result)
                return
            log.info("publish to %s failed (%r); trying again", where, result)
            yield _Sleep(backoff(failures - 1, None))
            continue
        assert result is not None
        response = result
        status = response.status_code
        if status == 202 and (ids := _ids(response, len(items))) is not None:
            for item, event_id in zip(items, ids, strict=True):
                item.settle(event_id, None)
            return
        if status in RETRY_STATUSES:
            failures += 1
            if failures >= max_attempts:
                _refused(items, response)
                return
            log.info("publish to %s answered %d; trying again", where, status)
            yield _Sleep(backoff(failures - 1, parse_retry_after(response.headers.get("retry-after"))))
            continue
        if 400 <= status < 500:
            refusal = _http_error(response)
            index = refusal.body.get("index") if isinstance(refusal.body, dict) else None
            if type(index) is int and 0 <= index < len(items):
                # The server checks the whole batch before storing any of it: the others
                # were not stored, and go again without the one it named.
                items[index].settle(None, refusal)
                items = items[:index] + items[index + 1 :]
                continue
            if status != 401 and len(items) > 1:
                half = len(items) // 2
                yield from _delivery(items[:half], where, max_attempts, backoff)
                yield from _delivery(items[half:], where, max_attempts, backoff)
                return
            _refused(items, response)
            return
        # A 5xx other than 503, a 3xx, a 2xx that is not the batch's answer: stored or not, unknown.
        _unknown(items, f"{where}: unexpected answer HTTP {status}; the batch may be stored", _http_error(response))
        return


@attrs.frozen
class _Options:
    """What both publishers are configured with (checked once)."""

    url: httpx.URL
    headers: dict[str, str]
    linger: float
    max_batch: int
    max_batch_bytes: int
    max_pending: int
    max_attempts: int
    min_backoff: float
    max_backoff: float
    max_event_bytes: int | None
    timeout: httpx.Timeout

    @classmethod
    def make(
        cls,
        url: str | httpx.URL,
        token: str | None,
        headers: Mapping[str, str] | None,
        *,
        linger: float,
        max_batch: int,
        max_batch_bytes: int,
        max_pending: int,
        max_attempts: int,
        min_backoff: float,
        max_backoff: float,
        max_event_bytes: int | None,
        timeout: float | httpx.Timeout,
    ) -> _Options:
        if linger < 0:
            raise ValueError(f"linger must be >= 0, got {linger}")
        for name, value in (("max_batch", max_batch), ("max_pending", max_pending), ("max_attempts", max_attempts)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        target, token = _token_out_of_query(endpoint_url(url, "/sse/publish"), token, headers)
        request_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        return cls(
            target,
            request_headers,
            linger,
            max_batch,
            max_batch_bytes,
            max_pending,
            max_attempts,
            min_backoff,
            max_backoff,
            max_event_bytes,
            timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
        )

    def backoff(self, rng: random.Random) -> Callable[[int, float | None], float]:
        def delay(failures: int, retry_after: float | None) -> float:
            return reconnect_delay(
                failures,
                self.min_backoff,
                self.max_backoff,
                rng.random(),
                min_backoff=self.min_backoff,
                retry_after=retry_after,
            )

        return delay

    def take(self, queue: deque[Any], usable: Callable[[Any], bool]) -> tuple[list[Any], int]:
        """Pop the next batch off ``queue``: at most ``max_batch`` usable items and
        ``max_batch_bytes`` of body (always at least one), and how many were popped
        (withdrawn ones included, which are dropped here)."""
        batch: list[Any] = []
        size = len(_BATCH_HEAD) + len(_BATCH_TAIL)
        popped = 0
        while queue and len(batch) < self.max_batch:
            item = queue[0]
            if batch and size + len(item.body) + 1 > self.max_batch_bytes:
                break
            queue.popleft()
            popped += 1
            if usable(item):
                batch.append(item)
                size += len(item.body) + 1
        return batch, popped


# -- the trio publisher ----------------------------------------------------------------

_ROOM, _WAITING, _SENT, _WITHDRAWN, _DONE = range(5)


class _Pending:
    """A caller's event, from its call to its answer. The caller waits parked on its own
    task (no ``trio.Event`` and parking lot per event: this is the per-event cost)."""

    __slots__ = ("body", "error", "id", "queued_at", "seq", "state", "task")

    def __init__(self, body: bytes, seq: int, queued_at: float) -> None:
        self.body = body
        self.seq = seq
        self.queued_at = queued_at
        self.state = _WAITING
        self.task: trio.lowlevel.Task | None = None  # the caller, while it waits
        self.id: str | None = None
        self.error: BaseException | None = None

    def settle(self, event_id: str | None, error: BaseException | None) -> None:
        self.id, self.error, self.state = event_id, error, _DONE
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        """The waiting caller is cancelled: its event is withdrawn unless its batch has left."""
        self.task = None
        if self.state in (_ROOM, _WAITING):
            self.state = _WITHDRAWN  # the sender drops it when it reaches it
        return trio.lowlevel.Abort.SUCCEEDED


class Publisher:
    """Coalesces concurrent :meth:`publish` calls into batches (see the module doc). Get
    one from :func:`open_publisher`, whose block runs its one sending task.

    Figures kept for looking inside: ``requests`` (POSTs sent, retries included),
    ``published`` (events the server accepted), ``retries`` (attempts sent again).
    """

    def __init__(self, http: httpx.AsyncClient, options: _Options, rng: random.Random) -> None:
        self._http = http
        self._options = options
        self._backoff = options.backoff(rng)
        self._where = redacted(options.url)
        self._queue: deque[_Pending] = deque()  # at most max_pending (withdrawn ones until taken)
        self._room: deque[_Pending] = deque()  # callers waiting for room in the queue, in call order
        self._kick = trio.Event()
        self._progress = trio.Event()
        self._closing = False
        self._stopped = trio.Event()
        self._seq = 0  # the last event called
        self._settled = 0  # every event up to this one is settled (in order: one batch at a time)
        self._in_flight: list[_Pending] = []
        self.requests = 0
        self.published = 0
        self.retries = 0

    @property
    def pending(self) -> int:
        """Events queued and not yet taken into a batch (withdrawn ones included until then);
        callers waiting for room are not counted."""
        return len(self._queue)

    async def publish(
        self, event_type: str, data: Any, project_id: str | None = None, *, tags: Mapping[str, str] | None = None
    ) -> str:
        """Publish one event with others and return its id once the server stored it.

        Raises at once, queueing nothing, what the event's own checks refuse
        (:func:`encode_event`) and :class:`PublisherClosed` after :meth:`aclose`. Waits
        while ``max_pending`` events are queued (its turn kept). Then raises
        :class:`SSEHTTPError` for the server's refusal of this event (or of the batch: a
        ``401``; a 429/503 that outlasted ``max_attempts``), :class:`SSEConnectionError`
        when the server could not be reached in ``max_attempts`` attempts, and
        :class:`PublishOutcomeUnknown` when the batch was sent and no answer came.
        Cancelled while queued: the event is withdrawn, never sent; cancelled after its
        batch left: see the module doc.
        """
        body = encode_event(event_type, data, project_id, tags, max_event_bytes=self._options.max_event_bytes)
        if self._closing:
            raise PublisherClosed("the publisher is closed")
        self._seq += 1
        # Queued (or given its turn) before any checkpoint: events are stored in call order.
        item = _Pending(body, self._seq, trio.current_time())
        if self._room or len(self._queue) >= self._options.max_pending:
            item.state = _ROOM
            self._room.append(item)
        else:
            self._enqueue(item)
        item.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(item.abort)
        if item.error is not None:
            raise item.error
        assert item.id is not None
        return item.id

    def _enqueue(self, item: _Pending) -> None:
        self._queue.append(item)
        if len(self._queue) == 1 or len(self._queue) >= self._options.max_batch:
            self._kick.set()

    async def flush(self) -> None:
        """Wait until every event called before this call is settled (published or failed)."""
        target = self._seq
        while self._settled < target and not self._stopped.is_set():
            await self._progress.wait()

    async def aclose(self) -> None:
        """Stop taking events, send what is queued (with its retries), and return when the
        sending task has ended. Idempotent. Cancelled, it stops sending: queued events fail
        with :class:`PublisherClosed`, a batch in flight with :class:`PublishOutcomeUnknown`."""
        self._closing = True
        self._kick.set()
        await self._stopped.wait()

    # -- the sending task ------------------------------------------------------------

    async def _wait_for_kick(self) -> None:
        self._kick = trio.Event()
        await self._kick.wait()

    @staticmethod
    def _usable(item: _Pending) -> bool:
        if item.state == _WITHDRAWN:
            item.settle(None, None)  # nobody waits for it
            return False
        item.state = _SENT
        return True

    def _admit(self) -> None:
        """Move callers waiting for room into the queue, in their order."""
        now = trio.current_time()
        while self._room and len(self._queue) < self._options.max_pending:
            item = self._room.popleft()
            if item.state == _WITHDRAWN:
                item.settle(None, None)
                continue
            item.state, item.queued_at = _WAITING, now
            self._queue.append(item)

    def _report(self, settled: int) -> None:
        self._settled = settled
        self._progress.set()
        self._progress = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send batches until :meth:`aclose` and the queue is empty (:func:`open_publisher` runs it)."""
        task_status.started()
        options = self._options
        try:
            while True:
                if not self._queue:
                    self._report(self._seq)  # idle: all called so far is settled (or withdrawn)
                    if self._closing:
                        return
                    await self._wait_for_kick()
                    continue
                if len(self._queue) < options.max_batch and not self._closing:
                    with trio.move_on_at(self._queue[0].queued_at + options.linger):
                        while len(self._queue) < options.max_batch and not self._closing:
                            await self._wait_for_kick()
                batch, _ = options.take(self._queue, self._usable)
                self._admit()
                if batch:
                    self._in_flight = batch
                    await self._carry_out(_delivery(list(batch), self._where, options.max_attempts, self._backoff))
                    self._in_flight = []
                    self._report(batch[-1].seq)
        finally:
            self._closing = True
            self._give_up()
            self._stopped.set()
            self._progress.set()

    def _give_up(self) -> None:
        """The sending task is ending with events left (it was cancelled): settle them all."""
        for item in self._in_flight:
            if item.state != _DONE:
                item.settle(None, PublishOutcomeUnknown("the publisher was closed while its batch was in flight"))
        for waiting in (self._queue, self._room):
            while waiting:
                item = waiting.popleft()
                if item.state != _DONE:
                    item.settle(None, PublisherClosed("the publisher was closed before this event was sent"))

    async def _carry_out(self, delivery: _Delivery) -> None:
        result: _Result = None
        try:
            while True:
                step = delivery.send(result)
                if isinstance(step, _Sleep):
                    self.retries += 1
                    await trio.sleep(step.seconds)
                    result = None
                    continue
                self.requests += 1
                try:
                    result = await self._http.post(
                        self._options.url,
                        content=_batch_body(step.items),
                        headers=self._options.headers,
                        timeout=self._options.timeout,
                    )
                except httpx.TransportError as exc:
                    result = exc
                else:
                    if result.status_code == 202:
                        self.published += len(step.items)
        except StopIteration:
            return


@asynccontextmanager
async def open_publisher(
    url: str | httpx.URL,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    http: httpx.AsyncClient | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    linger: float = DEFAULT_LINGER,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    min_backoff: float = DEFAULT_MIN_BACKOFF,
    max_backoff: float = DEFAULT_MAX_BACKOFF,
    max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
    request_timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    rng: random.Random | None = None,
) -> AsyncIterator[Publisher]:
    """A :class:`Publisher` to ``url`` (the server's base URL or any ``/sse/...`` URL of
    it) for the duration of the block.

    ``linger`` (seconds) and ``max_batch`` (events) say when a batch leaves,
    ``max_batch_bytes`` how big its body may get, ``max_pending`` how many events may
    wait before ``publish()`` waits; ``max_attempts``, ``min_backoff`` and
    ``max_backoff`` bound the retries (see the module doc); ``max_event_bytes`` is the
    server's limit, checked here (``None``: leave it to the server); ``request_timeout``
    applies to each request (httpx's connect, write and read timeouts). ``token`` goes
    as ``Authorization: Bearer``. ``http`` is a client of yours (not closed here);
    ``transport`` makes a private one on it (for tests:
    :class:`trio_sse.testing.ASGIStreamTransport`).

    Leaving the block flushes: the queued events are sent (and retried) before it ends.
    Leaving it by cancellation or an error stops at once instead, failing what is left
    (see :meth:`Publisher.aclose`). Nothing started here keeps running.
    """
    options = _Options.make(
        url,
        token,
        headers,
        linger=linger,
        max_batch=max_batch,
        max_batch_bytes=max_batch_bytes,
        max_pending=max_pending,
        max_attempts=max_attempts,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        max_event_bytes=max_event_bytes,
        timeout=request_timeout,
    )
    failure: BaseException | None = None
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(transport=transport))
        async with trio.open_nursery() as nursery:
            publisher = Publisher(http, options, rng or random.Random())
            await nursery.start(publisher.run)
            try:
                yield publisher
            except BaseException as exc:
                # Raised again outside the nursery, which would wrap it in an ExceptionGroup.
                failure = exc
                nursery.cancel_scope.cancel()
            else:
                await publisher.aclose()
    if failure is not None:
        raise failure


# -- the threaded publisher --------------------------------------------------------------


@attrs.define(eq=False, slots=True)
class _Submitted:
    body: bytes
    queued_at: float
    future: concurrent.futures.Future[str] = attrs.field(factory=concurrent.futures.Future)

    def settle(self, event_id: str | None, error: BaseException | None) -> None:
        if error is not None:
            self.future.set_exception(error)
        else:
            assert event_id is not None
            self.future.set_result(event_id)


_LIVE: weakref.WeakSet[SyncPublisher] = weakref.WeakSet()


class SyncPublisher:
    """The batching publisher for threaded code (Django, Flask, Celery): same batching,
    retries and guarantees as :class:`Publisher`, on ``httpx.Client``.

    Any number of threads call :meth:`publish` (blocks until the id is known) or
    :meth:`submit` (returns a ``concurrent.futures.Future`` at once). **One background
    thread** does the batching and sending, started on the first call: the callers only
    queue an event and wait on its future, so a caller's thread never sends another
    one's batch, a slow request holds no caller's lock, and the ``httpx.Client`` is used
    by that one thread only. (A calling thread taking turns as the sender would save a
    thread but make each caller's latency depend on others' batches.)

    After ``os.fork()`` (gunicorn, Celery's prefork pool) the child starts empty: the
    parent's queued events stay the parent's (sending them from the child too would
    publish them twice), and a private ``httpx.Client`` is made anew (its pooled sockets
    are shared with the parent). An ``http`` client of yours is yours to replace there.

    :meth:`close` (or leaving a ``with`` block) sends what is queued and stops the
    thread; at interpreter exit, open publishers are flushed for up to ``exit_timeout``
    seconds. The thread is a daemon: a publisher never closed does not keep a process
    alive.
    """

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        linger: float = DEFAULT_LINGER,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_event_bytes: int | None = DEFAULT_MAX_EVENT_BYTES,
        request_timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        exit_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._options = _Options.make(
            url,
            token,
            headers,
            linger=linger,
            max_batch=max_batch,
            max_batch_bytes=max_batch_bytes,
            max_pending=max_pending,
            max_attempts=max_attempts,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            max_event_bytes=max_event_bytes,
            timeout=request_timeout,
        )
        self._given_http = http
        self._transport = transport
        self._backoff = self._options.backoff(rng or random.Random())
        self._where = redacted(self._options.url)
        self.exit_timeout = exit_timeout
        self.requests = 0
        self.published = 0
        self.retries = 0
        self._closed = False
        self._fresh_state()
        _LIVE.add(self)

    def _fresh_state(self) -> None:
        """Locks, queue and thread of this process (also in a child after ``fork``)."""
        self._cond = threading.Condition(threading.Lock())
        self._space = threading.Semaphore(self._options.max_pending)
        self._queue: deque[_Submitted] = deque()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = self._given_http
        self._own_http = self._given_http is None
        self._seq = 0
        self._settled = 0
        self._stopping = False

    # -- callers' side ---------------------------------------------------------------

    def submit(
        self,
        event_type: str,
        data: Any,
        project_id: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[str]:
        """Queue one event; the future gets its id (or the error :meth:`Publisher.publish`
        would raise). Raises at once what the event's own checks refuse, and
        :class:`PublisherClosed` after :meth:`close`; blocks while ``max_pending`` events
        wait (``TimeoutError`` after ``timeout`` seconds, nothing queued).
        ``future.cancel()`` withdraws the event if its batch has not left yet."""
        body = encode_event(event_type, data, project_id, tags, max_event_bytes=self._options.max_event_bytes)
        if self._closed:
            raise PublisherClosed("the publisher is closed")
        if not self._space.acquire(timeout=timeout):
            raise TimeoutError(f"{self._options.max_pending} events stayed queued for {timeout} s; not published")
        with self._cond:
            if self._closed:
                self._space.release()
                raise PublisherClosed("the publisher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="trio-sse-publisher", daemon=True)
                self._thread.start()
            item = _Submitted(body, time.monotonic())
            self._queue.append(item)
            self._seq += 1
            if len(self._queue) == 1 or len(self._queue) >= self._options.max_batch:
                self._cond.notify_all()
        return item.future

    def publish(
        self,
        event_type: str,
        data: Any,
        project_id: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish one event with the other threads' and return its id (errors: as
        :meth:`Publisher.publish`).

        ``timeout`` (seconds, ``None``: wait as long as the retries take) bounds the whole
        call: ``TimeoutError`` when it passes. While the event is still queued it is then
        withdrawn, never sent (the message says so); once its batch has left, it is
        published or not with the batch, and the message says that instead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        future = self.submit(event_type, data, project_id, tags=tags, timeout=timeout)
        try:
            return future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise TimeoutError(f"not published within {timeout} s: withdrawn before its batch was sent") from None
            raise TimeoutError(
                f"no answer within {timeout} s; the event's batch was sent and may be published"
            ) from None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted before this call is settled; False on timeout."""
        with self._cond:
            target = self._seq
            return self._cond.wait_for(lambda: self._settled >= target or self._thread is None, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking events, send what is queued, stop the thread (at most ``timeout``
        seconds; past it the thread is left to finish on its own). Idempotent."""
        with self._cond:
            self._closed = True
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        _LIVE.discard(self)

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the sending thread ------------------------------------------------------------

    def _usable(self, item: _Submitted) -> bool:
        self._space.release()
        return item.future.set_running_or_notify_cancel()  # False: cancelled while queued

    def _next_batch(self) -> tuple[list[_Submitted], int] | None:
        """Wait for a batch to leave (see the module doc); None when closed and drained."""
        options = self._options
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued_at + options.linger
            while len(self._queue) < options.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return options.take(self._queue, self._usable)

    def _run(self) -> None:
        try:
            while (taken := self._next_batch()) is not None:
                batch, popped = taken
                try:
                    if batch:
                        self._carry_out(_delivery(list(batch), self._where, self._options.max_attempts, self._backoff))
                except Exception as exc:  # a bug here must not leave callers blocked for ever
                    log.exception("the publisher's thread failed on a batch")
                    for item in batch:
                        if not item.future.done():
                            item.settle(None, _caused(PublishOutcomeUnknown(f"the publisher failed: {exc!r}"), exc))
                with self._cond:
                    self._settled += popped
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._thread = None
                self._cond.notify_all()
            if self._own_http and self._http is not None:
                self._http.close()
                self._http = None

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(transport=self._transport)
        return self._http

    def _carry_out(self, delivery: _Delivery) -> None:
        result: _Result = None
        try:
            while True:
                step = delivery.send(result)
                if isinstance(step, _Sleep):
                    self.retries += 1
                    time.sleep(step.seconds)
                    result = None
                    continue
                self.requests += 1
                try:
                    result = self._client().post(
                        self._options.url,
                        content=_batch_body(step.items),
                        headers=self._options.headers,
                        timeout=self._options.timeout,
                    )
                except httpx.TransportError as exc:
                    result = exc
                else:
                    if result.status_code == 202:
                        self.published += len(step.items)
        except StopIteration:
            return

    def _after_fork(self) -> None:
        self._fresh_state()
        if self._own_http:
            self._http = None  # the parent's pooled sockets are not ours to use


def _after_fork_in_child() -> None:
    for publisher in list(_LIVE):
        publisher._after_fork()


def _flush_at_exit() -> None:
    for publisher in list(_LIVE):
        publisher.close(publisher.exit_timeout)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
