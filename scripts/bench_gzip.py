"""What gzip costs an event stream: CPU per event and bytes on the wire, plain vs gzip.

Run from the repository root (no server needed for the first part)::

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_gzip.py            # microbenchmark
    PYTHONPATH=$PWD .venv/bin/python scripts/bench_gzip.py --e2e      # + a real server

1. **Microbenchmark** — the per-write work a gzip stream adds: ``compress`` + ``flush
   (Z_SYNC_FLUSH)`` of typical ``progress_update`` events (~200 bytes of JSON data), one
   stream over many events so the compressor sees the history it would in production.
   Writes of 1 event (a quiet stream) and of 10 events (a busy fan-out round). Several
   zlib settings are compared, with the zlib state each stream holds (RSS per stream).
2. **End to end** (``--e2e``) — a real ``trio-sse serve`` subprocess (pinned to core 0
   when ``taskset`` exists), N raw HTTP/1.1 streams, events published in batches; the
   server's CPU time (utime + stime from /proc) per delivered event and the bytes the
   clients received, for plain streams, gzip streams on the direct-write path, and gzip
   streams with ``--no-direct-writes`` (every write through hypercorn's ASGI send).

Every figure is the median of ``--runs`` runs. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import zstandard

from trio_sse.core.compression import GZIP_LEVEL, GZIP_MEM_LEVEL, GZIP_WBITS, GzipStream, ZstdStream
from trio_sse.core.events import make_event

#: (name, level, wbits, memLevel) compared in the microbenchmark; the shipped one is marked.
CONFIGS = [
    ("zlib defaults (6, 32 KiB window, memLevel 8)", 6, 15, 8),
    ("level 1, 32 KiB window, memLevel 8", 1, 15, 8),
    ("level 6, 4 KiB window, memLevel 5", 6, 12, 5),
    ("level 1, 4 KiB window, memLevel 5", 1, 12, 5),
]


def progress_events(count: int) -> list[bytes]:
    """Wire blocks of ``progress_update`` events shaped like a real job's, ~200 bytes of data."""
    stages = ["checkout", "install", "build", "test", "package", "upload"]
    blocks = []
    for n in range(count):
        data = {
            "task_id": f"task-{n // 50:05d}",
            "project_id": f"proj-{(n // 50) % 7}",
            "stage": stages[(n // 8) % len(stages)],
            "progress": (n * 7) % 101,
            "done": n % 50,
            "total": 50,
            "message": f"step {n % 50} of 50: {stages[(n // 8) % len(stages)]} running",
            "updated_at": f"2026-11-25T10:{(n // 60) % 60:02d}:{n % 60:02d}.{(n * 37) % 1000:03d}Z",
        }
        event = make_event((1764064800000 + n * 13, n), "progress_update", orjson.dumps(data), None, 0.0)
        blocks.append(event.wire)
    return blocks


def writes_of(events: list[bytes], per_write: int) -> list[list[bytes]]:
    return [events[i : i + per_write] for i in range(0, len(events), per_write)]


def time_plain(writes: list[list[bytes]]) -> tuple[float, int]:
    """What a plain write does with the bytes before the socket: join them."""
    start = time.perf_counter()
    total = sum(len(b"".join(parts)) for parts in writes)
    return time.perf_counter() - start, total


def time_gzip(writes: list[list[bytes]], make: Callable[[], Any]) -> tuple[float, int]:
    """compress + Z_SYNC_FLUSH per write, as GzipStream.write does, on one stream."""
    compressor = make()
    start = time.perf_counter()
    total = 0
    for parts in writes:
        out = [compressor.compress(part) for part in parts]
        out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        total += len(b"".join(out))
    return time.perf_counter() - start, total


def time_encoder(writes: list[list[bytes]], make: Callable[[], Any]) -> tuple[float, int]:
    """A shipped stream encoder (GzipStream or ZstdStream) as the server calls it: write() per write."""
    encoder = make()
    start = time.perf_counter()
    total = sum(len(encoder.write(parts)) for parts in writes)
    return time.perf_counter() - start, total


def rss_per_encoder(make: Callable[[], Any], sample: list[bytes], streams: int = 1000) -> float:
    """RSS added per live stream encoder once it has written ``sample`` (one event per write)."""
    gc.collect()
    before = rss_bytes()
    held = []
    for _ in range(streams):
        encoder = make()
        for block in sample:
            encoder.write([block])
        held.append(encoder)
    grown = rss_bytes() - before
    del held
    return grown / streams


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_per_stream(make: Callable[[], Any], sample: list[bytes], streams: int = 1000) -> float:
    """RSS added per live compressor once it has written more than its window (all its state touched)."""
    gc.collect()
    before = rss_bytes()
    held = []
    for _ in range(streams):
        compressor = make()
        for block in sample:
            compressor.compress(block)
            compressor.flush(zlib.Z_SYNC_FLUSH)
        held.append(compressor)
    grown = rss_bytes() - before
    del held
    return grown / streams


def microbenchmark(runs: int, count: int) -> list[str]:
    events = progress_events(count)
    data_bytes = statistics.mean(len(e) for e in events)
    lines = [
        f"Microbenchmark: {count} `progress_update` events per run (wire block {data_bytes:.0f} B on average), "
        f"one compressor per stream, median of {runs} runs.",
        "",
        "| writes of | mode | µs per event | bytes per event on the wire | vs plain size | RSS per stream |",
        "|---|---|---|---|---|---|",
    ]
    for per_write in (1, 10):
        writes = writes_of(events, per_write)
        plain = [time_plain(writes) for _ in range(runs)]
        plain_us = statistics.median(t for t, _ in plain) / count * 1e6
        plain_size = plain[0][1] / count
        lines.append(f"| {per_write} event(s) | plain | {plain_us:.2f} | {plain_size:.0f} | 1.00 | 0 |")
        for name, level, wbits, mem in CONFIGS:

            def make(level: int = level, wbits: int = wbits, mem: int = mem) -> Any:
                return zlib.compressobj(level, zlib.DEFLATED, 16 + wbits, mem)

            results = [time_gzip(writes, make) for _ in range(runs)]
            us = statistics.median(t for t, _ in results) / count * 1e6
            size = results[0][1] / count
            rss = rss_per_stream(make, events[:300]) if per_write == 1 else None
            shipped = " **(shipped)**" if (level, wbits, mem) == (GZIP_LEVEL, GZIP_WBITS, GZIP_MEM_LEVEL) else ""
            rss_text = f"{rss / 1024:.0f} KiB" if rss is not None else "—"
            lines.append(
                f"| {per_write} event(s) | gzip: {name}{shipped} | {us:.2f} | {size:.0f} | "
                f"{size / plain_size:.2f} | {rss_text} |"
            )
        for label, make_encoder in (
            ("GzipStream (shipped gzip)", GzipStream),
            ("ZstdStream (shipped zstd)", ZstdStream),
        ):
            results = [time_encoder(writes, make_encoder) for _ in range(runs)]
            us = statistics.median(t for t, _ in results) / count * 1e6
            size = results[0][1] / count
            rss_text = f"{rss_per_encoder(make_encoder, events[:300]) / 1024:.0f} KiB" if per_write == 1 else "—"
            lines.append(
                f"| {per_write} event(s) | **{label}** | {us:.2f} | {size:.0f} | {size / plain_size:.2f} | {rss_text} |"
            )
    # The shipped encoder as the server calls it, for the record.
    stream = GzipStream()
    start = time.perf_counter()
    for block in events:
        stream.write([block])
    lines += [
        "",
        f"GzipStream.write, 1 event per write: {(time.perf_counter() - start) / count * 1e6:.2f} µs per event",
    ]
    return lines


# -- end to end ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Dechunker:
    """Just enough HTTP/1.1 chunked decoding to count what the client got."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(self.buffer[:end], 16)
            if len(self.buffer) < end + 2 + size + 2:
                break
            out.append(self.buffer[end + 2 : end + 2 + size])
            self.buffer = self.buffer[end + 4 + size :]
        return b"".join(out)


class RawStream:
    """One subscriber on a blocking socket; ``coding`` (gzip or zstd) is sent in Accept-Encoding."""

    def __init__(self, port: int, coding: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        accept = f"Accept-Encoding: {coding}\r\n" if coding else ""
        self.sock.sendall(f"GET /sse/events?types=progress_update HTTP/1.1\r\nHost: x\r\n{accept}\r\n".encode())
        self.wire = 0
        self.text = b""
        self.dechunk = Dechunker()
        self.inflate: Any = None
        if coding == "gzip":
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "zstd":
            self.inflate = zstandard.ZstdDecompressor().decompressobj()
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert (f"content-encoding: {coding}".encode() in head.lower()) == bool(coding), head
        self.feed(rest)

    def feed(self, data: bytes) -> None:
        self.wire += len(data)
        body = self.dechunk.feed(data)
        self.text += self.inflate.decompress(body) if self.inflate else body

    def events(self) -> int:
        return self.text.count(b"event: progress_update\n")


def read_all(subscribers: list[RawStream], events: int) -> None:
    """Read every stream as data arrives (one selector loop) until each has ``events`` events.

    Reading while the server writes keeps the streams on the path a live client keeps them
    on: the kernel takes each write at once, no backlog builds up.
    """
    selector = selectors.DefaultSelector()
    for sub in subscribers:
        selector.register(sub.sock, selectors.EVENT_READ, sub)
    waiting = {id(sub) for sub in subscribers if sub.events() < events}
    while waiting:
        for key, _ in selector.select(timeout=30):
            sub = key.data
            data = sub.sock.recv(1 << 20)
            assert data, "server closed the stream"
            sub.feed(data)
            if sub.events() >= events:
                waiting.discard(id(sub))
                selector.unregister(sub.sock)
    selector.close()


def publish(port: int, bodies: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for body in bodies:
            sock.sendall(
                b"POST /sse/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                reply += sock.recv(65536)
            assert b" 202 " in reply.split(b"\r\n", 1)[0], reply[:200]


def e2e_once(mode: str, streams: int, events: int, batch: int) -> dict[str, float]:
    port = free_port()
    flags = ["--port", str(port), "--log-level", "error", "--connection-limit", str(streams + 10)]
    flags += ["--client-connection-limit", str(streams + 10), "--connection-rate", "100000"]
    flags += ["--publish-rate", "1000000", "--queue-size", "100000"]
    coding = None if mode == "plain" else mode.split(",")[0]
    if coding == "gzip":
        flags += ["--gzip"]
    elif coding == "zstd":
        flags += ["--compression", "zstd"]
    if mode.endswith("direct writes off"):
        flags += ["--no-direct-writes"]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    server = subprocess.Popen([*pin, sys.executable, "-m", "trio_sse", "serve", *flags], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.05)
        subscribers = [RawStream(port, coding) for _ in range(streams)]
        wire_before = sum(s.wire for s in subscribers)
        sample = progress_events(events)
        datas = [block.split(b"data: ", 1)[1].rstrip(b"\n") for block in sample]
        bodies = [
            b'{"events": ['
            + b",".join(b'{"event_type": "progress_update", "data": %s}' % d for d in datas[i : i + batch])
            + b"]}"
            for i in range(0, len(datas), batch)
        ]
        time.sleep(0.3)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        reader = threading.Thread(target=read_all, args=(subscribers, events))
        reader.start()
        publish(port, bodies)
        reader.join()
        assert all(sub.events() == events for sub in subscribers), "a stream missed events"
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        delivered = streams * events
        wire = sum(s.wire for s in subscribers) - wire_before
        for sub in subscribers:
            sub.sock.close()
        return {
            "cpu_us_per_delivery": cpu / delivered * 1e6,
            "wire_bytes_per_delivery": wire / delivered,
            "seconds": elapsed,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def e2e(runs: int, streams: int, events: int, batch: int) -> list[str]:
    modes = ["plain", "gzip", "zstd", "gzip, direct writes off", "zstd, direct writes off"]
    lines = [
        "",
        f"End to end: `trio-sse serve` on core 0, {streams} HTTP/1.1 streams, {events} `progress_update` events "
        f"published in batches of {batch}; server CPU (utime + stime) per delivered event and bytes received "
        f"per delivered event (chunk framing included), median of {runs} runs.",
        "",
        "| streams | server CPU µs per delivery | wire bytes per delivery | wall time (s) |",
        "|---|---|---|---|",
    ]
    for mode in modes:
        results = [e2e_once(mode, streams, events, batch) for _ in range(runs)]
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        lines.append(
            f"| {mode} | {med['cpu_us_per_delivery']:.2f} | {med['wire_bytes_per_delivery']:.1f} "
            f"| {med['seconds']:.2f} |"
        )
    return lines


def machine() -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return [
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"zlib {zlib.ZLIB_RUNTIME_VERSION}, "
        f"{platform.system()} {platform.release()}, load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
        f"max RSS of this script {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000, help="events per microbenchmark run")
    parser.add_argument("--e2e", action="store_true", help="also measure a real server")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--e2e-events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    lines = microbenchmark(args.runs, args.events)
    if args.e2e:
        lines += e2e(args.runs, args.streams, args.e2e_events, args.batch)
    lines += ["", *machine()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
