"""A connection's life: registration, cleanup when the client leaves, hub shutdown.

Nothing may outlive its block: after the clients leave the registry is empty, and
after ``open_hub`` exits no task is left in trio's task tree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_sse
from trio_sse.http.errors import refusal_error
from trio_sse.http.introspection import health_answer
from trio_sse.runtime import hub as hub_module
from trio_sse.runtime.connection import ClientInfo
from trio_sse.runtime.hub import ConnectionRefused, Hub
from trio_sse.runtime.stats import trio_tasks
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient

from .support import DEADLINE, open_test_hub

EPS = 1e-6


def task_names() -> list[str]:
    """Every task alive in this run, walked from the root task."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        names.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return sorted(names)


class Recorder:
    """ASGI middleware keeping every message each request sent, to see how it ended."""

    def __init__(self, app: Any = None) -> None:
        self.app = app
        self.responses: list[list[dict[str, Any]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self.app is None:
            # The hub is opened later (inside the client): answer the lifespan ourselves.
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        sent: list[dict[str, Any]] = []
        if scope["type"] == "http":
            self.responses.append(sent)

        async def recording_send(message: dict[str, Any]) -> None:
            await send(message)
            sent.append(message)

        await self.app(scope, receive, recording_send)

    def finished_cleanly(self, index: int) -> bool:
        """Whether response ``index`` was ended with its final (``more_body`` false) chunk."""
        messages = self.responses[index]
        return bool(messages) and messages[-1]["type"] == "http.response.body" and not messages[-1].get("more_body")


@asynccontextmanager
async def open_recorded(**settings: Any) -> AsyncIterator[tuple[Hub, SSETestClient, Recorder]]:
    async with open_test_hub(**settings) as hub:
        recorder = Recorder(trio_sse.create_app(hub=hub))
        async with SSETestClient(recorder) as client:
            yield hub, client, recorder


# -- registration and cleanup ------------------------------------------------------------


async def test_trio_tasks_counts_every_live_task_of_the_run(autojump_clock) -> None:
    # /sse/stats' leak check: the same number as a walk of the task tree, in O(1).
    before = trio_tasks()
    assert before == len(task_names())
    async with trio.open_nursery() as outer:
        for _ in range(3):

            async def with_children() -> None:
                async with trio.open_nursery() as inner:
                    inner.start_soon(trio.sleep_forever)
                    inner.start_soon(trio.sleep_forever)
                    await trio.sleep_forever()

            outer.start_soon(with_children)
        await trio.testing.wait_all_tasks_blocked()
        assert trio_tasks() == len(task_names()) == before + 9
        outer.cancel_scope.cancel()
    assert trio_tasks() == before


async def test_the_descriptor_count_is_taken_at_most_once_a_second(autojump_clock, monkeypatch) -> None:
    # Listing /proc/self/fd costs ~8 ms at 10,000 sockets and /sse/stats is public: a client
    # polling it must not make every stream pay that on each request.
    counts = iter(range(100, 200))
    counted_at: list[float] = []

    def fake_count() -> int:
        counted_at.append(trio.current_time())
        return next(counts)

    monkeypatch.setattr(hub_module, "open_file_descriptors", fake_count)
    async with trio_sse.open_hub(Settings()) as hub:
        start = trio.current_time()
        seen = []
        for i in range(25):  # 2.5 s of a client polling every 0.1 s
            seen.append(hub.snapshot()["open_fds"])
            await trio.sleep_until(start + (i + 1) / 10)
    assert [round(at - start, 6) for at in counted_at] == [0.0, 1.0, 2.0]
    assert seen == [100] * 10 + [101] * 10 + [102] * 5


async def test_streams_are_registered_while_open(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client), client.stream(query={"types": "commit"}) as stream:
        await stream.next_event()
        (connection,) = hub.connections()
        assert stream.headers["x-sse-connection-id"] == connection.id
        assert hub.get_connection(connection.id) is connection
        assert connection.client.address == "127.0.0.1"
        assert hub.snapshot()["active_connections"] == 1
        assert hub.snapshot()["total_connections"] == 1


async def test_leaving_clients_unregister_with_reason_client_closed(autojump_clock, client_factory) -> None:
    async with client_factory() as (hub, client):
        async with client.stream() as a, client.stream() as b, client.stream() as c:
            for stream in (a, b, c):
                await stream.next_event()
            assert len(hub.connections()) == 3
        assert hub.connections() == []
        snapshot = hub.snapshot()
        assert snapshot["active_connections"] == 0
        assert snapshot["total_connections"] == 3
        assert snapshot["disconnects"] == {"client_closed": 3}
        assert snapshot["queue"]["total_queued"] == 0
        # A publish after everyone left reaches no one and costs nothing.
        await hub.publish("commit", {"n": 1})
        assert hub.snapshot()["events_delivered"] == 0


async def test_client_disconnect_ends_the_stream_without_a_final_chunk(autojump_clock) -> None:
    async with open_recorded() as (hub, client, recorder), client.stream() as stream:
        await stream.next_event()
        stream.disconnect()
        await stream.wait_ended()
        await trio.sleep(0.1)
        assert hub.connections() == []
        assert hub.snapshot()["disconnects"] == {"client_closed": 1}
        assert not recorder.finished_cleanly(0)  # nobody is there to read it


async def test_client_leaving_while_its_write_is_blocked_is_client_closed(autojump_clock, client_factory) -> None:
    async with client_factory(send_timeout=30) as (hub, client), client.stream() as stream:
        await stream.next_event()
        stream.pause()
        await hub.publish("commit", {"n": 1})
        await trio.sleep(1)
        start = trio.current_time()
        stream.disconnect()
        await stream.wait_ended()
        assert trio.current_time() == start
        assert hub.snapshot()["disconnects"] == {"client_closed": 1}
        assert hub.connections() == []


async def test_no_task_outlives_its_clients_or_the_hub(autojump_clock) -> None:
    before = task_names()
    async with open_recorded(heartbeat_interval=5, queue_size=3, send_timeout=2) as (hub, client, _recorder):
        idle = task_names()
        async with AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(client.stream()) for _ in range(4)]
            for stream in streams:
                await stream.next_event()
            assert len(task_names()) > len(idle)
            await hub.publish("commit", {"n": 1})
            await trio.sleep(6)  # a heartbeat round too
            streams[0].pause()  # a stuck write, timed out
            await hub.publish("commit", {"n": 2})
            streams[1].disconnect()
            await trio.sleep(3)
            for n in range(6):  # a burst: the remaining queues overflow
                await hub.publish("commit", {"n": n})
            for stream in streams:
                await stream.wait_ended()
            assert set(hub.snapshot()["disconnects"]) == {"send_timeout", "client_closed", "slow_consumer"}
        assert hub.connections() == []
        assert task_names() == idle
    assert task_names() == before


async def test_no_task_outlives_hub_closed_under_live_and_paused_streams(autojump_clock) -> None:
    before = task_names()
    async with open_recorded(shutdown_grace=2, send_timeout=60) as (hub, client, _recorder):
        async with client.stream() as live, client.stream() as stuck:
            await live.next_event()
            await stuck.next_event()
            stuck.pause()
            await hub.publish("commit", {"n": 1})
            await hub.aclose()
            await live.wait_ended()
            await stuck.wait_ended()
            assert hub.connections() == []
    assert task_names() == before


# -- shutdown ---------------------------------------------------------------------------


async def test_begin_shutdown_ends_every_stream_cleanly(autojump_clock) -> None:
    async with open_recorded() as (hub, client, recorder):
        async with client.stream() as a, client.stream() as b, client.stream(query={"project": "p1"}) as c:
            streams = (a, b, c)
            for stream in streams:
                await stream.next_event()
            start = trio.current_time()
            hub.begin_shutdown()
            for stream in streams:
                await stream.wait_ended()
            assert trio.current_time() == start
            for index in range(3):
                assert recorder.finished_cleanly(index)
            for stream in streams:
                assert stream.ended and stream.status == 200
                assert not stream.parser._buffer and not stream.parser._data  # nothing half-written
            assert hub.connections() == []
            snapshot = hub.snapshot()
            assert snapshot["disconnects"] == {"server_shutdown": 3}
            assert snapshot["active_connections"] == 0
            status, body = health_answer(hub.statistics(), hub.machine_memory())
            assert (status, body["status"]) == (503, "unavailable")


async def test_stream_ends_after_its_write_under_way_completes(autojump_clock) -> None:
    """A graceful end lets the event being written finish before the final chunk."""
    async with open_recorded(send_timeout=30) as (hub, client, recorder), client.stream() as stream:
        await stream.next_event()
        stream.pause()
        event_id = await hub.publish("commit", {"n": 1})
        await trio.sleep(1)
        hub.begin_shutdown()
        await trio.sleep(1)
        assert not stream.ended
        stream.resume()
        assert (await stream.next_event()).id == event_id
        await stream.wait_ended()
        assert recorder.finished_cleanly(0)
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 1}


