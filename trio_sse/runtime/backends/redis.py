"""The shared backend: Redis Streams through coredis, for several instances.

One Redis stream holds the deployment's events. Publishing is one Lua script run per
batch (all of it stored, in order, or none of it: Redis runs a script atomically), and
the stream id Redis assigns *is* the event id, so ids are global, ordered and resumable
on any instance. The same script writes each event to its project's window, a stream
of that project's newest ``project_history_size`` events under the same id
(:mod:`trio_sse.runtime.backends.redis_windows`; the layout is in docs/deploy.md). Each
instance runs one reader task — ``XREAD BLOCK`` from the last id it saw — that turns
entries into events (wire bytes encoded once per instance) and hands them to the hub:
one Redis read per instance, not per connection.

Replays are served from the instance's own copy of the events it has read when the
client's id is in it (no Redis round trip, and exactly consistent with live delivery),
and otherwise from Redis: a client coming from another instance, or from before this
instance started. A stream with a project filter reads that project's window and the
broadcasts' when they hold all it needs; otherwise ``XRANGE`` on the shared stream.
Live events a replay already covered are dropped by the connection (ids are ordered),
so the two merge with no gap and no duplicate.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import coredis
import coredis.exceptions
import orjson
import trio
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from ...core.events import Event, EventOrder, make_event, parse_event_id
from ...core.history import History, Replay
from ...core.retention import NEVER
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
from .redis_windows import APPEND_SCRIPT, replay_from_windows, rewind_from_windows

__all__ = ["RedisBackend"]

#: Entries per ``XRANGE`` page while replaying from Redis.
REPLAY_PAGE = 1000
#: Seconds between refreshes of the shared stream's figures for ``/sse/stats``.
INFO_INTERVAL = 2.0


class RedisBackend:
    """Events in one Redis stream shared by every instance (see the module docstring)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        history_size: int,
        *,
        stream_key: str = "trio_sse:events",
        project_history_size: int = 0,
        history_ttl: float = 0.0,
        read_pace: float = 0.0,
    ) -> None:
        self.url = url
        self.stream_key = stream_key
        self.history_size = history_size
        self.project_history_size = project_history_size
        self.history_ttl = history_ttl
        #: The events this instance has read, for replays that need no round trip
        #: (the same retention rule as the shared streams: global and project windows).
        self.history = History(history_size, project_capacity=project_history_size, ttl=history_ttl)
        #: Wall-clock milliseconds, for ``history_ttl`` (replaceable: tests move it on).
        self.wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
        self._append_script: Script[bytes] = Script(script=APPEND_SCRIPT)
        self._client: coredis.Redis[bytes] | None = None
        self._status = "starting"
        #: The task that reads the shared stream (its position, its gap checks).
        self._reader = StreamReader(stream_key, self.history, lambda: self._redis, self._mark, pace=read_pace)
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

    @contextmanager
    def _reaching_redis(self, errors: tuple[type[BaseException], ...] = REDIS_ERRORS) -> Iterator[None]:
        """A Redis error (or a timeout, when ``errors`` names it) inside the block marks the
        backend degraded and becomes :class:`BackendUnavailable`: the error every caller
        above the backend handles (HTTP 503, or a stream ended to be resumed later)."""
        try:
            yield
        except errors as exc:
            self._mark(False)
            raise BackendUnavailable(f"the Redis backend is unreachable ({type(exc).__name__})") from None

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

    async def catch_up(self) -> None:
        """Read now what the reader's pace holds back: see :meth:`StreamReader.catch_up`."""
        await self._reader.catch_up()

    async def refresh_stats(self) -> None:
        """Ask Redis for the shared stream's figures now (bounded: a report never hangs on Redis)."""
        if self._client is not None:
            with trio.move_on_after(1.0):
                await self._reader.catch_up()  # what was published before the request is read
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

    def window_key(self, project: str | None) -> str:
        """The stream of one project's window (broadcasts: ``{b}``), hash-tagged per project.

        The tag (``{p:<project>}``) is what a Redis Cluster hashes, so each project's
        window could live on its own shard; see docs/deploy.md for the layout.
        """
        return f"{self.stream_key}:{{b}}" if project is None else f"{self.stream_key}:{{p:{project}}}"

    async def append(self, batch: Sequence[NewEvent]) -> list[Event]:
        """Store ``batch`` in one script run (atomic); delivery follows through the reader.

        Each event goes to the shared stream (``MAXLEN ~ history_size``: Redis gives its
        id) and, with ``project_history_size`` > 0, to its project's window under the
        same id (trimmed to exactly ``project_history_size``); with ``history_ttl``, the
        streams written are also trimmed by ``MINID`` and the windows expire with it.
        Raises :class:`BackendUnavailable` when Redis does not confirm in time: nothing
        was stored unless Redis ran the script and only its answer was lost (the one
        case where a 503 may hide a stored batch; see docs/deploy.md).
        """
        wall_ns = time.time_ns()
        ttl_ms = int(self.history_ttl * 1000)
        keys = [self.stream_key, *(self.window_key(item.project_id) for item in batch)]
        args: list[str | bytes | int] = [
            self.history_size,
            self.project_history_size,
            f"{self.wall_ms() - ttl_ms}-0" if ttl_ms else "",
            ttl_ms,
        ]
        for item in batch:
            fields = self._fields(item, wall_ns)
            args.append(2 * len(fields))
            for name, value in fields.items():
                args += [name, value]
        with self._reaching_redis(REDIS_OR_TIMEOUT), trio.fail_after(PUBLISH_TIMEOUT):
            ids: Any = await self._append_script(keys=keys, args=args, client=self._redis)
        now = trio.current_time()
        events = []
        for item, raw in zip(batch, cast("list[bytes | str]", ids), strict=True):
            order = parse_event_id(entry_text(raw))
            assert order is not None
            events.append(make_event(order, item.type, item.data_json, item.project_id, now, item.tags))
        return events

    def _ttl_floor(self) -> EventOrder:
        """Entries older than this are past ``history_ttl`` (``NEVER``: no age limit)."""
        if not self.history_ttl:
            return NEVER
        return (self.wall_ms() - int(self.history_ttl * 1000), 0)

    def _filter_keys(self, project: str | None) -> list[str] | None:
        """The windows a project filter reads (its own and the broadcasts'); ``None``: none."""
        if project is None or not self.project_history_size:
            return None
        return [self.window_key(project), self.window_key(None)]

    async def replay_after(
        self, last_event_id: str, matches: Callable[[Event], bool], *, project: str | None = None
    ) -> Replay:
        """Replay from the local copy when it can answer, else from Redis.

        From Redis, a stream with a project filter reads that project's window and the
        broadcasts' when they hold everything after the id (see
        :mod:`~trio_sse.runtime.backends.redis_windows`); otherwise, and for a stream
        with no project filter, the shared stream. Raises :class:`BackendUnavailable`
        when Redis is needed and cannot be reached.
        """
        if last_event_id in self.history:
            replay = self.history.replay_after(last_event_id, matches, project=project, now=trio.current_time())
            if replay.reset is None:
                return replay
            # The copy lost something after the id; Redis trims approximately (it keeps
            # at least as much), so it may still answer.
        order = parse_event_id(last_event_id)
        if order is None:
            return Replay([], "unknown_id")
        if order < self._ttl_floor():
            return Replay([], "history_gap")  # past history_ttl: not replayable, wherever it is stored
        with self._reaching_redis():
            keys = self._filter_keys(project)
            if keys is not None:
                events = await replay_from_windows(self._redis, keys, last_event_id, order, matches)
                if events is not None:
                    return Replay(events)
            return await self._replay_from_redis(last_event_id, order, matches)

    async def _replay_from_redis(
        self, last_event_id: str, order: EventOrder, matches: Callable[[Event], bool]
    ) -> Replay:
        """From the shared stream: ``XRANGE`` pages from the id on, so the cost follows the
        entries after it, not the stream's length."""
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

    async def rewind(self, count: int, matches: Callable[[Event], bool], *, project: str | None = None) -> list[Event]:
        """The newest ``count`` matching events, read from the newest end.

        A project filter reads its window and the broadcasts' first (see
        :func:`~trio_sse.runtime.backends.redis_windows.rewind_from_windows`); otherwise,
        or when those cannot answer alone, the shared stream with ``XREVRANGE`` pages,
        stopping at ``count`` matches, after ``history_size`` entries (what the stream
        keeps) or at ``history_ttl``. Raises :class:`BackendUnavailable` when Redis
        cannot be reached.
        """
        if count <= 0:
            return []
        floor = self._ttl_floor()
        with self._reaching_redis():
            keys = self._filter_keys(project)
            if keys is not None:
                windowed = await rewind_from_windows(self._redis, keys, count, matches, floor)
                if windowed is not None:
                    return windowed
            found = await self._rewind_shared(count, matches, floor)
        found.reverse()
        return found

    async def _rewind_shared(self, count: int, matches: Callable[[Event], bool], floor: EventOrder) -> list[Event]:
        """Newest first: up to ``count`` matching entries of the shared stream."""
        found: list[Event] = []
        end, scanned = "+", 0
        while scanned < self.history_size:
            page = await self._redis.xrevrange(self.stream_key, end, "-", count=REPLAY_PAGE)
            for entry in page:
                event = event_from_entry(entry)
                if event.order < floor:
                    return found
                if matches(event):
                    found.append(event)
                    if len(found) == count:
                        return found
            scanned += len(page)
            if len(page) < REPLAY_PAGE:
                break
            end = f"({entry_text(page[-1].identifier)}"
        return found

    def history_stats(self) -> dict[str, Any]:
        """The shared stream's figures (refreshed every few seconds) plus this reader's position."""
        return {
            **self._info,
            "capacity": self.history_size,
            "project_capacity": self.project_history_size,
            "ttl": self.history_ttl,
            "read_up_to": self._reader.last_id,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream_key,
            "last_read_id": self._reader.last_id,
            "reconnects": self.reconnects,
            "history_gaps": self._reader.history_gaps,
        }
