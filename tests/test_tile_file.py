"""The expanded level-0 tile file (logserver/read/tile_file.py), proofs served from it, and the
reader's cache accounting when requests overlap."""
from __future__ import annotations

import asyncio
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.api.metrics import Metrics
from logserver.integrity.fsck import fsck
from logserver.keys.log_key import LogKey
from logserver.merkle import verify_inclusion
from logserver.merkle.geometry import FULL_TILE_BYTES
from logserver.merkle.tiles import EntriesTileID, TileID, decode_entry_bundle, expand_tile
from logserver.read.tile_cache import _FILE_TILE_COST
from logserver.read.tile_file import EXPANDED, HEADER, SLOT, TileFile
from logserver.read.tree_reader import TreeReader
from logserver.server.app import _warm_tile_file
from pg import open_test_log
from sequencer_support import grow

TILES = 5
SIZE = TILES * 256 + 37  # five full level-0 tiles and a partial one
KEY = LogKey("example.com/tile-file", Ed25519PrivateKey.from_private_bytes(b"\7" * 32))


def _tile(n: int) -> bytes:
    return b"".join(bytes([n, i]) * 16 for i in range(256))


class _Level0Reads:
    """A store that is `store`, with the level-0 tiles read through it recorded in `reads`."""

    def __init__(self, store):
        self.store, self.reads = store, []

    async def read_tiles(self, keys):
        keys = list(keys)
        self.reads.extend(k for k in keys if k[0] == 0)
        return await self.store.read_tiles(keys)

    def __getattr__(self, name):
        return getattr(self.store, name)


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


def test_slot_layout_is_the_expansion_then_its_crc32(tmp_path):
    """The on-disk format the module docstring gives: 511 hashes, the big-endian CRC-32
    of them, 28 zero bytes; a header of another format version starts the file over."""
    path = tmp_path / "tiles.bin"
    f = TileFile(path, b"log A")
    levels = expand_tile(_tile(1))
    f.put(1, levels)
    f.close()
    raw = path.read_bytes()
    slot = raw[HEADER + SLOT:HEADER + 2 * SLOT]
    assert slot[:EXPANDED] == b"".join(levels)
    assert slot[EXPANDED:] == zlib.crc32(b"".join(levels)).to_bytes(4, "big") + bytes(28)
    # The same file with its header rewritten as version 1 (SHA-256 slots) is not read.
    path.write_bytes(raw[:HEADER].replace(b"tiles v2\n", b"tiles v1\n") + raw[HEADER:])
    again = TileFile(path, b"log A")
    assert again.get(1) is None
    assert path.stat().st_size == HEADER  # started over
    again.close()


async def test_proofs_from_the_tile_file_equal_the_database_ones(database_url, tmp_path):
    store = await open_test_log(database_url, KEY)
    await grow(store, KEY, SIZE)
    try:
        plain = TreeReader(store)
        warmed = TreeReader(store, max_tile_cache_bytes=1, tile_file=TileFile(tmp_path / "t.bin", b"x"))
        assert await warmed.warm_tile_file(batch=2) == TILES
        assert await warmed.warm_tile_file() == 0  # all there already
        # A cold reader (memory cache of one tile) with the warmed file must not need
        # the level-0 tiles from the database: take them away from it and compare.
        cold = TreeReader(store, max_tile_cache_bytes=1, tile_file=warmed.tile_file)
        cold.store = recorder = _Level0Reads(store)
        reads = recorder.reads
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


