"""Counters and the latency reservoir, and the typed figures read from them.

Hot-path updates are plain attribute increments on :class:`HubStats`; anything costly
(percentiles, memory figures) is computed only when someone asks, by
:meth:`trio_sse.runtime.hub.Hub.statistics`, which answers with the frozen objects
below (trio's ``statistics()`` objects are the model: a consistent picture, taken at
once, that the reader cannot change). What ``/sse/stats``, ``/sse/health``,
``/sse/connections`` and ``/metrics`` serve is built from them; ``as_dict`` is the
plain-data form (``Hub.snapshot()``, the ``/sse/stats`` body).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import psutil
import trio

from ..settings import Settings, machine_memory_bytes

if TYPE_CHECKING:
    from .backends import Backend
    from .connection import Connection
    from .memory import MemoryWatch
    from .registry import Registry

__all__ = [
    "BackendStatistics",
    "ConnectionStatistics",
    "HubStatistics",
    "HubStats",
    "LatencyStatistics",
    "MemoryStatistics",
    "ProcessStatistics",
    "QueueStatistics",
    "collect_statistics",
    "machine_memory_bytes",
    "memory_rss_bytes",
    "percentile",
]

LATENCY_SAMPLES = 4096
ERROR_WINDOW_SECONDS = 60.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values)))) - 1
    return sorted_values[rank]


@attrs.define(slots=True)
class HubStats:
    total_connections: int = 0
    events_published: int = 0
    events_delivered: int = 0
    events_dropped: int = 0
    rejected: Counter[str] = attrs.field(factory=Counter)
    disconnects: Counter[str] = attrs.field(factory=Counter)
    #: events refused by reason (e.g. ``publish_rate``), counted per event
    rejected_publishes: Counter[str] = attrs.field(factory=Counter)
    #: publish-to-write latencies in seconds, one sample per write
    latencies: deque[float] = attrs.field(factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    #: clock times of recent errors (send timeouts, slow consumers, backend failures)
    errors: deque[float] = attrs.field(factory=lambda: deque(maxlen=10_000))

    @property
    def rejected_connections(self) -> int:
        return sum(self.rejected.values())

    def record_error(self, now: float) -> None:
        self.errors.append(now)

    def errors_last_minute(self, now: float) -> int:
        errors = self.errors
        while errors and errors[0] < now - ERROR_WINDOW_SECONDS:
            errors.popleft()
        return len(errors)

    def latency_ms(self) -> LatencyStatistics:
        values = sorted(self.latencies)
        return LatencyStatistics(*(round(percentile(values, fraction) * 1000.0, 3) for fraction in (0.50, 0.95, 0.99)))


@attrs.frozen
class LatencyStatistics:
    """Publish-to-write latency percentiles, in milliseconds, over the last samples."""

    p50: float
    p95: float
    p99: float

    def as_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99}


@attrs.frozen
class QueueStatistics:
    """The connection queues: their capacity, what they hold in all, the fullest one."""

    capacity: int
    total_queued: int
    max_fill: int

    @property
    def fill_ratio(self) -> float:
        return round(self.max_fill / self.capacity, 4)

    def as_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "total_queued": self.total_queued,
            "max_fill": self.max_fill,
            "fill_ratio": self.fill_ratio,
        }


@attrs.frozen
class BackendStatistics:
    """The backend's kind and status (``ok`` or ``degraded``), and a shared one's own figures."""

    kind: str
    status: str
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, **self.details}


@attrs.frozen
class MemoryStatistics:
    """Resident memory and the memory guard's state."""

    #: RSS when the statistics were taken (the last sample when it could not be read).
    rss_bytes: int
    #: RSS reads that failed and were skipped.
    samples_failed: int
    #: ``memory_limit``; 0 when the guard is off.
    limit: int
    #: Whether the guard's last sample was above the limit.
    over: bool
    #: The guard's last sample (what ``over`` judged).
    sampled_rss: int

    @property
    def guarded(self) -> bool:
        return self.limit > 0


