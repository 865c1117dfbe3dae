"""The batching publisher (trio) against an in-process hub, on trio's virtual clock.

Each test drives a :class:`~trio_sse.publisher.Publisher` through
:class:`trio_sse.testing.ASGIStreamTransport` wrapped in :class:`Wire`, which records
every request (when, how many events) and can answer or fail one instead of the app,
so retries, timeouts and refusals happen in virtual time. What the hub stored is read
back from its history: "no duplicate" is checked on the server's side.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import jwt
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import trio_sse
from trio_sse.client import SSEConnectionError, SSEHTTPError
from trio_sse.core.errors import EventTooLarge, InvalidTags, InvalidValue, UnknownEventTypes, ValidationError
from trio_sse.core.events import EVENT_TYPE_PATTERN
from trio_sse.core.validation import prepare_event
from trio_sse.publisher import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    Publisher,
    PublisherClosed,
    PublishOutcomeUnknown,
    encode_event,
    open_publisher,
)
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings
from trio_sse.testing import ASGIStreamTransport

pytestmark = pytest.mark.one_backend  # in-process, on the memory backend

SECRET = "publisher-test-secret-of-at-least-32-bytes"

#: What :class:`Wire` does with a request instead of (or after) passing it to the app.
Action = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


@attrs.define
class Sent:
    at: float
    events: list[Any]


class Wire(httpx.AsyncBaseTransport):
    """The app's transport, recording each request; ``script`` actions run first, in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[Sent] = []
        self.script: deque[Action] = deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(Sent(trio.current_time(), orjson.loads(request.content)["events"]))
        if self.script:
            response = await self.script.popleft()(request)
            if response is not None:
                return response
        return await self.inner.handle_async_request(request)

    @property
    def sizes(self) -> list[int]:
        return [len(sent.events) for sent in self.sent]


def answer(status: int, body: Any = None, **headers: str) -> Action:
    async def act(request: httpx.Request) -> httpx.Response:
        fields = {name.replace("_", "-"): value for name, value in headers.items()}
        return httpx.Response(status, json=body if body is not None else {"error": "x", "message": "x"}, headers=fields)

    return act


def fail(error: type[httpx.TransportError]) -> Action:
    async def act(request: httpx.Request) -> httpx.Response:
        raise error("scripted", request=request)

    return act


def stored_then_lost(wire: Wire) -> Action:
    """The server gets the batch and stores it; the answer never comes back."""

    async def act(request: httpx.Request) -> httpx.Response:
        response = await wire.inner.handle_async_request(request)
        await response.aread()
        raise httpx.ReadTimeout("the answer was lost", request=request)

    return act


def stored(hub: Hub) -> list[tuple[str, Any]]:
    return [(event.id, event.data) for event in hub.backend.history]  # type: ignore[attr-defined]


def each_once(hub: Hub, ids: list[Any], items: list[Any]) -> bool:
    """The hub stored each item exactly once, under the id its caller got."""
    return sorted(stored(hub), key=repr) == sorted(zip(ids, items, strict=True), key=repr)


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[Hub, Wire, httpx.AsyncClient]]:
    """A hub (no publish rate limit unless given), its app behind a :class:`Wire`, a client of it."""
    async with trio_sse.open_hub(Settings(**{"publish_rate": 10**9, **settings})) as hub:
        async with ASGIStreamTransport(trio_sse.create_app(hub=hub)) as app:
            wire = Wire(app)
            async with httpx.AsyncClient(transport=wire) as http:
                yield hub, wire, http


@asynccontextmanager
async def setup(**options: Any) -> AsyncIterator[tuple[Hub, Wire, Publisher]]:
    async with serving(**options.pop("settings", {})) as (hub, wire, http):
        async with open_publisher("http://test", http=http, **options) as publisher:
            yield hub, wire, publisher


