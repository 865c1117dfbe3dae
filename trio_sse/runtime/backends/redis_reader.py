"""The Redis backend's reader: one task per instance that reads the shared stream in order.

It keeps its position (the last id it handed on), reads with ``XREAD BLOCK`` from there,
turns entries into events (wire bytes encoded once per instance) and hands them to the
hub: one Redis read per instance, not per connection.

It reads at most once per fan-out round (``pace``, the hub's ``flush_interval``): after
a read that returned entries, the next one waits until ``pace`` after that read returned
(which is when the flusher's round for them starts). Events that land in between go out
in the flusher's next round anyway, no sooner than ``pace`` later, so one read carrying
them all costs them no more than that read's round trip, while one read per publish batch would cost
every instance a round trip and a pipeline per batch — and the less busy an instance,
the more often it would read, each read carrying fewer entries (docs/performance.md,
"CPU per delivery"). After an empty read (an idle stream) the next read is at once,
and blocks: the first event after a quiet spell is not held back.

What it must never do is skip entries in silence. ``XREAD`` returns the entries *still
stored* after an id: if the stream's trim removed some the reader had not read (it came
back from an outage, or fell behind, by more than ``MAXLEN``), or Redis came back from a
restart without them, the reply does not say so. So the reader checks, before it hands a
read on, that its position is still stored (an ``XRANGE`` in pipeline with the
``XREAD``, so no extra round trip; see :mod:`trio_sse.core.stream_gaps` for why that
suffices), and after each reconnection that the stream did not come back older than its
position. When either check fails it calls the hub's ``history_gap``.

The connection pool, publishing and replays are :mod:`trio_sse.runtime.backends.redis`'s:
the reader is given the client and the status callback.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import coredis
import coredis.exceptions
import orjson
import trio

from ...core.events import Event, EventOrder, make_event, parse_event_id
from ...core.history import History
from ...core.stream_gaps import lost_in_restart, missed_before_read
from . import Deliver, HistoryGap

__all__ = [
    "REDIS_ERRORS",
    "REDIS_OR_TIMEOUT",
    "StreamReader",
    "entry_text",
    "event_from_entry",
    "events_from_entries",
    "trimmed_count",
]

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
#: Seconds a new stream (or a stats report) waits at most for the reader's catch-up read.
CATCH_UP_TIMEOUT = 0.25
#: Reconnection backoff bounds (seconds); each attempt waits a random time up to the
#: current bound, which doubles ("full jitter"), so instances do not retry in lockstep.
#: The bound stays short: once Redis is back, publishes through any instance succeed at
#: once, and every second this reader still sleeps is a second of entries the stream's
#: ``MAXLEN`` trim may remove before it reads them (at 11,000 events/s and
#: ``history_size`` 10,000, a 2 s bound lost thousands). An attempt on a Redis that is
#: down costs one refused connection (or ``connect_timeout`` when the host is gone).
BACKOFF_MIN = 0.02
BACKOFF_MAX = 0.25
#: Seconds a publish (and the reader's first question) may wait for Redis before it is answered 503.
PUBLISH_TIMEOUT = 5.0


def entry_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def trimmed_count(info: Any) -> int | None:
    """How many entries a stream has trimmed, from its ``XINFO STREAM``; ``None`` before Redis 7."""
    added = info.get("entries-added")
    return int(added) - int(info["length"]) if added is not None else None


def event_from_entry(entry: Any) -> Event:
    """An event from a stream entry; ``published_at`` mapped onto this process's trio clock."""
    return _decode(entry, trio.current_time(), time.time_ns())


def events_from_entries(entries: Sequence[Any]) -> list[Event]:
    """:func:`event_from_entry` for one read's entries, with both clocks read once for all of them."""
    now, wall_ns = trio.current_time(), time.time_ns()
    return [_decode(entry, now, wall_ns) for entry in entries]


def _decode(entry: Any, now: float, wall_ns: int) -> Event:
    event_id = entry_text(entry.identifier)
    fields = entry.field_values
    order = parse_event_id(event_id)
    assert order is not None, event_id  # Redis stream ids are always <ms>-<seq>
    project = fields.get(b"p")
    wall = fields.get(b"w")
    age = max(0.0, (wall_ns - int(wall)) / 1e9) if wall else 0.0
    tags = fields.get(b"g")  # the event's tags as JSON, when it has any
    return make_event(
        order,
        fields[b"t"].decode(),
        fields[b"d"],
        project.decode() if project is not None else None,
        now - age,
        orjson.loads(tags) if tags is not None else None,
    )


