"""Measurement only: how much of a single publish hypercorn's per-request work could give back.

NOT used by trio_sse. It monkeypatches hypercorn 0.18's trio worker in this process,
then runs ``trio-sse serve`` with the remaining arguments, so the profile in
docs/performance.md ("Single publishes") can be reproduced:

    PYTHONPATH=$PWD .venv/bin/python scripts/hypercorn_levers.py [--levers 1,2,3] serve --port 8000 ...

Levers (each a change hypercorn itself would have to make, or trio_sse would have to
own a fork of its HTTP/1.1 worker for):

1. no socket write for an empty body chunk (hypercorn sends ``b""`` through its send
   lock and a shielded ``send_all`` for the end of every Content-Length response);
2. the keep-alive idle timeout as one deadline per connection instead of a task that is
   cancelled when a request starts and spawned again (``nursery.start``) after it ends;
3. the response head written together with the first body bytes (one ``send`` instead
   of two per small response).
"""

from __future__ import annotations

import math
import runpy
import sys
from typing import Any

import h11
import trio
from hypercorn.events import RawData, Updated
from hypercorn.protocol import h11 as hyper_h11
from hypercorn.trio import tcp_server


def apply(levers: set[str]) -> None:
    server_cls: Any = tcp_server.TCPServer
    original_send = server_cls.protocol_send

    async def protocol_send(self: Any, event: Any) -> None:
        if "1" in levers and isinstance(event, RawData) and not event.data:
            return
        if "2" in levers and isinstance(event, Updated) and getattr(self, "_idle_scope", None) is not None:
            timeout = self.config.keep_alive_timeout
            self._idle_scope.deadline = trio.current_time() + timeout if event.idle else math.inf
            return
        await original_send(self, event)

    server_cls.protocol_send = protocol_send

    if "2" in levers:

        class IdleDeadline:
            def __init__(self, server: Any) -> None:
                self.server = server

            async def restart(self, task_group: Any, action: Any) -> None:
                server = self.server
                if getattr(server, "_idle_scope", None) is not None:
                    return

                async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    deadline = trio.current_time() + server.config.keep_alive_timeout
                    with trio.CancelScope(deadline=deadline) as scope:
                        server._idle_scope = scope
                        task_status.started()
                        await server.context.terminated.wait()
                    with trio.CancelScope(shield=True):
                        await server._initiate_server_close()

                await task_group._nursery.start(watch)

            async def stop(self) -> None:
                pass

        original_init = server_cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            self.idle_task = IdleDeadline(self)

        server_cls.__init__ = __init__

    if "3" in levers:
        protocol_cls: Any = hyper_h11.H11Protocol
        original_event = protocol_cls._send_h11_event

        async def _send_h11_event(self: Any, event: Any) -> None:
            held = getattr(self, "_held", b"")
            if type(event) is h11.Response or held:
                try:
                    data = self.connection.send(event)
                except h11.LocalProtocolError:
                    if self.connection.their_state != h11.ERROR:
                        raise
                    data = b""
                if type(event) is h11.Response:
                    self._held = held + data
                    return
                self._held = b""
                await self.send(RawData(data=held + data))
                return
            await original_event(self, event)

        protocol_cls._send_h11_event = _send_h11_event


def main() -> None:
    args = sys.argv[1:]
    levers = {"1", "2", "3"}
    if args[:1] == ["--levers"]:
        levers = set(args[1].split(","))
        args = args[2:]
    apply(levers)
    sys.argv = ["trio-sse", *args]
    runpy.run_module("trio_sse", run_name="__main__")


if __name__ == "__main__":
    main()
