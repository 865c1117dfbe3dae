"""What one idle stream holds: tracemalloc by owner, and trio tasks per stream.

Runs trio_sse in this process (``trio_sse.serve`` on 127.0.0.1, the same worker as
``trio-sse serve``) under ``tracemalloc.start(FRAMES)``, opens ``--conns`` idle HTTP/1.1
streams with ``sseload --idle`` (``.bench/bin/sseload``, built by ``scripts/bench``),
and compares a snapshot taken once they are all READY (after ``gc.collect()``) with one
taken before. Each allocation is charged to the innermost frame of its traceback that is
in trio_sse, hypercorn or h11 (the code that asked for it), or to the innermost frame
overall when none is. Prints a Markdown table of bytes per stream by owner, the total,
and the trio tasks per stream (``tasks_living``).

    PYTHONPATH=$PWD .venv/bin/python scripts/stream_memory.py --conns 1000 --runs 3

Numbers are per stream, medians over ``--runs`` (each run a fresh server in a fresh
process). Measurement only: nothing here is used by trio_sse.
"""

from __future__ import annotations

import argparse
import ast
import functools
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
SSELOAD = ROOT / ".bench" / "bin" / "sseload"
FRAMES = 16
OWNERS = ("/trio_sse/", "/hypercorn/", "/h11/")


@functools.cache
def _functions(filename: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function in ``filename``, innermost last."""
    try:
        tree = ast.parse(Path(filename).read_text())
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


BY_LINE = False


def _where(frame: tracemalloc.Frame, short: str) -> str:
    inner = [f for f in _functions(frame.filename) if f[0] <= frame.lineno <= f[1]]
    function = max(inner)[2] if inner else "<module>"
    return f"{short}:{frame.lineno} {function}" if BY_LINE else f"{short} {function}"


def _owner(trace: tracemalloc.Traceback) -> str:
    """The innermost frame of ``trace`` in trio_sse / hypercorn / h11 (else the innermost one),
    as ``file function``."""
    for frame in reversed(trace):  # a Traceback runs from the oldest frame to the newest
        name = frame.filename
        for marker in OWNERS:
            i = name.rfind(marker)
            if i >= 0:
                return _where(frame, name[i + 1 :])
    frame = trace[-1]
    return _where(frame, "/".join(Path(frame.filename).parts[-2:]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(conns: int) -> dict[str, Any]:
    import trio_sse
    from trio_sse.settings import Settings

    port = _free_port()
    settings = Settings(
        host="127.0.0.1",
        port=port,
        log_level="warning",
        connection_limit=conns + 100,
        client_connection_limit=conns + 100,
        connection_rate=100_000_000,
        publish_rate=100_000_000,
        history_size=100_000,
    )
    path = "/sse/events?types=system_status"

    async def load(n: int, *, ready: trio.Event | None = None) -> trio.Process:
        argv = [str(SSELOAD), "--host", "127.0.0.1", "--port", str(port), "--path", path, "--conns", str(n)]
        argv += ["--duration", "900", "--ramp", "500", "--timeout", "300", "--idle"]
        return await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def wait_ready(proc: trio.Process) -> int:
        assert proc.stderr is not None
        buf = b""
        while b"READY" not in buf:
            chunk = await proc.stderr.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"sseload ended before READY: {buf!r}")
            buf += chunk
        return int(buf.split(b"READY", 1)[1].split()[0])

    async def stop(proc: trio.Process) -> None:
        proc.terminate()
        await proc.wait()

    async def until_gone(hub: Any) -> None:
        while hub.statistics().active_connections:  # noqa: ASYNC110 - polled state, no event to wait on
            await trio.sleep(0.05)

    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        async with trio_sse.open_hub(settings) as hub:
            app = trio_sse.create_app(hub=hub)
            stopped = trio.Event()
            await nursery.start(
                lambda task_status: trio_sse.serve(
                    app, settings, task_status=task_status, shutdown_trigger=stopped.wait
                )
            )
            # Warm up: every code path of a stream has run once (lazy imports, caches, interned ids).
            warm = await load(50)
            await wait_ready(warm)
            await trio.sleep(0.5)
            await stop(warm)
            await until_gone(hub)
            await trio.sleep(0.5)
            gc.collect()
            tasks_before = trio.lowlevel.current_statistics().tasks_living
            before = tracemalloc.take_snapshot()
            proc = await load(conns)
            opened = await wait_ready(proc)
            if opened != conns:
                raise RuntimeError(f"only {opened} of {conns} streams opened")
            with trio.fail_after(120):  # every stream registered and idle (direct writes open)
                while len(hub.connections()) != conns or not all(c.direct_ready for c in hub.connections()):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            await trio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tasks_after = trio.lowlevel.current_statistics().tasks_living
            diff = after.compare_to(before, "traceback")
            owners: Counter[str] = Counter()
            for stat in diff:
                owners[_owner(stat.traceback)] += stat.size_diff
            result = {
                "opened": opened,
                "tasks_per_stream": (tasks_after - tasks_before) / opened,
                "bytes_per_stream": sum(owners.values()) / opened,
                "owners": {k: v / opened for k, v in owners.items()},
            }
            await stop(proc)
            await until_gone(hub)
            stopped.set()
    return result


def _child(conns: int, by_line: bool) -> None:
    global BY_LINE
    BY_LINE = by_line
    tracemalloc.start(FRAMES)
    print(json.dumps(trio.run(_measure, conns)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=30, help="owners listed (the rest summed)")
    parser.add_argument("--by-line", action="store_true", help="one row per line, not per function")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.conns, args.by_line)
        return
    if not SSELOAD.exists():
        sys.exit(f"{SSELOAD} missing: run scripts/bench --quick once, or cc -O2 -o {SSELOAD} scripts/sseload.c")
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--conns", str(args.conns), *(["--by-line"] if args.by_line else [])],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    owners = {k for r in runs for k in r["owners"]}
    median = {k: statistics.median(r["owners"].get(k, 0.0) for r in runs) for k in owners}
    ranked = sorted(median.items(), key=lambda kv: -kv[1])
    total = statistics.median(r["bytes_per_stream"] for r in runs)
    tasks = statistics.median(r["tasks_per_stream"] for r in runs)
    print(
        f"streams: {runs[0]['opened']} (runs: {len(runs)}); tracemalloc bytes per stream: {total:,.0f}; "
        f"trio tasks per stream: {tasks:.2f}"
    )
    print()
    print("| owner (innermost trio_sse / hypercorn / h11 frame) | bytes per stream |")
    print("| --- | --- |")
    shown = 0.0
    for name, size in ranked[: args.top]:
        print(f"| `{name}` | {size:,.0f} |")
        shown += size
    print(f"| everything else | {total - shown:,.0f} |")
    print(f"| **total** | **{total:,.0f}** |")


if __name__ == "__main__":
    main()
