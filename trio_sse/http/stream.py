"""``GET /sse/events`` as a lean ASGI handler.

The stream is served straight on ASGI rather than through a Quart streaming response:
the handler needs the raw ``send`` to put deadlines on writes and to notice a client
leaving, and skipping Quart's per-request machinery keeps a stream to a couple of
small objects. Everything before the first byte (parameters, limits) is refused with
a JSON error and no stream.

HTTP/1.1, HTTP/2 and TLS all arrive here. Only plain-TCP HTTP/1.1 streams get the direct
socket writer; HTTP/2 streams share their connection with other streams, so nothing
here may touch that connection's socket (a stuck HTTP/2 write is cancelled, not aborted).
With ``compression`` on and a client that accepts it, every byte of the body — first
write, events, heartbeats, the end — goes through the stream's one encoder
(:class:`GzipStream` or :class:`ZstdStream`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio

from ..core.compression import StreamEncoder, negotiate, new_encoder
from ..runtime.connection import ClientInfo, Connection
from ..runtime.hub import Hub
from .auth import authenticator_for, require_project
from .errors import send_refusal, to_api_error
from .fastpath import ChunkedSocketWriter
from .hypercorn_trio import ClientWatcher, ServerTransport, transport_for
from .params import client_address, header, parse_stream_params

__all__ = ["AsgiTransport", "serve_stream"]


FINAL_WRITE_TIMEOUT = 1.0
_NO_HEADERS: list[tuple[bytes, bytes]] = []  # never modified
#: An HTTP/2 write waits (under ``send_timeout``) for hypercorn's buffer of the stream to
#: empty once it holds this much: the client is not keeping up (two frames of 16 KiB).
H2_BUFFER_LIMIT = 32 * 1024


def _stream_headers(connection: Connection, *, compression_on: bool, coding: str | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-sse-connection-id", connection.id.encode()),
    ]
    if connection.start_id is not None:
        # Where live delivery starts (as Mercure does): a client that drops before its
        # first event resumes from here instead of reconnecting with no id and a gap.
        headers.append((b"last-event-id", connection.start_id.encode()))
    if coding is not None:
        headers.append((b"content-encoding", coding.encode()))
    if compression_on:
        # Plain answers vary by Accept-Encoding too once compression is possible (RFC 9110 12.5.5).
        headers.append((b"vary", b"Accept-Encoding"))
    return headers


def _accept_encoding(headers: list[tuple[bytes, bytes]]) -> str:
    """Every ``Accept-Encoding`` header joined, as one list (a header may repeat)."""
    return ",".join(value.decode("latin-1") for key, value in headers if key.lower() == b"accept-encoding")


class AsgiTransport:
    """Adapts ASGI ``receive``/``send`` to the runtime's :class:`Transport`.

    ``http_version`` is the scope's: only ``"1.1"`` is chunked on its own connection.
    ``gzip`` is the stream's encoder (gzip or zstd) when the body is compressed (the
    caller has put the matching ``Content-Encoding`` in ``headers``). What the server under it offers (the
    socket for direct writes, the HTTP/2 buffer, the abort) comes from
    :func:`~trio_sse.http.hypercorn_trio.transport_for` with ``scope`` (default: a scope
    of ``http_version`` alone).
    """

    __slots__ = (
        "_chunked",
        "_gzip",
        "_h2_buffer",
        "_headers",
        "_receive",
        "_send",
        "_server",
        "_socket",
        "direct",
        "started",
    )

    def __init__(
        self,
        receive: Any,
        send: Any,
        headers: list[tuple[bytes, bytes]],
        *,
        http_version: str,
        gzip: StreamEncoder | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._headers: Sequence[tuple[bytes, bytes]] = headers
        self._chunked = http_version == "1.1"
        self._gzip = gzip
        self.started = False
        server: ServerTransport = transport_for(
            {"http_version": http_version} if scope is None else scope, receive, send
        )
        self._server = server
        self._socket = server.socket
        self._h2_buffer = server.h2_buffer
        self.direct: ChunkedSocketWriter | None = None

    async def write(self, data: bytes) -> None:
        if self._gzip is not None:
            data = self._gzip.write([data])
        if not self.started:
            await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
            # Only now: a head interrupted before it was sent must be sent again by finish().
            self.started = True
            self._headers = ()  # sent: not kept for the life of the stream
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
            if self._chunked and self._socket is not None:
                # hypercorn has written the head and the first chunk: the rest may go direct.
                self.direct = ChunkedSocketWriter(self._socket, self._gzip.write if self._gzip else None)
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        buffer = self._h2_buffer
        if buffer is not None and len(buffer.buffer) >= H2_BUFFER_LIMIT:
            await buffer.drain()  # a client that never reads this stream meets send_timeout here

    async def wait_closed(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    def watch_client(self, watcher: ClientWatcher | None) -> bool:
        """The server calls ``watcher.client_gone()`` when the client leaves, if it can (True):
        then nothing needs to wait in :meth:`wait_closed`."""
        return self._server.watch_client(watcher)

    def abort(self) -> None:
        # Under HTTP/2 the socket carries every stream of the connection: never closed for one.
        self._server.abort()

    async def finish(self) -> None:
        """End the response cleanly (the final chunk of a chunked body; a gzip body's trailer first).

        Best effort: a client already gone (a server may raise from ``send`` then) leaves
        nothing to end, and must not turn the end of the stream into an error.
        """
        with trio.move_on_after(FINAL_WRITE_TIMEOUT):
            try:
                if not self.started:
                    await self.write(b"")
                end = self._gzip.finish() if self._gzip is not None else b""
                await self._send({"type": "http.response.body", "body": end, "more_body": False})
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def serve_stream(
    hub: Hub,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Handle one ``GET /sse/events`` request from start to end (``extra_headers``: CORS)."""
    extra = extra_headers or _NO_HEADERS  # not a new list held by every stream
    address = client_address(scope)
    headers = scope.get("headers", [])
    sub: str | None = None  # known once the token is verified, for the audit line of a refusal
    connection: Connection | None = None  # set once registered: errors after that are not refusals
    try:
        params = parse_stream_params(scope.get("query_string", b""), headers, max_rewind=hub.settings.max_rewind)
        principal = authenticator_for(hub.settings).authenticate(headers, params.access_token)
        sub = principal.sub
        require_project(principal, params.project_id)
        subscription = hub.subscription(params.event_types, params.project_id, dict(params.tags))
        info = ClientInfo(address, header(headers, b"user-agent"), principal.sub, principal.projects)
        # Not an AsyncExitStack: it would hold a deque (~0.8 KB) for every open stream.
        # And everything of the stream's life inline, below: every frame of a helper
        # coroutine would live as long as the stream.
        async with hub.connect(
            subscription,
            last_event_id=params.last_event_id,
            client=info,
            expires_at=principal.expires_at,
        ) as connection:
            rewind = params.rewind
            del params, principal  # what the stream needs of them, the connection holds
            setting = hub.settings.stream_compression
            coding = negotiate(setting, _accept_encoding(headers))
            gzip = new_encoder(coding)
            transport = AsgiTransport(
                receive,
                send,
                [*_stream_headers(connection, compression_on=setting != "off", coding=coding), *extra],
                http_version=scope.get("http_version", "1.1"),
                gzip=gzip,
                scope=scope,
            )
            try:
                await connection.run(transport, rewind=rewind)
            finally:
                # A stream closed before its first write still gets a complete (empty) response.
                if connection.can_finish or not transport.started:
                    with trio.CancelScope(shield=True):
                        await transport.finish()
                if connection.close_reason == "server_shutdown":
                    # The client's reconnect must not reuse this keep-alive connection: it
                    # would reach this closing server and get a 503, which makes a browser's
                    # EventSource give up for good. A new connection reaches a live instance.
                    transport.abort()
    except Exception as exc:
        error = to_api_error(exc) if connection is None else None
        if error is None:
            raise
        await send_refusal(send, scope, error, extra, sub=sub)
