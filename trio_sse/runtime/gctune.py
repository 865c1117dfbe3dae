"""Garbage-collector settings for a server process holding thousands of streams.

Why: every stream keeps a few hundred GC-tracked objects alive for hours, and fan-out
allocates briskly, so with CPython's default thresholds (700, 10, 10) a full collection
runs every few seconds and walks every one of them — a pause of 100-250 ms at 1,000
streams that shows up as the p99 of delivery latency (measured in docs/performance.md:
p99 158-164 ms with the defaults, 27-33 ms with these thresholds).

Raising the young-generation threshold makes collections rarer, and the old-generation
threshold makes full collections rare (CPython also waits until long-lived objects
have grown by 25 %). Cyclic garbage is still collected, just later; trio_sse's own
objects are freed by reference counting.

How far to raise them was measured both ways (docs/performance.md): (100000, 50, 100)
gave the same latency as (10000, 10, 100) but let the cyclic garbage of churned
connections pile up — +22 % RSS in the churn soak, against +3 % now. The full
collections, not the young ones, were the latency tail. Objects alive at start-up are frozen out of
collections altogether. This changes process-wide state, so only the server entry
points call it; an embedding application decides for itself.
"""

from __future__ import annotations

import gc

__all__ = ["SERVER_GC_THRESHOLDS", "tune_gc"]

SERVER_GC_THRESHOLDS = (10_000, 10, 100)


def tune_gc() -> None:
    """Apply :data:`SERVER_GC_THRESHOLDS` and freeze what start-up allocated."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
