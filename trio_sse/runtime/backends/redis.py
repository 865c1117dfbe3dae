"""The shared backend: Redis Streams through coredis, for several instances.

One Redis stream holds the deployment's events. Publishing is one ``MULTI``/``XADD``…
``EXEC`` transaction per batch (all of it stored, in order, or none of it), and the
stream id Redis assigns *is* the event id, so ids are global, ordered and resumable on
any instance. Each instance runs one reader task — ``XREAD BLOCK`` from the last id it
saw — that turns entries into events (wire bytes encoded once per instance) and hands
them to the hub: one Redis read per instance, not per connection.

Replays are served from the instance's own ring of the events it has read when the
client's id is in it (no Redis round trip, and exactly consistent with live delivery),
and otherwise from ``XRANGE`` on the shared stream: a client coming from another
instance, or from before this instance started. Live events a replay already covered
are dropped by the connection (ids are ordered), so the two merge with no gap and no
duplicate.

When Redis is unreachable publishes raise :class:`BackendUnavailable` (HTTP 503,
nothing stored), ``status`` is ``degraded``, local streams keep their heartbeats, and
the reader retries with short jittered backoff (at most ``BACKOFF_MAX``) from its last
id, so subscribers miss nothing that Redis stored.

The reader never skips entries in silence: when the stream's trim or a Redis restart
may have removed entries it had not read, it calls the hub's ``history_gap`` (every live
stream gets ``stream_reset`` ``history_gap`` between the events before the gap and those
after). How it knows is :mod:`trio_sse.runtime.backends.redis_reader`'s.

Why coredis: it is maintained, typed, speaks RESP3, and since version 6 runs on anyio —
so on trio natively, inside our nurseries and cancel scopes (no thread, no asyncio
bridge). The client's connection pool lives in :meth:`RedisBackend.run`'s block, so it
closes with the hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import coredis
import coredis.exceptions
import orjson
import trio
from coredis import PureToken
from coredis.retry import NoRetryPolicy

from ...core.events import Event, EventOrder, make_event, parse_event_id
from ...core.history import History, Replay
from ...core.validation import NewEvent
from . import BackendUnavailable, Deliver, HistoryGap
from .redis_reader import (
    PUBLISH_TIMEOUT,
    READ_BLOCK_MS,
    REDIS_ERRORS,
    REDIS_OR_TIMEOUT,
    StreamReader,
    entry_text,
    event_from_entry,
)

__all__ = ["RedisBackend"]

#: Entries per ``XRANGE`` page while replaying from Redis.
REPLAY_PAGE = 1000
#: Seconds between refreshes of the shared stream's figures for ``/sse/stats``.
INFO_INTERVAL = 2.0


class RedisBackend:
    """Events in one Redis stream shared by every instance (see the module docstring)."""

    kind = "redis"

    def __init__(self, url: str, history_size: int, *, stream_key: str = "trio_sse:events") -> None:
        self.url = url
        self.stream_key = stream_key
        self.history_size = history_size
        #: The events this instance has read, for replays that need no round trip.
        self.history = History(history_size)
        self._client: coredis.Redis[bytes] | None = None
        self._status = "starting"
        #: The task that reads the shared stream (its position, its gap checks).
        self._reader = StreamReader(stream_key, self.history, lambda: self._redis, self._mark)
        self._info: dict[str, Any] = {"size": 0, "oldest_id": None, "newest_id": None}
        self.reconnects = 0

    @property
    def status(self) -> str:
        return "ok" if self._status == "ok" else "degraded"

    def _mark(self, ok: bool) -> None:
        if ok:
            self._status = "ok"
        elif self._status == "ok":
            self._status = "degraded"
            self.reconnects += 1

    # -- lifecycle --------------------------------------------------------------------

    async def run(
        self,
        deliver: Deliver,
        history_gap: HistoryGap | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the connection pool and read the shared stream until cancelled.

        Reports ready once the reader knows where to start: the stream's newest id when
        Redis answers, or right away (status ``degraded``) when it does not, so the hub
        starts and keeps its local streams while the reader keeps trying. Entries it
        may have missed (see the module docstring) are reported to ``history_gap``,
        in order with what goes to ``deliver``.
        """
        # No automatic retries: coredis retries a command whose reply was lost, which for
        # XADD could store a batch twice. The reader retries by itself (from its last id,
        # which is idempotent); a publish that fails is answered 503 and the client retries.
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            stream_timeout=READ_BLOCK_MS / 1000 + 5,
            connect_timeout=2,
            verify_version=False,
            retry_policy=NoRetryPolicy(),
        )
        async with client:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    started = await self._reader.find_start()
                    if started:
                        await self._refresh_info()
                    task_status.started()
                    nursery.start_soon(self._refresh_info_forever)
                    await self._reader.read_forever(deliver, history_gap or (lambda after_id: None), started)
            finally:
                self._client = None

    @property
    def resume_point(self) -> str | None:
        return self._reader.resume_point

    async def _refresh_info_forever(self) -> None:
        while True:
            await trio.sleep(INFO_INTERVAL)
            await self._refresh_info()

    async def refresh_stats(self) -> None:
        """Ask Redis for the shared stream's figures now (bounded: a report never hangs on Redis)."""
        if self._client is not None:
            with trio.move_on_after(1.0):
                await self._refresh_info()

    async def _refresh_info(self) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                length = pipe.xlen(self.stream_key)
                oldest = pipe.xrange(self.stream_key, "-", "+", count=1)
                newest = pipe.xrevrange(self.stream_key, "+", "-", count=1)
        except REDIS_ERRORS:
            return
        first, last = await oldest, await newest
        self._info = {
            "size": await length,
            "oldest_id": entry_text(first[0].identifier) if first else None,
            "newest_id": entry_text(last[0].identifier) if last else None,
        }

    @property
    def _redis(self) -> coredis.Redis[bytes]:
        if self._client is None:
            raise BackendUnavailable("the Redis backend is not running")
        return self._client

    # -- events <-> stream entries -----------------------------------------------------

    @staticmethod
    def _fields(item: NewEvent, wall_ns: int) -> dict[bytes, bytes]:
        fields = {b"t": item.type.encode(), b"d": item.data_json, b"w": str(wall_ns).encode()}
        if item.project_id is not None:
            fields[b"p"] = item.project_id.encode()
        if item.tags:
            fields[b"g"] = orjson.dumps(item.tags)  # read back by event_from_entry
        return fields

    # -- the Backend protocol ------------------------------------------------------------

    async def append(self, batch: Sequence[NewEvent]) -> list[Event]:
        """Store ``batch`` in one transaction; delivery follows through the reader.

        Raises :class:`BackendUnavailable` when Redis does not confirm in time: with a
        transaction nothing was stored unless Redis ran ``EXEC`` and only its answer was
        lost (the one case where a 503 may hide a stored batch; see docs/deploy.md).
        """
        wall_ns = time.time_ns()
        try:
            with trio.fail_after(PUBLISH_TIMEOUT):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pending = [
                        pipe.xadd(
                            self.stream_key,
                            self._fields(item, wall_ns),
                            trim_strategy=PureToken.MAXLEN,
                            trim_operator=PureToken.APPROXIMATELY,
                            threshold=self.history_size,
                        )
                        for item in batch
                    ]
                ids = [await request for request in pending]
        except REDIS_OR_TIMEOUT as exc:
            self._mark(False)
            raise BackendUnavailable(f"the Redis backend is unreachable ({type(exc).__name__})") from None
        now = trio.current_time()
        events = []
        for item, raw in zip(batch, ids, strict=True):
            assert raw is not None
            event_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            order = parse_event_id(event_id)
            assert order is not None
            events.append(make_event(order, item.type, item.data_json, item.project_id, now, item.tags))
        return events

    async def replay_after(self, last_event_id: str, matches: Callable[[Event], bool]) -> Replay:
        """Replay from the local ring when the id is in it, else from the shared stream.

        Raises :class:`BackendUnavailable` when Redis is needed and cannot be reached.
        """
        if last_event_id in self.history:
            return self.history.replay_after(last_event_id, matches)
        order = parse_event_id(last_event_id)
        if order is None:
            return Replay([], "unknown_id")
        try:
            return await self._replay_from_redis(last_event_id, order, matches)
        except REDIS_ERRORS as exc:
            self._mark(False)
            raise BackendUnavailable(f"the Redis backend is unreachable ({type(exc).__name__})") from None

    async def _replay_from_redis(
        self, last_event_id: str, order: EventOrder, matches: Callable[[Event], bool]
    ) -> Replay:
        async with self._redis.pipeline(transaction=False) as pipe:
            itself = pipe.xrange(self.stream_key, last_event_id, last_event_id, count=1)
            oldest = pipe.xrange(self.stream_key, "-", "+", count=1)
        if not await itself:
            first = await oldest
            first_order = parse_event_id(entry_text(first[0].identifier)) if first else None
            if first_order is not None and order < first_order:
                return Replay([], "history_gap")
            return Replay([], "unknown_id")
        events: list[Event] = []
        start = last_event_id
        while len(events) < self.history_size:
            page = await self._redis.xrange(self.stream_key, f"({start}", "+", count=REPLAY_PAGE)
            if not page:
                break
            for entry in page:
                event = event_from_entry(entry)
                if matches(event):
                    events.append(event)
            start = entry_text(page[-1].identifier)
            if len(page) < REPLAY_PAGE:
                break
        return Replay(events)

    async def rewind(self, count: int, matches: Callable[[Event], bool]) -> list[Event]:
        """The newest ``count`` matching entries of the shared stream, read from its newest end.

        Reads pages with ``XREVRANGE`` and stops at ``count`` matches or after
        ``history_size`` entries (what the stream keeps). Raises
        :class:`BackendUnavailable` when Redis cannot be reached.
        """
        found: list[Event] = []
        if count <= 0:
            return found
        try:
            end, scanned = "+", 0
            while scanned < self.history_size:
                page = await self._redis.xrevrange(self.stream_key, end, "-", count=REPLAY_PAGE)
                for entry in page:
                    event = event_from_entry(entry)
                    if matches(event):
                        found.append(event)
                        if len(found) == count:
                            break
                scanned += len(page)
                if len(found) == count or len(page) < REPLAY_PAGE:
                    break
                end = f"({entry_text(page[-1].identifier)}"
        except REDIS_ERRORS as exc:
            self._mark(False)
            raise BackendUnavailable(f"the Redis backend is unreachable ({type(exc).__name__})") from None
        found.reverse()
        return found

    def history_stats(self) -> dict[str, Any]:
        """The shared stream's figures (refreshed every few seconds) plus this reader's position."""
        return {**self._info, "capacity": self.history_size, "read_up_to": self._reader.last_id}

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream_key,
            "last_read_id": self._reader.last_id,
            "reconnects": self.reconnects,
            "history_gaps": self._reader.history_gaps,
        }
