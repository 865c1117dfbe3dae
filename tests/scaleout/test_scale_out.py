"""Several instances on one real Redis: shared ids, failover, Redis restarts, workers.

Every test here runs against a real ``redis-server`` and real trio_sse servers on
127.0.0.1 — in-process hypercorn for the instances a test keeps, a subprocess for the
one it kills with SIGKILL, and ``hypercorn --workers 2`` for the multi-worker case.
"""

from __future__ import annotations

import bisect
import itertools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import ServerSentEvent, aconnect_sse
from redis_server import RedisServer, free_port

from trio_sse.core.events import parse_event_id

# Each test picks its Redis itself: run once, not once per backend.
pytestmark = pytest.mark.one_backend

TIMEOUT = 15.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared(redis_server: RedisServer) -> dict[str, Any]:
    """Settings that make instances share one fresh stream on the session's Redis."""
    return {"backend": redis_server.url, "redis_stream": f"test:{uuid.uuid4().hex}"}


async def next_sse(events: AsyncIterator[ServerSentEvent], timeout: float = TIMEOUT) -> ServerSentEvent:
    with trio.fail_after(timeout):
        return await anext(events)


async def next_event(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent:
    """The next event with an id (skips ``connected`` and other system events)."""
    while True:
        event = await next_sse(events)
        if event.id:
            return event


async def wait_until(condition: Any, timeout: float = TIMEOUT, interval: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 - servers polled from outside, on the real clock
            await trio.sleep(interval)


async def wait_healthy(base: str, timeout: float = 20) -> None:
    """Until a server started in another process answers ``/sse/health`` with 200."""
    async with httpx.AsyncClient(timeout=1.0) as probe:

        async def up() -> bool:
            try:
                return (await probe.get(f"{base}/sse/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, timeout=timeout)


def in_order(ids: list[str]) -> bool:
    orders = [parse_event_id(i) for i in ids]
    return all(a is not None and b is not None and a < b for a, b in itertools.pairwise(orders))


# -- two instances ------------------------------------------------------------------------


async def test_event_published_on_one_instance_reaches_subscribers_of_both_with_one_id(
    live_server_factory, shared
) -> None:
    async with (
        live_server_factory(**shared) as a,
        live_server_factory(**shared) as b,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", f"{a.base_url}/sse/events") as on_a,
        aconnect_sse(http, "GET", f"{b.base_url}/sse/events?types=commit") as on_b,
    ):
        events_a, events_b = on_a.aiter_sse(), on_b.aiter_sse()
        assert (await next_sse(events_a)).event == "connected"
        assert (await next_sse(events_b)).event == "connected"
        ids = []
        for n, base in enumerate([b.base_url, a.base_url, b.base_url]):
            reply = await http.post(f"{base}/sse/publish", json={"event_type": "commit", "data": {"n": n}})
            assert reply.status_code == 202
            ids.append(reply.json()["id"])
        got_a = [await next_event(events_a) for _ in ids]
        got_b = [await next_event(events_b) for _ in ids]
        assert [e.id for e in got_a] == ids == [e.id for e in got_b]
        assert [e.json() for e in got_a] == [{"n": 0}, {"n": 1}, {"n": 2}] == [e.json() for e in got_b]
        assert in_order(ids)
        # Both instances report the shared stream's history.
        stats_a = (await http.get(f"{a.base_url}/sse/stats")).json()
        stats_b = (await http.get(f"{b.base_url}/sse/stats")).json()
        assert stats_a["history"]["newest_id"] == stats_b["history"]["newest_id"] == ids[-1]
        assert stats_a["events_published"] == 1 and stats_b["events_published"] == 2


async def test_replay_on_another_instance_after_an_id_it_never_delivered(live_server_factory, shared) -> None:
    async with live_server_factory(**shared) as a, httpx.AsyncClient(timeout=TIMEOUT) as http:
        batch = [{"event_type": "task_update", "data": n, "project_id": "p1" if n % 2 else "p2"} for n in range(6)]
        ids = (await http.post(f"{a.base_url}/sse/publish", json={"events": batch})).json()["ids"]
        # B starts after the events were published: its local ring is empty, the replay
        # comes from XRANGE on the shared stream, under the stream's filters.
        async with (
            live_server_factory(**shared) as b,
            aconnect_sse(
                http, "GET", f"{b.base_url}/sse/events?project=p1", headers={"Last-Event-ID": ids[0]}
            ) as source,
        ):
            events = source.aiter_sse()
            replayed = [await next_event(events) for _ in range(3)]
            assert [e.id for e in replayed] == [ids[1], ids[3], ids[5]]
            live = (await http.post(f"{a.base_url}/sse/publish", json={"event_type": "commit", "data": "x"})).json()
            assert (await next_event(events)).id == live["id"]


async def test_unknown_and_trimmed_ids_reset_on_another_instance(live_server_factory, shared) -> None:
    async with live_server_factory(**shared, history_size=5) as a, httpx.AsyncClient(timeout=TIMEOUT) as http:
        batch = [{"event_type": "commit", "data": n} for n in range(300)]
        ids = (await http.post(f"{a.base_url}/sse/publish", json={"events": batch})).json()["ids"]
        async with live_server_factory(**shared, history_size=5) as b:
            for last_id, reason in [(ids[0], "history_gap"), ("99999999999999-0", "unknown_id")]:
                async with aconnect_sse(
                    http, "GET", f"{b.base_url}/sse/events", headers={"Last-Event-ID": last_id}
                ) as source:
                    events = source.aiter_sse()
                    assert (await next_sse(events)).event == "connected"
                    reset = await next_sse(events)
                    assert reset.event == "stream_reset"
                    assert reset.json() == {"reason": reason, "last_event_id": last_id}


# -- failover -----------------------------------------------------------------------------


@asynccontextmanager
async def serve_subprocess(settings: dict[str, Any]) -> AsyncIterator[tuple[str, trio.Process]]:
    """``python -m trio_sse serve`` in its own process (so a test can SIGKILL it)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRIO_SSE_LOG_LEVEL": "warning",
        **{f"TRIO_SSE_{k.upper()}": str(v) for k, v in settings.items()},
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_sse", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base)
        yield base, process
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()


async def test_failover_a_client_of_a_killed_instance_resumes_on_another_exactly_once(
    live_server_factory, shared
) -> None:
    total, kill_after = 120, 40
    published: list[str] = []
    received: list[str] = []
    async with (
        serve_subprocess(shared) as (a_url, a_process),
        live_server_factory(**shared) as b,
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        trio.open_nursery() as nursery,
    ):

        async def publish_steadily() -> None:
            for n in range(total):
                reply = await http.post(f"{b.base_url}/sse/publish", json={"event_type": "progress_update", "data": n})
                assert reply.status_code == 202
                published.append(reply.json()["id"])
                await trio.sleep(0.01)

        async with aconnect_sse(http, "GET", f"{a_url}/sse/events") as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            nursery.start_soon(publish_steadily)
            # The kernel closes a killed process's sockets: the client must see the stream
            # end or break at once, not hang until a timeout.
            with pytest.raises((httpx.TransportError, StopAsyncIteration)):
                while True:
                    received.append((await next_event(events)).id)
                    if len(received) == kill_after:
                        a_process.send_signal(signal.SIGKILL)  # instance A dies mid-stream
        assert len(received) >= kill_after
        # The client reconnects to B with its last id while events keep coming.
        async with aconnect_sse(http, "GET", f"{b.base_url}/sse/events", headers={"Last-Event-ID": received[-1]}) as s:
            events = s.aiter_sse()
            while len(received) < total:
                received.append((await next_event(events)).id)
    assert received == published
    assert len(set(received)) == total and in_order(received)


async def test_a_fresh_instance_names_where_its_streams_start_before_its_first_delivery(
    live_server_factory, shared
) -> None:
    # Its reader starts after the newest entry older than the instance: a stream opened
    # before anything new arrives must still get that point as its Last-Event-ID header,
    # or a client dropped before its first event would reconnect with no id and lose events.
    async with live_server_factory(**shared) as a, httpx.AsyncClient(timeout=TIMEOUT) as http:
        older = (await http.post(f"{a.base_url}/sse/publish", json={"event_type": "commit", "data": 0})).json()["id"]
        await trio.sleep(0.01)  # a later millisecond: the new instance starts after it
        async with live_server_factory(**shared) as b:
            async with aconnect_sse(http, "GET", f"{b.base_url}/sse/events") as source:
                assert (await next_sse(source.aiter_sse())).event == "connected"
                assert source.response.headers["last-event-id"] == older
            # Dropped before its first event; published meanwhile (on the other instance):
            missed = (await http.post(f"{a.base_url}/sse/publish", json={"event_type": "commit", "data": 1})).json()
            headers = {"Last-Event-ID": older}
            async with aconnect_sse(http, "GET", f"{b.base_url}/sse/events", headers=headers) as resumed:
                assert (await next_event(resumed.aiter_sse())).id == missed["id"]


# -- Redis down and back ------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A persistent redis-server of the test's own (it is stopped and restarted)."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restart_loses_no_accepted_event_and_health_recovers(live_server_factory, own_redis) -> None:
    accepted: list[str] = []
    refused: set[int] = set()  # the `data` of each publish answered 503
    received: list[tuple[str, int]] = []  # (id, data)
    async with (
        live_server_factory(backend=own_redis.url, redis_stream="restart", heartbeat_interval=1) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", "/sse/events") as source,
        trio.open_nursery() as nursery,
    ):
        events = source.aiter_sse()
        assert (await next_sse(events)).event == "connected"
        stop = trio.Event()
        publisher_done = trio.Event()

        async def publish_until_stopped() -> None:
            n = 0
            while not stop.is_set():
                reply = await http.post("/sse/publish", json={"event_type": "commit", "data": n})
                if reply.status_code == 202:
                    accepted.append(reply.json()["id"])
                else:
                    assert reply.status_code == 503, reply.text
                    assert reply.json()["error"] == "backend_unavailable"
                    refused.add(n)
                n += 1
                await trio.sleep(0.01)
            publisher_done.set()

        async def receive_forever() -> None:
            async for event in events:
                if event.id:
                    received.append((event.id, event.json()))

        async def health() -> tuple[int, dict[str, Any]]:
            reply = await http.get("/sse/health")
            return reply.status_code, reply.json()

        nursery.start_soon(receive_forever)
        nursery.start_soon(publish_until_stopped)
        await wait_until(lambda: _true(len(accepted) >= 20))
        await trio.to_thread.run_sync(own_redis.stop)

        async def degraded() -> bool:
            status, body = await health()
            return status == 503 and body["status"] == "degraded"

        await wait_until(degraded)
        await wait_until(lambda: _true(len(refused) >= 3))
        stats = (await http.get("/sse/stats")).json()
        assert stats["backend"]["status"] == "degraded" and stats["active_connections"] == 1
        await trio.to_thread.run_sync(own_redis.start)

        async def healthy() -> bool:
            status, body = await health()
            return status == 200 and body["status"] == "ok"

        await wait_until(healthy)
        count = len(accepted)
        await wait_until(lambda: _true(len(accepted) >= count + 20))
        stop.set()
        # Let the request in flight finish and be counted: cancelling it could drop a
        # 202 the server did send (the event is then received but not "accepted").
        await publisher_done.wait()
        await wait_until(lambda: _true(len(received) >= len(accepted)))
        nursery.cancel_scope.cancel()
    assert len(refused) >= 3
    received_ids = [event_id for event_id, _ in received]
    assert [i for i in received_ids if i in set(accepted)] == accepted  # every accepted event, once, in order
    assert len(set(received_ids)) == len(received_ids) and in_order(received_ids)
    # The documented edge case (docs/deploy.md): Redis stored a batch but its reply was
    # lost, so the publisher got a 503. Anything received beyond the accepted events
    # must be such a publish -- never an invented or duplicated one.
    extra = [data for event_id, data in received if event_id not in set(accepted)]
    assert set(extra) <= refused, (extra, sorted(refused))


async def _true(value: bool) -> bool:
    return value


# -- entries the reader never read: delivered, or a reset where they were -------------------

RESET = "stream_reset"


def silently_lost(accepted: list[str], items: list[str]) -> list[str]:
    """Accepted ids a subscriber neither received nor was told about.

    ``items`` is what the stream carried, in order: event ids, and ``RESET`` for each
    ``stream_reset``. An accepted id that did not arrive is covered only by a reset
    right where it belongs: after the last id received before it, before the next.
    """
    received = [parse_event_id(i) for i in items if i != RESET]
    assert all(o is not None for o in received)
    resets_at: set[int] = set()  # how many ids had arrived when each reset did
    count = 0
    for item in items:
        if item == RESET:
            resets_at.add(count)
        else:
            count += 1
    got = set(items)
    return [i for i in accepted if i not in got and bisect.bisect_left(received, parse_event_id(i)) not in resets_at]


async def read_items(response: httpx.Response, items: list[str], arrived: list[float]) -> None:
    """Ids and ``RESET`` markers of a raw SSE response (cheap enough for 10,000 events/s)."""
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            items.append(line[3:].strip())
            arrived[0] = trio.current_time()
        elif line == f"event: {RESET}":
            items.append(RESET)


@asynccontextmanager
async def reading_a_first_event(
    live_server_factory: Any, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, list[str], str]]:
    """A live server with ``settings`` and a stream on it whose ids and resets go to
    ``items``, once it has received a first event published there: ``(http, items, first)``."""
    async with (
        live_server_factory(**settings) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
        http.stream("GET", "/sse/events") as response,
        trio.open_nursery() as nursery,
    ):
        items: list[str] = []
        nursery.start_soon(read_items, response, items, [trio.current_time()])
        first = (await http.post("/sse/publish", json={"event_type": "commit", "data": 0})).json()["id"]
        await wait_until(lambda: _true(first in items))
        yield http, items, first
        nursery.cancel_scope.cancel()


def test_silently_lost_counts_only_what_no_reset_covers() -> None:
    ids = [f"1-{n}" for n in range(6)]
    assert silently_lost(ids, ids) == []
    assert silently_lost(ids, [ids[0], ids[1], RESET, ids[4], ids[5]]) == []
    assert silently_lost(ids, [ids[0], ids[1], ids[4], RESET, ids[5]]) == [ids[2], ids[3]]  # reset too late
    assert silently_lost(ids, [ids[0], RESET, ids[1], ids[4], ids[5]]) == [ids[2], ids[3]]  # too early


async def test_entries_trimmed_before_the_reader_read_them_give_live_streams_a_reset(
    live_server_factory, shared
) -> None:
    # One transaction of 300 entries with MAXLEN ~5: the reader, blocked in XREAD, wakes
    # after EXEC, when the trim has removed the first node -- its own position included.
    async with reading_a_first_event(live_server_factory, **shared, history_size=5) as (http, items, first):
        batch = [{"event_type": "commit", "data": n} for n in range(300)]
        ids = (await http.post("/sse/publish", json={"events": batch})).json()["ids"]
        await wait_until(lambda: _true(ids[-1] in items))
        assert (await http.get("/sse/stats")).json()["backend"]["history_gaps"] == 1
    assert RESET in items and items[0] == first
    assert silently_lost([first, *ids], items) == []
    received = [i for i in items if i != RESET]
    assert in_order(received) and len(set(received)) == len(received)


async def test_redis_restarted_empty_gives_live_streams_a_reset_before_new_events(
    live_server_factory, tmp_path: Path
) -> None:
    # No persistence: Redis comes back with no stream; what it held is gone (the stream
    # had been read here, but a reader elsewhere may not have), and new ids start after it.
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        served = reading_a_first_event(live_server_factory, backend=redis.url, redis_stream="empty")
        async with served as (http, items, first):
            await trio.to_thread.run_sync(redis.kill)
            await trio.to_thread.run_sync(redis.start)
            later: list[str] = []

            async def published() -> bool:
                reply = await http.post("/sse/publish", json={"event_type": "commit", "data": 1})
                if reply.status_code == 202:
                    later.append(reply.json()["id"])
                return bool(later)

            await wait_until(published)
            await wait_until(lambda: _true(later[0] in items))
        assert items == [first, RESET, later[0]]
    finally:
        redis.stop()


async def test_redis_sigkill_under_load_loses_no_accepted_event_in_silence(own_redis) -> None:
    # ~12,000 events/s published on A (batches of 100) while a subscriber reads B; Redis
    # (AOF fsynced on every write, so it loses nothing it acknowledged) is SIGKILLed and
    # restarted 2 s later. With history_size 1,000, a reader that comes back 0.1 s after
    # the publishes do finds entries trimmed (before the fix its backoff reached 2 s). Every accepted event must reach
    # the subscriber once, in order, or a stream_reset must stand where it is missing.
    settings = {
        "backend": own_redis.url,
        "redis_stream": "kill",
        "history_size": 1000,
        "queue_size": 100000,  # the subscriber must not be shed while it catches up
        "publish_rate": 1000000,  # the publishers catch up in bursts after the outage
    }
    rate, batch, workers = 12000, 100, 4
    accepted: list[str] = []
    items: list[str] = []
    async with (
        serve_subprocess(settings) as (a, _),
        serve_subprocess(settings) as (b, _),
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream("GET", f"{b}/sse/events") as response,
        trio.open_nursery() as nursery,
    ):
        arrived = [trio.current_time()]
        nursery.start_soon(read_items, response, items, arrived)
        body = {"events": [{"event_type": "commit", "data": n} for n in range(batch)]}
        start = trio.current_time() + 0.2
        period = batch * workers / rate

        async def publish(worker: int) -> None:
            async with httpx.AsyncClient(timeout=TIMEOUT) as own:
                due = start + worker * period / workers
                while due < start + 5.0:
                    await trio.sleep_until(due)
                    due += period
                    reply = await own.post(f"{a}/sse/publish", json=body)
                    if reply.status_code == 202:
                        accepted.extend(reply.json()["ids"])
                    else:
                        assert reply.status_code == 503, reply.text

        async with trio.open_nursery() as publishers:
            for worker in range(workers):
                publishers.start_soon(publish, worker)
            await trio.sleep_until(start + 1.5)
            await trio.to_thread.run_sync(own_redis.kill)
            await trio.sleep_until(start + 3.5)
            await trio.to_thread.run_sync(own_redis.start)
        with trio.fail_after(20):
            while trio.current_time() - arrived[0] < 1.0:  # noqa: ASYNC110 - a real subscriber drains
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    received = [i for i in items if i != RESET]
    assert len(set(received)) == len(received) and in_order(received)
    lost = silently_lost(accepted, items)
    assert lost == [], f"{len(lost)} of {len(accepted)} accepted events lost without a stream_reset"


# -- two workers of one hypercorn -----------------------------------------------------------


async def test_two_hypercorn_workers_both_serve_streams_and_both_receive_events(shared) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRIO_SSE_BACKEND": shared["backend"],
        "TRIO_SSE_REDIS_STREAM": shared["redis_stream"],
        "TRIO_SSE_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "trio_sse.app:create_app()",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await _two_workers_check(base)
    finally:
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGINT)
            with trio.move_on_after(15):
                await process.wait()
            process.kill()
            await process.wait()


async def _stats_by_worker(base: str, samples: int = 12) -> dict[int, int]:
    """``{pid: active_connections}`` of the workers that answered fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(samples):
        async with httpx.AsyncClient(timeout=2.0) as fresh:  # a new TCP connection each time
            stats = (await fresh.get(f"{base}/sse/stats")).json()
        seen[stats["process_id"]] = stats["active_connections"]
    return seen


async def _two_workers_check(base: str) -> None:
    await wait_healthy(base)
    streams: list[AsyncIterator[ServerSentEvent]] = []
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def hold_stream(task_status: trio.TaskStatus[AsyncIterator[ServerSentEvent]]) -> None:
            # One client per stream: each stream is its own TCP connection, which the
            # kernel hands to whichever worker accepts it.
            async with (
                httpx.AsyncClient(timeout=TIMEOUT) as own,
                aconnect_sse(own, "GET", f"{base}/sse/events") as source,
            ):
                events = source.aiter_sse()
                assert (await next_sse(events)).event == "connected"
                task_status.started(events)
                await done.wait()

        by_worker: dict[int, int] = {}
        with trio.fail_after(60):
            while len([n for n in by_worker.values() if n > 0]) < 2:
                assert len(streams) < 60, f"every stream landed on one worker: {by_worker}"
                for _ in range(4):
                    streams.append(await nursery.start(hold_stream))
                by_worker = await _stats_by_worker(base)
        assert len(by_worker) == 2 and sum(by_worker.values()) == len(streams)
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            event_id = (await http.post(f"{base}/sse/publish", json={"event_type": "commit", "data": 1})).json()["id"]
        for events in streams:
            assert (await next_event(events)).id == event_id
        done.set()


async def test_an_instance_started_while_redis_is_down_serves_streams_and_catches_up(
    live_server_factory, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)  # not started yet
    try:
        async with (
            live_server_factory(backend=redis.url, redis_stream="late") as server,
            httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
            aconnect_sse(http, "GET", "/sse/events") as source,
        ):
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"  # streams open while degraded
            health = await http.get("/sse/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            refused = await http.post("/sse/publish", json={"event_type": "commit", "data": 0})
            assert refused.status_code == 503 and refused.json()["error"] == "backend_unavailable"
            await trio.to_thread.run_sync(redis.start)

            async def published() -> bool:
                reply = await http.post("/sse/publish", json={"event_type": "commit", "data": 1})
                return reply.status_code == 202

            await wait_until(published)
            event = await next_event(events)
            assert event.json() == 1
            assert (await http.get("/sse/health")).json()["status"] == "ok"
    finally:
        redis.stop()