class StreamReader:
    """The reader's position and its checks (see the module docstring)."""

    def __init__(
        self,
        stream_key: str,
        history: History,
        client: Callable[[], coredis.Redis[bytes]],
        mark: Callable[[bool], None],
        *,
        pace: float = 0.0,
    ) -> None:
        self.stream_key = stream_key
        #: Least seconds from a read that returned entries to the next read: the hub's
        #: ``flush_interval``, so at most one read per fan-out round.
        self.pace = pace
        #: How many ``XREAD`` calls the reader has sent (for tests and profiles).
        self.reads = 0
        #: The wait between two reads while it lasts (see :meth:`catch_up`).
        self._pacing: trio.CancelScope | None = None
        #: Set once the read :meth:`catch_up` asked for is handed on.
        self._caught_up: trio.Event | None = None
        #: The events this instance has read (the backend's ring, for replays).
        self.history = history
        #: The backend's running client (raises ``BackendUnavailable`` when it is not running).
        self._client = client
        #: The backend's status: ``mark(True)`` when Redis answered, ``mark(False)`` when not.
        self._mark = mark
        #: The reader's position: the last id it handed on (or where it starts).
        self.last_id = "0-0"
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

    @property
    def _redis(self) -> coredis.Redis[bytes]:
        return self._client()

    @property
    def resume_point(self) -> str | None:
        # Where the reader starts (or has read up to): entries after it reach the hub.
        # "0-0" names no entry; replaying from it would be a history gap, not a resume.
        return None if self.last_id == "0-0" else self.last_id

    async def find_start(self) -> bool:
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
            self.last_id = entry_text(newest[0].identifier)
            self._position_stored = True
        self._mark(True)
        return True

    async def read_forever(self, deliver: Deliver, history_gap: HistoryGap, started: bool) -> None:
        """Read and hand on entries until cancelled; ``started``: :meth:`find_start` has succeeded.

        Redis errors are retried with jittered backoff (at most ``BACKOFF_MAX``) from the
        same position, so nothing Redis stored is missed; a reconnection first checks for
        a restart that lost entries.
        """
        backoff = BACKOFF_MIN
        reconnecting = False
        next_read = -math.inf
        while True:
            if not started:
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
                started = await self.find_start()
                continue
            if self.pace > 0 and trio.current_time() < next_read:
                # One read per fan-out round: what lands before then goes in that read.
                with trio.CancelScope(deadline=next_read) as self._pacing:
                    await trio.sleep_forever()
                self._pacing = None
            try:
                if reconnecting:
                    await self._check_restart(history_gap)
                entries = await self._read_once(history_gap)
            except REDIS_ERRORS:
                self._read_done()
                self._mark(False)
                reconnecting = True
                await trio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            reconnecting = False
            self._mark(True)
            backoff = BACKOFF_MIN
            if entries:
                # From the reply, not from the request: a blocking read may have waited.
                next_read = trio.current_time() + self.pace
                self._hand_on(entries, deliver)
            self._read_done()

    async def _read_once(self, history_gap: HistoryGap) -> tuple[Any, ...]:
        """One ``XREAD`` from the position; a possible gap before its entries is reported first.

        Raises a Redis error with nothing reported or handed on: the next try reads
        from the same position again.
        """
        # The check rides in the same round trip: Redis runs the second command once
        # the XREAD has returned. A position still stored then was stored at the read,
        # so nothing after it had been trimmed (trims remove a prefix); a floor is
        # judged by the stream's trim count instead (only at a start or after a loss).
        position = self.last_id
        self.reads += 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                # A read asked for by catch_up() answers at once, entries or not.
                block = None if self._caught_up is not None else READ_BLOCK_MS
                read = pipe.xread({self.stream_key: position}, count=READ_COUNT, block=block)
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
            still, trimmed = False, trimmed_count(await info)
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
        position = parse_event_id(self.last_id)
        assert position is not None
        if not lost_in_restart(position, was_stored=self._position_stored, last_generated=last_generated):
            return
        self._report_gap(history_gap)
        if facts is None:
            self._position_stored, self._trimmed_at_floor = False, 0
        else:
            self.last_id, self._position_stored = facts[0], True

    async def catch_up(self) -> None:
        """If the reader is waiting out its pace, read now and return once that read is handed on.

        For a new stream (what was published before it then goes to its replay, not
        live) and ``/sse/stats`` (its ``last_read_id`` includes what was published before
        the request), as when the reader read every batch as it landed. A reader already
        reading (or blocking on an idle stream) is left alone, with no checkpoint; the
        wait is bounded by ``CATCH_UP_TIMEOUT`` (Redis slow or gone).
        """
        if self._pacing is None:
            return
        if self._caught_up is None:
            self._caught_up = trio.Event()
        done = self._caught_up
        self._pacing.cancel()
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            await done.wait()

    def _read_done(self) -> None:
        if self._caught_up is not None:
            self._caught_up.set()
            self._caught_up = None

    def _report_gap(self, history_gap: HistoryGap) -> None:
        self.history_gaps += 1
        history_gap(self.resume_point)

    def _hand_on(self, entries: Sequence[Any], deliver: Deliver) -> None:
        events = events_from_entries(entries)
        self.last_id, self._position_stored = events[-1].id, True
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
        return entry_text(info["last-generated-id"]), trimmed_count(info)
