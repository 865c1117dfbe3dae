"""Transport conformance: the same checks against real hypercorn and against every fake of it.

In the spirit of ``trio.testing.check_one_way_stream``: each ``check_*`` function states one
thing trio_sse relies on from the server under a stream, and runs unchanged against

- real hypercorn on 127.0.0.1: trio_sse's worker (``trio_sse.http.hypercorn_trio``) and
  hypercorn's own (the ``hypercorn`` CLI), HTTP/1.1 over plain TCP and over TLS, and HTTP/2;
- the fakes the other tests stand in for it with: the hand-built chain of hypercorn
  objects (``tests/http_support.py``), :class:`~fake_transports.ShieldedTransport` and the
  shielded ``Client`` of ``tests/runtime/test_unusual_ends.py``.

A fake that drifts from hypercorn, or a hypercorn release that changes what the adapter
reaches into, fails here rather than silently in production. The last tests simulate
such a release (a renamed internal, on a real connection) and check the adapter's
fallbacks: one WARNING naming the hypercorn version, the miss counted in ``/sse/stats``
and ``/metrics``, and ``send_timeout`` still freeing a stuck client.

Real sockets on the virtual clock (``autojump_clock``), as in ``test_connections.py``.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio
from fake_transports import ShieldedTransport
from http_support import hypercorn_like_send
from hypercorn.config import Config
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio import serve as hypercorn_serve

import trio_sse
from trio_sse.http import hypercorn_trio
from trio_sse.http.hypercorn_trio import ADAPTER, HYPERCORN_VERSION, transport_for
from trio_sse.http.metrics import make_registry, render_metrics
from trio_sse.http.stream import AsgiTransport
from trio_sse.settings import Settings

#: The send_timeout the checks hold the transports to (virtual seconds).
SEND_TIMEOUT = 5.0
#: Virtual seconds without a completed write after which a write counts as stuck.
STUCK_AFTER = 2.0
#: What a stuck write may raise once aborted (or it returns): what the runtime handles.
ABORTED = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
CHUNK = b"x" * (1 << 20)


@pytest.fixture(autouse=True)
def fresh_adapter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no miss counted and nothing warned about (the counter is process-wide)."""
    monkeypatch.setattr(ADAPTER, "misses", 0)
    monkeypatch.setattr(ADAPTER, "warned", set())


# -- the checks ---------------------------------------------------------------------------------------


def check_fast_path(transport: hypercorn_trio.ServerTransport, *, expect_socket: Any) -> None:
    """Direct writes get the connection's own socket under HTTP/1.1 over plain TCP, and no
    socket otherwise (TLS: bytes must go through the SSL object; HTTP/2: frames)."""
    assert transport.socket is expect_socket


async def check_h2_buffer(transport: hypercorn_trio.ServerTransport, send: Any) -> None:
    """Under HTTP/2 the stream's outgoing buffer is found: it holds what ``send`` appended
    (``buffer``) until the client reads it, and ``drain()`` waits for that."""
    buffer = transport.h2_buffer
    assert buffer is not None
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
    assert isinstance(len(buffer.buffer), int)
    with trio.fail_after(SEND_TIMEOUT):
        await buffer.drain()  # the client reads: the buffer empties
    assert len(buffer.buffer) == 0


async def check_abort_frees_a_stuck_shielded_write(
    write: Callable[[bytes], Awaitable[None]],
    abort: Callable[[], None],
    stall: Callable[[], None],
    rescue: Callable[[], None] = lambda: None,
) -> None:
    """A write the client does not take blocks and ignores cancellation (hypercorn shields its
    socket writes), and ``abort()`` frees it well within ``send_timeout``.

    ``rescue`` frees the write some other way (the client going) when the check fails, so
    that it fails instead of hanging."""
    stall()
    writer = _Writer(write)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        try:
            await _expect_stuck_then_freed(writer, abort)
        finally:
            if not writer.done.is_set():
                rescue()


