"""The trio side of a stream: its task's scopes, the watchdog, and the writes it times.

Shared by the hub's connections (``runtime/connection.py``) and the stats stream
(``http/stats_stream.py``) so that both end the same way. The decisions are
:class:`~trio_sse.core.stream_state.StreamMachine`'s; this module owns only what needs
trio: a run scope, one watchdog task, and three deadlines —

* ``send_timeout`` on every write through the transport: the watchdog's own scope,
  pushed forward at each write. When it fires the transport is aborted, because
  hypercorn shields its socket writes from cancellation;
* the token's end (``expires_at``) on the writing only, never on the watchdog, so a
  write that ignores cancellation is still aborted at ``send_timeout``;
* the heartbeat (or tick) wait: a scope the subclass opens as ``_wait_scope``, which
  a graceful :meth:`StreamDriver.end` cancels.

It never imports anything from ``http``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import trio

from ..core.stream_state import CloseReason, ItemQueue, StreamMachine

__all__ = ["StreamDriver", "Transport"]

_T = TypeVar("_T", bound="Transport")


class Transport(Protocol):
    """What a stream needs from the HTTP layer (or a test)."""

    async def write(self, data: bytes) -> None:
        """Send bytes to the client; may block while the client is slow."""
        ...

    async def wait_closed(self) -> None:
        """Return when the client has gone away."""
        ...

    def abort(self) -> None:
        """Tear the underlying connection down so that a blocked ``write`` returns."""
        ...


class StreamDriver(StreamMachine):
    """A stream's task: runs a body under the watchdog and the token's deadline."""

    __slots__ = ("_run_scope", "_transport", "_wait_scope", "_watch_scope", "expires_at", "send_timeout")

    def __init__(
        self, send_timeout: float, queue_size: int = 0, queue: ItemQueue | None = None, last_event_id: str | None = None
    ) -> None:
        super().__init__(queue_size, queue, last_event_id=last_event_id, now=trio.current_time())
        self.send_timeout = send_timeout
        #: Wall-clock end of the caller's token: the stream ends then (``token_expired``).
        self.expires_at: float | None = None
        self._transport: Transport | None = None
        self._run_scope: trio.CancelScope | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._wait_scope: trio.CancelScope | None = None

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

    async def drive(self, transport: _T, body: Callable[[_T], Awaitable[None]]) -> None:
        """Run ``body`` until the stream ends; returns normally in every case.

        Afterwards the state is ``CLOSED`` and ``close_reason`` says why: the reason
        given to :meth:`close` / :meth:`end`, ``token_expired``, ``client_closed`` when the
        transport failed under us, else ``server_shutdown`` (cancelled from outside).
        """
        self._transport = transport
        try:
            with trio.CancelScope() as self._run_scope:
                if self.reason is None:  # not ended before it started
                    expires_at = self.expires_at
                    expiry = math.inf if expires_at is None else trio.current_time() + (expires_at - time.time())
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
            self.finished()

    async def _watch(self, transport: Transport, *, task_status: trio.TaskStatus[None]) -> None:
        """Notice the client leaving, and writes that miss their deadline."""
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
        watch = self._watch_scope
        assert watch is not None
        watch.deadline = trio.current_time() + self.send_timeout
        self.sending = True
        try:
            await transport.write(data)
        finally:
            self.sending = False
            watch.deadline = math.inf
