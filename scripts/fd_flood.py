"""Descriptor flood: N connect+close against a running server, then count the descriptors it holds.

    python scripts/fd_flood.py --base http://127.0.0.1:8000 --count 10000 [--pid PID]

Each connection is opened and closed at once by the client (a FIN, no request), from
several threads as fast as they go: what a scanner, a health checker that only
connects, or an attacker does. A server that does not close its side when the client
has gone keeps one descriptor per such connection (CLOSE-WAIT) until its keep-alive
timeout. Two seconds (``--settle``) after the flood, the server's descriptors are
counted in ``/proc/<pid>/fd`` (the pid is ``--pid``, else ``process_id`` from
``/sse/stats``) and printed as one JSON line with the count before the flood.

On the server's own machine, run it at a lower priority (``nice -n 15 python
scripts/fd_flood.py ...``): an attacker has CPUs of its own, and at equal priority
the flood's threads (their kernel work) take the CPU the server needs to accept.

The clients bind to rotating loopback addresses (127.0.0.2, 127.0.0.3, ...) so the
flood never runs out of ephemeral ports, whatever is left in TIME_WAIT by an earlier
run. Only 127.0.0.0/8 is ever contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Linux's IP_BIND_ADDRESS_NO_PORT: bind the source address now, pick the port at
#: connect() with the whole 4-tuple known (so ports are shared across destinations).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Source addresses used in turn, 127.0.0.2 to 127.0.0.(1 + SOURCES).
SOURCES = 32


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect_and_close(host: str, port: int, source: str) -> bool:
    """One connect then an immediate close; True if the connection was established."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.settimeout(5.0)
        sock.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def flood(host: str, port: int, count: int, threads: int = 8) -> dict[str, Any]:
    """``count`` connect+close from ``threads`` threads; returns how many connected and the time taken."""
    if not host.startswith("127."):
        raise SystemExit("only 127.0.0.0/8 may be flooded")
    connected = [0] * threads
    per_thread = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def run(index: int) -> None:
        ok = 0
        for n in range(per_thread[index]):
            source = f"127.0.0.{2 + (index * 7919 + n) % SOURCES}"
            ok += connect_and_close(host, port, source)
        connected[index] = ok

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"attempted": count, "connected": sum(connected), "seconds": round(time.perf_counter() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--count", type=int, default=10_000, help="connect+close to make")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before counting")
    parser.add_argument("--pid", type=int, default=None, help="server pid (default: process_id of /sse/stats)")
    args = parser.parse_args(argv)
    url = urlsplit(args.base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pid = args.pid
    if pid is None:
        pid = int(httpx.get(f"{args.base}/sse/stats", timeout=10).json()["process_id"])
    before = count_fds(pid)
    result = flood(host, port, args.count, args.threads)
    time.sleep(args.settle)
    alive = os.path.exists(f"/proc/{pid}")
    after = count_fds(pid) if alive else None
    print(
        json.dumps({**result, "pid": pid, "fds_before": before, f"fds_after_{args.settle:g}s": after, "alive": alive})
    )
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
