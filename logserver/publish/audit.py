"""`logserver fsck --target NAME`: a publication target checked against the database.

Read-only, for the target and the database alike; safe while servers publish. In order:

1. the target's checkpoint (tlog-tiles `checkpoint`). It must be there once
   PostgreSQL records a publication to the target (publication_progress). It must be
   this log's: signed by its key, with its timestamped cosignature, of its origin
   (LogKeyVerifiers), of a size the log signed, with the root the log signed for that
   size (anything else is a split view on the target). If it is not, nothing else
   can be compared, and the check stops there;
2. every hash tile and entry bundle that checkpoint needs (tlog-tiles "Merkle Tree"
   and "Log entries": full ones and the partial ones of its size), each compared
   with what the database gives: recomputed, as `logserver fsck` does, from the
   stored leaf bytes in one streaming pass (the leaf hashes, and from them every tile
   level), not read from the stored tiles, so a corrupted tile in the database is not
   taken for the truth. Each object missing or different is named with its path, its
   size and SHA-256, got and want, and where it first differs. Objects a newer pass
   wrote beyond the checkpoint are not looked at: no reader follows them yet;
3. the progress row against the target: it must never claim more than the target
   holds (a target restored from an old backup, or wiped, holds less).

A target that cannot be read at all (unreachable, permission denied) raises
TargetReadError: that is not a finding about its content.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..merkle import (
    HASH_SIZE,
    TILE_WIDTH,
    CompactRange,
    EntriesTileID,
    TileID,
    encode_entry_bundle,
    entries_tiles_for_size,
    leaf_hash,
    tile_path,
    tiles_for_size,
)
from ..merkle.geometry import TILE_HEIGHT, node_in_tile
from ..storage import TileSource
from ..storage.publication import PublicationStore, TargetProgress
from .publisher import LogKeyVerifiers
from .targets import CHECKPOINT_PATH, Target, TargetError

CHUNK = 16 * TILE_WIDTH  # leaves read per query
CONCURRENCY = 16  # target objects read at once

Objects = list[tuple[TileID | EntriesTileID, bytes]]  # (tile or bundle, its bytes)


class TargetReadError(Exception):
    """The target could not be read (unreachable, permission denied, ...)."""


@dataclass
class TargetAudit:
    target: str
    where: str  # the target's describe()
    checkpoint_present: bool = False
    checkpoint_size: int | None = None  # None: no checkpoint, or not this log's
    log_size: int | None = None  # the size of the log's latest checkpoint
    progress: TargetProgress | None = None  # what PostgreSQL records as published
    objects_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is reported, and is not a problem

    @property
    def ok(self) -> bool:
        return not self.problems


async def audit_target(
    target: Target,
    *,
    store: TileSource,
    progress: PublicationStore,
    verifiers: LogKeyVerifiers,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    max_problems: int = 100,
) -> TargetAudit:
    """Check `target` against the log in `store`; see the module docstring."""
    report = TargetAudit(target.name, target.describe())
    problems_seen = 0

    def problem(msg: str) -> None:
        nonlocal problems_seen
        problems_seen += 1
        if len(report.problems) < max_problems:
            report.problems.append(msg)

    latest = await store.latest_checkpoint()
    report.log_size = None if latest is None else latest.tree_size
    row = report.progress = await progress.progress(target.name)
    recorded = "nothing" if row is None else f"size {row.tree_size} (root {row.root.hex()})"

    # 1. The checkpoint.
    data = await _read(target, CHECKPOINT_PATH, checkpoint=True)
    if data is None:
        if row is not None:
            problem(f"{CHECKPOINT_PATH}: missing, but PostgreSQL records {recorded} as published to this target; "
                    "the target was wiped or lost it (the publisher refills it from size 0 on the log's next "
                    "checkpoint)")
        else:
            report.notes.append("no checkpoint, and PostgreSQL records no publication to this target yet")
        return report
    report.checkpoint_present = True
    try:
        cp = verifiers.open(data)
    except Exception as e:
        problem(f"{CHECKPOINT_PATH}: is not a checkpoint of this log signed by its key ({e})")
        return report
    root = await progress.root_at(cp.size)
    if root is None:
        problem(f"{CHECKPOINT_PATH}: has size {cp.size}, which this log never signed "
                f"(its latest checkpoint has size {report.log_size})")
        return report
    if root != cp.root:
        problem(f"{CHECKPOINT_PATH}: has size {cp.size} with root {cp.root.hex()}, but the log signed root "
                f"{root.hex()} for that size: a split view on the target")
        return report
    report.checkpoint_size = cp.size

    # 2. Every object it needs, against the database's leaves.
    sem = asyncio.Semaphore(CONCURRENCY)

    async def compare(tile: TileID | EntriesTileID, want: bytes) -> None:
        path = tile_path(tile)
        async with sem:
            got = await _read(target, path)
        report.objects_checked += 1
        if got is None:
            problem(f"{path}: missing (want {_describe(want)})")
        elif got != want:
            problem(f"{path}: differs: got {_describe(got)}, want {_describe(want)}; "
                    f"{_first_difference(tile, got, want)}")

    async def compare_all(objects: Objects) -> None:
        await asyncio.gather(*(compare(t, w) for t, w in objects))

    recomputed = await _recompute(store, cp.size, compare_all, on_progress)
    if recomputed is None:
        problem(f"the database lacks leaves of the first {cp.size}, which its checkpoints cover: "
                "run `logserver fsck`")
        return report
    if recomputed != cp.root:
        problem(f"the database's leaves give root {recomputed.hex()} at size {cp.size}, but its checkpoint says "
                f"{cp.root.hex()}: the objects were compared with leaves that are not the signed ones; "
                "run `logserver fsck`")
    want_objects = len(tiles_for_size(cp.size)) + len(entries_tiles_for_size(cp.size))
    assert report.objects_checked == want_objects, (report.objects_checked, want_objects)
    if problems_seen > len(report.problems):
        report.notes.append(f"{problems_seen - len(report.problems)} more problems were not listed")

    # 3. The progress row against the target.
    if row is None:
        report.notes.append(f"PostgreSQL records no publication to this target; the target has size {cp.size}")
    elif row.tree_size > cp.size:
        problem(f"PostgreSQL records {recorded} as published to this target, but its checkpoint has size "
                f"{cp.size}: the target lost what it had (restored from an old backup?)")
    elif row.tree_size == cp.size and row.root != cp.root:
        problem(f"PostgreSQL records {recorded} as published to this target, but its checkpoint has root "
                f"{cp.root.hex()}")
    elif row.tree_size < cp.size:
        report.notes.append(f"PostgreSQL records size {row.tree_size} as published to this target, which holds "
                            f"size {cp.size} (another process published it, or the record is behind)")
    else:
        report.notes.append(f"PostgreSQL records size {row.tree_size} as published to this target, as it holds")
    if report.log_size is not None and report.log_size > cp.size:
        report.notes.append(f"the log's latest checkpoint has size {report.log_size}: the target is "
                            f"{report.log_size - cp.size} entries behind")
    return report


async def _read(target: Target, path: str, *, checkpoint: bool = False) -> bytes | None:
    try:
        if checkpoint:
            return (await target.read_checkpoint())[0]
        return await target.read(path)
    except TargetError:
        raise
    except Exception as e:
        raise TargetReadError(f"publication target {target.name!r} ({target.describe()}): cannot read {path}: "
                              f"{type(e).__name__}: {e}") from None


async def _recompute(store: TileSource, size: int, check: Callable[[Objects], Awaitable[None]],
                     on_progress: Callable[[int, int], None]) -> bytes | None:
    """Every tile and entry bundle of the tree of `size`, recomputed from the stored leaf
    bytes, given to `check` a chunk at a time (full ones as they complete, the partial
    ones last). Returns the root, or None if leaves are missing."""
    building: dict[tuple[int, int], bytearray] = {}  # tile (level, index) -> its hashes so far
    done: Objects = []

    def visit(level: int, index: int, h: bytes) -> None:
        if level % TILE_HEIGHT:
            return  # tlog-tiles stores only the tree levels that are multiples of 8
        tile_level, tile_index, _, _ = node_in_tile(level, index)
        buf = building.setdefault((tile_level, tile_index), bytearray())
        buf += h
        if len(buf) == TILE_WIDTH * HASH_SIZE:
            done.append((TileID(tile_level, tile_index), bytes(building.pop((tile_level, tile_index)))))

    cr = CompactRange()
    for start in range(0, size, CHUNK):
        end = min(size, start + CHUNK)
        leaves = await store.read_leaf_bytes(start, end)
        if len(leaves) != end - start:
            return None
        for leaf in leaves:
            cr.append(leaf_hash(leaf), visit)
        for first in range(0, len(leaves), TILE_WIDTH):
            bundle = leaves[first:first + TILE_WIDTH]
            done.append((EntriesTileID((start + first) // TILE_WIDTH, len(bundle)), encode_entry_bundle(bundle)))
        await check(done)
        done = []
        on_progress(end, size)
    await check([(TileID(level, index, len(buf) // HASH_SIZE), bytes(buf))
                 for (level, index), buf in sorted(building.items())])
    return cr.root()


def _describe(data: bytes) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"


def _first_difference(tile: TileID | EntriesTileID, got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    where = f"first difference at byte {at}"
    if isinstance(tile, TileID):
        where += f" (hash {at // HASH_SIZE})"
    return where
