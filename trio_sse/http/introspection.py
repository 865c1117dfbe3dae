"""``/sse/health`` and ``/sse/connections`` bodies, built from the hub's typed statistics.

The runtime reports figures (:class:`~trio_sse.runtime.stats.HubStatistics`,
:class:`~trio_sse.runtime.stats.ConnectionStatistics`); what an operator or a load
balancer reads — the indicator thresholds of contract section 5, the status code, the
ISO timestamps — is decided here, so the runtime never names a status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..runtime.stats import ConnectionStatistics, HubStatistics, MemoryStatistics

__all__ = ["connection_entry", "health_answer"]

#: Share of ``connection_limit`` at which the ``connections`` indicator warns.
CONNECTIONS_WARN = 0.8
#: Fill of the fullest queue at which ``queue_fill`` warns.
QUEUE_FILL_WARN = 0.8
#: Errors (send timeouts, slow consumers, backend failures) in a minute at which ``error_rate_per_minute`` warns.
ERRORS_WARN = 5
#: Share of the machine's memory at which ``memory_bytes`` warns.
MEMORY_WARN = 0.7
#: p95 publish-to-write latency (ms) at which ``latency_p95_ms`` warns.
LATENCY_P95_WARN_MS = 200.0


def _indicator(value: float, bound: float) -> dict[str, Any]:
    """A soft check: ``warn`` at or over ``bound``; a warning alone keeps the answer 200."""
    return {"value": value, "limit": bound, "state": "ok" if value < bound else "warn"}


def _memory_check(memory: MemoryStatistics) -> dict[str, Any]:
    """The ``memory_pressure`` check: the last RSS sample against ``memory_limit``.

    A hard check like ``limits`` (``over`` makes the answer 503), not a ``warn``
    indicator, so it has no ``value``/``limit`` pair.
    """
    if not memory.guarded:
        return {"state": "off", "rss_bytes": None, "memory_limit": None}
    return {"state": "over" if memory.over else "ok", "rss_bytes": memory.sampled_rss, "memory_limit": memory.limit}


def health_answer(stats: HubStatistics, machine_memory: int) -> tuple[int, dict[str, Any]]:
    """``(status code, body)`` of ``GET /sse/health``: 200 when ``ok``, 503 when degraded or unavailable.

    ``machine_memory`` is the memory this process may use (``Hub.machine_memory()``).
    """
    limit = stats.connection_limit
    exhausted = stats.active_connections >= limit
    checks: dict[str, Any] = {
        "backend": {"kind": stats.backend.kind, "state": stats.backend.status},
        "connections": _indicator(stats.active_connections, round(CONNECTIONS_WARN * limit, 2)),
        "queue_fill": _indicator(stats.queue.fill_ratio, QUEUE_FILL_WARN),
        "error_rate_per_minute": _indicator(stats.errors_last_minute, ERRORS_WARN),
        "memory_bytes": _indicator(stats.memory.rss_bytes, int(MEMORY_WARN * machine_memory)),
        "latency_p95_ms": _indicator(stats.latency_ms.p95, LATENCY_P95_WARN_MS),
        "memory_pressure": _memory_check(stats.memory),
    }
    if stats.closing:
        status = "unavailable"
    elif stats.backend.status != "ok" or exhausted or stats.memory.over:
        status = "degraded"
    else:
        status = "ok"
    checks["limits"] = {"state": "exhausted" if exhausted else "ok"}
    return (200 if status == "ok" else 503), {"status": status, "checks": checks}


def connection_entry(connection: ConnectionStatistics) -> dict[str, Any]:
    """One entry of ``GET /sse/connections``."""
    entry: dict[str, Any] = {
        "connection_id": connection.connection_id,
        "client": connection.client,
        "user_agent": connection.user_agent,
        "connected_at": datetime.fromtimestamp(connection.connected_at, UTC).isoformat(),
        "event_types": list(connection.event_types),
        "project_id": connection.project_id,
        "last_event_id": connection.last_event_id,
        "queue_size": connection.queued,
        "events_sent": connection.events_sent,
        "events_dropped": connection.events_dropped,
    }
    if connection.tags:  # only for a stream with a tag filter, as in ``connected``
        entry["tags"] = dict(connection.tags)
    return entry
