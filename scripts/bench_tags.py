"""What one fan-out round costs with 1,000 streams that each have a distinct tag filter.

Run from the repository root (no server needed)::

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_tags.py

Two measurements, each the best of ``--runs`` runs of ``--rounds`` rounds:

* **index** — the sans-IO :class:`~trio_sse.core.matching.SubscriptionIndex` alone:
  µs to find the subscribers of one event among ``--streams`` tag-filtered
  subscriptions (``tag.user=u<i>``, plus a second name on every other one) and as many
  subscriptions without a tag filter, next to a linear scan of every subscription's
  ``accepts`` (what an unindexed matcher pays).
* **hub** — a real in-process hub with the same streams registered through
  ``Hub.connect`` (nothing writes them): µs per ``Flusher._fan_out`` of one tagged event,
  queued to its matching connections (each round a new event; the queues are big enough to hold them all).

Speed is reported, never asserted here.
"""

from __future__ import annotations

import argparse
import time
from contextlib import AsyncExitStack

import trio

import trio_sse
from trio_sse.core.events import make_event
from trio_sse.core.matching import Subscription, SubscriptionIndex
from trio_sse.core.validation import check_tag_filter


def subscriptions(streams: int, plain: int | None = None) -> list[Subscription]:
    subs = []
    for i in range(streams):
        tags: dict[str, list[str]] = {"user": [f"u{i}"]}
        if i % 2:
            tags["env"] = ["prod", "staging"]
        subs.append(Subscription(frozenset({"commit"}), None, check_tag_filter(tags)))
    subs += [Subscription(frozenset({"commit"}), None) for _ in range(streams if plain is None else plain)]
    return subs


def best(runs: int, rounds: int, body: object) -> float:
    """Best µs per round of ``body()`` over ``runs`` runs."""
    assert callable(body)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(rounds):
            body()
        times.append((time.perf_counter() - start) / rounds * 1e6)
    return min(times)


def bench_index(streams: int, runs: int, rounds: int) -> None:
    subs = subscriptions(streams)
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for key, sub in enumerate(subs):
        index.add(key, sub)
    event = make_event((1, 0), "commit", b"1", None, 0.0, {"user": f"u{streams - 1}", "env": "prod"})
    expected = {k for k, s in enumerate(subs) if s.accepts(event)}
    assert set(index.matching(event.type, event.project_id, event.tags)) == expected
    indexed = best(runs, rounds, lambda: sum(1 for _ in index.matching(event.type, event.project_id, event.tags)))
    untagged_only: SubscriptionIndex[int] = SubscriptionIndex()
    for key, sub in enumerate(subs[streams:]):
        untagged_only.add(key, sub)
    baseline = best(runs, rounds, lambda: sum(1 for _ in untagged_only.matching(event.type, None, event.tags)))
    scan = best(runs, rounds, lambda: sum(1 for s in subs if s.accepts(event)))
    print(f"index, {streams} tag-filtered + {streams} unfiltered streams, {len(expected)} match:")
    print(f"  indexed matching        {indexed:9.1f} µs per event")
    print(f"  the {streams} unfiltered alone {baseline:6.1f} µs per event (the same event, no tagged streams)")
    print(f"  linear scan of accepts  {scan:9.1f} µs per event")


async def bench_hub(streams: int, plain: int, runs: int, rounds: int) -> None:
    settings = trio_sse.Settings(
        connection_limit=4 * streams,
        client_connection_limit=4 * streams,
        connection_rate=100 * streams,
        queue_size=runs * rounds + 10,  # every round's event stays queued: none is dropped
    )
    async with trio_sse.open_hub(settings) as hub, AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(hub.connect(sub)) for sub in subscriptions(streams, plain)]
        flusher = hub._flusher
        now = trio.current_time()
        tags = {"user": "u1", "env": "prod"}
        events = [make_event((10**12, n), "commit", b"1", None, now, tags) for n in range(runs * rounds)]
        matched = [c for c in connections if c.subscription.accepts(events[0])]
        times = []
        for run in range(runs):
            start = time.perf_counter()
            for event in events[run * rounds : (run + 1) * rounds]:  # each event new to every stream
                flusher._fan_out([event])
            times.append((time.perf_counter() - start) / rounds * 1e6)
        assert all(c.pending == runs * rounds for c in matched), "an event was not queued"
        print(f"hub, {streams} tag-filtered + {plain} unfiltered streams, {len(matched)} match:")
        print(f"  Flusher._fan_out of one tagged event {min(times):9.1f} µs")
        hub.begin_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    bench_index(args.streams, args.runs, args.rounds)
    trio.run(bench_hub, args.streams, 0, args.runs, args.rounds // 10)
    trio.run(bench_hub, args.streams, args.streams, args.runs, args.rounds // 10)


if __name__ == "__main__":
    main()
