"""The hub: publish, fan-out to matching connections, the connection registry, and stats.

Publishing validates, hands the batch to the backend (which gives ids and stores it
for replay) and fans each event out through the subscription index: only connections
whose filters match are touched, each gets the same encoded bytes, and none is ever
awaited — a full queue is the overflow policy's business, not the publisher's.

A hub lives inside :func:`trio_sse.open_hub`; leaving that block ends every stream
and background task.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import trio

from ..core.errors import InvalidValue
from ..core.events import Event, EventOrder, system_event
from ..core.history import History
from ..core.matching import Subscription, SubscriptionIndex
from ..core.ratelimit import RateLimiter
from ..core.validation import NewEvent, check_event_types, check_project_id, prepare_event
from ..settings import Settings
from .backends import Backend
from .connection import ClientInfo, Connection, LiveReset, Resubscribe
from .memory import SAMPLE_INTERVAL, MemoryGuard
from .stats import HubStats, machine_memory_bytes, memory_rss_bytes, open_file_descriptors, trio_tasks

__all__ = ["UNSET", "ConnectionRefused", "Hub", "TooManyPendingChanges", "UnknownConnection", "open_hub"]

UNSET: Any = object()
#: Idle time after a fan-out round, as a fraction of that round's duration. 0.5 keeps
#: fan-out under ~2/3 of the CPU so publishes keep being accepted; measured in
#: docs/performance.md (0 and 0.25 starve publishers at 1,000 streams, 1.0 adds latency).
ROUND_SPACING = 0.5
#: Hubs open in this process, so a signal handler can end their streams whatever app serves them.
OPEN_HUBS: weakref.WeakSet[Hub] = weakref.WeakSet()
_NO_CLIENT = ClientInfo()
#: Retry-After (seconds) of a stream refused for memory pressure: a few samples' time.
MEMORY_RETRY_AFTER = 5

log = logging.getLogger("trio_sse.hub")

#: Seconds a descriptor count is reused for (see ``Hub._open_fds``).
FDS_MAX_AGE = 1.0
#: Figures of the process that other layers own, added to every ``/sse/stats`` snapshot
#: under their name: the HTTP server's connection and accept-loop counters register here
#: (``runtime`` must not import ``http``).
PROCESS_FIGURES: dict[str, Callable[[], dict[str, Any]]] = {}


class ConnectionRefused(Exception):
    """A new stream was refused before it started (limits or shutdown)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class UnknownConnection(LookupError):
    """No live connection has this id (HTTP 404)."""


class PublishRateExceeded(Exception):
    """A publisher went over ``publish_rate`` (HTTP 429)."""

    def __init__(self, rate: int, retry_after: int) -> None:
        super().__init__(f"at most {rate} events per second per publisher")
        self.retry_after = retry_after


class TooManyPendingChanges(Exception):
    """A connection has not yet applied its earlier filter changes (HTTP 429)."""


