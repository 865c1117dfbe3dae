"""CORS (contract section 6): allowed origins, preflight for the POST endpoints, credentials only when listed."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import aconnect_sse

ALLOWED = "https://app.example"
DENIED = "https://evil.example"


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }


@pytest.mark.parametrize("path", ["/sse/publish", "/sse/subscribe", "/sse/test-event"])
async def test_preflight_from_a_listed_origin_allows_post_with_credentials(client_factory, path: str) -> None:
    async with client_factory(cors_origins=(ALLOWED,)) as (_, client):
        reply = await client.request("OPTIONS", path, headers=preflight_headers(ALLOWED))
        assert reply.status == 204
        assert reply.headers["access-control-allow-origin"] == ALLOWED
        assert reply.headers["access-control-allow-credentials"] == "true"
        assert "POST" in reply.headers["access-control-allow-methods"]
        assert reply.headers["access-control-allow-headers"] == "content-type, authorization"
        assert reply.headers["vary"] == "Origin"


async def test_preflight_from_an_origin_not_listed_is_refused_with_json(client_factory) -> None:
    async with client_factory(cors_origins=(ALLOWED,)) as (_, client):
        reply = await client.request("OPTIONS", "/sse/publish", headers=preflight_headers(DENIED))
        assert reply.status == 403
        assert reply.json()["error"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in reply.headers


async def test_actual_requests_carry_cors_headers_only_for_allowed_origins(client_factory) -> None:
    async with client_factory(cors_origins=(ALLOWED,)) as (_, client):
        body = {"event_type": "commit", "data": 1}
        ok = await client.post("/sse/publish", json=body, headers={"origin": ALLOWED})
        assert ok.status == 202
        assert ok.headers["access-control-allow-origin"] == ALLOWED
        assert ok.headers["access-control-allow-credentials"] == "true"
        denied = await client.post("/sse/publish", json=body, headers={"origin": DENIED})
        assert "access-control-allow-origin" not in denied.headers  # the browser withholds it
        assert denied.headers["vary"] == "Origin"
        stats = await client.get("/sse/stats", headers={"origin": ALLOWED})
        assert stats.headers["access-control-allow-origin"] == ALLOWED
        async with client.stream(headers={"origin": ALLOWED}) as stream:
            assert stream.headers["access-control-allow-origin"] == ALLOWED
            assert stream.headers["access-control-expose-headers"] == "X-SSE-Connection-Id, Last-Event-ID"
        refused = await client.get("/sse/events?types=nope", headers={"origin": ALLOWED})
        assert refused.status == 422
        assert refused.headers["access-control-allow-origin"] == ALLOWED  # so the page can read the error


async def test_wildcard_origin_allows_any_origin_without_credentials(client) -> None:
    reply = await client.get("/sse/health", headers={"origin": DENIED})
    assert reply.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in reply.headers
    preflight = await client.request("OPTIONS", "/sse/publish", headers=preflight_headers(DENIED))
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


async def test_no_origins_configured_means_same_origin_only(client_factory) -> None:
    async with client_factory(cors_origins=()) as (_, client):
        reply = await client.get("/sse/health", headers={"origin": ALLOWED})
        assert "access-control-allow-origin" not in reply.headers
        assert (await client.request("OPTIONS", "/sse/publish", headers=preflight_headers(ALLOWED))).status == 403


async def test_a_cross_origin_stream_over_real_hypercorn_keeps_the_direct_write_path(live_server_factory) -> None:
    async with live_server_factory(cors_origins=(ALLOWED,)) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            async with aconnect_sse(http, "GET", "/sse/events", headers={"origin": ALLOWED}) as source:
                assert source.response.headers["access-control-allow-origin"] == ALLOWED
                events = source.aiter_sse()
                assert (await anext(events)).event == "connected"
                reply = await http.post("/sse/publish", json={"event_type": "commit", "data": {"n": 1}})
                event = await anext(events)
                assert (event.event, event.id) == ("commit", reply.json()["id"])
                (connection,) = server.hub.connections()
                assert connection._direct is not None  # CORS headers did not cost the direct-write path
