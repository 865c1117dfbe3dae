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

What the reader must never do is skip entries in silence. ``XREAD`` returns the
entries *still stored* after an id: if the stream's trim removed some the reader had
not read (it came back from an outage, or fell behind, by more than ``MAXLEN``), or
Redis came back from a restart without them, the reply does not say so. So the reader
checks, before it hands a read on, that its position is still stored (an ``XRANGE`` in
pipeline with the ``XREAD``, so no extra round trip;
see :mod:`trio_sse.core.stream_gaps` for why that suffices), and after each
reconnection that the stream did not come back older than its position. When either
check fails it calls the hub's ``history_gap``: every live stream gets
``stream_reset`` (``history_gap``) between the events before the gap and those after.

Why coredis: it is maintained, typed, speaks RESP3, and since version 6 runs on anyio —
so on trio natively, inside our nurseries and cancel scopes (no thread, no asyncio
bridge). The client's connection pool lives in :meth:`RedisBackend.run`'s block, so it
closes with the hub.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import coredis
import coredis.exceptions
import trio
from coredis import PureToken
from coredis.retry import NoRetryPolicy

from ...core.events import Event, EventOrder, make_event, parse_event_id
from ...core.history import History, Replay
from ...core.stream_gaps import lost_in_restart, missed_before_read
from ...core.validation import NewEvent
from . import BackendUnavailable, Deliver, HistoryGap

__all__ = ["RedisBackend"]

#: Errors that mean "Redis cannot be reached or answered badly", as opposed to our bugs.
#: (coredis's ConnectionError is a RedisError; TimeoutError is an OSError.)
REDIS_ERRORS: tuple[type[BaseException], ...] = (coredis.exceptions.RedisError, OSError)

#: The same, plus our own deadline on a Redis call running out.
REDIS_OR_TIMEOUT: tuple[type[BaseException], ...] = (*REDIS_ERRORS, trio.TooSlowError)

