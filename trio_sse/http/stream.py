"""``GET /sse/events`` as a lean ASGI handler.

The stream is served straight on ASGI rather than through a Quart streaming response:
the handler needs the raw ``send`` to put deadlines on writes and to notice a client
leaving, and skipping Quart's per-request machinery keeps a stream to a couple of
small objects. Everything before the first byte (parameters, limits) is refused with
a JSON error and no stream.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio

from ..runtime.connection import ClientInfo
from ..runtime.hub import Hub
from .auth import authenticator_for, require_project
from .errors import send_refusal, to_api_error
from .fastpath import ChunkedSocketWriter, plain_socket_of
from .params import client_address, header, parse_stream_params

__all__ = ["AsgiTransport", "serve_stream"]


FINAL_WRITE_TIMEOUT = 1.0


def _stream_headers(connection_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-sse-connection-id", connection_id.encode()),
    ]


class AsgiTransport:
    """Adapts ASGI ``receive``/``send`` to the runtime's :class:`Transport`."""

    __slots__ = ("_abort_socket", "_chunked", "_headers", "_receive", "_send", "_socket", "direct", "started")

    def __init__(self, receive: Any, send: Any, headers: list[tuple[bytes, bytes]], *, chunked: bool) -> None:
        self._receive = receive
        self._send = send
        self._headers = headers
        self._chunked = chunked
        self.started = False
        self._socket = plain_socket_of(send)
        self._abort_socket = plain_socket_of(send, through_tls=True)
        self.direct: ChunkedSocketWriter | None = None

    async def write(self, data: bytes) -> None:
        if not self.started:
            await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
            # Only now: a head interrupted before it was sent must be sent again by finish().
            self.started = True
            await self._send({"type": "http.response.body", "body": data, "more_body": True})
            if self._chunked and self._socket is not None:
                # hypercorn has written the head and the first chunk: the rest may go direct.
                self.direct = ChunkedSocketWriter(self._socket)
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def wait_closed(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    def abort(self) -> None:
        if self._abort_socket is not None:
            self._abort_socket.close()

    async def finish(self) -> None:
        """End the response cleanly (the final chunk of a chunked body)."""
        with trio.move_on_after(FINAL_WRITE_TIMEOUT):
            if not self.started:
                await self.write(b"")
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve_stream(
    hub: Hub,
    scope: dict[str, Any],
    receive: Any,
    send: Any,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Handle one ``GET /sse/events`` request from start to end (``extra_headers``: CORS)."""
    extra = extra_headers or []
    address = client_address(scope)
    headers = scope.get("headers", [])
    sub: str | None = None  # known once the token is verified, for the audit line of a refusal
    async with AsyncExitStack() as stack:
        try:
            params = parse_stream_params(scope.get("query_string", b""), headers)
            principal = authenticator_for(hub.settings).authenticate(headers, params.access_token)
            sub = principal.sub
            require_project(principal, params.project_id)
            subscription = hub.subscription(params.event_types, params.project_id)
            info = ClientInfo(address, header(headers, b"user-agent"), principal.sub)
            connection = await stack.enter_async_context(
                hub.connect(
                    subscription,
                    last_event_id=params.last_event_id,
                    client=info,
                    expires_at=principal.expires_at,
                )
            )
        except Exception as exc:
            error = to_api_error(exc)
            if error is None:
                raise
            await send_refusal(send, scope, error, extra, sub=sub)
            return
        transport = AsgiTransport(
            receive, send, _stream_headers(connection.id) + extra, chunked=scope.get("http_version") == "1.1"
        )
        try:
            await connection.run(transport)
        finally:
            # A stream closed before its first write still gets a complete (empty) response.
            if connection.can_finish or not transport.started:
                with trio.CancelScope(shield=True):
                    await transport.finish()
