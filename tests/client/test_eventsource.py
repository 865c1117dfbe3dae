"""trio_sse.client as a full EventSource (issue 11, item 8), beyond the contract tests.

Through the real HTTP server of :mod:`stream_server` on 127.0.0.1 (real clock, short
delays), and a real trio_sse hub on hypercorn for the token test. What each test
adds to LaunchDarkly's list (``test_contract.py``): ``id:``-only blocks (WHATWG),
the redirect bound, the method and the credentials a redirect keeps, where a
reconnection goes after a redirect, exact URLs next to hub base URLs, the state hook's
whole sequence, and no token in httpx's log records.
"""

from __future__ import annotations

import logging
import time

import httpx
import jwt
import pytest
import trio
from ld_harness import ev, new_client, stream_and_client
from stream_server import Canned, stream_server

from trio_sse.client import (
    Event,
    SSEHTTPError,
    SSEProtocolError,
    SSEStreamError,
    State,
    connect,
    open_url,
    publish,
)

# -- id:-only blocks -----------------------------------------------------------------------


async def test_an_id_only_block_moves_the_resume_point_without_an_event() -> None:
    async with stream_and_client() as (server, stream1, client):
        await stream1.send("id: 1\ndata: one\n\n")
        await client.require_events(ev("one", id="1"))
        await stream1.send("id: 2\n\n")  # no data: no event, but the last event id is now 2 (WHATWG)
        await stream1.send(":ping\n")
        assert await client.require_comment() == "ping"  # the block was read before the comment
        assert client.source is not None and client.source.last_event_id == "2"
        await stream1.send("data: after\n\n")
        await client.require_events(ev("after", id="2"))
        await stream1.break_connection()
        stream2 = await server.await_connection()
        assert stream2.request.header("last-event-id") == "2"


async def test_an_id_only_block_applies_after_the_events_before_it() -> None:
    # One chunk: an event, then an id-only block. The resume point must not jump past
    # the event before the caller has it, nor be lost once the caller has it.
    async with stream_server() as server:
        async with open_url(server.url(), initial_delay=0) as source:
            stream = await server.await_connection()
            await stream.send("id: 1\ndata: one\n\nid: 2\n\n")
            event = await anext(source)
            assert (event.id, source.last_event_id) == ("1", "1")  # not yet 2: event 1 is just being handed over
            assert event == Event("message", "one", "1")  # last_event_id is not part of ==
            await stream.break_connection()
            with trio.move_on_after(0.5):
                await anext(source)  # applies the id-only block, then reconnects
            stream2 = await server.await_connection()
        assert stream2.request.header("last-event-id") == "2"


async def test_an_unfinished_id_only_block_moves_nothing() -> None:
    async with stream_and_client() as (server, stream1, client):
        await stream1.send("id: 1\ndata: one\n\nid: 2\n")  # no blank line: never dispatched
        await client.require_events(ev("one", id="1"))
        await stream1.break_connection()
        stream2 = await server.await_connection()
        assert stream2.request.header("last-event-id") == "1"


async def test_an_empty_id_only_block_clears_the_resume_point() -> None:
    async with stream_and_client() as (server, stream1, client):
        await stream1.send("id: 1\ndata: one\n\n")
        await client.require_events(ev("one", id="1"))
        await stream1.send("id:\n\n:ping\n")
        assert await client.require_comment() == "ping"
        await stream1.break_connection()
        stream2 = await server.await_connection()
        assert stream2.request.header("last-event-id") is None


# -- redirects -------------------------------------------------------------------------------


async def test_a_redirect_loop_is_an_error_after_max_redirects() -> None:
    async with stream_server() as server:
        server.routes["/loop"] = Canned(302, [("location", "/loop")])
        with trio.fail_after(5), pytest.raises(SSEProtocolError, match="more than 3 redirects"):
            async with open_url(server.url("/loop"), max_redirects=3):
                pass  # pragma: no cover
        assert len(server.requests) == 4  # the first request and 3 redirects, then no retry


async def test_ten_redirects_are_followed_by_default() -> None:
    async with stream_server() as server:
        for n in range(10):
            server.routes[f"/hop{n}"] = Canned(307, [("location", f"/hop{n + 1}" if n < 9 else "/stream")])
        async with new_client(server, "/hop0") as client:
            stream = await server.await_connection()
            await stream.send("data: arrived\n\n")
            await client.require_events(ev("arrived"))
        assert len(server.requests) == 11


@pytest.mark.parametrize(("status", "method", "body"), [(301, "GET", b""), (303, "GET", b""), (307, "POST", b"q")])
async def test_a_redirect_keeps_or_drops_the_post_as_fetch_does(status: int, method: str, body: bytes) -> None:
    async with stream_server() as server:
        server.routes["/old"] = Canned(status, [("location", "/stream")])
        async with open_url(server.url("/old"), method="POST", body="q", initial_delay=0):
            stream = await server.await_connection()
        assert (stream.request.method, stream.request.body) == (method, body)
        assert (stream.request.header("content-type") is not None) == bool(body)