async def publish_all(
    publisher: Publisher, items: list[Any], called: list[Any] | None = None, **kwargs: Any
) -> list[str | BaseException]:
    """Publish each item from a task of its own (trio runs them in any order; ``called``
    gets the items in the order of the calls); the id or error of each item."""
    results: list[str | BaseException] = [None] * len(items)  # type: ignore[list-item]

    async def one(i: int, item: Any) -> None:
        if called is not None:
            called.append(item)
        try:
            results[i] = await publisher.publish("commit", item, **kwargs)
        except Exception as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(one, i, item)
    return results


# -- coalescing, linger, max_batch --------------------------------------------------------


async def test_concurrent_publishes_coalesce_into_one_request_and_each_caller_gets_its_id(autojump_clock) -> None:
    async with setup() as (hub, wire, publisher):
        ids = await publish_all(publisher, list(range(200)))
    assert wire.sizes == [200]
    assert len(set(ids)) == 200
    assert each_once(hub, ids, list(range(200)))  # each caller its own event's id


async def test_a_lone_event_leaves_after_linger_not_before(autojump_clock) -> None:
    async with setup(linger=0.25) as (_, wire, publisher):
        start = trio.current_time()
        await publisher.publish("commit", 1)
        assert trio.current_time() - start == pytest.approx(0.25)
        await trio.sleep(10)
        await publisher.publish("commit", 2)
    assert wire.sizes == [1, 1]
    assert wire.sent[0].at - start == pytest.approx(0.25)
    assert wire.sent[1].at - start == pytest.approx(10.5)


async def test_linger_counts_from_the_oldest_waiting_event(autojump_clock) -> None:
    async with setup(linger=1.0) as (_, wire, publisher):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.publish, "commit", "first")
            await trio.sleep(0.6)
            nursery.start_soon(publisher.publish, "commit", "second")  # does not push the deadline
    assert wire.sizes == [2]
    assert wire.sent[0].at - start == pytest.approx(1.0)


async def test_max_batch_waiting_events_leave_without_waiting_for_linger(autojump_clock) -> None:
    async with setup(linger=30.0, max_batch=10) as (hub, wire, publisher):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_all, publisher, list(range(3)))
            await trio.sleep(1.0)  # the sender lingers for more
            ids = await publish_all(publisher, list(range(3, 25)))
    assert wire.sizes == [10, 10, 5]
    assert [sent.at - start for sent in wire.sent] == pytest.approx([1, 1, 31])
    assert len(stored(hub)) == 25 and set(ids) <= {event_id for event_id, _ in stored(hub)}


async def test_a_batch_stops_growing_at_max_batch_bytes(autojump_clock) -> None:
    async with setup(max_batch_bytes=2500) as (hub, wire, publisher):
        ids = await publish_all(publisher, ["x" * 1000] * 5)
    assert wire.sizes == [2, 2, 1]
    assert all(len(orjson.dumps({"events": sent.events})) <= 2500 for sent in wire.sent)
    assert each_once(hub, ids, ["x" * 1000] * 5)


async def test_the_next_batch_fills_while_one_is_in_flight(autojump_clock) -> None:
    """Under load linger stops mattering: what arrives during a request leaves right after it."""
    async with setup(linger=0.01) as (_, wire, publisher):
        slow = trio.Event()

        async def slow_answer(request: httpx.Request) -> None:
            await trio.sleep(1.0)
            slow.set()

        wire.script.append(slow_answer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.publish, "commit", 0)
            await trio.sleep(0.5)  # the first batch is in flight
            for n in range(1, 50):
                nursery.start_soon(publisher.publish, "commit", n)
    assert wire.sizes == [1, 49]
    assert wire.sent[1].at - wire.sent[0].at == pytest.approx(1.0)  # at once after the first answer


# -- order --------------------------------------------------------------------------------


