"""gzip negotiation (Accept-Encoding with q-values) and the per-stream encoder."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.core.compression import GzipStream, accepts_gzip


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, br", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0.001", True),
        ("gzip;Q=1", True),
        ("gzip;q=0.5, identity;q=1", False),  # the client prefers it plain
        ("gzip;q=1, identity;q=0.5", True),
        ("gzip;q=0.5", True),  # identity not weighed: any positive weight is a yes
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("gzip;q=0, *", False),  # an explicit refusal beats the wildcard
        ("gzip;q=abc", False),  # a malformed weight never counts as yes
        ("gzip;q=2", False),
        ("gzip;q=-1", False),
        (" , ,gzip ;  q=0.8 ", True),
        ("gzipx, xgzip", False),
    ],
)
def test_accepts_gzip_follows_accept_encoding_weights(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@given(st.sampled_from(["gzip", "GZIP", "x-gzip"]), st.sampled_from(["0", "0.0", "0.000"]))
def test_gzip_with_weight_zero_is_always_refused_whatever_else_is_listed(name: str, zero: str) -> None:
    assert not accepts_gzip(f"br, *;q=1, {name};q={zero}, deflate")


writes = st.lists(st.lists(st.binary(max_size=300), max_size=4), min_size=1, max_size=30)


@given(writes)
def test_each_write_is_fully_decodable_from_the_bytes_sent_so_far(batches: list[list[bytes]]) -> None:
    """The sync flush: the client never waits for a later write to decode an earlier one."""
    stream = GzipStream()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for parts in batches:
        assert inflate.decompress(stream.write(parts)) == b"".join(parts)
    assert inflate.decompress(stream.finish()) == b""
    assert inflate.eof and inflate.unused_data == b""


@given(writes)
def test_the_whole_body_is_one_valid_gzip_member_equal_to_the_plain_bytes(batches: list[list[bytes]]) -> None:
    stream = GzipStream()
    body = b"".join(stream.write(parts) for parts in batches) + stream.finish()
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == b"".join(b"".join(parts) for parts in batches)
