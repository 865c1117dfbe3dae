"""Admission: whether a new stream or a publish may start, and why not.

A refusal carries a :class:`Refusal` reason (its value is the machine-readable code
users see, and the key of ``rejected_by_reason``), a human message, and ``wait``, the
seconds until a retry can succeed when the runtime knows it (a rate limit's bucket).
What a refusal becomes on the wire — status, ``Retry-After`` — is the HTTP layer's
business, decided in one table there (:mod:`trio_sse.http.errors`); nothing here may
name a status.

Checks are plain and synchronous: nothing is registered or charged when one refuses.
"""

from __future__ import annotations

import enum

import trio

from ..core.ratelimit import RateLimiter
from ..settings import Settings
from .connection import ClientInfo
from .stats import HubStats

__all__ = ["Admission", "ConnectionRefused", "PublishRateExceeded", "Refusal", "Refused", "client_key"]


class Refusal(enum.StrEnum):
    """Why a stream or a publish was refused; the value is the error code users see."""

    SERVER_SHUTDOWN = "server_shutdown"
    MEMORY_PRESSURE = "memory_pressure"
    CONNECTION_LIMIT = "connection_limit"
    CLIENT_CONNECTION_LIMIT = "client_connection_limit"
    CONNECTION_RATE = "connection_rate"
    PUBLISH_RATE = "publish_rate"


class Refused(Exception):
    """A request was refused before anything changed; ``reason`` says why."""

    def __init__(self, reason: Refusal, message: str, wait: float = 0.0) -> None:
        super().__init__(message)
        self.reason = reason
        #: Seconds until a retry can succeed, when known (a rate limit); else 0.
        self.wait = wait


class ConnectionRefused(Refused):
    """A new stream was refused before it started (limits, memory pressure or shutdown)."""


class PublishRateExceeded(Refused):
    """A publisher went over ``publish_rate``; nothing was published or charged."""

    def __init__(self, rate: int, wait: float) -> None:
        super().__init__(Refusal.PUBLISH_RATE, f"at most {rate} events per second per publisher", wait)


def client_key(client: ClientInfo) -> str:
    """Whom the per-client limits count against: the token subject, else the network address.

    Behind a proxy every client has the proxy's address; the subject still tells users apart.
    """
    if client.owner is not None:
        return "sub:" + client.owner
    return "addr:" + (client.address or "")


class Admission:
    """The limits a new stream and a publish are held to, and the refusal counters."""

    def __init__(self, settings: Settings, stats: HubStats) -> None:
        self._settings = settings
        self._stats = stats
        self._connection_rate = RateLimiter(settings.connection_rate, 60.0)
        self._publish_rate = RateLimiter(settings.publish_rate, 1.0)

    def admit_stream(self, key: str, *, closing: bool, memory_over: bool, live: int, of_client: int) -> None:
        """Raise :class:`ConnectionRefused` if a stream of client ``key`` may not open now.

        Refuses in this order: shutdown, memory pressure, ``connection_limit`` (``live``
        streams), ``client_connection_limit`` (``of_client`` streams), ``connection_rate``
        (the client's bucket; charged only when every other check passed).
        """
        settings = self._settings
        if closing:
            self._refuse(Refusal.SERVER_SHUTDOWN, "the server is shutting down")
        if memory_over:
            self._refuse(Refusal.MEMORY_PRESSURE, f"memory use is above memory_limit ({settings.memory_limit} bytes)")
        if live >= settings.connection_limit:
            self._refuse(Refusal.CONNECTION_LIMIT, f"connection limit ({settings.connection_limit}) reached")
        if of_client >= settings.client_connection_limit:
            message = f"at most {settings.client_connection_limit} concurrent streams per client"
            self._refuse(Refusal.CLIENT_CONNECTION_LIMIT, message)
        wait = self._connection_rate.take(key, trio.current_time())
        if wait > 0:
            message = f"at most {settings.connection_rate} new streams per minute per client"
            self._refuse(Refusal.CONNECTION_RATE, message, wait)

    def _refuse(self, reason: Refusal, message: str, wait: float = 0.0) -> None:
        self._stats.rejected[reason.value] += 1  # plain str keys: the counters are served as JSON
        raise ConnectionRefused(reason, message, wait)

    def admit_publish(self, publisher: str, count: int) -> None:
        """Charge ``count`` events to ``publisher``'s ``publish_rate`` budget (events per second).

        Raises :class:`PublishRateExceeded` (nothing charged) when over budget.
        """
        wait = self._publish_rate.take(publisher, trio.current_time(), count)
        if wait > 0:
            self._stats.rejected_publishes[Refusal.PUBLISH_RATE.value] += count
            raise PublishRateExceeded(self._settings.publish_rate, wait)