async def test_events_are_stored_in_call_order_per_caller_and_across_callers(autojump_clock) -> None:
    called: list[tuple[int, int]] = []

    async def caller(publisher: Publisher, who: int) -> None:
        for n in range(20):
            called.append((who, n))
            await publisher.publish("commit", [who, n])
            await trio.sleep(0.001 * who)  # callers at different paces

    async with setup(linger=0.002, max_batch=7) as (hub, wire, publisher):
        async with trio.open_nursery() as nursery:
            for who in range(8):
                nursery.start_soon(caller, publisher, who)
    assert len(wire.sent) > 1
    assert [tuple(data) for _, data in stored(hub)] == called


async def test_order_holds_across_a_retried_batch(autojump_clock) -> None:
    """While the first batch waits out its 429, later events wait behind it."""
    async with setup(linger=0.01, max_batch=5) as (hub, wire, publisher):
        wire.script.append(answer(429, Retry_After="2"))
        called: list[int] = []
        ids = await publish_all(publisher, list(range(12)), called)
    assert [data for _, data in stored(hub)] == called
    assert each_once(hub, ids, list(range(12)))


# -- retries, and no event stored twice ----------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_a_refusal_that_stored_nothing_is_retried_after_its_retry_after(autojump_clock, status: int) -> None:
    async with setup() as (hub, wire, publisher):
        wire.script.append(answer(status, {"error": "publish_rate", "message": "slow down"}, Retry_After="7"))
        ids = await publish_all(publisher, list(range(30)))
    assert wire.sizes == [30, 30]
    assert wire.sent[1].at - wire.sent[0].at >= 7.0
    assert each_once(hub, ids, list(range(30)))
    assert publisher.retries == 1 and publisher.requests == 2 and publisher.published == 30


