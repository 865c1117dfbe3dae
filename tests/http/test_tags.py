"""Tag filters end to end: publish validation, ``?tag.<name>=``, ``/sse/subscribe`` ``tags``,
replay, ``/sse/connections``; in process and over a real server, on both backends."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import trio
from http_support import assert_error
from httpx_sse import aconnect_sse

import trio_sse
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient, TestStream

TIMEOUT = 10.0


async def publish(client: SSETestClient, data: Any, tags: dict[str, str] | None = None) -> str:
    """A ``commit`` with ``tags``, through the test kit's publish (202 or AssertionError)."""
    return await client.publish("commit", data, tags=tags)


async def connected(stream: TestStream) -> dict[str, Any]:
    event = await stream.next_event(timeout=5)
    assert event.type == "connected"
    data: dict[str, Any] = json.loads(event.data)
    return data


END_TAGS = {"env": "prod", "team": "core"}


async def marker(client: SSETestClient, tags: dict[str, str] = END_TAGS) -> str:
    """A ``system_status`` the test streams also get (its tags pass their filters): the end of what they see."""
    reply = await client.post("/sse/publish", json={"event_type": "system_status", "data": "end", "tags": tags})
    event_id: str = reply.json()["id"]
    return event_id


async def received_until_marker(stream: TestStream) -> list[Any]:
    seen = []
    while True:
        event = await stream.next_event(timeout=5)
        if event.type == "system_status":
            return seen
        if event.type == "commit":
            seen.append(json.loads(event.data))


PUBLISHED = [
    ({"env": "prod", "team": "core"}, 1),
    ({"env": "staging", "team": "core"}, 2),
    ({"env": "dev", "team": "core"}, 3),
    ({"env": "prod", "team": "web"}, 4),
    ({"env": "prod"}, 5),
    (None, 6),
]


async def test_tag_query_is_and_across_names_or_within_one(client: SSETestClient) -> None:
    query = {"types": "commit,system_status", "tag.env": "prod,staging", "tag.team": "core"}
    async with (
        client.stream(query=query) as filtered,
        client.stream(query={"types": "commit,system_status"}) as everything,
    ):
        described = await connected(filtered)
        assert described["tags"] == {"env": ["prod", "staging"], "team": ["core"]}
        assert "tags" not in await connected(everything)  # no tag filter: the contract's shape
        for tags, data in PUBLISHED:
            await publish(client, data, tags)
        await marker(client)
        assert await received_until_marker(filtered) == [1, 2]
        assert await received_until_marker(everything) == [1, 2, 3, 4, 5, 6]


async def test_tags_are_not_written_on_the_wire(client: SSETestClient) -> None:
    async with client.stream(query={"tag.env": "prod"}) as stream:
        await connected(stream)
        await publish(client, {"n": 1}, {"env": "prod"})
        event = await stream.next_event(timeout=5)
        assert json.loads(event.data) == {"n": 1} and "prod" not in event.data


async def test_repeated_tag_parameters_join_their_values(client: SSETestClient) -> None:
    async with client.stream(query="types=commit,system_status&tag.env=prod&tag.env=dev") as stream:
        assert (await connected(stream))["tags"] == {"env": ["dev", "prod"]}
        for tags, data in PUBLISHED:
            await publish(client, data, tags)
        await marker(client)
        assert await received_until_marker(stream) == [1, 3, 4, 5]


@pytest.mark.parametrize(
    "query",
    ["tag.env=", "tag.Env=x", "tag.=x", "tag.env=%0A", "tag.env=" + "x" * 129, "tag.e-nv=x"],
)
async def test_malformed_tag_query_is_400(client: SSETestClient, query: str) -> None:
    with trio.fail_after(5):  # a stream that opened would never end: fail, not hang
        body = assert_error(await client.get("/sse/events", query=query), 400)
    assert "tag" in body["message"]


async def test_more_than_16_tag_parameters_is_400(client: SSETestClient) -> None:
    query = "&".join(f"tag.k{i}=v" for i in range(17))
    with trio.fail_after(5):
        assert_error(await client.get("/sse/events", query=query), 400)


BAD_PUBLISH_TAGS: list[tuple[Any, list[str]]] = [
    ("prod", ["tags"]),
    ({"Env": "prod"}, ["Env"]),
    ({"env": 3}, ["env"]),
    ({"env": "x" * 129}, ["env"]),
    ({"env": "a\nb"}, ["env"]),
    ({"env": "a\u2029b"}, ["env"]),
    ({f"k{i:02}": "v" for i in range(17)}, ["k16"]),
]


