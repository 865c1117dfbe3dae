"""The Redis reader reads at most once per fan-out round (issue 14, item 4).

Each worker runs its own reader; one ``XREAD`` pipeline per publish batch that lands
made the per-delivery CPU of two workers grow with how often each read (the less busy
worker read more often, fewer entries a read). These tests drive :class:`StreamReader`
against an in-process stand-in for Redis's stream commands, under ``autojump_clock``,
and count the reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, NamedTuple

import trio

from trio_sse.core.events import Event
from trio_sse.core.history import History
from trio_sse.runtime.backends.redis_reader import StreamReader

KEY = "test:pacing"
FLUSH_INTERVAL = 0.05


class Entry(NamedTuple):
    identifier: bytes
    field_values: dict[bytes, bytes]


class _Pending:
    """A pipelined command's reply: known once the pipeline has run."""

    value: Any = None

    def __await__(self) -> Any:
        yield from ()
        return self.value


class FakeStream:
    """``XADD``, ``XREAD [BLOCK]``, ``XRANGE``, ``XREVRANGE``, ``XINFO STREAM`` of one stream."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.seq = 0
        self._changed = trio.Event()
        #: (trio time, entries returned) of every XREAD.
        self.reads: list[tuple[float, int]] = []

    def add(self, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            self.seq += 1
            event_id = f"1-{self.seq}"
            self.entries.append(Entry(event_id.encode(), {b"t": b"update", b"d": b"{}"}))
            ids.append(event_id)
        self._changed.set()
        self._changed = trio.Event()
        return ids

    def after(self, position: str) -> list[Entry]:
        seq = int(position.split("-")[1])
        return [e for e in self.entries if int(e.identifier.split(b"-")[1]) > seq]

    async def xread(self, position: str, count: int, block: int | None) -> dict[bytes, tuple[Entry, ...]] | None:
        with trio.move_on_after(0 if block is None else block / 1000):
            while not self.after(position):
                await self._changed.wait()
        found = tuple(self.after(position)[:count])
        self.reads.append((trio.current_time(), len(found)))
        return {KEY.encode(): found} if found else None

    def info(self) -> dict[str, Any]:
        last = self.entries[-1].identifier.decode() if self.entries else "0-0"
        return {"length": len(self.entries), "entries-added": len(self.entries), "last-generated-id": last}

    # -- the client ---------------------------------------------------------------------

    async def xrevrange(self, key: str, end: str, start: str, count: int) -> list[Entry]:
        return self.entries[-1:]

    async def xinfo_stream(self, key: str) -> dict[str, Any]:
        return self.info()

    def pipeline(self, transaction: bool) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, stream: FakeStream) -> None:
        self._stream = stream
        self._commands: list[tuple[str, tuple[Any, ...], _Pending]] = []

    def _queue(self, name: str, *args: Any) -> _Pending:
        pending = _Pending()
        self._commands.append((name, args, pending))
        return pending

    def xread(self, streams: dict[str, str], count: int, block: int | None) -> _Pending:
        return self._queue("xread", streams[KEY], count, block)

    def xrange(self, key: str, start: str, end: str, count: int) -> _Pending:
        return self._queue("xrange", start)

    def xinfo_stream(self, key: str) -> _Pending:
        return self._queue("xinfo")

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for name, args, pending in self._commands:  # in order, like Redis runs a pipeline
            if name == "xread":
                pending.value = await self._stream.xread(*args)
            elif name == "xrange":
                pending.value = [e for e in self._stream.entries if e.identifier.decode() == args[0]]
            else:
                pending.value = self._stream.info()


async def run_burst(pace: float) -> tuple[FakeStream, dict[str, float], dict[str, float], StreamReader]:
    """Publish 10 batches of 10 events 5 ms apart (all within one round), after a quiet spell."""
    stream = FakeStream()
    stream.add(1)  # published before the reader starts: not delivered
    reader = StreamReader(KEY, History(1000), lambda: stream, lambda ok: None, pace=pace)  # type: ignore[arg-type,return-value]
    published: dict[str, float] = {}
    delivered: dict[str, float] = {}

    def deliver(events: Sequence[Event]) -> None:
        for event in events:
            delivered[event.id] = trio.current_time()

    def gap(after_id: str | None) -> None:
        raise AssertionError(f"no gap here (after {after_id})")

    with trio.fail_after(30):
        assert await reader.find_start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_forever, deliver, gap, True)
            await trio.sleep(1.0)  # quiet: the reader waits in a blocking read
            for _ in range(10):
                for event_id in stream.add(10):
                    published[event_id] = trio.current_time()
                await trio.sleep(0.005)
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    return stream, published, delivered, reader


async def test_a_burst_within_one_round_is_read_at_most_once_per_round(autojump_clock: Any) -> None:
    stream, published, delivered, reader = await run_burst(FLUSH_INTERVAL)
    assert sorted(delivered) == sorted(published)  # every event, none of those before the start
    burst_start = min(published.values())
    carrying = [t for t, n in stream.reads if n]
    # The first entries after the quiet spell are read at once; what lands during the
    # next 45 ms is read in one more read, a round after the first.
    assert carrying[0] == burst_start
    assert len(carrying) == 2, stream.reads
    assert carrying[1] - carrying[0] >= FLUSH_INTERVAL
    # The latency it adds stays within one round.
    assert max(delivered[i] - published[i] for i in published) <= FLUSH_INTERVAL
    assert reader.reads >= len(stream.reads)  # the last one is still blocking when the test ends


async def test_without_a_pace_each_landing_batch_is_its_own_read(autojump_clock: Any) -> None:
    # The cost the pacing removes (and what the reader does when flush_interval is 0).
    stream, published, delivered, _ = await run_burst(0.0)
    assert sorted(delivered) == sorted(published)
    assert len([n for _, n in stream.reads if n]) == 10
    assert max(delivered[i] - published[i] for i in published) == 0


async def test_catch_up_reads_at_once_what_the_pace_would_hold_back(autojump_clock: Any) -> None:
    # /sse/stats asks for it: its last_read_id must include what was published before it.
    stream = FakeStream()
    reader = StreamReader(KEY, History(1000), lambda: stream, lambda ok: None, pace=FLUSH_INTERVAL)  # type: ignore[arg-type,return-value]
    delivered: list[str] = []
    with trio.fail_after(30):
        assert await reader.find_start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read_forever, lambda events: delivered.extend(e.id for e in events), print, True)
            await trio.sleep(1.0)
            stream.add(1)
            await trio.sleep(0.001)  # read at once after the quiet spell; the pace starts
            last = stream.add(1)[-1]
            asked = trio.current_time()
            await reader.catch_up()
            assert trio.current_time() == asked and reader.last_id == last and delivered[-1] == last
            await reader.catch_up()  # nothing to wait out: returns at once (no blocking read)
            assert trio.current_time() == asked
            nursery.cancel_scope.cancel()