class Hub:
    """Use :func:`trio_sse.open_hub` to get one; see the module docstring."""

    def __init__(self, settings: Settings, backend: Backend, *, read_rss: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.stats = HubStats()
        #: ``read_rss`` (bytes) is injectable so memory pressure can be tested without using memory.
        self.memory = MemoryGuard(settings.memory_limit, read_rss or memory_rss_bytes)
        self._history = self._bound_local_history()
        self.event_types = settings.registered_event_types
        self._sorted_types = sorted(self.event_types)
        self._connections: dict[str, Connection] = {}
        self._per_client: Counter[str] = Counter()
        self._connection_rate = RateLimiter(settings.connection_rate, 60.0)
        self._publish_rate = RateLimiter(settings.publish_rate, 1.0)
        self._index: SubscriptionIndex[Connection] = SubscriptionIndex()
        self._closing = False
        #: Set when shutdown begins: long-lived requests that are not registered streams
        #: (the dashboard's stats stream) wait on it to end with the hub.
        self.shutting_down = trio.Event()
        self._all_gone = trio.Event()
        self._outbox: list[Event] = []
        self._outbox_ready = trio.Event()
        #: Order of the newest committed event: where a new connection's live stream starts.
        self._newest: EventOrder = (-1, -1)
        #: Its id, told to each new stream (``Last-Event-ID`` response header) as the point
        #: it can resume from even if it drops before its first event.
        self._newest_id: str | None = None
        self.started_at = trio.current_time()
        self._shared_snapshot: tuple[float, dict[str, Any]] | None = None
        self._fds: tuple[float, int] = (-math.inf, 0)  # (counted at, count)
        #: RSS reads that failed (``OSError``, e.g. ``EMFILE`` when the process is out of
        #: descriptors): each is skipped, the last good sample stands.
        self.memory_samples_failed = 0
        self._machine_memory = 0  # the last machine_memory_bytes() that could be read

    # -- subscriptions --------------------------------------------------------------

    def subscription(self, event_types: Iterable[str] | None, project_id: str | None) -> Subscription:
        """A validated subscription; ``None`` types means every type."""
        types = None if event_types is None else check_event_types(event_types, self.event_types)
        return Subscription(types, check_project_id(project_id))

    def describe(self, connection: Connection) -> dict[str, Any]:
        """The filters as clients see them in ``connected`` and ``subscription_updated``."""
        sub = connection.subscription
        types = self._sorted_types if sub.event_types is None else sorted(sub.event_types)
        return {"connection_id": connection.id, "event_types": types, "project_id": sub.project_id}

    # -- connections ------------------------------------------------------------------

    @asynccontextmanager
    async def connect(
        self,
        subscription: Subscription,
        *,
        last_event_id: str | None = None,
        client: ClientInfo = _NO_CLIENT,
        expires_at: float | None = None,
    ) -> AsyncIterator[Connection]:
        """Register a stream for the duration of the block, then unregister it.

        Raises :class:`ConnectionRefused` (nothing registered) when the hub is shutting
        down or a connection limit is reached. With ``expires_at`` (wall-clock seconds,
        a token's ``exp``) the stream is ended then, with reason ``token_expired``.
        From the moment the block is entered the connection is offered every matching
        event committed.
        """
        self._admit(client)
        connection = Connection(self, secrets.token_urlsafe(12), subscription, client, last_event_id, time.time())
        # Events committed before this point but still in the outbox are not for this stream
        # (its replay, if any, covers them).
        start_id = self._newest_id if self._newest_id is not None else self.backend.resume_point
        connection.start_after(self._newest, start_id)
        connection.expires_at = expires_at
        key = _client_key(client)
        self._connections[connection.id] = connection
        self._per_client[key] += 1
        self._index.add(connection, subscription)
        self.stats.total_connections += 1
        try:
            yield connection
        finally:
            self._index.remove(connection)
            del self._connections[connection.id]
            self._per_client[key] -= 1
            if not self._per_client[key]:
                del self._per_client[key]
            self.stats.disconnects[connection.close_reason or "client_closed"] += 1
            if self._closing and not self._connections:
                self._all_gone.set()

    def _admit(self, client: ClientInfo) -> None:
        settings = self.settings
        if self._closing:
            self._refuse(503, "server_shutdown", "the server is shutting down", 1)
        if self.memory.over:
            message = f"memory use is above memory_limit ({settings.memory_limit} bytes)"
            self._refuse(503, "memory_pressure", message, MEMORY_RETRY_AFTER)
        if len(self._connections) >= settings.connection_limit:
            self._refuse(503, "connection_limit", f"connection limit ({settings.connection_limit}) reached", 5)
        key = _client_key(client)
        if self._per_client[key] >= settings.client_connection_limit:
            self._refuse(
                429,
                "client_connection_limit",
                f"at most {settings.client_connection_limit} concurrent streams per client",
                5,
            )
        wait = self._connection_rate.take(key, trio.current_time())
        if wait > 0:
            self._refuse(
                429, "connection_rate", f"at most {settings.connection_rate} new streams per minute per client", wait
            )

    def _refuse(self, status: int, reason: str, message: str, retry_after: float) -> None:
        self.stats.rejected[reason] += 1
        raise ConnectionRefused(status, reason, message, max(1, int(retry_after + 0.999)))

    # -- memory pressure --------------------------------------------------------------

    async def run_memory_guard(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample RSS every :data:`SAMPLE_INTERVAL` seconds for as long as the hub lives.

        The first sample is taken before reporting ready, so the very first stream is
        already judged against it. Sample times do not drift: each is an absolute deadline.
        """
        self.check_memory()
        task_status.started()
        next_sample = trio.current_time()
        while True:
            next_sample += SAMPLE_INTERVAL
            await trio.sleep_until(next_sample)
            self.check_memory()

    def check_memory(self) -> None:
        """Take one RSS sample; while over ``memory_limit``, evict history, then shed the fullest streams.

        History goes first (see runtime/memory.py): streams are shed only for the part of
        the overshoot that evicting history did not cover. Shed streams are closed with
        reason ``memory_pressure``: out of the index at once, so they cost the publisher
        nothing more, and they reconnect and catch up from history once the pressure is gone.
        """
        guard = self.memory
        try:
            changed = guard.sample()
        except OSError as exc:
            # Reading RSS opens /proc: at the descriptor limit it fails, and the guard
            # task must not die of it (it would take the hub's nursery, and the process,
            # down). The sample is skipped; the last one stands until the next.
            self._rss_failed(exc)
            return
        if changed:
            state = "above" if guard.over else "back under"
            log.warning("memory %s memory_limit: rss %d bytes, limit %d", state, guard.rss, guard.limit)
        if not guard.over:
            self._regrow_history()
            return
        relieved = self._shrink_history()
        if relieved >= guard.rss - guard.limit:
            return
        live = [c for c in self._connections.values() if c.close_reason is None]
        shed = guard.to_shed(live, relieved)
        for connection in shed:
            self._index.remove(connection)
            connection.close("memory_pressure")
        if shed:
            log.warning("memory pressure: shed %d of %d streams, fullest queues first", len(shed), len(live))

    def _bound_local_history(self) -> History | None:
        """The backend's in-process ring, bounded by ``history_bytes``; ``None`` if it has none.

        The memory backend's ring is its history; the Redis backend's is its copy of the
        events it read (replays it cannot answer go to Redis). Either is memory of this
        process, so ``history_bytes`` and memory pressure apply to both.
        """
        history = getattr(self.backend, "history", None)
        if not isinstance(history, History):
            return None
        history.max_bytes = self.settings.history_bytes
        return history

    def _shrink_history(self) -> int:
        """Over ``memory_limit``: evict history first (runtime/memory.py); the bytes evicted."""
        history = self._history
        if history is None:
            return 0
        events = len(history)
        evicted = self.memory.shrink_history(history)
        if evicted:
            log.warning(
                "memory pressure: history cut to %d bytes (%d events and %d bytes evicted, oldest first)",
                history.max_bytes,
                events - len(history),
                evicted,
            )
        return evicted

    def _regrow_history(self) -> None:
        if self._history is not None:
            self.memory.regrow_history(self._history, self.settings.history_bytes)

    def _rss_failed(self, exc: OSError) -> None:
        self.memory_samples_failed += 1
        if self.memory_samples_failed == 1 or self.memory_samples_failed % 100 == 0:
            log.warning("memory: RSS sample failed (%s), skipped (%d so far)", exc, self.memory_samples_failed)

    def _read_rss(self) -> int:
        """RSS now for the stats, or the last sample when it cannot be read (counted)."""
        try:
            return int(self.memory.read_rss())
        except OSError as exc:
            self._rss_failed(exc)
            return self.memory.rss

    def get_connection(self, connection_id: str) -> Connection:
        try:
            return self._connections[connection_id]
        except KeyError:
            raise UnknownConnection(connection_id) from None

    def connections(self) -> list[Connection]:
        """Live connections, oldest first."""
        return list(self._connections.values())

    def connection_info(self, connection: Connection) -> dict[str, Any]:
        """One entry of ``GET /sse/connections``."""
        described = self.describe(connection)
        return {
            "connection_id": connection.id,
            "client": connection.client.address,
            "user_agent": connection.client.user_agent,
            "connected_at": datetime.fromtimestamp(connection.connected_at, UTC).isoformat(),
            "event_types": described["event_types"],
            "project_id": described["project_id"],
            "last_event_id": connection.last_event_id,
            "queue_size": connection.pending,
            "events_sent": connection.events_sent,
            "events_dropped": connection.events_dropped,
        }

    def update_subscription(
        self,
        connection_id: str,
        event_types: Iterable[str],
        *,
        mode: str = "replace",
        project_id: Any = UNSET,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Change a live connection's filters.

        The connection's stream gets ``subscription_updated`` (then, with
        ``last_event_id``, the replay under the new filters) before any event that only
        the new filters match. Raises :class:`UnknownConnection`, ``UnknownEventTypes``,
        ``InvalidValue`` or :class:`TooManyPendingChanges`; nothing changes then.
        """
        connection = self.get_connection(connection_id)
        if connection.close_reason is not None:
            raise UnknownConnection(connection_id)
        types = check_event_types(event_types, self.event_types)
        current = connection.subscription
        current_types = self.event_types if current.event_types is None else current.event_types
        if mode == "replace":
            new_types: frozenset[str] | None = types
        elif mode == "add":
            new_types = None if current.event_types is None else current_types | types
        elif mode == "remove":
            new_types = current_types - types
        else:
            raise InvalidValue("mode must be one of replace, add, remove")
        if new_types is not None and new_types == self.event_types and current.event_types is None:
            new_types = None
        project = current.project_id if project_id is UNSET else check_project_id(project_id)
        new = Subscription(new_types, project)
        # Events committed before the change are fanned out under the filters they met
        # (which may close this connection as a slow consumer).
        self._flush_outbox()
        if connection.close_reason is not None:
            raise UnknownConnection(connection_id)
        connection.subscription = new
        announcement = self._announcement(connection)
        if not connection.push_control(Resubscribe(new, current, announcement, last_event_id)):
            connection.subscription = current
            raise TooManyPendingChanges(connection_id)
        self._index.add(connection, new)
        return new

    def _announcement(self, connection: Connection) -> bytes:
        return system_event("subscription_updated", self.describe(connection))

    # -- publishing -------------------------------------------------------------------

    def prepare(self, event_type: Any, data: Any, project_id: Any = None) -> NewEvent:
        """Validate one event (raises a ``ValidationError`` subclass; nothing is published)."""
        return prepare_event(
            event_type,
            data,
            project_id,
            registered=self.event_types,
            max_event_bytes=self.settings.max_event_bytes,
        )

    def admit_publish(self, publisher: str, count: int) -> None:
        """Charge ``count`` events to ``publisher``'s ``publish_rate`` budget (events per second).

        Raises :class:`PublishRateExceeded` (nothing charged) when over budget.
        """
        wait = self._publish_rate.take(publisher, trio.current_time(), count)
        if wait > 0:
            self.stats.rejected_publishes["publish_rate"] += count
            raise PublishRateExceeded(self.settings.publish_rate, max(1, int(wait + 0.999)))

    async def publish(self, event_type: str, data: Any, project_id: str | None = None) -> str:
        """Publish one event and return its id.

        Raises ``UnknownEventTypes``, ``EventTooLarge`` or ``InvalidValue`` before
        anything is stored, and ``BackendUnavailable`` when the backend cannot store it.
        Never waits for a subscriber.
        """
        (event_id,) = await self.publish_prepared([self.prepare(event_type, data, project_id)])
        return event_id

    async def publish_prepared(self, batch: Sequence[NewEvent]) -> list[str]:
        """Publish already validated events, in order, and return their ids."""
        events = await self.backend.append(batch)
        self.stats.events_published += len(events)
        return [event.id for event in events]

    def deliver(self, events: Sequence[Event]) -> None:
        """Accept committed events for fan-out (the backend calls this once per event).

        Never blocks: events wait in the outbox until the flusher's next round, so every
        event published in one scheduler round reaches a connection in one write.
        """
        if events:
            self._outbox.extend(events)
            self._newest = events[-1].order
            self._newest_id = events[-1].id
            self._outbox_ready.set()

    def history_gap(self, after_id: str | None) -> None:
        """The backend may have skipped committed events after ``after_id``: tell every stream.

        Called by a shared backend's reader when its stream was trimmed, or Redis came
        back without entries, before the reader got to them (``None``: before anything
        it delivered). Events already handed over go out first, then each stream gets
        ``stream_reset`` (``history_gap``, ``last_event_id`` = ``after_id``), then what
        follows. Never blocks. A stream whose control slots are all taken (eight filter
        changes pending) is closed instead (``history_gap``): it reconnects with its
        last id and gets a replay or a reset then, never silence.
        """
        self._flush_outbox()
        reset = LiveReset(system_event("stream_reset", {"reason": "history_gap", "last_event_id": after_id}))
        for connection in list(self._connections.values()):
            if connection.close_reason is None and not connection.push_control(reset):
                self._index.remove(connection)
                connection.close("history_gap")

    async def run_flusher(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fan out the outbox, one round at a time, for as long as the hub lives.

        A round starts no sooner than ``flush_interval`` after the previous one started,
        and no sooner than ``ROUND_SPACING`` times its duration after it ended. An event
        after a quiet spell goes out at once; under load, rounds carry more events each
        instead of becoming more frequent, so fan-out (whose cost is one socket write per
        connection per round) leaves CPU for accepting publishes.
        """
        task_status.started()
        interval = self.settings.flush_interval
        started = ended = -math.inf
        while True:
            await self._outbox_ready.wait()
            wait = max(started + interval, ended + ROUND_SPACING * (ended - started)) - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            self._outbox_ready = trio.Event()
            started = trio.current_time()
            self._flush_outbox()
            ended = trio.current_time()

    def _flush_outbox(self) -> None:
        events, self._outbox = self._outbox, []
        if events:
            self._fan_out(events)

    def _fan_out(self, events: list[Event]) -> None:
        """Hand each connection the events of this round that match its filters, as one batch.

        Connections that get the same events share one joined payload (built once per round).
        """
        matching = self._index.matching
        now = trio.current_time()
        delivered_before = self.stats.events_delivered
        overflowed: list[tuple[Connection, int]] = []
        if len(events) == 1:
            event = events[0]
            for connection in matching(event.type, event.project_id):
                missed = connection.take(events, event.wire, now)
                if missed:
                    overflowed.append((connection, missed))
        else:
            batches: dict[Connection, list[Event]] = {}
            for event in events:
                for connection in matching(event.type, event.project_id):
                    batch = batches.get(connection)
                    if batch is None:
                        batches[connection] = [event]
                    else:
                        batch.append(event)
            payloads: dict[tuple[int, ...], tuple[list[Event], bytes]] = {}
            for connection, batch in batches.items():
                key = tuple(map(id, batch))
                shared = payloads.get(key)
                if shared is None:
                    shared = payloads[key] = (batch, b"".join(e.wire for e in batch))
                missed = connection.take(shared[0], shared[1], now)
                if missed:
                    overflowed.append((connection, missed))
        if overflowed:
            self._overflow(overflowed)
        if self.stats.events_delivered != delivered_before:
            # Written directly: one latency sample per round, the oldest event written last.
            self.stats.latencies.append(trio.current_time() - events[0].published_at)

    def _overflow(self, overflowed: list[tuple[Connection, int]]) -> None:
        """Apply the overflow policy to connections whose queue could not take a round."""
        stats = self.stats
        if self.settings.overflow == "drop":
            for connection, missed in overflowed:
                connection.events_dropped += missed
                stats.events_dropped += missed
            return
        now = trio.current_time()
        for connection, _ in overflowed:
            # Out of the index at once, so it costs the publisher nothing more.
            self._index.remove(connection)
            stats.record_error(now)
            connection.close("slow_consumer")

    # -- looking inside ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The figures of ``GET /sse/stats``: the hub's, then the process's leak checks."""
        return {
            **self._figures(),
            "process_id": os.getpid(),
            "open_fds": self._open_fds(),
            "trio_tasks": trio_tasks(),
            **{name: figures() for name, figures in PROCESS_FIGURES.items()},
        }

    def _open_fds(self) -> int:
        """The descriptor count, at most once per ``FDS_MAX_AGE``: listing /proc/self/fd
        takes ~8 ms of the loop at 10,000 sockets, and ``/sse/stats`` is public, so a
        client polling it fast must not stall every stream."""
        counted_at, count = self._fds
        now = trio.current_time()
        if now - counted_at >= FDS_MAX_AGE:
            try:
                count = open_file_descriptors()
            except OSError:  # listing /proc/self/fd needs a descriptor: keep the last count
                return count
            self._fds = (now, count)
        return count

    def shared_snapshot(self, max_age: float) -> tuple[float, dict[str, Any]]:
        """``(taken_at, snapshot())``, reused while younger than ``max_age`` seconds.

        Every open dashboard ticks once a second. A snapshot passes over every connection
        (0.6 ms at 10,000 streams, measured; its descriptor count is itself reused for a
        second, see ``_open_fds``): ticks that come close together share one, so fifty
        viewers cost what one does. The dict must not be modified.
        """
        now = trio.current_time()
        shared = self._shared_snapshot
        if shared is None or now - shared[0] >= max_age:
            shared = self._shared_snapshot = (now, self.snapshot())
        return shared

    def _figures(self) -> dict[str, Any]:
        """The hub's own figures (what ``health`` judges; no task-tree walk, no /proc read)."""
        stats = self.stats
        connections = self._connections.values()
        fills = [c.pending for c in connections]
        capacity = self.settings.queue_size
        return {
            "active_connections": len(self._connections),
            "total_connections": stats.total_connections,
            "rejected_connections": stats.rejected_connections,
            "rejected_by_reason": dict(stats.rejected),
            "rejected_publishes": dict(stats.rejected_publishes),
            "events_published": stats.events_published,
            "events_delivered": stats.events_delivered,
            "events_dropped": stats.events_dropped,
            "disconnects": dict(stats.disconnects),
            "queue": {
                "capacity": capacity,
                "total_queued": sum(fills),
                "max_fill": max(fills, default=0),
                "fill_ratio": round(max(fills, default=0) / capacity, 4),
            },
            "latency_ms": stats.latency_ms(),
            "history": self.backend.history_stats(),
            "backend": {"kind": self.backend.kind, "status": self.backend.status, **self._backend_details()},
            "connection_limit": self.settings.connection_limit,
            "uptime_seconds": round(trio.current_time() - self.started_at, 3),
            "memory_rss_bytes": self._read_rss(),
            "memory_samples_failed": self.memory_samples_failed,
            "memory_limit": self.memory.limit or None,
            "memory_pressure": self.memory.over,
            "errors_last_minute": stats.errors_last_minute(trio.current_time()),
        }

    def _backend_details(self) -> dict[str, Any]:
        """A shared backend's own figures (stream key, read position, reconnects), if it has any."""
        describe = getattr(self.backend, "describe", None)
        return describe() if callable(describe) else {}

    def health(self) -> tuple[int, dict[str, Any]]:
        """``(status code, body)`` of ``GET /sse/health``."""
        snap = self._figures()
        limit = self.settings.connection_limit
        machine = self._machine_memory_bytes()

        def indicator(value: float, bound: float) -> dict[str, Any]:
            return {"value": value, "limit": bound, "state": "ok" if value < bound else "warn"}

        checks: dict[str, Any] = {
            "backend": {"kind": snap["backend"]["kind"], "state": snap["backend"]["status"]},
            "connections": indicator(snap["active_connections"], round(0.8 * limit, 2)),
            "queue_fill": indicator(snap["queue"]["fill_ratio"], 0.8),
            "error_rate_per_minute": indicator(snap["errors_last_minute"], 5),
            "memory_bytes": indicator(snap["memory_rss_bytes"], int(0.7 * machine)),
            "latency_p95_ms": indicator(snap["latency_ms"]["p95"], 200.0),
            "memory_pressure": self._memory_check(),
        }
        if self._closing:
            status = "unavailable"
        elif snap["backend"]["status"] != "ok" or snap["active_connections"] >= limit or self.memory.over:
            status = "degraded"
        else:
            status = "ok"
        checks["limits"] = {"state": "exhausted" if snap["active_connections"] >= limit else "ok"}
        return (200 if status == "ok" else 503), {"status": status, "checks": checks}

    def _machine_memory_bytes(self) -> int:
        """The machine's memory, or the last figure read when /proc cannot be opened (out of descriptors)."""
        try:
            self._machine_memory = machine_memory_bytes()
        except OSError:
            pass
        return self._machine_memory

    def _memory_check(self) -> dict[str, Any]:
        """The ``memory_pressure`` health check: the last RSS sample against ``memory_limit``.

        A hard check like ``limits`` (``over`` makes the answer 503), not a ``warn``
        indicator, so it has no ``value``/``limit`` pair.
        """
        guard = self.memory
        if not guard.enabled:
            return {"state": "off", "rss_bytes": None, "memory_limit": None}
        return {"state": "over" if guard.over else "ok", "rss_bytes": guard.rss, "memory_limit": guard.limit}

    # -- shutdown -----------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def begin_shutdown(self) -> None:
        """Refuse new streams and end every live one gracefully (each finishes its write)."""
        self._closing = True
        self.shutting_down.set()
        if not self._connections:
            self._all_gone.set()
        for connection in list(self._connections.values()):
            # It only finishes its write under way: offering it more events would only fill
            # its queue, and an overflow would abort that write (slow_consumer) after all.
            self._index.remove(connection)
            connection.end("server_shutdown")

    async def aclose(self) -> None:
        """End every stream: gracefully within ``shutdown_grace``, then by force.

        Returns once no connection is registered any more, so nothing outlives the hub.
        """
        self.begin_shutdown()
        with trio.move_on_after(self.settings.shutdown_grace):
            await self._all_gone.wait()
        for connection in list(self._connections.values()):
            connection.close("server_shutdown")
        with trio.move_on_after(max(1.0, self.settings.send_timeout)):
            await self._all_gone.wait()


def _client_key(client: ClientInfo) -> str:
    """Whom the per-client limits count against: the token subject, else the network address.

    Behind a proxy every client has the proxy's address; the subject still tells users apart.
    """
    if client.owner is not None:
        return "sub:" + client.owner
    return "addr:" + (client.address or "")


@asynccontextmanager
async def open_hub(
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    read_rss: Callable[[], int] | None = None,
) -> AsyncIterator[Hub]:
    """Run a hub for the duration of the block.

    The hub's background tasks (the flusher, the backend's reader if any, the memory
    guard when ``memory_limit`` is set) live in a nursery owned by this block.
    ``read_rss`` replaces the process RSS reader (tests use a fake). Leaving the block —
    normally, by an exception or by cancellation — ends every stream (gracefully within
    ``shutdown_grace``, then by force) and waits until none is left, so no connection or
    task outlives it.
    """
    from .backends import make_backend

    settings = settings or Settings()
    backend = backend or make_backend(settings.backend, settings.history_size, stream_key=settings.redis_stream)
    hub = Hub(settings, backend, read_rss=read_rss)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_flusher)
        if hub.memory.enabled:
            await nursery.start(hub.run_memory_guard)
        await nursery.start(backend.run, hub.deliver, hub.history_gap)
        OPEN_HUBS.add(hub)
        try:
            yield hub
        finally:
            OPEN_HUBS.discard(hub)
            with trio.CancelScope(shield=True):
                await hub.aclose()
            nursery.cancel_scope.cancel()
