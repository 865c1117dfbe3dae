"""``GET /metrics``: the hub's figures in Prometheus text format.

A custom collector reads :meth:`Hub.statistics` (the typed figures) at scrape time, so
the publish and write paths never touch a Prometheus object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..runtime.hub import Hub
from .hypercorn_trio import ADAPTER

__all__ = ["render_metrics"]


class HubCollector(Collector):
    def __init__(self, get_hub: Callable[[], Hub]) -> None:
        self._get_hub = get_hub

    def collect(self) -> Iterator[Metric]:
        stats = self._get_hub().statistics()
        yield GaugeMetricFamily("trio_sse_active_connections", "Open SSE streams", value=stats.active_connections)
        yield CounterMetricFamily("trio_sse_connections", "Streams opened", value=stats.total_connections)
        rejected = CounterMetricFamily("trio_sse_rejected_connections", "Streams refused", labels=["reason"])
        for reason, count in sorted(stats.rejected_by_reason.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily("trio_sse_events_published", "Events published", value=stats.events_published)
        yield CounterMetricFamily(
            "trio_sse_events_delivered", "Events written to streams", value=stats.events_delivered
        )
        yield CounterMetricFamily(
            "trio_sse_events_dropped", "Events dropped (overflow policy drop)", value=stats.events_dropped
        )
        disconnects = CounterMetricFamily("trio_sse_disconnects", "Streams ended", labels=["reason"])
        for reason, count in sorted(stats.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        queue = stats.queue
        yield GaugeMetricFamily("trio_sse_queue_capacity", "Events a connection queue holds", value=queue.capacity)
        yield GaugeMetricFamily("trio_sse_queue_max_fill", "Fullest connection queue", value=queue.max_fill)
        yield GaugeMetricFamily(
            "trio_sse_queued_events", "Events queued over all connections", value=queue.total_queued
        )
        latency = GaugeMetricFamily("trio_sse_latency_ms", "Publish-to-write latency percentiles", labels=["quantile"])
        for name, value in stats.latency_ms.as_dict().items():
            latency.add_metric([f"0.{name[1:]}"], value)
        yield latency
        history = stats.history
        yield GaugeMetricFamily("trio_sse_history_size", "Events kept for replay", value=history["size"])
        yield GaugeMetricFamily("trio_sse_history_capacity", "Replay history capacity", value=history["capacity"])
        backend_up = GaugeMetricFamily("trio_sse_backend_up", "1 when the backend is reachable", labels=["kind"])
        backend_up.add_metric([stats.backend.kind], 1 if stats.backend.status == "ok" else 0)
        yield backend_up
        yield GaugeMetricFamily("trio_sse_connection_limit", "Global connection limit", value=stats.connection_limit)
        yield GaugeMetricFamily("trio_sse_uptime_seconds", "Seconds since the hub started", value=stats.uptime_seconds)
        yield GaugeMetricFamily(
            "trio_sse_memory_rss_bytes", "Resident memory of this process", value=stats.memory.rss_bytes
        )
        yield CounterMetricFamily(
            "trio_sse_transport_adapter_misses",
            "hypercorn internals the transport adapter did not find (a hypercorn it was not checked against)",
            value=ADAPTER.misses,
        )


def make_registry(get_hub: Callable[[], Hub]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(get_hub))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
