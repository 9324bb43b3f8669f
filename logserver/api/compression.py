"""gzip for entry bundles: negotiated by Accept-Encoding, compressed off the event loop, once.

A full entry bundle of large bundles is ~10 MB; gzip at level 6 takes 30-300 ms of
CPU. Done in the handler, on the event loop, four readers of such bundles held
/healthz at ~100 ms (issue 23). So:

* compression runs in a worker thread (zlib releases the GIL while it works), at
  most `MAX_CONCURRENT` at a time, so readers cannot queue unbounded work;
* a full bundle never changes (C2SP tlog-tiles: full tiles are immutable), so its
  compressed form is kept in a byte-bounded LRU and compressed once, however many
  readers ask together;
* partial bundles grow, and are compressed per request (they are small: fewer
  than 256 entries).
"""
from __future__ import annotations

import asyncio
import gzip
import re
from collections import OrderedDict

MAX_CONCURRENT = 2
DEFAULT_CACHE_BYTES = 32 << 20


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding field value accepts gzip (RFC 9110 §12.5.3).

    gzip (or x-gzip) listed with a weight above zero, or `*` above zero when gzip
    is not listed. `gzip;q=0` refuses it. A weight that does not parse as a qvalue
    (§12.4.2) makes that member unacceptable: never send what may not be read."""
    header = header.lower()  # codings and parameter names are case-insensitive
    if "gzip" not in header and "*" not in header:
        return False
    star: bool | None = None
    for member in header.split(","):
        name, _, params = member.partition(";")
        name = name.strip()
        if name not in ("gzip", "x-gzip", "*"):
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                weight = _qvalue(value.strip())
        if name == "*":
            star = weight > 0
        else:
            return weight > 0
    return bool(star)


# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def _qvalue(text: str) -> float:
    return float(text) if _QVALUE.fullmatch(text) else 0.0


class Gzipper:
    """Compresses off the loop; keeps full bundles' compressed bytes within `max_bytes`."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[int, asyncio.Future[bytes]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self.compressions = 0

    async def compress(self, data: bytes) -> bytes:
        async with self._slots:
            self.compressions += 1
            return await asyncio.to_thread(gzip.compress, data, 6, mtime=0)

    async def full_bundle(self, index: int, data: bytes) -> bytes:
        """The gzip of the full entry bundle `index` (whose bytes are `data`)."""
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        task = self._inflight.get(index)
        if task is None:
            # A task of its own, so a reader who leaves does not cancel it for the others.
            task = asyncio.ensure_future(self._compress_and_keep(index, data))
            self._inflight[index] = task
        return await asyncio.shield(task)

    async def _compress_and_keep(self, index: int, data: bytes) -> bytes:
        try:
            packed = await self.compress(data)
        finally:
            del self._inflight[index]
        if len(packed) <= self.max_bytes:
            self._cache[index] = packed
            self._bytes += len(packed)
            while self._bytes > self.max_bytes:
                _, old = self._cache.popitem(last=False)
                self._bytes -= len(old)
        return packed
