"""The served tree, checked independently: proofs (RFC 6962) and tiles (C2SP tlog-tiles).

The log is grown to a series of sizes that straddle tile boundaries, the checkpoint
served at each size is recorded, and then every inclusion proof at every recorded
size, every consistency proof between recorded sizes and every tile each size
implies are fetched over HTTP and checked with tests/independent_merkle.py, which
shares no code with logserver.merkle.
"""
from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession

from bundle_factory import BundleFactory
from independent_merkle import (
    TILE_WIDTH,
    CheckError,
    check_consistency,
    check_inclusion,
    decode_entry_bundle,
    leaf_hash,
    mth,
    node_hash,
    root_from_tiles,
    split,
    split_hashes,
    subtree_root,
    tile_url_path,
    tiles_implied,
)
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import Ed25519NoteVerifier
from server_harness import start_server, write_config

JSON = {"Content-Type": "application/json"}
# Each bundle is submitted alone, so each batch adds it and its HEADS leaf
# (docs/fleet-heads.md): the sizes are even, and they straddle the tile boundary.
SIZES = (2, 4, 8, 10, 254, 256, 258, 300)
EMPTY_ROOT = hashlib.sha256(b"").digest()


@dataclass(frozen=True)
class Recorded:
    size: int
    root: bytes
    note: str


@dataclass
class Grown:
    server: object
    checkpoints: dict[int, Recorded]  # size -> the checkpoint served right after reaching it
    leaf_hashes: list[bytes]  # from /v1/entries, in index order


async def gather_limited(coros, limit: int = 32):
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


async def get_json(session, path: str, **params) -> dict:
    async with session.get(path, params=params or None) as resp:
        assert resp.status == 200, (path, params, await resp.text())
        return await resp.json()


async def served_checkpoint(session, verifier) -> Recorded:
    async with session.get("/checkpoint") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        note = await resp.text()
    cp, _ = open_checkpoint(note.encode(), [verifier])
    return Recorded(cp.size, cp.root, note)