@pytest.mark.parametrize(("tags", "named"), BAD_PUBLISH_TAGS)
async def test_bad_tags_are_422_naming_them_and_nothing_is_published(
    client: SSETestClient, tags: Any, named: list[str]
) -> None:
    async with client.stream() as stream:
        await connected(stream)
        reply = await client.post("/sse/publish", json={"event_type": "commit", "data": 1, "tags": tags})
        body = assert_error(reply, 422)
        assert body["error"] == "invalid_tags" and body["invalid_tags"] == named
        batch = {"events": [{"event_type": "commit", "data": 0}, {"event_type": "commit", "data": 1, "tags": tags}]}
        body = assert_error(await client.post("/sse/publish", json=batch), 422)
        assert body["invalid_tags"] == named and body["index"] == 1
        stats = (await client.get("/sse/stats")).json()
        assert stats["events_published"] == 0
        await stream.assert_no_event_within(0.05)


async def test_subscribe_tags_replace_add_remove_and_null(client: SSETestClient) -> None:
    async with client.stream(query={"types": "commit,system_status"}) as stream:
        cid = (await connected(stream))["connection_id"]

        async def change(**body: Any) -> dict[str, Any]:
            reply = await client.post(
                "/sse/subscribe", json={"connection_id": cid, "event_types": ["commit", "system_status"], **body}
            )
            assert reply.status == 200, reply
            update = await stream.next_event(timeout=5)
            assert update.type == "subscription_updated"
            described: dict[str, Any] = reply.json()
            assert json.loads(update.data) == described
            return described

        async def sees(end: dict[str, str] = END_TAGS) -> list[Any]:
            for tags, data in PUBLISHED:
                await publish(client, data, tags)
            await marker(client, end)
            return await received_until_marker(stream)

        assert (await change(tags={"env": ["dev"], "team": ["core"]}))["tags"] == {"env": ["dev"], "team": ["core"]}
        assert await sees({"env": "dev", "team": "core"}) == [3]
        added = await change(mode="add", event_types=[], tags={"env": ["prod"], "other": ["x"]})
        assert added["tags"] == {"env": ["dev", "prod"], "team": ["core"]}  # add widens only
        assert added["event_types"] == ["commit", "system_status"]
        assert await sees() == [1, 3]
        removed = await change(mode="remove", event_types=[], tags={"env": ["dev"]})
        assert removed["tags"] == {"env": ["prod"], "team": ["core"]}
        assert await sees() == [1]
        kept = await change()  # no "tags": the tag filter stays
        assert kept["tags"] == {"env": ["prod"], "team": ["core"]}
        cleared = await change(tags=None)
        assert "tags" not in cleared
        assert await sees() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("tags", [{"env": []}, {"env": "prod"}, {"Env": ["x"]}, ["env"], {"env": ["a\nb"]}])
async def test_subscribe_with_bad_tags_is_422_and_changes_nothing(client: SSETestClient, tags: Any) -> None:
    async with client.stream(query={"tag.env": "prod"}) as stream:
        cid = (await connected(stream))["connection_id"]
        reply = await client.post("/sse/subscribe", json={"connection_id": cid, "event_types": [], "tags": tags})
        assert assert_error(reply, 422)["error"] == "invalid_tags"
        listed = (await client.get("/sse/connections")).json()["connections"]
        assert listed[0]["tags"] == {"env": ["prod"]}


async def test_connections_show_the_tag_filter(client: SSETestClient) -> None:
    async with client.stream(query={"tag.env": "prod,dev"}), client.stream():
        listed = (await client.get("/sse/connections")).json()["connections"]
        assert listed[0]["tags"] == {"env": ["dev", "prod"]}
        assert "tags" not in listed[1]


async def test_replay_respects_the_tag_filter(client: SSETestClient) -> None:
    first = await publish(client, 0, {"env": "prod"})
    for tags, data in PUBLISHED:
        await publish(client, data, tags)
    query = {"types": "commit", "tag.env": "prod", "last_event_id": first}
    async with client.stream(query=query) as stream:
        await connected(stream)
        replayed = [json.loads(e.data) for e in await stream.events(3, timeout=5)]
        assert replayed == [1, 4, 5]
        await stream.assert_no_event_within(0.05)


async def test_subscribe_replay_respects_the_new_tag_filter(client: SSETestClient) -> None:
    first = await publish(client, 0)
    for tags, data in PUBLISHED:
        await publish(client, data, tags)
    async with client.stream(query={"types": "risk_alert"}) as stream:
        cid = (await connected(stream))["connection_id"]
        body = {"connection_id": cid, "event_types": ["commit"], "tags": {"team": ["core"]}, "last_event_id": first}
        assert (await client.post("/sse/subscribe", json=body)).status == 200
        events = await stream.events(4, timeout=5)
        assert events[0].type == "subscription_updated"
        assert [json.loads(e.data) for e in events[1:]] == [1, 2, 3]
        await stream.assert_no_event_within(0.05)  # not 4 (team web), 5, 6 (no team)


