"""Test doubles of a stream's transport shared by the runtime and HTTP tests."""

from __future__ import annotations

import math

import trio

__all__ = ["STUCK_FOREVER", "ShieldedTransport"]

#: A stuck write that nothing frees within this long fails the test instead of hanging it.
STUCK_FOREVER = 1000


class ShieldedTransport:
    """Like hypercorn: a blocked write ignores cancellation; only an abort (then it raises)
    or :meth:`unstick` (the client reads again) makes it return. ``tests/http/
    test_transport_conformance.py`` runs the same check on it as on real hypercorn."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.stuck = False
        self.aborted_at = math.inf
        self._unblock = trio.Event()
        self.blocked = trio.Event()
        self.closed = trio.Event()

    async def write(self, data: bytes) -> None:
        if self.stuck:
            self.blocked.set()
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + STUCK_FOREVER
                await self._unblock.wait()
            if scope.cancelled_caught:
                raise AssertionError("a write stuck in a shielded send was never aborted")
            if self.aborted_at < math.inf:
                raise trio.BrokenResourceError("socket closed under the write")
        self.writes.append(data)

    def unstick(self) -> None:
        """The client reads again: the blocked write completes."""
        self.stuck = False
        self._unblock.set()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def abort(self) -> None:
        self.aborted_at = trio.current_time()
        self._unblock.set()
