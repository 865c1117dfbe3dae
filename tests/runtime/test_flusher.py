"""The hub's flusher: rounds of fan-out, their spacing, and what each connection is handed.

On the virtual clock (``autojump_clock``) with fake transports that record every write
and when it happened. A transport may offer a fake direct writer, like hypercorn's plain
HTTP/1.1 sockets do; then the flusher writes to it without waking the connection's task.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import trio_sse
from trio_sse.core.events import Event
from trio_sse.core.parser import ParsedEvent, SSEParser
from trio_sse.runtime import hub as hub_module
from trio_sse.runtime.connection import Connection
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings

from .support import DEADLINE

EPS = 1e-9


@attrs.define
class Write:
    at: float
    data: bytes
    parts: list[bytes]
    path: str  # "task" (Transport.write) or "direct" (DirectWriter.write_now)


class FakeDirect:
    """A direct writer: takes everything at once, unless ``full`` (then all goes to the backlog)."""

    def __init__(self, transport: FakeTransport) -> None:
        self._transport = transport
        self._pending = b""
        self.full = False
        self.broken = False
        self._drained = trio.Event()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def write_now(self, parts: list[bytes]) -> bool:
        if self.broken:
            raise BrokenPipeError("the client is gone")
        if self._pending or self.full:
            self._pending += b"".join(parts)
            return False
        self._transport.record(parts, "direct")
        return True

    def make_room(self) -> None:
        self.full = False
        self._drained.set()
        self._drained = trio.Event()

    async def drain(self) -> None:
        while self.full:
            await self._drained.wait()
        if self._pending:
            pending, self._pending = self._pending, b""
            self._transport.record([pending], "direct")


class FakeTransport:
    """Records every write (task or direct) in order, and parses the stream they make up."""

    def __init__(self, *, direct: bool = False) -> None:
        self.writes: list[Write] = []
        self.items: list[Any] = []
        self._parser = SSEParser()
        self._changed = trio.Event()
        self.closed = trio.Event()
        self.aborted = trio.Event()
        self.direct: FakeDirect | None = FakeDirect(self) if direct else None

    def record(self, parts: list[bytes], path: str) -> None:
        data = b"".join(parts)
        self.writes.append(Write(trio.current_time(), data, list(parts), path))
        self.items.extend(self._parser.feed(data))
        self._changed.set()
        self._changed = trio.Event()

    async def write(self, data: bytes) -> None:
        self.record([data], "task")

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.aborted.set()

    def events(self) -> list[ParsedEvent]:
        return [item for item in self.items if isinstance(item, ParsedEvent)]

    def ids(self) -> list[str | None]:
        return [e.id for e in self.events() if e.type != "connected"]

    async def wait_events(self, count: int) -> list[ParsedEvent]:
        while len(self.events()) < count:
            await self._changed.wait()
        return self.events()


@asynccontextmanager
async def open_test_hub(**settings: Any) -> AsyncIterator[Hub]:
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(Settings(**{"heartbeat_interval": 1000, **settings})) as hub:
            yield hub


@asynccontextmanager
async def open_connection(
    hub: Hub, transport: FakeTransport, types: list[str] | None = None, **kwargs: Any
) -> AsyncIterator[Connection]:
    """A registered connection whose task runs on ``transport``; ready (idle) on entry."""

    async def serve(*, task_status: trio.TaskStatus[Connection]) -> None:
        async with hub.connect(hub.subscription(types, None), **kwargs) as connection:
            task_status.started(connection)
            await connection.run(transport)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        connection = await nursery.start(serve)
        await transport.wait_events(1)  # connected (and any replay) written
        await trio.sleep(0.001)
        assert connection.direct_ready == (transport.direct is not None)
        yield connection
        transport.closed.set()


async def settle(condition: Callable[[], bool]) -> None:
    """Let other tasks run, without letting virtual time pass, until ``condition`` holds."""
    for _ in range(1000):
        if condition():
            return
        await trio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


def event_writes(transport: FakeTransport) -> list[Write]:
    """Writes after the preamble."""
    return transport.writes[1:]


PATHS = pytest.mark.parametrize("direct", [False, True], ids=["task", "direct"])


# -- one burst, one write ---------------------------------------------------------------------


@PATHS
async def test_events_published_in_one_burst_reach_a_connection_as_one_write(autojump_clock, direct: bool) -> None:
    async with open_test_hub() as hub:
        transport = FakeTransport(direct=direct)
        async with open_connection(hub, transport):
            start = trio.current_time()
            ids = [await hub.publish("commit", {"n": n}) for n in range(10)]
            assert trio.current_time() == start  # publishing never checkpointed
            await transport.wait_events(1 + 10)
            await trio.sleep(1)
            (write,) = event_writes(transport)
            assert write.path == ("direct" if direct else "task")
            assert write.at == start
            assert transport.ids() == ids
            if direct:
                assert len(write.parts) == 1  # the round's joined payload, as is


# -- round spacing ------------------------------------------------------------------------------


@PATHS
async def test_rounds_start_at_least_flush_interval_apart(autojump_clock, direct: bool) -> None:
    async with open_test_hub(flush_interval=0.5) as hub:
        transport = FakeTransport(direct=direct)
        async with open_connection(hub, transport):
            times = []
            for n in range(4):
                await hub.publish("commit", {"n": n})  # right after the previous round
                await transport.wait_events(2 + n)
                times.append(transport.writes[-1].at)
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps == pytest.approx([0.5, 0.5, 0.5], abs=EPS)
            assert len(event_writes(transport)) == 4


@PATHS
async def test_publish_to_write_latency_is_sampled_once_per_write_on_both_paths(autojump_clock, direct: bool) -> None:
    # /sse/stats' latency_ms: the direct path samples per round, the task path per write;
    # both must see the time an event waited for its round.
    async with open_test_hub(flush_interval=0.5) as hub:
        transport = FakeTransport(direct=direct)
        async with open_connection(hub, transport):
            published = []
            for n in range(4):
                published.append(trio.current_time())
                await hub.publish("commit", {"n": n})  # right after the previous round
                await transport.wait_events(2 + n)
            waits = [write.at - at for write, at in zip(event_writes(transport), published, strict=True)]
            assert waits[1:] == pytest.approx([0.5, 0.5, 0.5], abs=EPS)
            assert list(hub.stats.latencies) == pytest.approx(waits, abs=EPS)
            assert hub.snapshot()["latency_ms"] == {"p50": 500.0, "p95": 500.0, "p99": 500.0}


async def test_events_published_while_waiting_for_a_round_all_go_in_that_round(autojump_clock) -> None:
    async with open_test_hub(flush_interval=0.5) as hub:
        transport = FakeTransport(direct=True)
        async with open_connection(hub, transport):
            first = await hub.publish("commit", {"n": 0})
            await transport.wait_events(2)
            start = trio.current_time()
            ids = []
            for n in range(1, 6):
                ids.append(await hub.publish("commit", {"n": n}))
                await trio.sleep(0.05)  # checkpoints between publishes: still one round
            await transport.wait_events(2 + 5)
            writes = event_writes(transport)
            assert len(writes) == 2
            assert writes[1].at == pytest.approx(start + 0.5, abs=EPS)
            assert transport.ids() == [first, *ids]


async def test_a_long_round_spaces_the_next_one_by_round_spacing_times_its_duration(
    autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow round (here: one that takes 2 s) pushes the next back by ROUND_SPACING * 2 s."""
    original = Connection.take

    def slow_take(self: Connection, events: list[Event], payload: bytes, now: float) -> int:
        autojump_clock.jump(2.0)
        return original(self, events, payload, now)

    async with open_test_hub(flush_interval=0.1) as hub:
        transport = FakeTransport(direct=True)
        async with open_connection(hub, transport):
            monkeypatch.setattr(Connection, "take", slow_take)
            await hub.publish("commit", {"n": 0})
            await transport.wait_events(2)
            ended = trio.current_time()
            await hub.publish("commit", {"n": 1})
            await transport.wait_events(3)
            # The second round started ROUND_SPACING * 2 s after the first ended (its take
            # then took 2 s more before writing).
            assert transport.writes[-1].at - ended == pytest.approx(hub_module.ROUND_SPACING * 2.0 + 2.0, abs=EPS)


