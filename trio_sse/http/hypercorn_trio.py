"""Everything of trio_sse that leans on hypercorn's or quart-trio's internals: the trio
worker as trio_sse runs it, and what a stream needs from the server under it.

Why a module of its own: hypercorn promises ASGI, not its objects (``TCPServer``,
``Lifespan``, ``WorkerContext``, ``H2Protocol.stream_buffers``, the ``Updated(idle=...)``
events its protocols send). This module was checked against hypercorn 0.18 and
quart-trio 0.12 (``pyproject.toml`` pins them; ``tests/http/test_transport_conformance.py``
is the check), and no other module of trio_sse may name those internals
(``tests/test_hypercorn_boundary.py``). What it offers:

- :func:`transport_for` (a stream: the socket for direct writes, the HTTP/2 buffer, an
  abort that frees a write stuck in hypercorn's shielded send), :func:`final_send_shielded`
  (the Quart routes) and :func:`lifespan_adopting_idle_timeout` (the app under the
  hypercorn CLI). When one cannot find what it looks for (a hypercorn release renamed
  something), it logs one WARNING naming the hypercorn version, counts the miss
  (:data:`ADAPTER`: ``/sse/stats`` ``transport_adapter``, ``/metrics``) and falls back
  (see :func:`transport_for`); it never fails silently.
- :func:`worker_serve`, ``hypercorn.trio.run.worker_serve`` (same lifespan, same shutdown
  trigger and graceful timeout, same ``task_status.started(binds)``) with two parts
  replaced:

  - the connection, :class:`TCPServer`. hypercorn's keeps a connection whose client sent
    EOF while no request is in progress (a bare connect-then-close, or a keep-alive
    connection after its answer) until its keep-alive timeout: the idle timer is a task
    in the connection's nursery, so the socket sits in CLOSE-WAIT that long. Ours stops
    the idle timer as soon as nothing more can be read, so the connection closes at once
    (a request still in progress has been told ``http.disconnect`` by hypercorn and the
    connection closes when it ends, as before). While a connection has no request in
    progress it is *idle*: it is in an :class:`IdleConnections` registry with a bound,
    and the oldest one is closed when a new one would go over it (as nginx reuses its
    keep-alive connections under pressure). Each connection hands its requests its trio
    stream through the scope's ``state`` (:data:`STREAM_KEY`), which is how
    :func:`transport_for` reaches the socket without hypercorn's objects.
  - the accept loop, :func:`accept_loop`, instead of ``trio.serve_listeners``. It
    closes a connection whose client has already gone at accept, without a task (a
    connect+close flood costs microseconds per connection). At
    ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` ``trio.serve_listeners`` logs a traceback
    and sleeps 0.1 s, over and over. Ours logs one line when the shortage starts and one
    when it ends, closes the oldest idle connections to make room, sheds a pending
    connection through a reserved descriptor when nothing idle is left, and retries every
    :data:`RETRY_INTERVAL`, so the server answers again as soon as descriptors free.

It must never hold a connection whose client has gone, nor let one failed accept end
the server.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import math
import os
import resource
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from random import randint
from typing import Any, Protocol, cast

import attrs
import psutil
import trio
from hypercorn.config import Config, Sockets
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.task_group import _handle
from hypercorn.trio.tcp_server import MAX_RECV
from hypercorn.trio.tcp_server import TCPServer as HypercornTCPServer
from hypercorn.trio.udp_server import UDPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, parse_socket_addr, raise_shutdown, repr_socket_addr
from quart_trio.asgi import TrioASGILifespan

from ..runtime.hub import PROCESS_FIGURES

__all__ = [
    "ADAPTER",
    "CONNECTION_KEY",
    "COUNTERS",
    "STREAM_KEY",
    "AdapterMisses",
    "ClientWatcher",
    "Config",
    "DirectASGI",
    "IdleConnections",
    "ServerCounters",
    "ServerTransport",
    "TCPServer",
    "accept_loop",
    "final_send_shielded",
    "h2_stream_buffer_of",
    "lifespan_adopting_idle_timeout",
    "plain_socket_of",
    "serve",
    "server_figures",
    "shutdown_by_addresses",
    "transport_for",
    "worker_serve",
]

log = logging.getLogger("trio_sse.server")

#: accept() errors that mean "no room now" (descriptors, buffers, memory), not a broken listener.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Errors of one connection that accept() may report; the next one may succeed (trio's list).
IGNORABLE_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)
#: Connections accepted per wake-up of the accept loop before other tasks run.
ACCEPT_BATCH = 64
#: Seconds between two accepts while out of descriptors: short, so the server serves again
#: within this long of a descriptor freeing; an accept that fails costs a few microseconds.
RETRY_INTERVAL = 0.01
#: Seconds without a failed accept after which a shortage of descriptors is over (and logged so).
EPISODE_QUIET = 1.0
#: Idle connections closed per failed accept while out of descriptors: a few at a time, so
#: a short shortage does not empty the keep-alive pool.
EVICT_BATCH = 8


@attrs.define
class ServerCounters:
    """What the connections and accept loops of this process have done (``/sse/stats`` ``server``)."""

    idle_closed_at_limit: int = 0
    idle_closed_for_descriptors: int = 0
    idle_timed_out: int = 0
    #: connections whose client had closed them before they were read: closed at accept
    closed_before_reading: int = 0
    descriptor_episodes: int = 0
    failed_accepts: int = 0
    refused_at_capacity: int = 0


#: Process-wide, like the descriptor table they are about.
COUNTERS = ServerCounters()
#: The idle registries of the workers serving now.
_SERVING: set[IdleConnections] = set()


def server_figures() -> dict[str, Any]:
    """The ``server`` section of ``/sse/stats``: idle connections now, and the counters."""
    registries = list(_SERVING)
    return {
        "idle_connections": sum(len(r) for r in registries),
        "idle_connection_limit": sum(r.limit for r in registries),
        **attrs.asdict(COUNTERS),
    }


class _Closable(Protocol):
    def close_idle(self) -> None: ...


class ClientWatcher(Protocol):
    """A stream told by its connection's reading task when the client leaves."""

    def client_gone(self) -> None: ...


