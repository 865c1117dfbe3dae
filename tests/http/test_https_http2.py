"""HTTPS with HTTP/2 under a real hypercorn: certfile/keyfile, ALPN, many streams on one connection.

A browser opens at most 6 HTTP/1.1 connections per host; over HTTP/2 every stream of
the page shares one connection. These tests hold more than 6 streams on one HTTP/2
connection (trustme certificate for 127.0.0.1, httpx with h2) and check that events,
heartbeats and a clean shutdown work there, with the direct-write fast path off.
Real clock: waits are bounded by ``fail_after``, never timed sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
from http_support import hypercorn_like_send
from httpx_sse import EventSource, aconnect_sse

from trio_sse.http.stream import AsgiTransport
from trio_sse.server import check_tls, hypercorn_config
from trio_sse.settings import Settings, SettingsError, load_settings

TIMEOUT = 10.0
STREAMS = 10  # more than the 6 connections per host a browser allows over HTTP/1.1


async def wait_until(condition: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - the server's state is polled from outside, on the real clock
            await trio.sleep(0.01)


async def open_streams(stack: AsyncExitStack, http: httpx.AsyncClient, count: int) -> list[EventSource]:
    sources = []
    for _ in range(count):
        source = await stack.enter_async_context(aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}))
        sources.append(source)
    return sources


async def test_more_than_six_streams_share_one_http2_connection_and_all_receive_an_event(
    live_server_factory, tls: Any
) -> None:
    async with (
        live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile) as server,
        httpx.AsyncClient(base_url=server.base_url, http2=True, verify=tls.client_context, timeout=TIMEOUT) as http,
        AsyncExitStack() as stack,
    ):
        assert server.base_url.startswith("https://")
        sources = await open_streams(stack, http, STREAMS)
        assert [s.response.http_version for s in sources] == ["HTTP/2"] * STREAMS
        iterators = [s.aiter_sse() for s in sources]
        with trio.fail_after(TIMEOUT):
            connected = [await anext(events) for events in iterators]
        ids = {c.json()["connection_id"] for c in connected}
        assert len(ids) == STREAMS and {c.id for c in server.hub.connections()} == ids
        # One TCP connection for all of them: the client pool holds exactly one.
        assert len(http._transport._pool.connections) == 1  # type: ignore[attr-defined]
        for connection in server.hub.connections():
            # HTTP/2 frames and flow control belong to hypercorn: no direct socket writes.
            assert connection._direct is None and not connection.direct_ready

        event_id = await server.hub.publish("commit", {"n": 1})
        with trio.fail_after(TIMEOUT):
            received = [await anext(events) for events in iterators]
        assert [(e.id, e.event, e.json()) for e in received] == [(event_id, "commit", {"n": 1})] * STREAMS


async def test_http2_stream_gets_heartbeats_and_ends_cleanly_at_shutdown(live_server_factory, tls: Any) -> None:
    async with (
        live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile, heartbeat_interval=0.05) as server,
        httpx.AsyncClient(base_url=server.base_url, http2=True, verify=tls.client_context, timeout=TIMEOUT) as http,
    ):
        hub = server.hub
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            sources = await open_streams(stack, http, 3)
            lines = [s.response.aiter_lines() for s in sources]
            with trio.fail_after(TIMEOUT):
                for stream_lines in lines:
                    while (await anext(stream_lines)) != ": heartbeat":
                        pass
            assert [s.response.http_version for s in sources] == ["HTTP/2"] * 3

            ended: list[list[str]] = []

            async def read_to_end(stream_lines: AsyncIterator[str]) -> None:
                # A clean end is END_STREAM; a reset or a cut connection raises here.
                ended.append([line async for line in stream_lines])

            for stream_lines in lines:
                nursery.start_soon(read_to_end, stream_lines)
            hub.begin_shutdown()
            await wait_until(lambda: len(ended) == 3, timeout=TIMEOUT)
        await wait_until(lambda: not hub.connections())
        assert hub.snapshot()["disconnects"] == {"server_shutdown": 3}


async def test_http11_over_tls_keeps_the_asgi_path_and_delivers(live_server_factory, tls: Any) -> None:
    async with (
        live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile) as server,
        httpx.AsyncClient(base_url=server.base_url, http2=False, verify=tls.client_context, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}) as source,
    ):
        assert source.response.http_version == "HTTP/1.1"
        events = source.aiter_sse()
        with trio.fail_after(TIMEOUT):
            connected = await anext(events)
        connection = server.hub.get_connection(connected.json()["connection_id"])
        assert connection._direct is None  # bytes must go through the SSL object
        ids = [await server.hub.publish("commit", {"n": n}) for n in range(3)]
        with trio.fail_after(TIMEOUT):
            assert [(await anext(events)).id for _ in ids] == ids


async def test_gzip_stream_over_http2_is_compressed_and_decoded_by_the_client(live_server_factory, tls: Any) -> None:
    async with (
        live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile, gzip=True) as server,
        httpx.AsyncClient(base_url=server.base_url, http2=True, verify=tls.client_context, timeout=TIMEOUT) as http,
        aconnect_sse(http, "GET", "/sse/events", headers={"Accept-Encoding": "gzip"}) as source,
    ):
        response = source.response
        assert response.http_version == "HTTP/2" and response.headers["content-encoding"] == "gzip"
        events = source.aiter_sse()
        with trio.fail_after(TIMEOUT):
            assert (await anext(events)).event == "connected"
            for n in range(3):  # each one decodes before the next is published
                event_id = await server.hub.publish("commit", {"n": n})
                event = await anext(events)
                assert (event.id, event.json()) == (event_id, {"n": n})


# -- the transport's abort never closes a socket that other HTTP/2 streams share -----------------


@pytest.mark.parametrize(("http_version", "closes"), [("1.1", True), ("2", False)])
async def test_abort_closes_the_socket_for_http11_but_not_for_a_shared_http2_connection(
    http_version: str, closes: bool
) -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        send = hypercorn_like_send(trio.SocketStream(left))

        async def receive() -> dict[str, Any]:  # pragma: no cover - never called
            return {}

        transport = AsgiTransport(receive, send, [], http_version=http_version)
        transport.abort()
        assert (left.fileno() == -1) is closes


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"certfile": "c.pem"}, {}, "certfile is set but keyfile is not: .* \\(from command line\\)"),
        ({}, {"TRIO_SSE_KEYFILE": "k.pem"}, "keyfile is set but certfile is not: .* \\(from environment\\)"),
    ],
)
def test_certfile_without_keyfile_or_the_reverse_is_a_settings_error_naming_its_source(
    flags: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, env=env)
    with pytest.raises(SettingsError, match="HTTPS needs both"):
        Settings(**flags, **{k.removeprefix("TRIO_SSE_").lower(): v for k, v in env.items()})


def test_certfile_and_keyfile_together_turn_tls_on() -> None:
    assert not Settings().tls_enabled
    assert load_settings({"certfile": "c.pem", "keyfile": "k.pem"}, env={}).tls_enabled


def test_unreadable_certificate_is_a_settings_error_before_listening(tmp_path: Path, tls: Any) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match=r"certfile/keyfile: cannot load .*missing\.pem"):
        check_tls(hypercorn_config(Settings(certfile=missing, keyfile=missing)))
    with pytest.raises(SettingsError, match="certfile/keyfile: cannot load"):  # a key that is not the cert's
        check_tls(hypercorn_config(Settings(certfile=tls.certfile, keyfile=tls.certfile)))
    config = hypercorn_config(Settings(certfile=tls.certfile, keyfile=tls.keyfile))
    check_tls(config)
    assert config.ssl_enabled and config.alpn_protocols == ["h2", "http/1.1"]


# -- a stuck HTTP/2 stream ends alone ----------------------------------------------------------------


@attrs.define
class RawH2:
    """A bare HTTP/2 client (h2) that reads the connection but never reads the ``stalled`` stream."""

    stream: trio.SSLStream[trio.SocketStream]
    conn: h2.connection.H2Connection
    stalled: set[int] = attrs.Factory(set)
    bodies: dict[int, bytes] = attrs.Factory(dict)
    ended: dict[int, str] = attrs.Factory(dict)
    closed: bool = False
    sending: trio.Lock = attrs.Factory(trio.Lock)

    async def flush(self) -> None:
        async with self.sending:
            await self.stream.send_all(self.conn.data_to_send())

    async def get(self, path: str) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", path)]
        self.conn.send_headers(stream_id, headers, end_stream=True)
        self.bodies[stream_id] = b""
        await self.flush()
        return stream_id

    async def read_forever(self) -> None:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                self.closed = True
                return
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.bodies[event.stream_id] += event.data
                    if event.stream_id not in self.stalled:  # the stalled stream's window never reopens
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self.ended[event.stream_id] = type(event).__name__
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.closed = True
            await self.flush()


async def test_send_timeout_on_one_http2_stream_ends_it_alone_and_spares_the_shared_connection(
    live_server_factory, tls: Any
) -> None:
    async with live_server_factory(certfile=tls.certfile, keyfile=tls.keyfile, send_timeout=1) as server:
        hub = server.hub
        url = urlsplit(server.base_url)
        tls.client_context.set_alpn_protocols(["h2"])
        stream = await trio.open_ssl_over_tcp_stream(url.hostname, url.port, ssl_context=tls.client_context)
        async with stream, trio.open_nursery() as nursery:
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "h2"
            client = RawH2(stream, h2.connection.H2Connection(h2.config.H2Configuration(client_side=True)))
            client.conn.initiate_connection()
            client.conn.increment_flow_control_window(2**30)  # only the stalled stream's own window closes
            await client.flush()
            nursery.start_soon(client.read_forever)
            stalled = await client.get("/sse/events?types=commit")
            client.stalled.add(stalled)
            healthy = await client.get("/sse/events?types=risk_alert")
            await wait_until(lambda: all(b"event: connected" in client.bodies[s] for s in (stalled, healthy)))

            n = 0
            with trio.fail_after(TIMEOUT):
                while hub.snapshot()["disconnects"].get("send_timeout", 0) == 0:
                    await hub.publish("commit", {"n": n, "pad": "x" * 20_000})
                    n += 1
                    await trio.sleep(0.01)
            assert n * 20_000 > 65_535  # the stream's window (64 KiB) and hypercorn's buffer were full
            await wait_until(lambda: len(hub.connections()) == 1)

            alert = await hub.publish("risk_alert", {"after": "timeout"})
            await wait_until(lambda: alert.encode() in client.bodies[healthy])
            assert not client.closed and healthy not in client.ended
            assert hub.snapshot()["active_connections"] == 1
            nursery.cancel_scope.cancel()