@PATHS
async def test_an_event_after_a_quiet_period_is_written_without_waiting(autojump_clock, direct: bool) -> None:
    async with open_test_hub(flush_interval=0.5) as hub:
        transport = FakeTransport(direct=direct)
        async with open_connection(hub, transport):
            for n in range(3):
                await trio.sleep(0.5 if n else 7)  # quiet for at least flush_interval
                published_at = trio.current_time()
                event_id = await hub.publish("commit", {"n": n})
                await transport.wait_events(2 + n)
                assert transport.writes[-1].at == published_at
                assert transport.ids()[-1] == event_id


# -- who gets what ------------------------------------------------------------------------------


@pytest.mark.parametrize("replay", [False, True], ids=["live", "resumed"])
async def test_connection_registered_after_an_event_was_committed_does_not_get_it_live(
    autojump_clock, replay: bool
) -> None:
    async with open_test_hub(flush_interval=1) as hub:
        early = FakeTransport(direct=True)
        async with open_connection(hub, early):
            e0 = await hub.publish("commit", {"n": 0})
            await early.wait_events(2)  # round 1 at t; round 2 not before t + 1
            e1 = await hub.publish("commit", {"n": 1})
            assert [e.id for e in hub._flusher.outbox] == [e1]  # committed, not yet fanned out
            late = FakeTransport(direct=True)
            kwargs = {"last_event_id": e0} if replay else {}
            async with open_connection(hub, late, **kwargs):
                assert hub._flusher.outbox, "the round must come after the registration"
                await trio.sleep(2)  # round 2 has run
                assert early.ids() == [e0, e1]
                e2 = await hub.publish("commit", {"n": 2})
                await late.wait_events(1 + replay + 1)
                await trio.sleep(2)
                # Live delivery starts after the newest committed event; a resumed stream
                # gets e1 from its replay, exactly once.
                assert late.ids() == ([e1, e2] if replay else [e2])
                assert early.ids() == [e0, e1, e2]


