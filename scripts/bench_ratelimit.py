"""What one admission costs the rate limiter, with 0, 10,000 and 100,000 keys already tracked.

Run from the repository root (no server needed; the limiter is sans-IO)::

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_ratelimit.py
    PYTHONPATH=/path/to/other/checkout .venv/bin/python scripts/bench_ratelimit.py   # compare

The limiter is built as the hub builds ``connection_rate`` in prod (120 per 60 s). Its
keys are filled with one admission each at the same virtual instant, so none has refilled
(the worst case for a limiter that looks for refilled buckets to forget). Then, on the
same virtual clock (1 µs per admission, so still nothing refills):

* **new key** — ``--ops`` admissions of subjects never seen before (a crowd of new clients, or an
  attacker with many tokens): where a limiter that rescans its buckets pays per key;
* **known key** — admissions of keys already tracked (a reconnecting client).

Each figure is µs per admission, the best of ``--runs`` runs; a run times admissions
until ``--budget`` seconds have passed or ``--ops`` were made, so a slow limiter is
measured on fewer operations instead of taking minutes. Speed is reported, never asserted
here (``tests/core/test_ratelimit.py`` asserts the ratio).
"""

from __future__ import annotations

import argparse
import time

import trio_sse
from trio_sse.core.ratelimit import RateLimiter, TokenBucket

RATE, PER = 120, 60.0  # the prod connection_rate


def filled(keys: int) -> RateLimiter:
    """A limiter tracking ``keys`` buckets, each just after one admission at time 0.

    Written into its table directly (every version keeps ``_buckets``, key -> bucket, in
    use order): filling it through ``take`` costs a rescanning limiter O(keys²), ~10
    minutes for 100,000 keys, which is the defect measured, not the state wanted.
    """
    limiter = RateLimiter(RATE, PER)
    limiter._buckets.update((f"sub:existing-{i}", TokenBucket(RATE, PER, RATE - 1.0, 0.0)) for i in range(keys))
    return limiter


def per_op_us(keys: int, kind: str, *, ops: int, budget: float, runs: int) -> tuple[float, int]:
    """Best µs per admission over ``runs`` runs, and how many admissions the best run made."""
    best, best_ops = float("inf"), 0
    for _ in range(runs):
        limiter = filled(keys)
        if kind == "new":
            names = [f"sub:new-{i}" for i in range(ops)]
        elif keys:
            names = [f"sub:existing-{i % keys}" for i in range(ops)]
        else:
            names = ["sub:one"] * ops
        done = 0
        started = time.perf_counter()
        deadline = started + budget
        while done < ops:
            stop = min(ops, done + 100)
            for i in range(done, stop):
                limiter.take(names[i], i * 1e-6)
            done = stop
            if time.perf_counter() > deadline:
                break
        cost = (time.perf_counter() - started) / done * 1e6
        if cost < best:
            best, best_ops = cost, done
    return best, best_ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=5_000, help="admissions per run at most")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per run at most")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"trio_sse from {trio_sse.__file__}")
    print(f"{'keys tracked':>12}  {'new key µs/op':>14}  {'known key µs/op':>16}")
    for keys in (0, 10_000, 100_000):
        new, new_ops = per_op_us(keys, "new", ops=args.ops, budget=args.budget, runs=args.runs)
        known, _ = per_op_us(keys, "known", ops=args.ops, budget=args.budget, runs=args.runs)
        note = "" if new_ops == args.ops else f"  (new: {new_ops} admissions in the {args.budget} s budget)"
        print(f"{keys:>12,}  {new:>14.2f}  {known:>16.2f}{note}")


if __name__ == "__main__":
    main()
