"""Per-project retention through ``/sse/events`` (issue 13, item 1), on both backends.

The issue's scenario exactly: one event to project ``a``, 5,000 to ``b``, one more to
``a``, with ``history_size`` 1,000 and ``project_history_size`` 100. A stream
``?project=a`` resuming from ``a``'s first event gets ``a``'s second and no
``stream_reset``; a stream with no project filter still gets ``history_gap``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

import trio_sse
from trio_sse.core.events import Event
from trio_sse.runtime.backends.redis import RedisBackend
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient

TIMEOUT = 10.0
BUSY = {"history_size": 1000, "project_history_size": 100}


async def publish_busy(publish_many: Any) -> tuple[str, str]:
    """``a``, 5,000 x ``b``, ``a``: the ids of ``a``'s two events."""
    (first,) = await publish_many([{"event_type": "commit", "data": "a1", "project_id": "a"}])
    for start in range(0, 5000, 1000):
        await publish_many([{"event_type": "commit", "data": n, "project_id": "b"} for n in range(start, start + 1000)])
    (second,) = await publish_many([{"event_type": "commit", "data": "a2", "project_id": "a"}])
    return first, second


async def expect_resume(client: SSETestClient, first: str, second: str) -> None:
    async with client.stream(project="a", last_event_id=first) as stream:
        assert (await stream.next_event(timeout=5)).type == "connected"
        event = await stream.next_event(timeout=5)
        assert (event.type, event.id, json.loads(event.data)) == ("commit", second, "a2")  # not stream_reset
        await stream.assert_no_event_within(0.05)


async def test_a_project_stream_resumes_from_its_own_window_after_a_busy_project(client_factory) -> None:
    async with client_factory(**BUSY) as (_, client):
        first, second = await publish_busy(client.publish_many)
        await expect_resume(client, first, second)


async def test_a_stream_without_project_filter_still_gets_history_gap(client_factory) -> None:
    async with client_factory(**BUSY) as (_, client):
        first, _ = await publish_busy(client.publish_many)
        async with client.stream(last_event_id=first) as stream:
            assert (await stream.next_event(timeout=5)).type == "connected"
            reset = await stream.next_event(timeout=5)
            assert reset.type == "stream_reset"
            assert json.loads(reset.data) == {"reason": "history_gap", "last_event_id": first}


@pytest.mark.one_backend
async def test_another_redis_instance_resumes_the_project_from_its_window_in_redis(redis_server: Any) -> None:
    """An instance that never read ``a``'s first event (started after it) replays from the
    project's stream in Redis, not from its own copy: instances stay interchangeable."""
    shared = Settings(backend=redis_server.url, redis_stream=f"test:{uuid.uuid4().hex}", **BUSY)
    async with trio_sse.open_hub(shared) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as client:
        first, second = await publish_busy(client.publish_many)
    async with trio_sse.open_hub(shared) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as other:
        assert first not in hub.backend.history  # a fresh instance: the replay must come from Redis
        await expect_resume(other, first, second)


async def test_rewind_of_a_project_reads_its_window(client_factory) -> None:
    async with client_factory(**BUSY) as (hub, client):
        first, second = await publish_busy(client.publish_many)

        def only_a(event: Event) -> bool:
            return event.project_id in ("a", None)

        got = await hub.backend.rewind(5, only_a, project="a")
        assert [e.id for e in got] == [first, second]


async def test_rewind_over_http_of_a_quiet_project_sends_what_only_its_window_holds(client_factory) -> None:
    """``?project=a&rewind=5`` after the busy project: ``a``'s first event is out of the global
    window but in ``a``'s, so the stream's rewind (not only the backend's) must read that window."""
    async with client_factory(**BUSY) as (_, client):
        first, second = await publish_busy(client.publish_many)
        async with client.stream(project="a", query={"rewind": "5"}) as stream:
            assert (await stream.next_event(timeout=5)).type == "connected"
            got = [await stream.next_event(timeout=5) for _ in range(2)]
            assert [(e.id, json.loads(e.data)) for e in got] == [(first, "a1"), (second, "a2")]
            await stream.assert_no_event_within(0.05)


async def test_events_past_history_ttl_are_not_replayed(client_factory, autojump_clock) -> None:
    async with client_factory(**BUSY, history_ttl=60) as (_, client):
        first = await client.publish("commit", "a1", "a")
        second = await client.publish("commit", "a2", "a")
        await trio.sleep(30)
        await expect_resume(client, first, second)  # younger than the ttl
        await trio.sleep(31)
        async with client.stream(project="a", last_event_id=first) as stream:
            assert (await stream.next_event(timeout=5)).type == "connected"
            reset = await stream.next_event(timeout=5)
            assert json.loads(reset.data) == {"reason": "history_gap", "last_event_id": first}