@PATHS
async def test_subscription_change_fans_out_earlier_events_under_the_old_filters_first(
    autojump_clock, direct: bool
) -> None:
    async with open_test_hub(flush_interval=1) as hub:
        a, b = FakeTransport(direct=direct), FakeTransport(direct=direct)
        async with open_connection(hub, a, ["commit"]) as ca, open_connection(hub, b, ["file_change"]) as cb:
            await hub.publish("system_status", {"n": 0})  # a round nobody matches
            await trio.sleep(0.1)  # the next round is 0.9 s away
            c1 = await hub.publish("commit", {"n": 1})
            f1 = await hub.publish("file_change", {"n": 1})
            assert len(hub._flusher.outbox) == 2
            hub.update_subscription(ca.id, ["file_change"])
            hub.update_subscription(cb.id, ["commit"])
            assert hub._flusher.outbox == []
            c2 = await hub.publish("commit", {"n": 2})
            f2 = await hub.publish("file_change", {"n": 2})
            await a.wait_events(4)
            await b.wait_events(4)
            await trio.sleep(2)
            assert [(e.type, e.id) for e in a.events()] == [
                ("connected", None),
                ("commit", c1),  # matched the old filters when it was committed
                ("subscription_updated", None),
                ("file_change", f2),  # f1 came before the change: not for this stream
            ]
            assert [(e.type, e.id) for e in b.events()] == [
                ("connected", None),
                ("file_change", f1),
                ("subscription_updated", None),
                ("commit", c2),
            ]
            await trio.sleep(0.001)
            assert ca.direct_ready == cb.direct_ready == direct  # idle again


async def test_connections_with_identical_filters_are_handed_the_same_payload_object(autojump_clock) -> None:
    async with open_test_hub() as hub:
        t1, t2, t3, t4 = (FakeTransport(direct=True) for _ in range(4))
        async with (
            open_connection(hub, t1, ["commit"]),
            open_connection(hub, t2, ["commit"]),
            open_connection(hub, t3, ["commit", "file_change"]),  # same events this round
            open_connection(hub, t4),  # everything
        ):
            ids = [
                await hub.publish("commit", {"n": 1}),
                await hub.publish("commit", {"n": 2}),
                await hub.publish("system_status", {"n": 3}),
            ]
            await t4.wait_events(1 + 3)
            await trio.sleep(0.1)
            (w1,), (w2,), (w3,), (w4,) = (event_writes(t) for t in (t1, t2, t3, t4))
            assert w1.parts[0] is w2.parts[0] is w3.parts[0]
            assert w4.parts[0] is not w1.parts[0]
            assert t1.ids() == t2.ids() == t3.ids() == ids[:2]
            assert t4.ids() == ids

            # A round of one event: everyone gets the event's own wire bytes.
            single = await hub.publish("commit", {"n": 4})
            await t4.wait_events(1 + 4)
            await trio.sleep(0.1)
            payloads = [event_writes(t)[-1].parts[0] for t in (t1, t2, t3, t4)]
            assert all(p is payloads[0] for p in payloads)
            assert hub.backend.history.newest.id == single  # type: ignore[attr-defined]
            assert payloads[0] is hub.backend.history.newest.wire  # type: ignore[attr-defined]


