"""The audit log (issue 5): one JSON line on ``trio_sse.audit`` for every refused request,
on every endpoint and status, and for every admin action; who, what, why, status."""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import attrs
import jwt
import orjson
import pytest

from trio_sse.testing import SSETestClient

SECRET = "audit-secret-of-reasonable-length-0123456789"
COMMIT = {"event_type": "commit", "data": 1}


def bearer(sub: str, **rights: Any) -> dict[str, str]:
    sse = {"projects": ["*"], "publish": False, "admin": False, **rights}
    value = jwt.encode({"sub": sub, "exp": int(time.time()) + 600, "sse": sse}, SECRET, algorithm="HS256")
    return {"authorization": f"Bearer {value}"}


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "trio_sse.audit"]


@attrs.frozen
class Case:
    """One refusal: settings, requests made first (``hold`` keeps streams open), the refused request."""

    settings: dict[str, Any]
    method: str
    path: str
    status: int
    error: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    prelude: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    hold: int = 0
    who: str = "127.0.0.1"


AUTH = {"jwt_secret": SECRET}
LIVE = "LIVE-CONNECTION"  # replaced by the id of a stream the case holds open
CASES = {
    # GET /sse/events (lean ASGI handler)
    "stream 400": Case({}, "GET", "/sse/events", 400, "invalid_request", {"query": "types="}),
    "stream 401": Case(AUTH, "GET", "/sse/events", 401, "invalid_token"),
    "stream 403": Case(
        AUTH, "GET", "/sse/events", 403, "forbidden", {"headers": bearer("lim", projects=["p1"])}, who="lim"
    ),
    "stream 405": Case({}, "POST", "/sse/events", 405, "method_not_allowed"),
    "stream 422": Case({}, "GET", "/sse/events", 422, "unknown_event_types", {"query": "types=nope"}),
    "stream 429": Case({"client_connection_limit": 1}, "GET", "/sse/events", 429, "client_connection_limit", hold=1),
    "stream 503": Case({"connection_limit": 1}, "GET", "/sse/events", 503, "connection_limit", hold=1),
    # POST /sse/publish (lean ASGI handler)
    "publish 400": Case({}, "POST", "/sse/publish", 400, "invalid_json", {"body": b"{nope"}),
    "publish 401": Case(AUTH, "POST", "/sse/publish", 401, "invalid_token", {"json": COMMIT}),
    "publish 403": Case(
        AUTH, "POST", "/sse/publish", 403, "forbidden", {"json": COMMIT, "headers": bearer("rd")}, who="rd"
    ),
    "publish 405": Case({}, "GET", "/sse/publish", 405, "method_not_allowed"),
    "publish 413": Case({"max_body_bytes": 10}, "POST", "/sse/publish", 413, "body_too_large", {"json": COMMIT}),
    "publish 422": Case(
        {}, "POST", "/sse/publish", 422, "unknown_event_types", {"json": {"event_type": "x", "data": 1}}
    ),
    "publish 429": Case(
        {"publish_rate": 1},
        "POST",
        "/sse/publish",
        429,
        "publish_rate",
        {"json": COMMIT},
        prelude=(("POST", "/sse/publish", {"json": COMMIT}),),
    ),
    # POST /sse/subscribe (Quart)
    "subscribe 400": Case({}, "POST", "/sse/subscribe", 400, "invalid_json", {"body": b"["}),
    "subscribe 401": Case(AUTH, "POST", "/sse/subscribe", 401, "invalid_token", {"json": {}}),
    "subscribe 403": Case(
        AUTH,
        "POST",
        "/sse/subscribe",
        403,
        "forbidden",
        {"json": {"connection_id": LIVE, "event_types": ["commit"]}, "headers": bearer("mallory")},
        hold=1,
        who="mallory",
    ),
    "subscribe 404": Case(
        {}, "POST", "/sse/subscribe", 404, "unknown_connection", {"json": {"connection_id": "x", "event_types": []}}
    ),
    "subscribe 405": Case({}, "GET", "/sse/subscribe", 405, "method_not_allowed"),
    "subscribe 413": Case(
        {"max_body_bytes": 10},
        "POST",
        "/sse/subscribe",
        413,
        "body_too_large",
        {"json": {"connection_id": "x", "event_types": []}},
    ),
    "subscribe 422": Case(
        {},
        "POST",
        "/sse/subscribe",
        422,
        "unknown_event_types",
        {"json": {"connection_id": LIVE, "event_types": ["nope"]}},
        hold=1,
    ),
    # POST /sse/test-event (Quart)
    "test-event 400": Case({}, "POST", "/sse/test-event", 400, "invalid_json", {"body": b"{"}),
    "test-event 401": Case(AUTH, "POST", "/sse/test-event", 401, "invalid_token"),
    "test-event 403": Case(
        {**AUTH, "test_event": "admin"},
        "POST",
        "/sse/test-event",
        403,
        "forbidden",
        {"headers": bearer("pub", publish=True)},
        who="pub",
    ),
    "test-event 413": Case({"max_body_bytes": 10}, "POST", "/sse/test-event", 413, "body_too_large", {"json": COMMIT}),
    "test-event 422": Case({}, "POST", "/sse/test-event", 422, "unknown_event_types", {"json": {"event_type": "x"}}),
    "test-event 429": Case(
        {"publish_rate": 1}, "POST", "/sse/test-event", 429, "publish_rate", prelude=(("POST", "/sse/test-event", {}),)
    ),
    # GET /sse/connections (Quart)
    "connections 400": Case({}, "GET", "/sse/connections", 400, "invalid_request", {"query": "limit=x"}),
    "connections 401": Case(AUTH, "GET", "/sse/connections", 401, "invalid_token"),
    "connections 403": Case(AUTH, "GET", "/sse/connections", 403, "forbidden", {"headers": bearer("u")}, who="u"),
    # GET /sse/stats/stream (lean ASGI handler) and GET /sse/dashboard (Quart): admin-only
    "stats stream 401": Case(AUTH, "GET", "/sse/stats/stream", 401, "invalid_token"),
    "stats stream 403": Case(AUTH, "GET", "/sse/stats/stream", 403, "forbidden", {"headers": bearer("u")}, who="u"),
    "dashboard 403": Case(AUTH, "GET", "/sse/dashboard", 403, "forbidden", {"headers": bearer("u")}, who="u"),
    # the read-only routes, unknown paths, CORS preflight
    "stats 405": Case({}, "POST", "/sse/stats", 405, "method_not_allowed"),
    "health 405": Case({}, "PUT", "/sse/health", 405, "method_not_allowed"),
    "metrics 405": Case({}, "DELETE", "/metrics", 405, "method_not_allowed"),
    "unknown 404": Case({}, "GET", "/nowhere", 404, "not_found"),
    "preflight 403": Case(
        {"cors_origins": ("https://ok.example",)},
        "OPTIONS",
        "/sse/publish",
        403,
        "origin_not_allowed",
        {"headers": {"origin": "https://evil.example", "access-control-request-method": "POST"}},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_every_refusal_writes_one_audit_line(client_factory, caplog: pytest.LogCaptureFixture, name: str) -> None:
    case = CASES[name]
    caplog.set_level(logging.INFO, logger="trio_sse.audit")
    async with client_factory(**case.settings) as (_, client), AsyncExitStack() as stack:
        held = [await stack.enter_async_context(client.stream(headers=bearer("owner"))) for _ in range(case.hold)]
        for stream in held:
            assert stream.status == 200
        for method, path, kwargs in case.prelude:
            assert (await client.request(method, path, **kwargs)).status < 300
        kwargs = case.kwargs
        if held and "json" in kwargs:
            kwargs = {**kwargs, "json": {**kwargs["json"], "connection_id": held[0].headers["x-sse-connection-id"]}}
        caplog.clear()
        reply = await client.request(case.method, case.path, **kwargs)
    assert (reply.status, reply.json()["error"]) == (case.status, case.error)
    (line,) = audit_lines(caplog)
    assert set(line) >= {"ts", "event", "who", "what", "why", "status"}
    assert datetime.fromisoformat(line["ts"]).utcoffset() is not None
    assert (line["event"], line["status"], line["error"]) == ("request_refused", case.status, case.error)
    assert line["what"] == f"{case.method} {case.path}"
    assert line["who"] == case.who
    assert line["why"] == reply.json()["message"]


async def test_each_admin_action_writes_one_audit_line_naming_the_admin(
    client_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.audit")
    admin = bearer("root", admin=True)
    async with client_factory(jwt_secret=SECRET, test_event="admin") as (_, client):
        async with client.stream(headers=bearer("alice")) as stream:
            connection_id = stream.headers["x-sse-connection-id"]
            caplog.clear()
            assert (await client.get("/sse/connections", headers=admin, query="project=p1")).status == 200
            change = {"connection_id": connection_id, "event_types": ["commit"]}
            assert (await client.post("/sse/subscribe", json=change, headers=admin)).status == 200
            assert (await client.post("/sse/subscribe", json=change, headers=bearer("alice"))).status == 200
            assert (await client.post("/sse/test-event", headers=admin)).status == 202
    lines = audit_lines(caplog)
    assert [(line["event"], line["action"], line["who"], line["status"]) for line in lines] == [
        ("admin_action", "list_connections", "root", 200),
        ("admin_action", "change_foreign_subscription", "root", 200),  # alice changing her own is not one
        ("admin_action", "test_event", "root", 202),
    ]
    assert lines[0]["what"] == "GET /sse/connections" and lines[0]["project"] == "p1"
    assert lines[1]["owner"] == "alice" and lines[1]["connection_id"] == connection_id
    assert lines[2]["event_type"] == "system_status"


async def test_listing_connections_is_audited_with_the_address_when_auth_is_off(
    client: SSETestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.audit")
    assert (await client.get("/sse/connections")).status == 200
    (line,) = audit_lines(caplog)
    assert (line["event"], line["who"], line["what"]) == ("admin_action", "127.0.0.1", "GET /sse/connections")


async def test_an_audit_line_never_holds_the_query_string(client_factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with client_factory(jwt_secret=SECRET) as (_, client):
        await client.get("/sse/connections", query={"access_token": "leaked-looking-token-value", "limit": "x"})
        await client.post("/sse/publish", query={"access_token": "leaked-looking-token-value"}, json=COMMIT)
    assert len(audit_lines(caplog)) == 2
    assert "leaked-looking-token-value" not in caplog.text


async def test_every_field_of_an_audit_line_is_cut_so_no_request_can_make_a_long_line(
    client_factory, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 11, item 9: refusal messages quote what the client sent (a 1 MB unknown event
    # type, a 1 MB connection id) and a sub is whatever the issuer signed: one line was 1 MB.
    caplog.set_level(logging.INFO, logger="trio_sse.audit")
    huge, long_sub = "x" * 1_000_000, "s" * 4000
    async with client_factory(jwt_secret=SECRET, max_body_bytes=2 * 1024 * 1024) as (_, client):
        publisher = bearer(long_sub, publish=True)
        reply = await client.post("/sse/publish", json={"event_type": huge, "data": 1}, headers=publisher)
        assert reply.status == 422
        reply = await client.post("/sse/subscribe", json={"connection_id": huge, "event_types": []}, headers=publisher)
        assert reply.status == 404
        assert (await client.get("/" + "a" * 15_000)).status == 404  # within max_head_bytes
        async with client.stream(headers=bearer(long_sub)) as stream:
            change = {"connection_id": stream.headers["x-sse-connection-id"], "event_types": ["commit"]}
            assert (await client.post("/sse/subscribe", json=change, headers=bearer("root", admin=True))).status == 200
    raw = [r.getMessage() for r in caplog.records if r.name == "trio_sse.audit"]
    lines = [orjson.loads(line) for line in raw]
    assert [line["status"] for line in lines] == [422, 404, 404, 200]
    assert lines[3]["action"] == "change_foreign_subscription"
    assert max(len(line) for line in raw) < 2048
    for line in lines:
        for name, value in line.items():
            if isinstance(value, str):
                assert len(value) <= 256 + len("GET "), (name, len(value))
    assert lines[0]["who"] == "s" * 255 + "…" and lines[3]["owner"] == "s" * 255 + "…"
    assert lines[0]["why"].startswith("unknown event types: xxx") and lines[0]["why"].endswith("x…")


async def test_an_audit_line_stays_one_line_for_readers_that_break_lines_at_nel_or_u2028(
    client: SSETestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sse.audit")
    async with client.stream(query={"types": "a\u2028b\x85c\u2029d"}) as stream:
        assert stream.status == 422  # the message names the unknown type as given
    (raw,) = [r.getMessage() for r in caplog.records if r.name == "trio_sse.audit"]
    assert len(raw.splitlines()) == 1 and not any(c in raw for c in "\u2028\u2029\x85")
    assert "\\u2028" in raw and "\\u0085" in raw and "\\u2029" in raw
    assert orjson.loads(raw)["why"] == "unknown event types: a\u2028b\x85c\u2029d"
