"""One SSE connection: its bounded queue, its filters, and the task that writes it.

Life of a connection: the hub registers it (from then on it is offered every matching
event), :meth:`Connection.run` writes the preamble (``retry``, ``connected``, replay),
then loops: wait for the queue under a heartbeat deadline, drain everything queued,
write it in one send. It ends when the client goes away, when a write misses
``send_timeout``, when its queue overflows (policy ``disconnect``), or when the hub
shuts down; the hub unregisters it on the way out.

Two write paths. When the transport offers a :class:`DirectWriter` (hypercorn, plain
HTTP/1.1) and the connection task is idle with nothing queued, the hub's flusher writes
each round of events straight to the socket without waking the task: one ``writev``
per connection per round, no await. Whatever the kernel does not take at once becomes
a backlog, and the task takes over (drains the backlog under ``send_timeout``, then the
queue) until it is idle again. Everything else — the preamble, replays, filter changes,
heartbeats, and transports without a direct writer — goes through the task.

Edges:

* queue full — ``take`` reports what did not fit and the hub applies the overflow
  policy; the publisher never waits for this connection.
* client vanished — the transport's ``wait_closed`` returns (or a direct write fails);
  the run scope is cancelled.
* write stuck — a direct-path drain is our own await under ``move_on_after``; an ASGI
  write is watched by a deadline pushed forward at every write, which aborts the
  transport (hypercorn shields its socket writes from cancellation).
* hub shutdown — ``end`` lets the current write finish, then ``run`` returns so the
  HTTP layer can close the response cleanly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ..core.events import Event, EventOrder, parse_event_id, system_event
from ..core.history import Replay
from ..core.matching import Subscription
from ..core.wire import encode_comment
from .backends import BackendUnavailable

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["CONTROL_RESERVE", "HEARTBEAT", "ClientInfo", "Connection", "Transport"]

#: Written when a stream has been silent for ``heartbeat_interval``.
HEARTBEAT = encode_comment("heartbeat")
#: Queue slots kept for control messages (filter changes) on top of ``queue_size`` events.
CONTROL_RESERVE = 8
#: Queued by the flusher when a direct write left a backlog: the task must drain it.
_BACKLOG: Any = object()
#: A write stops collecting queued events beyond this many bytes (the rest go next round).
MAX_WRITE_BYTES = 1 << 20


class DirectWriter(Protocol):
    """Synchronous writes straight to the client's socket, framed by the HTTP layer."""

    @property
    def backlog(self) -> int:
        """Bytes accepted by ``write_now`` but not yet taken by the kernel."""
        ...

    def write_now(self, parts: list[bytes]) -> bool:
        """Write ``parts`` as one unit without blocking. False when some is left in the backlog.

        Raises ``OSError`` when the client is gone.
        """
        ...

    async def drain(self) -> None:
        """Wait until the backlog is written (cancellable)."""
        ...


class Transport(Protocol):
    """What a connection needs from the HTTP layer (or a test)."""

    @property
    def direct(self) -> DirectWriter | None:
        """A direct writer once the response has started, if the server allows one."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the client; may block while the client is slow."""
        ...

    async def wait_closed(self) -> None:
        """Return when the client has gone away."""
        ...

    def abort(self) -> None:
        """Tear the underlying connection down so that a blocked ``write`` returns."""
        ...


@attrs.frozen(slots=True)
class ClientInfo:
    """Who opened a stream: network address, user agent, the token subject if any, and the
    projects that token may read (``None``: every project), which bound every later filter change."""

    address: str | None = None
    user_agent: str | None = None
    owner: str | None = None
    projects: frozenset[str] | None = None


@attrs.frozen(slots=True)
class Resubscribe:
    """Queued control message: announce new filters, then replay under them if asked."""

    subscription: Subscription
    previous: Subscription
    announcement: bytes
    last_event_id: str | None


@attrs.frozen(slots=True)
class LiveReset:
    """Queued control message: the backend may have skipped events here; write ``stream_reset``.

    Queued behind the events delivered before the gap and ahead of those after it, so
    the client learns exactly where events may be missing.
    """

    payload: bytes