class _Writer:
    """Writes until stopped; counts completed writes; ``done`` once it has stopped."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.write = write
        self.completed = 0
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self) -> None:
        with self.scope:
            try:
                while True:
                    await self.write(CHUNK)
                    self.completed += 1
            except ABORTED:
                pass
            finally:
                self.done.set()


async def _expect_stuck_then_freed(writer: _Writer, abort: Callable[[], None]) -> None:
    with trio.fail_after(60):
        while True:  # until no write has completed for STUCK_AFTER
            seen = writer.completed
            await trio.sleep(STUCK_AFTER)
            if writer.completed == seen:
                break
    writer.scope.cancel()
    await trio.sleep(1)
    assert not writer.done.is_set(), "the stuck write gave way to cancellation: the server no longer shields it"
    aborted_at = trio.current_time()
    abort()
    with trio.move_on_after(SEND_TIMEOUT):
        await writer.done.wait()
    assert writer.done.is_set(), "abort() did not free the stuck write within send_timeout"
    assert trio.current_time() - aborted_at < SEND_TIMEOUT / 2


# -- real hypercorn -----------------------------------------------------------------------------------


@attrs.frozen
class Flavor:
    """One way a request reaches the app: whose worker, over TLS or not, which HTTP."""

    name: str
    ours: bool  # trio_sse's worker (else hypercorn's own)
    tls: bool
    http2: bool

    @property
    def http_version(self) -> str:
        return "2" if self.http2 else "1.1"


FLAVORS = [
    Flavor("ours-http1.1", ours=True, tls=False, http2=False),
    Flavor("ours-http1.1-tls", ours=True, tls=True, http2=False),
    Flavor("ours-http2-tls", ours=True, tls=True, http2=True),
    Flavor("hypercorn-http1.1", ours=False, tls=False, http2=False),
    Flavor("hypercorn-http1.1-tls", ours=False, tls=True, http2=False),
    Flavor("hypercorn-http2-tls", ours=False, tls=True, http2=True),
]
HTTP1 = [flavor for flavor in FLAVORS if not flavor.http2]


@attrs.define
class Served:
    """One request held open inside a real server: its ASGI objects, and the client's end."""

    scope: dict[str, Any]
    receive: Any
    send: Any
    client: trio.abc.Stream | None  # HTTP/1.1: the client's stream, which never reads


def _config(flavor: Flavor, tls: Any) -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 1
    if flavor.tls:
        config.certfile, config.keyfile = tls.certfile, tls.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    return config


async def start(nursery: trio.Nursery, server: Callable[..., Awaitable[None]], stop: trio.Event) -> tuple[str, int]:
    """Start ``server`` (``hypercorn.trio.serve``'s signature) until ``stop``; its host and port."""
    binds = await nursery.start(lambda task_status: server(shutdown_trigger=stop.wait, task_status=task_status))
    url = urlsplit(binds[0])
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


@asynccontextmanager
async def serving(flavor: Flavor, tls: Any) -> AsyncIterator[Served]:
    """A real server of ``flavor`` whose app holds its first request open, and that request."""
    requests_in, requests_out = trio.open_memory_channel[tuple[Any, Any, Any]](1)
    release = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            for stage in ("startup", "shutdown"):
                assert (await receive())["type"] == f"lifespan.{stage}"
                await send({"type": f"lifespan.{stage}.complete"})
            return
        await requests_in.send((scope, receive, send))
        await release.wait()

    config = _config(flavor, tls)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        if flavor.ours:
            server = functools.partial(hypercorn_trio.serve, app, config, idle_connection_limit=100)
        else:
            server = functools.partial(hypercorn_serve, app, config)
        host, port = await start(nursery, server, stop)
        client: trio.abc.Stream | None = None
        if flavor.http2:
            nursery.start_soon(_http2_get, f"https://{host}:{port}", tls.client_context)
        else:
            client = await trio.open_tcp_stream(host, port)
            if flavor.tls:
                context = tls.client_context
                context.set_alpn_protocols(["http/1.1"])
                client = trio.SSLStream(client, context, server_hostname="127.0.0.1", https_compatible=True)
            await client.send_all(b"GET /held HTTP/1.1\r\nhost: test\r\n\r\n")
        with trio.fail_after(10):
            scope, receive, send = await requests_out.receive()
        try:
            yield Served(scope, receive, send, client)
        finally:
            release.set()
            if client is not None:
                await trio.aclose_forcefully(client)
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 5


async def _http2_get(url: str, context: ssl.SSLContext) -> None:
    """An HTTP/2 GET that reads whatever comes, until the server goes (at the end of the test)."""
    async with httpx.AsyncClient(http2=True, verify=context) as client:
        try:
            async with client.stream("GET", url + "/held") as response:
                assert response.http_version == "HTTP/2"
                async for _ in response.aiter_raw():
                    pass
        except httpx.RemoteProtocolError:
            pass


