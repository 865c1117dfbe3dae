"""Helpers shared by the HTTP tests (a module of its own: ``tests/http`` has no package)."""

from __future__ import annotations

from typing import Any

from trio_sse.testing import TestResponse


def assert_error(reply: TestResponse, status: int) -> dict[str, Any]:
    """``reply`` is a JSON error with ``status``; returns its body."""
    assert reply.status == status, reply
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    return body


class _TCPServerLike:
    """Shapes of hypercorn's objects, as ``plain_socket_of`` walks them (held to real
    hypercorn's by ``test_transport_conformance.py``)."""

    def __init__(self, stream: object) -> None:
        self.stream = stream

    async def protocol_send(self, event: object) -> None:  # pragma: no cover - never called
        pass


class _ProtocolLike:
    def __init__(self, server: _TCPServerLike) -> None:
        self.send = server.protocol_send

    async def stream_send(self, event: object) -> None:  # pragma: no cover - never called
        pass


class _HTTPStreamLike:
    def __init__(self, protocol: _ProtocolLike) -> None:
        self.send = protocol.stream_send

    async def app_send(self, message: object) -> None:  # pragma: no cover - never called
        pass


def hypercorn_like_send(stream: object) -> Any:
    """An ASGI ``send`` bound the way hypercorn's is, over ``stream`` (a trio stream)."""
    return _HTTPStreamLike(_ProtocolLike(_TCPServerLike(stream))).app_send
