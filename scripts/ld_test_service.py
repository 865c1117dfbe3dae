"""LaunchDarkly SSE contract-test service for trio_sse.client.

LaunchDarkly's harness (``github.com/launchdarkly/sse-contract-tests``, Go) tests an SSE
client through a "test service" it drives over HTTP, as its ``docs/service_spec.md``
describes. This is that service for :func:`trio_sse.client.open_url`:

    python scripts/ld_test_service.py --port 8000 &
    sse-test-harness --url http://localhost:8000 --stop-service-at-end

- ``GET /``: status, with the client's capabilities.
- ``DELETE /``: the service exits.
- ``POST /``: create a stream (``streamUrl``, ``callbackUrl``, ``initialDelayMs``,
  ``readTimeoutMs``, ``lastEventId``, ``headers``, ``method``, ``body``); answers 201
  with its ``Location``. The client's events, comments and errors are POSTed to
  ``callbackUrl/1``, ``/2``, ... in order.
- ``POST /streams/N``: a command; only ``restart`` is known.
- ``DELETE /streams/N``: close that stream.

Its behaviours are also checked without Go by ``tests/client/test_contract.py`` (the
harness's tests, ported) and ``tests/client/test_ld_service.py`` (this service, against
a fake harness). An ASGI app under hypercorn, as trio_sse is served; listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from typing import Any

import attrs
import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from trio_sse.client import SSEClientError, State, StateChange, open_url

CAPABILITIES = [
    "bom",
    "comments",
    "headers",
    "last-event-id",
    "post",
    "report",
    "read-timeout",
    "restart",
    "server-directed-shutdown-request",
]


@attrs.define(eq=False)
class Stream:
    """One client instance: the source, its callback counter and its cancel scope."""

    params: dict[str, Any]
    http: httpx.AsyncClient
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    restart_requested: bool = False
    _source: Any = None

    async def run(self) -> None:
        """Run the client until DELETE; callbacks go out one at a time, in order."""
        send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._post_callbacks, receive)
                await self._read(send.send_nowait)

    async def _read(self, report: Any) -> None:
        params = self.params

        def on_state(change: StateChange) -> None:
            if change.state is State.ERROR:
                report({"kind": "error", "error": str(change.error)})

        options: dict[str, Any] = {
            "method": params.get("method") or "GET",
            "body": params.get("body"),
            "headers": params.get("headers") or {},
            "last_event_id": params.get("lastEventId") or None,
            "on_comment": lambda text: report({"kind": "comment", "comment": text}),
            "on_state": on_state,
            # The harness sends 7 MB lines ("large message"): above the 1 MiB default bounds.
            "max_line_bytes": None,
            "max_event_bytes": None,
        }
        if params.get("initialDelayMs") is not None:
            options["initial_delay"] = params["initialDelayMs"] / 1000
        if params.get("readTimeoutMs") is not None:
            options["silence_timeout"] = params["readTimeoutMs"] / 1000
        try:
            async with open_url(params["streamUrl"], **options) as source:
                self._source = source
                async for event in source:
                    report(
                        {
                            "kind": "event",
                            "event": {"type": event.type, "data": event.data, "id": event.last_event_id or ""},
                        }
                    )
        except SSEClientError:
            pass  # reported through on_state; the stream stays until the harness deletes it
        await trio.sleep_forever()

    def restart(self) -> None:
        if self._source is not None:
            self._source.restart()

    async def _post_callbacks(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        base = self.params["callbackUrl"].rstrip("/")
        counter = 0
        async for message in receive:
            counter += 1
            try:
                await self.http.post(f"{base}/{counter}", json=message)
            except httpx.HTTPError:
                pass  # the harness has moved on to another test


@attrs.define(eq=False)
class Service:
    nursery: trio.Nursery
    http: httpx.AsyncClient
    streams: dict[str, Stream] = attrs.Factory(dict)
    created: int = 0
    stopped: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """The service as an ASGI app: hypercorn does the HTTP, :meth:`route` the rest."""
        if scope["type"] == "lifespan":  # nothing to start or stop: acknowledge both
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body, more = body + message["body"], message["more_body"]
        status, headers, payload = self.route(scope["method"], scope["path"], body)
        head = [(b"content-length", str(len(payload)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head, "trailers": False})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def route(self, method: str, path: str, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if path == "/" and method == "GET":
            return 200, [(b"content-type", b"application/json")], json.dumps({"capabilities": CAPABILITIES}).encode()
        if path == "/" and method == "DELETE":
            self.stopped.set()
            return 204, [], b""
        if path == "/" and method == "POST":
            try:
                params = json.loads(body)
                assert isinstance(params, dict) and params.get("streamUrl") and params.get("callbackUrl")
            except (ValueError, AssertionError):
                return 400, [], b"streamUrl and callbackUrl are required"
            self.created += 1
            name = str(self.created)
            stream = self.streams[name] = Stream(params, self.http)
            self.nursery.start_soon(stream.run)
            return 201, [(b"location", f"/streams/{name}".encode())], b""
        stream_name = path.removeprefix("/streams/")
        stream = self.streams.get(stream_name) if path.startswith("/streams/") else None
        if stream is None:
            return 404, [], b""
        if method == "DELETE":
            stream.scope.cancel()
            del self.streams[stream_name]
            return 204, [], b""
        if method == "POST":
            try:
                command = json.loads(body).get("command")
            except (ValueError, AttributeError):
                command = None
            if command == "restart":
                stream.restart()
                return 202, [], b""
            return 400, [], b"unknown command"
        return 405, [], b""


async def serve(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``DELETE /`` (or cancellation); reports the port it listens on."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    async with httpx.AsyncClient(timeout=5) as http, trio.open_nursery() as streams:
        service = Service(streams, http)
        async with trio.open_nursery() as server:
            binds = await server.start(
                partial(hypercorn.trio.serve, service, config, shutdown_trigger=service.stopped.wait)
            )
            task_status.started(int(binds[0].rsplit(":", 1)[1]))
        streams.cancel_scope.cancel()  # hypercorn has answered the DELETE and stopped: end the clients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    trio.run(serve, parser.parse_args().port)


if __name__ == "__main__":
    main()
