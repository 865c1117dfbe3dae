"""``GET /sse/events`` through the in-process client: headers, preamble, filters, refusals."""

from __future__ import annotations

import json

import pytest

from trio_sse.testing import SSETestClient, TestStream

STREAM_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def assert_json_error(stream: TestStream, status: int) -> dict[str, object]:
    assert stream.status == status, stream.raw
    assert stream.headers["content-type"].startswith("application/json")
    assert "text/event-stream" not in stream.headers["content-type"]
    body = stream.json
    assert isinstance(body, dict) and isinstance(body.get("error"), str)
    return body


async def test_stream_is_200_with_exact_sse_headers_and_connection_id(client: SSETestClient) -> None:
    async with client.stream() as stream:
        assert stream.status == 200
        for name, value in STREAM_HEADERS.items():
            assert stream.headers[name] == value
        connected = await stream.next_event(timeout=5)
        assert connected.type == "connected"
        assert stream.headers["x-sse-connection-id"] == json.loads(connected.data)["connection_id"]


async def test_stream_first_bytes_are_retry_field(client: SSETestClient) -> None:
    async with client.stream() as stream:
        await stream.next_event(timeout=5)
        assert stream.raw.startswith(b"retry: 3000\n")


async def test_retry_field_follows_the_retry_setting(client_factory) -> None:
    async with client_factory(retry=1500) as (_, client), client.stream() as stream:
        connected = await stream.next_event(timeout=5)
        assert stream.raw.startswith(b"retry: 1500\n")
        assert connected.retry == 1500


