"""The expanded level-0 tile file (logserver/tile_file.py) and proofs served from it."""
from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.bulkload import load, open_store
from logserver.log_key import LogKey
from logserver.merkle import verify_inclusion
from logserver.merkle.tiles import expand_tile
from logserver.tile_file import HEADER, SLOT, TileFile
from logserver.tree_reader import TreeReader

TILES = 5
SIZE = TILES * 256 + 37  # five full level-0 tiles and a partial one


def _tile(n: int) -> bytes:
    return b"".join(bytes([n, i]) * 16 for i in range(256))


def test_round_trip_and_every_kind_of_miss(tmp_path):
    path = tmp_path / "tiles.bin"
    f = TileFile(path, b"log A")
    levels = expand_tile(_tile(3))
    assert f.get(3) is None  # never written (beyond the end)
    f.put(3, levels)
    assert f.get(3) == levels
    assert f.get(2) is None  # a hole before it: zeros do not match their checksum
    # A flipped bit anywhere in the slot is a miss, not wrong data.
    with open(path, "r+b") as raw:
        raw.seek(HEADER + 3 * SLOT + 5000)
        byte = raw.read(1)
        raw.seek(-1, os.SEEK_CUR)
        raw.write(bytes([byte[0] ^ 1]))
    assert f.get(3) is None
    f.put(3, levels)
    f.close()
    assert TileFile(path, b"log A").get(3) == levels  # kept across opens
    other = TileFile(path, b"log B")  # another log under the same data dir starts afresh
    assert other.get(3) is None
    other.close()


async def test_proofs_from_the_tile_file_equal_the_database_ones(database_url, tmp_path):
    key = LogKey("example.com/tile-file", Ed25519PrivateKey.from_private_bytes(b"\7" * 32))
    await load(database_url, key, SIZE, batch=500)
    store = await open_store(database_url, key)
    try:
        plain = TreeReader(store)
        warmed = TreeReader(store, max_tile_cache_bytes=1, tile_file=TileFile(tmp_path / "t.bin", b"x"))
        assert await warmed.warm_tile_file(batch=2) == TILES
        assert await warmed.warm_tile_file() == 0  # all there already
        # A cold reader (memory cache of one tile) with the warmed file must not need
        # the level-0 tiles from the database: take them away from it and compare.
        cold = TreeReader(store, max_tile_cache_bytes=1, tile_file=warmed.tile_file)
        reads = []

        class Counting:  # the same database, with the cold reader's tile reads recorded
            async def read_tiles(self, keys):
                keys = list(keys)
                reads.extend(k for k in keys if k[0] == 0)
                return await store.read_tiles(keys)

            def __getattr__(self, name):
                return getattr(store, name)

        cold.store = Counting()
        compared = 0
        for size in (256, 300, 5 * 256, SIZE):
            await plain.covering(size)
            for index in range(0, size, 7):
                want = await plain.inclusion_proof(index, size)
                got = await cold.inclusion_proof(index, size)
                assert got == want, (index, size)
                compared += 1
        assert compared == 37 + 43 + 183 + 189
        assert reads and all(k[1] >= TILES for k in reads), f"full level-0 tiles read from the database: {reads[:5]}"
        # And the proofs are right, not merely equal: leaf 0 against the signed root.
        latest = await plain.refresh_latest()
        first_leaf = await plain.leaf_hash_at(0, latest.tree_size)
        verify_inclusion(0, latest.tree_size, first_leaf, await cold.inclusion_proof(0, latest.tree_size), latest.root)
    finally:
        await store.pool.close()
