"""An in-memory publication target for tests: the Target contract
(logserver/publish/targets.py) without a file system or a bucket, which can be told
to fail at each of its operations, and which checks, every time its checkpoint is
replaced, what readers of a static log rely on.

Storage (`MemoryBucket`, shared by every `MemoryTarget` opened on it, as one
directory or bucket is shared by the publishers of several processes):
* `objects`: path -> bytes, what a reader sees;
* `durable`: the paths that survive a crash of the target's host (`crash()` drops
  the others). An object becomes durable at a `sync` of a MemoryTarget that created
  it, or found it with the same bytes (the contract: after `sync`, every object this
  target was asked to create is durable, whoever wrote it first). This is a
  directory's model; on S3 a create is durable when it returns;
* the checkpoint: replaced atomically and durable at once, with a version number for
  the compare-and-swap of `replace_checkpoint`.

Faults: `fail(op, when, nth=1)` arms one failure (it fires once) at the `nth` call
of an operation from now, `before` it takes effect or `after`:

    op                  step (write/sequencer.py)   "after" means
    read_checkpoint     9.1 READ                    the checkpoint was read, then the connection dropped
    create              9.2 OBJECTS                 the object is on the target, yet the call raised
                                                    ("fail but persist")
    sync                9.3 SYNC                    the objects are durable, yet the call raised
    replace_checkpoint  9.4 CHECKPOINT              the checkpoint was replaced, yet the call raised
                                                    (Sunlight's failCheckpointButPersist)

The failure is InjectedTargetOutage, a ConnectionResetError: to the publisher, a
target that went away. `intercept(op, hook)` runs `hook` once, at the next call of
`op`, before it takes effect: how a test interleaves two publishers exactly.

What it checks at each replaced checkpoint (`violations`, which a test asserts
empty; the publisher never sees them):
* the size never goes back (from the checkpoint being replaced), and a size never
  gets a second root (over the bucket's whole history, wipes included);
* every hash tile and entry bundle the new checkpoint needs is there and durable
  (paths from tests/independent_merkle.py, not logserver.merkle).

Why here and not in logserver/publish/: it is a test double, as tests/memory_store.py.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from independent_merkle import tile_url_path, tiles_implied
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.publish import ObjectConflictError, StaticObject

OPS = ("read_checkpoint", "create", "put_many", "sync", "replace_checkpoint")
WHEN = ("before", "after")


class InjectedTargetOutage(ConnectionResetError):
    """A target failure a test asked for."""


def needed_paths(size: int) -> list[str]:
    """Every tile and entry bundle path a checkpoint of `size` needs (tlog-tiles)."""
    tiles = tiles_implied(size)
    return [tile_url_path(level, index, width) for level, index, width in tiles] + [
        tile_url_path("entries", index, width) for level, index, width in tiles if level == 0]


def checkpoint_size_root(data: bytes) -> tuple[int, bytes]:
    cp = parse_checkpoint(parse_note(data).text)
    return cp.size, cp.root


@dataclass
class MemoryBucket:
    """What one target holds: its objects, which of them are durable, its checkpoint."""

    objects: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (content type, cache control)
    durable: set[str] = field(default_factory=set)
    checkpoint: bytes | None = None
    version: int = 0
    history: list[tuple[int, bytes]] = field(default_factory=list)  # (size, root) of every checkpoint written
    violations: list[str] = field(default_factory=list)

    def get(self, path: str) -> bytes | None:
        """What a reader gets at `path` (the checkpoint at "checkpoint")."""
        return self.checkpoint if path == "checkpoint" else self.objects.get(path)

    def size(self) -> int | None:
        return None if self.checkpoint is None else checkpoint_size_root(self.checkpoint)[0]

    # --- what a test does to the target behind the publishers' backs ------------------

    def put(self, path: str, data: bytes) -> None:
        """Place an object (durable), as someone else would."""
        self.objects[path] = data
        self.durable.add(path)

    def set_checkpoint(self, data: bytes | None) -> None:
        """Replace (or with None, delete) the checkpoint unchecked, as someone else would."""
        self.checkpoint = data
        self.version += 1

    def crash(self) -> None:
        """The target's host lost power: what was not made durable is gone."""
        for path in [p for p in self.objects if p not in self.durable]:
            del self.objects[path]
            self.headers.pop(path, None)

    def wipe(self) -> None:
        """Everything deleted: every object and the checkpoint."""
        self.objects.clear()
        self.headers.clear()
        self.durable.clear()
        self.set_checkpoint(None)

    # --- the invariants, checked as the checkpoint is replaced ------------------------

    def _replace(self, data: bytes) -> None:
        size, root = checkpoint_size_root(data)
        if self.checkpoint is not None:
            old_size, _ = checkpoint_size_root(self.checkpoint)
            if size < old_size:
                self.violations.append(f"checkpoint went back from size {old_size} to {size}")
        roots = {r for s, r in self.history if s == size}
        if roots - {root}:
            self.violations.append(
                f"a second root for size {size}: {root.hex()} after {sorted(r.hex() for r in roots)}")
        for path in needed_paths(size):
            if path not in self.objects:
                self.violations.append(f"checkpoint of size {size} published without {path}")
            elif path not in self.durable:
                self.violations.append(f"checkpoint of size {size} published before {path} was durable")
        self.checkpoint = data
        self.version += 1
        self.history.append((size, root))


