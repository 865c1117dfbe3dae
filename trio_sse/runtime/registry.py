"""The registry: which streams are live, whose they are, and which events each is offered.

It holds the connections by id (oldest first), the per-client counts the limits are
judged on, and the subscription index the flusher asks for matching connections. A
connection is in the index while it should be offered events: it leaves it as soon as
it is closing (overflow, memory pressure, shutdown), before it leaves the registry, so a
closing stream costs the publisher nothing more.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import trio

from ..core.matching import Subscription, SubscriptionIndex
from .connection import ClientInfo, Connection

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["Registration", "Registry", "UnknownConnection"]


class UnknownConnection(LookupError):
    """No live connection has this id."""


class Registry:
    """Live connections, their per-client counts and the subscription index."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.per_client: Counter[str] = Counter()
        self.index: SubscriptionIndex[Connection] = SubscriptionIndex()
        #: True once shutdown began: no stream is admitted any more.
        self.closing = False
        #: Set once shutdown began and no connection is left.
        self.all_gone = trio.Event()

    def add(self, connection: Connection, key: str) -> None:
        """Register ``connection`` for client ``key``; it is offered events from now on."""
        self.connections[connection.id] = connection
        self.per_client[key] += 1
        self.index.add(connection, connection.subscription)

    def remove(self, connection: Connection, key: str) -> None:
        """Unregister ``connection`` (its stream has ended)."""
        self.index.remove(connection)
        del self.connections[connection.id]
        self.per_client[key] -= 1
        if not self.per_client[key]:
            del self.per_client[key]
        if self.closing and not self.connections:
            self.all_gone.set()

    def resubscribe(self, connection: Connection, subscription: Subscription) -> None:
        """Offer ``connection`` the events ``subscription`` matches, instead of its old ones."""
        self.index.add(connection, subscription)

    def get(self, connection_id: str) -> Connection:
        """The live connection ``connection_id``; raises :class:`UnknownConnection`."""
        try:
            return self.connections[connection_id]
        except KeyError:
            raise UnknownConnection(connection_id) from None

    def close(self, connection: Connection, reason: str) -> None:
        """Out of the index at once, then closed with ``reason`` (its write is cut short)."""
        self.index.remove(connection)
        connection.close(reason)


class Registration:
    """:meth:`Hub.connect`'s context manager: registers on entry, unregisters on exit, however
    the block ends (normally, by an exception or by cancellation).

    A class with slots rather than ``@asynccontextmanager``: that one's generator frame and
    keyword dict lived as long as the stream, for every open stream.
    """

    __slots__ = ("_args", "_connection", "_hub", "_key")

    def __init__(
        self,
        hub: Hub,
        subscription: Subscription,
        last_event_id: str | None,
        client: ClientInfo,
        expires_at: float | None,
    ) -> None:
        self._hub = hub
        self._args: tuple[Subscription, str | None, ClientInfo, float | None] | None = (
            subscription,
            last_event_id,
            client,
            expires_at,
        )
        self._connection: Connection | None = None
        self._key = ""

    async def __aenter__(self) -> Connection:
        args, self._args = self._args, None
        if args is None:
            raise RuntimeError("a Registration is entered once")
        # A shared backend's reader reads once per fan-out round: what was published
        # before this stream is read first, so it goes to the replay, not live.
        await self._hub.backend.catch_up()
        self._connection, self._key = self._hub._register(*args)
        return self._connection

    async def __aexit__(self, *exc_info: object) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._hub._unregister(connection, self._key)
