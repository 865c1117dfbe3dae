"""What one client's resume costs the others, with ``history_size`` 100,000 (issue 13, item 2).

A hub (in this process, its app served by the in-process test client) with
``history_size`` 100,000 holds 90,000 events: one of project ``quiet``, 89,998 of project
``busy``, one more of ``quiet`` (10,000 places are left for the events published during
the run, so that quiet's first event stays in the global window, before and after).
``--others`` streams filtered to ``busy`` receive live events published at ``--rate``
per second. Then, ``--repeats`` times, one client resumes:

* ``idle``: no resume at all (what the loop and the streams see anyway);
* ``project``: ``?project=quiet`` with ``Last-Event-ID`` of quiet's first event (one
  event to replay, about 90,000 published after the id);
* ``recent``: no filter, ``Last-Event-ID`` 100 events back (100 events and what was
  published since to replay).

For each resume it measures the longest time the trio loop was blocked (the longest
task step, with a trio instrument) between the request and the replay's first event,
the time to that first event, and the other streams' publish-to-write latency (p99 of
every write during the 100 ms from the request on). Medians over the repeats are printed.

    .venv/bin/python scripts/bench_replay.py
    .venv/bin/python scripts/bench_replay.py --backend redis://127.0.0.1:6379/0
    PYTHONPATH=/tmp/main-tree .venv/bin/python scripts/bench_replay.py   # another checkout's server

With Redis the resume is served by a second instance started after the events were
published, so it reads Redis (the shared stream, or the project's window), not its copy.

``--memory`` measures instead what the history holds in memory per event (RSS growth
and Python allocations, in this process): ``history_size`` 100,000 filled by one
project, and the worst case of per-project retention, 200,000 one-event projects (the
count cap: the project windows hold at most ``history_size`` events beyond the global
window, so at most 2 x ``history_size`` events and as many projects are tracked).

``--publish`` measures instead what writing the windows costs a publish on ``--backend``
(``Backend.append`` of batches of 1 and 100 events of 20 projects, 5,000 events, median
of 3; on Redis the one script that writes the shared entry and the window).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

import trio_sse
from trio_sse.core.validation import NewEvent
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient

WINDOW = 0.1  # seconds after the request whose other-stream writes count


class StepTimer(trio.abc.Instrument):
    """The longest task step while ``on``: how long the loop was blocked at once."""

    def __init__(self) -> None:
        self.on = False
        self.longest = 0.0
        self._started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.longest = max(self.longest, time.perf_counter() - self._started)


def settings_for(backend: str, history: int, stream: str) -> Settings:
    wanted: dict[str, Any] = {
        "backend": backend,
        "redis_stream": stream,
        "history_size": history,
        "project_history_size": 1000,  # the prod default; ignored by a tree without it
        "connection_limit": 10_000,
        "client_connection_limit": 10_000,
        "connection_rate": 10**6,
        "publish_rate": 10**6,
        "log_level": "warning",
    }
    known = attrs.fields_dict(Settings)
    return Settings(**{k: v for k, v in wanted.items() if k in known})


async def fill(hub: Any, history: int) -> dict[str, str]:
    def new(project: str, n: int) -> NewEvent:
        return NewEvent(type="commit", data_json=str(n).encode(), project_id=project)

    ids = {"quiet": (await hub.backend.append([new("quiet", 0)]))[0].id}
    busy: list[str] = []
    left = history - 10_000 - 2
    while left:
        batch = min(1000, left)
        busy += [e.id for e in await hub.backend.append([new("busy", n) for n in range(batch)])]
        left -= batch
    ids["quiet2"] = (await hub.backend.append([new("quiet", 1)]))[0].id
    ids["recent"] = busy[-100]
    return ids


async def consume(client: SSETestClient, ready: trio.Event, task_status: Any) -> None:
    async with client.stream(project="busy") as stream:
        await stream.next_event()  # connected
        task_status.started()
        while True:
            await stream.next_event()


async def publish_forever(hub: Any, rate: float) -> None:
    n = 0
    while True:
        await hub.publish("commit", n, project_id="busy")
        n += 1
        await trio.sleep(1 / rate)


async def resume_once(
    client: SSETestClient, hub: Any, timer: StepTimer, query: dict[str, str] | None
) -> dict[str, float]:
    hub.stats.latencies.clear()
    timer.longest, timer.on = 0.0, True
    started = time.perf_counter()
    if query is None:  # the baseline: the same window with no resume
        await trio.sleep(WINDOW)
        timer.on = False
        first = float("nan")
    else:
        first = await _resume(client, query, timer, started)
    others = sorted(hub.stats.latencies)
    p99 = others[min(len(others) - 1, int(0.99 * len(others)))] if others else float("nan")
    return {"blocked_ms": timer.longest * 1000, "first_event_ms": first * 1000, "others_p99_ms": p99 * 1000}


async def _resume(client: SSETestClient, query: dict[str, str], timer: StepTimer, started: float) -> float:
    async with client.stream(query=query) as stream:
        await stream.next_event()  # connected
        await stream.next_event()  # the first replayed event (or a stream_reset)
        first = time.perf_counter() - started
        timer.on = False
        await trio.sleep(max(0.0, WINDOW - first))
    return first


async def main(backend: str, history: int, others: int, rate: float, repeats: int) -> None:
    timer = StepTimer()
    trio.lowlevel.add_instrument(timer)
    settings = settings_for(backend, history, f"bench:replay:{uuid.uuid4().hex}")
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(trio_sse.open_hub(settings))
        ids = await fill(hub, history)
        if backend != "memory":
            await trio.sleep(0.01)  # a second instance, started after: it replays from Redis
            hub = await stack.enter_async_context(trio_sse.open_hub(settings))
        client = await stack.enter_async_context(SSETestClient(trio_sse.create_app(hub=hub)))
        nursery = await stack.enter_async_context(trio.open_nursery())
        for _ in range(others):
            await nursery.start(consume, client, trio.Event())
        nursery.start_soon(publish_forever, hub, rate)
        await trio.sleep(0.5)
        cases: dict[str, dict[str, str] | None] = {
            "idle": None,
            "project": {"project": "quiet", "last_event_id": ids["quiet"]},
            "recent": {"last_event_id": ids["recent"]},
        }
        print(f"server: {inspect.getsourcefile(trio_sse)}")
        print(
            f"backend {backend}, history_size {history}, {others} other streams, {rate:g} events/s, {repeats} repeats"
        )
        for name, query in cases.items():
            runs = [await resume_once(client, hub, timer, query) for _ in range(repeats)]
            medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            blocked, first, p99 = medians["blocked_ms"], medians["first_event_ms"], medians["others_p99_ms"]
            print(f"{name:8s} loop blocked {blocked:8.2f} ms   first event {first:8.2f} ms   others' p99 {p99:8.2f} ms")
        nursery.cancel_scope.cancel()


def measure_memory(history: int) -> None:
    import gc
    import tracemalloc

    import psutil

    from trio_sse.core.events import EventIdGenerator, make_event
    from trio_sse.core.history import History

    def fill_history(projects: bool) -> tuple[int, int, float]:
        gc.collect()
        start = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else psutil.Process().memory_info().rss
        kept = History(history, project_capacity=1000) if projects else History(history)
        ids = EventIdGenerator()
        for n in range(2 * history if projects else history):
            kept.append(make_event(ids.next(n), "commit", b'{"n":1}', f"p{n}" if projects else "one", 0.0))
        gc.collect()
        end = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else psutil.Process().memory_info().rss
        return len(kept), getattr(kept, "projects_tracked", 0), (end - start) / len(kept)

    print(f"server: {inspect.getsourcefile(trio_sse)}; history_size {history}, 8-byte events")
    for projects in (False, True) if "project_capacity" in inspect.signature(History).parameters else (False,):
        held, tracked, rss = fill_history(projects)  # RSS first: tracemalloc's own bookkeeping would count
        tracemalloc.start()
        _, _, allocated = fill_history(projects)
        tracemalloc.stop()
        what = f"{held} events, {tracked} projects tracked"
        print(f"{what:42s} RSS {rss:6.0f} B/event   allocated {allocated:6.0f} B/event")


async def measure_publish(backend: str, history: int) -> None:
    settings = settings_for(backend, history, f"bench:publish:{uuid.uuid4().hex}")
    print(f"server: {inspect.getsourcefile(trio_sse)}; backend {backend}")
    async with trio_sse.open_hub(settings) as hub:
        for size in (1, 100):
            runs = []
            for _ in range(3):
                started, sent = time.perf_counter(), 0
                while sent < 5000:
                    batch = [NewEvent("commit", b'{"n":1}', f"p{i % 20}") for i in range(size)]
                    await hub.backend.append(batch)
                    sent += size
                runs.append((time.perf_counter() - started) / sent * 1e6)
            print(f"batches of {size:3d}: {statistics.median(runs):7.1f} us per event")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="memory")
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--memory", action="store_true", help="measure the history's memory per event instead")
    parser.add_argument("--publish", action="store_true", help="measure the publish path instead")
    args = parser.parse_args()
    if args.publish:
        trio.run(measure_publish, args.backend, args.history)
        raise SystemExit(0)
    if args.memory:
        measure_memory(args.history)
        raise SystemExit(0)
    trio.run(main, args.backend, args.history, args.others, args.rate, args.repeats)
