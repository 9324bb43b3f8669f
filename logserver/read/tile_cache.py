"""The hash tiles a reader needs: from memory, from the tile file, or from the database.

Because a stored tile only ever grows by appending, any cached copy is a correct
prefix forever: the cache keeps the longest copy seen of each tile and goes back to
the database only when a request needs more of it than the cached copy holds.

Each cached tile is kept together with its expansion (merkle.tiles.expand_tile:
the complete nodes of the 8 tree levels inside it), computed once on first use, so
a proof is a handful of slices instead of hundreds of hashes per request. The
cache is an LRU bounded in bytes. The upper tile levels (a few hundred tiles at 10M
leaves) are touched by every proof and stay cached. Level-0 tiles that fall out of
memory are found, already expanded, in the tile file on local disk
(logserver/read/tile_file.py), which `fill_tile_file` fills in the background; a
file hit is kept in memory only while the LRU has room (it never evicts). A tile
in neither is read from the database.

TreeReader (tree_reader.py) extends TileCache rather than holding one: its proof
and tile fast paths reach the cached tiles (`_tiles`) in one attribute.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable

from ..merkle.geometry import FULL_TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, TileKey, node_in_tile, tile_width
from ..merkle.tiles import TileID, expand_tile
from ..storage import Store
from .tile_file import TileFile

log = logging.getLogger(__name__)

HASH = 32
_ENTRY_OVERHEAD = 400  # bytes of Python objects per cached tile, beyond its hashes
_FILE_TILE_COST = 2 * FULL_TILE_BYTES + _ENTRY_OVERHEAD  # a full level-0 tile with its expansion, in memory


class _Tile:
    """The longest data seen of one hash tile, and its expansion once computed."""

    __slots__ = ("data", "levels")

    def __init__(self, data: bytes):
        self.data = data
        self.levels: list[bytes] | None = None

    @property
    def cost(self) -> int:
        return len(self.data) * (2 if self.levels is not None else 1) + _ENTRY_OVERHEAD


class TileCache:
    """Hash tiles by (level, index), with their expansions: an LRU of at most
    `max_tile_cache_bytes` in memory, backed by `tile_file` (full level-0 tiles, if
    given) and by `store`."""

    def __init__(self, store: Store, *, max_tile_cache_bytes: int, tile_file: TileFile | None):
        self.store = store
        self.tile_file = tile_file
        self._tiles: OrderedDict[TileKey, _Tile] = OrderedDict()
        self._tile_bytes = 0
        self.max_tile_cache_bytes = max_tile_cache_bytes

    @property
    def tile_cache_bytes(self) -> int:
        """Bytes the cached tiles and their expansions hold (what the LRU bounds)."""
        return self._tile_bytes

    def remember_tiles(self, tiles: dict[TileKey, bytes]) -> None:
        """Offer freshly written tile data to the cache (the sequencer's right edge)."""
        for key, data in tiles.items():
            self._cache_tile(key, data)
        self._evict_tiles()

    async def tiles(self, wanted: Iterable[TileID]) -> dict[TileID, bytes]:
        """Data of each tile, at least `width` hashes long. A missing tile is a loud error:
        callers only ask for tiles that the latest checkpoint covers."""
        wanted = list(wanted)
        needed: dict[TileKey, int] = {}
        for t in wanted:
            needed[(t.level, t.index)] = max(needed.get((t.level, t.index), 0), t.width)
        got = await self._tiles_with_width(needed)
        self._evict_tiles()
        return {t: got[(t.level, t.index)].data for t in wanted}

    # --- memory ----------------------------------------------------------------------------

    def _expanded(self, key: TileKey, t: _Tile) -> list[bytes]:
        """The expansion of cached tile `key`, computed (and offered to the tile file) on first use."""
        levels = t.levels
        if levels is None:
            levels = expand_tile(t.data)
            self._set_levels(key, t, levels)
            if self.tile_file is not None and key[0] == 0 and len(t.data) == FULL_TILE_BYTES:
                self.tile_file.put(key[1], levels)
        return levels

    def _set_levels(self, key: TileKey, t: _Tile, levels: list[bytes]) -> None:
        """Attach an expansion to tile `t`, keeping the cache's byte count right: `t` is
        counted only while it is the cache's copy of `key` (a request holding it across an
        await may find it evicted or replaced by then)."""
        if self._tiles.get(key) is not t:
            t.levels = levels
            return
        self._tile_bytes -= t.cost
        t.levels = levels
        self._tile_bytes += t.cost

    def _cache_tile(self, key: TileKey, data: bytes) -> _Tile:
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

    # --- loading what memory lacks ------------------------------------------------------------

    async def _tiles_with_width(self, needed: dict[TileKey, int]) -> dict[TileKey, _Tile]:
        """The cached tiles `needed` maps to a minimum width, loading what is missing or short.

        A full level-0 tile found in the tile file is used only if its root equals
        the hash the level-1 tile above it holds for it (usually cached in memory;
        otherwise read with the missing tiles, in the same round trip): a slot
        expanded from a tile that was corrupted then, and repaired or restored
        since, is a miss. It is dropped and the tile read from the database."""
        out: dict[TileKey, _Tile] = {}
        missing = []
        from_file: dict[TileKey, list[bytes]] = {}
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

    # A level-0 tile's root is node (8, index): hash index & 255 of level-1 tile
    # index >> 8 (merkle.geometry.node_in_tile(TILE_HEIGHT, index)). The two methods
    # below compute that inline: they are on the path of every file hit.

    def _parents_to_read(self, from_file: dict[TileKey, list[bytes]]) -> list[TileKey]:
        """The level-1 tiles above `from_file`'s tiles that memory lacks (or holds too short)."""
        parents: dict[TileKey, int] = {}  # level-1 tile -> hashes it must hold
        for _, index in from_file:
            pk, width = (1, index >> 8), (index & 255) + 1
            parents[pk] = max(parents.get(pk, 0), width)
        return [pk for pk, width in parents.items()
                if (t := self._tiles.get(pk)) is None or len(t.data) < HASH * width]

    def _use_file_tile(self, key: TileKey, levels: list[bytes], stored: dict[TileKey, bytes],
                       out: dict[TileKey, _Tile]) -> bool:
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

    async def fill_tile_file(self, tree_size: int, batch: int = 64) -> int:
        """Fill the tile file with every full level-0 tile of the tree of `tree_size` that
        it lacks, oldest first, a batch at a time, yielding to requests between tiles.
        Returns how many it wrote. A slot whose root disagrees with the database's
        level-1 tile is rewritten."""
        if self.tile_file is None:
            return 0
        full = tree_size // TILE_WIDTH  # full level-0 tiles
        written = 0
        roots: dict[int, bytes] = {}  # level-1 tiles' data, by index: the level-0 tiles' roots

        async def root(i: int) -> bytes:
            _, p, _, pos = node_in_tile(TILE_HEIGHT, i)
            if p not in roots:
                width = tile_width(1, p, tree_size)
                roots[p] = (await self._tiles_with_width({(1, p): width}))[(1, p)].data
                self._evict_tiles()
            return roots[p][pos * HASH:(pos + 1) * HASH]

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
                if data is None or len(data) != FULL_TILE_BYTES:
                    raise RuntimeError(f"storage has no full tile 0/{i} below tree size {tree_size}")
                levels = expand_tile(data)
                if levels[-1] != await root(i):
                    raise RuntimeError(f"stored tile 0/{i} does not hash to the level-1 tile's node for it: "
                                       "the database is corrupted (run `logserver fsck`)")
                self.tile_file.put(i, levels)
                written += 1
                await asyncio.sleep(0)
        return written