class IdleConnections:
    """The connections with no request in progress, oldest idle first, at most ``limit``.

    :meth:`add` past the limit closes the oldest (not the newest: it is the one least
    likely to carry another request soon). Closing only asks the connection to close
    (its own task does it, at its next turn), so nothing here awaits.
    """

    def __init__(self, limit: int, counters: ServerCounters = COUNTERS) -> None:
        self.limit = limit
        self.counters = counters
        self._idle: dict[_Closable, None] = {}

    def __len__(self) -> int:
        return len(self._idle)

    def __contains__(self, connection: object) -> bool:
        return connection in self._idle

    def add(self, connection: _Closable) -> None:
        """``connection`` is idle from now on (the newest); the oldest is closed if that makes one too many."""
        self._idle.pop(connection, None)
        self._idle[connection] = None
        while len(self._idle) > self.limit:
            self.counters.idle_closed_at_limit += 1
            self._close_oldest()

    def discard(self, connection: _Closable) -> None:
        """``connection`` is busy or gone (nothing if it was not idle)."""
        self._idle.pop(connection, None)

    def close_oldest(self, count: int) -> int:
        """Close up to ``count`` of the oldest idle connections (to free descriptors); how many."""
        closed = 0
        while closed < count and self._idle:
            self._close_oldest()
            closed += 1
        self.counters.idle_closed_for_descriptors += closed
        return closed

    def _close_oldest(self) -> None:
        oldest = next(iter(self._idle))
        del self._idle[oldest]
        oldest.close_idle()


