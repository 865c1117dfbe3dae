"""Litestar's ``ServerSentEvent`` response tested with trio_sse's kit on virtual time.

docs/testing.md shows this file as it is. Litestar runs on anyio, which runs on trio as it
is. Two things to know:

- Litestar's SSE response reads its first chunk in a worker thread (``sync_to_thread``).
  The kit keeps ``autojump_clock`` still while such a thread runs; without that, virtual
  time would jump to the test's timeout before the first event.
- It has no keep-alive of its own: the app below writes a comment after 15 s without an
  event, as proxies want. ``ServerSentEventMessage(comment=...)`` alone also writes
  ``data:`` (its default data is ``""``), which a browser dispatches as an empty
  ``message`` event; ``data=None`` makes it a comment only.
- By default it configures the process's logging when an app is made (the root logger
  at INFO, with its own handler); the example app passes ``logging_config=None`` so
  that this does not leak into the tests that run after it.
"""

# --8<-- [start:app]
import json

import anyio
import pytest
import trio
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import LitestarException
from litestar.params import FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from trio_sse.testing import SSETestClient

PING_AFTER = 15.0


@get("/ticks")
async def ticks(
    state: State, every: FromQuery[float] = 60, count: FromQuery[int] = 3, fail: FromQuery[bool] = False
) -> ServerSentEvent:
    async def events():
        try:
            for n in range(count):
                state.produced += 1
                yield ServerSentEventMessage(data=json.dumps({"n": n}), event="tick", id=str(n))
                quiet_until = anyio.current_time() + every
                while (left := quiet_until - anyio.current_time()) > PING_AFTER:
                    await anyio.sleep(PING_AFTER)
                    yield ServerSentEventMessage(comment="ping", data=None)  # else also an empty event
                await anyio.sleep(left)
            if fail:
                raise RuntimeError("boom")
        finally:
            state.closed += 1

    return ServerSentEvent(events())


def create_app() -> Litestar:
    # logging_config=None: by default Litestar configures the process's logging when the app
    # is made (root logger at INFO, its own handler), which would leak into every later test.
    return Litestar([ticks], state=State({"produced": 0, "closed": 0}), logging_config=None)


# --8<-- [end:app]
# --8<-- [start:tests]
async def test_events_arrive_with_their_ids_and_pings_fill_the_silence(sse_test_client, autojump_clock):
    client = await sse_test_client(create_app())
    async with client.stream("/ticks") as stream:
        assert stream.status == 200
        await stream.expect_event("tick", {"n": 0}, id="0")
        for seconds in (15, 30, 45):
            await stream.expect_comment("ping", timeout=16)
            assert trio.current_time() == seconds
        await stream.expect_event("tick", {"n": 1}, id="1", timeout=16)
        assert trio.current_time() == 60


async def test_a_client_disconnect_runs_the_generators_finally(sse_test_client, autojump_clock):
    app = create_app()
    client = await sse_test_client(app)
    async with client.stream("/ticks") as stream:
        await stream.expect_event("tick", id="0")
        stream.disconnect()
        await stream.wait_ended(timeout=1)
    assert app.state.closed == 1
    assert trio.current_time() < 1  # at once, not when the generator would have ended


async def test_a_paused_reader_blocks_the_apps_sends(sse_test_client, autojump_clock):
    app = create_app()
    client = await sse_test_client(app)
    async with client.stream("/ticks", query={"every": 1, "count": 1000}) as stream:
        await stream.expect_event("tick", id="0")
        stream.pause()  # like a client whose TCP window is full
        await trio.sleep(50)
        stalled_at = app.state.produced
        await trio.sleep(50)
        assert app.state.produced == stalled_at < 10  # 100 s at one a second: blocked, not buffering
        stream.resume()
        events = await stream.events(20, timeout=30)
        assert [event.id for event in events] == [str(n) for n in range(1, 21)]  # none lost


async def test_an_error_in_the_app_fails_the_test_instead_of_hanging_it(autojump_clock):
    # Once the response has started, Litestar raises LitestarException from what the app
    # raised, which its anyio task group (on trio) has put in an exception group.
    boom = pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom"), flatten_subgroups=True)

    def caused_by_boom(error: BaseException) -> bool:
        return boom.matches(error.__cause__)

    with pytest.RaisesGroup(pytest.RaisesExc(LitestarException, check=caused_by_boom), flatten_subgroups=True):
        async with SSETestClient(create_app()) as client:
            async with client.stream("/ticks", query={"every": 1, "count": 1, "fail": "true"}) as stream:
                await stream.expect_event("tick", id="0")
                await stream.expect_event("tick")  # the app raises instead, 1 s later


# --8<-- [end:tests]