async def test_real_publish_rate_429_is_waited_out_and_nothing_is_stored_twice(autojump_clock) -> None:
    """The hub's own rate limit (100 events/s): 250 events go in several attempts, once each."""
    async with setup(settings={"publish_rate": 100}, max_batch=100) as (hub, _wire, publisher):
        start = trio.current_time()
        ids = await publish_all(publisher, list(range(250)))
    assert all(isinstance(i, str) for i in ids)
    assert each_once(hub, ids, list(range(250)))
    assert publisher.retries >= 1
    assert trio.current_time() - start >= 1.0  # 150 events beyond the first second's 100


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout])
async def test_a_request_that_never_reached_the_server_is_retried_with_backoff(autojump_clock, error) -> None:
    async with setup(min_backoff=0.5, max_backoff=30.0) as (hub, wire, publisher):
        wire.script.extend([fail(error), fail(error), fail(error)])
        ids = await publish_all(publisher, list(range(5)))
    assert wire.sizes == [5, 5, 5, 5]
    gaps = [later.at - earlier.at for earlier, later in zip(wire.sent, wire.sent[1:], strict=False)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0 and gaps[2] >= 2.0  # doubled each time (plus jitter)
    assert each_once(hub, ids, list(range(5)))


async def test_an_answer_lost_after_the_server_stored_the_batch_is_not_sent_again(autojump_clock) -> None:
    async with setup() as (hub, wire, publisher):
        wire.script.append(stored_then_lost(wire))
        called: list[Any] = []
        results = await publish_all(publisher, list(range(10)), called)
        later = await publisher.publish("commit", "later")
    assert all(isinstance(r, PublishOutcomeUnknown) for r in results)
    assert isinstance(results[0].__cause__, httpx.ReadTimeout)  # type: ignore[union-attr]
    assert wire.sizes == [10, 1]  # not sent again
    assert [data for _, data in stored(hub)] == [*called, "later"]  # each once
    assert stored(hub)[-1][0] == later


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_5xx_other_than_503_is_not_retried(autojump_clock, status: int) -> None:
    async with setup() as (_hub, wire, publisher):
        wire.script.append(answer(status))
        results = await publish_all(publisher, [1, 2])
    assert all(isinstance(r, PublishOutcomeUnknown) for r in results)
    assert wire.sizes == [2]


async def test_retries_end_after_max_attempts_with_the_last_refusal(autojump_clock) -> None:
    async with setup(max_attempts=4) as (hub, wire, publisher):
        wire.script.extend([answer(503, {"error": "backend_unavailable", "message": "down"}, Retry_After="1")] * 4)
        results = await publish_all(publisher, [1, 2])
        assert await publisher.publish("commit", 3)  # the publisher keeps working afterwards
    assert all(isinstance(r, SSEHTTPError) and r.status == 503 for r in results)
    assert wire.sizes == [2, 2, 2, 2, 1]
    assert [data for _, data in stored(hub)] == [3]


async def test_an_unreachable_server_ends_in_a_connection_error_after_max_attempts(autojump_clock) -> None:
    async with setup(max_attempts=3) as (_, wire, publisher):
        wire.script.extend([fail(httpx.ConnectError)] * 3)
        (result,) = await publish_all(publisher, [1])
    assert isinstance(result, SSEConnectionError)
    assert isinstance(result.__cause__, httpx.ConnectError)


# -- a refused event does not fail the others ----------------------------------------------


async def test_an_event_the_server_refuses_fails_only_its_own_caller(autojump_clock) -> None:
    async with setup(settings={"event_types": ["deploy"]}) as (hub, wire, publisher):
        results: dict[str, str | BaseException] = {}
        called: list[str] = []

        async def one(event_type: str, data: Any) -> None:
            called.append(data)
            try:
                results[data] = await publisher.publish(event_type, data)
            except Exception as exc:
                results[data] = exc

        async with trio.open_nursery() as nursery:
            for event_type, data in [("commit", "a"), ("unknown_here", "b"), ("deploy", "c"), ("nope", "d")]:
                nursery.start_soon(one, event_type, data)
    assert isinstance(results["b"], SSEHTTPError) and results["b"].status == 422
    assert isinstance(results["d"], SSEHTTPError) and results["d"].error == "unknown_event_types"
    assert stored(hub) == [(results[data], data) for data in called if data in ("a", "c")]
    assert wire.sizes == [4, 3, 2]  # the named one out each time, the rest sent again at once


def token(projects: list[str], *, publish: bool = True) -> str:
    claims = {"sub": "pub", "exp": int(time.time()) + 600, "sse": {"projects": projects, "publish": publish}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_a_refusal_naming_no_event_splits_the_batch_down_to_the_events_causing_it(autojump_clock) -> None:
    """A token limited to project p1: the 403 for p2 names no index; only p2's callers fail."""
    async with setup(settings={"jwt_secret": SECRET}, token=token(["p1"])) as (hub, wire, publisher):
        results: list[str | BaseException] = []
        called: list[int] = []

        async def one(i: int, project: str) -> None:
            called.append(i)
            try:
                results.append(await publisher.publish("commit", i, project_id=project))
            except Exception as exc:
                results.append(exc)

        projects = ["p1"] * 6 + ["p2"] + ["p1"] * 9
        async with trio.open_nursery() as nursery:
            for i, project in enumerate(projects):
                nursery.start_soon(one, i, project)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], SSEHTTPError) and refused[0].status == 403
    assert [data for _, data in stored(hub)] == [i for i in called if projects[i] == "p1"]  # in order
    assert len(wire.sent) <= 2 * 4 + 1  # a bisection, not one request per event


async def test_a_401_fails_the_whole_batch_without_splitting(autojump_clock) -> None:
    async with setup(settings={"jwt_secret": SECRET}, token="not-a-jwt") as (hub, wire, publisher):
        results = await publish_all(publisher, list(range(8)))
    assert all(isinstance(r, SSEHTTPError) and r.status == 401 for r in results)
    assert wire.sizes == [8]
    assert stored(hub) == []


