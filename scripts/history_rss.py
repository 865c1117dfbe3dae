"""What the replay history costs in resident memory, and what a publisher of large events does.

Run from the repository root; it starts its own ``trio-sse serve`` on 127.0.0.1 and stops it::

    PYTHONPATH=$PWD .venv/bin/python scripts/history_rss.py rss --events 2000
    PYTHONPATH=$PWD .venv/bin/python scripts/history_rss.py flood --memory-limit 400000000

``rss``: publishes ``--events`` events of ~64 KiB of JSON data (the largest the dev
``max_event_bytes`` accepts) into a history large enough to keep them all, and reports
the server's RSS growth per event (``/sse/stats`` ``memory_rss_bytes``, after publishing
stops) next to the bytes the history counts for them.

``flood``: the incident of issue 11 item 4. A server with ``--memory-limit`` and
``--streams`` open streams (read and discarded), one publisher sends ``--megabytes``
of 64 KiB events as fast as it can; then, every second for ``--watch`` seconds: the
RSS, the history's size and bytes, the streams shed for memory pressure, and whether a
new stream is admitted. ``--server-arg`` passes more settings (``--history-bytes …``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

DATA = "x" * 65_530  # + its quotes: 65,532 bytes of JSON, under max_event_bytes (65,536)
BATCH = 14  # 14 x 64 KiB stays under max_body_bytes (1 MiB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, args: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "trio_sse.cli", "serve", "--port", str(port), "--log-level", "warning", *args]
    # cwd "/": with ``-m`` the working directory comes first on sys.path, before PYTHONPATH,
    # so a checkout's own tree would win over the one PYTHONPATH names.
    server = subprocess.Popen(command, env={**os.environ}, cwd="/", stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/sse/health", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


def stats(port: int) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/sse/stats", timeout=10).json())


def publish(port: int, count: int) -> float:
    """Publish ``count`` large events in batches; the seconds it took."""
    started = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        sent = 0
        while sent < count:
            n = min(BATCH, count - sent)
            body = {"events": [{"event_type": "commit", "data": DATA}] * n}
            reply = client.post("/sse/publish", content=json.dumps(body), headers={"content-type": "application/json"})
            reply.raise_for_status()
            sent += n
    return time.monotonic() - started


def open_stream(port: int) -> tuple[socket.socket, int]:
    """A raw stream and its status code (the socket is read and discarded by a thread when 200)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /sse/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    head = sock.recv(65536)
    status = int(head.split(b" ", 2)[1])
    if status == 200:
        threading.Thread(target=drain, args=(sock,), daemon=True).start()
    else:
        sock.close()
    return sock, status


def drain(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 20):
            pass
    except OSError:
        pass


def run_rss(args: argparse.Namespace) -> None:
    port = free_port()
    history = ["--history-size", str(args.events + 10)]
    server = start_server(port, [*history, "--history-bytes", str(1 << 40)] if args.history_bytes_flag else history)
    try:
        time.sleep(1)
        print(
            "server runs",
            subprocess.run(
                [sys.executable, "-c", "import trio_sse; print(trio_sse.__file__)"],
                cwd="/",
                capture_output=True,
                text=True,
            ).stdout.strip(),
        )
        before = stats(port)["memory_rss_bytes"]
        took = publish(port, args.events)
        time.sleep(1)
        after = stats(port)
        grown = after["memory_rss_bytes"] - before
        counted = after["history"].get("bytes")
        print(f"{args.events} events of {len(DATA) + 2} bytes of data published in {took:.1f} s")
        print(f"RSS grew {grown / 2**20:.1f} MiB: {grown / args.events / 1024:.1f} KiB per event")
        if counted is not None:
            print(f"history counts {counted / 2**20:.1f} MiB ({counted / args.events / 1024:.1f} KiB per event)")
    finally:
        server.terminate()
        server.wait(10)


def run_flood(args: argparse.Namespace) -> None:
    port = free_port()
    server = start_server(port, ["--memory-limit", str(args.memory_limit), *args.server_arg])
    streams: list[socket.socket] = []
    try:
        for _ in range(args.streams):
            sock, status = open_stream(port)
            assert status == 200, status
            streams.append(sock)
        time.sleep(1)
        print(f"idle: rss {stats(port)['memory_rss_bytes'] / 2**20:.0f} MiB, limit {args.memory_limit / 2**20:.0f} MiB")
        count = args.megabytes * 2**20 // (2 * 65_600)
        took = publish(port, count)
        print(f"published {count} events (~{args.megabytes} MiB counting wire + data) in {took:.1f} s")
        for second in range(args.watch):
            time.sleep(1)
            snap = stats(port)
            _, status = open_stream(port)
            history = snap["history"]
            print(
                f"t+{second + 1:>2}s rss {snap['memory_rss_bytes'] / 2**20:>5.0f} MiB"
                f"  history {history['size']:>5} events {history.get('bytes', 0) / 2**20:>6.1f} MiB"
                f"  shed {snap['disconnects'].get('memory_pressure', 0):>3}/{args.streams}"
                f"  new stream -> {status}"
            )
    finally:
        for sock in streams:
            sock.close()
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    rss = sub.add_parser("rss")
    rss.add_argument("--events", type=int, default=2000)
    rss.add_argument(
        "--no-history-bytes",
        dest="history_bytes_flag",
        action="store_false",
        help="for a build without the history_bytes setting",
    )
    flood = sub.add_parser("flood")
    flood.add_argument("--memory-limit", type=int, default=400_000_000)
    flood.add_argument("--streams", type=int, default=20)
    flood.add_argument("--megabytes", type=int, default=400)
    flood.add_argument("--watch", type=int, default=8)
    flood.add_argument("--server-arg", action="append", default=[])
    args = parser.parse_args()
    run_rss(args) if args.mode == "rss" else run_flood(args)


if __name__ == "__main__":
    main()
