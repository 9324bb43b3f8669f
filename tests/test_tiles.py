"""C2SP tlog-tiles: paths, tile sets, tiles built while appending, proofs from tiles, entry bundles."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import pytest

from logserver.merkle import (
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    EntriesTileID,
    InvalidParameterError,
    TileDataError,
    TileID,
    TilePathError,
    append_to_tiles,
    consistency_proof,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_tiles_for_size,
    expand_tile,
    frontier_ids,
    hashes_from_tiles,
    inclusion_proof,
    leaf_hash,
    parse_tile_path,
    read_hashes_from,
    root_from_tiles,
    tile_for_node,
    tile_path,
    tiles_for_nodes,
    tiles_for_size,
    verify_consistency,
    verify_inclusion,
)
from merkle_reference import complete_nodes, leaf_data, mth, path, proof

# --- paths ----------------------------------------------------------------------------------


def test_path_examples() -> None:
    # tlog-tiles: "index 1234067 will be encoded as x001/x234/067".
    assert tile_path(TileID(0, 1234067)) == "tile/0/x001/x234/067"
    assert tile_path(TileID(2, 0, 1)) == "tile/2/000.p/1"
    assert tile_path(TileID(1, 1000, 17)) == "tile/1/x001/000.p/17"
    assert tile_path(EntriesTileID(999)) == "tile/entries/999"
    assert tile_path(EntriesTileID(5, 255)) == "tile/entries/005.p/255"
    assert parse_tile_path("tile/0/x001/x234/067") == TileID(0, 1234067, 256)
    assert parse_tile_path("tile/entries/x001/x234/067.p/3") == EntriesTileID(1234067, 3)
    with pytest.raises(InvalidParameterError):
        tile_path("tile/0/000")  # type: ignore[arg-type]


def test_path_round_trip() -> None:
    rng = random.Random(7)
    indexes = {0, 1, 9, 10, 99, 100, 255, 256, 999, 1000, 1001, 999_999, 1_000_000, 1234067, 2**56 - 1}
    indexes |= {rng.randrange(10 ** rng.randint(1, 16)) for _ in range(300)}
    for index in sorted(indexes):
        for width in (1, 2, 100, 255, 256):
            if (index * 256 + width) <= 2**64 - 1:
                bundle = EntriesTileID(index, width)
                assert parse_tile_path(tile_path(bundle)) == bundle
            for level in (0, 1, 2):
                if (index * 256 + width) << (8 * level) > 2**64 - 1:
                    continue
                tile = TileID(level, index, width)
                p = tile_path(tile)
                assert parse_tile_path(p) == tile
                assert p.startswith(f"tile/{level}/")
                assert (width == 256) == (".p/" not in p)
    # The largest tiles that still fit a uint64 tree size.
    for tile in (TileID(7, 0, 255), TileID(6, 255, 255), TileID(0, 2**56 - 2)):
        assert parse_tile_path(tile_path(tile)) == tile


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "tile",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tile/0/000/",
        "tiles/0/000",
        "Tile/0/000",
        "tile/00/000",
        "tile/01/000",
        "tile/-1/000",
        "tile/+1/000",
        "tile/64/000",
        "tile/100/000",
        "tile/a/000",
        "tile/0/0",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1",
        "tile/0/x000",
        "tile/0/x001",
        "tile/0/001/002",
        "tile/0/x000/001",
        "tile/0/x001/x002",
        "tile/0/X001/002",
        "tile/0/xx01/002",
        "tile/0/x1/002",
        "tile/0/000.p",
        "tile/0/000.p/",
        "tile/0/000.p/0",
        "tile/0/000.p/00",
        "tile/0/000.p/01",
        "tile/0/000.p/256",
        "tile/0/000.p/1000",
        "tile/0/000.p/-1",
        "tile/0/000.p/1/2",
        "tile/0/000.p/1/",
        "tile/0/000/.p/1",
        "tile/0/000.P/1",
        "tile/0/000.q/1",
        "tile/0/x001.p/1/002",
        "tile/0/x001/002.p/1.p/2",
        "tile/0/001 ",
        " tile/0/001",
        "tile/0/001\n",
        "tile/0//001",
        "tile/0/٠٠١",  # noqa: RUF001 (non-ASCII digits: Arabic-Indic, refused)
        "tile/0/001.p/１",  # noqa: RUF001 (a fullwidth digit, refused)
        "tile/entries",
        "tile/entries/",
        "tile/entries/1",
        "tile/entries/000.p/256",
        "tile/entries/x000/000",
        "tile/8/001",  # starts beyond 2**64 leaves
        "tile/7/000",  # a full level-7 tile would cover 2**64 leaves
        "tile/63/000.p/1",
        "tile/0/x072/x057/x594/x037/x927/936",  # index 2**56: beyond 2**64 leaves
        "tile/0/x001/x000/x000/x000/x000/x000/x000/000",  # too many elements
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(bad)


@pytest.mark.parametrize(
    "bad, says",
    [
        ("tile/64/x000/001", "level: got '64'"),
        ("tile/0/x000/001.p/256", "width: got '256'"),
        ("tile/0/x000/001", "leading x000"),
        ("tile/0/x001/x002/x003/x004/x005/x006/x007/008", "path elements, want <= 7"),
        ("tile/1/01", "3-digit elements"),
    ],
)
def test_parse_says_what_is_wrong(bad: str, says: str) -> None:
    with pytest.raises(TilePathError, match=re.escape(says)):
        parse_tile_path(bad)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(b"tile/0/000")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args", [(-1, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257), (8, 0, 1), (0, 2**56, 1), (True, 0, 1)]
)
def test_tile_id_validates(args: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidParameterError):
        TileID(*args)


def test_entries_tile_id_validates() -> None:
    with pytest.raises(InvalidParameterError):
        EntriesTileID(0, 0)
    with pytest.raises(InvalidParameterError):
        EntriesTileID(-1)
    assert EntriesTileID(3).is_full and not EntriesTileID(3, 5).is_full
    assert TileID(0, 3).is_full and not TileID(0, 3, 5).is_full


# --- which tiles exist ---------------------------------------------------------------------------


def test_tiles_for_size_edges() -> None:
    T = TileID
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [T(0, 0, 1)]
    assert tiles_for_size(255) == [T(0, 0, 255)]
    # tlog-tiles: "a tree of size 256 will be represented by a full level 0 tile and a
    # partial level 1 tile of width 1".
    assert tiles_for_size(256) == [T(0, 0), T(1, 0, 1)]
    assert tiles_for_size(257) == [T(0, 0), T(0, 1, 1), T(1, 0, 1)]
    assert tiles_for_size(512) == [T(0, 0), T(0, 1), T(1, 0, 2)]
    assert tiles_for_size(65535) == [*(T(0, i) for i in range(255)), T(0, 255, 255), T(1, 0, 255)]
    assert tiles_for_size(65536) == [*(T(0, i) for i in range(256)), T(1, 0), T(2, 0, 1)]
    assert tiles_for_size(65537) == [*(T(0, i) for i in range(256)), T(0, 256, 1), T(1, 0), T(2, 0, 1)]
    # The spec's example: 70,000 -> 273 full level-0 tiles, a level-0 partial of width
    # 112, one full level-1 tile, a level-1 partial of width 17, a level-2 partial of width 1.
    tiles = tiles_for_size(70000)
    assert tiles == [*(T(0, i) for i in range(273)), T(0, 273, 112), T(1, 0), T(1, 1, 17), T(2, 0, 1)]
    with pytest.raises(InvalidParameterError):
        tiles_for_size(-1)


def test_tiles_for_size_matches_node_counts() -> None:
    for size in [*range(0, 600), 65535, 65536, 65537, 16777215, 16777216]:
        tiles = tiles_for_size(size)
        for level in range(4):
            at_level = [t for t in tiles if t.level == level]
            # Tile level L holds every complete node of tree level 8L, in order.
            assert [t.index for t in at_level] == list(range(len(at_level)))
            assert sum(t.width for t in at_level) == size >> (8 * level)
            assert all(t.is_full for t in at_level[:-1])


def test_entries_tiles_for_size() -> None:
    assert entries_tiles_for_size(0) == []
    assert entries_tiles_for_size(256) == [EntriesTileID(0)]
    assert entries_tiles_for_size(513) == [EntriesTileID(0), EntriesTileID(1), EntriesTileID(2, 1)]
    with pytest.raises(InvalidParameterError):
        entries_tiles_for_size(-1)


def test_tile_for_node() -> None:
    assert tile_for_node(0, 0, 1) == TileID(0, 0, 1)
    assert tile_for_node(0, 300, 1000) == TileID(0, 1, 256)
    assert tile_for_node(0, 900, 1000) == TileID(0, 3, 232)
    assert tile_for_node(3, 10, 1000) == TileID(0, 0, 256)  # leaves 80..87
    assert tile_for_node(7, 3, 1000) == TileID(0, 1, 256)  # leaves 384..511
    assert tile_for_node(7, 6, 1000) == TileID(0, 3, 232)  # leaves 768..895
    assert tile_for_node(8, 2, 1000) == TileID(1, 0, 3)
    assert tile_for_node(9, 0, 1000) == TileID(1, 0, 3)
    assert tile_for_node(16, 0, 65536) == TileID(2, 0, 1)
    assert tile_for_node(63, 0, 2**64 - 1) == TileID(7, 0, 255)
    for bad in [(0, 1000, 1000), (3, 125, 1000), (-1, 0, 10), (0, -1, 10), (10, 0, 1000)]:
        with pytest.raises(InvalidParameterError):
            tile_for_node(*bad)


def test_tiles_for_nodes_deduplicates() -> None:
    assert tiles_for_nodes([(0, 1), (0, 2), (1, 3), (8, 0), (0, 300)], 1000) == [
        TileID(0, 0),
        TileID(1, 0, 3),
        TileID(0, 1),
    ]
    assert tiles_for_nodes([], 5) == []


# --- tiles built while appending ------------------------------------------------------------


BIG = 100_000
CHECK_SIZES = sorted(
    {1, 2, 255, 256, 257, 511, 512, 65535, 65536, 65537, 70000, BIG - 1, BIG}
    | set(random.Random(3).sample(range(1, BIG + 1), 6))
)


class Log:
    """A tree of BIG leaves appended in random batches, with its tiles as storage keeps them
    (keyed by (level, index), growing in place) and every complete node for cross-checks."""

    def __init__(self) -> None:
        rng = random.Random(11)
        self.leaves = [leaf_hash(b"entry %d" % i) for i in range(BIG)]
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.store: dict[tuple[int, int], bytes] = {}
        self.partial_snapshots: dict[int, dict[tuple[int, int], bytes]] = {}
        cr = CompactRange()
        while cr.size < BIG:
            end = min(BIG, cr.size + rng.choice([1, 2, 3, 17, 255, 256, 1000, 4000]))
            new: list[tuple[int, int, bytes]] = []
            cr.extend(self.leaves[cr.size : end], lambda lvl, idx, h: new.append((lvl, idx, h)))  # noqa: B023 (extend calls it, now)
            for lvl, idx, h in new:
                self.nodes[(lvl, idx)] = h
            touched = {(lvl // 8, idx >> 8) for lvl, idx, _ in new if lvl % 8 == 0}
            updated = append_to_tiles({k: self.store[k] for k in touched if k in self.store}, new)
            assert set(updated) == touched
            self.store.update(updated)
            if len(self.partial_snapshots) < 5 and end % 256:
                self.partial_snapshots[end] = dict(self.store)
        self.root = cr.root()

    def read_nodes(self, ids: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.nodes[i] for i in ids]

    def root_at(self, size: int) -> bytes:
        return CompactRange(size, self.read_nodes(frontier_ids(size))).root()

    def tiles_at(self, size: int, exact: bool = False) -> dict[TileID, bytes]:
        """The tiles of tree `size` from the store; data longer than the width unless exact."""
        out = {}
        for t in tiles_for_size(size):
            data = self.store[(t.level, t.index)]
            out[t] = data[: t.width * 32] if exact else data
        return out


@pytest.fixture(scope="module")
def log() -> Log:
    return Log()


def test_store_holds_exactly_the_tiles_of_the_final_tree(log: Log) -> None:
    assert {(t.level, t.index): t.width * 32 for t in tiles_for_size(BIG)} == {k: len(v) for k, v in log.store.items()}
    for (level, index), data in log.store.items():
        for i in range(len(data) // 32):
            assert data[32 * i : 32 * i + 32] == log.nodes[(8 * level, 256 * index + i)]


def test_expand_tile_holds_every_complete_node_of_the_tile(log: Log) -> None:
    for (level, index), data in log.store.items():
        for width in {len(data) // 32, 1, 2, 3, 128, 255} & set(range(1, len(data) // 32 + 1)):
            levels = expand_tile(data[: 32 * width])
            assert [len(row) // 32 for row in levels] == [width >> k for k in range(len(levels))]
            assert width >> len(levels) == 0
            for k, row in enumerate(levels):
                for p in range(len(row) // 32):
                    node = (8 * level + k, ((256 * index) >> k) + p)
                    assert row[32 * p : 32 * p + 32] == log.nodes[node], (level, index, width, node)


def test_expand_tile_rejects_bad_data() -> None:
    assert expand_tile(b"") == [b""]
    for bad in (b"x" * 31, b"x" * 33, b"x" * (32 * 257)):
        with pytest.raises(TileDataError):
            expand_tile(bad)
    with pytest.raises(TileDataError):
        expand_tile(bytearray(32))  # type: ignore[arg-type]


def test_partial_snapshots_are_prefixes(log: Log) -> None:
    assert log.partial_snapshots
    for size, snapshot in log.partial_snapshots.items():
        assert {(t.level, t.index) for t in tiles_for_size(size)} == set(snapshot)
        for t in tiles_for_size(size):
            assert snapshot[(t.level, t.index)] == log.store[(t.level, t.index)][: t.width * 32]


def test_small_tree_tiles_match_reference() -> None:
    data = [leaf_data(i) for i in range(600)]
    store: dict[tuple[int, int], bytes] = {}
    cr = CompactRange()
    for i, d in enumerate(data):
        new: list[tuple[int, int, bytes]] = []
        cr.append(leaf_hash(d), lambda *node: new.append(node))  # noqa: B023 (append calls it, within this iteration)
        store.update(append_to_tiles(store, new))
        size = i + 1
        if size in (1, 2, 3, 255, 256, 257, 300, 511, 512, 513, 600):
            tiles = {t: store[(t.level, t.index)] for t in tiles_for_size(size)}
            assert root_from_tiles(size, tiles) == mth(data[:size])
            reader = read_hashes_from(size, tiles)
            for index in {0, size // 3, size - 1}:
                assert inclusion_proof(index, size, reader) == path(index, data[:size])
            for size1 in {1, size // 2, size - 1}:
                assert consistency_proof(size1, size, reader) == proof(size1, data[:size])
    nodes = complete_nodes(data)
    assert store[(0, 0)] == b"".join(nodes[(0, i)] for i in range(256))
    assert store[(1, 0)] == b"".join(nodes[(8, i)] for i in range(2))


def test_root_and_proofs_from_tiles(log: Log) -> None:
    rng = random.Random(5)
    assert root_from_tiles(BIG, log.tiles_at(BIG)) == log.root
    for size in CHECK_SIZES:
        want_root = log.root_at(size)
        for exact in (False, True):
            tiles = log.tiles_at(size, exact)
            assert root_from_tiles(size, tiles) == want_root
        reader = read_hashes_from(size, log.tiles_at(size))
        for index in {0, size - 1, size // 2, *(rng.randrange(size) for _ in range(8))}:
            got = inclusion_proof(index, size, reader)
            assert got == inclusion_proof(index, size, log.read_nodes)
            verify_inclusion(index, size, log.leaves[index], got, want_root)
        for size1 in {0, 1, size, size // 2, size - 1, *(rng.randint(1, size) for _ in range(8))}:
            got = consistency_proof(size1, size, reader)
            assert got == consistency_proof(size1, size, log.read_nodes)
            verify_consistency(size1, size, log.root_at(size1), want_root, got)


def test_hashes_from_only_the_needed_tiles(log: Log) -> None:
    size = 70000
    ids = [(0, 69999), (3, 8000), (7, 100), (8, 200), (9, 135), (15, 1), (16, 0), (1, 34999)]
    needed = tiles_for_nodes(ids, size)
    tiles = {t: log.store[(t.level, t.index)][: t.width * 32] for t in needed}
    assert hashes_from_tiles(ids, size, tiles) == log.read_nodes(ids)
    # A partial tile may be served by the full tile of the same coordinates.
    by_full_key: dict[TileID, bytes] = {}
    for t in needed:
        data = log.store[(t.level, t.index)]
        by_full_key[TileID(t.level, t.index) if len(data) == 8192 else t] = data
    assert any(not t.is_full and t not in by_full_key for t in needed)
    assert hashes_from_tiles(ids, size, by_full_key) == log.read_nodes(ids)


def test_full_tile_fallback() -> None:
    hashes = [leaf_hash(b"%d" % i) for i in range(256)]
    cr = CompactRange()
    cr.extend(hashes[:100])
    full = {TileID(0, 0): b"".join(hashes)}
    assert root_from_tiles(100, full) == cr.root()


def test_bad_tile_data() -> None:
    h = leaf_hash(b"x")
    with pytest.raises(InvalidParameterError, match=r"missing tile tile/0/000\.p/3"):
        root_from_tiles(3, {})
    with pytest.raises(TileDataError, match="got 64 bytes"):
        root_from_tiles(3, {TileID(0, 0, 3): h * 2})
    with pytest.raises(TileDataError, match="got 97 bytes"):
        root_from_tiles(3, {TileID(0, 0, 3): h * 3 + b"x"})
    with pytest.raises(TileDataError, match="got 8224 bytes"):
        root_from_tiles(3, {TileID(0, 0, 3): h * 257})
    with pytest.raises(TileDataError, match="want bytes"):
        root_from_tiles(3, {TileID(0, 0, 3): bytearray(h * 3)})  # type: ignore[dict-item]
    with pytest.raises(InvalidParameterError, match="not complete"):
        hashes_from_tiles([(2, 0)], 3, {TileID(0, 0, 3): h * 3})


def test_append_to_tiles_precondition() -> None:
    h = leaf_hash(b"x")
    assert append_to_tiles({}, [(1, 0, h), (2, 0, h)]) == {}
    assert append_to_tiles({}, [(0, 0, h), (0, 1, h), (8, 0, h)]) == {(0, 0): h * 2, (1, 0): h}
    assert append_to_tiles({(0, 1): h}, [(0, 257, h)]) == {(0, 1): h * 2}
    with pytest.raises(RuntimeError, match="lands at byte 32"):
        append_to_tiles({}, [(0, 1, h)])
    with pytest.raises(RuntimeError, match="lands at byte 0"):
        append_to_tiles({(0, 0): h}, [(0, 0, h)])
    with pytest.raises(RuntimeError):
        append_to_tiles({}, [(0, 0, h), (0, 2, h)])
    with pytest.raises(RuntimeError, match="want 32 bytes"):
        append_to_tiles({}, [(0, 0, h[:31])])


def test_tile_constants() -> None:
    assert TILE_HEIGHT == 8 and TILE_WIDTH == 256


# --- entry bundles ---------------------------------------------------------------------------


def test_entry_bundle_round_trip() -> None:
    rng = random.Random(9)
    cases = [
        [b"a"],
        [b""],  # the spec's uint16 length prefix allows empty entries
        [b"", b"x", b""],
        [b"\x00" * 65535],
        [rng.randbytes(rng.randint(0, 300)) for _ in range(256)],
        [b"%d" % i for i in range(100)],
    ]
    for entries in cases:
        data = encode_entry_bundle(entries)
        assert len(data) == sum(2 + len(e) for e in entries)
        assert decode_entry_bundle(data) == entries
        assert decode_entry_bundle(data, len(entries)) == entries
    assert encode_entry_bundle([b"ab", b"c"]) == b"\x00\x02ab\x00\x01c"


@pytest.mark.parametrize(
    ("data", "width"),
    [
        (b"", None),
        (b"", 1),
        (b"\x00", None),  # truncated length
        (b"\x00\x02a", None),  # truncated entry
        (b"\x00\x01a\x00", None),  # trailing byte
        (b"\x00\x01a\x00\x01b", 1),  # more entries than the width
        (b"\x00\x01a", 2),  # fewer entries than the width
        (b"\x00\x00" * 257, None),  # more than 256 entries
        (b"\xff\xff" + b"x" * 65534, None),
    ],
)
def test_entry_bundle_rejects(data: bytes, width: int | None) -> None:
    with pytest.raises(TileDataError):
        decode_entry_bundle(data, width)


def test_entry_bundle_argument_errors() -> None:
    with pytest.raises(InvalidParameterError):
        encode_entry_bundle([])
    with pytest.raises(InvalidParameterError):
        encode_entry_bundle([b"x"] * 257)
    with pytest.raises(InvalidParameterError):
        encode_entry_bundle([b"x" * 65536])
    with pytest.raises(InvalidParameterError):
        encode_entry_bundle(["x"])  # type: ignore[list-item]
    for width in (0, 257, -1, True):
        with pytest.raises(InvalidParameterError):
            decode_entry_bundle(b"\x00\x01a", width)  # type: ignore[arg-type]
    with pytest.raises(TileDataError):
        decode_entry_bundle(bytearray(b"\x00\x01a"))  # type: ignore[arg-type]