@attrs.frozen
class HubStatistics:
    """The hub's own figures, taken at once (no task-tree walk, no descriptor listing)."""

    active_connections: int
    total_connections: int
    rejected_by_reason: Mapping[str, int]
    rejected_publishes: Mapping[str, int]
    events_published: int
    events_delivered: int
    events_dropped: int
    disconnects: Mapping[str, int]
    queue: QueueStatistics
    latency_ms: LatencyStatistics
    #: ``size``, ``capacity``, ``oldest_id``, ``newest_id`` (and what the backend adds).
    history: Mapping[str, Any]
    backend: BackendStatistics
    connection_limit: int
    uptime_seconds: float
    memory: MemoryStatistics
    errors_last_minute: int
    #: Shutdown has begun: no stream is admitted any more.
    closing: bool

    @property
    def rejected_connections(self) -> int:
        return sum(self.rejected_by_reason.values())

    def as_dict(self) -> dict[str, Any]:
        """The hub's part of the ``/sse/stats`` body, keys in the order served."""
        return {
            "active_connections": self.active_connections,
            "total_connections": self.total_connections,
            "rejected_connections": self.rejected_connections,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "rejected_publishes": dict(self.rejected_publishes),
            "events_published": self.events_published,
            "events_delivered": self.events_delivered,
            "events_dropped": self.events_dropped,
            "disconnects": dict(self.disconnects),
            "queue": self.queue.as_dict(),
            "latency_ms": self.latency_ms.as_dict(),
            "history": dict(self.history),
            "backend": self.backend.as_dict(),
            "connection_limit": self.connection_limit,
            "uptime_seconds": self.uptime_seconds,
            "memory_rss_bytes": self.memory.rss_bytes,
            "memory_samples_failed": self.memory.samples_failed,
            "memory_limit": self.memory.limit or None,
            "memory_pressure": self.memory.over,
            "errors_last_minute": self.errors_last_minute,
        }


@attrs.frozen
class ProcessStatistics:
    """This process's leak checks, and the figures other layers register (by name)."""

    process_id: int
    #: Descriptors held (counted at most once a second).
    open_fds: int
    #: Live trio tasks.
    trio_tasks: int
    #: e.g. ``server``: the HTTP server's connection and accept-loop counters.
    figures: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The process's part of the ``/sse/stats`` body, after the hub's."""
        return {
            "process_id": self.process_id,
            "open_fds": self.open_fds,
            "trio_tasks": self.trio_tasks,
            **{name: dict(figures) for name, figures in self.figures.items()},
        }


@attrs.frozen
class ConnectionStatistics:
    """One live stream, as an operator lists it."""

    connection_id: str
    client: str | None
    user_agent: str | None
    #: Wall-clock seconds.
    connected_at: float
    event_types: tuple[str, ...]
    project_id: str | None
    #: The tag filter, values sorted; ``{}`` without one.
    tags: Mapping[str, list[str]]
    last_event_id: str | None
    queued: int
    events_sent: int
    events_dropped: int

    @classmethod
    def of(cls, connection: Connection, described: Mapping[str, Any]) -> ConnectionStatistics:
        """``connection``'s figures; ``described`` is its filters as clients see them (``Hub.describe``)."""
        client = connection.client
        return cls(
            connection_id=connection.id,
            client=client.address,
            user_agent=client.user_agent,
            connected_at=connection.connected_at,
            event_types=tuple(described["event_types"]),
            project_id=described["project_id"],
            tags=described.get("tags", {}),
            last_event_id=connection.last_event_id,
            queued=connection.pending,
            events_sent=connection.events_sent,
            events_dropped=connection.events_dropped,
        )


def collect_statistics(
    settings: Settings,
    stats: HubStats,
    registry: Registry,
    backend: Backend,
    memory: MemoryWatch,
    started_at: float,
) -> HubStatistics:
    """The hub's figures now, from its parts (``Hub.statistics``): one pass over the connections."""
    fills = [c.pending for c in registry.connections.values()]
    details = getattr(backend, "describe", None)
    guard = memory.guard
    now = trio.current_time()
    return HubStatistics(
        active_connections=len(registry.connections),
        total_connections=stats.total_connections,
        rejected_by_reason=dict(stats.rejected),
        rejected_publishes=dict(stats.rejected_publishes),
        events_published=stats.events_published,
        events_delivered=stats.events_delivered,
        events_dropped=stats.events_dropped,
        disconnects=dict(stats.disconnects),
        queue=QueueStatistics(settings.queue_size, sum(fills), max(fills, default=0)),
        latency_ms=stats.latency_ms(),
        history=backend.history_stats(),
        backend=BackendStatistics(backend.kind, backend.status, details() if callable(details) else {}),
        connection_limit=settings.connection_limit,
        uptime_seconds=round(now - started_at, 3),
        memory=MemoryStatistics(
            rss_bytes=memory.read_rss(),
            samples_failed=memory.samples_failed,
            limit=guard.limit,
            over=guard.over,
            sampled_rss=guard.rss,
        ),
        errors_last_minute=stats.errors_last_minute(now),
        closing=registry.closing,
    )


def memory_rss_bytes() -> int:
    """Resident memory of this process (the hub's default RSS reader)."""
    return int(psutil.Process().memory_info().rss)


def open_file_descriptors() -> int:
    """Sockets and files this process holds: with ``trio_tasks``, the leak check of a soak test."""
    return int(psutil.Process().num_fds())


def trio_tasks() -> int:
    """Every live task of this trio run, as trio itself counts them (O(1)).

    A connection's tasks end with it, so after load this returns to its idle value;
    a number that only grows is a leak. (Walking the task tree gives the same number
    but blocked the loop ~15 ms at 10,000 streams, on every stats request and every
    dashboard tick.)
    """
    return trio.lowlevel.current_statistics().tasks_living