async def test_a_server_batch_limit_below_max_batch_is_split_around(autojump_clock) -> None:
    """``max_batch`` above the server's 1,000: its 413 names no event, halves go through."""
    async with setup(max_batch=1500, max_batch_bytes=10**7, settings={"max_body_bytes": 10**7}) as (hub, wire, pub):
        ids = await publish_all(pub, list(range(1500)))
    assert wire.sizes == [1500, 750, 750]
    assert each_once(hub, ids, list(range(1500)))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"event_type": "Bad Type"}, UnknownEventTypes),
        ({"event_type": 5}, InvalidValue),
        ({"project_id": ""}, InvalidValue),
        ({"project_id": "p\n1"}, InvalidValue),
        ({"tags": {"Env": "x"}}, InvalidTags),
        ({"data": "x" * (DEFAULT_MAX_EVENT_BYTES + 1)}, EventTooLarge),
        ({"data": {1, 2}}, InvalidValue),
    ],
)
async def test_what_the_server_would_refuse_for_this_event_alone_is_raised_at_once(
    autojump_clock, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    call = {"event_type": "commit", "data": 1, **kwargs}
    async with setup(linger=5.0) as (_hub, wire, publisher):
        start = trio.current_time()
        with pytest.raises(error):
            await publisher.publish(call.pop("event_type"), call.pop("data"), **call)
        assert trio.current_time() == start and publisher.pending == 0
    assert wire.sent == []


_names = st.one_of(st.from_regex(EVENT_TYPE_PATTERN, fullmatch=True), st.text(max_size=70))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    event_type=_names,
    data=_json,
    project_id=st.none() | st.text(max_size=300),
    tags=st.none() | st.dictionaries(st.text(max_size=40), st.text(max_size=140), max_size=18),
)
def test_encode_event_refuses_exactly_what_the_server_refuses_and_keeps_the_data(
    event_type: str, data: Any, project_id: str | None, tags: dict[str, str] | None
) -> None:
    """Property: the local checks agree with the server's (``prepare_event``, the type
    taken as registered when its name is valid), and the server parses the item back to
    the same event."""
    registered = frozenset({event_type}) if EVENT_TYPE_PATTERN.fullmatch(event_type) else frozenset()
    try:
        server = prepare_event(event_type, data, project_id, registered=registered, max_event_bytes=400, tags=tags)
    except ValidationError as exc:
        with pytest.raises(type(exc)):
            encode_event(event_type, data, project_id, tags, max_event_bytes=400)
        return
    item = orjson.loads(encode_event(event_type, data, project_id, tags, max_event_bytes=400))
    again = prepare_event(
        item["event_type"],
        item["data"],
        item.get("project_id"),
        registered=registered,
        max_event_bytes=400,
        tags=item.get("tags"),
    )
    assert again == server


# -- cancellation ---------------------------------------------------------------------------


async def test_a_caller_cancelled_while_its_event_waits_is_withdrawn_and_never_sent(autojump_clock) -> None:
    async with setup(linger=1.0) as (hub, wire, publisher):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.publish, "commit", "kept")

            async def impatient() -> None:
                with trio.move_on_after(0.5):
                    await publisher.publish("commit", "withdrawn")
                    raise AssertionError("published in time?")

            nursery.start_soon(impatient)
            nursery.start_soon(publisher.publish, "commit", "kept too")
    assert wire.sizes == [2]
    assert sorted(data for _, data in stored(hub)) == ["kept", "kept too"]


async def test_a_caller_cancelled_after_its_batch_left_returns_at_once_and_the_others_get_ids(autojump_clock) -> None:
    """The cancel is prompt (a deadline holds), the event is published with its batch."""
    async with setup(linger=0.1) as (hub, wire, publisher):

        async def slow(request: httpx.Request) -> None:
            await trio.sleep(2.0)

        wire.script.append(slow)
        ids: list[str] = []
        cancelled_at: list[float] = []

        async def impatient() -> None:
            with trio.move_on_after(1.0):
                await publisher.publish("commit", "cancelled after sending")
            cancelled_at.append(trio.current_time())

        async def patient(n: int) -> None:
            ids.append(await publisher.publish("commit", n))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(patient, 0)
            nursery.start_soon(impatient)
            nursery.start_soon(patient, 1)
    assert cancelled_at[0] - start == pytest.approx(1.0)
    assert wire.sizes == [3]
    assert sorted(map(str, (data for _, data in stored(hub)))) == ["0", "1", "cancelled after sending"]
    assert sorted(ids) == sorted(event_id for event_id, data in stored(hub) if data != "cancelled after sending")


