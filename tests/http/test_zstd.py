"""zstd streams (issue 13, item 5) through a real server, on the direct-write path and on ASGI.

The client reads the raw body with httpx (``aiter_raw``: no content decoding) and feeds each
chunk, as it arrives, to one streaming zstd decoder: an event it can parse right after it was
published was flushed, not held in the compressor. ``auto`` picks zstd when the client names
it and gzip when it names only gzip; ``off`` sends identity. (In-process, on the virtual
clock: the end of this file.)
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import zstandard

from trio_sse.core.parser import ParsedEvent, SSEParser
from trio_sse.http.fastpath import ChunkedSocketWriter

pytestmark = pytest.mark.one_backend

TIMEOUT = 5.0
CHROMIUM_ACCEPT_ENCODING = "gzip, deflate, br, zstd"


@attrs.define
class Body:
    """A stream's raw body, decoded chunk by chunk as it arrives (a browser does the same)."""

    response: httpx.Response
    raw_chunks: AsyncIterator[bytes]
    decoder: Any = None
    parser: SSEParser = attrs.Factory(SSEParser)
    events: list[ParsedEvent] = attrs.Factory(list)
    raw: bytes = b""

    async def read_until_events(self, count: int) -> None:
        with trio.fail_after(TIMEOUT):
            while len(self.events) < count:
                chunk = await self.raw_chunks.__anext__()
                self.raw += chunk
                plain = self.decoder.decompress(chunk) if self.decoder is not None else chunk
                self.events.extend(i for i in self.parser.feed(plain) if isinstance(i, ParsedEvent))


@asynccontextmanager
async def open_body(base_url: str, accept_encoding: str | None) -> AsyncIterator[Body]:
    # httpx would send its own "gzip, deflate, br, zstd" when none is given: None asks for identity.
    headers = {"Accept-Encoding": accept_encoding if accept_encoding is not None else "identity"}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as http,
        http.stream("GET", "/sse/events", params={"types": "commit"}, headers=headers) as response,
    ):
        assert response.status_code == 200
        body = Body(response, response.aiter_raw())
        coding = response.headers.get("content-encoding")
        if coding == "zstd":
            body.decoder = zstandard.ZstdDecompressor().decompressobj()
        elif coding == "gzip":
            body.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        await body.read_until_events(1)
        assert body.events[0].type == "connected"
        yield body


@pytest.fixture
def direct_write_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes went through the direct socket writer (one item per write)."""
    calls: list[int] = []
    original = ChunkedSocketWriter.write_now

    def spy(self: ChunkedSocketWriter, parts: list[bytes]) -> bool:
        calls.append(1)
        return original(self, parts)

    monkeypatch.setattr(ChunkedSocketWriter, "write_now", spy)
    return calls


@pytest.mark.parametrize("direct_writes", [True, False], ids=["direct-writes", "asgi"])
@pytest.mark.parametrize("setting", ["zstd", "auto"])
async def test_zstd_stream_arrives_as_zstd_and_each_event_decodes_on_arrival(
    live_server_factory, direct_write_count: list[int], direct_writes: bool, setting: str
) -> None:
    async with live_server_factory(compression=setting, direct_writes=direct_writes) as server:
        hub = server.hub
        async with open_body(server.base_url, CHROMIUM_ACCEPT_ENCODING) as body:
            assert body.response.headers["content-encoding"] == "zstd"
            assert body.response.headers["vary"] == "Accept-Encoding"
            assert not body.raw.startswith(b"retry:")
            connection = hub.get_connection(body.response.headers["x-sse-connection-id"])
            if direct_writes:
                with trio.fail_after(TIMEOUT):
                    while not connection.direct_ready:  # noqa: ASYNC110 (a property, no event to wait on)
                        await trio.sleep(0.01)
            published = []
            for n in range(5):
                published.append(await hub.publish("commit", {"n": n}))
                # Read only until this event: had the compressor held it back, this would time out.
                await body.read_until_events(2 + n)
                assert (body.events[-1].id, body.events[-1].data) == (published[-1], f'{{"n":{n}}}')
                assert body.parser._buffer == b""
            # The raw bytes so far are one zstd frame in progress, readable by a fresh decoder.
            assert zstandard.get_frame_parameters(body.raw).window_size <= 8 * 1024 * 1024
            assert (len(direct_write_count) >= 5) is direct_writes
            assert direct_write_count == [] or direct_writes


@pytest.mark.parametrize(
    ("setting", "accept_encoding", "coding"),
    [
        ("auto", "gzip, deflate", "gzip"),  # auto falls back to gzip when zstd is not offered
        ("zstd", "gzip", "gzip"),
        ("auto", None, None),
        ("off", CHROMIUM_ACCEPT_ENCODING, None),  # off sends identity whatever the client accepts
        ("gzip", CHROMIUM_ACCEPT_ENCODING, "gzip"),
    ],
)
async def test_compression_setting_picks_the_coding_the_client_accepts(
    live_server_factory, setting: str, accept_encoding: str | None, coding: str | None
) -> None:
    async with live_server_factory(compression=setting) as server:
        async with open_body(server.base_url, accept_encoding) as body:
            assert body.response.headers.get("content-encoding") == coding
            assert body.response.headers.get("vary") == (None if setting == "off" else "Accept-Encoding")
            if coding is None:
                assert body.raw.startswith(b"retry: 3000\n")
            event_id = await server.hub.publish("commit", {"n": 1})
            await body.read_until_events(2)
            assert body.events[-1].id == event_id


async def test_old_gzip_switch_still_serves_gzip_and_zstd_wins_when_both_are_set(live_server_factory) -> None:
    async with live_server_factory(gzip=True) as server, open_body(server.base_url, CHROMIUM_ACCEPT_ENCODING) as body:
        assert body.response.headers["content-encoding"] == "gzip"
    async with (
        live_server_factory(gzip=True, compression="zstd") as server,
        open_body(server.base_url, CHROMIUM_ACCEPT_ENCODING) as body,
    ):
        assert body.response.headers["content-encoding"] == "zstd"


async def test_zstd_stream_ends_with_a_complete_frame_on_the_virtual_clock(autojump_clock, client_factory) -> None:
    async with (
        client_factory(compression="zstd", heartbeat_interval=30) as (hub, client),
        client.stream(headers={"Accept-Encoding": "zstd"}, query={"types": "commit"}) as stream,
    ):
        assert stream.headers["content-encoding"] == "zstd"
        assert (await stream.next_event(timeout=1)).type == "connected"
        event_id = await hub.publish("commit", {"n": 1})
        assert (await stream.next_event(timeout=1)).id == event_id
        # A heartbeat is flushed too: it arrives 30 s after the last write, not with the next event.
        assert await stream.next_comment(timeout=30.5) == "heartbeat"
        hub.begin_shutdown()
        await stream.wait_ended(timeout=5)
        assert stream.decompressor.eof and stream.decompressor.unused_data == b""
