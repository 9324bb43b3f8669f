"""Expanded full level-0 tiles on local disk: the proof cache that does not fit in memory.

A random inclusion proof at 10M leaves needs one of ~39,000 level-0 tiles, and
the 8 nodes it needs inside that tile are interior nodes: computing them is 255
hashes per proof, and keeping every expansion in memory would be ~640 MB. So
full level-0 tiles, which never change, are kept expanded in one file, read
with pread (the page cache holds them; they do not count as the process's
memory).

Layout: slot N (at N * SLOT bytes) holds tile N's expansion (merkle.tiles.expand_tile:
its 256 hashes, then the 128 nodes one level up, ..., then the tile's root: 511
hashes) followed by the SHA-256 of those bytes. A slot whose checksum does not
match (never written, a torn write, a flipped bit) is a miss, never an error.
The file starts with a header binding it to one log: a different database
under the same data directory (a new log, a test) starts a new file.

The file is a cache: deleting it at any time is safe; it is refilled from the
database, lazily by proofs and in the background by `TreeReader.warm_tile_file`.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .merkle.tiles import TILE_WIDTH

log = logging.getLogger(__name__)

HASH = 32
EXPANDED = (2 * TILE_WIDTH - 1) * HASH  # 511 hashes
SLOT = EXPANDED + HASH  # + checksum: 16,384 bytes, four pages
HEADER = SLOT  # slot-sized, so that slots stay page-aligned
_MAGIC = b"logserver expanded level-0 tiles v1\n"
_LEVEL_SPANS = []
_off = 0
for _k in range(9):
    _n = (TILE_WIDTH >> _k) * HASH
    _LEVEL_SPANS.append((_off, _off + _n))
    _off += _n
assert _off == EXPANDED


class TileFile:
    """One open cache file. Not thread-safe; used from the event loop only."""

    def __init__(self, path: Path, binding: bytes):
        """Open (or start) the file at `path` for the log identified by `binding`
        (any bytes that differ between logs, e.g. its origin, key and first checkpoint)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (_MAGIC + hashlib.sha256(binding).digest()).ljust(HEADER, b"\0")
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.pread(self._fd, HEADER, 0) != header:
            os.ftruncate(self._fd, 0)  # another log's (or a damaged) file: start over
            os.pwrite(self._fd, header, 0)

    def get(self, index: int) -> list[bytes] | None:
        """The expansion of full level-0 tile `index`, or None if not (validly) cached."""
        slot = os.pread(self._fd, SLOT, HEADER + index * SLOT)
        if len(slot) != SLOT or hashlib.sha256(slot[:EXPANDED]).digest() != slot[EXPANDED:]:
            return None
        return [slot[a:b] for a, b in _LEVEL_SPANS]

    def has(self, index: int) -> bool:
        return self.get(index) is not None

    def put(self, index: int, levels: list[bytes]) -> None:
        """Store the expansion of full level-0 tile `index` (9 levels, 256 hashes first)."""
        body = b"".join(levels)
        if len(levels) != len(_LEVEL_SPANS) or len(body) != EXPANDED:
            raise AssertionError(f"not a full tile's expansion: {len(levels)} levels, {len(body)} bytes")
        try:
            os.pwrite(self._fd, body + hashlib.sha256(body).digest(), HEADER + index * SLOT)
        except OSError as e:  # a full disk costs speed, not correctness
            log.warning("tile cache file %s: cannot write tile %d: %r", self.path, index, e)

    def close(self) -> None:
        os.close(self._fd)