#: Entries per ``XREAD``: one round of the reader. Large enough that a burst is taken
#: in a few reads, small enough that one read's decoding does not stall the scheduler.
READ_COUNT = 1000
#: Milliseconds one ``XREAD`` blocks when the stream is idle.
READ_BLOCK_MS = 1000
#: Entries per ``XRANGE`` page while replaying from Redis.
REPLAY_PAGE = 1000
#: Reconnection backoff bounds (seconds); each attempt waits a random time up to the
#: current bound, which doubles ("full jitter"), so instances do not retry in lockstep.
#: The bound stays short: once Redis is back, publishes through any instance succeed at
#: once, and every second this reader still sleeps is a second of entries the stream's
#: ``MAXLEN`` trim may remove before it reads them (at 11,000 events/s and
#: ``history_size`` 10,000, a 2 s bound lost thousands). An attempt on a Redis that is
#: down costs one refused connection (or ``connect_timeout`` when the host is gone).
BACKOFF_MIN = 0.02
BACKOFF_MAX = 0.25
#: Seconds a publish may wait for Redis before it is answered 503.
PUBLISH_TIMEOUT = 5.0
#: Seconds between refreshes of the shared stream's figures for ``/sse/stats``.
INFO_INTERVAL = 2.0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _trimmed(info: Any) -> int | None:
    """How many entries a stream has trimmed, from its ``XINFO STREAM``; ``None`` before Redis 7."""
    added = info.get("entries-added")
    return int(added) - int(info["length"]) if added is not None else None


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
        #: The reader's position: the last id it handed on (or where it starts).
        self._last_id = "0-0"
        #: Whether the position is an entry of the stream (one read, or the newest
        #: before this instance started), as opposed to a floor that names no entry.
        self._position_stored = False
        #: For a floor: the stream's trim count (``entries-added - length``) when it was taken.
        self._trimmed_at_floor = 0
        #: The newest event handed to the hub: nothing at or before it is handed on again.
        self._handed: EventOrder = (-1, -1)
        #: How many times the reader told the hub it may have missed entries.
        self.history_gaps = 0
        #: Wall-clock ms of this instance's start: entries from then on are delivered live.
        self._started_ms = time.time_ns() // 1_000_000
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
                    started = await self._find_start()
                    if started:
                        await self._refresh_info()
                    task_status.started()
                    nursery.start_soon(self._refresh_info_forever)
                    await self._read_forever(deliver, history_gap or (lambda after_id: None), started)
            finally:
                self._client = None

    @property
    def resume_point(self) -> str | None:
        # Where the reader starts (or has read up to): entries after it reach the hub.
        # "0-0" names no entry; replaying from it would be a history gap, not a resume.
        return None if self._last_id == "0-0" else self._last_id

    async def _find_start(self) -> bool:
        """Start after the newest entry published before this instance started.

        "Before this instance started" is by the id's timestamp, not "the newest entry
        when Redis first answers": when Redis is down at start-up, this instance may
        accept publishes (and so may others) in the moment between Redis coming back
        and the reader's first answer, and those must reach local streams too.
        Returns ``False`` if Redis did not answer.
        """
        try:
            with trio.fail_after(PUBLISH_TIMEOUT):
                newest = await self._redis.xrevrange(self.stream_key, f"({self._started_ms}-0", "-", count=1)
                if not newest:
                    # A floor: nothing older is stored, so whatever is trimmed from now
                    # on came after it (see core.stream_gaps).
                    facts = await self._stream_facts()
                    self._trimmed_at_floor = (facts[1] or 0) if facts is not None else 0
        except REDIS_OR_TIMEOUT:
            self._mark(False)
            return False
        if newest:
            self._last_id = _text(newest[0].identifier)
            self._position_stored = True
        self._mark(True)
        return True

    async def _read_forever(self, deliver: Deliver, history_gap: HistoryGap, started: bool) -> None:
        backoff = BACKOFF_MIN
        reconnecting = False
        while True:
            if not started:
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
                started = await self._find_start()
                continue
            try:
                if reconnecting:
                    await self._check_restart(history_gap)
                entries = await self._read_once(history_gap)
            except REDIS_ERRORS:
                self._mark(False)
                reconnecting = True
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            reconnecting = False
            self._mark(True)
            backoff = BACKOFF_MIN
            if entries:
                self._hand_on(entries, deliver)

    async def _read_once(self, history_gap: HistoryGap) -> tuple[Any, ...]:
        """One ``XREAD`` from the position; a possible gap before its entries is reported first.

        Raises a Redis error with nothing reported or handed on: the next try reads
        from the same position again.
        """
        # The check rides in the same round trip: Redis runs the second command once
        # the XREAD has returned. A position still stored then was stored at the read,
        # so nothing after it had been trimmed (trims remove a prefix); a floor is
        # judged by the stream's trim count instead (only at a start or after a loss).
        position = self._last_id
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                read = pipe.xread({self.stream_key: position}, count=READ_COUNT, block=READ_BLOCK_MS)
                if self._position_stored:
                    check = pipe.xrange(self.stream_key, position, position, count=1)
                else:
                    info = pipe.xinfo_stream(self.stream_key)
        except coredis.exceptions.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return ()  # the stream does not exist (yet): nothing was read
            raise
        reply = await read
        entries: tuple[Any, ...] = reply.get(self.stream_key.encode(), ()) if reply else ()
        if not entries:
            return ()
        if self._position_stored:
            still, trimmed = bool(await check), None
        else:
            still, trimmed = False, _trimmed(await info)
        if missed_before_read(
            was_stored=self._position_stored,
            still_stored=still,
            trimmed_then=self._trimmed_at_floor,
            trimmed_now=trimmed,
        ):
            self._report_gap(history_gap)
        return entries

    async def _check_restart(self, history_gap: HistoryGap) -> None:
        """After a reconnection: did the stream come back older than the position?

        Then Redis lost entries (a restart without persistence, or from an older
        RDB/AOF), maybe some nobody read: report a gap now, without waiting for new
        entries. The position moves to the stream's newest id, so entries Redis gives
        from there on are read whatever their ids; a missing stream leaves a floor.
        """
        facts = await self._stream_facts()
        last_generated = parse_event_id(facts[0]) if facts is not None else None
        position = parse_event_id(self._last_id)
        assert position is not None
        if not lost_in_restart(position, was_stored=self._position_stored, last_generated=last_generated):
            return
        self._report_gap(history_gap)
        if facts is None:
            self._position_stored, self._trimmed_at_floor = False, 0
        else:
            self._last_id, self._position_stored = facts[0], True

    def _report_gap(self, history_gap: HistoryGap) -> None:
        self.history_gaps += 1
        history_gap(self.resume_point)

    def _hand_on(self, entries: Sequence[Any], deliver: Deliver) -> None:
        events = [self._event_from(entry) for entry in entries]
        self._last_id, self._position_stored = events[-1].id, True
        if events[0].order <= self._handed:
            # Only after Redis came back older with a clock behind ours: ids it gives
            # again were handed on already, and a gap has been reported for them.
            events = [e for e in events if e.order > self._handed]
            if not events:
                return
        self._handed = events[-1].order
        for event in events:
            self.history.append(event)
        deliver(events)

    async def _stream_facts(self) -> tuple[str, int | None] | None:
        """``(last-generated-id, entries trimmed)`` of the stream, ``None`` if it does not exist.

        The trim count is ``entries-added - length``; ``None`` before Redis 7.
        """
        try:
            info: Any = await self._redis.xinfo_stream(self.stream_key)
        except coredis.exceptions.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        return _text(info["last-generated-id"]), _trimmed(info)

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
            "oldest_id": _text(first[0].identifier) if first else None,
            "newest_id": _text(last[0].identifier) if last else None,
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
        return fields

    @staticmethod
    def _event_from(entry: Any) -> Event:
        """An event from a stream entry; ``published_at`` mapped onto this process's trio clock."""
        event_id = _text(entry.identifier)
        fields = entry.field_values
        order = parse_event_id(event_id)
        assert order is not None, event_id  # Redis stream ids are always <ms>-<seq>
        project = fields.get(b"p")
        now = trio.current_time()
        wall = fields.get(b"w")
        age = max(0.0, (time.time_ns() - int(wall)) / 1e9) if wall else 0.0
        return make_event(
            order, fields[b"t"].decode(), fields[b"d"], project.decode() if project is not None else None, now - age
        )

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
            events.append(make_event(order, item.type, item.data_json, item.project_id, now))
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
            first_order = parse_event_id(_text(first[0].identifier)) if first else None
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
                event = self._event_from(entry)
                if matches(event):
                    events.append(event)
            start = _text(page[-1].identifier)
            if len(page) < REPLAY_PAGE:
                break
        return Replay(events)

    def history_stats(self) -> dict[str, Any]:
        """The shared stream's figures (refreshed every few seconds) plus this reader's position."""
        return {**self._info, "capacity": self.history_size, "read_up_to": self._last_id}

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream_key,
            "last_read_id": self._last_id,
            "reconnects": self.reconnects,
            "history_gaps": self.history_gaps,
        }
