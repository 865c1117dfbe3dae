"""Shutdown: refuse new streams, let live ones finish their write, then force the rest.

Graceful first: each stream finishes the write under way and ends (reason
``server_shutdown``); after ``shutdown_grace`` the ones still there are closed by
force; and :func:`close_all` returns only once none is registered, so no stream
outlives its hub.
"""

from __future__ import annotations

import trio

from .registry import Registry

__all__ = ["begin_shutdown", "close_all"]


def begin_shutdown(registry: Registry, shutting_down: trio.Event) -> None:
    """Refuse new streams and end every live one gracefully (each finishes its write)."""
    registry.closing = True
    shutting_down.set()
    if not registry.connections:
        registry.all_gone.set()
    for connection in list(registry.connections.values()):
        # It only finishes its write under way: offering it more events would only fill
        # its queue, and an overflow would abort that write (slow_consumer) after all.
        registry.index.remove(connection)
        connection.end("server_shutdown")


async def close_all(registry: Registry, grace: float, force_wait: float) -> None:
    """After :func:`begin_shutdown`: wait ``grace`` seconds, then close what is left by force.

    Returns once no connection is registered, or ``force_wait`` seconds after the force
    (a stream stuck in a write its transport cannot abort).
    """
    with trio.move_on_after(grace):
        await registry.all_gone.wait()
    for connection in list(registry.connections.values()):
        connection.close("server_shutdown")
    with trio.move_on_after(force_wait):
        await registry.all_gone.wait()
