"""Expanded full level-0 tiles on local disk: the proof cache that does not fit in memory.

A random inclusion proof at 10M leaves needs one of ~39,000 level-0 tiles, and
the 8 nodes it needs inside that tile are interior nodes: computing them is 255
hashes per proof, and keeping every expansion in memory would be ~640 MB. So
full level-0 tiles, which never change, are kept expanded in one file, read
with pread (the page cache holds them; they do not count as the process's
memory).

Layout: slot N (at N * SLOT bytes) holds tile N's expansion (merkle.tiles.expand_tile:
its 256 hashes, then the 128 nodes one level up, ..., then the tile's root: 511
hashes) followed by a 32-byte checksum field: the CRC-32 of those bytes, big-endian,
then 28 zero bytes. A slot whose checksum does not match (never written, a torn
write, a flipped bit) is a miss, never an error. CRC-32, not SHA-256: it is there
to catch accidents (it detects every burst of up to 32 bits and misses random
damage with probability 2^-32), it costs ~3 us per 16 KiB slot against ~9 us, and
a file hit is on the path of most proofs at 10M leaves. It is no defence against
someone who can write the data directory, nor needs to be: whoever can do that can
rewrite the database too, and clients check every proof against a signed
checkpoint anyway. The checksum only says the slot holds what was written;
whether that was right is checked by the reader: a slot is used only if its root
(the hash of the tile's 256 leaves) equals the hash the database's level-1 tile holds for it
(TileCache, read/tile_cache.py), so a slot expanded from a corrupted tile that was repaired since,
or from a database that was restored, is a miss and is dropped. The file starts
with a header binding it to one log: a different database under the same data
directory (a new log, a test) starts a new file. Processes opening the file at
once (`serve --workers N`) check and write the header under an exclusive flock,
so none truncates slots another has already written.

The file is a cache: deleting it (or all of `data_dir/cache/`) at any time is
safe, and is the thing to do after repairing or restoring the database; it is
refilled from the database, lazily by proofs and in the background by
`TreeReader.warm_tile_file`. `logserver fsck` checks every slot against the
leaves and drops the ones that differ.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import zlib
from pathlib import Path

from ..merkle.geometry import TILE_WIDTH, expansion_spans

log = logging.getLogger(__name__)

HASH = 32
_LEVEL_SPANS = expansion_spans(TILE_WIDTH)  # where each of the 9 levels lies in a slot
EXPANDED = _LEVEL_SPANS[-1][1]  # 511 hashes
SLOT = EXPANDED + HASH  # + checksum field: 16,384 bytes, four pages
HEADER = SLOT  # slot-sized, so that slots stay page-aligned
# v2: CRC-32 slot checksums (v1 had SHA-256). A v1 file's header does not match,
# so it is started over and refilled, like any other log's file.
_MAGIC = b"logserver expanded level-0 tiles v2\n"


FILE_NAME = Path("cache") / "tiles-level0.bin"  # under the data directory


def log_binding(origin: str, public_key: bytes, first_checkpoint_note: str) -> bytes:
    """What binds a tile file to one log: its origin, key and first checkpoint
    (which differs between logs started afresh with the same key)."""
    return b"\n".join([origin.encode(), public_key, first_checkpoint_note.encode()])


def _header(binding: bytes) -> bytes:
    return (_MAGIC + hashlib.sha256(binding).digest()).ljust(HEADER, b"\0")


def _checksum(body: bytes | memoryview) -> bytes:
    """The checksum field of a slot holding `body` (the module docstring says why CRC-32)."""
    return zlib.crc32(body).to_bytes(4, "big") + bytes(HASH - 4)


class TileFile:
    """One open cache file. Not thread-safe; used from the event loop only."""

    def __init__(self, path: Path, binding: bytes, *, _fd: int | None = None):
        """Open (or start) the file at `path` for the log identified by `binding`
        (any bytes that differ between logs: `log_binding`)."""
        self.path = path
        if _fd is not None:
            self._fd = _fd
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        header = _header(binding)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Under an exclusive lock: a process that finds no header yet must not
            # truncate what another one, which wrote the header a moment ago, put since.
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.pread(self._fd, HEADER, 0) != header:
                    os.ftruncate(self._fd, 0)  # another log's (or a damaged) file: start over
                    os.pwrite(self._fd, header, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._fd)
            raise

    @classmethod
    def open_existing(cls, path: Path, binding: bytes) -> TileFile | None:
        """The file at `path` if it exists and belongs to this log; never creates
        or truncates it (fsck)."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        if os.pread(fd, HEADER, 0) != _header(binding):
            os.close(fd)
            return None
        return cls(path, binding, _fd=fd)

    def get(self, index: int) -> list[bytes] | None:
        """The expansion of full level-0 tile `index`, or None if not (validly) cached."""
        slot = os.pread(self._fd, SLOT, HEADER + index * SLOT)
        if len(slot) != SLOT or _checksum(memoryview(slot)[:EXPANDED]) != slot[EXPANDED:]:
            return None
        return [slot[a:b] for a, b in _LEVEL_SPANS]

    def put(self, index: int, levels: list[bytes]) -> None:
        """Store the expansion of full level-0 tile `index` (9 levels, 256 hashes first)."""
        body = b"".join(levels)
        if len(levels) != len(_LEVEL_SPANS) or len(body) != EXPANDED:
            raise AssertionError(f"not a full tile's expansion: {len(levels)} levels, {len(body)} bytes")
        try:
            os.pwrite(self._fd, body + _checksum(body), HEADER + index * SLOT)
        except OSError as e:  # a full disk costs speed, not correctness
            log.warning("tile cache file %s: cannot write tile %d: %r", self.path, index, e)

    def drop(self, index: int) -> None:
        """Forget tile `index` (its slot no longer checks out: a miss from now on)."""
        try:
            if len(os.pread(self._fd, HASH, HEADER + index * SLOT + EXPANDED)) == HASH:
                os.pwrite(self._fd, bytes(HASH), HEADER + index * SLOT + EXPANDED)
        except OSError as e:
            log.warning("tile cache file %s: cannot drop tile %d: %r", self.path, index, e)

    def close(self) -> None:
        os.close(self._fd)
