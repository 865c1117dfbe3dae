"""Starlette with sse-starlette's ``EventSourceResponse`` tested with trio_sse's kit on virtual time.

docs/testing.md shows this file as it is. sse-starlette runs on anyio, which runs on trio
as it is. Its ping (``: ping - <time>``) comes every ``ping`` seconds (15 by default),
events or not. Its shutdown watcher (``AppStatus``) needs asyncio and does not start on
trio; the tests do not need it.
"""

# --8<-- [start:app]
import json

import anyio
import pytest
import trio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from trio_sse.testing import SSETestClient


async def ticks(request: Request) -> EventSourceResponse:
    every = float(request.query_params.get("every", 60))
    count = int(request.query_params.get("count", 3))
    state = request.app.state

    async def events():
        try:
            for n in range(count):
                state.produced += 1
                yield ServerSentEvent(data=json.dumps({"n": n}), event="tick", id=str(n))
                await anyio.sleep(every)
            if request.query_params.get("fail"):
                raise RuntimeError("boom")
        finally:
            state.closed += 1

    return EventSourceResponse(events(), ping=15)


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/ticks", ticks)])
    app.state.produced = 0  # events the generator has handed to sse-starlette
    app.state.closed = 0  # times its finally ran
    return app


# --8<-- [end:app]
# --8<-- [start:tests]
def is_ping(text: str) -> bool:
    return text.startswith("ping")


async def test_events_arrive_with_their_ids_and_pings_every_15_seconds(sse_test_client, autojump_clock):
    client = await sse_test_client(create_app())
    async with client.stream("/ticks") as stream:
        assert stream.status == 200
        await stream.expect_event("tick", {"n": 0}, id="0")
        for seconds in (15, 30, 45):
            await stream.expect_comment(is_ping, timeout=16)
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
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom"), flatten_subgroups=True):
        async with SSETestClient(create_app()) as client:
            async with client.stream("/ticks", query={"every": 1, "count": 1, "fail": "1"}) as stream:
                await stream.expect_event("tick", id="0")
                await stream.expect_event("tick")  # the app raises instead, 1 s later


# --8<-- [end:tests]
