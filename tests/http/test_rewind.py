"""``?rewind=N`` and ``/sse/subscribe``'s ``rewind`` through a real server, on both backends.

A rewind sends the newest N events the stream's filters match, oldest first with their
ids, then live events with no gap and no duplicate; a request with a last event id
resumes instead, and never rewinds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import ServerSentEvent, aconnect_sse

from trio_sse.core.events import Event

TIMEOUT = 10.0
MARKER = "system_status"  # every test stream takes this type: the end of what it is sent


async def publish(http: httpx.AsyncClient, *events: dict[str, Any]) -> list[str]:
    """Publish ``events`` (each ``{"event_type", "data", ...}``) as one batch; their ids."""
    reply = await http.post("/sse/publish", json={"events": list(events)})
    assert reply.status_code == 202, reply.text
    ids: list[str] = reply.json()["ids"]
    return ids


def commit(n: Any, **extra: Any) -> dict[str, Any]:
    return {"event_type": "commit", "data": n, **extra}


async def marker(http: httpx.AsyncClient) -> str:
    (event_id,) = await publish(http, {"event_type": MARKER, "data": "end"})
    return event_id


class Stream:
    """An open ``GET /sse/events`` and its events, read with a deadline."""

    def __init__(self, events: AsyncIterator[ServerSentEvent]) -> None:
        self._events = events

    async def next(self) -> ServerSentEvent:
        with trio.fail_after(TIMEOUT):
            return await anext(self._events)

    async def until(self, end: str) -> list[tuple[str, Any]]:
        """``(id, data)`` of every event up to the marker ``end`` (system events and markers left out:
        a rewind may send earlier markers too)."""
        seen = []
        while True:
            event = await self.next()
            if event.id == end:
                return seen
            if event.event not in ("connected", "subscription_updated", MARKER):
                seen.append((event.id, event.json()))


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient, params: dict[str, Any], headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[Stream, dict[str, Any]]]:
    """A stream and the data of its ``connected`` event."""
    async with aconnect_sse(http, "GET", "/sse/events", params=params, headers=dict(headers or {})) as source:
        assert source.response.status_code == 200
        events = Stream(source.aiter_sse())
        hello = await events.next()
        assert hello.event == "connected" and hello.id == ""
        yield events, hello.json()


@asynccontextmanager
async def server_and_http(factory: Any, **settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with factory(**settings) as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        yield server, http


TYPES = f"commit,{MARKER}"


async def test_rewind_sends_the_newest_n_oldest_first_with_their_ids_then_live(live_server_factory: Any) -> None:
    async with server_and_http(live_server_factory) as (_server, http):
        ids = await publish(http, *(commit(n) for n in range(10)))
        async with stream(http, {"types": TYPES, "rewind": "4"}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == [(ids[n], n) for n in range(6, 10)]
            live = await publish(http, commit(10), commit(11))
            end = await marker(http)
            assert await events.until(end) == [(live[0], 10), (live[1], 11)]
        # More than the history has: all of it; rewind=0: none.
        async with stream(http, {"types": TYPES, "rewind": "100"}) as (events, _):
            end = await marker(http)
            assert [event_id for event_id, _ in await events.until(end)] == ids + live
        async with stream(http, {"types": TYPES, "rewind": "0"}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == []


async def test_a_stream_resuming_by_last_event_id_never_rewinds(live_server_factory: Any) -> None:
    async with server_and_http(live_server_factory, max_rewind=5) as (_server, http):
        ids = await publish(http, *(commit(n) for n in range(6)))
        after_second = [(ids[n], n) for n in range(2, 6)]
        # The header (as EventSource sends it on a reconnect), then the query parameter.
        async with stream(http, {"types": TYPES, "rewind": "1"}, {"Last-Event-ID": ids[1]}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == after_second
        async with stream(http, {"types": TYPES, "rewind": "1", "last_event_id": ids[1]}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == after_second
        # The bound applies only to a rewind that is used: a reconnect is never refused for it.
        async with stream(http, {"types": TYPES, "rewind": "50"}, {"Last-Event-ID": ids[4]}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == [(ids[5], 5)]


@pytest.mark.parametrize("value", ["6", "1000000000000000000000", "-1", "+1", "1.5", "1e2", " 3", "", "x", "٣"])
async def test_a_rewind_over_max_rewind_or_not_a_whole_number_is_a_400_and_opens_nothing(
    live_server_factory: Any, value: str
) -> None:
    async with server_and_http(live_server_factory, max_rewind=5) as (_server, http):
        await publish(http, commit(0))
        with trio.fail_after(TIMEOUT):  # a stream that opened would never end: fail, not hang
            reply = await http.get("/sse/events", params={"rewind": value})
        assert reply.status_code == 400 and reply.headers["content-type"].startswith("application/json")
        body = reply.json()
        assert body["error"] == "invalid_request" and "rewind" in body["message"]
        stats = (await http.get("/sse/stats")).json()
        assert stats["total_connections"] == 0 and stats["active_connections"] == 0
        assert stats["events_delivered"] == 0


async def test_max_rewind_zero_turns_rewind_off(live_server_factory: Any) -> None:
    async with server_and_http(live_server_factory, max_rewind=0) as (_server, http):
        with trio.fail_after(TIMEOUT):
            assert (await http.get("/sse/events", params={"rewind": "1"})).status_code == 400
        async with stream(http, {"types": TYPES, "rewind": "0"}) as (events, _):
            end = await marker(http)
            assert await events.until(end) == []


async def test_rewind_counts_only_what_the_project_type_and_tag_filters_match(live_server_factory: Any) -> None:
    prod = {"tags": {"env": "prod"}}
    async with server_and_http(live_server_factory) as (_server, http):
        ids = await publish(
            http,
            commit(0, project_id="a", **prod),
            commit(1, project_id="b", **prod),  # another project
            commit(2, **prod),  # a broadcast: every project filter takes it
            {"event_type": "risk_alert", "data": 3, "project_id": "a", **prod},  # another type
            commit(4, project_id="a", tags={"env": "dev"}),  # another tag value
            commit(5, project_id="a"),  # no tag: a tag filter refuses it
            commit(6, project_id="a", tags={"env": "staging"}),
            commit(7, project_id="b", **prod),
        )
        params = {"types": TYPES, "project": "a", "tag.env": "prod,staging", "rewind": "2"}
        async with stream(http, params) as (events, hello):
            assert hello["project_id"] == "a" and hello["tags"] == {"env": ["prod", "staging"]}
            (end,) = await publish(http, {"event_type": MARKER, "data": "end", "tags": {"env": "prod"}})
            assert await events.until(end) == [(ids[2], 2), (ids[6], 6)]
        params["rewind"] = "10"
        async with stream(http, params) as (events, _):
            (end,) = await publish(http, {"event_type": MARKER, "data": "end", "tags": {"env": "prod"}})
            assert await events.until(end) == [(ids[0], 0), (ids[2], 2), (ids[6], 6)]


async def test_an_event_published_while_the_rewind_is_read_arrives_exactly_once(live_server_factory: Any) -> None:
    """The backend's rewind publishes one event just before it reads (so it is in the rewind
    and fanned out live to the stream) and one just after (so only live): each is written
    once, in order, after the rewound ones."""
    async with server_and_http(live_server_factory) as (server, http):
        hub = server.hub
        read = hub.backend.rewind
        racing: list[str] = []
        rewound = trio.Event()

        async def rewind_racing_publishes(count: int, matches: Any, *, project: str | None = None) -> list[Event]:
            racing.append(await hub.publish("commit", "before"))
            await trio.sleep(0.2)  # it is fanned out (and queued for the stream) meanwhile
            found: list[Event] = await read(count, matches, project=project)
            racing.append(await hub.publish("commit", "after"))
            rewound.set()
            return found

        ids = await publish(http, *(commit(n) for n in range(5)))
        hub.backend.rewind = rewind_racing_publishes
        async with stream(http, {"types": TYPES, "rewind": "3"}) as (events, _):
            with trio.fail_after(TIMEOUT):
                await rewound.wait()
            end = await marker(http)
            got = await events.until(end)
        # The newest 3 when it read: two published before, and "before".
        assert got == [(ids[3], 3), (ids[4], 4), (racing[0], "before"), (racing[1], "after")]


async def test_rewinds_under_concurrent_publishing_have_no_gap_and_no_duplicate(live_server_factory: Any) -> None:
    """Streams open with ``rewind`` while a publisher keeps going: what each gets is one
    unbroken run of the published sequence, at least ``rewind`` long, up to the marker."""
    async with server_and_http(live_server_factory) as (_server, http):
        published = await publish(http, *(commit(n) for n in range(20)))
        runs: list[list[str]] = []
        done, stopped = trio.Event(), trio.Event()

        async def keep_publishing() -> None:
            n = 20
            while not done.is_set():
                published.extend(await publish(http, commit(n)))
                n += 1
            stopped.set()

        async def one_stream(delay: float) -> None:
            await trio.sleep(delay)
            async with stream(http, {"types": TYPES, "rewind": "10"}) as (events, _):
                opened.append(None)
                if len(opened) == STREAMS:
                    done.set()
                run = []
                while (event := await events.next()).data != '"final"':
                    run.append(event.id)
                runs.append(run)

        STREAMS = 5
        opened: list[None] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_publishing)
            for index in range(STREAMS):
                nursery.start_soon(one_stream, 0.03 * index)
            await stopped.wait()
            (end,) = await publish(http, {"event_type": MARKER, "data": "final"})
        assert len(runs) == STREAMS
        for run in runs:
            assert len(run) >= 10
            start = published.index(run[0])
            assert run == published[start : start + len(run)]  # unbroken: no gap, no duplicate
            assert run[-1] == published[-1] and end not in run


async def test_subscribe_rewind_sends_the_newest_n_the_new_filters_match_that_the_stream_was_not_sent(
    live_server_factory: Any,
) -> None:
    async with server_and_http(live_server_factory) as (_server, http):
        risk = lambda n: {"event_type": "risk_alert", "data": n}  # noqa: E731
        early = await publish(http, commit("c1"), risk("r1"), commit("c2"), risk("r2"), commit("c3"))
        async with stream(http, {"types": TYPES}) as (events, hello):
            (c4,) = await publish(http, commit("c4"))
            end = await marker(http)
            assert await events.until(end) == [(c4, "c4")]
            (r3,) = await publish(http, risk("r3"))  # not for the stream yet
            body = {"connection_id": hello["connection_id"], "event_types": ["risk_alert"], "mode": "add"}
            reply = await http.post("/sse/subscribe", json={**body, "rewind": 3})
            assert reply.status_code == 200, reply.text
            update = await events.next()
            assert update.event == "subscription_updated" and update.json() == reply.json()
            # Newest 3 of c1 r1 c2 r2 c3 [c4 was sent] r3.
            (r4,) = await publish(http, risk("r4"))
            end = await marker(http)
            assert await events.until(end) == [(early[3], "r2"), (early[4], "c3"), (r3, "r3"), (r4, "r4")]


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"rewind": 101}, "between 0 and 100"),
        ({"rewind": -1}, "between 0 and 100"),
        ({"rewind": True}, "whole number"),
        ({"rewind": "3"}, "whole number"),
        ({"rewind": 2.0}, "whole number"),
        ({"rewind": 3, "last_event_id": "1-0"}, "not both"),
    ],
)
async def test_a_bad_subscribe_rewind_is_a_400_and_changes_nothing(
    live_server_factory: Any, extra: dict[str, Any], why: str
) -> None:
    async with server_and_http(live_server_factory) as (server, http):
        await publish(http, {"event_type": "risk_alert", "data": "old"})
        async with stream(http, {"types": TYPES}) as (events, hello):
            body = {"connection_id": hello["connection_id"], "event_types": ["risk_alert"], "mode": "add", **extra}
            reply = await http.post("/sse/subscribe", json=body)
            assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"
            assert why in reply.json()["message"]
            bad_connection = await http.post("/sse/subscribe", json={**body, "connection_id": "nope"})
            assert bad_connection.status_code == 400  # checked before the connection is looked up
            (connection,) = server.hub.connections()
            assert connection.subscription.event_types == {"commit", MARKER}
            ids = await publish(http, {"event_type": "risk_alert", "data": "new"}, commit("c"))
            end = await marker(http)
            assert await events.until(end) == [(ids[1], "c")]  # no update, no rewind


@pytest.mark.one_backend
async def test_a_rewind_the_backend_cannot_answer_ends_the_stream_instead_of_going_on_without_it(
    live_server_factory: Any,
) -> None:
    from trio_sse.runtime.backends import BackendUnavailable

    async with server_and_http(live_server_factory) as (server, http):

        async def unreachable(count: int, matches: Any, *, project: str | None = None) -> list[Event]:
            raise BackendUnavailable("the Redis backend is unreachable (test)")

        server.hub.backend.rewind = unreachable
        async with stream(http, {"types": TYPES, "rewind": "3"}) as (events, _):
            with pytest.raises(StopAsyncIteration):
                await events.next()  # ended: the client reconnects after retry and asks again
        stats = (await http.get("/sse/stats")).json()
        assert stats["disconnects"]["backend_unavailable"] == 1
