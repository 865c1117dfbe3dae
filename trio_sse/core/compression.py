"""gzip and zstd for event streams: content negotiation and a per-stream compressor (sans-IO).

A stream is compressed with one compressor (zlib or zstd) for its whole life, so repeated field
names and event types compress against the events before them; every write ends with a
``Z_SYNC_FLUSH`` (gzip) or a zstd ``FLUSH_BLOCK``, so the client can decode each event as
soon as its bytes arrive instead of waiting for the compressor to fill a block.
Nothing here does I/O: bytes in, bytes out.
"""

from __future__ import annotations

import zlib
from typing import ClassVar, Protocol

import zstandard

__all__ = [
    "COMPRESSION_CHOICES",
    "GZIP_LEVEL",
    "GZIP_MEM_LEVEL",
    "GZIP_WBITS",
    "ZSTD_LEVEL",
    "ZSTD_TABLE_LOG",
    "ZSTD_WINDOW_LOG",
    "GzipStream",
    "StreamEncoder",
    "ZstdStream",
    "accepts_gzip",
    "accepts_zstd",
    "negotiate",
    "new_encoder",
]

#: Values of the ``compression`` setting. ``auto`` answers with the best coding the client
#: accepts: zstd over gzip, identity when it accepts neither.
COMPRESSION_CHOICES = ("off", "gzip", "zstd", "auto")

#: Compression level. SSE writes are small and flushed one by one; level 1 made them ~10 %
#: bigger than level 6 for ~30 % less CPU (docs/performance.md, "Compression").
GZIP_LEVEL = 1
#: 2**12 = 4 KiB window and a small hash table: ~36 KiB of RSS per stream instead of ~206 KiB
#: with zlib's defaults, which matters at thousands of streams. Events repeat what the few
#: events before them said, so the bigger window saved only ~12 % of the bytes (same section).
GZIP_WBITS = 12
GZIP_MEM_LEVEL = 5


def _qvalue(params: list[str]) -> float:
    """The ``q`` weight among a coding's parameters; 1 when absent, 0 when malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def _weights(accept_encoding: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        name = coding.strip().lower()
        if name:
            weights[name] = max(weights.get(name, 0.0), _qvalue(params))
    return weights


def accepts_zstd(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value lets us answer with ``Content-Encoding: zstd``.

    Only an explicit ``zstd`` with a weight above 0 (and not below ``identity``'s): unlike
    gzip, ``*`` alone does not count, because a client that never named zstd may well
    not decode it (RFC 8878 is recent; many HTTP libraries still lack it).
    """
    if not accept_encoding:
        return False
    weights = _weights(accept_encoding)
    zstd = weights.get("zstd", 0.0)
    return zstd > 0 and zstd >= weights.get("identity", 0.0)


def negotiate(setting: str, accept_encoding: str | None) -> str | None:
    """The stream's ``Content-Encoding`` (``"zstd"``, ``"gzip"``) or ``None`` for identity.

    ``setting`` is the effective ``compression`` setting (``off``, ``gzip``, ``zstd``,
    ``auto``). ``zstd`` and ``auto`` both prefer zstd and fall back to gzip when the
    client accepts only gzip; ``gzip`` never answers zstd.
    """
    if setting == "off":
        return None
    if setting in ("zstd", "auto") and accepts_zstd(accept_encoding):
        return "zstd"
    if accepts_gzip(accept_encoding):
        return "gzip"
    return None


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value lets us answer with ``Content-Encoding: gzip``.

    RFC 9110 section 12.5.3: ``gzip`` (or its alias ``x-gzip``) with a weight above 0, or
    else ``*`` with a weight above 0. ``gzip;q=0`` refuses it even when ``*`` would allow
    it. When the client weighs ``identity`` explicitly above gzip, it gets identity.
    Names are case-insensitive; a malformed weight counts as 0 (never guess "yes").
    """
    if not accept_encoding:
        return False
    weights = _weights(accept_encoding)
    gzip = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return gzip > 0 and gzip >= weights.get("identity", 0.0)


class StreamEncoder(Protocol):
    """What a stream needs of its encoder: bytes per write, then the end of the body."""

    def write(self, parts: list[bytes]) -> bytes: ...

    def finish(self) -> bytes: ...


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self, mode: int, /) -> bytes: ...


class _FlushedEncoder:
    """A compressor flushed at the end of every write, the shape gzip and zstd streams share.

    Subclasses make ``_compressor`` and name the two flush modes: ``_FLUSH`` ends each
    write on a boundary the client can decode up to (nothing written is held back),
    ``_FINISH`` ends the body. After :meth:`finish` the encoder must not be used.
    """

    __slots__ = ("_compressor",)
    _compressor: _Compressor
    _FLUSH: ClassVar[int]
    _FINISH: ClassVar[int]

    def write(self, parts: list[bytes]) -> bytes:
        """Compress ``parts`` (in order) and flush, so all of it is decodable from the result on."""
        compress = self._compressor.compress
        out = [compress(part) for part in parts]
        out.append(self._compressor.flush(self._FLUSH))
        return b"".join(out)

    def finish(self) -> bytes:
        """The end of the compressed body, for the response's end."""
        return self._compressor.flush(self._FINISH)


class GzipStream(_FlushedEncoder):
    """One stream's gzip encoder: :meth:`write` per write, :meth:`finish` at the clean end.

    Every output of :meth:`write` ends on a byte boundary the client can decode up to (a
    sync flush), so nothing written is held back. After :meth:`finish` it must not be used.
    """

    __slots__ = ()
    _FLUSH = zlib.Z_SYNC_FLUSH
    _FINISH = zlib.Z_FINISH  # the last block, CRC and length of the gzip member

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + GZIP_WBITS, GZIP_MEM_LEVEL)


#: zstd level 3 (zstd's default). Like gzip's settings, picked for small flushed writes;
#: see docs/performance.md, "Compression" for the bytes and CPU against gzip.
ZSTD_LEVEL = 3
#: 2**14 = 16 KiB window and 4 K-entry hash and chain tables: ~65-100 KiB of RSS per stream
#: instead of ~880 KiB with level 3's own tables, for the same bytes per event (events
#: repeat what the events shortly before them said). Browsers cap the window they accept
#: at 8 MiB (RFC 9659), far above this. Measured in docs/performance.md, "Compression".
ZSTD_WINDOW_LOG = 14
ZSTD_TABLE_LOG = 12

_ZSTD_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, hash_log=ZSTD_TABLE_LOG, chain_log=ZSTD_TABLE_LOG
)


class ZstdStream(_FlushedEncoder):
    """One stream's zstd encoder: one zstd frame for the whole body, a block per write.

    Each :meth:`write` ends with ``COMPRESSOBJ_FLUSH_BLOCK``: the block is complete, so a
    streaming decoder fed the bytes so far yields everything written, while the frame
    (and the history the next events compress against) goes on. :meth:`finish` ends the
    frame; after it the encoder must not be used.
    """

    __slots__ = ()
    _FLUSH = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    _FINISH = zstandard.COMPRESSOBJ_FLUSH_FINISH  # the end of the zstd frame

    def __init__(self) -> None:
        self._compressor = zstandard.ZstdCompressor(compression_params=_ZSTD_PARAMS).compressobj()


def new_encoder(coding: str | None) -> StreamEncoder | None:
    """A fresh encoder for a negotiated ``Content-Encoding`` (``None``: identity)."""
    if coding == "zstd":
        return ZstdStream()
    if coding == "gzip":
        return GzipStream()
    return None