def _client_leaves(served: Served) -> Callable[[], None]:
    """Close the client's socket (unread data: a reset), which frees the server's write."""

    def leave() -> None:
        client = served.client
        inner = client.transport_stream if isinstance(client, trio.SSLStream) else client
        if isinstance(inner, trio.SocketStream):
            inner.socket.close()

    return leave


def _server_socket(served: Served) -> trio.socket.SocketType:
    """The server's end of the connection, found the public way: by the client's address."""
    assert served.client is not None
    inner = served.client.transport_stream if isinstance(served.client, trio.SSLStream) else served.client
    assert isinstance(inner, trio.SocketStream)
    stream = served.scope["state"].get(hypercorn_trio.STREAM_KEY)
    if stream is None:  # hypercorn's own worker: only the private walk knows it
        stream = hypercorn_trio._stream_by_walk(served.send)
    sock = hypercorn_trio._socket_of(stream)
    assert sock is not None
    assert sock.getpeername() == inner.socket.getsockname()
    return sock


@pytest.mark.parametrize("flavor", FLAVORS, ids=lambda flavor: flavor.name)
async def test_real_hypercorn_fast_path_and_h2_buffer(flavor: Flavor, tls: Any, autojump_clock: Any) -> None:
    async with serving(flavor, tls) as served:
        assert served.scope["http_version"] == flavor.http_version
        transport = transport_for(served.scope, served.receive, served.send)
        plain = not flavor.tls and not flavor.http2
        check_fast_path(transport, expect_socket=_server_socket(served) if plain else None)
        if flavor.http2:
            await check_h2_buffer(transport, served.send)
        else:
            assert transport.h2_buffer is None
    assert ADAPTER.misses == 0, "the hypercorn this was checked against: nothing missing"


@pytest.mark.parametrize("flavor", HTTP1, ids=lambda flavor: flavor.name)
async def test_real_hypercorn_abort_frees_a_stuck_shielded_write(flavor: Flavor, tls: Any, autojump_clock: Any) -> None:
    async with serving(flavor, tls) as served:
        transport = AsgiTransport(served.receive, served.send, [], http_version="1.1", scope=served.scope)
        await check_abort_frees_a_stuck_shielded_write(
            transport.write, transport.abort, stall=lambda: None, rescue=_client_leaves(served)
        )
    assert ADAPTER.misses == 0


@pytest.mark.parametrize("flavor", [FLAVORS[0], FLAVORS[2]], ids=lambda flavor: flavor.name)
async def test_a_send_wrapped_by_a_middleware_gets_no_direct_writes_but_still_the_abort(
    flavor: Flavor, tls: Any, autojump_clock: Any
) -> None:
    # An embedder's ASGI middleware around the app: bytes written to the socket directly
    # would skip it, so the fast path stays off; aborting (closing the socket) is still safe.
    async with serving(flavor, tls) as served:

        async def wrapped(message: Any) -> None:
            await served.send(message)

        transport = AsgiTransport(served.receive, wrapped, [], http_version=flavor.http_version, scope=served.scope)
        check_fast_path(transport._server, expect_socket=None)
        if not flavor.http2:
            await check_abort_frees_a_stuck_shielded_write(
                transport.write, transport.abort, stall=lambda: None, rescue=_client_leaves(served)
            )
    assert ADAPTER.misses == 0  # a middleware is not a hypercorn that changed


async def test_real_http2_abort_leaves_the_shared_connection_open(tls: Any, autojump_clock: Any) -> None:
    flavor = Flavor("ours-http2-tls", ours=True, tls=True, http2=True)
    async with serving(flavor, tls) as served:
        transport = transport_for(served.scope, served.receive, served.send)
        stream = served.scope["state"][hypercorn_trio.STREAM_KEY]
        transport.abort()
        assert hypercorn_trio._socket_of(stream).fileno() != -1


# -- the fakes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls_wrapped", [False, True], ids=["plain", "tls"])
async def test_the_fake_hypercorn_chain_finds_what_real_hypercorn_gives(tls_wrapped: bool) -> None:
    # tests/http_support.py's hand-built chain, through the same check as real hypercorn above.
    left, right = trio.socket.socketpair()
    with left, right:
        stream: trio.abc.Stream = trio.SocketStream(left)
        if tls_wrapped:
            stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname="example.invalid")
        transport = transport_for({"http_version": "1.1"}, None, hypercorn_like_send(stream))
        check_fast_path(transport, expect_socket=None if tls_wrapped else left)
        transport.abort()
        assert left.fileno() == -1  # the abort closes the socket, under TLS too
    assert ADAPTER.misses == 0  # not hypercorn's send: nothing to miss


