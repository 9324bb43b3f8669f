"""What a publication target is: a place that holds the log's static tlog-tiles tree.

A target holds objects under the C2SP tlog-tiles paths (`checkpoint`,
`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), with the bytes the server's own
routes serve. Two kinds of object:

* tiles and entry bundles, full or partial, are **immutable**: the bytes at a path
  are fixed by the tree (a partial tile of width W only ever has one content), so each
  is created once, with a conditional create. The same bytes already there are a
  retry, and success; other bytes are a conflict, and the target is never written
  over (`ObjectConflictError`);
* the `checkpoint` is mutable, replaced only if it did not change since it was read
  (`replace_checkpoint`);
* fleet-head proofs (`fleet-head/<fleet_id>`, docs/fleet-heads.md) are mutable too:
  each names the checkpoint it was made at, and is overwritten with the proof at a
  newer one (`put_many`). They are not part of the tree: no checkpoint needs them.

Contracts every implementation keeps (logserver/write/sequencer.py, step 9):

* `create` returns only when the object is durable on the target: a crash after it
  returns cannot lose it. On a directory that includes its directory entry, which
  `sync` makes durable for every object created before it;
* `replace_checkpoint` is atomic: a reader sees the old checkpoint or the new one,
  never a mix, and it returns only once the new one is durable;
* an error other than the two below (a connection refused, a full disk, a 5xx) means
  "not done, or not known to be done": the publisher retries the whole pass, which is
  safe because every step is idempotent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..config import ConfigError
from ..http.responses import FLEET_HEAD_CACHE
from ..merkle import TILE_WIDTH, EntriesTileID, TileID, tile_path

# Cache-Control of each kind of object (tlog-tiles: tiles and entry bundles are
# immutable, "caching headers SHOULD be long-lived"; the checkpoint is mutable and "its
# headers SHOULD prevent caching beyond a few seconds"). The server's own routes send the
# same (api/tiles.py); deploy/nginx/logserver.conf sets them for a directory.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# A partial tile never changes either, but may be deleted once its full tile exists
# (tlog-tiles "Partial Tiles"), so caches keep it for a short time only.
PARTIAL_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "public, max-age=1"

# tlog-tiles "Checkpoints" and "Merkle Tree" / "Log entries".
CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
CHECKPOINT_PATH = "checkpoint"
# Fleet-head proofs (docs/fleet-heads.md, "Static publication"): one flat directory, so
# that a pass rewriting every fleet syncs one directory, not one per fleet.
FLEET_HEAD_DIR = "fleet-head"
FLEET_HEAD_TYPE = "application/json"


@dataclass(frozen=True)
class StaticObject:
    """One immutable object: where it goes, its bytes and its headers."""

    path: str
    data: bytes
    cache_control: str
    content_type: str = TILE_TYPE


def fleet_head_object(fleet_id: str, proof: bytes) -> StaticObject:
    """The static object of a fleet's proof. A fleet id is [A-Za-z0-9._:-]{1,128} and
    never "." or "..", so it is one path element (it may start with a dot: the nginx
    configuration serves this directory before its dotfile rule)."""
    return StaticObject(f"{FLEET_HEAD_DIR}/{fleet_id}", proof, FLEET_HEAD_CACHE, FLEET_HEAD_TYPE)


def tile_object(tile: TileID | EntriesTileID, data: bytes) -> StaticObject:
    return StaticObject(tile_path(tile), data, IMMUTABLE_CACHE if tile.width == TILE_WIDTH else PARTIAL_CACHE)


class TargetError(ConfigError):
    """A target cannot be used as configured (start-up: unwritable, unreachable): a
    configuration error, reported as one line by the CLI."""


class ObjectConflictError(Exception):
    """An immutable object exists on the target with other bytes than the log's: it was
    corrupted or replaced, or another log publishes there. Never overwritten; the
    target's publishing halts."""

    def __init__(self, target: str, path: str, message: str):
        super().__init__(f"target {target!r}: object {path}: {message}")
        self.target = target
        self.path = path


class Target(Protocol):
    """A publication target (publish/directory.py, publish/s3.py)."""

    name: str

    def describe(self) -> str:
        """Where it is, for log lines and messages (no credentials)."""
        ...

    async def check(self) -> None:
        """At start-up: raise TargetError, saying what to fix, if the target cannot be
        written (a directory that is not writable, a bucket that is unreachable)."""
        ...

    async def create(self, obj: StaticObject) -> bool:
        """Create an immutable object unless it exists. Returns True if this call created
        it, False if it existed with the same bytes (a retry). Raises
        ObjectConflictError if it exists with other bytes."""
        ...

    async def put_many(self, objs: list[StaticObject]) -> None:
        """Write mutable objects (fleet-head proofs), each replacing what is there:
        readers see an object's old or new bytes, never a mix. Durable once `sync`
        returns. Many at once: a pass may rewrite ten thousand."""
        ...

    async def sync(self) -> None:
        """Make every object created so far durable (a directory's entries), before the
        checkpoint that needs them is published."""
        ...

    async def read(self, path: str) -> bytes | None:
        """An object's bytes, or None if it does not exist."""
        ...

    async def read_checkpoint(self) -> tuple[bytes | None, object]:
        """The checkpoint object's bytes (None if absent) and an opaque version token
        for `replace_checkpoint`."""
        ...

    async def replace_checkpoint(self, data: bytes, version: object) -> bool:
        """Write the checkpoint if the object is still at `version` (what
        `read_checkpoint` returned); False if it changed underneath (another publisher)."""
        ...

    async def close(self) -> None:
        ...
