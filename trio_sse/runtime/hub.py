"""The hub: the facade of the runtime, and :func:`open_hub`, which runs one.

Publishing validates, hands the batch to the backend (which gives ids and stores it
for replay) and fans each event out through the subscription index: only connections
whose filters match are touched, each gets the same encoded bytes, and none is ever
awaited — a full queue is the overflow policy's business, not the publisher's.

Each job lives in its own module and :class:`Hub` delegates to it:

* :mod:`~trio_sse.runtime.registry` — the live connections and the subscription index;
* :mod:`~trio_sse.runtime.admission` — limits and rates, refusals with a reason;
* :mod:`~trio_sse.runtime.memory` — memory pressure: evict history, then shed streams;
* :mod:`~trio_sse.runtime.subscriptions` — validated filters and filter changes;
* :mod:`~trio_sse.runtime.flusher` — the outbox and its fan-out rounds (the hot path);
* :mod:`~trio_sse.runtime.stats` — counters and the typed :meth:`Hub.statistics`;
* :mod:`~trio_sse.runtime.shutdown` — graceful, then forced, end of every stream.

Nothing here knows HTTP: refusals carry reasons, figures are typed objects, and the
HTTP layer turns both into statuses and JSON. A hub lives inside :func:`open_hub`;
leaving that block ends every stream and background task.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..core.events import Event
from ..core.history import History
from ..core.matching import Subscription
from ..core.validation import NewEvent, prepare_event
from ..settings import Settings
from .admission import Admission, ConnectionRefused, PublishRateExceeded, Refusal, client_key
from .backends import Backend
from .connection import ClientInfo, Connection
from .driver import WriteDeadlines
from .flusher import ROUND_SPACING, Flusher
from .memory import MemoryGuard, MemoryWatch
from .registry import Registration, Registry, UnknownConnection
from .shutdown import begin_shutdown, close_all
from .stats import (
    ConnectionStatistics,
    HubStatistics,
    HubStats,
    ProcessStatistics,
    collect_statistics,
    machine_memory_bytes,
    memory_rss_bytes,
    open_file_descriptors,
    trio_tasks,
)
from .subscriptions import UNSET, Subscriptions, TooManyPendingChanges, check_subscribe_rewind

__all__ = [
    "ROUND_SPACING",
    "UNSET",
    "ConnectionRefused",
    "Hub",
    "PublishRateExceeded",
    "Refusal",
    "Registration",
    "TooManyPendingChanges",
    "UnknownConnection",
    "open_hub",
]

#: Hubs open in this process, so a signal handler can end their streams whatever app serves them.
OPEN_HUBS: weakref.WeakSet[Hub] = weakref.WeakSet()
_NO_CLIENT = ClientInfo()
#: Seconds a descriptor count is reused for (see ``Hub._open_fds``).
FDS_MAX_AGE = 1.0
#: Figures of the process that other layers own, added to every ``/sse/stats`` snapshot
#: under their name: the HTTP server's connection and accept-loop counters register here
#: (``runtime`` must not import ``http``).
PROCESS_FIGURES: dict[str, Callable[[], dict[str, Any]]] = {}


class Hub:
    """Use :func:`trio_sse.open_hub` to get one; see the module docstring."""

    def __init__(self, settings: Settings, backend: Backend, *, read_rss: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.stats = HubStats()
        self.event_types = settings.registered_event_types
        self._registry = registry = Registry()
        self._admission = Admission(settings, self.stats)
        self._flusher = Flusher(settings, registry, self.stats)
        #: The send deadlines of every one-task stream's transport writes (one task, not one per stream).
        self.write_deadlines = WriteDeadlines()
        self._subscriptions = Subscriptions(self.event_types, registry, self._flusher)
        #: ``read_rss`` (bytes) is injectable so memory pressure can be tested without using memory.
        self.memory = MemoryGuard(settings.memory_limit, read_rss or memory_rss_bytes)
        # The memory backend's ring is its history; the Redis backend's is its copy of the
        # events it read. Either is memory of this process: history_bytes and pressure apply.
        history = getattr(backend, "history", None)
        local_history = history if isinstance(history, History) else None
        self._memory_watch = MemoryWatch(self.memory, registry, local_history, settings.history_bytes)
        #: Set when shutdown begins: long-lived requests that are not registered streams
        #: (the dashboard's stats stream) wait on it to end with the hub.
        self.shutting_down = trio.Event()
        self.started_at = trio.current_time()
        self._shared_snapshot: tuple[float, dict[str, Any]] | None = None
        self._fds: tuple[float, int] = (-math.inf, 0)  # (counted at, count)
        self._machine_memory = 0  # the last machine_memory_bytes() that could be read

    # -- subscriptions --------------------------------------------------------------

    def subscription(self, event_types: Iterable[str] | None, project_id: str | None, tags: Any = None) -> Subscription:
        """A validated subscription; ``None`` types means every type; ``tags`` is a tag
        filter ``{"name": ["v1", "v2"]}`` (``None`` = none; raises ``InvalidTags``)."""
        return self._subscriptions.subscription(event_types, project_id, tags)

    def describe(self, connection: Connection) -> dict[str, Any]:
        """The filters as clients see them in ``connected`` and ``subscription_updated``."""
        return self._subscriptions.describe(connection)

    def update_subscription(
        self,
        connection_id: str,
        event_types: Iterable[str],
        *,
        mode: str = "replace",
        project_id: Any = UNSET,
        last_event_id: str | None = None,
        tags: Any = UNSET,
        rewind: int = 0,
    ) -> Subscription:
        """Change a live connection's filters (``tags``: a tag filter changed under ``mode``
        as the types are, ``None`` clears it, absent keeps it; see ``change_tags``).

        The connection's stream gets ``subscription_updated`` (then, with
        ``last_event_id``, the replay under the new filters; with ``rewind``, the newest
        ``rewind`` events the new filters match that the stream was not sent, oldest first)
        before any event that only the new filters match. Raises :class:`UnknownConnection`,
        ``UnknownEventTypes``, ``InvalidValue`` (also for a ``mode`` other than replace, add,
        remove, a ``rewind`` outside 0..``max_rewind``, or ``rewind`` with ``last_event_id``),
        ``InvalidTags`` or :class:`TooManyPendingChanges`; nothing changes then.
        """
        check_subscribe_rewind(rewind, last_event_id, self.settings.max_rewind)
        return self._subscriptions.update(
            connection_id,
            event_types,
            mode=mode,
            project_id=project_id,
            last_event_id=last_event_id,
            tags=tags,
            rewind=rewind,
        )

    # -- connections ------------------------------------------------------------------

    def connect(
        self,
        subscription: Subscription,
        *,
        last_event_id: str | None = None,
        client: ClientInfo = _NO_CLIENT,
        expires_at: float | None = None,
    ) -> Registration:
        """Register a stream for the duration of an ``async with`` block, then unregister it.

        Entering raises :class:`ConnectionRefused` (nothing registered; its ``reason`` says
        why) when the hub is shutting down, memory is under pressure or a connection limit
        is reached. With ``expires_at`` (wall-clock seconds, a token's ``exp``) the stream
        is ended then, with reason ``token_expired``. From the moment the block is
        entered the connection is offered every matching event committed.
        """
        return Registration(self, subscription, last_event_id, client, expires_at)

    def _register(
        self, subscription: Subscription, last_event_id: str | None, client: ClientInfo, expires_at: float | None
    ) -> tuple[Connection, str]:
        registry = self._registry
        key = client_key(client)
        self._admission.admit_stream(
            key,
            closing=registry.closing,
            memory_over=self.memory.over,
            live=len(registry.connections),
            of_client=registry.per_client[key],
        )
        connection = Connection(self, secrets.token_urlsafe(12), subscription, client, last_event_id, time.time())
        # Events committed before this point but still in the outbox are not for this stream
        # (its replay, if any, covers them).
        flusher = self._flusher
        start_id = flusher.newest_id if flusher.newest_id is not None else self.backend.resume_point
        connection.start_after(flusher.newest, start_id)
        connection.expires_at = expires_at
        registry.add(connection, key)
        self.stats.total_connections += 1
        return connection, key

    def _unregister(self, connection: Connection, key: str) -> None:
        self._registry.remove(connection, key)
        self.stats.disconnects[connection.close_reason or "client_closed"] += 1

    def get_connection(self, connection_id: str) -> Connection:
        """The live connection ``connection_id``; raises :class:`UnknownConnection`."""
        return self._registry.get(connection_id)

    def connections(self) -> list[Connection]:
        """Live connections, oldest first."""
        return list(self._registry.connections.values())

    # -- memory pressure --------------------------------------------------------------

    async def run_memory_guard(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample RSS every second for as long as the hub lives (see :class:`MemoryWatch`)."""
        await self._memory_watch.run(task_status=task_status)

    def check_memory(self) -> None:
        """Take one RSS sample; while over ``memory_limit``, evict history, then shed the fullest streams."""
        self._memory_watch.check()

    @property
    def memory_samples_failed(self) -> int:
        """RSS reads that failed (out of descriptors) and were skipped; the last sample stood."""
        return self._memory_watch.samples_failed

    # -- publishing -------------------------------------------------------------------

    def prepare(self, event_type: Any, data: Any, project_id: Any = None, tags: Any = None) -> NewEvent:
        """Validate one event (raises a ``ValidationError`` subclass; nothing is published)."""
        return prepare_event(
            event_type,
            data,
            project_id,
            registered=self.event_types,
            max_event_bytes=self.settings.max_event_bytes,
            tags=tags,
        )

    def admit_publish(self, publisher: str, count: int) -> None:
        """Charge ``count`` events to ``publisher``'s ``publish_rate`` budget (events per second).

        Raises :class:`PublishRateExceeded` (nothing charged) when over budget.
        """
        self._admission.admit_publish(publisher, count)

    async def publish(
        self, event_type: str, data: Any, project_id: str | None = None, *, tags: dict[str, str] | None = None
    ) -> str:
        """Publish one event and return its id (``tags``: for server-side filtering, never sent).

        Raises ``UnknownEventTypes``, ``EventTooLarge``, ``InvalidTags`` or ``InvalidValue`` before
        anything is stored, and ``BackendUnavailable`` when the backend cannot store it.
        Never waits for a subscriber.
        """
        (event_id,) = await self.publish_prepared([self.prepare(event_type, data, project_id, tags)])
        return event_id

    async def publish_prepared(self, batch: Sequence[NewEvent]) -> list[str]:
        """Publish already validated events, in order, and return their ids."""
        events = await self.backend.append(batch)
        self.stats.events_published += len(events)
        return [event.id for event in events]

    def deliver(self, events: Sequence[Event]) -> None:
        """Accept committed events for fan-out (see :meth:`Flusher.deliver`; the backend calls it directly)."""
        self._flusher.deliver(events)

    def history_gap(self, after_id: str | None) -> None:
        """The backend may have skipped events after ``after_id``: every stream is told (see :class:`Flusher`)."""
        self._flusher.history_gap(after_id)

    async def run_flusher(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fan out the outbox, one round at a time, for as long as the hub lives (see :class:`Flusher`)."""
        await self._flusher.run(task_status=task_status)

    # -- looking inside ---------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        """The hub's figures, taken at once (what ``/sse/health`` judges; no /proc listing)."""
        return collect_statistics(
            self.settings, self.stats, self._registry, self.backend, self._memory_watch, self.started_at
        )

    def process_statistics(self) -> ProcessStatistics:
        """This process's leak checks (descriptors, trio tasks) and the other layers' figures."""
        figures = {name: figures() for name, figures in PROCESS_FIGURES.items()}
        return ProcessStatistics(os.getpid(), self._open_fds(), trio_tasks(), figures)

    def connection_statistics(self, connection: Connection) -> ConnectionStatistics:
        """One live connection's figures (an entry of the connection listing)."""
        return ConnectionStatistics.of(connection, self.describe(connection))

    def machine_memory(self) -> int:
        """The memory this process may use, or the last figure read when /proc cannot be opened."""
        try:
            self._machine_memory = machine_memory_bytes()
        except OSError:  # out of descriptors: keep the last figure
            pass
        return self._machine_memory

    def snapshot(self) -> dict[str, Any]:
        """The figures of ``GET /sse/stats`` as plain data: the hub's, then the process's."""
        return {**self.statistics().as_dict(), **self.process_statistics().as_dict()}

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

    # -- shutdown -----------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._registry.closing

    def begin_shutdown(self) -> None:
        """Refuse new streams and end every live one gracefully (each finishes its write)."""
        begin_shutdown(self._registry, self.shutting_down)

    async def aclose(self) -> None:
        """End every stream: gracefully within ``shutdown_grace``, then by force.

        Returns once no connection is registered any more, so nothing outlives the hub.
        """
        self.begin_shutdown()
        await close_all(self._registry, self.settings.shutdown_grace, max(1.0, self.settings.send_timeout))


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
    backend = backend or make_backend(
        settings.backend,
        settings.history_size,
        stream_key=settings.redis_stream,
        project_history_size=settings.project_history_size,
        history_ttl=settings.history_ttl,
        read_pace=settings.flush_interval,
    )
    hub = Hub(settings, backend, read_rss=read_rss)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub._flusher.run)
        await nursery.start(hub.write_deadlines.run)
        if hub.memory.enabled:
            await nursery.start(hub._memory_watch.run)
        # The backend hands events to the flusher itself: no hop through the facade per event.
        await nursery.start(backend.run, hub._flusher.deliver, hub._flusher.history_gap)
        OPEN_HUBS.add(hub)
        try:
            yield hub
        finally:
            OPEN_HUBS.discard(hub)
            with trio.CancelScope(shield=True):
                await hub.aclose()
            nursery.cancel_scope.cancel()
