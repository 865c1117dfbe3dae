"""The one body reader both HTTP stacks use: whole bodies, or a 413 as soon as one is too large."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.http.bodies import asgi_chunks, read_body
from trio_sse.http.errors import ApiError


async def _chunks(parts: list[bytes], read: list[int]) -> AsyncIterator[bytes]:
    for part in parts:
        read.append(len(part))
        yield part


@given(parts=st.lists(st.binary(max_size=40), max_size=8), max_bytes=st.integers(0, 200), declared=st.booleans())
def test_a_body_is_whole_or_refused_as_soon_as_it_is_over_the_limit(
    parts: list[bytes], max_bytes: int, declared: bool
) -> None:
    body = b"".join(parts)
    read: list[int] = []

    async def main() -> bytes:
        return await read_body(_chunks(parts, read), max_bytes, len(body) if declared else None)

    if len(body) <= max_bytes:
        assert trio.run(main) == body
        return
    with pytest.raises(ApiError) as info:
        trio.run(main)
    assert (info.value.status, info.value.code) == (413, "body_too_large")
    if declared:
        assert read == []  # refused from Content-Length, before reading anything
    else:
        assert sum(read) - read[-1] <= max_bytes  # refused at the first chunk over the limit


async def test_an_asgi_client_gone_before_its_body_is_a_400() -> None:
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, object]:
        return next(messages)

    with pytest.raises(ApiError) as info:
        await read_body(asgi_chunks(receive), 100)
    assert (info.value.status, info.value.code) == (400, "client_disconnected")
