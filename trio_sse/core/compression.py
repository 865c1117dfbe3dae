"""gzip for event streams: content negotiation and a per-stream compressor (sans-IO).

A stream is compressed with one zlib compressor for its whole life, so repeated field
names and event types compress against the events before them; every write ends with a
``Z_SYNC_FLUSH``, so the client can decode each event as soon as its bytes arrive instead
of waiting for the compressor to fill a block. Nothing here does I/O: bytes in, bytes out.
"""

from __future__ import annotations

import zlib

__all__ = ["GZIP_LEVEL", "GZIP_MEM_LEVEL", "GZIP_WBITS", "GzipStream", "accepts_gzip"]

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


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value lets us answer with ``Content-Encoding: gzip``.

    RFC 9110 section 12.5.3: ``gzip`` (or its alias ``x-gzip``) with a weight above 0, or
    else ``*`` with a weight above 0. ``gzip;q=0`` refuses it even when ``*`` would allow
    it. When the client weighs ``identity`` explicitly above gzip, it gets identity.
    Names are case-insensitive; a malformed weight counts as 0 (never guess "yes").
    """
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        name = coding.strip().lower()
        if name:
            weights[name] = max(weights.get(name, 0.0), _qvalue(params))
    gzip = weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0)))
    return gzip > 0 and gzip >= weights.get("identity", 0.0)


class GzipStream:
    """One stream's gzip encoder: :meth:`write` per write, :meth:`finish` at the clean end.

    Every output of :meth:`write` ends on a byte boundary the client can decode up to (a
    sync flush), so nothing written is held back. After :meth:`finish` it must not be used.
    """

    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + GZIP_WBITS, GZIP_MEM_LEVEL)

    def write(self, parts: list[bytes]) -> bytes:
        """Compress ``parts`` (in order) and flush, so all of it is decodable from the result on."""
        compress = self._compressor.compress
        out = [compress(part) for part in parts]
        out.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        return b"".join(out)

    def finish(self) -> bytes:
        """The end of the gzip member (last block, CRC and length), for the response's end."""
        return self._compressor.flush(zlib.Z_FINISH)
