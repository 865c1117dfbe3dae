"""Direct chunked writes to the socket under hypercorn's HTTP/1.1 (the fan-out fast path).

Why: every ASGI ``send`` through hypercorn costs several trips through trio's scheduler
(protocol object, h11 framing, a lock, a shielded ``send_all``); with a thousand streams
that, not Python, caps fan-out. Once hypercorn has sent the response head and the first
chunk, the rest of an HTTP/1.1 chunked body is just ``<hex size>\\r\\n<data>\\r\\n`` frames,
so the hub can ``writev`` them to the non-blocking socket itself — no await when the
kernel takes the bytes, which it does for any client that keeps up. The final
``0\\r\\n\\r\\n`` still goes through hypercorn (ASGI ``more_body: False``) so its h11
state ends where it expects.

Only used when it is safe: hypercorn's trio worker, HTTP/1.1 (chunked), plain TCP (the
socket comes from :func:`trio_sse.http.hypercorn_trio.transport_for`; this module knows
nothing of hypercorn's objects).
TLS (bytes must go through the SSL object), HTTP/2 (frames, flow control and other
streams share the socket) and other servers keep the ASGI path. A gzip stream keeps the
fast path: the writer compresses each write with the stream's own encoder before framing
it, the same encoder the ASGI writes of that stream use, so every byte is compressed in
order (see docs/performance.md, "Compression").
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

__all__ = ["ChunkedSocketWriter"]

#: writev takes at most this many buffers (Linux IOV_MAX is 1024; keep room for framing).
_MAX_IOV = 1000


class ChunkedSocketWriter:
    """Frames each write as one HTTP/1.1 chunk and hands it to the kernel without waiting.

    ``encode`` (a gzip stream's encoder) turns each write's parts into the bytes to send;
    it is called once per write, in write order, even when the result joins the backlog.
    """

    __slots__ = ("_encode", "_fd", "_pending", "_socket")

    def __init__(self, sock: trio.socket.SocketType, encode: Callable[[list[bytes]], bytes] | None = None) -> None:
        self._socket = sock
        self._fd = sock.fileno()
        self._pending = b""
        self._encode = encode

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def write_now(self, parts: list[bytes]) -> bool:
        """Write ``parts`` as one chunk; what the kernel does not take now stays in the backlog.

        Raises ``OSError`` (e.g. ``BrokenPipeError``) when the client is gone.
        """
        size = sum(map(len, parts))
        if size == 0:
            return not self._pending
        if self._encode is not None:
            parts = [self._encode(parts)]
            size = len(parts[0])
        if len(parts) > _MAX_IOV:
            parts = [b"".join(parts)]
        frame = [b"%x\r\n" % size, *parts, b"\r\n"]
        if self._pending:
            self._pending += b"".join(frame)
            return False
        try:
            written = os.writev(self._fd, frame)
        except BlockingIOError:
            written = 0
        total = size + len(frame[0]) + 2
        if written == total:
            return True
        self._pending = b"".join(frame)[written:]
        return False

    async def drain(self) -> None:
        """Write the backlog as the socket becomes writable. Cancellable between writes."""
        while self._pending:
            await trio.lowlevel.wait_writable(self._socket)
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                continue
            self._pending = self._pending[written:]