class TCPServer(HypercornTCPServer):
    """hypercorn's connection, closed at once when its client has gone, and idle under a bound.

    *Idle* is hypercorn's own notion: from the accept (the TLS handshake included) to the
    first request, and between the end of an answer and the next request; hypercorn
    reports the changes with ``Updated(idle=...)`` through :meth:`protocol_send`. An
    idle connection is closed after ``config.keep_alive_timeout`` (trio_sse's
    ``idle_timeout``), when the registry needs room, or when the client closes it.

    Each connection gets a state of its own (a copy of the lifespan state) holding its trio
    stream under :data:`STREAM_KEY`: hypercorn copies it into every request's scope, so
    :func:`transport_for` finds the socket without walking hypercorn's objects.

    The read loop tells a stream that asked (:meth:`watch_client`) when the client leaves,
    right after hypercorn's protocol has taken the close. It is leaner than hypercorn's
    where it waits, because a stream's connection waits there for as long as the stream
    lasts, thousands at once: it runs in :meth:`run`'s own frame (no ``_read_data``
    coroutine), without ``fail_after(read_timeout or inf)`` around each read when there is
    no ``read_timeout`` (an entered cancel scope, ~1 KB), and on plain TCP it does the read
    of trio's ``SocketStream.receive_some`` itself — try the non-blocking socket, else
    ``wait_readable`` — instead of through its five nested coroutines and context manager
    (~2 KB while waiting).
    """

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: ConnectionState,
        stream: Any,
        *,
        idle: IdleConnections,
    ) -> None:
        super().__init__(app, config, context, state, stream)
        #: Ours, not hypercorn's ``self.stream``: what every request's scope state carries.
        self._own_stream: trio.abc.Stream = stream
        self.idle = idle
        #: The deadline of the current idle spell; cancelling it closes the connection.
        self._idle_scope: trio.CancelScope | None = None
        #: False once nothing more can be read: the client has gone (or we closed).
        self._reading = True
        #: The stream of the request in progress that asked to be told when the client
        #: leaves (:meth:`ServerTransport.watch_client`): this task reads the socket anyway.
        self.client_watcher: ClientWatcher | None = None

    def close_idle(self) -> None:
        """Close this idle connection now (its idle timer's task closes it at its next turn)."""
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def run(self) -> None:
        """hypercorn's ``TCPServer.run``, with the TLS handshake counted as idle time, and its
        read loop (``_read_data``) inline: see the class docstring."""
        try:
            if isinstance(self.stream, trio.SSLStream):
                if not await self._handshake():
                    return
                alpn_protocol = self.stream.selected_alpn_protocol()
                sock = self.stream.transport_stream.socket
                ssl = True
            else:
                alpn_protocol = "http/1.1"
                sock = self.stream.socket
                ssl = False
            client = parse_socket_addr(sock.family, sock.getpeername())
            if client is not None:  # one host string for every connection from that host (a proxy's)
                client = (sys.intern(client[0]), client[1])
            server = _server_address(sock.family, sock.getsockname())
            async with _TaskGroup() as task_group:
                self._task_group = cast(Any, task_group)  # hypercorn types it as its own class
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    # A state of its own per connection, holding the connection's stream for
                    # transport_for (hypercorn's shares one dict between every connection).
                    ConnectionState({**self.state, STREAM_KEY: self._own_stream, CONNECTION_KEY: self}),
                    ssl,
                    client,
                    server,
                    self.protocol_send,
                    alpn_protocol,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                # hypercorn's _read_data, in this frame (see the class docstring: read loop).
                timeout = self.config.read_timeout
                stream = self.stream
                protocol = self.protocol
                plain = stream.socket if isinstance(stream, trio.SocketStream) and not timeout else None
                while True:
                    if plain is not None:
                        fd = plain.fileno()  # -1 once closed (by an abort): never read a reused descriptor
                        if fd < 0:
                            break
                        try:
                            data = os.read(fd, MAX_RECV)
                        except BlockingIOError:
                            data = None
                        except OSError:  # reset, or closed under us: as trio's BrokenResourceError
                            break
                        if data is None:
                            # Waited for outside the except clause, which would keep the exception
                            # and its traceback alive for as long as the wait (~0.7 KB).
                            try:
                                await trio.lowlevel.wait_readable(plain)
                            except trio.ClosedResourceError:
                                break
                            continue
                        await trio.lowlevel.checkpoint()  # a read that did not wait is still a checkpoint
                    else:
                        try:
                            if timeout:
                                with trio.fail_after(timeout):
                                    data = bytes(await stream.receive_some(MAX_RECV))
                            else:
                                data = bytes(await stream.receive_some(MAX_RECV))
                        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                            break
                    await protocol.handle(RawData(data))
                    if not data:
                        break
                await protocol.handle(Closed())
                # After hypercorn's protocol has taken the close, as the app's ``http.disconnect``
                # always came after it: the stream learns it in the same order as before, one
                # scheduler hop sooner than a watchdog task woken by that message would.
                self._client_left()
                # EOF, a broken connection, or our own close: nothing more will arrive, so no
                # idle timer may hold the connection open. Once any request in progress has
                # ended (hypercorn has already told it http.disconnect) the nursery is empty and
                # the socket is closed.
                self._leave_idle()
                await self.idle_task.stop()
        except OSError:
            pass
        finally:
            self._leave_idle()
            await self._close()

    async def _handshake(self) -> bool:
        """The TLS handshake, within the idle timeout (and hypercorn's handshake timeout); True if done."""
        timeout = min(self.config.ssl_handshake_timeout, self.config.keep_alive_timeout)
        with trio.move_on_after(timeout) as scope:
            self._enter_idle(scope)
            try:
                await self.stream.do_handshake()
            except trio.BrokenResourceError:
                return False
            finally:
                self._leave_idle(scope)
        return not scope.cancelled_caught

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle and self._reading:
                await self.idle_task.restart(self._task_group, self._idle_timeout)
            else:
                self._leave_idle()
                await self.idle_task.stop()
        else:
            await super().protocol_send(event)

    def _client_left(self) -> None:
        """Nothing more can be read: no new watcher is taken, and the current one is told."""
        self._reading = False
        watcher, self.client_watcher = self.client_watcher, None
        if watcher is not None:
            watcher.client_gone()

    def watch_client(self, watcher: ClientWatcher | None) -> bool:
        """Tell ``watcher`` (the request in progress) when the client leaves; False if it
        already has (the request learns it from ``http.disconnect``). None: stop."""
        if watcher is not None and not self._reading:
            return False
        self.client_watcher = watcher
        return True

    async def _idle_timeout(self) -> None:
        with trio.move_on_after(self.config.keep_alive_timeout) as scope:
            self._enter_idle(scope)
            try:
                await self.context.terminated.wait()
            finally:
                self._leave_idle(scope)
        if scope.cancelled_caught and trio.current_time() >= scope.deadline:
            self.idle.counters.idle_timed_out += 1
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    def _enter_idle(self, scope: trio.CancelScope) -> None:
        self._idle_scope = scope
        self.idle.add(self)

    def _leave_idle(self, scope: trio.CancelScope | None = None) -> None:
        """Out of the registry; with ``scope``, only if that is still the current idle spell
        (hypercorn starts the next idle timer before the cancelled one has finished)."""
        if scope is None or self._idle_scope is scope:
            self._idle_scope = None
            self.idle.discard(self)


