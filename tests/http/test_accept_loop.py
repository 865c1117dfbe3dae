"""The accept loop out of descriptors (issue 11, item 1): one log line per episode, quick
retries, the oldest idle connections closed to make room, a pending connection shed
through the reserve descriptor when nothing is idle.

The listener is scripted (its ``accept`` raises what the kernel would) and time is
virtual (``autojump_clock``), so the retry spacing and the episode boundaries are exact.
The real thing, a server under a low ``RLIMIT_NOFILE``, is in ``tests/test_descriptors.py``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.http import hypercorn_trio
from trio_sse.http.hypercorn_trio import (
    EPISODE_QUIET,
    EVICT_BATCH,
    RETRY_INTERVAL,
    DescriptorShortage,
    IdleConnections,
    ReserveDescriptor,
    ServerCounters,
    accept_loop,
)

EMFILE = OSError(errno.EMFILE, "Too many open files")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a real loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return accepted, client


class ScriptedListener:
    """A listening socket whose ``accept`` follows a script, readable while the script has steps.

    A step that is an exception is raised; ``LIVE`` accepts a connection whose client is
    still there, ``GONE`` one whose client has already closed it.
    """

    LIVE = "live"
    GONE = "gone"

    def __init__(self, *script: Any) -> None:
        self.script: deque[Any] = deque()
        self.attempts: list[float] = []
        self.clients: list[socket.socket] = []
        self._readable, self._writer = socket.socketpair()
        self.then(*script)

    def fileno(self) -> int:
        return self._readable.fileno()

    def then(self, *script: Any) -> None:
        self.script.extend(script)
        if script:
            self._writer.send(b"x")

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.script:
            self._readable.setblocking(False)
            with suppress(BlockingIOError):
                self._readable.recv(4096)
            raise BlockingIOError
        self.attempts.append(trio.current_time())
        step = self.script.popleft()
        if isinstance(step, BaseException):
            raise step
        accepted, client = tcp_pair()
        if step == self.GONE:
            client.close()
        else:
            self.clients.append(client)
        return accepted, None

    def close(self) -> None:
        for sock in (self._readable, self._writer, *self.clients):
            sock.close()


LIVE, GONE = ScriptedListener.LIVE, ScriptedListener.GONE


@attrs.define(eq=False)
class FakeConnection:
    name: int
    closed: list[int]

    def close_idle(self) -> None:
        self.closed.append(self.name)


@attrs.define
class Loop:
    listener: ScriptedListener
    idle: IdleConnections
    counters: ServerCounters
    handled: list[Any]


@pytest.fixture
def reserve() -> Iterator[ReserveDescriptor]:
    spare = ReserveDescriptor()
    try:
        yield spare
    finally:
        spare.close()


@asynccontextmanager
async def running_loop(listener: Any, idle: IdleConnections, reserve: ReserveDescriptor) -> AsyncIterator[Loop]:
    """``accept_loop`` on ``listener`` while the block runs; its handler only records each stream."""
    handled: list[Any] = []

    async def handle(stream: Any) -> None:
        handled.append(stream)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                accept_loop, listener, None, handle, nursery, idle, DescriptorShortage(idle.counters), reserve
            )
            yield Loop(listener, idle, idle.counters, handled)
            nursery.cancel_scope.cancel()
    finally:
        listener.close()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trio_sse.server" and text in r.getMessage()]


async def test_an_episode_of_failed_accepts_logs_one_line_when_it_starts_and_one_when_it_ends(
    autojump_clock, caplog: pytest.LogCaptureFixture, reserve: ReserveDescriptor
) -> None:
    caplog.set_level(logging.WARNING, "trio_sse.server")
    counters = ServerCounters()
    listener = ScriptedListener(*[EMFILE] * 50, LIVE, *[EMFILE] * 20, LIVE)
    idle = IdleConnections(1000, counters)
    for name in range(1000):  # room is made by closing idle connections (no accept through the reserve)
        idle.add(FakeConnection(name, []))
    async with running_loop(listener, idle, reserve) as loop:
        await trio.sleep(0.9)  # the 70 failures take 0.7 s; the episode ends 1 s after the last
        # Accepts that succeed between failures do not end the episode: still one start line.
        assert len(loop.handled) == 2
        assert len(lines(caplog, "out of descriptors (RLIMIT_NOFILE")) == 1
        assert lines(caplog, "accepting again") == []
        await trio.sleep(EPISODE_QUIET * 2)
        (ended,) = lines(caplog, "accepting again")
        assert ended.startswith("accepting again: 70 accepts failed in 0.69 s out of descriptors, 560 idle")
        assert (counters.descriptor_episodes, counters.failed_accepts) == (1, 70)

        # Retried every RETRY_INTERVAL, not every 0.1 s as trio.serve_listeners does.
        gaps = [b - a for a, b in zip(listener.attempts, listener.attempts[1:50], strict=False)]
        assert gaps == pytest.approx([RETRY_INTERVAL] * 49, abs=0.002)

        listener.then(EMFILE, LIVE)  # a second shortage is a second episode
        await trio.sleep(EPISODE_QUIET * 2)
        assert len(lines(caplog, "out of descriptors (RLIMIT_NOFILE")) == 2
        assert len(lines(caplog, "accepting again")) == 2
        assert counters.descriptor_episodes == 2


async def test_out_of_descriptors_closes_the_oldest_idle_connections_a_batch_per_failed_accept(
    autojump_clock, reserve: ReserveDescriptor
) -> None:
    closed: list[int] = []
    counters = ServerCounters()
    idle = IdleConnections(100, counters)
    for name in range(3 * EVICT_BATCH):
        idle.add(FakeConnection(name, closed))
    async with running_loop(ScriptedListener(EMFILE, EMFILE, LIVE), idle, reserve) as loop:
        await trio.sleep(1)
        assert closed == list(range(2 * EVICT_BATCH))  # oldest first
        assert len(idle) == EVICT_BATCH
        assert counters.idle_closed_for_descriptors == 2 * EVICT_BATCH
        assert len(loop.handled) == 1


async def test_with_nothing_idle_a_pending_connection_is_closed_through_the_reserve_descriptor(
    autojump_clock, reserve: ReserveDescriptor
) -> None:
    counters = ServerCounters()
    listener = ScriptedListener(EMFILE, LIVE)  # the connection the reserve lets through
    async with running_loop(listener, IdleConnections(10, counters), reserve) as loop:
        await trio.sleep(1)
        (client,) = listener.clients
        client.settimeout(5)
        assert client.recv(1) == b""  # closed at once, not left hanging in the backlog
        assert counters.refused_at_capacity == 1
        assert loop.handled == []


async def test_a_connection_whose_client_has_already_closed_it_is_closed_at_accept_without_a_task(
    autojump_clock, reserve: ReserveDescriptor
) -> None:
    counters = ServerCounters()
    listener = ScriptedListener(*[GONE] * 100, LIVE, GONE)
    async with running_loop(listener, IdleConnections(10, counters), reserve) as loop:
        await trio.sleep(1)
        assert counters.closed_before_reading == 101
        assert len(loop.handled) == 1  # only the live one gets hypercorn's connection


async def test_an_accept_error_of_one_connection_is_skipped(autojump_clock, reserve: ReserveDescriptor) -> None:
    listener = ScriptedListener(OSError(errno.ECONNABORTED, "Software caused connection abort"), LIVE)
    async with running_loop(listener, IdleConnections(10, ServerCounters()), reserve) as loop:
        await trio.sleep(1)
        assert len(loop.handled) == 1


async def test_an_accept_error_that_is_not_a_shortage_ends_the_loop(autojump_clock, reserve: ReserveDescriptor) -> None:
    listener = ScriptedListener(OSError(errno.EBADF, "Bad file descriptor"))
    with pytest.RaisesGroup(OSError):
        async with running_loop(listener, IdleConnections(10, ServerCounters()), reserve):
            await trio.sleep_forever()


def test_reserve_descriptor_holds_one_descriptor_and_takes_it_back_after_refusing() -> None:
    before = len(os.listdir("/proc/self/fd"))
    reserve = ReserveDescriptor()
    try:
        assert len(os.listdir("/proc/self/fd")) == before + 1
        with socket.create_server(("127.0.0.1", 0)) as raw:
            raw.setblocking(False)
            assert reserve.refuse_one(raw) is False  # nothing pending
            client = socket.create_connection(raw.getsockname())
            try:
                assert reserve.refuse_one(raw) is True
                client.settimeout(5)
                assert client.recv(1) == b""
            finally:
                client.close()
        assert len(os.listdir("/proc/self/fd")) == before + 1
    finally:
        reserve.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_idle_registry_closes_the_oldest_beyond_its_limit_and_a_reused_connection_becomes_the_newest() -> None:
    closed: list[int] = []
    counters = ServerCounters()
    idle = IdleConnections(2, counters)
    a, b, c, d = (FakeConnection(n, closed) for n in range(4))
    idle.add(a)
    idle.add(b)
    idle.add(a)  # idle again after another request: now the newest
    idle.add(c)
    assert closed == [1]
    idle.discard(a)  # a request started on it
    idle.add(d)
    assert closed == [1]
    assert (a in idle, c in idle, d in idle) == (False, True, True)
    assert counters.idle_closed_at_limit == 1


def test_server_figures_report_idle_connections_and_the_process_counters() -> None:
    figures = hypercorn_trio.server_figures()
    assert set(figures) >= {
        "idle_connections",
        "idle_connection_limit",
        "descriptor_episodes",
        "failed_accepts",
        "refused_at_capacity",
        "idle_closed_at_limit",
        "idle_closed_for_descriptors",
        "idle_timed_out",
    }


@given(
    limit=st.integers(min_value=1, max_value=5),
    ops=st.lists(st.tuples(st.sampled_from(["add", "discard", "evict"]), st.integers(0, 9)), max_size=60),
)
def test_idle_registry_matches_a_model_oldest_idle_first(limit: int, ops: list[tuple[str, int]]) -> None:
    closed: list[int] = []
    idle = IdleConnections(limit, ServerCounters())
    connections = [FakeConnection(n, closed) for n in range(10)]
    model: list[int] = []  # idle connections, oldest first
    expected_closed: list[int] = []
    for op, n in ops:
        if op == "add":
            if n in model:
                model.remove(n)
            model.append(n)
            while len(model) > limit:
                expected_closed.append(model.pop(0))
            idle.add(connections[n])
        elif op == "discard":
            if n in model:
                model.remove(n)
            idle.discard(connections[n])
        else:
            count = n % 3
            oldest = model[:count]
            expected_closed += oldest
            del model[:count]
            assert idle.close_oldest(count) == len(oldest)
        assert closed == expected_closed
        assert len(idle) == len(model) <= limit
        assert all((c.name in model) == (c in idle) for c in connections)
