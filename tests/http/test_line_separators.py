"""Ids and names that would be line breaks for someone (issue 11, item 9): NEL (U+0085), the
Unicode line and paragraph separators (U+2028, U+2029) and every other C0 or C1 control are
refused wherever a project id or an event id comes in, as CR and LF are — a 400 JSON error,
nothing published, no stream, no filter changed. They went raw into the ``connected`` and
``subscription_updated`` events (orjson writes them unescaped), where ``str.splitlines()``
and JavaScript before ES2019 see line breaks."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from http_support import assert_error

from trio_sse.core.errors import InvalidValue
from trio_sse.testing import SSETestClient

SEPARATORS = {"NEL": "\x85", "LS": "\u2028", "PS": "\u2029", "C1": "\x9b", "VT": "\x0b", "DEL": "\x7f"}
SECRET = "separators-secret-of-reasonable-length-0123"


def bearer(projects: list[str]) -> dict[str, str]:
    claims = {"sub": "limited", "exp": int(time.time()) + 600, "sse": {"projects": projects, "publish": True}}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


async def refused_stream(client: SSETestClient, **kwargs: Any) -> dict[str, Any]:
    async with client.stream(**kwargs) as stream:
        assert stream.status == 400, stream.status
        body: dict[str, Any] = stream.json
        assert body["error"] == "invalid_request"
        return body


@pytest.mark.parametrize("char", list(SEPARATORS.values()), ids=list(SEPARATORS))
async def test_a_project_id_with_a_line_separator_is_refused_wherever_it_comes_in(client_factory, char: str) -> None:
    project = f"p{char}1"
    async with client_factory() as (hub, client):
        bad = {"event_type": "commit", "data": 2, "project_id": project}
        for body in (bad, {"events": [{"event_type": "commit", "data": 1}, bad]}):
            assert_error(await client.post("/sse/publish", json=body), 400)
        assert_error(await client.post("/sse/test-event", json={"project_id": project}), 400)
        with pytest.raises(InvalidValue):
            await hub.publish("commit", 1, project_id=project)
        for name in ("project", "project_id"):
            message = (await refused_stream(client, query={name: project}))["message"]
            assert "without control characters or line separators" in message
        assert_error(await client.get("/sse/connections", query={"project": project}), 400)
        async with client.stream() as stream:
            connection_id = stream.headers["x-sse-connection-id"]
            change = {"connection_id": connection_id, "event_types": ["commit"], "project_id": project}
            assert_error(await client.post("/sse/subscribe", json=change), 400)
            assert hub.describe(hub.get_connection(connection_id))["project_id"] is None  # unchanged
        stats = hub.snapshot()
        assert (stats["events_published"], stats["total_connections"]) == (0, 1)


@pytest.mark.parametrize("char", list(SEPARATORS.values()), ids=list(SEPARATORS))
async def test_a_last_event_id_with_a_line_separator_is_refused_wherever_it_comes_in(client_factory, char: str) -> None:
    last = f"1-0{char}"  # echoed back in the data of stream_reset when unknown
    async with client_factory() as (hub, client):
        await refused_stream(client, last_event_id=last)  # the Last-Event-ID header (UTF-8)
        await refused_stream(client, query={"last_event_id": last})
        async with client.stream() as stream:
            connection_id = stream.headers["x-sse-connection-id"]
            change = {"connection_id": connection_id, "event_types": ["commit"], "last_event_id": last}
            reply = await client.post("/sse/subscribe", json=change)
            assert "without control characters or line separators" in assert_error(reply, 400)["message"]
        assert hub.snapshot()["total_connections"] == 1


async def test_a_malformed_project_is_a_400_before_the_tokens_rights_are_checked(client_factory) -> None:
    async with client_factory(jwt_secret=SECRET) as (_, client):
        await refused_stream(client, query={"project": "p1\u2028"}, headers=bearer(["p1"]))
        async with client.stream(query={"project": "p1"}, headers=bearer(["p1"])) as stream:
            assert stream.status == 200