async def test_new_streams_are_refused_with_503_while_shutting_down(autojump_clock) -> None:
    async with open_recorded() as (hub, client, _recorder):
        async with client.stream() as open_stream:
            await open_stream.next_event()
            hub.begin_shutdown()
            async with client.stream() as refused:
                await refused.wait_ended()
                assert refused.status == 503
                assert refused.headers["content-type"].startswith("application/json")
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json["error"] == "server_shutdown"
            await open_stream.wait_ended()
        with pytest.raises(ConnectionRefused) as info:
            async with hub.connect(hub.subscription(None, None), client=ClientInfo("10.0.0.9")):
                pytest.fail("registered during shutdown")
        assert (refusal_error(info.value).status, info.value.reason) == (503, "server_shutdown")
        assert int(refusal_error(info.value).headers["Retry-After"]) >= 1
        assert hub.connections() == []
        assert hub.snapshot()["rejected_by_reason"] == {"server_shutdown": 2}


async def test_leaving_open_hub_ends_every_stream_cleanly(autojump_clock) -> None:
    recorder = Recorder()
    with trio.fail_after(DEADLINE):
        async with SSETestClient(recorder) as client, AsyncExitStack() as streams_stack:
            # The streams are entered outside the hub block, so they are still open when it exits.
            async with trio_sse.open_hub(Settings(shutdown_grace=5)) as hub:
                recorder.app = trio_sse.create_app(hub=hub)
                streams = [await streams_stack.enter_async_context(client.stream()) for _ in range(3)]
                for stream in streams:
                    await stream.next_event()
                start = trio.current_time()
            assert trio.current_time() - start < 5
            for index, stream in enumerate(streams):
                assert stream.ended
                assert recorder.finished_cleanly(index)
            assert hub.connections() == []
            assert hub.snapshot()["disconnects"] == {"server_shutdown": 3}


async def test_aclose_returns_within_shutdown_grace_when_a_client_is_stuck(autojump_clock) -> None:
    async with open_recorded(shutdown_grace=2, send_timeout=60) as (hub, client, recorder):
        async with client.stream() as live, client.stream() as stuck:
            await live.next_event()
            await stuck.next_event()
            stuck.pause()
            await hub.publish("commit", {"n": 1})
            assert (await live.next_event()).type == "commit"
            start = trio.current_time()
            await hub.aclose()
            elapsed = trio.current_time() - start
            assert elapsed == pytest.approx(2, abs=EPS)  # forced at the end of the grace, no later
            assert hub.connections() == []
            await live.wait_ended()
            await stuck.wait_ended()
            assert recorder.finished_cleanly(0)
            assert not recorder.finished_cleanly(1)  # its write was aborted: no final chunk to wait for
            assert hub.snapshot()["disconnects"] == {"server_shutdown": 2}


async def test_aclose_is_immediate_with_no_streams(autojump_clock) -> None:
    async with open_test_hub(shutdown_grace=5) as hub:
        start = trio.current_time()
        await hub.aclose()
        assert trio.current_time() == start
        assert hub.closing
