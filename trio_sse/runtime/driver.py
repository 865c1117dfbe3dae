"""The trio side of a stream: its task's scopes, how it learns the client left, and the
deadlines of the writes it times.

Shared by the hub's connections (``runtime/connection.py``) and the stats stream
(``http/stats_stream.py``) so that both end the same way. The decisions are
:class:`~trio_sse.core.stream_state.StreamMachine`'s; this module owns only what needs
trio: a run scope, and three deadlines —

* ``send_timeout`` on every write through the transport. When it fires the transport
  is aborted, because hypercorn shields its socket writes from cancellation;
* the token's end (``expires_at``) on the writing only, never on what times the writes,
  so a write that ignores cancellation is still aborted at ``send_timeout``;
* the heartbeat (or tick) wait: a scope the subclass opens as ``_wait_scope``, which
  a graceful :meth:`StreamDriver.end` cancels.

A stream is **one task** when it can be (:meth:`StreamDriver.drive`): the server under
the transport tells it when the client leaves (:meth:`StreamDriver.client_gone`, called
from the task that reads the connection anyway), and its write deadlines are entries of
the hub's :class:`WriteDeadlines` (one task for every stream). Otherwise — a server that
cannot tell (HTTP/2, the hypercorn CLI's worker, the test client), or no
:class:`WriteDeadlines` running — it runs a watchdog task beside its own, as every
stream once did: the watchdog waits for the client to leave and carries the write
deadline on its own scope.

It never imports anything from ``http``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import trio

from ..core.stream_state import CloseReason, ItemQueue, StreamMachine

__all__ = ["StreamDriver", "Transport", "WriteDeadlines"]

_T = TypeVar("_T", bound="Transport")


class Transport(Protocol):
    """What a stream needs from the HTTP layer (or a test).

    A transport may also offer ``watch_client(driver) -> bool``: when it returns True, the
    server calls ``driver.client_gone()`` when the client leaves (``watch_client(None)``
    stops that), and no task of the stream needs to wait in :meth:`wait_closed`.
    """

    async def write(self, data: bytes) -> None:
        """Send bytes to the client; may block while the client is slow."""
        ...

    async def wait_closed(self) -> None:
        """Return when the client has gone away."""
        ...

    def abort(self) -> None:
        """Tear the underlying connection down so that a blocked ``write`` returns."""
        ...


class WriteDeadlines:
    """The ``send_timeout`` of the transport writes of every one-task stream of a hub: one
    task for all of them, instead of a watchdog task per stream.

    A write is armed with its deadline before it starts and disarmed when it returns;
    :meth:`run` sleeps until the earliest armed deadline and, when one passes, calls the
    stream's ``_timed_out`` (which aborts the write). Arming and disarming are dict
    operations, never an await. Edges: a stream whose write is disarmed before its deadline
    is never touched; while :meth:`run` is not running (``running`` is False) a stream
    does not rely on it and keeps its own watchdog.
    """

    __slots__ = ("_armed", "_scope")

    def __init__(self) -> None:
        self._armed: dict[StreamDriver, float] = {}
        self._scope: trio.CancelScope | None = None

    @property
    def running(self) -> bool:
        return self._scope is not None

    def arm(self, driver: StreamDriver, deadline: float) -> None:
        """``driver``'s write must be done by ``deadline`` (one write at a time per stream)."""
        self._armed[driver] = deadline
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def disarm(self, driver: StreamDriver) -> None:
        """``driver``'s write returned in time (nothing if it was not armed)."""
        self._armed.pop(driver, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Time the armed writes for as long as the hub lives."""
        try:
            while True:
                with trio.CancelScope(deadline=min(self._armed.values(), default=math.inf)) as scope:
                    if self._scope is None:
                        self._scope = scope
                        task_status.started()
                    self._scope = scope
                    await trio.sleep_forever()
                now = trio.current_time()
                late = [driver for driver, deadline in self._armed.items() if deadline <= now]
                for driver in late:
                    del self._armed[driver]
                    driver._timed_out()
        finally:
            self._scope = None


def _watch_client(transport: object, driver: StreamDriver | None) -> bool:
    """``transport.watch_client(driver)`` if it has one (looked up when called: a bound method
    kept in ``drive``'s frame would live as long as the stream)."""
    watch: Callable[[Any], bool] | None = getattr(transport, "watch_client", None)
    return watch is not None and watch(driver)


class StreamDriver(StreamMachine):
    """A stream's task: runs a body under the token's deadline, with its writes timed and
    the client's leaving noticed (by the server, or by a watchdog task: see the module)."""

    __slots__ = (
        "_deadlines",
        "_run_scope",
        "_transport",
        "_wait_scope",
        "_watch_scope",
        "expires_at",
        "send_timeout",
    )

    def __init__(
        self,
        send_timeout: float,
        queue_size: int = 0,
        queue: ItemQueue | None = None,
        last_event_id: str | None = None,
        deadlines: WriteDeadlines | None = None,
    ) -> None:
        super().__init__(queue_size, queue, last_event_id=last_event_id, now=trio.current_time())
        self.send_timeout = send_timeout
        #: Wall-clock end of the caller's token: the stream ends then (``token_expired``).
        self.expires_at: float | None = None
        self._transport: Transport | None = None
        self._run_scope: trio.CancelScope | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None
        #: The hub's write deadlines, with which the stream can be one task.
        self._deadlines = deadlines

    def close(self, reason: CloseReason | str) -> None:
        """End the stream now (first reason wins); a blocked write is aborted."""
        if self.close_requested(reason) and self._transport is not None:
            self._transport.abort()
        if self._run_scope is not None:
            self._run_scope.cancel()

    def end(self, reason: CloseReason | str) -> None:
        """End the stream gracefully: the write under way completes, then the body returns."""
        self.end_requested(reason)
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def client_gone(self) -> None:
        """The server noticed the client leave (called from its reading task): close now."""
        self.close(CloseReason.CLIENT_CLOSED)

    async def drive(self, transport: _T, body: Callable[[_T], Awaitable[None]]) -> None:
        """Run ``body`` until the stream ends; returns normally in every case.

        Afterwards the state is ``CLOSED`` and ``close_reason`` says why: the reason
        given to :meth:`close` / :meth:`end`, ``token_expired``, ``client_closed`` when the
        transport failed under us, else ``server_shutdown`` (cancelled from outside).
        """
        self._transport = transport
        deadlines = self._deadlines
        one_task = deadlines is not None and deadlines.running and _watch_client(transport, self)
        try:
            if self.reason is not None:  # ended before it started
                return
            expires_at = self.expires_at
            expiry = math.inf if expires_at is None else trio.current_time() + (expires_at - time.time())
            if one_task:
                # Nothing times the writes from inside this scope, so the token's deadline
                # can be the run scope's own: one scope, no nursery, no second task.
                with trio.CancelScope(deadline=expiry) as self._run_scope:
                    await body(transport)
                if self._run_scope.cancelled_caught and self.reason is None:
                    self.finished(CloseReason.TOKEN_EXPIRED)  # close() gives a reason first
                return
            with trio.CancelScope() as self._run_scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._watch, transport)
                    try:
                        with trio.CancelScope(deadline=expiry) as writing:
                            await body(transport)
                    finally:
                        nursery.cancel_scope.cancel()
                if writing.cancelled_caught:
                    self.finished(CloseReason.TOKEN_EXPIRED)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.finished(CloseReason.CLIENT_CLOSED)  # the transport failed under us
        finally:
            if one_task:
                _watch_client(transport, None)
            self.finished()

    async def _watch(self, transport: Transport, *, task_status: trio.TaskStatus[None]) -> None:
        """The watchdog of a stream that is not one task: notice the client leaving, and
        writes that miss their deadline."""
        with trio.CancelScope() as scope:
            self._watch_scope = scope
            task_status.started()
            await transport.wait_closed()
            self.close(CloseReason.CLIENT_CLOSED)
            return
        if scope.cancelled_caught:  # our own deadline fired: a write is stuck
            self._timed_out()

    def _timed_out(self) -> None:
        """A write missed ``send_timeout``: close the stream, aborting the write."""
        self.close(CloseReason.SEND_TIMEOUT)

    async def write(self, transport: Transport, data: bytes) -> None:
        """One write through the transport, under ``send_timeout``."""
        deadline = trio.current_time() + self.send_timeout
        watch = self._watch_scope
        deadlines = self._deadlines if watch is None else None
        if deadlines is not None:
            deadlines.arm(self, deadline)
        else:
            assert watch is not None, "a write outside drive()"
            watch.deadline = deadline
        self.sending = True
        try:
            await transport.write(data)
        finally:
            self.sending = False
            if deadlines is not None:
                deadlines.disarm(self)
            elif watch is not None:
                watch.deadline = math.inf
