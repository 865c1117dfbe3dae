import httpx
from httpx_sse import aconnect_sse

from trio_sse.testing import SSETestClient


async def test_stream_starts_with_retry_then_connected(sse_client: SSETestClient) -> None:
    async with sse_client.stream() as stream:
        assert stream.status == 200
        await stream.expect_event("connected", id=None)
        assert stream.raw.startswith(b"retry: 3000\n")


async def test_live_server_delivers_published_event(live_server_factory) -> None:
    async with live_server_factory() as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            async with aconnect_sse(http, "GET", "/sse/events", params={"types": "commit"}) as source:
                events = source.aiter_sse()
                first = await anext(events)
                assert first.event == "connected"
                reply = await http.post("/sse/publish", json={"event_type": "commit", "data": {"sha": "abc"}})
                assert reply.status_code == 202
                event = await anext(events)
                assert (event.event, event.json(), event.id) == ("commit", {"sha": "abc"}, reply.json()["id"])