async def test_python_api_publishes_tags(hub: Any, client: SSETestClient) -> None:
    async with client.stream(query={"tag.env": "prod"}) as stream:
        await connected(stream)
        await hub.publish("commit", "no", tags={"env": "dev"})
        await hub.publish("commit", "yes", tags={"env": "prod"})
        assert json.loads((await stream.next_event(timeout=5)).data) == "yes"


async def test_tag_filters_over_a_real_server(live_server_factory: Any) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        params = {"types": "commit,system_status", "tag.env": "prod,staging", "tag.team": "core"}
        async with aconnect_sse(http, "GET", "/sse/events", params=params) as source:
            events = source.aiter_sse()
            with trio.fail_after(TIMEOUT):
                hello = await anext(events)
            assert hello.json()["tags"] == {"env": ["prod", "staging"], "team": ["core"]}
            batch = [{"event_type": "commit", "data": d, **({"tags": t} if t else {})} for t, d in PUBLISHED]
            reply = await http.post("/sse/publish", json={"events": batch})
            ids = reply.json()["ids"]
            await http.post("/sse/publish", json={"event_type": "system_status", "data": "end", "tags": END_TAGS})
            got = []
            with trio.fail_after(TIMEOUT):
                async for event in events:
                    if event.event == "system_status":
                        break
                    got.append((event.id, event.json()))
            assert got == [(ids[0], 1), (ids[1], 2)]
        # Resume after the first: replay (local ring, or XRANGE on Redis) keeps the filter.
        resume = {**params, "last_event_id": ids[0]}
        async with aconnect_sse(http, "GET", "/sse/events", params=resume) as source:
            events = source.aiter_sse()
            with trio.fail_after(TIMEOUT):
                assert (await anext(events)).event == "connected"
                replayed = await anext(events)
                assert (replayed.id, replayed.json()) == (ids[1], 2)
                assert (await anext(events)).event == "system_status"


@pytest.mark.one_backend
async def test_tags_travel_through_redis_entries_to_another_instance(redis_server: Any) -> None:
    """Published on one instance, replayed by another from ``XRANGE`` (not its ring): the tags
    came back from the stream entries, so the second instance's filter still applies."""
    shared = {"backend": redis_server.url, "redis_stream": f"test:tags:{uuid.uuid4().hex}"}
    async with trio_sse.open_hub(Settings(**shared)) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as first:
        start = await publish(first, 0, {"env": "prod"})
        for tags, data in PUBLISHED:
            await publish(first, data, tags)
    async with trio_sse.open_hub(Settings(**shared)) as hub, SSETestClient(trio_sse.create_app(hub=hub)) as second:
        query = {"types": "commit", "tag.env": "prod", "tag.team": "web,core", "last_event_id": start}
        async with second.stream(query=query) as stream:
            await connected(stream)
            assert [json.loads(e.data) for e in await stream.events(2, timeout=5)] == [1, 4]
            await stream.assert_no_event_within(0.05)


async def test_subscribe_tag_modes_over_a_real_server(live_server_factory: Any) -> None:
    async with live_server_factory() as server, httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        params = {"types": "commit,system_status", "tag.env": "dev"}
        async with aconnect_sse(http, "GET", "/sse/events", params=params) as source:
            events = source.aiter_sse()
            with trio.fail_after(TIMEOUT):
                cid = (await anext(events)).json()["connection_id"]

            async def change(**body: Any) -> Any:
                reply = await http.post(
                    "/sse/subscribe", json={"connection_id": cid, "event_types": [], "mode": "add", **body}
                )
                assert reply.status_code == 200, reply.text
                with trio.fail_after(TIMEOUT):
                    update = await anext(events)
                assert update.event == "subscription_updated" and update.json() == reply.json()
                return reply.json().get("tags")

            async def sees() -> list[Any]:
                batch = [{"event_type": "commit", "data": d, **({"tags": t} if t else {})} for t, d in PUBLISHED]
                batch.append({"event_type": "system_status", "data": "end", "tags": {"env": "dev"}})
                assert (await http.post("/sse/publish", json={"events": batch})).status_code == 202
                got = []
                with trio.fail_after(TIMEOUT):
                    async for event in events:
                        if event.event == "system_status":
                            return got
                        got.append(event.json())
                raise AssertionError("the stream ended")

            assert await sees() == [3]
            assert await change(tags={"env": ["prod"]}) == {"env": ["dev", "prod"]}
            assert await sees() == [1, 3, 4, 5]
            assert await change(mode="remove", tags={"env": ["prod"]}) == {"env": ["dev"]}
            assert await change(mode="replace", event_types=["commit", "system_status"], tags=None) is None
            assert await sees() == [1, 2, 3, 4, 5, 6]
