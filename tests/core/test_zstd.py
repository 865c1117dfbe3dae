"""zstd for streams (sans-IO): negotiation and a per-stream encoder whose every write decodes on arrival."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.core.compression import GzipStream, ZstdStream, accepts_zstd, negotiate, new_encoder
from trio_sse.core.events import encode_event


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("zstd", True),
        ("gzip, deflate, br, zstd", True),  # what Chromium sends
        ("ZSTD;q=0.5", True),
        ("zstd;q=0", False),
        ("zstd;q=bogus", False),
        ("*", False),  # zstd must be named: "*" alone is not taken to cover it
        ("gzip", False),
        ("zstd;q=0.2, identity;q=0.9", False),
    ],
)
def test_accepts_zstd_needs_zstd_named_with_a_weight_above_zero(header: str | None, expected: bool) -> None:
    assert accepts_zstd(header) is expected


@pytest.mark.parametrize(
    ("setting", "header", "expected"),
    [
        ("off", "gzip, zstd", None),
        ("gzip", "gzip, zstd", "gzip"),
        ("gzip", "zstd", None),
        ("zstd", "gzip, zstd", "zstd"),
        ("zstd", "gzip", "gzip"),
        ("zstd", None, None),
        ("auto", "gzip, deflate, br, zstd", "zstd"),
        ("auto", "gzip", "gzip"),
        ("auto", "zstd;q=0, gzip", "gzip"),
        ("auto", "br", None),
        ("auto", None, None),
    ],
)
def test_negotiate_prefers_zstd_over_gzip_and_falls_back_to_identity(
    setting: str, header: str | None, expected: str | None
) -> None:
    assert negotiate(setting, header) == expected
    encoder = new_encoder(expected)
    assert type(encoder) is {None: type(None), "gzip": GzipStream, "zstd": ZstdStream}[expected]


events = st.builds(
    lambda data, n: encode_event(data, event="commit", id=f"{n:016d}"),
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")),
    st.integers(min_value=0, max_value=10**12),
)
batches = st.lists(st.lists(events, min_size=0, max_size=4), min_size=1, max_size=12)


@given(batches)
def test_each_zstd_write_is_decodable_from_the_bytes_sent_so_far(batches: list[list[bytes]]) -> None:
    encoder = ZstdStream()
    sent = b""
    streaming = zstandard.ZstdDecompressor().decompressobj()
    plain = b""
    for batch in batches:
        out = encoder.write(batch)
        sent += out
        plain += b"".join(batch)
        # A decoder fed only this write's bytes (after the earlier ones) yields the whole write...
        assert streaming.decompress(out) == b"".join(batch)
        # ...and so does a fresh decoder fed everything so far: nothing is held in the compressor.
        assert zstandard.ZstdDecompressor().decompressobj().decompress(sent) == plain


@given(batches)
def test_the_whole_zstd_body_is_one_complete_frame_equal_to_the_plain_bytes(batches: list[list[bytes]]) -> None:
    encoder = ZstdStream()
    body = b"".join(encoder.write(batch) for batch in batches) + encoder.finish()
    decoder = zstandard.ZstdDecompressor().decompressobj()
    assert decoder.decompress(body) == b"".join(b"".join(batch) for batch in batches)
    assert decoder.eof and decoder.unused_data == b""
    # The frame's window fits what browsers accept (RFC 9659: at most 8 MiB).
    assert zstandard.get_frame_parameters(body).window_size <= 8 * 1024 * 1024


def test_repeated_events_compress_against_the_ones_before_them() -> None:
    encoder = ZstdStream()
    event = encode_event(b'{"project":"p1","progress":75,"status":"running"}', event="progress_update", id="1" * 16)
    first = len(encoder.write([event]))
    later = [len(encoder.write([event])) for _ in range(20)]
    assert max(later) < first / 2