async def test_a_redirect_to_another_origin_does_not_carry_the_token() -> None:
    async with stream_server() as server:
        other = server.url("/stream").replace("127.0.0.1", "localhost")  # same socket, another origin
        server.routes["/same"] = Canned(307, [("location", "/cross")])
        server.routes["/cross"] = Canned(307, [("location", other)])
        async with open_url(server.url("/same"), token="s3cret", headers={"x-kept": "1"}, initial_delay=0):
            stream = await server.await_connection()
        assert server.requests[1].header("authorization") == "Bearer s3cret"  # same origin: kept
        assert stream.request.header("authorization") is None
        assert stream.request.header("x-kept") == "1"


async def test_a_reconnection_goes_back_to_the_url_given() -> None:
    # As a browser's EventSource: the redirect is followed again on each attempt, so a
    # moved stream is found again wherever the original URL points now.
    async with stream_server() as server:
        server.routes["/entry"] = Canned(302, [("location", "/stream")])
        async with new_client(server, "/entry") as client:
            stream1 = await server.await_connection()
            await stream1.send("id: 1\ndata: a\n\n")
            await client.require_events(ev("a", id="1"))
            await stream1.break_connection()
            stream2 = await server.await_connection()
        assert [r.path for r in server.requests] == ["/entry", "/stream", "/entry", "/stream"]
        assert stream2.request.header("last-event-id") == "1"


# -- exact URLs and hub base URLs -------------------------------------------------------------


async def test_open_url_opens_the_exact_url_of_any_event_stream() -> None:
    async with stream_server() as server:
        async with open_url(server.url("/v1/chat/stream?model=x&n=2"), initial_delay=0):
            stream = await server.await_connection()
        assert (stream.request.path, stream.request.query) == ("/v1/chat/stream", "model=x&n=2")


async def test_connect_still_means_the_sse_events_endpoint_of_a_hub() -> None:
    async with stream_server() as server:
        async with connect(server.url("/api"), types=["commit"], initial_delay=0):
            stream = await server.await_connection()
        assert (stream.request.path, stream.request.query) == ("/api/sse/events", "types=commit")


# -- the state hook --------------------------------------------------------------------------


async def test_state_hook_hears_connecting_open_error_with_its_cause_and_closed() -> None:
    async with stream_server() as server:
        async with new_client(server, initial_delay=0.01) as client:
            stream = await server.await_connection()
            await stream.send("data: one\n\n")
            await client.require_events(ev("one"))
            await stream.break_connection()
            assert isinstance(await client.require_error(), SSEStreamError)
            await server.await_connection()
            await client.wait_state(State.OPEN, 2)
            assert client.source is not None and client.source.state is State.OPEN
        assert client.source.state is State.CLOSED
    changes = client.states
    states = [change.state for change in changes]
    assert states == [State.CONNECTING, State.OPEN, State.ERROR, State.CONNECTING, State.OPEN, State.CLOSED]
    lost = changes[2]
    assert isinstance(lost.error, SSEStreamError) and "connection was lost" in str(lost.error)
    assert isinstance(lost.error.__cause__, httpx.RemoteProtocolError)  # the cause, as httpx saw it
    assert lost.delay is not None and lost.delay >= 0.01


async def test_state_hook_hears_a_retried_status_and_a_final_refusal() -> None:
    busy, refused = Canned(503, [("retry-after", "0")]), Canned(401, body=b'{"error": "invalid_token"}')
    async with stream_server({"/flaky": [busy, refused]}) as server:
        async with new_client(server, "/flaky", initial_delay=0.01) as client:
            retried, final = await client.require_error(), await client.require_error()
            await client.wait_state(State.CLOSED)
    assert isinstance(retried, SSEStreamError) and retried.status == 503
    assert isinstance(final, SSEHTTPError) and final.status == 401 and final.error == "invalid_token"
    states = [(change.state, change.delay is None) for change in client.states]
    assert states == [
        (State.CONNECTING, True),
        (State.ERROR, False),  # retried: the delay is told
        (State.CONNECTING, True),
        (State.ERROR, True),  # final: no delay, CLOSED follows
        (State.CLOSED, True),
    ]
    assert len(server.requests) == 2


# -- credentials out of httpx's logs -------------------------------------------------------------


@pytest.mark.one_backend
async def test_no_httpx_log_record_holds_the_access_token(live_server_factory, caplog) -> None:
    secret = "k" * 32
    claims = {"sub": "alice", "exp": int(time.time()) + 600, "sse": {"projects": ["*"], "publish": True}}
    token = jwt.encode(claims, secret, algorithm="HS256")
    async with live_server_factory(jwt_secret=secret) as server:
        with caplog.at_level(logging.DEBUG), trio.fail_after(10):
            url = f"{server.base_url}/sse/events?access_token={token}"
            async with connect(url, types="commit") as source:
                assert (await anext(source)).type == "connected"  # the server took the header
                published = await publish(f"{server.base_url}/?access_token={token}", "commit", {"n": 1})
                assert (await anext(source)).id == published
    records = [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]
    assert any("HTTP Request" in r.getMessage() for r in records)  # httpx did log the requests
    assert not [r.getMessage() for r in records if token in r.getMessage()]
    assert token not in caplog.text