async def test_a_file_hit_evicts_nothing_from_memory(database_url, tmp_path):
    """Memory with room for two full level-0 tiles (and the level-1 tile): the first two
    tiles proofs touch stay cached, the other three are served from the file on every
    proof without displacing them, and the cache stays within its bound."""
    store = await open_test_log(database_url, KEY)
    await grow(store, KEY, SIZE)
    size = TILES * 256  # full level-0 tiles only: a partial one would come from the database
    try:
        plain = TreeReader(store)
        tile_file = TileFile(tmp_path / "t.bin", b"x")
        assert await TreeReader(store, max_tile_cache_bytes=1, tile_file=tile_file).warm_tile_file() == TILES
        bound = 2 * _FILE_TILE_COST + 4000
        reader = TreeReader(store, max_tile_cache_bytes=bound, tile_file=tile_file)
        reader.store = recorder = _Level0Reads(store)
        level0_reads = recorder.reads
        await plain.covering(size)
        compared = 0
        for _ in range(2):
            for index in range(size):
                assert await reader.inclusion_proof(index, size) == await plain.inclusion_proof(index, size), index
                compared += 1
                assert reader._tile_bytes <= bound
        assert compared == 2 * size
        assert sorted(k for k in reader._tiles if k[0] == 0) == [(0, 0), (0, 1)]
        assert level0_reads == []  # every level-0 tile came from the file
        assert reader._tile_bytes == sum(t.cost for t in reader._tiles.values())
    finally:
        await store.pool.close()


async def test_a_tile_evicted_while_a_proof_waits_is_not_counted_when_expanded(database_url):
    """A proof holds a cached, unexpanded tile while it waits for another from the
    database; meanwhile newer tiles evict the one it holds. Expanding it afterwards must
    not add its bytes to the cache's count (which would shrink the cache for good)."""
    store = await open_test_log(database_url, KEY)
    await grow(store, KEY, SIZE)
    size = TILES * 256
    try:
        plain = TreeReader(store)
        await plain.covering(size)
        data = await store.read_tiles([(0, i) for i in range(TILES)])
        reader = TreeReader(store, max_tile_cache_bytes=3 * (FULL_TILE_BYTES + 400))
        await reader.inclusion_proof(1, size)  # computes the path's tail (above the fork), shared by leaf 0
        reader._tiles.clear()
        reader._tile_bytes = 0
        gate = asyncio.Event()

        class Gated:  # the database, answering tile reads only once the gate opens
            async def read_tiles(self, keys):
                await gate.wait()
                return await store.read_tiles(keys)

            def __getattr__(self, name):
                return getattr(store, name)

        reader.store = Gated()
        reader.remember_tiles({(0, 0): data[(0, 0)]})  # cached, not expanded yet
        proof = asyncio.create_task(reader.inclusion_proof(0, size))  # needs (0, 0) and (1, 0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert not proof.done()  # waiting for tile (1, 0)
        reader.remember_tiles({(0, i): data[(0, i)] for i in range(1, TILES)})
        assert (0, 0) not in reader._tiles  # evicted while the proof holds it
        gate.set()
        assert await asyncio.wait_for(proof, 30) == await plain.inclusion_proof(0, size)
        assert reader._tile_bytes == sum(t.cost for t in reader._tiles.values())
    finally:
        await store.pool.close()


async def test_concurrent_reads_of_one_entry_bundle_count_it_once(database_url):
    """Requests for the same full bundle that all miss the cache each read it and cache
    it; the bundle cache must count its bytes once, or it would shrink for good."""
    store = await open_test_log(database_url, KEY)
    await grow(store, KEY, SIZE)
    try:
        reader = TreeReader(store)
        await reader.covering(SIZE)
        gate = asyncio.Event()

        class Gated:  # the database, answering leaf reads only once the gate opens
            async def read_leaf_bytes(self, start, end):
                await gate.wait()
                return await store.read_leaf_bytes(start, end)

            def __getattr__(self, name):
                return getattr(store, name)

        reader.store = Gated()
        reads = [asyncio.create_task(reader.entry_bundle(EntriesTileID(1))) for _ in range(3)]
        for _ in range(10):
            await asyncio.sleep(0)
        gate.set()
        bundles = await asyncio.gather(*reads)
        assert bundles[0] == bundles[1] == bundles[2]
        assert len(decode_entry_bundle(bundles[0])) == 256
        assert list(reader._bundles) == [1]
        assert reader._bundle_bytes == len(bundles[0])
    finally:
        await store.pool.close()


