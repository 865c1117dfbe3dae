"""Kill -9 Redis under publishing load and count the accepted events a subscriber lost.

    .venv/bin/python scripts/redis_kill.py [--runs 5] [--rate 11000] [--batch 20]
        [--history 10000] [--kill-at 5] [--restart-at 8] [--duration 13] [--no-persist]

Starts a redis-server (AOF fsynced on every write unless ``--no-persist``, so Redis
itself loses nothing it acknowledged), two trio_sse instances on it (A and B, each
``python -m trio_sse serve`` in its own process), one subscriber on B, and publishers
posting batches to A at ``--rate`` events/s. Redis gets SIGKILL at ``--kill-at`` and is
started again at ``--restart-at``; publishing stops at ``--duration``, then the
subscriber drains until it has been quiet for 2 s.

Each run prints one JSON line:

- ``accepted``: events answered 202 (their ids), ``refused``: events answered 503;
- ``received``: ids the subscriber got, ``duplicates`` and ``out_of_order`` among them;
- ``missing``: accepted ids never received; ``covered``: the missing ones a
  ``stream_reset`` (``history_gap``) was sent for, right where they would have been
  (after the last id received before them, before the next one); ``lost``: missing and
  not covered -- lost in silence, what must be 0;
- ``resets``: how many ``stream_reset`` events the subscriber got.

Every process it starts is killed before it exits.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

#: The trio_sse checkout the instances run (``--code``): this one by default.
CODE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class Redis:
    def __init__(self, directory: Path, persist: bool) -> None:
        self.directory, self.persist, self.port = directory, persist, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.directory),
             "--protected-mode", "no", *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None


def start_instance(redis_url: str, stream: str, history: int, code: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code.resolve()),
        "TRIO_SSE_BACKEND": redis_url,
        "TRIO_SSE_REDIS_STREAM": stream,
        "TRIO_SSE_HISTORY_SIZE": str(history),
        "TRIO_SSE_LOG_LEVEL": "warning",
        # The subscriber must not be shed as a slow consumer while it catches up.
        "TRIO_SSE_QUEUE_SIZE": "200000",
        # The publishers catch up in bursts after the outage: no 429 for them.
        "TRIO_SSE_PUBLISH_RATE": "1000000",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_sse", "serve", "--port", str(port)],
        env=env,
        cwd=code,  # `-m` puts the working directory first on sys.path: run `code`, not this tree
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_healthy(base: str) -> None:
    async with httpx.AsyncClient(timeout=1.0) as probe:
        with trio.fail_after(30):
            while True:
                try:
                    if (await probe.get(f"{base}/sse/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def one_run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    redis = Redis(directory, persist=not args.no_persist)
    redis.start()
    url = f"redis://127.0.0.1:{redis.port}/0"
    instances = [start_instance(url, "kill", args.history, args.code) for _ in range(2)]
    try:
        (_, a), (_, b) = instances
        await wait_healthy(a)
        await wait_healthy(b)
        return await drive(args, redis, a, b)
    finally:
        for process, _ in instances:
            process.kill()
            process.wait()
        redis.kill()


async def drive(args: argparse.Namespace, redis: Redis, a: str, b: str) -> dict[str, Any]:
    accepted: list[str] = []
    accepted_at: list[float] = []  # when each 202 came, seconds after the start
    refused = 0
    received: list[str] = []
    resets: list[int] = []  # len(received) when each stream_reset arrived
    last_arrival = [time.monotonic()]
    connected = trio.Event()

    async def subscribe() -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=60.0)) as http,
            http.stream("GET", f"{b}/sse/events") as response,
        ):
            connected.set()
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    received.append(line[3:].strip())
                    last_arrival[0] = time.monotonic()
                elif line == "event: stream_reset":
                    resets.append(len(received))

    async def publish(worker: int, workers: int, start: float) -> None:
        nonlocal refused
        per_request = args.batch / (args.rate / workers)  # seconds between this worker's requests
        body = {"events": [{"event_type": "commit", "data": n} for n in range(args.batch)]}
        async with httpx.AsyncClient(timeout=10.0) as http:
            due = start + worker * per_request / workers
            while due < start + args.duration:
                wait = due - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                due += per_request
                try:
                    reply = await http.post(f"{a}/sse/publish", json=body)
                except httpx.TransportError:
                    refused += args.batch
                    continue
                if reply.status_code == 202:
                    accepted.extend(reply.json()["ids"])
                    accepted_at.extend([trio.current_time() - start] * args.batch)
                else:
                    assert reply.status_code == 503, reply.text
                    refused += args.batch

    async with trio.open_nursery() as nursery:
        nursery.start_soon(subscribe)
        await connected.wait()
        await trio.sleep(0.3)
        start = trio.current_time()
        workers = args.workers
        async with trio.open_nursery() as publishers:
            for worker in range(workers):
                publishers.start_soon(publish, worker, workers, start)
            await trio.sleep_until(start + args.kill_at)
            redis.kill()
            await trio.sleep_until(start + args.restart_at)
            await trio.to_thread.run_sync(redis.start)
        published_for = trio.current_time() - start
        while time.monotonic() - last_arrival[0] < 2.0:  # noqa: ASYNC110 - polling a live subscriber
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()

    got = set(received)
    orders = [order(i) for i in received]
    missing = [i for i in accepted if i not in got]
    covered = 0
    reset_points = set(resets)
    for event_id in missing:
        # How many received ids come before it: a reset right there covers it.
        if bisect.bisect_left(orders, order(event_id)) in reset_points:
            covered += 1
    # The rate that matters: right after the restart, while the readers come back.
    window = [t for t in accepted_at if args.restart_at <= t < args.restart_at + 2]
    return {
        "attempted_rate": round((len(accepted) + refused) / published_for),
        "accepted_rate_while_up": round(len(accepted) / (published_for - (args.restart_at - args.kill_at))),
        "rate_2s_after_restart": round(len(window) / 2),
        "before_kill_rate": round(len([t for t in accepted_at if t < args.kill_at]) / args.kill_at),
        "accepted": len(accepted),
        "refused": refused,
        "received": len(received),
        "duplicates": len(received) - len(got),
        "out_of_order": sum(1 for x, y in itertools.pairwise(orders) if x >= y),
        "missing": len(missing),
        "covered": covered,
        "lost": len(missing) - covered,
        "resets": len(resets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=11000, help="events per second")
    parser.add_argument("--batch", type=int, default=100, help="events per publish request")
    parser.add_argument("--workers", type=int, default=4, help="concurrent publishing connections")
    parser.add_argument("--history", type=int, default=10000, help="history_size of both instances")
    parser.add_argument("--kill-at", type=float, default=5.0)
    parser.add_argument("--restart-at", type=float, default=8.0)
    parser.add_argument("--duration", type=float, default=13.0, help="seconds of publishing")
    parser.add_argument("--no-persist", action="store_true", help="Redis without AOF (a restart starts empty)")
    parser.add_argument(
        "--code", type=Path, default=CODE, help="a trio_sse source tree to run the instances from (e.g. `git archive`)"
    )
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="redis-kill-") as directory:
            result = trio.run(one_run, args, Path(directory))
        results.append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps({"lost_per_run": [r["lost"] for r in results], "resets_per_run": [r["resets"] for r in results]}))


if __name__ == "__main__":
    main()
