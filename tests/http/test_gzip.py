"""Opt-in gzip streams through the in-process client, on the virtual clock.

The test client inflates a gzip body as each write arrives, like a browser: an event or
heartbeat it can read right after the server wrote it was flushed, not held back in the
compressor. (The direct-write path under a real server: ``test_fastpath.py``; HTTP/2:
``test_https_http2.py``.)
"""

from __future__ import annotations

import zlib

import pytest
import trio

from trio_sse.core.events import encode_event
from trio_sse.testing import TestStream


def inflate(raw: bytes) -> bytes:
    """Everything decodable from ``raw`` so far (a stream still open has no gzip trailer yet)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw)


async def test_gzip_stream_sends_each_event_and_heartbeat_decodable_the_moment_it_is_written(
    autojump_clock, client_factory
) -> None:
    async with (
        client_factory(gzip=True, heartbeat_interval=30) as (hub, client),
        client.stream(headers={"Accept-Encoding": "gzip, deflate"}, query={"types": "commit"}) as stream,
    ):
        assert stream.headers["content-encoding"] == "gzip"
        assert stream.headers["vary"] == "Accept-Encoding"
        assert (await stream.next_event(timeout=1)).type == "connected"
        assert not stream.raw.startswith(b"retry:")
        for n in range(3):
            event_id = await hub.publish("commit", {"n": n})
            event = await stream.next_event(timeout=1)
            assert (event.id, event.data) == (event_id, f'{{"n":{n}}}')
            # All the server wrote so far decodes from the bytes sent so far, ending with this event.
            assert inflate(stream.raw).endswith(encode_event(f'{{"n":{n}}}'.encode(), event="commit", id=event_id))
        silent_since = trio.current_time()
        # A heartbeat held in the compressor would only show up with the next write, 30 s later.
        assert await stream.next_comment(timeout=30.5) == "heartbeat"
        assert trio.current_time() - silent_since == pytest.approx(30, abs=0.1)
        assert inflate(stream.raw).endswith(b": heartbeat\n\n")

        hub.begin_shutdown()
        await stream.wait_ended(timeout=5)
        # Ended cleanly: one complete gzip member (trailer and CRC included).
        assert stream.decompressor.eof and stream.decompressor.unused_data == b""
        assert zlib.decompress(stream.raw, 16 + zlib.MAX_WBITS) == inflate(stream.raw)


@pytest.mark.parametrize(
    ("gzip_setting", "accept_encoding"),
    [
        (True, None),
        (True, "gzip;q=0"),
        (True, "br, deflate"),
        (True, "gzip;q=0.5, identity"),
        (False, "gzip"),
    ],
)
async def test_stream_is_plain_without_gzip_in_accept_encoding_or_with_the_setting_off(
    client_factory, gzip_setting: bool, accept_encoding: str | None
) -> None:
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding is not None else {}
    async with client_factory(gzip=gzip_setting) as (hub, client), client.stream(headers=headers) as stream:
        assert "content-encoding" not in stream.headers
        # Once gzip is possible, caches must know that the answer depends on Accept-Encoding.
        assert stream.headers.get("vary") == ("Accept-Encoding" if gzip_setting else None)
        assert (await stream.next_event(timeout=5)).type == "connected"
        assert stream.raw.startswith(b"retry: 3000\n")
        event_id = await hub.publish("commit", {"n": 1})
        assert (await stream.next_event(timeout=5)).id == event_id
        assert stream.decompressor is None


async def read_until_ended(stream: TestStream) -> None:
    await stream.wait_ended()


async def test_decompressed_gzip_stream_carries_exactly_the_bytes_of_the_plain_stream(
    autojump_clock, client_factory
) -> None:
    async with client_factory(gzip=True, heartbeat_interval=10) as (hub, client):
        async with (
            client.stream(headers={"Accept-Encoding": "gzip"}) as zipped,
            client.stream() as plain,
        ):
            zipped_connected = (await zipped.next_event(timeout=1)).data
            plain_connected = (await plain.next_event(timeout=1)).data
            for n in range(20):
                await hub.publish("progress_update", {"task": "t1", "progress": n * 5, "note": "line\nbreak"})
                if n % 7 == 0:
                    await trio.sleep(15)  # silence: heartbeats on both
            await hub.publish("commit", {"last": True})
            await zipped.events(21, timeout=1)
            await plain.events(21, timeout=1)
            hub.begin_shutdown()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_until_ended, zipped)
                nursery.start_soon(read_until_ended, plain)
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        body = zlib.decompress(zipped.raw, 16 + zlib.MAX_WBITS)
        assert body.count(b": heartbeat\n\n") == plain.raw.count(b": heartbeat\n\n") == 3
        # The streams differ only in their connected event's connection id.
        assert body.replace(zipped_connected.encode(), b"X") == plain.raw.replace(plain_connected.encode(), b"X")
        assert len(zipped.raw) < len(plain.raw)


async def test_test_client_keeps_the_wire_bytes_and_reads_gzip_like_a_browser(client_factory) -> None:
    async with (
        client_factory(gzip=True) as (_, client),
        client.stream(headers={"Accept-Encoding": "gzip"}) as stream,
    ):
        connected = await stream.next_event(timeout=5)
        assert stream.raw[:2] == b"\x1f\x8b"  # the gzip magic: raw holds what was sent
        assert inflate(stream.raw).startswith(b"retry: 3000\nevent: connected\n")
        assert connected.type == "connected"
