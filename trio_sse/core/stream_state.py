"""The decisions of one SSE stream as a sans-IO state machine: who writes, what is queued,
what was already written, and whether the response may still end cleanly.

Modelled on h11's ``_state.py`` / ``_connection.py``: the driver (``runtime/driver.py``,
``runtime/connection.py``) owns tasks, deadlines and the socket, and tells this object
what happened (``preamble_written``, ``woke``, ``backlogged``, ``close_requested`` ...);
this object answers with the stream's next state, and never awaits, sleeps or touches
I/O. It must never import trio, a transport, or anything from ``runtime`` or ``http``.

States (:class:`StreamState`) and their transitions — ``docs/architecture.md`` draws
them; :data:`TRANSITIONS` is the table, every pair not in it is a bug in the driver
(:class:`StreamStateError`, as h11's ``LocalProtocolError``):

``PREAMBLE``
    Registered; the task writes ``connected`` and the replay. Live events are queued.
``WRITING``
    The task writes: events are queued for it. A stream whose transport has no direct
    writer stays here while its task sleeps on the queue; a direct stream comes back
    here whenever its task wakes (a heartbeat, a filter change, a drained backlog).
``IDLE``
    A direct stream whose task sleeps on an empty queue: the hub's flusher writes each
    round straight to the socket (:meth:`StreamMachine.take`).
``BACKLOGGED``
    A direct write left bytes the kernel had not taken: events queue behind them until
    the task has drained them.
``ENDING``
    A graceful end (hub shutdown, token expiry): the write under way completes, nothing
    more is queued or written.
``CLOSED``
    Over; ``close_reason`` says why. Every later event is late news and changes nothing.

"A write left half done cannot finish cleanly" is :meth:`StreamMachine.send_failed`,
called by the driver when it aborts a write or ends with a direct backlog, exactly as
h11's ``send_failed()``: afterwards :attr:`StreamMachine.can_finish` is false for good.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, Protocol

from .events import Event, EventOrder, parse_event_id

__all__ = [
    "BACKLOG",
    "CONTROL_RESERVE",
    "TRANSITIONS",
    "UNCLEAN_REASONS",
    "CloseReason",
    "ItemQueue",
    "StreamMachine",
    "StreamState",
    "StreamStateError",
]

#: Queue slots kept for control messages (filter changes) on top of ``queue_size`` events.
CONTROL_RESERVE = 8


class StreamState(enum.Enum):
    """Where a stream is in its life; the module docstring says what each one means."""

    PREAMBLE = "preamble"
    WRITING = "writing"
    IDLE = "idle"
    BACKLOGGED = "backlogged"
    ENDING = "ending"
    CLOSED = "closed"


class CloseReason(enum.StrEnum):
    """Why a stream ended: the keys of ``disconnects`` in ``/sse/stats`` (never rename one)."""

    #: The client went away (``wait_closed`` returned, or a write failed).
    CLIENT_CLOSED = "client_closed"
    #: A write did not complete within ``send_timeout``.
    SEND_TIMEOUT = "send_timeout"
    #: Its queue overflowed under the ``disconnect`` policy.
    SLOW_CONSUMER = "slow_consumer"
    #: The hub shut down (gracefully, or forced after ``shutdown_grace``).
    SERVER_SHUTDOWN = "server_shutdown"
    #: Shed to bring the process back under ``memory_limit``.
    MEMORY_PRESSURE = "memory_pressure"
    #: The caller's token reached its ``exp``.
    TOKEN_EXPIRED = "token_expired"
    #: A replay was asked and the backend could not answer: the client retries later.
    BACKEND_UNAVAILABLE = "backend_unavailable"
    #: A shared backend may have skipped events and the stream had no control slot left
    #: for the ``stream_reset``: it reconnects and gets a replay or a reset then.
    HISTORY_GAP = "history_gap"


#: Ends after which the client is not reading (or is gone): no final chunk may follow.
UNCLEAN_REASONS: Final = frozenset({CloseReason.CLIENT_CLOSED, CloseReason.SEND_TIMEOUT, CloseReason.SLOW_CONSUMER})


class StreamStateError(RuntimeError):
    """The driver reported an event the current state cannot have (a bug, never the client's doing)."""


P, W, I, B, E, C = (  # noqa: E741 - one letter per state keeps the table readable
    StreamState.PREAMBLE,
    StreamState.WRITING,
    StreamState.IDLE,
    StreamState.BACKLOGGED,
    StreamState.ENDING,
    StreamState.CLOSED,
)

#: (state, event) -> next state. ``ENDING`` absorbs the task's own progress (the end
#: wins); ``CLOSED`` absorbs everything. Any pair missing is a :class:`StreamStateError`.
TRANSITIONS: Final[dict[tuple[StreamState, str], StreamState]] = {
    # the task has written the preamble and the initial replay
    (P, "preamble_written"): W,
    (E, "preamble_written"): E,
    (C, "preamble_written"): C,
    # the task is about to sleep on an empty queue, with a direct writer
    (W, "idle"): I,
    (E, "idle"): E,
    (C, "idle"): C,
    # the task woke (an item, or its heartbeat deadline)
    (W, "woke"): W,
    (I, "woke"): W,
    (B, "woke"): B,
    (E, "woke"): E,
    (C, "woke"): C,
    # a control message was queued: later events must follow its announcement
    (P, "control"): P,
    (W, "control"): W,
    (I, "control"): W,
    (B, "control"): B,
    # the flusher's direct write left a backlog
    (I, "backlogged"): B,
    (C, "backlogged"): C,
    # the task drained that backlog
    (B, "drained"): W,
    (E, "drained"): E,
    (C, "drained"): C,
    # a graceful end was asked
    **{(s, "end"): E for s in (P, W, I, B, E)},
    (C, "end"): C,
    # closed now, from anywhere; and the task returned
    **{(s, "close"): C for s in StreamState},
    **{(s, "finished"): C for s in StreamState},
}


class ItemQueue(Protocol):
    """Where a stream's items go: a trio memory channel's send side, in the driver."""

    def send_nowait(self, item: Any, /) -> None: ...


class _NoQueue:
    """The queue of a stream that is never offered events (the stats stream)."""

    def send_nowait(self, item: Any, /) -> None:
        raise StreamStateError("this stream has no queue")


#: Queued by :meth:`StreamMachine.backlogged`: the task must drain the direct writer first.
BACKLOG: Final[Any] = object()

_IDLE, _ENDING, _CLOSED = I, E, C


class StreamMachine:
    """One stream's state, queue accounting and de-duplication by event order.

    The driver subclasses it (a stream stays one object: the flusher's per-round call
    reads ``state`` with one attribute load, and no second object per stream costs
    memory) and provides :meth:`_write_direct`. Items put on ``queue``: event lists
    (counted in ``pending``), control messages (counted in ``pending_controls``) and
    :data:`BACKLOG`.

    ``sending`` is set by the driver around each write that only an abort can free (a
    plain attribute rather than a call: it is set twice per write).
    """

    __slots__ = (
        "_queue",
        "events_sent",
        "first_order",
        "last_event_id",
        "last_order",
        "last_write",
        "pending",
        "pending_controls",
        "queue_size",
        "reason",
        "sending",
        "state",
        "write_failed",
    )

    def __init__(
        self, queue_size: int = 0, queue: ItemQueue | None = None, *, last_event_id: str | None = None, now: float = 0.0
    ) -> None:
        self.state = StreamState.PREAMBLE
        self.reason: CloseReason | None = None
        #: A write was cut short (h11's ``send_failed``): no final chunk can follow.
        self.write_failed = False
        self.sending = False
        self.queue_size = queue_size
        self._queue: ItemQueue = _NoQueue() if queue is None else queue
        self.pending = 0
        self.pending_controls = 0
        #: Order of the newest event written or queued for writing: anything at or
        #: before it is a duplicate (a replay, or the registration point).
        self.last_order: EventOrder = (-1, -1)
        #: Order of the oldest event written (for a re-subscribe replay's de-duplication).
        self.first_order: EventOrder | None = None
        #: Id of the last event written: the client's resume point.
        self.last_event_id = last_event_id
        self.events_sent = 0
        #: When the stream last wrote anything (the heartbeat is due ``interval`` later).
        self.last_write = now

    # -- the state ------------------------------------------------------------------

    def _to(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise StreamStateError(f"{event!r} cannot happen in state {self.state.name}") from None

    @property
    def close_reason(self) -> str | None:
        """Why the stream ended, as ``/sse/stats`` counts it (``None`` while it has not)."""
        reason = self.reason
        return None if reason is None else reason.value

    @property
    def direct_ready(self) -> bool:
        """True while the flusher may write straight to the socket (state ``IDLE``)."""
        return self.state is _IDLE

    @property
    def can_finish(self) -> bool:
        """Whether the response may still be ended with a final chunk.

        Not after a write was cut short (a half-written chunk cannot be followed by
        the final one), nor after an end where the client was not reading: a final
        chunk would only hold up the shutdown that forced the close.
        """
        return not self.write_failed and self.reason not in UNCLEAN_REASONS

    def preamble_written(self) -> None:
        """``PREAMBLE`` -> ``WRITING``: the preamble and the initial replay are out."""
        self._to("preamble_written")

    def idle(self) -> bool:
        """The task (with a direct writer) is about to sleep on its queue.

        ``WRITING`` -> ``IDLE`` when nothing is queued; True when direct writes are open.
        """
        if self.sending:
            raise StreamStateError("idle while a write is under way")
        if self.state is W and (self.pending or self.pending_controls):
            return False
        self._to("idle")
        return self.state is _IDLE

    def woke(self) -> None:
        """The task woke up: from ``IDLE`` the task writes again (``WRITING``)."""
        self._to("woke")

    def backlogged(self) -> None:
        """``IDLE`` -> ``BACKLOGGED``: the flusher's write left bytes; the task must drain them."""
        self._to("backlogged")
        if self.state is B:
            self._queue.send_nowait(BACKLOG)

    def drained(self) -> None:
        """``BACKLOGGED`` -> ``WRITING``: the task drained the direct writer's backlog."""
        self._to("drained")

    def end_requested(self, reason: CloseReason | str) -> None:
        """A graceful end (first reason wins): -> ``ENDING``; the write under way completes."""
        self._to("end")
        if self.reason is None:
            self.reason = CloseReason(reason)

    def close_requested(self, reason: CloseReason | str) -> bool:
        """End now (first reason wins): -> ``CLOSED``.

        True when a write is under way: the driver must abort it, and it is recorded
        as cut short.
        """
        self._to("close")
        if self.reason is None:
            self.reason = CloseReason(reason)
        if self.sending:
            self.write_failed = True
            return True
        return False

    def finished(self, reason: CloseReason | str = CloseReason.SERVER_SHUTDOWN) -> None:
        """The task has returned: -> ``CLOSED``.

        ``reason`` applies if none was given before: the default is a stream the server's
        own shutdown deadline cut, since nothing else stops the task without a reason.
        """
        self._to("finished")
        if self.reason is None:
            self.reason = CloseReason(reason)

    def send_failed(self) -> None:
        """A write was left half done (aborted, or a direct backlog at the end): no clean finish."""
        self.write_failed = True

    # -- the queue and de-duplication, called by the hub without waiting -------------

    def start_after(self, order: EventOrder) -> None:
        """Live delivery starts after ``order`` (set once, at registration)."""
        self.last_order = order

    def take(self, events: list[Event], payload: bytes, now: float) -> int:
        """Accept a round of matching events (oldest first) without waiting.

        ``payload`` is the events' wire bytes joined. Events at or before ``last_order``
        are dropped as duplicates. In ``IDLE`` they are written at once (the driver's
        :meth:`_write_direct`), else queued. Returns how many did not fit in the queue
        (the hub applies the overflow policy to those). ``events`` is never modified.

        ``ENDING`` and ``CLOSED`` are not checked here, to keep this call (once per
        connection per flusher round) as cheap as it can be: the hub takes a stream out
        of its index when it ends it, and what is queued for a stream that is closed is
        never written (its client resumes by id).
        """
        if events[0].order <= self.last_order:  # a replay already wrote some of them
            last = self.last_order
            events = [e for e in events if e.order > last]
            if not events:
                return 0
            payload = b"".join(e.wire for e in events)
        if self.state is _IDLE:
            self._write_direct(events, payload, now)
            return 0
        room = self.queue_size - self.pending
        if room <= 0:
            return len(events)
        if room < len(events):
            self._queue.send_nowait(events[:room])
            self.pending += room
            return len(events) - room
        self._queue.send_nowait(events)
        self.pending += len(events)
        return 0

    def _write_direct(self, events: list[Event], payload: bytes, now: float) -> None:
        """Write ``payload`` to the socket now (the driver's); :meth:`sent` it, :meth:`backlogged` if short.

        Only reached in IDLE, and a driver calls :meth:`idle` only when it has a direct
        writer, so every driver that can get here overrides this. A stream without one
        (the stats stream, a plain ASGI transport) never does.
        """
        raise NotImplementedError(f"{type(self).__name__} went IDLE without a direct writer to write with")

    def push_control(self, message: object) -> bool:
        """Queue a control message in its reserved slots; False when they are all taken
        or the stream is ending. Direct writes stop: later events follow its announcement."""
        if self.state is _ENDING or self.state is _CLOSED or self.pending_controls >= CONTROL_RESERVE:
            return False
        self._to("control")
        self._queue.send_nowait(message)
        self.pending_controls += 1
        return True

    def control_taken(self) -> None:
        """The task took a control message off the queue."""
        self.pending_controls -= 1

    def collect(self, events: list[Event], batch: list[Event]) -> int:
        """The task took ``events`` off the queue: append the ones not yet written to
        ``batch`` (advancing ``last_order``) and return their size in bytes."""
        self.pending -= len(events)
        last = self.last_order
        size = 0
        for event in events:
            if event.order > last:  # skip what a replay already sent
                last = event.order
                batch.append(event)
                size += len(event.wire)
        self.last_order = last
        return size

    def sent(self, events: list[Event], now: float) -> int:
        """Account for ``events`` (non-empty) just written, directly or by the task; returns how many."""
        count = len(events)
        self.events_sent += count
        last = events[-1]
        self.last_event_id = last.id
        if last.order > self.last_order:
            self.last_order = last.order
        first = events[0].order
        if self.first_order is None or first < self.first_order:
            self.first_order = first
        self.last_write = now
        return count

    def replay_floor(self, last_event_id: str) -> EventOrder:
        """Where a replay after ``last_event_id`` leaves ``last_order`` if it writes nothing newer."""
        return max(self.last_order, parse_event_id(last_event_id) or self.last_order)

    def replayed(self, newest: EventOrder) -> None:
        """A replay was written up to ``newest``: live events at or before it are duplicates."""
        if newest > self.last_order:
            self.last_order = newest

    def already_sent(self, previous: Callable[[Event], bool]) -> Callable[[Event], bool]:
        """For a re-subscribe replay: whether this stream already wrote ``event`` — in the
        range it has delivered, and matched by the ``previous`` filters. Events only the
        new filters match are sent even if older (the client asked to go back)."""
        first, upto = self.first_order, self.last_order

        def already(event: Event) -> bool:
            return first is not None and first <= event.order <= upto and previous(event)

        return already
