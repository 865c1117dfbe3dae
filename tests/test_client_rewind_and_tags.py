"""trio_sse.client's ``rewind`` and ``tags``: rewind only on the first connect, never on a
reconnection (which sends ``Last-Event-ID``); tag filters as ``tag.<name>`` parameters.

Scripted in-process servers under ``autojump_clock`` for what the client sends, then a
real hypercorn for what a user sees.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from test_client import FakeSSE, answer, block, fake_source, sse, take

from trio_sse.client import SSEHTTPError, connect, publish, tag_params


def query(request: Any) -> httpx.QueryParams:
    return httpx.QueryParams(request.query)


async def test_rewind_is_sent_until_a_stream_opens_and_never_on_a_reconnection(autojump_clock) -> None:
    app = FakeSSE(
        [
            answer(503, {"error": "server_shutdown"}),  # a failed first attempt: still the first connect
            sse(block("7", data=7), then="cut"),
            sse(block("8", data=8), then="stall"),
        ]
    )
    async with fake_source(app, types="commit", rewind=3) as source:
        assert [e.id for e in await take(source, 2)] == ["7", "8"]
    first, retried, reconnected = app.requests
    for request in (first, retried):
        assert query(request) == httpx.QueryParams({"types": "commit", "rewind": "3"})
        assert "last-event-id" not in request.headers
    assert query(reconnected) == httpx.QueryParams({"types": "commit"})
    assert reconnected.headers["last-event-id"] == "7"


async def test_a_reconnection_without_any_id_does_not_rewind_either(autojump_clock) -> None:
    """The first stream opened (no event, no ``Last-Event-ID`` header: an empty history)
    and dropped: the next one is a reconnection all the same."""
    app = FakeSSE([sse(then="cut"), sse(block("1", data=1), then="stall")])
    async with fake_source(app, rewind=5) as source:
        await anext(source)
    assert query(app.requests[0])["rewind"] == "5"
    assert "rewind" not in query(app.requests[1]) and "last-event-id" not in app.requests[1].headers


async def test_with_a_last_event_id_rewind_is_never_sent(autojump_clock) -> None:
    app = FakeSSE([sse(block("9", data=9), then="stall")])
    async with fake_source(app, rewind=5, last_event_id="8") as source:
        await anext(source)
    assert "rewind" not in query(app.requests[0]) and app.requests[0].headers["last-event-id"] == "8"


async def test_tags_become_tag_parameters(autojump_clock) -> None:
    app = FakeSSE([sse(block("1", data=1), then="stall")])
    async with fake_source(app, tags={"env": ["prod", "dev"], "team": "core"}) as source:
        await anext(source)
    assert query(app.requests[0]) == httpx.QueryParams({"tag.env": "prod,dev", "tag.team": "core"})


@pytest.mark.parametrize(
    "options",
    [{"tags": {"env": ["a,b"]}}, {"tags": {"env": []}}, {"rewind": -1}, {"rewind": True}, {"rewind": 1.5}],
)
async def test_a_rewind_or_tag_filter_the_client_cannot_send_is_a_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"rewind|tags"):
        async with connect("http://127.0.0.1:9", max_attempts=1, **options):
            pass  # pragma: no cover


def test_tag_params_keeps_the_order_of_the_values() -> None:
    assert tag_params({"env": ("b", "a")}) == {"tag.env": "b,a"}
    assert tag_params(None) == {}


async def test_real_server_rewind_then_live_then_a_resume_that_does_not_rewind(live_server_factory) -> None:
    async with live_server_factory(retry=50, max_rewind=10) as server:
        url = server.base_url
        with trio.fail_after(10):
            ids = [await publish(url, "commit", n, tags={"env": "prod" if n % 2 else "dev"}) for n in range(6)]
            async with connect(url, types="commit", tags={"env": ["prod"]}, rewind=2) as source:
                hello = await anext(source)
                assert hello.type == "connected" and hello.json()["tags"] == {"env": ["prod"]}
                assert [(e.id, e.json()) for e in await take(source, 2)] == [(ids[3], 3), (ids[5], 5)]
                live = await publish(url, "commit", 7, tags={"env": "prod"})
                assert (await anext(source)).id == live
                server.hub.get_connection(source.connection_id).close("slow_consumer")
                away = await publish(url, "commit", 9, tags={"env": "prod"})
                assert (await anext(source)).type == "connected"
                event = await anext(source)  # resumed after `live`: no rewind of 3 and 5 again
                assert (event.id, event.json()) == (away, 9)
                assert source.connections == 2
            with pytest.raises(SSEHTTPError) as raised:
                async with connect(url, rewind=11):
                    pass  # pragma: no cover
            assert raised.value.status == 400 and "max_rewind" in raised.value.message
