"""``scripts/ld_test_service.py`` against a fake harness, as ``docs/service_spec.md`` of
LaunchDarkly's sse-contract-tests describes the exchange (the Go harness itself cannot be
built on this machine: its modules cannot be downloaded here).

The fake harness is :mod:`stream_server`: its stream path plays the harness's stream
endpoint, canned ``/cb/N`` routes play the callback endpoint (each POST recorded).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any

import httpx
import trio
from stream_server import Canned, StreamServer, stream_server

SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "ld_test_service.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("ld_test_service", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _callbacks(server: StreamServer, count: int) -> list[dict[str, Any]]:
    calls = await server.wait_requests("/cb/", count)
    assert [r.path for r in calls] == [f"/cb/{n}" for n in range(1, len(calls) + 1)]  # counted from 1
    return [json.loads(r.body) for r in calls]


async def test_the_service_runs_the_client_as_the_harness_expects() -> None:
    service = _load()
    callbacks = {f"/cb/{n}": Canned(202) for n in range(1, 10)}
    async with stream_server(callbacks) as harness, trio.open_nursery() as nursery:
        port = await nursery.start(service.serve, 0)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            status = (await http.get("/")).json()
            assert {"comments", "post", "restart", "read-timeout"} <= set(status["capabilities"])
            params = {
                "streamUrl": harness.url(),
                "callbackUrl": harness.url("/cb"),
                "initialDelayMs": 0,
                "method": "POST",
                "body": "{}",
                "headers": {"content-type": "application/json", "x-a": "1"},
                "lastEventId": "0",
            }
            created = await http.post("/", json=params)
            assert created.status_code == 201
            instance = created.headers["location"]
            stream1 = await harness.await_connection()
            request = stream1.request
            assert (request.method, request.body, request.header("x-a"), request.header("last-event-id")) == (
                "POST",
                b"{}",
                "1",
                "0",
            )
            await stream1.send("id: a\ndata: hi\n\n:note\n")
            assert await _callbacks(harness, 2) == [
                {"kind": "event", "event": {"type": "message", "data": "hi", "id": "a"}},
                {"kind": "comment", "comment": "note"},
            ]
            assert (await http.post(instance, json={"command": "restart"})).is_success
            stream2 = await harness.await_connection()
            assert stream2.request.header("last-event-id") == "a"
            assert (await http.post(instance, json={"command": "nope"})).status_code == 400
            await stream2.break_connection()
            assert (await _callbacks(harness, 3))[2]["kind"] == "error"
            await harness.await_connection()
            assert (await http.delete(instance)).is_success
            assert (await http.delete(instance)).status_code == 404
            assert (await http.post("/", json={"tag": "no urls"})).status_code == 400
            assert (await http.delete("/")).is_success  # the service stops: serve() returns
