"""Memory pressure (issue 5): ``memory_limit`` refuses new streams and sheds the fullest.

RSS comes from a fake reader the test sets, and samples are taken on the virtual clock
(``autojump_clock``), so every threshold is checked exactly, without using memory.
"""

from __future__ import annotations

import errno
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

import trio_sse
from trio_sse.http.introspection import health_answer
from trio_sse.runtime.connection import ClientInfo, Connection
from trio_sse.runtime.hub import Hub
from trio_sse.runtime.memory import (
    HISTORY_FLOOR,
    SAMPLE_INTERVAL,
    fullest_first,
    history_keep,
    regrown_bound,
    release_freed_memory,
    shed_count,
)
from trio_sse.runtime.stats import machine_memory_bytes, memory_rss_bytes
from trio_sse.settings import Settings, default_memory_limit
from trio_sse.testing import SSETestClient

from .support import DEADLINE

LIMIT = 1_000_000


class FakeRss:
    """What the hub reads as its resident memory: whatever the test last set."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


@asynccontextmanager
async def pressured_hub(rss: FakeRss, **settings: object) -> AsyncIterator[tuple[Hub, SSETestClient]]:
    config = Settings(**{"memory_limit": LIMIT, "connection_rate": 10_000, **settings})  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(config, read_rss=rss) as hub:
            async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
                yield hub, client


async def after_samples(hub: Hub, count: int) -> None:
    """Sleep until ``count`` more samples have been taken (midway between two samples)."""
    elapsed = trio.current_time() - hub.started_at
    done = int(elapsed // SAMPLE_INTERVAL)
    await trio.sleep_until(hub.started_at + (done + count + 0.5) * SAMPLE_INTERVAL)


async def stream_status(client: SSETestClient) -> tuple[int | None, dict[str, str], object]:
    async with client.stream() as stream:
        if stream.status == 200:
            return 200, stream.headers, (await stream.next_event()).type
        return stream.status, stream.headers, stream.json


# -- the rule, without a hub --------------------------------------------------------------


@pytest.mark.parametrize(
    ("live", "rss", "expected"),
    [
        (10, LIMIT - 1, 0),
        (10, LIMIT, 0),  # the limit itself is allowed
        (10, LIMIT + 1, 1),  # just above: one stream, not none
        (10, int(LIMIT * 1.1), 1),  # 9 % over: ceil(0.9)
        (10, int(LIMIT * 1.5), 4),  # a third over: ceil(3.3)
        (10, LIMIT * 4, 8),  # three quarters over
        (3, LIMIT * 1000, 3),  # never more than there are
        (0, LIMIT * 2, 0),
    ],
)
def test_shed_count_is_the_share_of_streams_equal_to_the_share_of_memory_over_the_limit(
    live: int, rss: int, expected: int
) -> None:
    assert shed_count(live, rss, LIMIT) == expected


@pytest.mark.parametrize(
    ("held", "rss", "expected"),
    [
        (64_000_000, LIMIT, None),  # not over: nothing to do
        (64_000_000, LIMIT + 1_000, 32_000_000),  # a little over: half goes
        (64_000_000, LIMIT + 40_000_000, 24_000_000),  # more over than half: the overshoot goes
        (64_000_000, LIMIT + 100_000_000, HISTORY_FLOOR),  # more than it holds: down to the floor
        (2 * HISTORY_FLOOR, LIMIT + 1_000, HISTORY_FLOOR),
        (HISTORY_FLOOR, LIMIT * 10, None),  # already small: shed streams instead
        (0, LIMIT * 10, None),
    ],
)
def test_history_keep_evicts_half_or_the_overshoot_whichever_is_more_down_to_the_floor(
    held: int, rss: int, expected: int | None
) -> None:
    assert history_keep(held, rss, LIMIT) == expected


def test_the_history_bound_grows_back_by_a_sixteenth_and_never_past_the_setting() -> None:
    assert regrown_bound(0, 1600) == 100
    assert regrown_bound(1550, 1600) == 1600
    assert regrown_bound(5, 10) == 6  # at least a byte


def test_shed_count_is_zero_when_the_guard_is_off() -> None:
    assert shed_count(10, LIMIT * 10, 0) == 0


def test_fullest_first_orders_by_queued_events_and_keeps_order_among_equals() -> None:
    class Q:
        def __init__(self, name: str, pending: int) -> None:
            self.name, self.pending = name, pending

    queues = [Q("a", 1), Q("b", 5), Q("c", 0), Q("d", 5), Q("e", 3)]
    assert [q.name for q in fullest_first(queues, 3)] == ["b", "d", "e"]
    assert fullest_first(queues, 0) == []


# -- settings --------------------------------------------------------------------------------


def test_memory_limit_is_off_in_dev_and_70_percent_of_available_memory_in_prod() -> None:
    assert Settings().memory_limit == 0
    prod = Settings.from_profile("prod")
    assert prod.memory_limit == default_memory_limit() == int(0.7 * machine_memory_bytes())
    assert Settings.from_profile("prod", memory_limit=123).memory_limit == 123


def test_available_memory_is_the_cgroup_limit_when_lower_than_the_machine(tmp_path: Path) -> None:
    unlimited_v2, limited_v1, missing = tmp_path / "memory.max", tmp_path / "limit_in_bytes", tmp_path / "nope"
    unlimited_v2.write_text("max\n")
    limited_v1.write_text("536870912\n")
    machine = machine_memory_bytes(())
    assert machine_memory_bytes((str(unlimited_v2), str(missing))) == machine
    assert machine_memory_bytes((str(unlimited_v2), str(limited_v1))) == min(machine, 536870912)
    huge = tmp_path / "huge"
    huge.write_text(str(machine * 1000))  # cgroup v1 "unlimited"
    assert machine_memory_bytes((str(huge),)) == machine


# -- refusing new streams -------------------------------------------------------------------


async def test_new_streams_are_refused_exactly_above_the_limit_and_admitted_again_below(autojump_clock) -> None:
    rss = FakeRss(LIMIT)
    async with pressured_hub(rss) as (hub, client):
        assert (await stream_status(client))[0] == 200  # at the limit: admitted

        rss.value = LIMIT + 1
        await after_samples(hub, 1)
        status, headers, body = await stream_status(client)
        assert status == 503
        assert headers["retry-after"] == "5"
        assert headers["content-type"].startswith("application/json")
        assert isinstance(body, dict) and body["error"] == "memory_pressure"

        rss.value = LIMIT
        await after_samples(hub, 1)
        assert (await stream_status(client))[0] == 200
        snapshot = hub.snapshot()
        assert snapshot["rejected_by_reason"] == {"memory_pressure": 1}
        assert snapshot["rejected_connections"] == 1


async def test_memory_is_judged_by_the_last_sample_not_between_samples(autojump_clock) -> None:
    rss = FakeRss(LIMIT)
    async with pressured_hub(rss) as (hub, client):
        await after_samples(hub, 0)
        rss.value = LIMIT * 2  # not sampled yet: still admitted
        assert (await stream_status(client))[0] == 200
        await after_samples(hub, 1)
        assert (await stream_status(client))[0] == 503


async def test_health_reports_memory_pressure_as_degraded_while_over(autojump_clock) -> None:
    rss = FakeRss(LIMIT // 2)
    async with pressured_hub(rss) as (hub, client):
        reply = await client.get("/sse/health")
        assert reply.status == 200
        check = reply.json()["checks"]["memory_pressure"]
        assert check == {"state": "ok", "rss_bytes": LIMIT // 2, "memory_limit": LIMIT}

        rss.value = LIMIT + 10
        await after_samples(hub, 1)
        reply = await client.get("/sse/health")
        assert reply.status == 503
        assert reply.json()["status"] == "degraded"
        assert reply.json()["checks"]["memory_pressure"] == {
            "state": "over",
            "rss_bytes": LIMIT + 10,
            "memory_limit": LIMIT,
        }
        stats = (await client.get("/sse/stats")).json()
        assert (stats["memory_limit"], stats["memory_pressure"], stats["memory_rss_bytes"]) == (LIMIT, True, LIMIT + 10)

        rss.value = LIMIT
        await after_samples(hub, 1)
        assert (await client.get("/sse/health")).status == 200


async def test_without_a_memory_limit_nothing_is_sampled_or_refused(autojump_clock) -> None:
    calls: list[int] = []

    def huge() -> int:
        calls.append(1)
        return 1 << 60

    async with trio_sse.open_hub(Settings(), read_rss=huge) as hub:
        await trio.sleep(10 * SAMPLE_INTERVAL)
        assert calls == []  # no sampling task
        async with hub.connect(hub.subscription(None, None)):
            pass
        health = health_answer(hub.statistics(), hub.machine_memory())[1]
        assert health["checks"]["memory_pressure"] == {"state": "off", "rss_bytes": None, "memory_limit": None}
        assert hub.snapshot()["memory_limit"] is None


class FailingRss(FakeRss):
    """A reader that raises what psutil raises at the descriptor limit, while ``failing``."""

    failing = False

    def __call__(self) -> int:
        if self.failing:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.value


async def test_failed_rss_samples_are_skipped_and_counted_and_the_guard_keeps_sampling(autojump_clock) -> None:
    # Issue 11: at the descriptor limit psutil's read of /proc raised EMFILE out of the
    # guard task, which took the hub's nursery (and the process) down.
    rss = FailingRss(LIMIT // 2)
    async with pressured_hub(rss) as (hub, client):
        rss.failing = True
        await after_samples(hub, 5)
        assert hub.memory_samples_failed == 5
        assert (await stream_status(client))[0] == 200  # judged by the last good sample
        reply = await client.get("/sse/health")
        assert reply.status == 200
        assert reply.json()["checks"]["memory_pressure"]["rss_bytes"] == LIMIT // 2
        stats = (await client.get("/sse/stats")).json()
        assert stats["memory_rss_bytes"] == LIMIT // 2  # the last sample stands in
        assert stats["memory_samples_failed"] == 7  # the two reads of the stats and health count too

        rss.failing = False
        rss.value = LIMIT * 2
        await after_samples(hub, 1)  # the guard is still sampling
        assert hub.memory.over
        assert (await stream_status(client))[0] == 503
        assert hub.memory_samples_failed == 7


# -- shedding ---------------------------------------------------------------------------------


async def test_fullest_queues_are_shed_first_and_only_as_many_as_the_rule_asks(autojump_clock) -> None:
    rss = FakeRss(LIMIT)
    async with pressured_hub(rss) as (hub, _), AsyncExitStack() as stack:
        # Ten registered streams whose tasks never run: connection i queues the i events of project p<i>.
        connections: list[Connection] = []
        for i in range(10):
            sub = hub.subscription(None, f"p{i}")
            connections.append(await stack.enter_async_context(hub.connect(sub, client=ClientInfo(f"10.0.0.{i}"))))
        for i in range(10):
            for _ in range(i):
                await hub.publish("commit", {}, project_id=f"p{i}")
        await trio.sleep(0.1)  # one fan-out round
        assert [c.pending for c in connections] == list(range(10))

        def shed() -> list[int]:
            return [i for i, c in enumerate(connections) if c.close_reason == "memory_pressure"]

        await after_samples(hub, 1)
        assert shed() == []  # at the limit nothing is shed

        rss.value = int(LIMIT * 1.1)  # 9 % over: one stream per sample
        await after_samples(hub, 1)
        assert shed() == [9]
        await after_samples(hub, 1)
        assert shed() == [8, 9]

        rss.value = int(LIMIT * 1.5)  # a third over: ceil(8 * 1/3) = 3 of the 8 left
        await after_samples(hub, 1)
        assert shed() == [5, 6, 7, 8, 9]

        rss.value = LIMIT  # recovered: the rest stay
        await after_samples(hub, 3)
        assert shed() == [5, 6, 7, 8, 9]
        # Shed streams are out of the fan-out at once: they get nothing more.
        await hub.publish("commit", {}, project_id="p9")
        await trio.sleep(0.1)
        assert connections[9].pending == 9
    assert hub.snapshot()["disconnects"]["memory_pressure"] == 5


async def test_a_shed_stream_reconnects_after_the_pressure_and_catches_up_from_history(autojump_clock) -> None:
    rss = FakeRss(LIMIT)
    async with pressured_hub(rss) as (hub, client):
        async with client.stream(query={"types": "commit"}) as stream:
            await stream.next_event()
            first = await hub.publish("commit", {"n": 1})
            assert (await stream.next_event()).id == first
            rss.value = LIMIT * 2
            await after_samples(hub, 1)
            await stream.wait_ended(timeout=5)
        assert hub.snapshot()["disconnects"] == {"memory_pressure": 1}
        missed = [await hub.publish("commit", {"n": n}) for n in range(2, 5)]
        async with client.stream(query={"types": "commit"}, headers={"Last-Event-ID": first}) as refused:
            assert refused.status == 503
        rss.value = LIMIT // 2
        await after_samples(hub, 1)
        async with client.stream(query={"types": "commit"}, headers={"Last-Event-ID": first}) as again:
            assert (await again.next_event()).type == "connected"
            assert [e.id for e in await again.events(3, timeout=5)] == missed


# -- history goes first (issue 11, item 4) ------------------------------------------------------

MiB = 1024 * 1024
BASE = 100 * MiB
#: ~64 KB of JSON data: an event that counts ~128 KB against history_bytes (wire + data).
BIG = "x" * 64_000


class HistoryRss:
    """A process whose resident memory is ``base`` plus what its history holds."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.hub: Hub | None = None

    def __call__(self) -> int:
        history = self.hub.backend.history if self.hub is not None else None  # type: ignore[attr-defined]
        return self.base + (history.nbytes if history is not None else 0)