@pytest.mark.parametrize("fake", ["ShieldedTransport", "unusual_ends.Client"])
async def test_the_shielded_fakes_behave_like_hypercorns_stuck_write(fake: str, autojump_clock: Any) -> None:
    if fake == "ShieldedTransport":
        transport = ShieldedTransport()

        def stall() -> None:
            transport.stuck = True

        await check_abort_frees_a_stuck_shielded_write(transport.write, transport.abort, stall)
    else:
        from runtime.test_unusual_ends import Client  # tests/runtime is a package

        client = Client(shielded=True)
        await check_abort_frees_a_stuck_shielded_write(client.write, client.abort, client.stall)


# -- Connection: close ends the body and the socket -------------------------------------------------------


async def _read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


@pytest.mark.parametrize("tls_on", [False, True], ids=["plain", "tls"])
async def test_after_connection_close_the_final_chunk_is_written_and_the_socket_closed(
    tls_on: bool, tls: Any, autojump_clock: Any
) -> None:
    files = {"certfile": tls.certfile, "keyfile": tls.keyfile} if tls_on else {}
    config = Settings(host="127.0.0.1", port=0, log_level="warning", **files)
    async with trio.open_nursery() as nursery, trio_sse.open_hub(config) as hub:
        stop = trio.Event()
        host, port = await start(nursery, functools.partial(trio_sse.serve, trio_sse.create_app(hub=hub), config), stop)

        async def connect() -> trio.abc.Stream:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            if tls_on:
                context = tls.client_context
                context.set_alpn_protocols(["http/1.1"])
                stream = trio.SSLStream(stream, context, server_hostname="127.0.0.1", https_compatible=True)
            return stream

        # A Quart route (through the final-send shield) and an SSE stream (chunked) alike.
        route = await connect()
        await route.send_all(b"GET /sse/health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        with trio.fail_after(1):
            answer = await _read_to_eof(route)
        assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 ") == 1
        await route.aclose()

        sse = await connect()
        await sse.send_all(b"GET /sse/events HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        head = b""
        while b"event: connected" not in head:
            head += await sse.receive_some(65536)
        connection_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-sse-connection-id")
        )
        # Once the first write has returned in the server too (the client may read its bytes
        # before the task that wrote them resumes; a close then ends a write in progress).
        await trio.sleep(1)
        hub.get_connection(connection_id).close("token_expired")  # a clean end, as the token's exp
        with trio.fail_after(1):
            rest = await _read_to_eof(sse)
        assert (head + rest).endswith(b"0\r\n\r\n"), "the chunked body was not ended"
        await sse.aclose()
        hub.begin_shutdown()
        stop.set()


# -- a hypercorn that renamed something ---------------------------------------------------------------------


@pytest.fixture
def renamed_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    """hypercorn as a release might ship it: ``HTTPStream.send`` is no longer a bound method of
    the protocol (the link the adapter's walk follows to the socket and the HTTP/2 buffer).
    hypercorn itself works as before: only what it does not promise changes."""
    original = HTTPStream.__init__

    def init(self: HTTPStream, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.send = functools.partial(self.send)

    monkeypatch.setattr(HTTPStream, "__init__", init)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "trio_sse.server"]


async def test_a_renamed_internal_warns_once_counts_and_send_timeout_still_frees_a_stuck_client(
    renamed_internal: None, tls: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    # hypercorn's own worker (the hypercorn CLI): the walk to the socket is broken.
    flavor = Flavor("hypercorn-http1.1", ours=False, tls=False, http2=False)
    caplog.set_level(logging.WARNING, "trio_sse.server")
    for attempt in (1, 2):
        async with serving(flavor, tls) as served:
            transport = AsgiTransport(served.receive, served.send, [], http_version="1.1", scope=served.scope)
            check_fast_path(transport._server, expect_socket=None)  # no direct writes behind its back
            assert ADAPTER.misses == attempt
            # The abort needs no object of hypercorn's: the socket is shut down by its addresses.
            await check_abort_frees_a_stuck_shielded_write(
                transport.write, transport.abort, stall=lambda: None, rescue=_client_leaves(served)
            )
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert f"hypercorn {HYPERCORN_VERSION}" in warnings[0] and "TCPServer.stream" in warnings[0]
    # ...and the count is in /sse/stats and /metrics.
    async with trio_sse.open_hub(Settings()) as hub:
        assert hub.snapshot()["transport_adapter"] == {"misses": 2, "hypercorn": HYPERCORN_VERSION}
        assert b"trio_sse_transport_adapter_misses_total 2.0" in render_metrics(make_registry(lambda: hub))


async def test_under_our_worker_a_renamed_internal_keeps_http11_whole_and_counts_the_http2_buffer(
    renamed_internal: None, tls: Any, caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    caplog.set_level(logging.WARNING, "trio_sse.server")
    # HTTP/1.1: the connection's stream comes through the scope's state, no walk at all.
    async with serving(Flavor("ours-http1.1", ours=True, tls=False, http2=False), tls) as served:
        check_fast_path(transport_for(served.scope, served.receive, served.send), expect_socket=_server_socket(served))
    assert ADAPTER.misses == 0
    # HTTP/2: hypercorn's per-stream buffer is only reachable through its objects.
    async with serving(Flavor("ours-http2-tls", ours=True, tls=True, http2=True), tls) as served:
        assert transport_for(served.scope, served.receive, served.send).h2_buffer is None
    assert ADAPTER.misses == 1
    (warning,) = _warnings(caplog)
    assert f"hypercorn {HYPERCORN_VERSION}" in warning and "stream_buffers" in warning


async def test_under_the_hypercorn_cli_a_missing_config_path_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def receive() -> dict[str, Any]:  # pragma: no cover - never called
        return {}

    receive.__module__ = "hypercorn.trio.lifespan"  # hypercorn's, without the bound Config
    assert not hypercorn_trio.adopt_idle_timeout(receive, 5.0)
    assert ADAPTER.misses == 1
    assert any("Config" in message for message in _warnings(caplog))
    assert not hypercorn_trio.adopt_idle_timeout(lambda: None, 5.0)  # not hypercorn: nothing to miss
    assert ADAPTER.misses == 1


async def test_under_the_hypercorn_cli_with_a_renamed_internal_send_timeout_ends_a_stuck_stream(
    renamed_internal: None, caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    # End to end: `hypercorn 'trio_sse.app:create_app()'` (hypercorn's worker, the app's own
    # hub) under a hypercorn whose objects the adapter cannot walk. A client that stops
    # reading is still ended at send_timeout, and /sse/stats and /metrics show the miss.
    caplog.set_level(logging.WARNING, "trio_sse.server")
    config = _config(Flavor("hypercorn-http1.1", ours=False, tls=False, http2=False), tls=None)
    app = trio_sse.create_app(settings=Settings(send_timeout=SEND_TIMEOUT, log_level="warning"))
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        host, port = await start(nursery, functools.partial(hypercorn_serve, app, config), stop)
        stuck = await trio.open_tcp_stream(host, port)
        await stuck.send_all(b"GET /sse/events HTTP/1.1\r\nhost: t\r\n\r\n")
        head = b""
        while b"event: connected" not in head:
            head += await stuck.receive_some(65536)
        try:
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
                started = trio.current_time()
                pad = "x" * 60_000
                for n in range(200):  # ~12 MB the client never reads: the stream's write gets stuck
                    reply = await http.post("/sse/publish", json={"event_type": "commit", "data": {"n": n, "pad": pad}})
                    assert reply.status_code == 202, reply.text
                with trio.fail_after(3 * SEND_TIMEOUT):
                    while True:
                        stats = (await http.get("/sse/stats")).json()
                        if stats["disconnects"].get("send_timeout") == 1:
                            break
                        await trio.sleep(0.5)
                assert trio.current_time() - started < 3 * SEND_TIMEOUT
                assert stats["active_connections"] == 0
                assert stats["transport_adapter"] == {"misses": 1, "hypercorn": HYPERCORN_VERSION}
                metrics = (await http.get("/metrics")).text
                assert "trio_sse_transport_adapter_misses_total 1.0" in metrics
        finally:
            await trio.aclose_forcefully(stuck)  # frees a write still stuck when the check failed
        stop.set()
    assert len(_warnings(caplog)) == 1