#: The server's address as hypercorn gives it to each request (``scope["server"]``), one
#: tuple per listening address rather than one per connection.
_SERVER_ADDRESSES: dict[tuple[int, Any], tuple[str, int] | None] = {}


def _server_address(family: int, sockname: Any) -> tuple[str, int] | None:
    key = (family, sockname)
    address = _SERVER_ADDRESSES.get(key)
    if address is None:
        if len(_SERVER_ADDRESSES) >= 64:  # bounded whatever the sockets (many binds, tests)
            _SERVER_ADDRESSES.clear()
        address = _SERVER_ADDRESSES[key] = parse_socket_addr(family, sockname)
    return address


class ReserveDescriptor:
    """One descriptor held back for the moment the process has none left.

    At ``EMFILE`` a pending connection can neither be accepted nor refused, so it waits in
    the backlog while the listener stays readable. Releasing the spare lets one accept
    through, to close that connection at once (the client gets a prompt close instead
    of a hang), then the spare is taken again. (libuv's and libev's trick.)
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self.take()

    def take(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def refuse_one(self, sock: socket.socket) -> bool:
        """Accept the oldest pending connection of ``sock`` (non-blocking) through the spare
        and close it; True if there was one."""
        if self._fd is None:
            self.take()
            return False
        self.close()
        try:
            refused, _ = sock.accept()
        except OSError:  # none pending (BlockingIOError), or still no room
            return False
        else:
            refused.close()
            return True
        finally:
            self.take()


class DescriptorShortage:
    """An "out of descriptors" episode, shared by every accept loop of a server.

    It starts at the first failed accept and ends once no accept has failed for
    :data:`EPISODE_QUIET` seconds, so a server held at its limit by a flood (accepts
    failing, then succeeding as room is made, then failing again) logs one episode:
    one warning when it starts, one line when it ends with what was done meanwhile.
    Serving does not wait for the end: every accept that can succeed does.
    """

    def __init__(self, counters: ServerCounters = COUNTERS) -> None:
        self.counters = counters
        self.started_at: float | None = None
        self.last_failure = -math.inf
        self.failed = self.evicted = self.refused = 0

    @property
    def ends_at(self) -> float:
        """When the episode under way ends if no accept fails before (inf when there is none)."""
        return math.inf if self.started_at is None else self.last_failure + EPISODE_QUIET

    def accept_failed(self, exc: OSError) -> None:
        now = trio.current_time()
        self.counters.failed_accepts += 1
        self.last_failure = now
        if self.started_at is None:
            self.started_at = now
            self.failed = self.evicted = self.refused = 0
            self.counters.descriptor_episodes += 1
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning(
                "accept failed: %s (%s): out of descriptors (RLIMIT_NOFILE %d, hard %d); closing the oldest idle "
                "connections and retrying every %g s",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                exc.strerror,
                soft,
                hard,
                RETRY_INTERVAL,
            )
        self.failed += 1

    def end_if_quiet(self) -> None:
        if self.started_at is None or trio.current_time() < self.ends_at:
            return
        log.warning(
            "accepting again: %d accepts failed in %.2f s out of descriptors, %d idle connections closed, "
            "%d pending connections refused",
            self.failed,
            self.last_failure - self.started_at,
            self.evicted,
            self.refused,
        )
        self.started_at = None


async def accept_loop(
    listener: socket.socket,
    ssl_context: Any,
    handle: Callable[[trio.abc.Stream], Awaitable[None]],
    handler_nursery: trio.Nursery,
    idle: IdleConnections,
    shortage: DescriptorShortage,
    reserve: ReserveDescriptor,
) -> None:
    """Accept connections on the (non-blocking) ``listener`` forever; run ``handle`` on each in ``handler_nursery``.

    Each time the listener is readable, up to :data:`ACCEPT_BATCH` connections are
    accepted without awaiting. A connection whose client has already closed it (a
    connect-then-close, the shape of a descriptor flood) is closed there and then: no
    task, no protocol object, a few microseconds, so a flood cannot queue the real
    clients behind it in the backlog. The others become ``trio.SocketStream`` (as
    ``trio.SocketListener`` makes them), wrapped in TLS when ``ssl_context`` is given
    (as ``trio.SSLListener`` does).

    Out of descriptors (or buffers, or memory): close up to :data:`EVICT_BATCH` of the
    oldest idle connections, or when none is idle shed as many pending connections
    through ``reserve``, then retry after :data:`RETRY_INTERVAL`. Errors of one
    connection (``ECONNABORTED`` ...) are skipped as trio skips them; any other error
    ends the loop (and the server), as it does ``trio.serve_listeners``.
    """
    counters = shortage.counters
    while True:
        with trio.move_on_at(shortage.ends_at):
            await trio.lowlevel.wait_readable(listener)
        shortage.end_if_quiet()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in IGNORABLE_ACCEPT_ERRNOS:
                    continue
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                shortage.accept_failed(exc)
                evicted = idle.close_oldest(EVICT_BATCH)
                shortage.evicted += evicted
                if not evicted:
                    refused = 0
                    while refused < EVICT_BATCH and reserve.refuse_one(listener):
                        refused += 1
                    shortage.refused += refused
                    counters.refused_at_capacity += refused
                await trio.sleep(RETRY_INTERVAL)
                break
            sock.setblocking(False)
            if client_has_gone(sock):
                sock.close()
                counters.closed_before_reading += 1
                continue
            stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            if ssl_context is not None:
                stream = trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
            handler_nursery.start_soon(_run_connection, handle, stream, name=_CONNECTION_TASK)


def client_has_gone(sock: socket.socket) -> bool:
    """True when the client has already closed (EOF first in the receive queue) or reset ``sock``."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # connected, nothing sent yet
    except OSError:
        return True  # reset


