"""One SSE connection: its bounded queue, its filters, and the task that writes it.

What the stream decides (its state, what is queued, what was already written, whether
the response may end cleanly) is :class:`~trio_sse.core.stream_state.StreamMachine`'s;
the watchdog and the deadlines are :class:`~trio_sse.runtime.driver.StreamDriver`'s.
This module does the I/O between them: the direct writes, the queue's channel, the
heartbeat wait, replays and filter changes. It never imports anything from ``http``.

Life of a connection: the hub registers it (from then on it is offered every matching
event), :meth:`Connection.run` writes the preamble (``retry``, ``connected``, replay),
then loops: wait for the queue under a heartbeat deadline, drain everything queued,
write it in one send. It ends when the client goes away, when a write misses
``send_timeout``, when its queue overflows (policy ``disconnect``), or when the hub
shuts down; the hub unregisters it on the way out.

Two write paths. When the transport offers a :class:`DirectWriter` (hypercorn, plain
HTTP/1.1) and the connection task is idle with nothing queued (state ``IDLE``), the
hub's flusher writes each round of events straight to the socket without waking the
task: one ``writev`` per connection per round, no await. Whatever the kernel does not
take at once becomes a backlog (``BACKLOGGED``), and the task takes over (drains the
backlog under ``send_timeout``, then the queue: ``WRITING``) until it is idle again.
Everything else — the preamble, replays, filter changes, heartbeats, and transports
without a direct writer — goes through the task.

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

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio

from ..core.events import Event, EventOrder, system_event
from ..core.history import Replay
from ..core.matching import Subscription
from ..core.stream_state import BACKLOG, CONTROL_RESERVE, CloseReason, StreamState
from ..core.wire import encode_comment
from .backends import BackendUnavailable
from .driver import StreamDriver
from .driver import Transport as _BaseTransport

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["CONTROL_RESERVE", "HEARTBEAT", "ClientInfo", "Connection", "Transport"]

_T = TypeVar("_T")

#: Written when a stream has been silent for ``heartbeat_interval``.
HEARTBEAT = encode_comment("heartbeat")
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


class Transport(_BaseTransport, Protocol):
    """What a connection needs from the HTTP layer (or a test)."""

    @property
    def direct(self) -> DirectWriter | None:
        """A direct writer once the response has started, if the server allows one."""
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
    """Queued control message: announce new filters, then replay (or rewind) under them if asked."""

    subscription: Subscription
    previous: Subscription
    announcement: bytes
    last_event_id: str | None
    #: The newest this many events the new filters match and the stream was not sent (0: none).
    rewind: int = 0


@attrs.frozen(slots=True)
class LiveReset:
    """Queued control message: the backend may have skipped events here; write ``stream_reset``.

    Queued behind the events delivered before the gap and ahead of those after it, so
    the client learns exactly where events may be missing.
    """

    payload: bytes


class Connection(StreamDriver):
    """A registered stream. Created and registered by :meth:`Hub.connect`, never directly.

    Its decisions (state, queue accounting, de-duplication, ``can_finish``) are the
    :class:`~trio_sse.core.stream_state.StreamMachine`'s; this class does the I/O.
    """

    __slots__ = (
        "_direct",
        "_recv",
        "client",
        "connected_at",
        "events_dropped",
        "hub",
        "id",
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
        queue_size = hub.settings.queue_size
        # Items: event batches (their length counts against queue_size), control messages.
        send, self._recv = trio.open_memory_channel[Any](queue_size + CONTROL_RESERVE + 1)
        super().__init__(hub.settings.send_timeout, queue_size, send, last_event_id, hub.write_deadlines)
        self.hub = hub
        self.id = connection_id
        self.client = client
        self.connected_at = connected_at
        self.subscription = subscription
        self.events_dropped = 0
        #: Id of the newest event committed when the stream registered (``None`` if none
        #: was yet): live delivery starts after it, so a client that resumes from it
        #: misses nothing, even if the stream drops before its first event.
        self.start_id: str | None = None
        self._direct: DirectWriter | None = None

    # -- called by the hub, synchronously, never awaiting -------------------------------
    # (``take``, ``push_control``, ``close`` and ``end`` are the machine's and the driver's)

    def start_after(self, order: EventOrder, event_id: str | None = None) -> None:
        """Live delivery starts after ``order``, the event ``event_id`` (set by the hub at registration)."""
        self.last_order = order
        self.start_id = event_id

    def _write_direct(self, events: list[Event], payload: bytes, now: float) -> None:
        direct = self._direct
        assert direct is not None
        try:
            complete = direct.write_now([payload])
        except OSError:
            self.close(CloseReason.CLIENT_CLOSED)
            return
        self.hub.stats.events_delivered += self.sent(events, now)
        if not complete:
            self.backlogged()

    def _timed_out(self) -> None:
        self.hub.stats.record_error(trio.current_time())
        super()._timed_out()

    # -- the connection task ----------------------------------------------------------

    def run(self, transport: Transport, *, rewind: int = 0) -> Coroutine[Any, Any, None]:
        """Write the stream until it ends (await it); returns normally in every case.

        With ``rewind`` and no ``Last-Event-ID`` the newest ``rewind`` matching events of
        the history come first, oldest first, then live events with no gap and no
        duplicate (the replay's floor). Afterwards ``close_reason`` says why it ended.
        The caller finishes the HTTP response only when the reason allows a clean end
        (see ``can_finish``). This is
        :meth:`drive` itself, not a coroutine awaiting it, whose frame would live as long
        as the stream.
        """
        return self.drive(transport, partial(self._pump, rewind=rewind) if rewind else self._pump)

    def finished(self, reason: CloseReason | str = CloseReason.SERVER_SHUTDOWN) -> None:
        if self._direct is not None and self._direct.backlog:
            self.send_failed()  # a half-written chunk cannot be followed by the final one
        super().finished(reason)

    async def _write_parts(self, transport: Transport, parts: list[bytes]) -> None:
        """One write of ``parts`` by the task, under ``send_timeout``."""
        direct = self._direct
        if direct is not None:
            if not direct.write_now(parts):
                await self._drain_direct()
        else:
            await self.write(transport, parts[0] if len(parts) == 1 else b"".join(parts))
        self.last_write = trio.current_time()

    async def _drain_direct(self) -> None:
        """Wait for the direct writer's backlog; a client that takes longer than ``send_timeout`` is closed."""
        assert self._direct is not None
        with trio.move_on_after(self.send_timeout):
            await self._direct.drain()
            return
        self.hub.stats.record_error(trio.current_time())
        self.send_failed()
        if self._transport is not None:
            self._transport.abort()
        self.close(CloseReason.SEND_TIMEOUT)
        await trio.lowlevel.checkpoint()  # raises Cancelled: the run scope is cancelled

    async def _pump(self, transport: Transport, rewind: int = 0) -> None:
        settings = self.hub.settings
        await self.write(transport, self._preamble())
        self.last_write = trio.current_time()
        if settings.direct_writes:
            self._direct = getattr(transport, "direct", None)
        if self.last_event_id is not None:  # nothing is written before the preamble: the client's own id
            replay = await self._replay(self.last_event_id, self.subscription)
            await self._write_replay(transport, replay, self.last_event_id)
        elif rewind:
            rewound = await self._rewind(rewind, self.subscription.accepts, self.subscription.project_id)
            await self._write_replay(transport, Replay(rewound), None)
        self.preamble_written()
        heartbeat_interval = settings.heartbeat_interval
        recv = self._recv
        direct = self._direct
        while self.state is not _ENDING:
            if direct is not None:
                self.idle()
            # The heartbeat deadline is lazy: direct writes move last_write without
            # touching this scope, so a wake-up first checks whether the stream was silent.
            with trio.CancelScope(deadline=self.last_write + heartbeat_interval) as wait:
                self._wait_scope = wait
                item = await recv.receive()
            self._wait_scope = None
            self.woke()
            if self.state is _ENDING:
                break
            if wait.cancelled_caught:
                if trio.current_time() >= self.last_write + heartbeat_interval:
                    await self._write_parts(transport, [HEARTBEAT])
                continue
            await self._deliver_from(transport, item)
        if direct is not None and direct.backlog:
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
                size += self.collect(item, batch)
            elif item is BACKLOG:
                await self._drain_direct()
                self.drained()
            else:
                # A control message: write what came before it, then apply it, in order.
                await self._send_events(transport, batch, live=True)
                batch, size = [], 0
                if type(item) is LiveReset:
                    self.control_taken()
                    await self._write_parts(transport, [item.payload])
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
        self.hub.stats.events_delivered += self.sent(events, now)
        if live:
            self.hub.stats.latencies.append(now - events[0].published_at)

    async def _resubscribe(self, transport: Transport, message: Resubscribe) -> None:
        self.control_taken()
        await self._write_parts(transport, [message.announcement])
        if message.rewind:
            # Only what the stream was not sent: the client has the rest already.
            already, accepts = self.already_sent(message.previous.accepts), message.subscription.accepts
            rewound = await self._rewind(
                message.rewind, lambda event: accepts(event) and not already(event), message.subscription.project_id
            )
            await self._write_replay(transport, Replay(rewound), None)
            return
        if message.last_event_id is None:
            return
        replay = await self._replay(message.last_event_id, message.subscription)
        await self._write_replay(transport, replay, message.last_event_id, self.already_sent(message.previous.accepts))

    async def _replay(self, last_event_id: str, subscription: Subscription) -> Replay:
        """The backend's replay after ``last_event_id`` under ``subscription``; its project
        filter lets the backend read that project's window (retention per project)."""
        answer = self.hub.backend.replay_after(last_event_id, subscription.accepts, project=subscription.project_id)
        return await self._from_backend(answer)

    async def _rewind(self, count: int, matches: Callable[[Event], bool], project: str | None) -> list[Event]:
        """The backend's newest ``count`` matching events. ``project`` (the stream's project
        filter) lets the backend read that project's window, which keeps a quiet project's
        events after the global window lost them."""
        return await self._from_backend(self.hub.backend.rewind(count, matches, project=project))

    async def _from_backend(self, answer: Awaitable[_T]) -> _T:
        """``answer`` (a replay or a rewind); when the backend cannot give it, the stream ends instead.

        Ending (reason ``backend_unavailable``) is the lossless choice: the client
        reconnects after ``retry`` with the same ``Last-Event-ID`` and gets its replay
        then, where sending live events now would skip the ones it missed.
        """
        try:
            return await answer
        except BackendUnavailable:
            self.close(CloseReason.BACKEND_UNAVAILABLE)
            await trio.lowlevel.checkpoint()  # raises Cancelled: the run scope is cancelled
            raise

    async def _write_replay(
        self,
        transport: Transport,
        replay: Replay,
        last_event_id: str | None,
        already_sent: Callable[[Event], bool] | None = None,
    ) -> None:
        """Write a replay (or a rewind: ``last_event_id`` ``None``) in bounded chunks, or the
        ``stream_reset`` that replaces it.

        Afterwards live events at or before the newest replayed one (or the client's own
        id) are dropped as duplicates: events published while the replay was read reach
        the stream once, from the replay or live.
        """
        if replay.reset is not None:
            payload = {"reason": replay.reset, "last_event_id": last_event_id}
            await self._write_parts(transport, [system_event("stream_reset", payload)])
            return
        newest = self.last_order if last_event_id is None else self.replay_floor(last_event_id)
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
                if self.state is _ENDING:
                    # A graceful end finishes the write under way, not the whole replay:
                    # the client resumes from the last event it got, on any instance.
                    return
        await self._send_events(transport, batch, live=False)
        self.replayed(newest)


_ENDING = StreamState.ENDING