@pytest.fixture(scope="module")
async def grown(database_url, tmp_path_factory) -> Grown:
    server = await start_server(write_config(tmp_path_factory.mktemp("tree"), database_url))
    s = server.session
    verifier = Ed25519NoteVerifier.from_vkey((await get_json(s, "/v1/log"))["verifier_key"])
    checkpoints = {0: await served_checkpoint(s, verifier)}
    # One fleet per bundle: concurrent submissions of one fleet could arrive out of
    # sequence order and be refused as rollbacks.
    bodies = [BundleFactory(fleet_id=f"tree-{i}").envelope_json() for i in range(SIZES[-1] // 2)]

    async def submit(body: bytes) -> dict:
        async with s.post("/v1/bundles", data=body, headers=JSON) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    size = 0
    for target in SIZES:
        while size < target:
            receipt = await submit(bodies[size // 2])
            assert (receipt["index"], receipt["tree_size"]) == (size, size + 2), receipt
            size += 2
        checkpoints[size] = await served_checkpoint(s, verifier)
        assert checkpoints[size].size == size
    entries: list[dict] = []
    while len(entries) < size:
        entries += (await get_json(s, "/v1/entries", start=len(entries), end=size))["entries"]
    yield Grown(server, checkpoints, [bytes.fromhex(e["leaf_hash"]) for e in entries])
    await server.close()


# --- the independent checker itself --------------------------------------------------------


def rfc_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 6962 §2.1.1 defines it."""
    if len(hashes) == 1:
        return []
    k = split(len(hashes))
    if m < k:
        return [*rfc_path(m, hashes[:k]), mth(hashes[k:])]
    return [*rfc_path(m - k, hashes[k:]), mth(hashes[:k])]


def rfc_subproof(m: int, hashes: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) exactly as RFC 6962 §2.1.2 defines it."""
    n = len(hashes)
    if m == n:
        return [] if b else [mth(hashes)]
    k = split(n)
    if m <= k:
        return [*rfc_subproof(m, hashes[:k], b), mth(hashes[k:])]
    return [*rfc_subproof(m - k, hashes[k:], False), mth(hashes[:k])]


def test_independent_checker_accepts_rfc_proofs_and_rejects_changed_ones():
    hashes = [leaf_hash(b"%d" % i) for i in range(20)]
    for n in range(1, 21):
        root = mth(hashes[:n])
        for m in range(n):
            path = rfc_path(m, hashes[:n])
            check_inclusion(m, n, hashes[m], path, root)
            with pytest.raises(CheckError):
                check_inclusion(m, n, hashes[(m + 1) % 20], path, root)
            if path:
                with pytest.raises(CheckError):
                    check_inclusion(m, n, hashes[m], path[:-1], root)
                with pytest.raises(CheckError):
                    check_inclusion(m, n, hashes[m], [bytes(32), *path[1:]], root)
            with pytest.raises(CheckError):
                check_inclusion(m, n, hashes[m], [*path, bytes(32)], root)
        for m in range(1, n):
            proof = rfc_subproof(m, hashes[:n], True)
            check_consistency(m, n, mth(hashes[:m]), root, proof)
            with pytest.raises(CheckError):
                check_consistency(m, n, mth(hashes[:m]), node_hash(root, root), proof)
            with pytest.raises(CheckError):
                check_consistency(m, n, hashes[0] if m > 1 else bytes(32), root, proof)
            with pytest.raises(CheckError):
                check_consistency(m, n, mth(hashes[:m]), root, [*proof, bytes(32)])
            if proof:
                with pytest.raises(CheckError):
                    check_consistency(m, n, mth(hashes[:m]), root, proof[1:])


def test_tile_helpers_follow_the_spec_examples():
    assert tile_url_path(0, 1234067, 256) == "tile/0/x001/x234/067"
    assert tile_url_path("entries", 0, 7) == "tile/entries/000.p/7"
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial
    # level 0 tile of width 112, one full level 1 tile, one partial level 1 tile of
    # width 17, and one partial level 2 tile of width 1."
    tiles = tiles_implied(70_000)
    assert [t for t in tiles if t[0] == 0] == [(0, i, 256) for i in range(273)] + [(0, 273, 112)]
    assert [t for t in tiles if t[0] > 0] == [(1, 0, 256), (1, 1, 17), (2, 0, 1)]
    assert tiles_implied(256) == [(0, 0, 256), (1, 0, 1)]


# --- proofs ------------------------------------------------------------------------------


def test_checkpoint_roots_are_the_merkle_tree_hashes_of_the_entries(grown):
    assert grown.checkpoints[0].root == EMPTY_ROOT
    for size, cp in grown.checkpoints.items():
        assert cp.root == mth(grown.leaf_hashes[:size]), size


async def test_every_inclusion_proof_at_every_recorded_size(grown):
    s = grown.server.session

    async def check(size: int, index: int) -> None:
        got = await get_json(s, "/v1/proof/inclusion", tree_size=size, index=index)
        assert (got["index"], got["tree_size"]) == (index, size)
        lh = bytes.fromhex(got["leaf_hash"])
        assert lh == grown.leaf_hashes[index]
        check_inclusion(index, size, lh, [bytes.fromhex(h) for h in got["proof"]], grown.checkpoints[size].root)

    jobs = [check(size, i) for size in grown.checkpoints for i in range(size)]
    assert len(jobs) == sum(SIZES)
    await gather_limited(jobs)


async def test_inclusion_by_leaf_hash(grown):
    s = grown.server.session

    async def check(size: int, index: int) -> None:
        lh = grown.leaf_hashes[index]
        got = await get_json(s, "/v1/proof/inclusion", tree_size=size, leaf_hash=lh.hex())
        assert (got["index"], got["tree_size"], got["leaf_hash"]) == (index, size, lh.hex())
        check_inclusion(index, size, lh, [bytes.fromhex(h) for h in got["proof"]], grown.checkpoints[size].root)

    final = SIZES[-1]
    await gather_limited([check(final, i) for i in range(final)] + [check(258, 256), check(10, 0), check(2, 0)])
    # A leaf that is in the log but not yet in the requested tree.
    async with s.get("/v1/proof/inclusion", params={"tree_size": 8, "leaf_hash": grown.leaf_hashes[8].hex()}) as resp:
        assert resp.status == 400


async def test_consistency_proofs_between_all_recorded_sizes(grown):
    s = grown.server.session
    cps = grown.checkpoints

    async def check(size1: int, size2: int) -> None:
        got = await get_json(s, "/v1/proof/consistency", first=size1, second=size2)
        assert (got["first"], got["second"]) == (size1, size2)
        check_consistency(size1, size2, cps[size1].root, cps[size2].root, [bytes.fromhex(h) for h in got["proof"]])

    pairs = [(a, b) for a in cps for b in cps if a <= b]
    await gather_limited(check(a, b) for a, b in pairs)
    # And the checker is not vacuous on these real proofs: another old root fails.
    got = await get_json(s, "/v1/proof/consistency", first=7, second=300)
    with pytest.raises(CheckError):
        check_consistency(7, 300, cps[8].root, cps[300].root, [bytes.fromhex(h) for h in got["proof"]])


# --- tiles -------------------------------------------------------------------------------


async def fetch(session, path: str, accept_encoding: str = "identity"):
    async with session.get("/" + path, headers={"Accept-Encoding": accept_encoding}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture(scope="module")
async def raw_session(grown):
    """A client that leaves Content-Encoding alone, to see what the server sent."""
    async with ClientSession(base_url=grown.server.url, auto_decompress=False) as session:
        yield session


async def fetch_tiles(session, size: int) -> dict[tuple[int, int], bytes]:
    tiles = {}
    for level, index, width in tiles_implied(size):
        status, headers, body = await fetch(session, tile_url_path(level, index, width))
        assert status == 200, (level, index, width, body[:200])
        assert headers["Content-Type"] == "application/octet-stream"
        assert len(body) == 32 * width, (level, index, width)
        if width == TILE_WIDTH:
            assert "immutable" in headers["Cache-Control"]
        else:
            assert "immutable" not in headers["Cache-Control"]
        tiles[(level, index)] = body
    return tiles


async def test_tiles_reproduce_every_recorded_checkpoint(grown, raw_session):
    """tlog-tiles: partial tiles are served for every size a checkpoint was produced at."""
    for size, cp in grown.checkpoints.items():
        tiles = await fetch_tiles(raw_session, size)
        assert root_from_tiles(size, tiles) == cp.root, size
        # Level 0 holds the leaf hashes; each higher-level hash is the root of a full
        # tile of the level below.
        level0 = [h for (level, i), data in sorted(tiles.items()) if level == 0 for h in split_hashes(data)]
        assert level0 == grown.leaf_hashes[:size]
        for (level, index), data in tiles.items():
            for pos, h in enumerate(split_hashes(data)):
                below = tiles[(level - 1, index * TILE_WIDTH + pos)] if level else None
                if below is not None:
                    assert h == subtree_root(split_hashes(below)), (level, index, pos)


async def test_entry_bundles_hash_to_the_level0_tiles(grown, raw_session):
    size = SIZES[-1]
    tiles = await fetch_tiles(raw_session, size)
    for level, index, width in tiles_implied(size):
        if level != 0:
            continue
        path = tile_url_path("entries", index, width)
        status, headers, plain = await fetch(raw_session, path)
        assert status == 200
        assert "Content-Encoding" not in headers
        assert headers["Content-Type"] == "application/octet-stream"
        assert ("immutable" in headers["Cache-Control"]) == (width == TILE_WIDTH)
        entries = decode_entry_bundle(plain)
        assert len(entries) == width
        assert [leaf_hash(e) for e in entries] == split_hashes(tiles[(0, index)])

        status, headers, compressed = await fetch(raw_session, path, "gzip, identity")
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(compressed) == plain


@pytest.mark.parametrize("path", [
    "tile/0/001",  # full level-0 tile 1 needs 512 leaves
    "tile/0/001.p/45",  # needs 301
    "tile/0/x001/000",  # index 1000
    "tile/1/000",  # needs 65536
    "tile/1/000.p/2",  # needs 512
    "tile/2/000.p/1",
    "tile/7/000.p/1",  # needs 2**56
    "tile/entries/001",
    "tile/entries/001.p/45",
])
async def test_tiles_beyond_the_tree_are_404(grown, path):
    status, headers, body = await fetch(grown.server.session, path)
    assert status == 404, body[:200]
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("path", [
    "tile/0/1",
    "tile/0/0000",
    "tile/00/000",
    "tile/64/000",
    "tile/-1/000",
    "tile/x/000",
    "tile/0/000.p/0",
    "tile/0/000.p/256",
    "tile/0/000.p/07",
    "tile/0/000.p/",
    "tile/0/000.p",
    "tile/0/001/000",  # all but the last element must start with x
    "tile/0/x000/001",  # not the canonical encoding of 1
    "tile/0/x001",  # the last element has no x
    "tile/63/000.p/1",  # a valid-looking path, but no uint64-sized tree has this tile
    "tile/entries/00a",
    "tile/entries",
    "tile/0",
])
async def test_malformed_tile_paths_are_400(grown, path):
    status, headers, body = await fetch(grown.server.session, path)
    assert status == 400, body[:200]
    assert headers["Content-Type"].startswith("application/json")


def memoized_rfc(leaves: list[bytes]):
    """RFC 6962 PATH and SUBPROOF over leaves[a:b], as the RFC reads, with MTH memoized
    by range so that every proof of a 300-leaf tree can be checked exactly."""
    @functools.cache
    def mth_of(a: int, b: int) -> bytes:
        if b - a == 1:
            return leaves[a]
        k = split(b - a)
        return node_hash(mth_of(a, a + k), mth_of(a + k, b))

    def path(m: int, a: int, b: int) -> list[bytes]:
        if b - a == 1:
            return []
        k = split(b - a)
        if m < k:
            return [*path(m, a, a + k), mth_of(a + k, b)]
        return [*path(m - k, a + k, b), mth_of(a, a + k)]

    def subproof(m: int, a: int, b: int, complete: bool) -> list[bytes]:
        if m == b - a:
            return [] if complete else [mth_of(a, b)]
        k = split(b - a)
        if m <= k:
            return [*subproof(m, a, a + k, complete), mth_of(a + k, b)]
        return [*subproof(m - k, a + k, b, False), mth_of(a, a + k)]

    return path, subproof


async def test_every_proof_of_every_size_equals_the_rfc_definition(grown, monkeypatch):
    """Every inclusion proof (with its leaf) and every consistency proof of every tree size
    up to 300, not only the recorded ones, byte for byte as RFC 6962 defines them. Each
    size's first proofs compute the path tails that later ones reuse (TreeReader._audit_path),
    and the tail cache is made tiny so that it is also cleared and refilled along the way."""
    import logserver.read.tree_reader as tree_reader
    from logserver.api.keys import STORE

    monkeypatch.setattr(tree_reader, "_MAX_TAILS", 5)
    reader = tree_reader.TreeReader(grown.server.app[STORE])
    leaves = grown.leaf_hashes
    path, subproof = memoized_rfc(leaves)
    inclusion = consistency = 0
    for size in range(1, len(leaves) + 1):
        for index in range(size):
            proof, leaf = await reader.inclusion_proof_and_leaf(index, size)
            assert (proof, leaf) == (path(index, 0, size), leaves[index]), (index, size)
            inclusion += 1
        for size1 in range(size + 1):
            want = [] if size1 in (0, size) else subproof(size1, 0, size, True)
            assert await reader.consistency_proof(size1, size) == want, (size1, size)
            consistency += 1
    assert len(reader._tails) <= 5
    assert (inclusion, consistency) == (300 * 301 // 2, 301 * 302 // 2 - 1)


async def test_proofs_from_a_reader_whose_caches_hold_almost_nothing(grown):
    """Byte-bounded caches evict (here: after every request) and refetch correctly."""
    from logserver.api.keys import STORE
    from logserver.merkle.tiles import EntriesTileID, TileID, decode_entry_bundle
    from logserver.read.tree_reader import TreeReader

    reader = TreeReader(grown.server.app[STORE], max_tile_cache_bytes=1, max_bundle_cache_bytes=1)
    cps = grown.checkpoints
    for size in cps:
        for index in range(0, size, 7):
            proof = await reader.inclusion_proof(index, size)
            check_inclusion(index, size, grown.leaf_hashes[index], proof, cps[size].root)
            assert await reader.leaf_hash_at(index, size) == grown.leaf_hashes[index]
            assert len(reader._tiles) == 1  # evicted down to the last tile touched
        for first in cps:
            if first <= size:
                check_consistency(first, size, cps[first].root, cps[size].root,
                                  await reader.consistency_proof(first, size))
    assert len(reader._tiles) == 1
    tile = await reader.hash_tile(TileID(0, 0))
    assert tile == b"".join(grown.leaf_hashes[:256])
    for _ in range(2):
        bundle = await reader.entry_bundle(EntriesTileID(0))
        assert [leaf_hash(e) for e in decode_entry_bundle(bundle, 256)] == grown.leaf_hashes[:256]
        assert len(reader._bundles) == 1


async def test_the_cached_tile_fast_path_answers_as_hash_tile_or_not_at_all(grown):
    """TreeReader.cached_hash_tile (the tile route's first try) gives hash_tile's bytes for
    every tile it holds, and None for one it does not hold or the latest checkpoint
    does not cover (the route then takes the slow path, which says why)."""
    from logserver.api.keys import STORE
    from logserver.merkle.tiles import TileID
    from logserver.read.tree_reader import TreeReader

    reader = TreeReader(grown.server.app[STORE])
    assert reader.cached_hash_tile(0, 0, 1) is None  # nothing cached, no checkpoint known yet
    answered = 0
    for size in grown.checkpoints:
        for level, index, width in tiles_implied(size):
            want = await reader.hash_tile(TileID(level, index, width))
            assert reader.cached_hash_tile(level, index, width) == want, (level, index, width)
            answered += 1
    latest = max(grown.checkpoints)
    assert reader.latest.tree_size == latest
    assert reader.cached_hash_tile(0, latest // 256, latest % 256 + 1) is None  # one hash beyond the tree
    assert reader.cached_hash_tile(0, 7, 256) is None  # a tile the tree does not have
    assert answered == sum(len(list(tiles_implied(s))) for s in grown.checkpoints)


async def test_request_latency_is_labelled_by_route_and_unrouted_requests_as_unmatched(grown):
    """The middleware's route label comes from the matched handler's resource."""
    s = grown.server.session
    for path in ("/tile/0/000.p/3", "/v1/proof/inclusion?tree_size=3&index=1", "/no/such/route"):
        async with s.get(path) as resp:
            await resp.read()
    async with s.post("/checkpoint") as resp:  # 405: the route exists, not for POST
        assert resp.status == 405
    async with s.get("/metrics") as resp:
        text = await resp.text()
    for route, method, status in (("/tile/{path}", "GET", 200), ("/v1/proof/inclusion", "GET", 200),
                                  ("unmatched", "GET", 404), ("unmatched", "POST", 405)):
        line = f'logserver_http_request_seconds_count{{method="{method}",route="{route}",status="{status}"}}'
        assert any(ln.startswith(line + " ") and float(ln.split()[-1]) >= 1 for ln in text.splitlines()), line
