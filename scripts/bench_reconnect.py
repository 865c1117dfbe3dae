"""Count a client's reconnection attempts against a dead server (issue 11, item 7).

A server on 127.0.0.1 answers one stream with ``retry: 0`` and one event, then dies
(its socket and its listener close: later connections are refused). The client is
``trio_sse.client.connect`` with its defaults; every request it starts is counted for
``--seconds`` of real time after the death.

    .venv/bin/python scripts/bench_reconnect.py
    PYTHONPATH=/tmp/old-tree .venv/bin/python scripts/bench_reconnect.py   # another checkout's client
"""

from __future__ import annotations

import argparse
import inspect

import httpx
import trio

import trio_sse.client


async def serve_once(listener: trio.SocketListener, retry: int) -> None:
    async with listener:
        stream = await listener.accept()
    async with stream:  # the listener is closed now: every later connection is refused
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(65536)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        await stream.send_all(head + f"retry: {retry}\nid: 1\ndata: 1\n\n".encode())


async def main(seconds: float, retry: int) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    attempts = 0

    async def count(request: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_once, listener, retry)
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            async with trio_sse.client.connect(f"http://127.0.0.1:{port}", http=http) as source:
                event = await anext(source)
                assert event.id == "1"
                attempts = 0
                with trio.move_on_after(seconds):
                    await anext(source)
    print(f"client: {inspect.getsourcefile(trio_sse.client)}")
    print(f"retry: {retry} ms, server dead: {attempts} connection attempts in {seconds:g} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--retry", type=int, default=0, help="the server's retry: in ms")
    args = parser.parse_args()
    trio.run(main, args.seconds, args.retry)
