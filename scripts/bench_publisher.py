"""Events per second from one process of concurrent single ``publish()`` calls: the batching
publishers (``trio_sse.client.open_publisher``, ``SyncPublisher``) beside one request per
event, against a real trio_sse server and against the sse-starlette peer.

Run from the repository root (the peer's venv: ``bash scripts/peers/setup_starlette.sh``)::

    .venv/bin/python scripts/bench_publisher.py                     # 3 runs of 5 s per case
    .venv/bin/python scripts/bench_publisher.py --runs 1 --duration 2 --only trio_sse

Each case starts a fresh server pinned to core 0 (``taskset -c 0``: trio_sse as
``scripts/bench`` runs it, no publish rate limit; sse-starlette on uvicorn with uvloop and
httptools, one worker) and one client process pinned to core 1 that keeps N trio tasks
(or N threads) each publishing one event after another, as application code does, for
``--warmup`` + ``--duration`` seconds (``--single-tasks``, ``--batched-tasks`` and
``--threads`` list the N of each case). The figure is the events whose ``publish()``
returned an id within the ``--duration`` window, per second; the median of
``--runs`` runs. Modes:

* ``single`` — each call is one ``POST /sse/publish`` (``trio_sse.client.publish`` on one
  shared ``httpx.AsyncClient``): what a publishing program did before the publisher;
* ``batched`` — each call is ``await publisher.publish(...)`` on one ``open_publisher``;
* ``sync-single`` — threads, each call one ``httpx.Client.post`` (one shared client);
* ``sync-batched`` — threads, each call ``SyncPublisher.publish(...)``.

sse-starlette's peer accepts the same single and batch bodies (``scripts/peers/README.md``),
so the publishers run against it unchanged. For trio_sse, the server's ``events_published``
(``/sse/stats``) after the run is checked against the ids the client got: every event once.
No subscriber is connected: this measures publishing, not fan-out.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TRIO_SSE_BIN = ROOT / ".venv" / "bin" / "trio-sse"
STARLETTE_VENV = ROOT / ".bench" / "starlette-venv"
PEERS_DIR = ROOT / "scripts" / "peers"
TRIO_SSE_ARGS = ("--log-level", "warning", "--publish-rate", "100000000", "--history-size", "100000")
MODES = ("single", "batched", "sync-single", "sync-batched")
SERVERS = ("trio_sse", "starlette")
LABELS = {"trio_sse": "trio_sse", "starlette": "sse-starlette"}
EVENT_TYPE = "system_status"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


class Server:
    """One server process on a free port of 127.0.0.1, pinned to ``core``."""

    def __init__(self, name: str, core: str) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        pin = ["taskset", "-c", core] if shutil.which("taskset") else []
        if name == "trio_sse":
            argv = [*pin, str(TRIO_SSE_BIN), "serve", "--host", HOST, "--port", str(self.port), *TRIO_SSE_ARGS]
            ready = "/sse/health"
        else:
            argv = [
                *pin, str(STARLETTE_VENV / "bin" / "uvicorn"), "--app-dir", str(PEERS_DIR), "starlette_app:app",
                "--host", HOST, "--port", str(self.port), "--workers", "1", "--log-level", "warning", "--no-access-log",
            ]  # fmt: skip
            ready = "/health"
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                get_json(self.base_url + ready)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (``taskset`` execs: the pid is the server's)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def published(self) -> int | None:
        if self.name != "trio_sse":
            return None
        return int(get_json(self.base_url + "/sse/stats")["events_published"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the client process -------------------------------------------------------------------


def client_trio(mode: str, url: str, tasks: int, warmup: float, duration: float) -> dict[str, Any]:
    import httpx
    import trio

    from trio_sse.client import open_publisher, publish

    counts = {"total": 0, "measured": 0, "errors": 0, "requests": 0}

    async def main() -> None:
        start = trio.current_time()
        window = (start + warmup, start + warmup + duration)

        async def worker(send: Any) -> None:
            n = 0
            while trio.current_time() < window[1]:
                n += 1
                try:
                    await send(EVENT_TYPE, {"n": n, "msg": "benchmark event"})
                except Exception:
                    counts["errors"] += 1
                    continue
                counts["total"] += 1
                if window[0] <= trio.current_time() <= window[1]:
                    counts["measured"] += 1

        async with httpx.AsyncClient(timeout=30) as http:
            if mode == "single":

                async def send(event_type: str, data: Any) -> str:
                    return await publish(url, event_type, data, http=http)

                async with trio.open_nursery() as nursery:
                    for _ in range(tasks):
                        nursery.start_soon(worker, send)
                counts["requests"] = counts["total"] + counts["errors"]
            else:
                async with open_publisher(url, http=http) as publisher:
                    async with trio.open_nursery() as nursery:
                        for _ in range(tasks):
                            nursery.start_soon(worker, publisher.publish)
                counts["requests"] = publisher.requests

    trio.run(main)
    return counts | {"cpu": cpu_seconds()}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_threads(mode: str, url: str, threads: int, warmup: float, duration: float) -> dict[str, Any]:
    import httpx

    from trio_sse.client import SyncPublisher

    lock = threading.Lock()
    counts = {"total": 0, "measured": 0, "errors": 0, "requests": 0}
    start = time.monotonic()
    window = (start + warmup, start + warmup + duration)
    http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=threads))
    publisher = SyncPublisher(url) if mode == "sync-batched" else None
    target = url.rstrip("/") + "/sse/publish"

    def send(data: Any) -> str:
        if publisher is not None:
            return publisher.publish(EVENT_TYPE, data)
        response = http.post(target, json={"event_type": EVENT_TYPE, "data": data})
        if response.status_code != 202:
            raise RuntimeError(response.status_code)
        event_id: str = response.json()["id"]
        return event_id

    def worker() -> None:
        total = measured = errors = n = 0
        while time.monotonic() < window[1]:
            n += 1
            try:
                send({"n": n, "msg": "benchmark event"})
            except Exception:
                errors += 1
                continue
            total += 1
            if window[0] <= time.monotonic() <= window[1]:
                measured += 1
        with lock:
            counts["total"] += total
            counts["measured"] += measured
            counts["errors"] += errors

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    if publisher is not None:
        publisher.close()
        counts["requests"] = publisher.requests
    else:
        counts["requests"] = counts["total"] + counts["errors"]
    http.close()
    return counts | {"cpu": cpu_seconds()}


# -- the driver ------------------------------------------------------------------------------


def measure(server_name: str, mode: str, callers: int, args: argparse.Namespace) -> dict[str, Any]:
    server = Server(server_name, args.server_core)
    try:
        before, cpu_before = server.published(), server.cpu_seconds()
        pin = ["taskset", "-c", args.client_core] if shutil.which("taskset") else []
        argv = [
            *pin, sys.executable, __file__, "--client", mode, "--url", server.base_url, "--callers", str(callers),
            "--warmup", str(args.warmup), "--duration", str(args.duration),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
        result: dict[str, Any] = json.loads(run.stdout)
        after, cpu_after = server.published(), server.cpu_seconds()
        result["server_cpu"] = cpu_after - cpu_before
        result["server_counted"] = None if before is None or after is None else after - before
        result["rate"] = result["measured"] / args.duration
        return result
    finally:
        server.stop()


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(), "load at start": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before the window opens")
    parser.add_argument("--single-tasks", default="16,64,256", help="trio tasks, one request per event")
    parser.add_argument("--batched-tasks", default="256,1000,2000", help="trio tasks on one publisher")
    parser.add_argument("--threads", default="64,256", help="threads, for both sync modes")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers: trio_sse,starlette")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--client-core", default="1")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--callers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        runner = client_trio if args.client in ("single", "batched") else client_threads
        print(json.dumps(runner(args.client, args.url, args.callers, args.warmup, args.duration)))
        return

    # A SIGTERM (or a SIGINT to a background job, which ignores it by default) must still
    # run the ``finally`` that stops the server of the case in progress.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    servers = [s for s in args.only.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    info = machine()
    print(f"machine: {info}", file=sys.stderr)
    callers = {
        "single": args.single_tasks,
        "batched": args.batched_tasks,
        "sync-single": args.threads,
        "sync-batched": args.threads,
    }
    cases = [
        (server_name, mode, int(n)) for server_name in servers for mode in modes for n in callers[mode].split(",") if n
    ]
    rows: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for server_name, mode, n in cases:
            result = measure(server_name, mode, n, args)
            rows.setdefault((server_name, mode, n), []).append(result)
            print(
                f"run {run + 1}: {server_name:9s} {mode:12s} {n:5d} {result['rate']:>10,.0f} events/s"
                f"  requests {result['requests']:>7}  errors {result['errors']}"
                f"  ids {result['total']}  server counted {result['server_counted']}"
                f"  CPU µs/event client {1e6 * result['cpu'] / max(result['total'], 1):.0f}"
                f" server {1e6 * result['server_cpu'] / max(result['total'], 1):.0f}",
                file=sys.stderr,
                flush=True,
            )
    lines = [
        "| server | mode | callers | events/s (median) | runs | events per request | CPU µs per event: client"
        " / server | errors | server stored = ids |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (server_name, mode, n), results in rows.items():
        rates = [r["rate"] for r in results]
        per_request = statistics.median(r["total"] / max(r["requests"], 1) for r in results)
        same = [r["server_counted"] == r["total"] for r in results if r["server_counted"] is not None]
        client_cpu = statistics.median(1e6 * r["cpu"] / max(r["total"], 1) for r in results)
        server_cpu = statistics.median(1e6 * r["server_cpu"] / max(r["total"], 1) for r in results)
        unit = "tasks" if mode in ("single", "batched") else "threads"
        lines.append(
            f"| {LABELS[server_name]} | {mode} | {n:,} {unit} "
            f"| {statistics.median(rates):,.0f} | {', '.join(f'{x:,.0f}' for x in rates)} | {per_request:,.1f} "
            f"| {client_cpu:,.0f} / {server_cpu:,.0f} "
            f"| {sum(r['errors'] for r in results)} | {('yes' if all(same) else 'NO') if same else 'n/a'} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (args.out / f"bench-publisher-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": info,
                "args": vars(args) | {"out": str(args.out)},
                "rows": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in rows.items()},
            },
            indent=2,
        )
    )
    (args.out / f"bench-publisher-{stamp}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
