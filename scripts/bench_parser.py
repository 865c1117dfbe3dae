"""Time ``trio_sse.core.parser.SSEParser.feed`` on one big chunk (issue 11, item 6).

Three shapes, each at 1 MiB and 4 MiB: a chunk of many short ``data:`` lines (9-byte
events, what a burst of small events read in one ``recv`` looks like), a chunk that
is one long ``data:`` line, and that long line fed in 16 KiB reads (a server streaming
a line that does not end). A linear parser takes about 4 times as long for 4 MiB as
for 1 MiB; a quadratic one about 16 times. Best of ``--repeat`` runs.

    .venv/bin/python scripts/bench_parser.py
    PYTHONPATH=/tmp/old-tree .venv/bin/python scripts/bench_parser.py   # another checkout's parser

The parser is made with no limits when it accepts them, so the long line is parsed
rather than refused.
"""

from __future__ import annotations

import argparse
import inspect
import time

from trio_sse.core.parser import SSEParser

MIB = 1024 * 1024


def short_lines(size: int) -> bytes:
    block = b"data: x\n\n"
    return block * (size // len(block))


def long_line(size: int) -> bytes:
    return b"data: " + b"x" * (size - 8) + b"\n\n"


def long_line_in_reads(size: int) -> list[bytes]:
    return [b"data: ", *[b"x" * 16384] * (size // 16384), b"\n\n"]


def new_parser() -> SSEParser:
    if "max_line_bytes" in inspect.signature(SSEParser).parameters:
        return SSEParser(max_line_bytes=None, max_event_bytes=None)  # type: ignore[call-arg,unused-ignore]
    return SSEParser()


def best_time(chunks: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        parser = new_parser()
        start = time.perf_counter()
        for chunk in chunks:
            parser.feed(chunk)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1,4", help="chunk sizes in MiB, comma-separated")
    parser.add_argument("--only", default="", help="run only the shapes whose name contains this")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"parser: {inspect.getsourcefile(SSEParser)}")
    shapes = {
        "short data: lines": lambda size: [short_lines(size)],
        "one long line": lambda size: [long_line(size)],
        "long line, 16 KiB reads": long_line_in_reads,
    }
    for name, make in shapes.items():
        if args.only and args.only not in name:
            continue
        times = {size: best_time(make(size * MIB), args.repeat) for size in sizes}
        shown = ", ".join(f"{size} MiB {t:.4f} s" for size, t in times.items())
        ratio = times[sizes[-1]] / times[sizes[0]] if len(sizes) > 1 else float("nan")
        print(f"{name:>24}: {shown}  (ratio {ratio:.1f})")


if __name__ == "__main__":
    main()
