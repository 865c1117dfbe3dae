"""A Quart app's event stream tested with trio_sse's kit on virtual time.

docs/testing.md shows this file as it is. The kit runs apps on trio, so the app is a
``quart_trio.QuartTrio`` (Quart's API on trio; plain ``quart.Quart`` runs on asyncio,
and the kit refuses it with a message saying so). Quart has no SSE response: the app
writes the ``text/event-stream`` format itself, its own keep-alive comment included,
and turns off Quart's response timeout (``RESPONSE_TIMEOUT``, 60 s), which would end
the stream.
"""

# --8<-- [start:app]
import json

import pytest
import trio
from quart import make_response, request
from quart_trio import QuartTrio

from trio_sse.testing import SSETestClient

PING_AFTER = 15.0


def create_app() -> QuartTrio:
    app = QuartTrio(__name__)
    app.produced = 0  # events the generator has handed to Quart
    app.closed = 0  # times its finally ran

    @app.get("/ticks")
    async def ticks():
        every = request.args.get("every", 60.0, type=float)
        count = request.args.get("count", 3, type=int)
        fail = "fail" in request.args

        async def events():
            try:
                for n in range(count):
                    app.produced += 1
                    yield f"id: {n}\nevent: tick\ndata: {json.dumps({'n': n})}\n\n".encode()
                    quiet_until = trio.current_time() + every
                    while (left := quiet_until - trio.current_time()) > PING_AFTER:
                        await trio.sleep(PING_AFTER)
                        yield b": ping\n\n"
                    await trio.sleep(left)
                if fail:
                    raise RuntimeError("boom")
            finally:
                app.closed += 1

        response = await make_response(events(), {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        response.timeout = None  # an endless response: no RESPONSE_TIMEOUT
        return response

    return app


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
        await stream.expect_event("tick", {"n": 2}, id="2", timeout=61)  # past Quart's 60 s response timeout


async def test_a_client_disconnect_runs_the_generators_finally(sse_test_client, autojump_clock):
    app = create_app()
    client = await sse_test_client(app)
    async with client.stream("/ticks") as stream:
        await stream.expect_event("tick", id="0")
        stream.disconnect()
        await stream.wait_ended(timeout=1)
    assert app.closed == 1
    assert trio.current_time() < 1  # at once, not when the generator would have ended


async def test_a_paused_reader_blocks_the_apps_sends(sse_test_client, autojump_clock):
    app = create_app()
    client = await sse_test_client(app)
    async with client.stream("/ticks", query={"every": 1, "count": 1000}) as stream:
        await stream.expect_event("tick", id="0")
        stream.pause()  # like a client whose TCP window is full
        await trio.sleep(50)
        stalled_at = app.produced
        await trio.sleep(50)
        assert app.produced == stalled_at < 10  # 100 s at one a second: blocked, not buffering
        stream.resume()
        events = await stream.events(20, timeout=30)
        assert [event.id for event in events] == [str(n) for n in range(1, 21)]  # none lost


async def test_an_error_in_the_app_fails_the_test_instead_of_hanging_it(autojump_clock):
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom"), flatten_subgroups=True):
        async with SSETestClient(create_app()) as client:
            async with client.stream("/ticks", query={"every": 1, "count": 1, "fail": ""}) as stream:
                await stream.expect_event("tick", id="0")
                await stream.expect_event("tick")  # the app raises instead, 1 s later


# --8<-- [end:tests]
