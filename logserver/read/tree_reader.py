"""Reads of the tree for the API: the latest checkpoint, proofs, hash tiles and entry bundles.

TreeReader is the one object the read routes ask. It is a TileCache (tile_cache.py:
hash tiles from memory, the tile file or the database) that also
* knows the latest checkpoint this process has seen, and refuses what that
  checkpoint does not cover (BeyondTreeError);
* builds inclusion and consistency proofs (O(log n) node hashes, from at most a few
  tiles per tile level) as slices of expanded tiles (`_audit_path`);
* serves hash tiles and entry bundles, with a small LRU of full bundles.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable

from ..merkle import InvalidParameterError, consistency_node, path_plan, path_split, rehash
from ..merkle.geometry import SIBLING_SLICES, TILE_HEIGHT, TILE_WIDTH, NodeID, plan_tile_reads, tile_min_size
from ..merkle.tiles import EntriesTileID, TileID, encode_entry_bundle
from ..storage import DATABASE_UNAVAILABLE, CheckpointRow, Store
from .tile_cache import HASH, TileCache
from .tile_file import TileFile

# How long a read waits for the database to name a newer checkpoint before it
# serves the one this process already has.
REFRESH_TIMEOUT_S = 2.0
assert TILE_HEIGHT == 8 and TILE_WIDTH == 256  # _audit_path shifts by 3 on that ground
_MAX_TAILS = 4096  # cached proof tails (TreeReader._audit_path): 2 * 64 per tree size at most


class BeyondTreeError(ValueError):
    """The request names a tree size, index or tile that the latest checkpoint does not cover."""


class TreeReader(TileCache):
    def __init__(self, store: Store, *, max_tile_cache_bytes: int = 80 << 20,
                 max_bundle_cache_bytes: int = 16 << 20, tile_file: TileFile | None = None):
        super().__init__(store, max_tile_cache_bytes=max_tile_cache_bytes, tile_file=tile_file)
        self.latest: CheckpointRow | None = None
        self._bundles: OrderedDict[int, bytes] = OrderedDict()  # full entry bundles only
        self._tails: dict[tuple[int, int, bool], list[bytes]] = {}
        self._bundle_bytes = 0
        self.max_bundle_cache_bytes = max_bundle_cache_bytes
        # The leaves of the newest partial bundle read: (bundle index, leaves). Leaves never
        # change, so a wider partial of the same bundle (the static publisher's next pass,
        # the next reader at the right edge) reads only the leaves added since.
        self._edge: tuple[int, list[bytes]] = (-1, [])

    @property
    def bundle_cache_bytes(self) -> int:
        """Bytes the cached full entry bundles hold (bounded by max_bundle_cache_bytes)."""
        return self._bundle_bytes

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
        # The usual case, every one cached and expanded, takes no call and no dict: the
        # tile's key and width (merkle.geometry.node_in_tile, tile_width) and the node's
        # position in it are computed inline, and its siblings are a row of SIBLING_SLICES.
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
            siblings = SIBLING_SLICES[(first >> bottom) & (TILE_WIDTH - 1)]
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

    async def _read_hashes(self, ids: Iterable[NodeID], size: int) -> list[bytes]:
        """Hashes of the complete nodes `ids` of the tree of `size`, from expanded tiles."""
        needed, where = plan_tile_reads(ids, size)
        tiles = await self._tiles_with_width(needed)
        out = [self._expanded(key, tiles[key])[k][pos * HASH:(pos + 1) * HASH] for key, k, pos in where]
        self._evict_tiles()
        return out

    async def leaf_hash_at(self, index: int, size: int) -> bytes:
        """The leaf hash at `index`, read from the level-0 tiles of a tree of `size`."""
        return (await self._read_hashes([(0, index)], size))[0]

    # --- hash tiles and entry bundles ----------------------------------------------------

    def cached_hash_tile(self, level: int, index: int, width: int) -> bytes | None:
        """hash_tile(TileID(level, index, width)) if the latest checkpoint known covers it
        and memory holds it; else None (then call hash_tile). No await, no ID object: the
        tile route asks this first, and at 10k-1M leaves it is nearly always the answer."""
        cp = self.latest
        t = self._tiles.get((level, index))
        if cp is None or t is None or cp.tree_size < tile_min_size(level, index, width) \
                or len(t.data) < HASH * width:
            return None
        self._tiles.move_to_end((level, index))
        return t.data[: HASH * width]  # the whole of a full tile: no copy

    async def hash_tile(self, tile: TileID) -> bytes:
        """The bytes of a full or partial hash tile, as served at tile/<L>/<N>[.p/<W>]."""
        await self._covering_tile(tile.level, tile.index, tile.width)
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
        edge_index, edge = self._edge
        have = edge[:tile.width] if edge_index == tile.index else []
        leaves = have + await self.store.read_leaf_bytes(start + len(have), start + tile.width)
        if len(leaves) != tile.width:
            raise RuntimeError(f"storage has {len(leaves)} leaves of bundle {tile.index}, want {tile.width}")
        if tile.width < TILE_WIDTH and (tile.index > edge_index or (tile.index == edge_index and
                                                                      tile.width > len(edge))):
            self._edge = (tile.index, leaves)
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

    async def _covering_tile(self, tile_level: int, index: int, width: int) -> CheckpointRow:
        """Check that the latest checkpoint has at least `width` nodes in this tile (an
        entry bundle covers the same leaves as the level-0 tile of its index)."""
        size_needed = tile_min_size(tile_level, index, width)
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
        """Fill the tile file with every full level-0 tile of the latest checkpoint's tree
        that it lacks (TileCache.fill_tile_file). Returns how many it wrote. Run in the
        background after start-up (by the process that sequences)."""
        cp = self.latest or await self.refresh_latest()
        return await self.fill_tile_file(cp.tree_size, batch)
