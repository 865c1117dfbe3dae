"""Connections under ``trio_sse.serve`` (issue 11, item 1): a client that has gone is closed
at once, an idle connection lasts ``idle_timeout``, and idle connections are bounded.

Real hypercorn on 127.0.0.1, real sockets, on the virtual clock (``autojump_clock``):
the clock only moves when every task waits, so "closed at once" is an elapsed time
of 0 and "closed after idle_timeout" is exactly that many seconds, however loaded the
machine is. (hypercorn's own connection waits out its keep-alive timeout, 75 s as
trio_sse configured it, before closing a connection whose client sent EOF.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import trio

from trio_sse.http import hypercorn_trio

IDLE_TIMEOUT = 5.0
#: Virtual seconds that count as "at once": far below any timeout in play.
AT_ONCE = 0.5


async def connect(server: Any) -> trio.SocketStream:
    url = urlsplit(server.base_url)
    assert url.hostname is not None and url.port is not None
    return await trio.open_tcp_stream(url.hostname, url.port)


async def seconds_until_eof(stream: trio.abc.ReceiveStream) -> float:
    """Virtual seconds until the server closes its side (whatever it sends before is read)."""
    started = trio.current_time()
    while await stream.receive_some(65536):
        pass
    return trio.current_time() - started


async def check_closed_after_idle_timeout(stream: trio.abc.Stream) -> None:
    """The server closes ``stream`` ``IDLE_TIMEOUT`` virtual seconds from now (not sooner,
    and not much later); it is then closed on this side too."""
    elapsed = await seconds_until_eof(stream)
    assert IDLE_TIMEOUT <= elapsed < IDLE_TIMEOUT + AT_ONCE
    await stream.aclose()


async def is_open(stream: trio.abc.ReceiveStream, wait: float = 1.0) -> bool:
    """True when the server neither sends nor closes for ``wait`` virtual seconds."""
    with trio.move_on_after(wait):
        await stream.receive_some(65536)
        return False
    return True


async def get(stream: trio.SocketStream, path: str) -> bytes:
    """Send one keep-alive GET and read its whole answer (``content-length`` bodies only)."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, "closed before the answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


async def settle() -> None:
    """Let the server run until it waits (the accept and the registration as idle happen)."""
    await trio.sleep(0.01)


async def test_bare_connect_then_close_is_closed_by_the_server_at_once(live_server_factory, autojump_clock) -> None:
    async with live_server_factory(idle_timeout=60) as server:
        stream = await connect(server)
        await settle()
        await stream.send_eof()  # the client closes its side without a request
        assert await seconds_until_eof(stream) < AT_ONCE
        await stream.aclose()


async def test_keep_alive_connection_is_closed_at_once_when_the_client_closes_after_its_answer(
    live_server_factory, autojump_clock
) -> None:
    async with live_server_factory(idle_timeout=60) as server:
        stream = await connect(server)
        await get(stream, "/sse/health")
        await get(stream, "/sse/health")  # kept alive between the two
        await settle()  # the server is waiting for a next request (an EOF before that closes anyway)
        await stream.send_eof()
        assert await seconds_until_eof(stream) < AT_ONCE
        await stream.aclose()


async def test_connection_that_never_sends_a_request_is_closed_after_idle_timeout(
    live_server_factory, autojump_clock
) -> None:
    async with live_server_factory(idle_timeout=IDLE_TIMEOUT) as server:
        stream = await connect(server)
        await check_closed_after_idle_timeout(stream)


async def test_keep_alive_connection_is_closed_idle_timeout_after_its_last_answer(
    live_server_factory, autojump_clock
) -> None:
    async with live_server_factory(idle_timeout=IDLE_TIMEOUT) as server:
        stream = await connect(server)
        await trio.sleep(IDLE_TIMEOUT - 1)
        await get(stream, "/sse/health")  # a request restarts the idle time
        await check_closed_after_idle_timeout(stream)


async def test_tls_connection_that_never_starts_its_handshake_is_closed_after_idle_timeout(
    live_server_factory, autojump_clock, tls: Any
) -> None:
    # hypercorn alone waits its ssl_handshake_timeout (60 s) for a ClientHello.
    async with live_server_factory(idle_timeout=IDLE_TIMEOUT, certfile=tls.certfile, keyfile=tls.keyfile) as server:
        stream = await connect(server)
        await check_closed_after_idle_timeout(stream)


async def test_oldest_idle_connection_is_closed_when_a_new_one_would_go_over_the_limit(
    live_server_factory, autojump_clock
) -> None:
    counters = hypercorn_trio.COUNTERS
    async with live_server_factory(idle_timeout=60, idle_connection_limit=3) as server:
        closed_before = counters.idle_closed_at_limit
        streams = []
        for n in range(3):
            streams.append(await connect(server))
            if n == 1:
                await get(streams[-1], "/sse/health")  # idle again after its answer: still counted
            await settle()
        assert server.hub.snapshot()["server"]["idle_connections"] == 3
        assert all([await is_open(s, 0.1) for s in streams])

        streams.append(await connect(server))  # the fourth: the oldest (the first) goes
        assert await seconds_until_eof(streams[0]) < AT_ONCE
        assert all([await is_open(s) for s in streams[1:]])
        streams.append(await connect(server))  # the fifth: then the second
        assert await seconds_until_eof(streams[1]) < AT_ONCE
        assert all([await is_open(s) for s in streams[2:]])

        stats = server.hub.snapshot()["server"]
        assert stats["idle_connections"] == 3
        assert counters.idle_closed_at_limit - closed_before == 2
        for stream in streams:
            await stream.aclose()


async def test_streams_are_not_idle_connections_and_outlive_the_idle_limit_and_timeout(
    live_server_factory, autojump_clock
) -> None:
    async with live_server_factory(idle_timeout=IDLE_TIMEOUT, idle_connection_limit=1) as server:
        sse = await connect(server)
        await sse.send_all(b"GET /sse/events?types=commit HTTP/1.1\r\nhost: test\r\n\r\n")
        head = await sse.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 200"), head
        others = [await connect(server) for _ in range(3)]
        await settle()
        assert server.hub.snapshot()["server"]["idle_connections"] == 1
        await trio.sleep(IDLE_TIMEOUT * 3)  # every idle one timed out meanwhile; heartbeats are 30 s apart
        for other in others:
            assert await seconds_until_eof(other) == 0
        await server.hub.publish("commit", {"n": 1})
        data = b""
        while b'"n":1' not in data:
            chunk = await sse.receive_some(65536)
            assert chunk, "the stream was closed"
            data += chunk
        await sse.aclose()


async def test_under_hypercorns_own_worker_the_app_sets_its_keep_alive_to_idle_timeout(autojump_clock) -> None:
    # The `hypercorn --worker-class trio 'trio_sse.app:create_app()'` path: hypercorn's worker
    # and Config, our app (opening its own hub); hypercorn's keep-alive here is 60 s.
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    import trio_sse
    from trio_sse.settings import Settings

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = 60
    config.accesslog = config.errorlog = None
    app = trio_sse.create_app(settings=Settings(idle_timeout=IDLE_TIMEOUT, log_level="warning"))
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(
            lambda task_status: hypercorn_serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        )
        url = urlsplit(binds[0])
        assert url.hostname is not None and url.port is not None
        stream = await trio.open_tcp_stream(url.hostname, url.port)
        await check_closed_after_idle_timeout(stream)
        assert config.keep_alive_timeout == IDLE_TIMEOUT
        stop.set()
