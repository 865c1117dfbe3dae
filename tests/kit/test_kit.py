"""What the test kit does for apps that are not trio_sse's: the ``sse_test_client`` fixture, virtual
time held while an app is in a worker thread, plain Quart refused, ``expect_comment``, and the
one vocabulary (``type``) shared with ``trio_sse.client``."""

from __future__ import annotations

import time
from importlib.metadata import entry_points
from typing import Any

import pytest
import quart
import trio
import trio.testing

from trio_sse.core.parser import Comment, SSEParser
from trio_sse.testing import SSETestClient

SSE_HEADERS = [(b"content-type", b"text/event-stream")]


def threaded_app(seconds: float) -> Any:
    """An ASGI app that spends ``seconds`` of real time in a worker thread before its event."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await trio.to_thread.run_sync(time.sleep, seconds)
        await send({"type": "http.response.body", "body": b"event: done\ndata: 1\n\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":  # ends with the client, not on a timer
            pass

    return app


async def test_virtual_time_stands_still_while_the_app_is_in_a_worker_thread(autojump_clock) -> None:
    async with SSETestClient(threaded_app(0.05)) as client, client.stream("/") as stream:
        start = trio.current_time()
        await stream.expect_event("done", timeout=1)  # 0.05 s of real time, none of virtual time
        assert trio.current_time() == start
    assert autojump_clock.autojump_threshold == 0  # given back once the client is closed


async def test_two_clients_give_the_clock_back_as_they_found_it(autojump_clock) -> None:
    async with SSETestClient(threaded_app(0.01)) as first, first.stream("/") as one:
        async with SSETestClient(threaded_app(0.01)) as second, second.stream("/") as two:
            await one.expect_event("done", timeout=1)
            await two.expect_event("done", timeout=1)
            assert autojump_clock.autojump_threshold == 0  # no thread running: the clock jumps again
    assert autojump_clock.autojump_threshold == 0


async def test_a_plain_quart_app_is_refused_saying_to_use_quart_trio() -> None:
    with pytest.raises(TypeError, match=r"asyncio.*quart_trio\.QuartTrio"):
        async with SSETestClient(quart.Quart(__name__)):
            pass  # pragma: no cover


async def test_expect_comment_returns_the_next_comment_or_fails_naming_it(autojump_clock) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan")
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b"data: 1\n\n: ping\n\n: pong\n\n", "more_body": True})
        await trio.sleep(30)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with SSETestClient(app) as client, client.stream("/") as stream:
        assert await stream.expect_comment("ping") == "ping"
        assert stream.pending() == [Comment("pong")]  # the event before the ping was skipped
        with pytest.raises(AssertionError, match="expected a comment 'ping'; got 'pong'"):
            await stream.expect_comment("ping")
        with pytest.raises(AssertionError, match="nothing arrived within 10"):
            await stream.expect_comment(lambda text: text.startswith("ping"))
        with pytest.raises(AssertionError, match="the stream ended first"):
            await stream.expect_comment(timeout=30)


def test_parsed_event_event_is_a_deprecated_alias_of_type() -> None:
    (event,) = SSEParser().feed(b"event: commit\ndata: x\n\n")
    assert event.type == "commit"
    with pytest.warns(DeprecationWarning, match=r"ParsedEvent\.event is deprecated, use ParsedEvent\.type"):
        assert event.event == "commit"


USER_PROJECT = """
    import trio

    SSE = [(b"content-type", b"text/event-stream")]

    async def app(scope, receive, send):
        assert scope["type"] == "http", "no lifespan here"
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": b"id: 1\\nevent: tick\\ndata: 1\\n\\n", "more_body": True})
        if scope["path"] == "/boom":
            await trio.sleep(1)
            raise RuntimeError("boom")
        await trio.sleep_forever()

    async def test_reads_an_event(sse_test_client, autojump_clock):
        client = await sse_test_client(app)
        async with client.stream("/") as stream:
            await stream.expect_event("tick", 1, id="1")

    async def test_app_error(sse_test_client, autojump_clock):
        client = await sse_test_client(app)
        async with client.stream("/boom") as stream:
            await stream.expect_event("tick", id="1")
            await trio.sleep(3600)
"""


def test_sse_test_client_works_in_a_user_project_and_an_app_error_fails_its_test(pytester: pytest.Pytester) -> None:
    """No conftest, no hub: the fixture comes from the plugin; the app's error fails the test, quickly."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(USER_PROJECT)
    installed = any(ep.name == "trio_sse" for ep in entry_points(group="pytest11"))
    start = time.monotonic()
    result = pytester.runpytest(*([] if installed else ["-p", "trio_sse.pytest_plugin"]))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: boom*"])
    assert time.monotonic() - start < 10
