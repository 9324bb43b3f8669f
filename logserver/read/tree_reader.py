"""Reads of the tree: proofs, tiles and entry bundles, with bounded caches.

Every proof needs O(log n) node hashes, which come from at most a few hash
tiles per tile level. Because a stored tile only ever grows by appending, any
cached copy is a correct prefix forever: the cache keeps the longest copy seen
of each tile and goes back to the database only when a request needs more of
it than the cached copy holds.

Each cached tile is kept together with its expansion (merkle.tiles.expand_tile:
the complete nodes of the 8 tree levels inside it), computed once on first use,
so a proof is a handful of slices instead of hundreds of hashes per request.
Both caches are LRUs bounded in bytes. The upper tile levels (a few hundred
tiles at 10M leaves) are touched by every proof and stay cached. Level-0 tiles
that fall out of memory are found, already expanded, in the tile file on local
disk (logserver/read/tile_file.py), which `warm_tile_file` fills in the background;
a file hit is kept in memory only while the LRU has room (it never evicts). A
proof touches the database only for a tile that is in neither.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable

from ..merkle import InvalidParameterError, consistency_node, path_plan, path_split, rehash
from ..merkle.tiles import (
    TILE_HEIGHT, TILE_WIDTH, EntriesTileID, TileID, encode_entry_bundle, expand_tile,
)
from ..storage import DATABASE_UNAVAILABLE, CheckpointRow, Store
from .tile_file import TileFile

log = logging.getLogger(__name__)

# How long a read waits for the database to name a newer checkpoint before it
# serves the one this process already has.
REFRESH_TIMEOUT_S = 2.0
HASH = 32
assert TILE_HEIGHT == 8 and TILE_WIDTH == 256  # _read_hashes relies on it
_ENTRY_OVERHEAD = 400  # bytes of Python objects per cached tile, beyond its hashes
_FULL = TILE_WIDTH * HASH
_FILE_TILE_COST = 2 * _FULL + _ENTRY_OVERHEAD  # a full level-0 tile with its expansion, in memory
_MAX_TAILS = 4096  # cached proof tails (TreeReader._audit_path): 2 * 64 per tree size at most
# _SIBLINGS[p][k]: where, in level k of an expanded tile (merkle.tiles.expand_tile),
# the sibling of the ancestor of the tile's node p lies: (k, start, end) in bytes.
# An audit path's siblings inside one tile are a slice of this row (_audit_path).
_SIBLINGS = tuple(
    tuple((k, ((p >> k) ^ 1) * HASH, (((p >> k) ^ 1) + 1) * HASH) for k in range(TILE_HEIGHT))
    for p in range(TILE_WIDTH)
)


class BeyondTreeError(ValueError):
    """The request names a tree size, index or tile that the latest checkpoint does not cover."""


def _leaves_needed(tree_level: int, index: int, width: int) -> int:
    """The tree size from which tile `index` at `tree_level` has `width` nodes."""
    return (index * TILE_WIDTH + width) << tree_level


class _Tile:
    """The longest data seen of one hash tile, and its expansion once computed."""

    __slots__ = ("data", "levels")

    def __init__(self, data: bytes):
        self.data = data
        self.levels: list[bytes] | None = None

    @property
    def cost(self) -> int:
        return len(self.data) * (2 if self.levels is not None else 1) + _ENTRY_OVERHEAD


class TreeReader:
    def __init__(self, store: Store, *, max_tile_cache_bytes: int = 80 << 20,
                 max_bundle_cache_bytes: int = 16 << 20, tile_file: TileFile | None = None):
        self.store = store
        self.tile_file = tile_file
        self.latest: CheckpointRow | None = None
        self._tiles: OrderedDict[tuple[int, int], _Tile] = OrderedDict()
        self._tile_bytes = 0
        self._bundles: OrderedDict[int, bytes] = OrderedDict()  # full entry bundles only
        self._tails: dict[tuple[int, int, bool], list[bytes]] = {}
        self._bundle_bytes = 0
        self.max_tile_cache_bytes = max_tile_cache_bytes
        self.max_bundle_cache_bytes = max_bundle_cache_bytes

    # --- the latest checkpoint -----------------------------------------------------------

    def set_latest(self, cp: CheckpointRow) -> None:
        """Adopt `cp` if it is newer than what this process knows (it never moves back)."""
        if self.latest is None or (cp.tree_size, cp.signed_at_ms) > (self.latest.tree_size, self.latest.signed_at_ms):
            self.latest = cp

    async def refresh_latest(self) -> CheckpointRow:
        cp = await self.store.latest_checkpoint()
        if cp is None:
            raise RuntimeError("the log has no checkpoint: it was never initialised")
        self.set_latest(cp)
        assert self.latest is not None
        return self.latest

    async def latest_or_cached(self) -> CheckpointRow:
        """The latest checkpoint, refreshed from the database; while the database is
        unavailable (or slower than REFRESH_TIMEOUT_S), the newest one already known.

        Serving a slightly old checkpoint is correct (it was signed and committed);
        failing every read during an outage would not be.
        """
        try:
            return await asyncio.wait_for(self.refresh_latest(), REFRESH_TIMEOUT_S)
        except DATABASE_UNAVAILABLE:
            if self.latest is None:
                raise
            return self.latest

    async def covering(self, size: int) -> CheckpointRow:
        """The latest checkpoint, which must cover `size` (refreshing once if needed)."""
        cp = self.latest
        if cp is None or cp.tree_size < size:
            cp = await self.refresh_latest()
        if cp.tree_size < size:
            raise BeyondTreeError(f"tree size {size} is beyond the latest checkpoint's size {cp.tree_size}")
        return cp

    # --- proofs --------------------------------------------------------------------------

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 inclusion proof of leaf `index` in the tree of `size` (<= latest size)."""
        return (await self.inclusion_proof_and_leaf(index, size))[0]

    async def inclusion_proof_and_leaf(self, index: int, size: int) -> tuple[list[bytes], bytes]:
        """The inclusion proof of leaf `index` at `size` and the leaf hash, in one read."""
        if not 0 <= index < size:
            raise InvalidParameterError(f"index: got {index}, want 0 <= index < tree size {size}")
        await self.covering(size)
        return await self._audit_path(0, index, size)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 6962 consistency proof from `size1` to `size2` (<= latest size)."""
        node = consistency_node(size1, size2)
        await self.covering(size2)
        if node is None:
            return []
        path, own = await self._audit_path(*node, size2)
        return path if node[1] == 0 else [own, *path]

    async def _audit_path(self, level: int, index: int, size: int) -> tuple[list[bytes], bytes]:
        """The audit path of the complete node (level, index) at `size`, and the node's hash.

        The path is split where it stops depending on the node (merkle.path_split).
        Below that, the siblings come from at most one expanded tile per tile level,
        sliced directly. The rest, the same for every node under that fork, is computed
        once per (size, fork) the slow way (the plan's nodes one by one, then rehash) and
        kept in `_tails`.
        """
        low, folds = path_split(level, index, size)
        tail = self._tails.get((size, low, folds))
        if tail is None:
            plan = path_plan(level, index, size)
            hashes = await self._read_hashes((*plan.ids, (level, index)), size)
            path = rehash(plan, hashes[:-1])
            if len(self._tails) >= _MAX_TAILS:
                self._tails.clear()  # a few tree sizes' worth; recomputed on demand
            self._tails[(size, low, folds)] = path[low - level:]
            return path, hashes[-1]
        first = index << level
        cache = self._tiles
        # The tiles from the node's own (which holds its hash) to the highest sibling's.
        # The usual case, every one cached and expanded, takes no call and no dict.
        # Each cached expansion is taken now: another request may replace the tile's
        # copy while this one waits for the rest (any expansion of it stays correct).
        picked: list[tuple[tuple[int, int], int, list[bytes] | None]] = []
        needed: dict[tuple[int, int], int] | None = None
        for t in range(level >> 3, ((max(low, level + 1) - 1) >> 3) + 1):
            bottom = t << 3
            key = (t, first >> (bottom + TILE_HEIGHT))
            width = (size >> bottom) - (key[1] << TILE_HEIGHT)
            if width > TILE_WIDTH:
                width = TILE_WIDTH
            c = cache.get(key)
            levels = None if c is None or len(c.data) < HASH * width else c.levels
            if levels is not None:
                cache.move_to_end(key)
            elif needed is None:
                needed = {key: width}
            else:
                needed[key] = width
            picked.append((key, bottom, levels))
        got = await self._tiles_with_width(needed) if needed is not None else None
        out: list[bytes] = []
        own = b""
        for key, bottom, levels in picked:
            if levels is None:
                assert got is not None
                levels = self._expanded(key, got[key])
            siblings = _SIBLINGS[(first >> bottom) & (TILE_WIDTH - 1)]
            if bottom <= level:
                k0 = level - bottom
                pos = (first >> level) & ((1 << (TILE_HEIGHT - k0)) - 1)
                own = levels[k0][pos * HASH:(pos + 1) * HASH]
            else:
                k0 = 0
            k1 = low - bottom
            for k, start, end in siblings[k0:k1 if k1 < TILE_HEIGHT else TILE_HEIGHT]:
                out.append(levels[k][start:end])
        if got is not None:
            self._evict_tiles()
        out += tail
        return out, own

    def _expanded(self, key: tuple[int, int], t: _Tile) -> list[bytes]:
        """The expansion of cached tile `key`, computed (and offered to the tile file) on first use."""
        if t.levels is None:
            self._set_levels(key, t, expand_tile(t.data))
            if self.tile_file is not None and key[0] == 0 and len(t.data) == _FULL:
                self.tile_file.put(key[1], t.levels)
        return t.levels

    def _set_levels(self, key: tuple[int, int], t: _Tile, levels: list[bytes]) -> None:
        """Attach an expansion to tile `t`, keeping the cache's byte count right: `t` is
        counted only while it is the cache's copy of `key` (a request holding it across an
        await may find it evicted or replaced by then)."""
        if self._tiles.get(key) is not t:
            t.levels = levels
            return
        self._tile_bytes -= t.cost
        t.levels = levels
        self._tile_bytes += t.cost

    async def _read_hashes(self, ids, size: int) -> list[bytes]:
        """Hashes of the complete nodes `ids` of the tree of `size`, from expanded tiles."""
        where = []
        needed: dict[tuple[int, int], int] = {}
        for level, index in ids:
            # (Shifts rather than divmod/min/max: this loop runs ~20 times per proof.)
            tile_level = level >> 3  # TILE_HEIGHT == 8
            below = level & 7
            shift = TILE_HEIGHT - below
            tile_index = index >> shift
            width = (size >> (TILE_HEIGHT * tile_level)) - (tile_index << TILE_HEIGHT)
            if width > TILE_WIDTH:
                width = TILE_WIDTH
            pos = index - (tile_index << shift)
            if (pos + 1) << below > width:
                raise RuntimeError(f"node ({level}, {index}) is not complete at tree size {size}")
            key = (tile_level, tile_index)
            if needed.get(key, 0) < width:
                needed[key] = width
            where.append((key, below, pos))
        tiles = await self._tiles_with_width(needed)
        out = [self._expanded(key, tiles[key])[below][pos * HASH:(pos + 1) * HASH] for key, below, pos in where]
        self._evict_tiles()
        return out

    # --- tiles ---------------------------------------------------------------------------

    def remember_tiles(self, tiles: dict[tuple[int, int], bytes]) -> None:
        """Offer freshly written tile data to the cache (the sequencer's right edge)."""
        for key, data in tiles.items():
            self._cache_tile(key, data)
        self._evict_tiles()

    def _cache_tile(self, key: tuple[int, int], data: bytes) -> _Tile:
        have = self._tiles.get(key)
        if have is None:
            have = self._tiles[key] = _Tile(data)
            self._tile_bytes += have.cost
        elif len(data) > len(have.data):
            self._tile_bytes -= have.cost
            have.data, have.levels = data, None  # re-expanded on next use
            self._tile_bytes += have.cost
        self._tiles.move_to_end(key)
        return have

    def _evict_tiles(self) -> None:
        while self._tile_bytes > self.max_tile_cache_bytes and len(self._tiles) > 1:
            _, t = self._tiles.popitem(last=False)
            self._tile_bytes -= t.cost

    async def _tiles_with_width(self, needed: dict[tuple[int, int], int]) -> dict[tuple[int, int], _Tile]:
        """The cached tiles `needed` maps to a minimum width, loading what is missing or short.

        A full level-0 tile found in the tile file is used only if its root equals
        the hash the level-1 tile above it holds for it (usually cached in memory;
        otherwise read with the missing tiles, in the same round trip): a slot
        expanded from a tile that was corrupted then, and repaired or restored
        since, is a miss. It is dropped and the tile read from the database."""
        out: dict[tuple[int, int], _Tile] = {}
        missing = []
        from_file: dict[tuple[int, int], list[bytes]] = {}
        for key, width in needed.items():
            t = self._tiles.get(key)
            if t is not None and len(t.data) >= HASH * width:
                self._tiles.move_to_end(key)
                out[key] = t
                continue
            if self.tile_file is not None and key[0] == 0:  # a full tile serves every width
                levels = self.tile_file.get(key[1])
                if levels is not None:
                    from_file[key] = levels
                    continue
            missing.append(key)
        if not missing and not from_file:
            return out  # the usual case: all in memory
        unread = [pk for pk in self._parents_to_read(from_file) if pk not in missing]
        stored = await self.store.read_tiles(missing + unread) if missing or unread else {}
        for pk in unread:
            if pk in stored:
                self._cache_tile(pk, stored[pk])
        refused = [key for key, levels in from_file.items() if not self._use_file_tile(key, levels, stored, out)]
        if refused:
            log.warning("tile cache file: %d slot(s) (first: tile %d) disagree with the database's level-1 "
                        "tiles (stale after a database repair or restore, or damaged); dropped them",
                        len(refused), refused[0][1])
            assert self.tile_file is not None
            for key in refused:
                self.tile_file.drop(key[1])
            stored.update(await self.store.read_tiles(refused))
            missing += refused
        for key in missing:
            data = stored.get(key)
            if data is None or len(data) < HASH * needed[key]:
                raise RuntimeError(
                    f"storage has {0 if data is None else len(data) // HASH} hashes of tile "
                    f"{key[0]}/{key[1]}, want {needed[key]}: the tiles are behind the checkpoint"
                )
            out[key] = self._cache_tile(key, data)
        return out

    def _parents_to_read(self, from_file: dict[tuple[int, int], list[bytes]]) -> list[tuple[int, int]]:
        """The level-1 tiles above `from_file`'s tiles that memory lacks (or holds too short)."""
        parents: dict[tuple[int, int], int] = {}  # level-1 tile -> hashes it must hold
        for _, index in from_file:
            pk, width = (1, index >> 8), (index & 255) + 1
            parents[pk] = max(parents.get(pk, 0), width)
        return [pk for pk, width in parents.items()
                if (t := self._tiles.get(pk)) is None or len(t.data) < HASH * width]

    def _use_file_tile(self, key: tuple[int, int], levels: list[bytes], stored: dict[tuple[int, int], bytes],
                       out: dict[tuple[int, int], _Tile]) -> bool:
        """Cache and hand out level-0 tile `key` from its file slot `levels` if the slot's
        root is the level-1 tile's node for it (read now, or in memory); else False."""
        index = key[1]
        pk, pos = (1, index >> 8), (index & 255) * HASH
        parent = stored.get(pk)
        if parent is None and (t := self._tiles.get(pk)) is not None:
            parent = t.data
        if parent is None or parent[pos:pos + HASH] != levels[-1]:
            return False
        if key not in self._tiles and self._tile_bytes + _FILE_TILE_COST > self.max_tile_cache_bytes:
            # The file is this tile's cache: a file hit never makes room by evicting, so a
            # tree too big for memory does not churn the LRU (the handed-out copy is not kept).
            t = out[key] = _Tile(levels[0])
            t.levels = levels
            return True
        t = out[key] = self._cache_tile(key, levels[0])
        if t.levels is None:
            self._set_levels(key, t, levels)
        return True

    async def tiles(self, wanted: Iterable[TileID]) -> dict[TileID, bytes]:
        """Data of each tile, at least `width` hashes long. A missing tile is a loud error:
        callers only ask for tiles that the latest checkpoint covers."""
        wanted = list(wanted)
        needed: dict[tuple[int, int], int] = {}
        for t in wanted:
            needed[(t.level, t.index)] = max(needed.get((t.level, t.index), 0), t.width)
        got = await self._tiles_with_width(needed)
        self._evict_tiles()
        return {t: got[(t.level, t.index)].data for t in wanted}

    def cached_hash_tile(self, level: int, index: int, width: int) -> bytes | None:
        """hash_tile(TileID(level, index, width)) if the latest checkpoint known covers it
        and memory holds it; else None (then call hash_tile). No await, no ID object: the
        tile route asks this first, and at 10k-1M leaves it is nearly always the answer."""
        cp = self.latest
        t = self._tiles.get((level, index))
        if cp is None or t is None or cp.tree_size < _leaves_needed(level * TILE_HEIGHT, index, width) \
                or len(t.data) < HASH * width:
            return None
        self._tiles.move_to_end((level, index))
        return t.data[: HASH * width]  # the whole of a full tile: no copy

    async def hash_tile(self, tile: TileID) -> bytes:
        """The bytes of a full or partial hash tile, as served at tile/<L>/<N>[.p/<W>]."""
        await self._covering_tile(tile.level * 8, tile.index, tile.width)
        key = (tile.level, tile.index)
        data = (await self._tiles_with_width({key: tile.width}))[key].data
        self._evict_tiles()
        return data[: HASH * tile.width]

    async def entry_bundle(self, tile: EntriesTileID) -> bytes:
        """The bytes of a full or partial entry bundle, as served at tile/entries/<N>[.p/<W>]."""
        await self._covering_tile(0, tile.index, tile.width)
        if tile.width == TILE_WIDTH and tile.index in self._bundles:
            self._bundles.move_to_end(tile.index)
            return self._bundles[tile.index]
        start = tile.index * TILE_WIDTH
        leaves = await self.store.read_leaf_bytes(start, start + tile.width)
        if len(leaves) != tile.width:
            raise RuntimeError(f"storage has {len(leaves)} leaves of bundle {tile.index}, want {tile.width}")
        data = encode_entry_bundle(leaves)
        if tile.width == TILE_WIDTH:
            # Another request for the same bundle may have cached it during our read.
            if (had := self._bundles.pop(tile.index, None)) is not None:
                self._bundle_bytes -= len(had)
            self._bundles[tile.index] = data
            self._bundle_bytes += len(data)
            while self._bundle_bytes > self.max_bundle_cache_bytes and len(self._bundles) > 1:
                self._bundle_bytes -= len(self._bundles.popitem(last=False)[1])
        return data

    async def _covering_tile(self, tree_level: int, index: int, width: int) -> CheckpointRow:
        """Check that the latest checkpoint has at least `width` nodes in this tile."""
        size_needed = _leaves_needed(tree_level, index, width)
        cp = self.latest
        if cp is None or cp.tree_size < size_needed:
            cp = await self.refresh_latest()
        if cp.tree_size < size_needed:
            raise BeyondTreeError(
                f"the latest checkpoint (size {cp.tree_size}) does not cover "
                f"{width} nodes of this tile"
            )
        return cp

    async def warm_tile_file(self, batch: int = 64) -> int:
        """Fill the tile file with every full level-0 tile it lacks, oldest first, a
        batch at a time, yielding to requests between tiles. Returns how many it wrote.
        A slot whose root disagrees with the database's level-1 tile is rewritten.
        Run in the background after start-up (by the process that sequences)."""
        if self.tile_file is None:
            return 0
        cp = self.latest or await self.refresh_latest()
        full = cp.tree_size // TILE_WIDTH
        written = 0
        roots: dict[int, bytes] = {}  # level-1 tiles' data, by index: the level-0 tiles' roots

        async def root(i: int) -> bytes:
            p = i >> 8
            if p not in roots:
                width = min(TILE_WIDTH, full - (p << 8))
                roots[p] = (await self._tiles_with_width({(1, p): width}))[(1, p)].data
                self._evict_tiles()
            return roots[p][(i & 255) * HASH:((i & 255) + 1) * HASH]

        for start in range(0, full, batch):
            lacking = []
            for i in range(start, min(start + batch, full)):
                levels = self.tile_file.get(i)
                if levels is None or levels[-1] != await root(i):
                    lacking.append(i)
            await asyncio.sleep(0)
            if not lacking:
                continue
            stored = await self.store.read_tiles([(0, i) for i in lacking])
            for i in lacking:
                data = stored.get((0, i))
                if data is None or len(data) != _FULL:
                    raise RuntimeError(f"storage has no full tile 0/{i} below tree size {cp.tree_size}")
                levels = expand_tile(data)
                if levels[-1] != await root(i):
                    raise RuntimeError(f"stored tile 0/{i} does not hash to the level-1 tile's node for it: "
                                       "the database is corrupted (run `logserver fsck`)")
                self.tile_file.put(i, levels)
                written += 1
                await asyncio.sleep(0)
        return written

    async def leaf_hash_at(self, index: int, size: int) -> bytes:
        """The leaf hash at `index`, read from the level-0 tiles of a tree of `size`."""
        return (await self._read_hashes([(0, index)], size))[0]
