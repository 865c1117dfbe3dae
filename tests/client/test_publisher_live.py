"""The batching publishers against a real trio_sse server on 127.0.0.1 (hypercorn, trio worker).

The trio publisher from many tasks, the threaded one from many threads (run off the
event loop with ``trio.to_thread``), and the server's own refusals: its publish rate
limit (429 with ``Retry-After``), an event type it does not register. What the server
stored is read from its hub: every event once, under the id its caller got, in each
caller's order. The threaded publisher's rules without a server (withdrawal, a lost
answer, fork) run on ``httpx.MockTransport``.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from trio_sse.client import SSEHTTPError
from trio_sse.publisher import PublisherClosed, PublishOutcomeUnknown, SyncPublisher, open_publisher
from trio_sse.runtime.hub import Hub

pytestmark = pytest.mark.one_backend  # the hub's own history is read back (memory backend)


def stored(hub: Hub) -> list[tuple[str, Any]]:
    return [(event.id, event.data) for event in hub.backend.history]  # type: ignore[attr-defined]


def check_each_once_in_caller_order(hub: Hub, results: dict[tuple[int, int], str], callers: int, each: int) -> None:
    """Every (caller, n) stored once, under the id its caller got, each caller's in order."""
    events = stored(hub)
    assert len(events) == callers * each
    assert {(event_id, tuple(data)) for event_id, data in events} == {(i, k) for k, i in results.items()}
    order: dict[int, list[int]] = defaultdict(list)
    for _, (who, n) in events:
        order[who].append(n)
    assert all(order[who] == list(range(each)) for who in range(callers))


async def test_trio_publisher_many_tasks_against_a_real_server(live_server_factory) -> None:
    callers, each = 200, 10
    async with live_server_factory(publish_rate=10**9) as server:
        results: dict[tuple[int, int], str] = {}
        async with open_publisher(server.base_url) as publisher:

            async def caller(who: int) -> None:
                for n in range(each):
                    results[who, n] = await publisher.publish("commit", [who, n])

            async with trio.open_nursery() as nursery:
                for who in range(callers):
                    nursery.start_soon(caller, who)
        check_each_once_in_caller_order(server.hub, results, callers, each)
        assert publisher.requests <= callers * each // 20  # coalesced, not one request per event
        assert publisher.published == callers * each


async def test_trio_publisher_waits_out_the_servers_publish_rate(live_server_factory) -> None:
    """500 events/s allowed: 1,200 events need more than a second, and none is stored twice."""
    async with live_server_factory(publish_rate=500) as server:
        results: dict[tuple[int, int], str] = {}
        async with open_publisher(server.base_url, max_batch=250) as publisher:

            async def caller(who: int) -> None:
                for n in range(30):
                    results[who, n] = await publisher.publish("commit", [who, n])

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for who in range(40):
                    nursery.start_soon(caller, who)
        assert trio.current_time() - start >= 1.0
        assert publisher.retries >= 1
        check_each_once_in_caller_order(server.hub, results, 40, 30)


async def test_trio_publisher_a_cancelled_waiting_caller_is_never_published(live_server_factory) -> None:
    """Against a real server: the withdrawn event is not in the batch the block's end sends."""
    async with live_server_factory(publish_rate=10**9) as server:
        kept: list[str] = []
        async with open_publisher(server.base_url, linger=60.0) as publisher:  # only the end sends
            async with trio.open_nursery() as nursery:

                async def keep(data: str) -> None:
                    kept.append(await publisher.publish("commit", data))

                nursery.start_soon(keep, "before")
                impatient = trio.CancelScope()

                async def withdraw() -> None:
                    with impatient:
                        await publisher.publish("commit", "withdrawn")

                nursery.start_soon(withdraw)
                nursery.start_soon(keep, "after")
                await trio.testing.wait_all_tasks_blocked()
                assert publisher.pending == 3
                impatient.cancel()
                await trio.testing.wait_all_tasks_blocked()
                await publisher.aclose()  # the queue is sent now
        assert sorted(data for _, data in stored(server.hub)) == ["after", "before"]
        assert publisher.requests == 1 and len(kept) == 2


async def test_sync_publisher_a_cancelled_future_is_never_published(live_server_factory) -> None:
    async with live_server_factory(publish_rate=10**9) as server:

        def scenario() -> list[Any]:
            with SyncPublisher(server.base_url, linger=60.0) as publisher:
                futures = [publisher.submit("commit", n) for n in range(5)]
                assert futures[2].cancel()  # still queued: withdrawn
            return [f.result(10) for f in futures if not f.cancelled()]

        ids = await trio.to_thread.run_sync(scenario)
        assert stored(server.hub) == list(zip(ids, [0, 1, 3, 4], strict=True))