def test_processes_opening_a_new_file_together_do_not_truncate_each_other(tmp_path):
    """Workers of `serve --workers N` open the file at the same moment; one that
    finds no header yet must not wipe slots another has already written."""
    path = tmp_path / "race.bin"
    levels = expand_tile(_tile(1))
    n = 8
    for _ in range(30):
        path.unlink(missing_ok=True)
        barrier = threading.Barrier(n)

        def opener(i: int) -> TileFile:
            barrier.wait()  # noqa: B023 (pool.map runs opener within this iteration)
            f = TileFile(path, b"log A")
            f.put(i, levels)
            return f

        with ThreadPoolExecutor(n) as pool:  # separate open files, as separate processes have
            files = list(pool.map(opener, range(n)))
        check = TileFile(path, b"log A")
        assert [i for i in range(n) if check.get(i) != levels] == []
        for f in (*files, check):
            f.close()


async def _flip_tile_bit(database_url: str, level: int, index: int, byte: int) -> None:
    """Flip one bit of a stored tile, past the append-only triggers (as a disk error would)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        status = await conn.execute(
            "UPDATE tiles SET hashes = set_byte(hashes, $3, get_byte(hashes, $3) # 1) WHERE level = $1 AND idx = $2",
            level, index, byte)
        assert status == "UPDATE 1", status
    finally:
        await conn.close()


async def test_a_slot_made_from_a_corrupted_tile_is_not_served_after_the_repair(database_url, tmp_path):
    """The slot's checksum is right (it holds what was written), but what was written
    came from a corrupted database tile: it must not outlive the repair."""
    store = await open_test_log(database_url, KEY)
    await grow(store, KEY, SIZE)  # (a no-op after the test above)
    tile_file = TileFile(tmp_path / "t.bin", b"x")
    leaf = 256 + 7  # in full level-0 tile 1
    try:
        latest = await TreeReader(store).refresh_latest()
        want = await TreeReader(store).inclusion_proof(leaf, latest.tree_size)
        await _flip_tile_bit(database_url, 0, 1, 5 * 32 + 3)
        try:
            # Warming meets the corrupted tile: it says so and stops (the server's task
            # logs it; the gauge stays 0) instead of caching it.
            metrics = Metrics()
            await _warm_tile_file(TreeReader(store, tile_file=tile_file), metrics)
            assert metrics.registry.get_sample_value("logserver_tile_file_warm") == 0
            assert tile_file.get(0) is not None and tile_file.get(1) is None
            # A proof expands the corrupted tile and caches it in the file.
            await TreeReader(store, max_tile_cache_bytes=1, tile_file=tile_file).inclusion_proof(leaf, latest.tree_size)
            stale = tile_file.get(1)
            assert stale is not None
            # fsck finds the corruption and drops the slot (checked against the leaves).
            report = await fsck(store, KEY.verifiers(), tile_file=tile_file)
            assert any(p.startswith("tile 0/1 hash 5") for p in report.problems), report.problems
            assert report.cache_slots_dropped == [1] and report.cache_slots_checked == 2
            assert tile_file.get(1) is None
            tile_file.put(1, stale)  # made again before the repair, by a proof
        finally:
            await _flip_tile_bit(database_url, 0, 1, 5 * 32 + 3)  # the repair
        # After the repair a fresh reader must not serve the stale slot: its root does
        # not match the level-1 tile, so it is a miss, dropped and rewritten.
        fresh = TreeReader(store, max_tile_cache_bytes=1, tile_file=tile_file)
        got = await fresh.inclusion_proof(leaf, latest.tree_size)
        assert got == want
        verify_inclusion(leaf, latest.tree_size, await fresh.leaf_hash_at(leaf, latest.tree_size), got, latest.root)
        assert tile_file.get(1) not in (None, stale)
        tile_file.put(1, stale)
        tile = TileID(0, 1, 256)
        assert await TreeReader(store, tile_file=tile_file).hash_tile(tile) == await TreeReader(store).hash_tile(tile)
        tile_file.put(1, stale)
        metrics = Metrics()
        await _warm_tile_file(TreeReader(store, tile_file=tile_file), metrics)  # rewrites it too
        assert metrics.registry.get_sample_value("logserver_tile_file_warm") == 1
        assert tile_file.get(1) not in (None, stale)
        assert (await fsck(store, KEY.verifiers(), tile_file=tile_file)).cache_slots_dropped == []
    finally:
        tile_file.close()
        await store.pool.close()
