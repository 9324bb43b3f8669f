"""`logserver fsck`: recompute everything derivable and report the first place it differs.

One streaming pass over the leaves, in index order, with O(log n) state:
* every leaf hash is recomputed from the stored leaf bytes and compared with the
  stored leaf_hash column;
* the recomputed leaf hashes are appended to a compact range whose visitor
  rebuilds every hash tile (all levels), and each tile is compared with the
  stored one as soon as it is complete (or at the end, for partial tiles);
* every signed checkpoint is checked: its note verifies under the log key, its
  recorded size and root match the note, and its root equals the compact
  range's root at that size;
* log_state's slot (the latest signature; an idle re-sign is stored only there,
  migrations/0003_checkpoint_slot.sql) is checked the same way, and must name a
  stored checkpoint of its size and root.
The checkpoints table holds one row per tree size (plus re-signs stored before
migration 0003), so the work grows with the log's sizes, not with its uptime.
Problems are reported with exact coordinates (leaf index; tile level, index and
position), so a flipped bit is located, not just detected.

With `tile_file` (the server's expanded-tile cache, logserver/read/tile_file.py),
every slot it holds is also compared with the root recomputed from the leaves;
a slot that differs (expanded from a tile that was corrupted then, or from
before a restore) is dropped and counted. That is not a problem of the log
(the server would not use such a slot either), and dropping cache slots is the
only write fsck makes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..formats.checkpoint import open_checkpoint
from ..formats.note import NoteVerifier
from ..merkle import HASH_SIZE, CompactRange, leaf_hash
from ..merkle.geometry import FULL_TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, TileKey, node_in_tile, tile_node
from ..read.tile_file import TileFile
from ..storage import Store

CHUNK = 16 * TILE_WIDTH  # leaves read per query


@dataclass
class FsckReport:
    tree_size: int = 0
    leaves_checked: int = 0
    tiles_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)
    cache_slots_checked: int = 0  # tile cache file slots compared with the leaves
    cache_slots_dropped: list[int] = field(default_factory=list)  # level-0 tile indices whose slot differed

    @property
    def ok(self) -> bool:
        return not self.problems


async def fsck(
    store: Store,
    verifiers: Sequence[NoteVerifier],  # used once per checkpoint: not a one-shot iterator
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
    max_problems: int = 100,
    tile_file: TileFile | None = None,
) -> FsckReport:
    """Check the whole log. Read-only (but for stale `tile_file` slots, which it
    drops); safe to run while the server is serving."""
    report = FsckReport()

    def problem(msg: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(msg)

    latest = await store.latest_checkpoint()
    if latest is None:
        problem("log_state is missing: the log was never initialised")
        return report
    size = report.tree_size = latest.tree_size

    # Checkpoints, grouped by size; each size must have one root.
    roots_at: dict[int, bytes] = {}
    after = 0
    while True:
        rows = await store.checkpoints(after_id=after, limit=5000)
        if not rows:
            break
        for cp in rows:
            after = cp.id
            report.checkpoints_checked += 1
            try:
                parsed, _ = open_checkpoint(cp.note.encode(), verifiers)
            except Exception as e:
                problem(f"checkpoint #{cp.id} (size {cp.tree_size}): note does not verify under the log key: {e}")
                continue
            if (parsed.size, parsed.root) != (cp.tree_size, cp.root):
                problem(f"checkpoint #{cp.id}: columns say size {cp.tree_size} root {cp.root.hex()}, "
                        f"the signed note says size {parsed.size} root {parsed.root.hex()}")
            if cp.tree_size > size:
                problem(f"checkpoint #{cp.id} has size {cp.tree_size}, beyond the log state's {size}")
            have = roots_at.setdefault(cp.tree_size, cp.root)
            if have != cp.root:
                problem(f"two checkpoints of size {cp.tree_size} have different roots: "
                        f"{have.hex()} and {cp.root.hex()}")
    # The slot: the newest signature, which the reader serves.
    report.checkpoints_checked += 1
    try:
        parsed, _ = open_checkpoint(latest.note.encode(), verifiers)
    except Exception as e:
        problem(f"log_state (size {latest.tree_size}): its note does not verify under the log key: {e}")
    else:
        if (parsed.size, parsed.root) != (latest.tree_size, latest.root):
            problem(f"log_state: columns say size {latest.tree_size} root {latest.root.hex()}, "
                    f"its signed note says size {parsed.size} root {parsed.root.hex()}")
    if roots_at.get(latest.tree_size) != latest.root:
        problem(f"log_state (size {latest.tree_size}, root {latest.root.hex()}) names no stored checkpoint "
                f"of that size and root (checkpoint #{latest.id})")
    pending_sizes = sorted(s for s in roots_at if s <= size)

    expected: dict[TileKey, bytearray] = {}  # tiles being rebuilt, by (level, index)

    async def compare_tiles(keys: list[TileKey]) -> None:
        stored = await store.read_tiles(keys)
        for key in keys:
            want = bytes(expected.pop(key))
            got = stored.get(key)
            report.tiles_checked += 1
            if got is None:
                problem(f"tile {key[0]}/{key[1]} is missing ({len(want) // HASH_SIZE} hashes expected)")
                continue
            got = got[: len(want)]
            if got == want:
                continue
            for start in range(0, len(want), HASH_SIZE):
                end = start + HASH_SIZE
                if got[start:end] != want[start:end]:
                    level, index = key
                    pos = start // HASH_SIZE
                    node = tile_node(level, index, 0, pos)
                    what = f"leaf {node[1]}" if level == 0 else f"node {node}"
                    problem(f"tile {level}/{index} hash {pos} ({what}): stored "
                            f"{got[start:end].hex()}, recomputed {want[start:end].hex()}")
                    break
            else:
                problem(f"tile {key[0]}/{key[1]}: stored {len(got) // HASH_SIZE} hashes, want {len(want) // HASH_SIZE}")

    full: list[TileKey] = []

    def visit(level: int, index: int, h: bytes) -> None:
        if level % TILE_HEIGHT:
            return  # tlog-tiles stores only the tree levels that are multiples of 8
        if level == TILE_HEIGHT and tile_file is not None:  # h: the root of level-0 tile `index`
            cached = tile_file.get(index)
            if cached is not None:
                report.cache_slots_checked += 1
                if cached[-1] != h:
                    tile_file.drop(index)
                    report.cache_slots_dropped.append(index)
        tile_level, tile_index, _, _ = node_in_tile(level, index)
        key = (tile_level, tile_index)
        buf = expected.setdefault(key, bytearray())
        buf += h
        if len(buf) == FULL_TILE_BYTES:
            full.append(key)

    cr = CompactRange()
    if pending_sizes and pending_sizes[0] == 0:
        _check_root(cr, roots_at[0], problem)
        pending_sizes.pop(0)
    for start in range(0, size, CHUNK):
        end = min(size, start + CHUNK)
        leaves = await store.read_leaves(start, end)
        if [r.idx for r in leaves] != list(range(start, end)):
            missing = sorted(set(range(start, end)) - {r.idx for r in leaves})
            problem(f"leaves missing in [{start}, {end}): first missing index {missing[0] if missing else '?'}")
            return report
        for r in leaves:
            h = leaf_hash(r.leaf)
            if h != r.leaf_hash:
                problem(f"leaf {r.idx}: stored bytes hash to {h.hex()}, "
                        f"but its leaf_hash column is {r.leaf_hash.hex()}")
            cr.append(h, visit)
            report.leaves_checked += 1
            while pending_sizes and pending_sizes[0] == cr.size:
                _check_root(cr, roots_at[cr.size], problem)
                pending_sizes.pop(0)
        if full:
            await compare_tiles(full)
            full.clear()
        progress(end, size)
    if expected:
        await compare_tiles(sorted(expected))
    if cr.root() != latest.root:
        problem(f"the leaves give root {cr.root().hex()} at size {size}, "
                f"the latest checkpoint says {latest.root.hex()}")
    return report


def _check_root(cr: CompactRange, want: bytes, problem: Callable[[str], None]) -> None:
    got = cr.root()
    if got != want:
        problem(f"checkpoint at size {cr.size}: the leaves give root {got.hex()}, the checkpoint says {want.hex()}")