#: The name of every connection's task, and of every request's task: one string for all
#: of them (trio otherwise formats one per task, ~90 B each, for as long as it lives).
_CONNECTION_TASK = "trio_sse.http.hypercorn_trio.connection"
_REQUEST_TASK = "hypercorn.trio.task_group._handle"


class _TaskGroup:
    """hypercorn's ``TaskGroup`` for one connection (the same interface: ``spawn_app``,
    ``spawn``, ``_nursery``), with slots instead of an instance dict, and request tasks
    that share one name string."""

    __slots__ = ("_manager", "_nursery")

    def __init__(self) -> None:
        self._manager: Any = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> _TaskGroup:
        self._manager = trio.open_nursery()
        self._nursery = await self._manager.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        manager, self._manager = self._manager, None
        try:
            await manager.__aexit__(*exc_info)
        finally:
            self._nursery = None

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: Any,
        send: Callable[[Any], Awaitable[None]],
    ) -> Callable[[Any], Awaitable[None]]:
        # hypercorn 0.18's TaskGroup.spawn_app (pyproject pins it), with name=.
        app_send_channel, app_receive_channel = trio.open_memory_channel[Any](config.max_app_queue_size)
        assert self._nursery is not None
        self._nursery.start_soon(
            _handle,
            app,
            config,
            scope,
            app_receive_channel.receive,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
            name=_REQUEST_TASK,
        )
        return app_send_channel.send

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(func, *args)


