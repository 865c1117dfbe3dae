"""Smoke test of scripts/cluster: Redis + two instances + nginx, one event through, clean stop.

Runs the real script on free ports with this checkout's trio_sse, opens a stream through
nginx, publishes through nginx and directly on each instance, then SIGTERMs the script
and checks that every process it started is gone.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cluster"

# redis-server and nginx are installed by ./scripts/test; without them this test fails
# (it never skips, so CI cannot pass without running it).


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> tuple[str, queue.Queue[str]]:
    """The script's output up to the line containing ``marker`` (read by a thread: no
    select() on a buffered pipe); the rest keeps being read so the pipe never fills."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen), lines
    raise AssertionError(f"no {marker!r} within {timeout} s (exit {proc.poll()}):\n{''.join(seen)}")


def data_lines(stream: httpx.Response, count: int) -> list[str]:
    found = []
    for line in stream.iter_lines():
        if line.startswith('data: {"via"'):
            found.append(line)
            if len(found) == count:
                break
    return found


def test_cluster_script_serves_through_nginx_and_stops_cleanly(tmp_path: Path) -> None:
    redis_port, lb_port, port_a, port_b = (free_port() for _ in range(4))
    env = {**os.environ, "CLUSTER_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    argv = [
        str(SCRIPT), "--redis-port", str(redis_port), "--ports", f"{port_a},{port_b}",
        "--lb-port", str(lb_port), "--dir", str(tmp_path / "cluster"), "--heartbeat", "5",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    started: list[psutil.Process] = []
    rest: queue.Queue[str] = queue.Queue()
    try:
        banner, rest = read_until(proc, "cluster ready", timeout=15)
        assert f"http://127.0.0.1:{lb_port}/sse/events" in banner
        started = psutil.Process(proc.pid).children(recursive=True)
        lb = f"http://127.0.0.1:{lb_port}"
        with (
            httpx.Client(timeout=5) as client,
            client.stream("GET", f"{lb}/sse/events?types=system_status") as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            for base in (lb, f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"):
                reply = client.post(f"{base}/sse/publish", json={"event_type": "system_status", "data": {"via": base}})
                assert reply.status_code == 202, reply.text
            got = data_lines(stream, 3)
        assert len(got) == 3, got
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the script's own session: only what it started
            proc.wait()
            raise
    assert proc.returncode == 0
    time.sleep(0.1)  # let the reader thread take the last lines
    out = "".join(rest.get_nowait() for _ in range(rest.qsize()))
    assert "[cluster] stopped" in out, out
    assert started, "the script started no processes?"
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running after the script exited: {left}"
