"""Churn soak load: connects and disconnects at a steady rate under a steady publish load.

Used by ``scripts/bench --scenarios churn`` (which starts the server and pins this
client to the other core); runnable alone against any SSE server:

    python scripts/churn.py --base http://127.0.0.1:8000 --pid <server pid> --duration 300

For ``--duration`` seconds it keeps ``--steady`` streams open (reading and counting
events), opens ``--rate`` new streams per second that each read their first bytes
and then close (alternately a clean close and an abortive RST, as real clients do),
and publishes ``--publish-rate`` events per second. The server process (``--pid``)
is sampled every few seconds from the outside (RSS, open descriptors) and, when the
server is trio_sse, from ``/sse/stats`` (``trio_tasks``, ``active_connections``).

It prints one JSON line: the baseline (steady streams and publisher running, before
churn), the samples, and the end state after churn stops and a settle time, so the
drift of RSS, tasks and descriptors is visible. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import psutil
import trio

SAMPLE_EVERY = 5.0


class Counters:
    def __init__(self) -> None:
        self.opened = 0
        self.failed = 0
        self.events = 0
        self.published = 0
        self.publish_errors = 0


async def read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a ``Content-Length`` body: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    return int(lines[0].split(b" ", 2)[1]), body


def stream_request(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()


async def churn_once(host: str, port: int, path: str, counters: Counters, abortive: bool) -> None:
    """Open a stream, wait for its first event bytes, then leave (FIN or RST)."""
    try:
        sock = trio.socket.socket()
        await sock.connect((host, port))
        try:
            await sock.send(stream_request(host, port, path))
            data = b""
            with trio.fail_after(5):
                while b"\n\n" not in data.partition(b"\r\n\r\n")[2]:
                    chunk = await sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed before the first event")
                    data += chunk
            if abortive:  # SO_LINGER 0: close sends RST, like a killed client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
        counters.opened += 1
    except (OSError, trio.TooSlowError, ConnectionError):
        counters.failed += 1


async def hold_stream(host: str, port: int, path: str, counters: Counters) -> None:
    """A steady subscriber for the whole run: counts ``\\n\\n`` event ends."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(stream_request(host, port, path))
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            counters.events += chunk.count(b"\n\n")


async def publish_steadily(host: str, port: int, path: str, rate: float, counters: Counters) -> None:
    """Publish ``rate`` events per second on a keep-alive connection.

    The connection is opened again when the server closes it (hypercorn closes a
    keep-alive connection after 1,000 requests by default).
    """
    interval = 1.0 / rate
    next_at = trio.current_time()
    n = 0
    stream: trio.SocketStream | None = None
    try:
        while True:
            body = json.dumps({"event_type": "progress_update", "data": {"n": n, "t": time.time_ns()}}).encode()
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            try:
                if stream is None:
                    stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(head + body)
                status, _ = await read_response(stream)
            except (OSError, ConnectionError, trio.BrokenResourceError):
                if stream is not None:
                    await stream.aclose()
                stream = None
                counters.publish_errors += 1
            else:
                if 200 <= status < 300:
                    counters.published += 1
                else:
                    counters.publish_errors += 1
            n += 1
            next_at += interval
            await trio.sleep_until(next_at)
    finally:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def trio_sse_stats(host: str, port: int) -> dict[str, Any] | None:
    """``/sse/stats`` of the server, or ``None`` when it has none (a peer) or does not answer."""
    try:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            with trio.fail_after(5):
                await stream.send_all(f"GET /sse/stats HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                status, body = await read_response(stream)
        result: dict[str, Any] = json.loads(body) if status == 200 else None
    except (OSError, ConnectionError, ValueError, trio.TooSlowError):
        return None
    return result


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


async def sample(host: str, port: int, pid: int, started: float, counters: Counters) -> dict[str, Any]:
    procs = process_tree(pid)
    figures: dict[str, Any] = {
        "t": round(time.monotonic() - started, 1),
        "rss_bytes": sum(p.memory_info().rss for p in procs),
        "open_fds": sum(p.num_fds() for p in procs),
        "churned": counters.opened,
        "churn_failed": counters.failed,
        "events_received": counters.events,
        "published": counters.published,
    }
    stats = await trio_sse_stats(host, port)
    if stats is not None and "trio_tasks" in stats:
        figures["trio_tasks"] = stats["trio_tasks"]
        figures["active_connections"] = stats["active_connections"]
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("churn.py only targets 127.0.0.1")
    counters = Counters()
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    async with trio.open_nursery() as load:
        for _ in range(args.steady):
            load.start_soon(hold_stream, host, port, args.stream_path, counters)
        load.start_soon(publish_steadily, host, port, args.publish_path, args.publish_rate, counters)
        await trio.sleep(args.settle)
        baseline = await sample(host, port, args.pid, started, counters)
        async with trio.open_nursery() as churners:
            interval = 1.0 / args.rate
            next_at = trio.current_time()
            end = next_at + args.duration
            next_sample = next_at + SAMPLE_EVERY
            n = 0
            while trio.current_time() < end:
                churners.start_soon(churn_once, host, port, args.stream_path, counters, n % 2 == 1)
                n += 1
                next_at += interval
                if trio.current_time() >= next_sample:
                    samples.append(await sample(host, port, args.pid, started, counters))
                    next_sample += SAMPLE_EVERY
                await trio.sleep_until(next_at)
        await trio.sleep(args.settle)
        end_state = await sample(host, port, args.pid, started, counters)
        load.cancel_scope.cancel()
    return {
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "attempted": n,
        "churned": counters.opened,
        "failed": counters.failed,
        "steady_streams": args.steady,
        "publish_rate": args.publish_rate,
        "published": counters.published,
        "publish_errors": counters.publish_errors,
        "baseline": baseline,
        "end": end_state,
        "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="server base URL on 127.0.0.1")
    ap.add_argument("--pid", type=int, required=True, help="server process id (RSS and descriptors of its tree)")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--rate", type=float, default=100.0, help="connects (and disconnects) per second")
    ap.add_argument("--steady", type=int, default=100, help="streams held for the whole run")
    ap.add_argument("--publish-rate", type=float, default=100.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before the baseline and after churn")
    ap.add_argument("--stream-path", default="/sse/events")
    ap.add_argument("--publish-path", default="/sse/publish")
    args = ap.parse_args()
    result = trio.run(run, args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