def run_threads(publisher: SyncPublisher, threads: int, each: int) -> dict[tuple[int, int], str]:
    results: dict[tuple[int, int], str] = {}
    start = threading.Barrier(threads)

    def caller(who: int) -> None:
        start.wait()
        for n in range(each):
            results[who, n] = publisher.publish("commit", [who, n], timeout=60)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(caller, who) for who in range(threads)]:
            future.result()
    return results


async def test_sync_publisher_many_threads_against_a_real_server(live_server_factory) -> None:
    threads, each = 32, 40
    async with live_server_factory(publish_rate=10**9) as server:
        with SyncPublisher(server.base_url) as publisher:
            results = await trio.to_thread.run_sync(run_threads, publisher, threads, each)
        check_each_once_in_caller_order(server.hub, results, threads, each)
        assert publisher.requests <= threads * each // 4
        assert publisher.published == threads * each


async def test_sync_publisher_waits_out_the_servers_publish_rate(live_server_factory) -> None:
    async with live_server_factory(publish_rate=500) as server:
        with SyncPublisher(server.base_url, max_batch=250) as publisher:
            results = await trio.to_thread.run_sync(run_threads, publisher, 20, 40)
        assert publisher.retries >= 1
        check_each_once_in_caller_order(server.hub, results, 20, 40)


async def test_sync_publisher_refused_event_fails_only_its_caller_and_close_flushes(live_server_factory) -> None:
    async with live_server_factory(publish_rate=10**9) as server:

        def scenario() -> list[Any]:
            publisher = SyncPublisher(server.base_url, linger=30.0)  # only close() sends
            futures = [
                publisher.submit("commit", "a"),
                publisher.submit("not_registered", "b"),
                publisher.submit("commit", "c"),
            ]
            publisher.close()
            with pytest.raises(PublisherClosed):
                publisher.submit("commit", "late")
            return [f.exception(timeout=10) or f.result(0) for f in futures]

        a, b, c = await trio.to_thread.run_sync(scenario)
        assert isinstance(b, SSEHTTPError) and b.status == 422
        assert stored(server.hub) == [(a, "a"), (c, "c")]


# -- the threaded publisher's rules, without a server ------------------------------------------


class Recorder:
    """An ``httpx.MockTransport`` handler answering batches with ids, recording them."""

    def __init__(self, fail_with: type[httpx.TransportError] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail_with = fail_with
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)["events"]
        with self.lock:
            self.batches.append([event["data"] for event in events])
            first = sum(map(len, self.batches)) - len(events)
        if self.fail_with is not None:
            raise self.fail_with("scripted", request=request)
        return httpx.Response(202, json={"ids": [f"id-{first + i}" for i in range(len(events))]})


def test_sync_a_cancelled_future_is_withdrawn_and_never_sent() -> None:
    recorder = Recorder()
    publisher = SyncPublisher("http://test", transport=httpx.MockTransport(recorder), linger=60.0)
    kept = publisher.submit("commit", 1)
    withdrawn = publisher.submit("commit", 2)
    assert withdrawn.cancel()
    publisher.close()
    assert kept.result(10) == "id-0"
    assert recorder.batches == [[1]]


def test_sync_publish_timeout_before_sending_withdraws_the_event() -> None:
    recorder = Recorder()
    with SyncPublisher("http://test", transport=httpx.MockTransport(recorder), linger=60.0) as publisher:
        with pytest.raises(TimeoutError, match="withdrawn"):
            publisher.publish("commit", 1, timeout=0.05)
    assert recorder.batches == []


def test_sync_a_lost_answer_is_not_sent_again() -> None:
    recorder = Recorder(fail_with=httpx.ReadTimeout)
    with SyncPublisher("http://test", transport=httpx.MockTransport(recorder)) as publisher:
        with pytest.raises(PublishOutcomeUnknown):
            publisher.publish("commit", 1)
    assert recorder.batches == [[1]]


def test_sync_an_unreachable_server_is_retried() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(202, json={"ids": ["x"]})

    with SyncPublisher("http://test", transport=httpx.MockTransport(handler), min_backoff=0.001) as publisher:
        assert publisher.publish("commit", 1) == "x"
    assert len(attempts) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sync_after_fork_the_child_starts_empty_and_publishes_on_its_own() -> None:
    recorder = Recorder()
    publisher = SyncPublisher("http://test", transport=httpx.MockTransport(recorder), linger=60.0)
    parents = publisher.submit("commit", "parent's")  # queued in the parent when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        try:
            pending = len(publisher._queue)
            future = publisher.submit("commit", "child's")
            publisher.close(10)  # sends it, by the child's own thread
            event_id = future.result(0)
            os.write(write, orjson.dumps([pending, event_id, recorder.batches]))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        pending, event_id, child_batches = orjson.loads(pipe.read())
    os.waitpid(pid, 0)
    assert pending == 0  # the parent's event is not the child's to send
    assert child_batches == [["child's"]]
    publisher.close()
    assert parents.result(0) == "id-0"
    assert recorder.batches == [["parent's"]]