class MemoryTarget:
    """One publisher's handle on a MemoryBucket: the Target protocol, with faults."""

    def __init__(self, name: str, bucket: MemoryBucket | None = None):
        self.name = name
        self.bucket = bucket if bucket is not None else MemoryBucket()
        self.calls: dict[str, int] = dict.fromkeys(OPS, 0)
        self.fired: list[tuple[str, str]] = []
        self._armed: dict[tuple[str, str], int] = {}  # (op, when) -> the call number it fires at
        self._hooks: dict[str, Callable[[], Awaitable[None]]] = {}
        self._unsynced: set[str] = set()

    # --- test controls ---------------------------------------------------------------

    def fail(self, op: str, when: str, nth: int = 1) -> None:
        """Arm a failure at the `nth` call of `op` (OPS) from now, `when` ("before" or "after")."""
        if op not in OPS or when not in WHEN or nth < 1:
            raise ValueError(f"fault: got ({op!r}, {when!r}, {nth}), want an op of {OPS}, one of {WHEN}, nth >= 1")
        self._armed[(op, when)] = self.calls[op] + nth

    def intercept(self, op: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` once, at the next call of `op`, before it takes effect."""
        self._hooks[op] = hook

    def _call(self, op: str) -> int:
        self.calls[op] += 1
        return self.calls[op]

    async def _enter(self, op: str) -> int:
        n = self._call(op)
        hook = self._hooks.pop(op, None)
        if hook is not None:
            await hook()
        self._fault(op, "before", n)
        await asyncio.sleep(0)  # every operation lets the event loop run, as a round trip does
        return n

    def _fault(self, op: str, when: str, n: int) -> None:
        if self._armed.get((op, when)) == n:
            del self._armed[(op, when)]
            self.fired.append((op, when))
            raise InjectedTargetOutage(f"injected: {op} fails {when} it takes effect")

    # --- the Target protocol ----------------------------------------------------------

    def describe(self) -> str:
        return f"memory target {self.name}"

    async def check(self) -> None:
        pass

    async def create(self, obj: StaticObject) -> bool:
        n = await self._enter("create")
        existing = self.bucket.objects.get(obj.path)
        if existing is not None and existing != obj.data:
            raise ObjectConflictError(self.name, obj.path, f"exists with other bytes ({len(existing)} bytes, "
                                      f"want {len(obj.data)})")
        if existing is None:
            self.bucket.objects[obj.path] = obj.data
            self.bucket.headers[obj.path] = (obj.content_type, obj.cache_control)
        self._unsynced.add(obj.path)
        self._fault("create", "after", n)
        return existing is None

    async def put_many(self, objs: list[StaticObject]) -> None:
        """Mutable objects (fleet-head proofs): each replaced whole; durable after `sync`."""
        n = await self._enter("put_many")
        for obj in objs:
            self.bucket.objects[obj.path] = obj.data
            self.bucket.headers[obj.path] = (obj.content_type, obj.cache_control)
            self.bucket.durable.discard(obj.path)  # the new bytes are not durable until synced
            self._unsynced.add(obj.path)
        self._fault("put_many", "after", n)

    async def sync(self) -> None:
        n = await self._enter("sync")
        unsynced, self._unsynced = self._unsynced, set()
        self.bucket.durable |= {p for p in unsynced if p in self.bucket.objects}
        self._fault("sync", "after", n)

    async def read(self, path: str) -> bytes | None:
        await asyncio.sleep(0)
        return self.bucket.objects.get(path)

    async def read_checkpoint(self) -> tuple[bytes | None, object]:
        n = await self._enter("read_checkpoint")
        data, version = self.bucket.checkpoint, self.bucket.version
        self._fault("read_checkpoint", "after", n)
        return data, version

    async def replace_checkpoint(self, data: bytes, version: object) -> bool:
        n = await self._enter("replace_checkpoint")
        if version != self.bucket.version:
            return False
        self.bucket._replace(data)
        self._fault("replace_checkpoint", "after", n)
        return True

    async def close(self) -> None:
        pass
