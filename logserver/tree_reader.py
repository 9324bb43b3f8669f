"""Reads of the tree: proofs, tiles and entry bundles, with a bounded tile cache.

Every proof needs O(log n) node hashes, which come from at most a few hash
tiles per tile level. Because a stored tile only ever grows by appending, any
cached copy is a correct prefix forever: the cache keeps the longest copy seen
of each tile and goes back to the database only when a request needs more of
it than the cached copy holds.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable

from .merkle import consistency_plan, inclusion_plan, rehash
from .merkle.tiles import TILE_WIDTH, EntriesTileID, TileID, encode_entry_bundle, hashes_from_tiles, tiles_for_nodes
from .storage import DATABASE_UNAVAILABLE, CheckpointRow, Store

# How long a read waits for the database to name a newer checkpoint before it
# serves the one this process already has.
REFRESH_TIMEOUT_S = 2.0


class BeyondTreeError(ValueError):
    """The request names a tree size, index or tile that the latest checkpoint does not cover."""


class TreeReader:
    def __init__(self, store: Store, *, max_cached_tiles: int = 16_384, max_cached_bundles: int = 1024):
        self.store = store
        self.latest: CheckpointRow | None = None
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._bundles: OrderedDict[int, bytes] = OrderedDict()  # full entry bundles only
        self.max_cached_tiles = max_cached_tiles
        self.max_cached_bundles = max_cached_bundles

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
        await self.covering(size)
        plan = inclusion_plan(index, size)
        return rehash(plan, await self._read_hashes(plan.ids, size))

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 6962 consistency proof from `size1` to `size2` (<= latest size)."""
        await self.covering(size2)
        plan = consistency_plan(size1, size2)
        return rehash(plan, await self._read_hashes(plan.ids, size2))

    async def _read_hashes(self, ids, size: int) -> list[bytes]:
        needed = tiles_for_nodes(ids, size)
        tiles = await self.tiles(needed)
        return hashes_from_tiles(ids, size, tiles)

    # --- tiles ---------------------------------------------------------------------------

    def remember_tiles(self, tiles: dict[tuple[int, int], bytes]) -> None:
        """Offer freshly written tile data to the cache (the sequencer's right edge)."""
        for key, data in tiles.items():
            self._cache_tile(key, data)

    def _cache_tile(self, key: tuple[int, int], data: bytes) -> None:
        have = self._tiles.get(key)
        if have is None or len(data) > len(have):
            self._tiles[key] = data
        self._tiles.move_to_end(key)
        while len(self._tiles) > self.max_cached_tiles:
            self._tiles.popitem(last=False)

    async def tiles(self, wanted: Iterable[TileID]) -> dict[TileID, bytes]:
        """Data of each tile, at least `width` hashes long. A missing tile is a loud error:
        callers only ask for tiles that the latest checkpoint covers."""
        wanted = list(wanted)
        out: dict[TileID, bytes] = {}
        missing = []
        for t in wanted:
            data = self._tiles.get((t.level, t.index))
            if data is not None and len(data) >= 32 * t.width:
                self._tiles.move_to_end((t.level, t.index))
                out[t] = data
            else:
                missing.append(t)
        if missing:
            stored = await self.store.read_tiles((t.level, t.index) for t in missing)
            for t in missing:
                data = stored.get((t.level, t.index))
                if data is None or len(data) < 32 * t.width:
                    raise RuntimeError(
                        f"storage has {0 if data is None else len(data) // 32} hashes of tile "
                        f"{t.level}/{t.index}, want {t.width}: the tiles are behind the checkpoint"
                    )
                self._cache_tile((t.level, t.index), data)
                out[t] = data
        return out

    async def hash_tile(self, tile: TileID) -> bytes:
        """The bytes of a full or partial hash tile, as served at tile/<L>/<N>[.p/<W>]."""
        await self._covering_tile(tile.level * 8, tile.index, tile.width)
        data = (await self.tiles([tile]))[tile]
        return data[: 32 * tile.width]

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
            self._bundles[tile.index] = data
            while len(self._bundles) > self.max_cached_bundles:
                self._bundles.popitem(last=False)
        return data

    async def _covering_tile(self, tree_level: int, index: int, width: int) -> CheckpointRow:
        """Check that the latest checkpoint has at least `width` nodes in this tile."""
        last_node = index * TILE_WIDTH + width  # nodes of tree_level needed
        size_needed = last_node << tree_level
        cp = self.latest
        if cp is None or cp.tree_size < size_needed:
            cp = await self.refresh_latest()
        if cp.tree_size < size_needed:
            raise BeyondTreeError(
                f"the latest checkpoint (size {cp.tree_size}) does not cover "
                f"{width} nodes of this tile"
            )
        return cp

    async def leaf_hash_at(self, index: int, size: int) -> bytes:
        """The leaf hash at `index`, read from the level-0 tiles of a tree of `size`."""
        ids = [(0, index)]
        tiles = await self.tiles(tiles_for_nodes(ids, size))
        return hashes_from_tiles(ids, size, tiles)[0]