class Connection:
    """A registered stream. Created and registered by :meth:`Hub.connect`, never directly."""

    __slots__ = (
        "_aborted",
        "_direct",
        "_ending",
        "_first_order",
        "_initial_last_event_id",
        "_last_order",
        "_last_write",
        "_queue_size",
        "_recv",
        "_run_scope",
        "_send",
        "_transport",
        "_wait_scope",
        "_watch_scope",
        "_writing",
        "client",
        "close_reason",
        "connected_at",
        "direct_ready",
        "events_dropped",
        "events_sent",
        "expires_at",
        "hub",
        "id",
        "last_event_id",
        "pending",
        "pending_controls",
        "start_id",
        "subscription",
    )

    def __init__(
        self,
        hub: Hub,
        connection_id: str,
        subscription: Subscription,
        client: ClientInfo,
        last_event_id: str | None,
        connected_at: float,
    ) -> None:
        self.hub = hub
        self.id = connection_id
        self.client = client
        self.connected_at = connected_at
        self.subscription = subscription
        self.last_event_id = last_event_id
        self.events_sent = 0
        self.events_dropped = 0
        self.pending = 0
        self.pending_controls = 0
        self.close_reason: str | None = None
        #: Id of the newest event committed when the stream registered (``None`` if none
        #: was yet): live delivery starts after it, so a client that resumes from it
        #: misses nothing, even if the stream drops before its first event.
        self.start_id: str | None = None
        self._queue_size = hub.settings.queue_size
        # Items: event batches (their length counts against queue_size), control messages.
        self._send, self._recv = trio.open_memory_channel[Any](self._queue_size + CONTROL_RESERVE + 1)
        self._initial_last_event_id = last_event_id
        self._last_order: EventOrder = (-1, -1)
        self._first_order: EventOrder | None = None
        self._run_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._transport: Transport | None = None
        self._writing = False
        self._ending = False
        self._aborted = False
        self._direct: DirectWriter | None = None
        #: True while the task is idle with nothing queued: the flusher may write directly.
        self.direct_ready = False
        self._last_write = trio.current_time()
        #: Wall-clock end of the caller's token: the stream ends then (``token_expired``).
        self.expires_at: float | None = None

    # -- called by the hub, synchronously, never awaiting -------------------------------

    def start_after(self, order: EventOrder, event_id: str | None) -> None:
        """Live delivery starts after ``order``, the event ``event_id`` (set by the hub at registration)."""
        self._last_order = order
        self.start_id = event_id

    def take(self, events: list[Event], payload: bytes, now: float) -> int:
        """Accept a round of matching events (oldest first) without waiting.

        ``payload`` is the events' wire bytes joined. Written at once when the direct path
        is open, else queued. Returns how many did not fit in the queue (the hub applies
        the overflow policy to those). ``events`` is shared and never modified.
        """
        if events[0].order <= self._last_order:  # a replay already wrote some of them
            events = [e for e in events if e.order > self._last_order]
            if not events:
                return 0
            payload = b"".join(e.wire for e in events)
        if self.direct_ready:
            self._write_direct(events, payload, now)
            return 0
        room = self._queue_size - self.pending
        if room <= 0:
            return len(events)
        if room < len(events):
            self._send.send_nowait(events[:room])
            self.pending += room
            return len(events) - room
        self._send.send_nowait(events)
        self.pending += len(events)
        return 0

    def _write_direct(self, events: list[Event], payload: bytes, now: float) -> None:
        direct = self._direct
        assert direct is not None
        try:
            complete = direct.write_now([payload])
        except OSError:
            self.direct_ready = False
            self.close("client_closed")
            return
        self._sent(events, now)
        if not complete:
            self.direct_ready = False
            self._send.send_nowait(_BACKLOG)

    def _sent(self, events: list[Event], now: float) -> None:
        """Account for events just written (directly or by the task)."""
        count = len(events)
        self.events_sent += count
        self.hub.stats.events_delivered += count
        last = events[-1]
        self.last_event_id = last.id
        if last.order > self._last_order:
            self._last_order = last.order
        if self._first_order is None or events[0].order < self._first_order:
            self._first_order = events[0].order
        self._last_write = now

    def push_control(self, message: Resubscribe | LiveReset) -> bool:
        """Queue a control message in the reserved slots. False when they are all taken."""
        if self.pending_controls >= CONTROL_RESERVE:
            return False
        self.direct_ready = False  # events after the change must follow its announcement
        self._send.send_nowait(message)
        self.pending_controls += 1
        return True

    def close(self, reason: str) -> None:
        """End the stream now (first reason wins); a blocked write is aborted."""
        self.direct_ready = False
        if self.close_reason is None:
            self.close_reason = reason
        if self._writing and self._transport is not None:
            self._aborted = True
            self._transport.abort()
        if self._run_scope is not None:
            self._run_scope.cancel()

    def end(self, reason: str) -> None:
        """End the stream gracefully: the write under way completes, then ``run`` returns."""
        if self.close_reason is None:
            self.close_reason = reason
        self.direct_ready = False
        self._ending = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    # -- the connection task ----------------------------------------------------------

    async def run(self, transport: Transport) -> None:
        """Write the stream until it ends; returns normally in every case.

        Afterwards ``close_reason`` says why it ended. The caller finishes the HTTP
        response only when the reason allows a clean end (see :meth:`can_finish`).
        """
        self._transport = transport
        try:
            with trio.CancelScope() as self._run_scope:
                expiry = math.inf if self.expires_at is None else trio.current_time() + (self.expires_at - time.time())
                if self.close_reason is None:  # not closed before it started
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._watch, transport)
                        try:
                            # The token's end cancels the writing, not the watchdog: a write
                            # that ignores cancellation (hypercorn's) is still aborted at
                            # send_timeout instead of holding the stream open for good.
                            with trio.CancelScope(deadline=expiry) as writing:
                                await self._pump(transport)
                        finally:
                            nursery.cancel_scope.cancel()
                    if writing.cancelled_caught and self.close_reason is None:
                        self.close_reason = "token_expired"
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # The transport failed under us: the client is gone.
            if self.close_reason is None:
                self.close_reason = "client_closed"
        finally:
            # Left without a reason: the pump only stops by ``end`` or by cancellation from
            # outside (the server's own shutdown deadline).
            if self.close_reason is None:
                self.close_reason = "server_shutdown"

    @property
    def can_finish(self) -> bool:
        """Whether the response may still be ended with a final chunk.

        Not after a write was aborted: the client was not reading, so a final chunk
        would only hold up the shutdown that forced the close.
        """
        if self._aborted or (self._direct is not None and self._direct.backlog):
            return False  # a half-written chunk cannot be followed by the final one
        return self.close_reason not in ("client_closed", "send_timeout", "slow_consumer")

    async def _watch(self, transport: Transport, *, task_status: trio.TaskStatus[None]) -> None:
        """Notice the client leaving, and writes that miss their deadline."""
        with trio.CancelScope() as scope:
            self._watch_scope = scope
            task_status.started()
            await transport.wait_closed()
            self.close("client_closed")
            return
        if scope.cancelled_caught:  # our own deadline fired: a write is stuck
            self.hub.stats.record_error(trio.current_time())
            self.close("send_timeout")

    async def _write(self, transport: Transport, data: bytes) -> None:
        await self._write_parts(transport, [data])

    async def _write_parts(self, transport: Transport, parts: list[bytes]) -> None:
        """One write of ``parts`` by the task, under ``send_timeout``."""
        direct = self._direct
        if direct is not None:
            if not direct.write_now(parts):
                await self._drain_direct()
        else:
            watch = self._watch_scope
            assert watch is not None
            watch.deadline = trio.current_time() + self.hub.settings.send_timeout
            self._writing = True
            try:
                await transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
            finally:
                self._writing = False
                watch.deadline = math.inf
        self._last_write = trio.current_time()

    async def _drain_direct(self) -> None:
        """Wait for the direct writer's backlog; a client that takes longer than ``send_timeout`` is closed."""
        assert self._direct is not None
        with trio.move_on_after(self.hub.settings.send_timeout):
            await self._direct.drain()
            return
        self.hub.stats.record_error(trio.current_time())
        self._aborted = True
        if self._transport is not None:
            self._transport.abort()
        self.close("send_timeout")
        await trio.lowlevel.checkpoint()  # raises Cancelled: the run scope is cancelled

    async def _pump(self, transport: Transport) -> None:
        hub = self.hub
        settings = hub.settings
        await self._write(transport, self._preamble())
        if settings.direct_writes:
            self._direct = getattr(transport, "direct", None)
        if self._initial_last_event_id is not None:
            replay = await self._replay(self._initial_last_event_id, self.subscription.accepts)
            await self._write_replay(transport, replay, self._initial_last_event_id)
        heartbeat_interval = settings.heartbeat_interval
        recv = self._recv
        while not self._ending:
            if self._direct is not None and not self.pending and not self.pending_controls:
                self.direct_ready = True
            # The heartbeat deadline is lazy: direct writes move _last_write without
            # touching this scope, so a wake-up first checks whether the stream was silent.
            with trio.CancelScope(deadline=self._last_write + heartbeat_interval) as wait:
                self._wait_scope = wait
                item = await recv.receive()
            self._wait_scope = None
            self.direct_ready = False
            if self._ending:
                break
            if wait.cancelled_caught:
                if trio.current_time() >= self._last_write + heartbeat_interval:
                    await self._write(transport, HEARTBEAT)
                continue
            await self._deliver_from(transport, item)
        if self._direct is not None and self._direct.backlog:
            await self._drain_direct()  # the final chunk may only follow complete ones

    def _preamble(self) -> bytes:
        return system_event("connected", self.hub.describe(self), retry=self.hub.settings.retry)

    async def _deliver_from(self, transport: Transport, item: Any) -> None:
        """Drain the queue starting with ``item`` and write it in as few sends as possible."""
        recv = self._recv
        batch: list[Event] = []
        size = 0
        while True:
            if type(item) is list:
                self.pending -= len(item)
                for event in item:
                    if event.order > self._last_order:  # skip what a replay already sent
                        self._last_order = event.order
                        batch.append(event)
                        size += len(event.wire)
            elif item is _BACKLOG:
                await self._drain_direct()
            else:
                # A control message: write what came before it, then apply it, in order.
                await self._send_events(transport, batch, live=True)
                batch, size = [], 0
                if type(item) is LiveReset:
                    self.pending_controls -= 1
                    await self._write(transport, item.payload)
                else:
                    await self._resubscribe(transport, item)
            if size >= MAX_WRITE_BYTES:
                break
            try:
                item = recv.receive_nowait()
            except trio.WouldBlock:
                break
        await self._send_events(transport, batch, live=True)

    async def _send_events(self, transport: Transport, events: list[Event], *, live: bool) -> None:
        """One write for ``events``; live writes also feed the publish-to-write latency."""
        if not events:
            return
        await self._write_parts(transport, [e.wire for e in events])
        now = trio.current_time()
        self._sent(events, now)
        if live:
            self.hub.stats.latencies.append(now - events[0].published_at)

    async def _resubscribe(self, transport: Transport, message: Resubscribe) -> None:
        self.pending_controls -= 1
        await self._write(transport, message.announcement)
        if message.last_event_id is None:
            return
        replay = await self._replay(message.last_event_id, message.subscription.accepts)
        # Skip what this stream already wrote: events in the range it has delivered that
        # the previous filters matched. Events only the new filters match are sent even if
        # they are older than the last event delivered (the client asked to go back).
        first, upto, previous = self._first_order, self._last_order, message.previous

        def already_sent(event: Event) -> bool:
            return first is not None and first <= event.order <= upto and previous.accepts(event)

        await self._write_replay(transport, replay, message.last_event_id, already_sent)

    async def _replay(self, last_event_id: str, matches: Callable[[Event], bool]) -> Replay:
        """The backend's replay; when the backend cannot answer, the stream ends instead.

        Ending (reason ``backend_unavailable``) is the lossless choice: the client
        reconnects after ``retry`` with the same ``Last-Event-ID`` and gets its replay
        then, where sending live events now would skip the ones it missed.
        """
        try:
            return await self.hub.backend.replay_after(last_event_id, matches)
        except BackendUnavailable:
            self.close("backend_unavailable")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the run scope is cancelled
            raise

    async def _write_replay(
        self,
        transport: Transport,
        replay: Replay,
        last_event_id: str,
        already_sent: Callable[[Event], bool] | None = None,
    ) -> None:
        """Write a replay in bounded chunks, or the ``stream_reset`` that replaces it.

        Afterwards live events at or before the newest replayed one (or the client's own
        id) are dropped as duplicates.
        """
        if replay.reset is not None:
            payload = {"reason": replay.reset, "last_event_id": last_event_id}
            await self._write(transport, system_event("stream_reset", payload))
            return
        newest = max(self._last_order, parse_event_id(last_event_id) or self._last_order)
        batch: list[Event] = []
        size = 0
        for event in replay.events:
            if already_sent is not None and already_sent(event):
                continue
            newest = max(newest, event.order)
            batch.append(event)
            size += len(event.wire)
            if size >= MAX_WRITE_BYTES:
                await self._send_events(transport, batch, live=False)
                batch, size = [], 0
                if self._ending:
                    # A graceful end finishes the write under way, not the whole replay:
                    # the client resumes from the last event it got, on any instance.
                    return
        await self._send_events(transport, batch, live=False)
        self._last_order = newest
