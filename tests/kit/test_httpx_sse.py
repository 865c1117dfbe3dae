"""Code that reads a stream with httpx-sse, tested in-process through ``ASGIStreamTransport``.

docs/testing.md shows this file as it is. ``httpx.ASGITransport`` collects the whole body
before it returns the response, so with an endless stream it never returns;
``ASGIStreamTransport`` hands the body over as the app writes it, on trio's clock.
"""

# --8<-- [start:example]
from collections.abc import AsyncIterator

import anyio
import httpx
import trio
import trio.testing
from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from httpx_sse import aconnect_sse

from trio_sse.testing import ASGIStreamTransport


async def read_ticks(http: httpx.AsyncClient, count: int) -> list[tuple[str, int]]:
    """The code under test: the first ``count`` ticks as (id, n), read with httpx-sse."""
    ticks = []
    async with aconnect_sse(http, "GET", "/ticks") as source:
        async for event in source.aiter_sse():
            if event.event == "tick":
                ticks.append((event.id, event.json()["n"]))
                if len(ticks) == count:
                    break
    return ticks


def create_app() -> FastAPI:
    app = FastAPI()
    app.state.closed = 0

    @app.get("/ticks", response_class=EventSourceResponse)
    async def ticks(request: Request) -> AsyncIterator[ServerSentEvent]:
        try:
            for n in range(1000):
                yield ServerSentEvent(data={"n": n}, event="tick", id=str(n))
                await anyio.sleep(60)
        finally:
            request.app.state.closed += 1

    return app


async def test_code_using_httpx_sse_reads_an_endless_stream_in_virtual_time(autojump_clock):
    app = create_app()
    async with httpx.AsyncClient(transport=ASGIStreamTransport(app), base_url="http://test") as http:
        assert await read_ticks(http, 3) == [("0", 0), ("1", 1), ("2", 2)]
        assert trio.current_time() == 120  # two minutes of the app's time, none of yours
        await trio.testing.wait_all_tasks_blocked()  # the app has handled the disconnect
        assert app.state.closed == 1  # leaving aconnect_sse disconnected: the app's finally ran


# --8<-- [end:example]
