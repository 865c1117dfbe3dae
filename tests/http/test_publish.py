"""``POST /sse/publish`` and ``POST /sse/test-event``: answers, validation, atomic refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from http_support import assert_error

from trio_sse.core.events import parse_event_id
from trio_sse.testing import SSETestClient


def order(event_id: str) -> tuple[int, int]:
    parsed = parse_event_id(event_id)
    assert parsed is not None, event_id
    return parsed


async def published_state(client: SSETestClient) -> tuple[int, dict[str, Any]]:
    stats = (await client.get("/sse/stats")).json()
    return stats["events_published"], stats["history"]


async def test_single_publish_is_202_with_its_id(client: SSETestClient) -> None:
    reply = await client.post("/sse/publish", json={"event_type": "commit", "data": {"sha": "abc"}})
    assert reply.status == 202
    body = reply.json()
    assert set(body) == {"id"} and isinstance(body["id"], str) and body["id"]
    count, history = await published_state(client)
    assert count == 1 and history["newest_id"] == body["id"]


async def test_batch_publish_is_202_with_ids_in_order(client: SSETestClient) -> None:
    events = [{"event_type": "progress_update", "data": {"progress": n}} for n in range(5)]
    events[2]["project_id"] = "p1"
    async with client.stream(query={"types": "progress_update"}) as stream:
        await stream.next_event(timeout=5)
        reply = await client.post("/sse/publish", json={"events": events})
        assert reply.status == 202
        ids = reply.json()["ids"]
        assert len(ids) == 5 and len(set(ids)) == 5
        received = await stream.events(5, timeout=5)
    assert [e.id for e in received] == ids
    assert [json.loads(e.data)["progress"] for e in received] == list(range(5))


async def test_ids_increase_in_publish_order(client: SSETestClient) -> None:
    ids = []
    for n in range(20):
        reply = await client.post("/sse/publish", json={"event_type": "task_update", "data": n})
        ids.append(reply.json()["id"])
    reply = await client.post("/sse/publish", json={"events": [{"event_type": "commit", "data": n} for n in range(20)]})
    ids += reply.json()["ids"]
    assert len(set(ids)) == len(ids)
    assert [order(i) for i in ids] == sorted(order(i) for i in ids)


@pytest.mark.parametrize("data", [None, 0, -1.5, "text", True, [], [1, "a", None], {}, {"nested": {"deep": [1]}}])
async def test_data_may_be_any_json_value(client: SSETestClient, data: Any) -> None:
    async with client.stream(query={"types": "system_status"}) as stream:
        await stream.next_event(timeout=5)
        reply = await client.post("/sse/publish", json={"event_type": "system_status", "data": data})
        assert reply.status == 202
        event = await stream.next_event(timeout=5)
    assert json.loads(event.data) == data


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b'{"event_type": "commit", "data": }', b"\xff\xfe", b"", b"   ", b'{"a":1} trailing'],
)
async def test_malformed_json_is_400(client: SSETestClient, body: bytes) -> None:
    reply = await client.post("/sse/publish", body=body, headers={"content-type": "application/json"})
    assert_error(reply, 400)
    assert (await published_state(client))[0] == 0


@pytest.mark.parametrize("body", [[], [{"event_type": "commit", "data": 1}], "commit", 42, None, True])
async def test_non_object_body_is_400(client: SSETestClient, body: Any) -> None:
    reply = await client.post("/sse/publish", body=json.dumps(body).encode())
    assert_error(reply, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"x": 1}},
        {"event_type": "commit"},
        {},
        {"event_type": 7, "data": 1},
        {"event_type": None, "data": 1},
        {"event_type": "commit", "data": 1, "project_id": 5},
        {"event_type": "commit", "data": 1, "project_id": ""},
        {"event_type": "commit", "data": 1, "project_id": "bad\nproject"},
        {"events": []},
        {"events": "nope"},
        {"events": [1]},
        {"events": [{"event_type": "commit"}]},
    ],
)
async def test_missing_or_malformed_fields_are_400(client: SSETestClient, body: dict[str, Any]) -> None:
    reply = await client.post("/sse/publish", json=body)
    assert_error(reply, 400)
    assert (await published_state(client))[0] == 0


@pytest.mark.parametrize("event_type", ["nope", "Commit", "connected", "stream_reset", ""])
async def test_unknown_event_type_is_422(client: SSETestClient, event_type: str) -> None:
    reply = await client.post("/sse/publish", json={"event_type": event_type, "data": 1})
    body = assert_error(reply, 422)
    assert body["invalid_types"] == [event_type]
    assert (await published_state(client))[0] == 0


async def test_data_over_max_event_bytes_is_413(client_factory) -> None:
    async with client_factory(max_event_bytes=100) as (_, client):
        fits = "x" * 98  # 100 bytes once quoted
        assert (await client.post("/sse/publish", json={"event_type": "commit", "data": fits})).status == 202
        reply = await client.post("/sse/publish", json={"event_type": "commit", "data": fits + "x"})
        assert_error(reply, 413)
        assert (await published_state(client))[0] == 1


async def test_default_max_event_bytes_is_64_kib(client: SSETestClient) -> None:
    fits = "x" * (64 * 1024 - 2)  # exactly 64 KiB of JSON once quoted
    assert (await client.post("/sse/publish", json={"event_type": "commit", "data": fits})).status == 202
    reply = await client.post("/sse/publish", json={"event_type": "commit", "data": fits + "x"})
    assert assert_error(reply, 413)["error"] == "event_too_large"
    assert (await published_state(client))[0] == 1


async def test_body_over_max_body_bytes_is_413(client_factory) -> None:
    async with client_factory(max_body_bytes=200) as (_, client):
        reply = await client.post("/sse/publish", json={"event_type": "commit", "data": "x" * 300})
        assert_error(reply, 413)
        no_length = b'{"event_type": "commit", "data": "' + b"y" * 300 + b'"}'
        reply = await client.post("/sse/publish", body=no_length)
        assert_error(reply, 413)
        assert (await published_state(client))[0] == 0


async def test_oversized_batch_is_413(client: SSETestClient) -> None:
    reply = await client.post("/sse/publish", json={"events": [{"event_type": "commit", "data": 0}] * 1001})
    assert_error(reply, 413)
    assert (await published_state(client))[0] == 0


@pytest.mark.parametrize(
    ("bad_item", "status"),
    [
        ({"event_type": "nope", "data": 1}, 422),
        ({"event_type": "commit"}, 400),
        ("not an object", 400),
        ({"event_type": "commit", "data": "x" * 70_000}, 413),
        ({"event_type": "commit", "data": 1, "project_id": 3}, 400),
    ],
)
async def test_a_batch_with_one_bad_item_publishes_nothing(client: SSETestClient, bad_item: Any, status: int) -> None:
    await client.post("/sse/publish", json={"event_type": "commit", "data": "before"})
    before = await published_state(client)
    async with client.stream() as stream:
        await stream.next_event(timeout=5)
        good = {"event_type": "commit", "data": "good"}
        reply = await client.post("/sse/publish", json={"events": [good, good, bad_item, good]})
        body = assert_error(reply, status)
        assert body["index"] == 2 and body["message"].startswith("events[2]")  # where to look, always
        assert await published_state(client) == before
        assert stream.pending() == []
        marker = await client.post("/sse/publish", json={"event_type": "commit", "data": "after"})
        event = await stream.next_event(timeout=5)
    assert (event.id, json.loads(event.data)) == (marker.json()["id"], "after")


@pytest.mark.parametrize(
    "data",
    [
        "line one\nline two",
        "a\r\nid: 999\r\nevent: risk_alert\r\ndata: injected\r\n\r\n",
        {"text": "x\n\nevent: risk_alert\ndata: {}\n\n", "cr": "\r\r", "nul": "\x00"},
        ["\n", "\r", "\r\n", "data: x"],
    ],
)
async def test_line_breaks_in_data_cannot_inject_fields_or_events(client: SSETestClient, data: Any) -> None:
    async with client.stream() as stream:
        await stream.next_event(timeout=5)
        first = await client.post("/sse/publish", json={"event_type": "commit", "data": data})
        second = await client.post("/sse/publish", json={"event_type": "file_change", "data": "marker"})
        events = await stream.events(2, timeout=5)
        assert stream.pending() == []
    assert [(e.type, e.id) for e in events] == [("commit", first.json()["id"]), ("file_change", second.json()["id"])]
    assert json.loads(events[0].data) == data


async def test_extra_event_types_from_settings_are_accepted(client_factory) -> None:
    async with client_factory(event_types=("deploy", "build.done")) as (_, client):
        async with client.stream(query={"types": "deploy,build.done"}) as stream:
            await stream.next_event(timeout=5)
            one = await client.post("/sse/publish", json={"event_type": "deploy", "data": {"v": 1}})
            two = await client.post("/sse/publish", json={"events": [{"event_type": "build.done", "data": 2}]})
            assert (one.status, two.status) == (202, 202)
            events = await stream.events(2, timeout=5)
        assert [e.type for e in events] == ["deploy", "build.done"]
        assert (await client.post("/sse/publish", json={"event_type": "commit", "data": 1})).status == 202
        assert_error(await client.post("/sse/publish", json={"event_type": "undeclared", "data": 1}), 422)


async def test_publish_reaches_only_matching_project_streams(client: SSETestClient) -> None:
    async with client.stream(query={"project": "a"}) as a, client.stream(query={"project": "b"}) as b:
        await a.next_event(timeout=5)
        await b.next_event(timeout=5)
        to_a = (await client.post("/sse/publish", json={"event_type": "commit", "data": 1, "project_id": "a"})).json()
        to_all = (await client.post("/sse/publish", json={"event_type": "commit", "data": 2})).json()
        assert [e.id for e in await a.events(2, timeout=5)] == [to_a["id"], to_all["id"]]
        assert [e.id for e in await b.events(1, timeout=5)] == [to_all["id"]]
        assert b.pending() == []


# -- POST /sse/test-event -------------------------------------------------------------------


async def test_test_event_with_empty_body_publishes_system_status(client: SSETestClient) -> None:
    async with client.stream(query={"types": "system_status"}) as stream:
        await stream.next_event(timeout=5)
        reply = await client.post("/sse/test-event")
        assert reply.status == 202
        body = reply.json()
        assert body["event_type"] == "system_status" and isinstance(body["id"], str)
        event = await stream.next_event(timeout=5)
    assert (event.type, event.id) == ("system_status", body["id"])
    assert json.loads(event.data) == {"message": "test event", "source": "trio_sse"}


async def test_test_event_accepts_custom_type_data_and_project(client: SSETestClient) -> None:
    async with client.stream(query={"project": "p2"}) as other, client.stream(query={"project": "p1"}) as stream:
        await other.next_event(timeout=5)
        await stream.next_event(timeout=5)
        reply = await client.post(
            "/sse/test-event", json={"event_type": "risk_alert", "data": {"level": "high"}, "project_id": "p1"}
        )
        assert reply.status == 202
        assert reply.json()["event_type"] == "risk_alert"
        event = await stream.next_event(timeout=5)
        assert (event.type, event.id, json.loads(event.data)) == ("risk_alert", reply.json()["id"], {"level": "high"})
        assert other.pending() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"event_type": "nope"}, 422),
        ({"data": "x" * 70_000}, 413),
        (b"{bad", 400),
        ([1, 2], 400),
        ({"project_id": 12}, 400),
    ],
)
async def test_test_event_refuses_bad_input(client: SSETestClient, body: Any, status: int) -> None:
    if isinstance(body, bytes):
        reply = await client.post("/sse/test-event", body=body)
    else:
        reply = await client.post("/sse/test-event", body=json.dumps(body).encode())
    assert_error(reply, status)
    assert (await published_state(client))[0] == 0


async def test_test_event_is_403_in_the_prod_profile_for_a_non_admin(client_factory) -> None:
    from test_auth import SECRET, bearer, token

    async with client_factory(profile="prod", test_event="admin", jwt_secret=SECRET) as (_, client):
        user = bearer(token("u", publish=True))
        reply = await client.post("/sse/test-event", headers=user)
        assert_error(reply, 403)
        reply = await client.post("/sse/test-event", json={"event_type": "commit", "data": 1}, headers=user)
        assert_error(reply, 403)
        assert_error(await client.post("/sse/test-event"), 401)
        assert (await published_state(client))[0] == 0


async def test_test_event_is_admin_only_with_settings_from_the_prod_profile() -> None:
    from test_auth import SECRET, bearer, token

    import trio_sse
    from trio_sse.settings import Settings

    async with trio_sse.open_hub(Settings.from_profile("prod", jwt_secret=SECRET)) as hub:
        async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
            user, admin = bearer(token("u", publish=True)), bearer(token("root", admin=True))
            assert_error(await client.post("/sse/test-event", headers=user), 403)
            assert (await client.post("/sse/test-event", headers=admin)).status == 202
            commit = {"event_type": "commit", "data": 1}
            assert (await client.post("/sse/publish", json=commit, headers=user)).status == 202


def test_the_prod_profile_refuses_to_run_without_token_auth() -> None:
    import trio_sse
    from trio_sse.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="prod profile requires token auth"):
        trio_sse.create_app(settings=Settings.from_profile("prod"))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sse/publish", {"event_type": "commit", "data": 1}),
        ("/sse/test-event", None),
        ("/sse/subscribe", {"connection_id": "x", "event_types": ["commit"]}),
    ],
)
async def test_writes_without_a_token_are_401_when_auth_is_configured(client_factory, path: str, body: Any) -> None:
    async with client_factory(jwt_secret="s3cret") as (hub, client):
        reply = await client.post(path, json=body)
        assert_error(reply, 401)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert hub.snapshot()["events_published"] == 0