async def test_queued_connections_with_identical_filters_share_one_batch(
    autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without direct writes the shared batch and payload are what ``take`` is handed."""
    taken: list[tuple[Connection, list[Event], bytes]] = []
    original = Connection.take

    def spy(self: Connection, events: list[Event], payload: bytes, now: float) -> int:
        taken.append((self, events, payload))
        return original(self, events, payload, now)

    async with open_test_hub() as hub:
        t1, t2, t3 = (FakeTransport() for _ in range(3))
        async with (
            open_connection(hub, t1, ["commit"]) as c1,
            open_connection(hub, t2, ["commit"]) as c2,
            open_connection(hub, t3, ["file_change"]) as c3,
        ):
            monkeypatch.setattr(Connection, "take", spy)
            for n in range(3):
                await hub.publish("commit", {"n": n})
                await hub.publish("file_change", {"n": n})
            await t3.wait_events(1 + 3)
            await trio.sleep(0.1)
            by_connection = {connection: (events, payload) for connection, events, payload in taken}
            assert len(taken) == 3 and set(by_connection) == {c1, c2, c3}
            assert by_connection[c1][0] is by_connection[c2][0]
            assert by_connection[c1][1] is by_connection[c2][1]
            assert by_connection[c3][1] is not by_connection[c1][1]
            assert by_connection[c1][1] == b"".join(e.wire for e in by_connection[c1][0])
            assert [len(event_writes(t)) for t in (t1, t2, t3)] == [1, 1, 1]


# -- leaving direct mode ------------------------------------------------------------------------


async def test_backlog_hands_over_to_the_task_and_direct_mode_resumes_after_the_drain(autojump_clock) -> None:
    async with open_test_hub(send_timeout=10) as hub:
        transport = FakeTransport(direct=True)
        direct = transport.direct
        assert direct is not None
        async with open_connection(hub, transport) as connection:
            direct.full = True  # the kernel takes nothing more
            first = await hub.publish("commit", {"n": 0})
            await trio.sleep(0.1)
            assert not connection.direct_ready and direct.backlog > 0
            # Later rounds queue behind the backlog instead of writing.
            queued = [await hub.publish("commit", {"n": n}) for n in range(1, 4)]
            await trio.sleep(0.1)
            later = await hub.publish("commit", {"n": 4})
            await trio.sleep(0.1)
            assert connection.pending == 4
            assert transport.ids() == []
            await trio.sleep(5)  # within send_timeout
            direct.make_room()
            await transport.wait_events(1 + 5)
            await trio.sleep(0.1)
            assert transport.ids() == [first, *queued, later]
            assert connection.direct_ready and connection.pending == 0
            assert connection.events_sent == 5 and connection.close_reason is None
            again = await hub.publish("commit", {"n": 5})
            await transport.wait_events(1 + 6)
            assert transport.ids()[-1] == again


async def test_backlog_not_drained_within_send_timeout_closes_the_connection(autojump_clock) -> None:
    async with open_test_hub(send_timeout=4) as hub:
        transport = FakeTransport(direct=True)
        direct = transport.direct
        assert direct is not None
        async with open_connection(hub, transport) as connection:
            direct.full = True
            await hub.publish("commit", {"n": 0})
            start = trio.current_time()
            await transport.aborted.wait()
            assert trio.current_time() - start == pytest.approx(4, abs=EPS)
            assert connection.close_reason == "send_timeout"
            assert not connection.can_finish  # a half-written chunk: no final chunk after it
        assert hub.snapshot()["disconnects"] == {"send_timeout": 1}


async def test_a_failed_direct_write_closes_the_connection_as_client_closed_at_once(autojump_clock) -> None:
    async with open_test_hub() as hub:
        transport = FakeTransport(direct=True)
        assert transport.direct is not None
        async with open_connection(hub, transport) as connection:
            transport.direct.broken = True  # the transport itself has not noticed (wait_closed blocks)
            start = trio.current_time()
            await hub.publish("commit", {"n": 0})
            await settle(lambda: connection.close_reason is not None)
            assert trio.current_time() == start
            assert connection.close_reason == "client_closed"
            assert not connection.can_finish and not connection.direct_ready
            await settle(lambda: not hub.connections())
            assert trio.current_time() == start
        assert hub.snapshot()["disconnects"] == {"client_closed": 1}


@pytest.mark.parametrize("client", ["catches_up", "stuck"])
async def test_shutdown_with_a_direct_backlog_finishes_only_after_a_complete_drain(autojump_clock, client: str) -> None:
    async with open_test_hub(shutdown_grace=3, send_timeout=100) as hub:
        transport = FakeTransport(direct=True)
        direct = transport.direct
        assert direct is not None
        async with open_connection(hub, transport) as connection:
            direct.full = True
            ids = [await hub.publish("commit", {"n": n}) for n in range(2)]
            await trio.sleep(0.1)
            ids.append(await hub.publish("commit", {"n": 2}))  # queued behind the backlog
            await trio.sleep(0.1)
            assert direct.backlog and connection.pending == 1
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hub.aclose)
                if client == "catches_up":
                    await trio.sleep(1)
                    assert transport.ids() == []  # shutdown waits for the backlog
                    direct.make_room()
            if client == "catches_up":
                assert trio.current_time() - start == pytest.approx(1, abs=EPS)
                assert transport.ids() == ids  # the backlog, then what was queued behind it
                assert connection.can_finish
            else:
                # Forced at shutdown_grace: a half-written chunk may not be followed by the final one.
                assert trio.current_time() - start == pytest.approx(3, abs=EPS)
                assert direct.backlog
                assert not connection.can_finish
            assert connection.close_reason == "server_shutdown"
            assert hub.connections() == []