@asynccontextmanager
async def history_pressured_hub(rss: HistoryRss, **settings: object) -> AsyncIterator[tuple[Hub, SSETestClient]]:
    defaults = {"memory_limit": BASE + 4 * MiB, "history_bytes": 8 * MiB, "connection_rate": 10_000}
    config = Settings(**{**defaults, **settings})  # type: ignore[arg-type]
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(config, read_rss=rss) as hub:
            rss.hub = hub
            async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
                yield hub, client


@asynccontextmanager
async def idle_streams(hub: Hub, count: int) -> AsyncIterator[list[Connection]]:
    """``count`` streams of every event on ``hub``, from as many addresses, for the block.
    No task sends to them: what the hub fans out stays queued (``pending``)."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(hub.connect(hub.subscription(None, None), client=ClientInfo(f"10.0.0.{i}")))
            for i in range(count)
        ]


async def fill_history(hub: Hub, nbytes: int) -> list[str]:
    history = hub.backend.history  # type: ignore[attr-defined]
    ids = []
    while history.nbytes < nbytes:
        ids.append(await hub.publish("commit", BIG))
    await trio.sleep(0.1)  # one fan-out round
    return ids


async def test_memory_pressure_evicts_history_before_shedding_any_stream(autojump_clock) -> None:
    rss = HistoryRss(BASE)
    async with history_pressured_hub(rss) as (hub, _), idle_streams(hub, 5) as connections:
        history = hub.backend.history  # type: ignore[attr-defined]
        await fill_history(hub, 8 * MiB - 200_000)  # rss ~4 MiB over the limit, all of it history
        held = history.nbytes
        assert rss() > hub.memory.limit
        assert [c.pending for c in connections] == [len(history)] * 5

        await after_samples(hub, 1)
        assert [c.close_reason for c in connections] == [None] * 5  # no stream shed...
        assert history.nbytes <= held // 2  # ...history was evicted instead, oldest first
        assert history.max_bytes == history_keep(held, BASE + held, BASE + 4 * MiB)
        assert rss() <= hub.memory.limit
        assert hub.snapshot()["disconnects"] == {}

        await after_samples(hub, 1)
        assert not hub.memory.over
        await hub.publish("commit", {"after": "pressure"})
        await trio.sleep(0.1)
        assert [c.pending for c in connections] == [connections[0].pending] * 5  # all still fed


async def test_after_history_pressure_new_streams_are_accepted_and_evicted_ids_get_history_gap(autojump_clock) -> None:
    rss = HistoryRss(BASE)
    async with history_pressured_hub(rss) as (hub, client):
        ids = await fill_history(hub, 8 * MiB - 200_000)
        await after_samples(hub, 1)
        assert hub.memory.over  # this sample found the pressure and evicted history...
        status, _, body = await stream_status(client)
        assert (status, body["error"]) == (503, "memory_pressure")  # type: ignore[index]

        await after_samples(hub, 1)  # ...the next finds memory back under the limit
        assert not hub.memory.over
        assert (await stream_status(client))[0] == 200
        async with client.stream(headers={"Last-Event-ID": ids[0]}) as stream:
            assert (await stream.next_event()).type == "connected"
            reset = await stream.next_event()
            assert (reset.type, json.loads(reset.data)["reason"]) == ("stream_reset", "history_gap")
        async with client.stream(headers={"Last-Event-ID": ids[-2]}) as stream:
            assert (await stream.next_event()).type == "connected"
            assert (await stream.next_event()).id == ids[-1]  # what was kept still replays
        assert hub.snapshot()["disconnects"].get("memory_pressure") is None


async def test_the_history_bound_grows_back_a_sixteenth_per_sample_once_the_pressure_is_gone(autojump_clock) -> None:
    rss = HistoryRss(BASE)
    async with history_pressured_hub(rss) as (hub, client):
        history = hub.backend.history  # type: ignore[attr-defined]
        await fill_history(hub, 8 * MiB - 200_000)
        await after_samples(hub, 1)
        cut = history.max_bytes
        assert cut < 8 * MiB
        bounds = []
        for _ in range(20):
            await after_samples(hub, 1)
            bounds.append(history.max_bytes)
        step = 8 * MiB // 16
        assert bounds[:3] == [cut + step, cut + 2 * step, cut + 3 * step]
        assert bounds[-1] == 8 * MiB
        stats = (await client.get("/sse/stats")).json()["history"]
        assert (stats["max_bytes"], stats["bytes"]) == (8 * MiB, history.nbytes)


async def test_streams_are_shed_only_for_the_overshoot_that_evicting_history_did_not_cover(autojump_clock) -> None:
    rss = HistoryRss(BASE)
    async with history_pressured_hub(rss) as (hub, _), idle_streams(hub, 10) as connections:
        history = hub.backend.history  # type: ignore[attr-defined]
        await fill_history(hub, 2 * MiB)  # history: 2 MiB
        held = history.nbytes
        rss.base = BASE + 10 * MiB  # and 10 MiB over the limit from elsewhere (the streams)
        await after_samples(hub, 1)
        evicted = held - history.nbytes
        assert history.max_bytes == HISTORY_FLOOR  # cut as far as it goes first...
        over = rss.base + held - hub.memory.limit
        assert 0 < evicted < over
        shed = [c for c in connections if c.close_reason == "memory_pressure"]
        # ...then streams for the rest, counted against the memory left after the eviction.
        assert len(shed) == shed_count(10, rss.base + held - evicted, hub.memory.limit) > 0

        await after_samples(hub, 1)  # history already small: only streams go now
        assert history.max_bytes == HISTORY_FLOOR
        assert sum(c.close_reason == "memory_pressure" for c in connections) > len(shed)


async def test_evicting_history_under_pressure_brings_real_rss_back_under_the_limit(autojump_clock) -> None:
    """With the process's real RSS: evicted events must be handed back to the system
    (glibc keeps freed blocks of this size), or RSS stays over and streams are shed."""
    if not release_freed_memory():
        pytest.skip("the C allocator cannot hand free memory back here (not glibc)")
    start = memory_rss_bytes()
    config = Settings(memory_limit=start + 96 * MiB, history_bytes=512 * MiB, connection_rate=10_000)
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(config) as hub, hub.connect(hub.subscription(["file_change"], None)) as stream:
            history = hub.backend.history  # type: ignore[attr-defined]
            while history.nbytes < 160 * MiB:
                await hub.publish("commit", BIG)
            await after_samples(hub, 0)
            assert memory_rss_bytes() > hub.memory.limit
            await after_samples(hub, 4)
            assert not hub.memory.over, (hub.memory.rss - start) // MiB
            assert stream.close_reason is None
            assert history.nbytes > HISTORY_FLOOR
            async with hub.connect(hub.subscription(None, None)):
                pass  # admitted


async def test_history_bytes_bounds_the_history_of_either_backend_without_any_pressure(autojump_clock) -> None:
    from trio_sse.runtime.backends.redis import RedisBackend

    async with trio_sse.open_hub(Settings(history_bytes=1 * MiB)) as hub:
        history = hub.backend.history  # type: ignore[attr-defined]
        for _ in range(50):
            await hub.publish("commit", BIG)
        assert 0 < history.nbytes <= 1 * MiB
        assert len(history) == 1 * MiB // 128_100
        stats = hub.snapshot()["history"]
        assert (stats["size"], stats["bytes"], stats["max_bytes"]) == (len(history), history.nbytes, 1 * MiB)
    # The Redis backend's copy of what it read is memory of this process too.
    redis = RedisBackend("redis://127.0.0.1:1", 10_000)
    Hub(Settings(history_bytes=12_345), redis)
    assert redis.history.max_bytes == 12_345