@pytest.mark.one_backend
async def test_redis_trims_and_refuses_events_past_history_ttl(redis_server: Any) -> None:
    """Deterministic on the real clock: the backends' wall clocks are moved on by hand."""
    key = f"test:{uuid.uuid4().hex}"
    settings = Settings(backend=redis_server.url, redis_stream=key, **BUSY, history_ttl=60)
    publisher = RedisBackend(redis_server.url, 1000, stream_key=key, project_history_size=100, history_ttl=60)
    async with trio_sse.open_hub(settings, backend=publisher):
        first, second = [e.id for e in await publisher.append([_new("a"), _new("a")])]
        await trio.sleep(0.01)  # started a few ms later: the next instance reads neither
        fresh = RedisBackend(redis_server.url, 1000, stream_key=key, project_history_size=100, history_ttl=60)
        async with trio_sse.open_hub(settings, backend=fresh):
            assert first not in fresh.history  # read from Redis, not from its own copy
            accepts_a = _accepts("a")
            assert [e.id for e in (await fresh.replay_after(first, accepts_a, project="a")).events] == [second]
            now = fresh.wall_ms()
            fresh.wall_ms = lambda: now + 61_000  # a minute later
            assert (await fresh.replay_after(first, accepts_a, project="a")).reset == "history_gap"
            assert await fresh.rewind(5, accepts_a, project="a") == []
            # A publish when they are a minute old trims the project's window (MINID) to what is younger.
            await trio.sleep(0.01)  # the next id is a few ms younger than the first two
            publisher.wall_ms = lambda: time.time_ns() // 1_000_000 + 60_000  # MINID: the ttl ago is now
            third = (await publisher.append([_new("a")]))[0].id
            window = await fresh._redis.xrange(fresh.window_key("a"), "-", "+")
            assert [entry.identifier.decode() for entry in window] == [third]
            assert await fresh._redis.pttl(fresh.window_key("a")) > 0  # the window expires with the ttl


async def test_a_project_stream_resumes_after_a_busy_project_over_a_real_server(live_server_factory) -> None:
    async with (
        live_server_factory(**BUSY) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http,
    ):

        async def publish_many(events: list[dict[str, Any]]) -> list[str]:
            reply = await http.post("/sse/publish", json={"events": events})
            assert reply.status_code == 202
            ids: list[str] = reply.json()["ids"]
            return ids

        first, second = await publish_busy(publish_many)
        params = {"project": "a"}
        headers = {"Last-Event-ID": first}
        async with aconnect_sse(http, "GET", "/sse/events", params=params, headers=headers) as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            event = await next_sse(events)
            assert (event.event, event.id, event.json()) == ("commit", second, "a2")
            live = (await publish_many([{"event_type": "commit", "data": "live", "project_id": "a"}]))[0]
            assert (await next_sse(events)).id == live  # no gap, no duplicate
        async with aconnect_sse(http, "GET", "/sse/events", headers=headers) as source:
            events = source.aiter_sse()
            assert (await next_sse(events)).event == "connected"
            reset = await next_sse(events)
            assert (reset.event, reset.json()["reason"]) == ("stream_reset", "history_gap")


async def next_sse(events: Any) -> Any:
    with trio.fail_after(TIMEOUT):
        return await anext(events)


def _accepts(project: str) -> Any:
    from trio_sse.core.matching import Subscription

    return Subscription(None, project).accepts


def _new(project: str) -> Any:
    from trio_sse.core.validation import NewEvent

    return NewEvent(type="commit", data_json=b"{}", project_id=project)


@pytest.mark.one_backend
async def test_a_redis_window_that_lost_an_event_after_the_id_is_not_used_alone(redis_server: Any) -> None:
    """The broadcasts' window (2 events) pushed out a broadcast published after ``a``'s id:
    a replay from the windows would skip it, so the shared stream answers instead — with
    every broadcast while it holds the id, with ``history_gap`` once it does not."""
    for history_size, expected in ((1000, None), (1, "history_gap")):
        key = f"test:{uuid.uuid4().hex}"
        settings = Settings(backend=redis_server.url, redis_stream=key, history_size=history_size)
        small = {"stream_key": key, "project_history_size": 2}
        writer = RedisBackend(redis_server.url, history_size, **small)
        async with trio_sse.open_hub(settings, backend=writer):
            stored = await writer.append([_new("a"), *(_broadcast(n) for n in range(3))])
            stored += await writer.append([_broadcast(n) for n in range(150)] if history_size == 1 else [])
        await trio.sleep(0.01)
        fresh = RedisBackend(redis_server.url, history_size, **small)
        async with trio_sse.open_hub(settings, backend=fresh):
            replay = await fresh.replay_after(stored[0].id, _accepts("a"), project="a")
            assert replay.reset == expected
            if expected is None:
                assert [e.id for e in replay.events] == [e.id for e in stored[1:]]


def _broadcast(n: int) -> Any:
    from trio_sse.core.validation import NewEvent

    return NewEvent(type="commit", data_json=str(n).encode(), project_id=None)