# -- closing, flushing, backpressure ---------------------------------------------------------


async def test_leaving_the_block_sends_what_is_queued_without_waiting_for_linger(autojump_clock) -> None:
    results: list[str] = []
    async with trio.open_nursery() as callers:
        async with setup(linger=60.0) as (_hub, wire, publisher):
            start = trio.current_time()

            async def one(n: int) -> None:
                results.append(await publisher.publish("commit", n))

            for n in range(5):
                callers.start_soon(one, n)
            await trio.sleep(0.01)
        assert trio.current_time() - start == pytest.approx(0.01)
    assert wire.sizes == [5]
    assert len(results) == 5


async def test_flush_waits_for_every_event_queued_before_it(autojump_clock) -> None:
    async with setup(linger=3.0) as (hub, _wire, publisher):
        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(publisher.publish, "commit", n)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await publisher.flush()
            assert trio.current_time() - start == pytest.approx(3.0)
            assert sorted(data for _, data in stored(hub)) == [0, 1, 2, 3]


async def test_publish_after_aclose_raises_publisher_closed(autojump_clock) -> None:
    async with setup() as (_hub, wire, publisher):
        await publisher.aclose()
        with pytest.raises(PublisherClosed), trio.fail_after(1):
            await publisher.publish("commit", 1)
    assert wire.sent == []


async def test_the_queue_is_bounded_and_a_full_queue_makes_publish_wait(autojump_clock) -> None:
    async with setup(linger=5.0, max_pending=3) as (hub, wire, publisher):
        returned: list[int] = []
        called: list[int] = []

        async def one(n: int) -> None:
            called.append(n)
            await publisher.publish("commit", n)
            returned.append(n)

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(one, n)
            await trio.sleep(1.0)
            assert publisher.pending == 3  # two callers wait for room, their events not queued
            assert returned == []
    assert wire.sizes == [3, 2]
    assert [data for _, data in stored(hub)] == called  # those that waited for room kept their turn


async def test_an_error_in_the_block_stops_the_publisher_and_fails_what_is_queued(autojump_clock) -> None:
    results: list[BaseException] = []
    async with serving() as (_hub, wire, http), trio.open_nursery() as callers:
        with pytest.raises(KeyError):  # as raised, not in an ExceptionGroup
            async with open_publisher("http://test", http=http, linger=60.0) as publisher:

                async def one() -> None:
                    try:
                        await publisher.publish("commit", 1)
                    except PublisherClosed as exc:
                        results.append(exc)

                callers.start_soon(one)
                await trio.sleep(1)
                raise KeyError("the block failed")
    assert len(results) == 1
    assert wire.sent == []


# -- defaults and layers --------------------------------------------------------------------


def test_defaults_are_the_servers_limits() -> None:
    from trio_sse.http.publish import MAX_BATCH

    defaults = Settings()
    assert DEFAULT_MAX_BATCH == MAX_BATCH
    assert DEFAULT_MAX_BATCH_BYTES == defaults.max_body_bytes
    assert DEFAULT_MAX_EVENT_BYTES == defaults.max_event_bytes


def test_the_publisher_loads_neither_hypercorn_nor_quart() -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import trio_sse.publisher, trio_sse.client as c; c.SyncPublisher"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line]
    assert "trio_sse.publisher" in imported
    assert [n for n in imported if n.split(".")[0] in ("hypercorn", "quart") or n.startswith("trio_sse.http")] == []