async def _run_connection(handle: Callable[[trio.abc.Stream], Awaitable[None]], stream: trio.abc.Stream) -> None:
    try:
        await handle(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def worker_serve(
    app: AppWrapper,
    config: Config,
    *,
    idle_connection_limit: int,
    sockets: Sockets | None = None,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.run.worker_serve`` with :class:`TCPServer` and :func:`accept_loop`.

    Same lifespan, bind log lines, ``task_status.started(binds)``, shutdown (the trigger
    returning, or ``max_requests``) and graceful timeout as hypercorn's.
    """
    config.set_statsd_logger_class(StatsdLogger)

    lifespan_state: LifespanState = {}
    lifespan = Lifespan(app, config, lifespan_state)
    max_requests = None
    if config.max_requests is not None:
        max_requests = config.max_requests + randint(0, config.max_requests_jitter)
    context = WorkerContext(max_requests)
    idle = IdleConnections(idle_connection_limit)
    PROCESS_FIGURES["server"] = server_figures
    reserve = ReserveDescriptor()
    _SERVING.add(idle)
    owned: list[socket.socket] = []

    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()

            async with trio.open_nursery() as server_nursery:
                if sockets is None:
                    sockets = config.create_sockets()
                    owned = [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]
                    for sock in sockets.secure_sockets:
                        sock.listen(config.backlog)
                    for sock in sockets.insecure_sockets:
                        sock.listen(config.backlog)

                ssl_context = config.create_ssl_context()
                listeners: list[tuple[socket.socket, Any]] = []
                binds = []
                for sock in sockets.secure_sockets:
                    listeners.append((sock, ssl_context))
                    bind = repr_socket_addr(sock.family, sock.getsockname())
                    binds.append(f"https://{bind}")
                    await config.log.info(f"Running on https://{bind} (CTRL + C to quit)")

                for sock in sockets.insecure_sockets:
                    listeners.append((sock, None))
                    bind = repr_socket_addr(sock.family, sock.getsockname())
                    binds.append(f"http://{bind}")
                    await config.log.info(f"Running on http://{bind} (CTRL + C to quit)")

                for sock in sockets.quic_sockets:
                    await server_nursery.start(
                        UDPServer(app, config, context, ConnectionState(lifespan_state.copy()), sock).run
                    )
                    bind = repr_socket_addr(sock.family, sock.getsockname())
                    await config.log.info(f"Running on https://{bind} (QUIC) (CTRL + C to quit)")

                connection = partial(TCPServer, app, config, context, ConnectionState(lifespan_state.copy()), idle=idle)

                def handle(stream: trio.abc.Stream) -> Awaitable[None]:
                    # The connection's run itself, not a coroutine awaiting it: this frame
                    # would live as long as the connection (a stream: hours).
                    return connection(stream).run()

                shortage = DescriptorShortage()
                task_status.started(binds)
                try:
                    async with trio.open_nursery(strict_exception_groups=True) as nursery:
                        if shutdown_trigger is not None:
                            nursery.start_soon(raise_shutdown, shutdown_trigger)
                        nursery.start_soon(raise_shutdown, context.terminate.wait)
                        for listener, tls in listeners:
                            listener.setblocking(False)
                            nursery.start_soon(
                                accept_loop, listener, tls, handle, server_nursery, idle, shortage, reserve
                            )
                        await trio.sleep_forever()
                except BaseExceptionGroup as error:
                    _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                    if other_errors is not None:
                        raise other_errors from None
                finally:
                    await context.terminated.set()
                    server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout

            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    finally:
        _SERVING.discard(idle)
        reserve.close()
        for sock in owned:  # hypercorn leaves them to the garbage collector
            sock.close()


class DirectASGI:
    """hypercorn's ``ASGIWrapper`` (the app called with ``scope, receive, send``), minus its
    coroutine: ``__call__`` returns the app's own awaitable for hypercorn to await.

    Why: the wrapper's frame lives as long as the request, and a stream's request lasts
    hours; thousands of idle streams each kept one (~0.5 KB).
    """

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any, sync_spawn: Any, call_soon: Any) -> Awaitable[None]:
        return cast(Awaitable[None], self.app(scope, receive, send))


async def serve(
    app: Any,
    config: Config,
    *,
    idle_connection_limit: int,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve`` through :func:`worker_serve`: an ASGI app until ``shutdown_trigger`` returns."""
    await worker_serve(
        cast(AppWrapper, DirectASGI(app)),
        config,
        idle_connection_limit=idle_connection_limit,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


# -- what a stream needs from the server: transport_for -----------------------------------------

#: The key of ``scope["state"]`` (ASGI's per-request copy of the lifespan state) under which
#: trio_sse's worker hands each request the trio stream of its connection.
STREAM_KEY = "trio_sse.connection_stream"
#: ... and its connection (:class:`TCPServer`), which can tell a stream when the client leaves.
CONNECTION_KEY = "trio_sse.connection"
#: The hypercorn releases this module was checked against (``pyproject.toml`` pins them).
CHECKED_HYPERCORN = "0.18"


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


HYPERCORN_VERSION = _installed("hypercorn")


@attrs.define
class AdapterMisses:
    """How often a hypercorn internal this module looks for was not there.

    Nonzero means the hypercorn installed is not one this module was checked against
    (it renamed something): the guarantees still hold by the fallbacks of
    :func:`transport_for`, at some cost. ``/sse/stats`` (``transport_adapter``) and
    ``/metrics`` (``trio_sse_transport_adapter_misses``) show it.
    """

    misses: int = 0
    #: The internals already warned about: one WARNING per process for each.
    warned: set[str] = attrs.field(factory=set)

    def missed(self, internal: str, consequence: str) -> None:
        self.misses += 1
        if internal not in self.warned:
            self.warned.add(internal)
            log.warning(
                "hypercorn %s: %s not found (trio_sse was checked against hypercorn %s); %s",
                HYPERCORN_VERSION,
                internal,
                CHECKED_HYPERCORN,
                consequence,
            )


#: Process-wide, like the hypercorn installed.
ADAPTER = AdapterMisses()


def adapter_figures() -> dict[str, Any]:
    """The ``transport_adapter`` section of ``/sse/stats``."""
    return {"misses": ADAPTER.misses, "hypercorn": HYPERCORN_VERSION}


PROCESS_FIGURES["transport_adapter"] = adapter_figures


class ServerTransport:
    """What a stream needs from the server under it, found once by :func:`transport_for`.

    - ``socket``: the TCP socket for direct writes (HTTP/1.1 over plain TCP), else None;
    - ``h2_buffer``: hypercorn's outgoing buffer of this HTTP/2 stream (``buffer``,
      ``drain()``), else None;
    - :meth:`abort`: frees a write stuck in hypercorn's shielded ``send_all``;
    - :meth:`watch_client`: the connection's reading task tells the stream when the client
      leaves, so the stream needs no task of its own waiting for ``http.disconnect``.
    """

    __slots__ = ("_addresses", "_closable", "_connection", "h2_buffer", "socket")

    def __init__(
        self,
        socket: trio.socket.SocketType | None,
        h2_buffer: Any,
        closable: trio.socket.SocketType | None,
        addresses: tuple[Any, Any] | None,
        connection: TCPServer | None = None,
    ) -> None:
        self.socket = socket
        self.h2_buffer = h2_buffer
        self._closable = closable
        self._addresses = addresses
        self._connection = connection

    def abort(self) -> None:
        """Close the connection under an HTTP/1.x response, so that a blocked write returns
        (it raises); nothing under HTTP/2, whose connection carries other streams."""
        if self._closable is not None:
            self._closable.close()
        elif self._addresses is not None:
            shutdown_by_addresses(*self._addresses)

    def watch_client(self, watcher: ClientWatcher | None) -> bool:
        """Have ``watcher.client_gone()`` called when the client leaves; True if it will be.

        Only trio_sse's own worker can (its :class:`TCPServer` reads the connection), only
        for HTTP/1.x, and only for a request without a body (with one, the app has to read
        it, and whatever reads it also sees ``http.disconnect``); False as well when the
        client has already left (``http.disconnect`` is waiting in ``receive``). ``None``
        stops it (the stream is over; the connection may carry another request).
        """
        connection = self._connection
        if connection is None:
            return False
        return connection.watch_client(watcher)


def transport_for(scope: Mapping[str, Any], receive: Any, send: Any) -> ServerTransport:
    """What the stream of ``scope`` needs from the server: see :class:`ServerTransport`.

    The connection's stream comes, in order of preference, from

    1. ``scope["state"][STREAM_KEY]``, put there by trio_sse's own worker
       (:class:`TCPServer`): no private object of hypercorn's at all;
    2. under hypercorn's own worker (the ``hypercorn`` CLI), the walk of
       :func:`plain_socket_of` through hypercorn's bound methods;
    3. neither (hypercorn renamed something): no direct writes, and :meth:`~ServerTransport.abort`
       shuts the socket down by the addresses in the scope (:func:`shutdown_by_addresses`),
       so ``send_timeout`` still frees a stuck client. Counted and warned (:data:`ADAPTER`).

    A ``send`` wrapped by a middleware gets no direct writes (they would skip it) but
    still the abort; a server that is not hypercorn (an in-process test client) gets
    nothing, silently. Only the first route offers :meth:`~ServerTransport.watch_client`.
    """
    version = scope.get("http_version", "1.1")
    http1 = version in ("1.0", "1.1")
    # hypercorn's own send, not one wrapped by a middleware (whose bytes direct writes would skip).
    own_send = _is_hypercorn(send)
    state = scope.get("state")
    stream = state.get(STREAM_KEY) if isinstance(state, dict) else None
    direct = own_send  # through our worker's state: only when nothing stands between us and hypercorn
    connection: TCPServer | None = None
    if stream is None:
        stream = _stream_by_walk(send)
        direct = stream is not None  # the walk reached it through hypercorn's own objects
        if stream is None and own_send:
            ADAPTER.missed(
                "the connection's stream (HTTPStream.app_send -> protocol.send -> TCPServer.stream)",
                "streams write through ASGI only (no direct writes); a stuck HTTP/1.x write is freed by "
                "shutting its socket down by address",
            )
    elif http1 and not _has_body(scope):
        assert isinstance(state, dict)
        found = state.get(CONNECTION_KEY)
        connection = found if isinstance(found, TCPServer) else None
    sock = _socket_of(stream)
    addresses = (scope.get("server"), scope.get("client")) if http1 and sock is None and own_send else None
    h2_buffer = None
    if version == "2":
        h2_buffer = h2_stream_buffer_of(send)
        if h2_buffer is None and own_send:
            ADAPTER.missed(
                "the HTTP/2 stream's buffer (H2Protocol.stream_buffers)",
                "an HTTP/2 stream whose client stops reading is not detected until hypercorn's send blocks",
            )
    plain = sock if direct and version == "1.1" and isinstance(stream, trio.SocketStream) else None
    return ServerTransport(plain, h2_buffer, sock if http1 else None, addresses, connection)


def _has_body(scope: Mapping[str, Any]) -> bool:
    """Whether the request announces a body (RFC 9112 6.3: Transfer-Encoding, or a Content-Length above 0)."""
    for key, value in scope.get("headers", ()):
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def _is_hypercorn(send: Any) -> bool:
    """True when ``send`` is hypercorn's (its function is defined in a hypercorn module)."""
    module = getattr(send, "__module__", None)
    return isinstance(module, str) and module.startswith("hypercorn.")


def _socket_of(stream: object) -> trio.socket.SocketType | None:
    """The TCP socket under a trio stream (through TLS too), or None."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def _stream_by_walk(send: Any) -> trio.abc.Stream | None:
    """hypercorn's ``TCPServer.stream`` under its ASGI ``send``, through the bound-method chain
    ``HTTPStream.app_send -> protocol.send -> TCPServer.protocol_send``; None if not found."""
    obj = getattr(send, "__self__", None)
    for _ in range(6):
        if obj is None:
            return None
        stream = getattr(obj, "stream", None)
        if isinstance(stream, trio.SocketStream | trio.SSLStream):
            return stream
        obj = getattr(getattr(obj, "send", None), "__self__", None)
    return None


def plain_socket_of(send: Any, *, through_tls: bool = False) -> trio.socket.SocketType | None:
    """The TCP socket under hypercorn's ASGI ``send`` by the walk of :func:`_stream_by_walk`, or None.

    Under TLS it answers None (bytes must go through the SSL object) unless
    ``through_tls``, which is for closing the socket.
    """
    stream = _stream_by_walk(send)
    if isinstance(stream, trio.SSLStream) and not through_tls:
        return None
    return _socket_of(stream)


def h2_stream_buffer_of(send: Any) -> Any:
    """hypercorn's outgoing buffer for the HTTP/2 stream under ASGI ``send``, or None.

    Why: hypercorn's HTTP/2 ``send`` only appends to this buffer, and when the client
    does not read the stream (its flow-control window stays closed) it keeps appending
    without ever blocking, so without a look at the buffer a stalled HTTP/2 stream would
    never hit ``send_timeout`` and would grow without bound. The buffer has ``buffer``
    (the bytes) and ``drain()`` (wait until it is empty, or the stream closed).
    """
    stream = getattr(send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    buffers = getattr(protocol, "stream_buffers", None)
    stream_id = getattr(stream, "stream_id", None)
    if not isinstance(buffers, dict) or stream_id is None:
        return None
    return buffers.get(stream_id)


def shutdown_by_addresses(server: Any, client: Any) -> bool:
    """Shut down this process's TCP socket from ``server`` to ``client`` (a scope's
    ``(host, port)`` pairs); True if one was found.

    The route of :meth:`ServerTransport.abort` that needs no object of hypercorn's: the
    kernel's table of this process's sockets (through psutil) gives the descriptor, and
    ``shutdown()`` on a duplicate of it makes the socket writable-with-error, so a write
    blocked on it (shielded or not) raises at once. It reads every socket of the process
    (milliseconds at thousands), so it is the last resort, used only when hypercorn's
    objects cannot be found.
    """
    if not server or not client:
        return False
    wanted = ((str(server[0]), int(server[1])), (str(client[0]), int(client[1])))
    process = psutil.Process()
    listing = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    try:
        sockets = listing(kind="tcp")
    except (psutil.Error, OSError):
        return False
    for entry in sockets:
        if entry.fd < 0 or not entry.laddr or not entry.raddr:
            continue
        if ((entry.laddr.ip, entry.laddr.port), (entry.raddr.ip, entry.raddr.port)) != wanted:
            continue
        try:
            with socket.socket(fileno=os.dup(entry.fd)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
        return True
    return False


def final_send_shielded(scope: Mapping[str, Any], send: Any, timeout: float) -> Any:
    """``send`` whose last message (the end of the body) cannot be cut short by quart-trio.

    hypercorn ends an HTTP/1.x response inside that last ``send``: it tells the app
    ``http.disconnect`` and, when the connection must close (``Connection: close``,
    HTTP/1.0), shuts the socket down in the same call. quart-trio cancels its request
    nursery as soon as it reads that disconnect, and the cancellation landed in the
    shutdown: the socket stayed open until the client gave up or a timeout fired. The
    shield lets hypercorn finish; ``timeout`` (``send_timeout``) still bounds it, for a
    peer that stops reading during a TLS close. Other HTTP versions get ``send`` itself.
    """
    if scope.get("http_version") not in ("1.0", "1.1"):
        return send

    async def send_final_shielded(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout):
                await send(message)
        else:
            await send(message)

    return send_final_shielded


# -- the app under the hypercorn CLI: idle_timeout -------------------------------------------------


def adopt_idle_timeout(receive: Any, idle_timeout: float) -> bool:
    """Set the keep-alive timeout of the hypercorn serving this app, if it is one; True if set.

    hypercorn passes its ``Lifespan.asgi_receive`` to the app's lifespan, and that object
    holds the worker's ``Config``, the one every connection reads its keep-alive timeout
    from: this is how ``hypercorn 'trio_sse.app:create_app()'`` gets ``idle_timeout``.
    Under a hypercorn without that path, a miss (:data:`ADAPTER`).
    """
    config = getattr(getattr(receive, "__self__", None), "config", None)
    if not isinstance(config, Config):
        if _is_hypercorn(receive):
            ADAPTER.missed(
                "the worker's Config (Lifespan.asgi_receive.__self__.config)",
                "idle_timeout is not applied: hypercorn keeps its own keep_alive_timeout "
                f"({Config.keep_alive_timeout} s)",
            )
        return False
    config.keep_alive_timeout = idle_timeout
    return True


def lifespan_adopting_idle_timeout(idle_timeout: float) -> type[TrioASGILifespan]:
    """A quart-trio lifespan class (``app.asgi_lifespan_class``) that applies ``idle_timeout``
    to the hypercorn serving the app, at startup, before any connection is accepted."""

    class AdoptingLifespan(TrioASGILifespan):  # type: ignore[misc]
        async def __call__(self, receive: Any, send: Any) -> None:
            adopt_idle_timeout(receive, idle_timeout)
            await super().__call__(receive, send)

    return AdoptingLifespan
