"""Check lossless failover on a running scripts/cluster: kill the instance holding a stream.

    python scripts/cluster.d/failover_check.py --lb-port 8080 --ports 8001,8002

1. opens a stream through nginx and finds (with /sse/connections on each instance) the
   instance that holds it;
2. publishes numbered events through nginx, 20 per second, for the whole run;
3. after a few events, SIGKILLs the instance holding the stream (its pid from the
   listening socket, so nothing else is touched): the stream breaks without a clean end;
4. reconnects through nginx with ``Last-Event-ID`` (nginx skips the dead instance) and
   reads on;
5. checks that every event published was received exactly once, in order.

Prints what it sees and exits 0 when nothing was lost or duplicated. The killed instance
stays down: scripts/cluster reports it and keeps the rest running (stop it with Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

import httpx
import psutil


def holder_pid(port: int) -> int:
    """The pid of the process listening on 127.0.0.1:port."""
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return int(conn.pid)
    raise SystemExit(f"no process listens on port {port}")


def connections_on(port: int) -> set[str]:
    """The connection ids an instance holds; empty when it does not answer (killed)."""
    try:
        listing = httpx.get(f"http://127.0.0.1:{port}/sse/connections", timeout=2).json()
    except httpx.HTTPError:
        return set()
    return {c["connection_id"] for c in listing["connections"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lb-port", type=int, default=8080)
    ap.add_argument("--ports", default="8001,8002", help="the instances' ports")
    ap.add_argument("--events", type=int, default=100, help="events to publish (20/s)")
    args = ap.parse_args()
    lb = f"http://127.0.0.1:{args.lb_port}"
    ports = [int(p) for p in args.ports.split(",")]

    published: list[str] = []
    done = threading.Event()

    def publisher() -> None:
        with httpx.Client(base_url=lb, timeout=10) as client:
            for n in range(args.events):
                time.sleep(0.05)
                r = client.post("/sse/publish", json={"event_type": "task_update", "data": {"n": n}})
                if r.status_code == 202:
                    published.append(r.json()["id"])
                else:
                    print(f"publish {n}: {r.status_code} {r.text}")
        done.set()

    received: list[tuple[str, int]] = []
    last_id: str | None = None
    killed = False
    streams = 0
    pub = threading.Thread(target=publisher, daemon=True)
    with httpx.Client(base_url=lb, timeout=httpx.Timeout(10, read=5)) as client:
        while not (done.is_set() and len(received) >= len(published)):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with client.stream("GET", "/sse/events?types=task_update", headers=headers) as resp:
                    streams += 1
                    conn_id = resp.headers["x-sse-connection-id"]
                    where = [p for p in ports if conn_id in connections_on(p)]
                    print(f"stream {streams}: connection {conn_id} on instance port {where}, Last-Event-ID {last_id}")
                    if streams == 1:
                        pub.start()
                    event_id = None
                    for line in resp.iter_lines():
                        if line.startswith("id: "):
                            event_id = line[4:]
                        elif line.startswith("data: ") and event_id is not None:
                            received.append((event_id, json.loads(line[6:])["n"]))
                            last_id, event_id = event_id, None
                            if len(received) == 20 and not killed:
                                pid = holder_pid(where[0])
                                print(f"received 20 events; SIGKILL instance on port {where[0]} (pid {pid})")
                                os.kill(pid, signal.SIGKILL)
                                killed = True
                        if done.is_set() and len(received) >= len(published):
                            break
            except httpx.HTTPError as exc:
                print(f"stream {streams} broke: {type(exc).__name__}: {exc}; reconnecting with {last_id}")
                time.sleep(0.2)

    ids = [i for i, _ in received]
    numbers = [n for _, n in received]
    ok = ids == published and numbers == list(range(len(numbers)))
    in_order = ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    print(
        f"published {len(published)}, received {len(received)}, duplicates {len(ids) - len(set(ids))}, "
        f"missing {len(set(published) - set(ids))}, in order {in_order}"
    )
    print("OK: every event exactly once, in order" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
