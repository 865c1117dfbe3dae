"""The flusher: committed events wait in an outbox and go out in fan-out rounds.

The backend hands each committed event to :meth:`Flusher.deliver` (never blocking);
one task (:meth:`Flusher.run`) empties the outbox a round at a time. A round asks the
subscription index for the connections each event matches and hands every connection
its events as one batch, with one payload shared by all that get the same events —
written at once on an idle connection, queued on a busy one, never awaited. A queue
that cannot take a round is the overflow policy's business (:meth:`Flusher._overflow`).

This is the hot path of the hub: the round loop does nothing per event per connection
but ``matching`` and ``take``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import trio

from ..core.events import Event, EventOrder, system_event
from ..settings import Settings
from .connection import Connection, LiveReset
from .registry import Registry
from .stats import HubStats

__all__ = ["ROUND_SPACING", "Flusher"]

#: Idle time after a fan-out round, as a fraction of that round's duration. 0.5 keeps
#: fan-out under ~2/3 of the CPU so publishes keep being accepted; measured in
#: docs/performance.md (0 and 0.25 starve publishers at 1,000 streams, 1.0 adds latency).
ROUND_SPACING = 0.5


class Flusher:
    """The outbox and its fan-out rounds; see the module docstring."""

    def __init__(self, settings: Settings, registry: Registry, stats: HubStats) -> None:
        self._settings = settings
        self._registry = registry
        self._stats = stats
        self.outbox: list[Event] = []
        self._ready = trio.Event()
        #: Order of the newest committed event: where a new connection's live stream starts.
        self.newest: EventOrder = (-1, -1)
        #: Its id, told to each new stream (``Last-Event-ID`` response header) as the point
        #: it can resume from even if it drops before its first event.
        self.newest_id: str | None = None

    def deliver(self, events: Sequence[Event]) -> None:
        """Accept committed events for fan-out (the backend calls this once per event).

        Never blocks: events wait in the outbox until the next round, so every event
        published in one scheduler round reaches a connection in one write.
        """
        if events:
            self.outbox.extend(events)
            self.newest = events[-1].order
            self.newest_id = events[-1].id
            self._ready.set()

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
        self.flush()
        reset = LiveReset(system_event("stream_reset", {"reason": "history_gap", "last_event_id": after_id}))
        for connection in list(self._registry.connections.values()):
            if connection.close_reason is None and not connection.push_control(reset):
                self._registry.close(connection, "history_gap")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fan out the outbox, one round at a time, for as long as the hub lives.

        A round starts no sooner than ``flush_interval`` after the previous one started,
        and no sooner than ``ROUND_SPACING`` times its duration after it ended. An event
        after a quiet spell goes out at once; under load, rounds carry more events each
        instead of becoming more frequent, so fan-out (whose cost is one socket write per
        connection per round) leaves CPU for accepting publishes.
        """
        task_status.started()
        interval = self._settings.flush_interval
        started = ended = -math.inf
        while True:
            await self._ready.wait()
            wait = max(started + interval, ended + ROUND_SPACING * (ended - started)) - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            self._ready = trio.Event()
            started = trio.current_time()
            self.flush()
            ended = trio.current_time()

    def flush(self) -> None:
        """Fan out what the outbox holds now (a filter change calls this first, see subscriptions)."""
        events, self.outbox = self.outbox, []
        if events:
            self._fan_out(events)

    def _fan_out(self, events: list[Event]) -> None:
        """Hand each connection the events of this round that match its filters, as one batch.

        Connections that get the same events share one joined payload (built once per round).
        """
        matching = self._registry.index.matching
        now = trio.current_time()
        stats = self._stats
        delivered_before = stats.events_delivered
        overflowed: list[tuple[Connection, int]] = []
        if len(events) == 1:
            event = events[0]
            for connection in matching(event.type, event.project_id, event.tags):
                missed = connection.take(events, event.wire, now)
                if missed:
                    overflowed.append((connection, missed))
        else:
            batches: dict[Connection, list[Event]] = {}
            for event in events:
                for connection in matching(event.type, event.project_id, event.tags):
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
        if stats.events_delivered != delivered_before:
            # Written directly: one latency sample per round, the oldest event written last.
            stats.latencies.append(trio.current_time() - events[0].published_at)

    def _overflow(self, overflowed: list[tuple[Connection, int]]) -> None:
        """Apply the overflow policy to connections whose queue could not take a round."""
        stats = self._stats
        if self._settings.overflow == "drop":
            for connection, missed in overflowed:
                connection.events_dropped += missed
                stats.events_dropped += missed
            return
        now = trio.current_time()
        for connection, _ in overflowed:
            # Out of the index at once, so it costs the publisher nothing more.
            stats.record_error(now)
            self._registry.close(connection, "slow_consumer")
