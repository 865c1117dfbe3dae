"""The client side of the LaunchDarkly contract-test harness, in-process.

:class:`ClientUnderTest` runs a :func:`trio_sse.client.open_url` source in a task and
reports what it sees as the harness's callback messages, in stream order: ``event``,
``comment`` (through ``on_comment``) and ``error`` (through ``on_state``). The
``require_*`` helpers are the harness's ``RequireEvent``, ``RequireComment``,
``RequireError``: the next message must be of that kind, within 5 s.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from stream_server import Canned, StreamConnection, StreamServer, stream_server

from trio_sse.client import Event, EventSource, SSEClientError, State, StateChange, open_url

AWAIT_MESSAGE = 5.0  # seconds, the harness's awaitMessageTimeout


@attrs.frozen
class Message:
    kind: str  # "event", "comment" or "error"
    event: Event | None = None
    comment: str | None = None
    error: BaseException | None = None


def as_ld(event: Event) -> tuple[str, str, str]:
    """(type, data, id) as the harness compares events: ``id`` is the last event id, ``""`` for none."""
    return (event.type, event.data, event.last_event_id or "")


@attrs.define(eq=False)
class ClientUnderTest:
    source: EventSource | None = None
    states: list[StateChange] = attrs.Factory(list)
    _ignore_next_error: bool = False
    _changed: trio.Event = attrs.Factory(trio.Event)
    _send: trio.MemorySendChannel[Message] | None = None
    _receive: trio.MemoryReceiveChannel[Message] | None = None

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Message](math.inf)

    async def run(self, url: str, options: dict[str, Any]) -> None:
        assert self._send is not None
        send = self._send.send_nowait
        options.setdefault("initial_delay", 0.0)

        def on_state(change: StateChange) -> None:
            self.states.append(change)
            self._changed.set()
            self._changed = trio.Event()
            if change.state is State.ERROR:
                send(Message("error", error=change.error))

        try:
            async with open_url(
                url, on_comment=lambda text: send(Message("comment", comment=text)), on_state=on_state, **options
            ) as source:
                self.source = source
                async for event in source:
                    send(Message("event", event=event))
        except SSEClientError:
            pass  # already reported by on_state (ERROR, then CLOSED)

    async def wait_state(self, state: State, count: int = 1) -> None:
        """Until the hook has heard ``state`` ``count`` times in all."""
        with trio.fail_after(AWAIT_MESSAGE):
            while sum(change.state is state for change in self.states) < count:
                await self._changed.wait()

    def ignore_error_here(self) -> None:
        """The next message may be an error (the harness's ``IgnoreErrorHere``)."""
        self._ignore_next_error = True

    async def next_message(self) -> Message:
        assert self._receive is not None
        with trio.fail_after(AWAIT_MESSAGE):
            while True:
                message = await self._receive.receive()
                if self._ignore_next_error:
                    self._ignore_next_error = False
                    if message.kind == "error":
                        continue
                return message

    async def require_event(self) -> Event:
        message = await self.next_message()
        assert message.kind == "event", message
        assert message.event is not None
        return message.event

    async def require_events(self, *expected: tuple[str, str, str]) -> None:
        """The next events are ``expected``, given as ``(type, data, id)``."""
        for want in expected:
            assert as_ld(await self.require_event()) == want

    async def require_comment(self) -> str:
        message = await self.next_message()
        assert message.kind == "comment", message
        assert message.comment is not None
        return message.comment

    async def require_error(self) -> BaseException:
        message = await self.next_message()
        assert message.kind == "error", message
        assert message.error is not None
        return message.error


def ev(data: str, type: str = "message", id: str = "") -> tuple[str, str, str]:
    return (type, data, id)


@asynccontextmanager
async def new_client(server: StreamServer, path: str = "/stream", **options: Any) -> AsyncIterator[ClientUnderTest]:
    """A client on ``server``'s ``path`` for the block (the harness's ``NewSSEClient``)."""
    client = ClientUnderTest()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, server.url(path), options)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def stream_and_client(
    routes: dict[str, Canned | list[Canned]] | None = None, **options: Any
) -> AsyncIterator[tuple[StreamServer, StreamConnection, ClientUnderTest]]:
    """Server, first stream and client (the harness's ``NewStreamAndSSEClient``)."""
    async with stream_server(routes) as server, new_client(server, **options) as client:
        stream = await server.await_connection()
        yield server, stream, client