async def test_connected_event_describes_filters_and_has_no_id_line(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit", "project": "p1"}) as stream:
        connected = await stream.next_event(timeout=5)
        assert connected.type == "connected"
        assert connected.id is None
        assert b"\nid:" not in stream.raw and not stream.raw.startswith(b"id:")
        data = json.loads(connected.data)
        assert set(data) == {"connection_id", "event_types", "project_id"}
        assert data["event_types"] == ["commit"]
        assert data["project_id"] == "p1"
        assert isinstance(data["connection_id"], str) and data["connection_id"]


async def test_without_types_the_stream_receives_every_registered_type(client: SSETestClient) -> None:
    async with client.stream() as stream:
        data = json.loads((await stream.next_event(timeout=5)).data)
        assert set(data["event_types"]) == {
            "file_change",
            "commit",
            "progress_update",
            "risk_alert",
            "task_update",
            "system_status",
        }
        assert data["project_id"] is None
        for event_type in ("commit", "risk_alert"):
            await client.publish(event_type, {"t": event_type})
        assert [e.type for e in await stream.events(2, timeout=5)] == ["commit", "risk_alert"]


@pytest.mark.parametrize(
    "query",
    ["types=commit,file_change", "types=commit&types=file_change", "types=commit,%20file_change&types=commit"],
)
async def test_types_filter_accepts_comma_separated_and_repeated_values(client: SSETestClient, query: str) -> None:
    async with client.stream(query=query) as stream:
        data = json.loads((await stream.next_event(timeout=5)).data)
        assert data["event_types"] == ["commit", "file_change"]
        await client.publish("risk_alert", {"n": 0})
        commit_id = await client.publish("commit", {"n": 1})
        file_id = await client.publish("file_change", {"n": 2})
        events = await stream.events(2, timeout=5)
        assert [(e.type, e.id) for e in events] == [("commit", commit_id), ("file_change", file_id)]
        assert stream.pending() == []


@pytest.mark.parametrize("param", ["project", "project_id"])
async def test_project_filter_gets_its_project_and_broadcasts_only(client: SSETestClient, param: str) -> None:
    async with client.stream(query={param: "p1"}) as stream:
        data = json.loads((await stream.next_event(timeout=5)).data)
        assert data["project_id"] == "p1"
        await client.publish("commit", {"n": 1}, project_id="p2")
        mine = await client.publish("commit", {"n": 2}, project_id="p1")
        broadcast = await client.publish("commit", {"n": 3})
        events = await stream.events(2, timeout=5)
        assert [e.id for e in events] == [mine, broadcast]
        assert [json.loads(e.data) for e in events] == [{"n": 2}, {"n": 3}]


async def test_same_project_under_both_names_is_accepted(client: SSETestClient) -> None:
    async with client.stream(query="project=p1&project_id=p1") as stream:
        assert stream.status == 200
        assert json.loads((await stream.next_event(timeout=5)).data)["project_id"] == "p1"


async def test_published_event_arrives_with_id_type_and_data(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit"}) as stream:
        await stream.next_event(timeout=5)
        event_id = await client.publish("commit", {"sha": "abc", "files": [1, 2]})
        event = await stream.next_event(timeout=5)
        assert (event.type, event.id, json.loads(event.data)) == ("commit", event_id, {"sha": "abc", "files": [1, 2]})
        assert f"id: {event_id}\nevent: commit\ndata: ".encode() in stream.raw


@pytest.mark.parametrize(
    ("query", "unknown"),
    [
        ("types=nope", ["nope"]),
        ("types=commit,bogus,zzz", ["bogus", "zzz"]),
        ("types=connected", ["connected"]),
    ],
)
async def test_unknown_type_is_422_naming_the_unknown_types_and_no_stream(
    hub, client: SSETestClient, query: str, unknown: list[str]
) -> None:
    async with client.stream(query=query) as stream:
        body = assert_json_error(stream, 422)
        assert body["invalid_types"] == unknown
        for name in unknown:
            assert name in str(body["message"])
        assert stream.ended
    snap = hub.snapshot()
    assert snap["total_connections"] == 0 and snap["active_connections"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "types=",
        "types=,,",
        "types=%20",
        "project=a&project_id=b",
        "project=a&project=b",
        "project=",
        "last_event_id=" + "9" * 300,
        "last_event_id=a%0Ab",
        "types=%FF",
        "project=%C3%28",
        "project=%ff%fe",
        "types=commit&" + "&".join(f"x{i}=1" for i in range(150)),
    ],
)
async def test_malformed_parameters_are_400_json_and_no_stream(hub, client: SSETestClient, query: str) -> None:
    async with client.stream(query=query) as stream:
        body = assert_json_error(stream, 400)
        assert body["error"] == "invalid_request"
        assert stream.ended
    assert hub.snapshot()["total_connections"] == 0


async def test_over_long_last_event_id_header_is_400(client: SSETestClient) -> None:
    async with client.stream(headers={"Last-Event-ID": "1" * 300}) as stream:
        assert_json_error(stream, 400)


async def test_global_connection_limit_is_503_with_retry_after(client_factory) -> None:
    async with client_factory(connection_limit=2, client_connection_limit=50) as (hub, client):
        async with client.stream() as first, client.stream() as second:
            assert (first.status, second.status) == (200, 200)
            async with client.stream() as third:
                assert_json_error(third, 503)
                assert int(third.headers["retry-after"]) >= 1
            assert hub.snapshot()["active_connections"] == 2
        async with client.stream() as again:
            assert again.status == 200
        assert hub.snapshot()["rejected_connections"] == 1


async def test_per_client_connection_limit_is_429_with_retry_after(client_factory) -> None:
    async with client_factory(connection_limit=100, client_connection_limit=1) as (_, client):
        async with client.stream() as first:
            assert first.status == 200
            async with client.stream() as second:
                assert_json_error(second, 429)
                assert int(second.headers["retry-after"]) >= 1
        async with client.stream() as again:
            assert again.status == 200


async def test_connection_rate_is_429_with_retry_after(client_factory) -> None:
    async with client_factory(connection_rate=2) as (_, client):
        for _ in range(2):
            async with client.stream() as stream:
                assert stream.status == 200
        async with client.stream() as refused:
            assert_json_error(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1


async def test_last_event_id_query_replays_later_events(client: SSETestClient) -> None:
    first = await client.publish("commit", {"n": 1})
    second = await client.publish("commit", {"n": 2})
    third = await client.publish("file_change", {"n": 3})
    async with client.stream(query={"last_event_id": first}) as stream:
        assert (await stream.next_event(timeout=5)).type == "connected"
        assert [e.id for e in await stream.events(2, timeout=5)] == [second, third]


async def test_replay_respects_the_stream_filters(client: SSETestClient) -> None:
    first = await client.publish("commit", {"n": 1})
    await client.publish("file_change", {"n": 2})
    await client.publish("commit", {"n": 3}, project_id="other")
    wanted = await client.publish("commit", {"n": 4}, project_id="p1")
    async with client.stream(query={"last_event_id": first, "types": "commit", "project": "p1"}) as stream:
        await stream.next_event(timeout=5)
        assert (await stream.next_event(timeout=5)).id == wanted
        live = await client.publish("commit", {"n": 5})
        assert (await stream.next_event(timeout=5)).id == live


async def test_last_event_id_header_wins_over_query_param(client: SSETestClient) -> None:
    first = await client.publish("commit", {"n": 1})
    second = await client.publish("commit", {"n": 2})
    third = await client.publish("commit", {"n": 3})
    async with client.stream(headers={"Last-Event-ID": second}, query={"last_event_id": first}) as stream:
        await stream.next_event(timeout=5)
        assert (await stream.next_event(timeout=5)).id == third
        assert stream.pending() == []


async def test_stream_names_where_it_starts_in_a_last_event_id_header(client: SSETestClient) -> None:
    async with client.stream() as empty:
        await empty.next_event(timeout=5)
        assert "last-event-id" not in empty.headers  # nothing committed yet: nothing to name
        ids = [await client.publish("commit", {"n": n}) for n in range(2)]
        assert [e.id for e in await empty.events(2, timeout=5)] == ids  # committed here now
    async with client.stream(query={"types": "file_change"}) as stream:
        await stream.next_event(timeout=5)
        assert stream.headers["last-event-id"] == ids[-1]  # the newest event, whatever the filter
    # It drops before its first event; events are published while it is away.
    away = [await client.publish("file_change", {"n": n}) for n in range(3)]
    await client.publish("commit", {"n": 9})
    async with client.stream(query={"types": "file_change"}, headers={"Last-Event-ID": ids[-1]}) as resumed:
        assert (await resumed.next_event(timeout=5)).type == "connected"
        assert [e.id for e in await resumed.events(3, timeout=5)] == away  # no gap, no stream_reset
        assert resumed.pending() == []


async def test_unknown_last_event_id_gives_one_stream_reset_without_id(client: SSETestClient) -> None:
    await client.publish("commit", {"n": 1})
    async with client.stream(headers={"Last-Event-ID": "no-such-id"}) as stream:
        await stream.next_event(timeout=5)
        reset = await stream.next_event(timeout=5)
        assert reset.type == "stream_reset" and reset.id is None
        assert json.loads(reset.data) == {"reason": "unknown_id", "last_event_id": "no-such-id"}
        live = await client.publish("commit", {"n": 2})
        assert (await stream.next_event(timeout=5)).id == live


async def test_leaving_the_stream_unregisters_the_connection(hub, client: SSETestClient) -> None:
    async with client.stream() as stream:
        await stream.next_event(timeout=5)
        assert hub.snapshot()["active_connections"] == 1
    snap = hub.snapshot()
    assert snap["active_connections"] == 0
    assert snap["disconnects"].get("client_closed") == 1


async def test_stream_without_a_token_is_401_when_auth_is_configured(client_factory) -> None:
    async with client_factory(jwt_secret="s3cret") as (hub, client), client.stream() as stream:
        assert_json_error(stream, 401)
        assert stream.headers["www-authenticate"].startswith("Bearer")
    assert hub.snapshot()["total_connections"] == 0


async def test_non_get_methods_on_the_stream_path_get_405_json_with_allow_get(client) -> None:
    for method in ("POST", "HEAD", "PUT", "DELETE"):
        response = await client.request(method, "/sse/events")
        assert response.status == 405, method
        assert response.headers["allow"] == "GET"
        if method != "HEAD":
            assert response.json()["error"] == "method_not_allowed"


async def test_wrong_method_on_an_api_route_gets_405_json_listing_allowed_methods(client) -> None:
    response = await client.get("/sse/publish")
    assert response.status == 405
    assert "POST" in response.headers["allow"]
    assert response.json()["error"] == "method_not_allowed"
