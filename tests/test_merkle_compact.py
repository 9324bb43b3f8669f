"""Hashing constants, CompactRange and frontier_ids against the naive RFC 6962 reference."""

from __future__ import annotations

import hashlib
import random

import pytest

from logserver.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    InvalidParameterError,
    frontier_ids,
    leaf_hash,
    node_hash,
)
from merkle_reference import complete_nodes, leaf_data, mth

N = 300
DATA = [leaf_data(i) for i in range(N)]
LEAVES = [leaf_hash(d) for d in DATA]


def test_hashing_constants() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()


def test_roots_append_one_by_one() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT == mth([])
    for n in range(1, N + 1):
        cr.append(LEAVES[n - 1])
        assert cr.size == n
        assert cr.root() == mth(DATA[:n]), n


def test_roots_extend_batches() -> None:
    rng = random.Random(1)
    for _ in range(20):
        cr = CompactRange()
        while cr.size < N:
            batch = rng.randint(0, 40)
            end = min(N, cr.size + batch)
            cr.extend(LEAVES[cr.size : end])
            assert cr.root() == mth(DATA[:end])
        # extend also accepts any iterable.
        cr2 = CompactRange()
        cr2.extend(iter(LEAVES))
        assert cr2 == cr


def test_visit_sees_every_completed_node_once_bottom_up() -> None:
    want = complete_nodes(DATA)
    cr = CompactRange()
    seen: dict[tuple[int, int], bytes] = {}
    for n in range(1, N + 1):
        visited: list[tuple[int, int, bytes]] = []
        cr.append(LEAVES[n - 1], lambda lvl, idx, h: visited.append((lvl, idx, h)))  # noqa: B023 (append calls it, now)
        # Exactly the nodes that end at leaf n, bottom-up from the leaf itself.
        ends_here = [(lvl, idx) for (lvl, idx) in want if (idx + 1) << lvl == n]
        assert [(lvl, idx) for lvl, idx, _ in visited] == sorted(ends_here)
        assert visited[0] == (0, n - 1, LEAVES[n - 1])
        for lvl, idx, h in visited:
            assert (lvl, idx) not in seen
            seen[(lvl, idx)] = h
    assert seen == want

    # extend() reports the same nodes in the same order.
    batched: list[tuple[int, int, bytes]] = []
    cr2 = CompactRange()
    cr2.extend(LEAVES[:123], lambda *node: batched.append(node))
    cr2.extend(LEAVES[123:], lambda *node: batched.append(node))
    assert {(lvl, idx): h for lvl, idx, h in batched} == want
    assert len(batched) == len(want)


def test_frontier_ids() -> None:
    assert frontier_ids(0) == []
    assert frontier_ids(1) == [(0, 0)]
    assert frontier_ids(6) == [(2, 0), (1, 2)]
    assert frontier_ids(7) == [(2, 0), (1, 2), (0, 6)]
    assert frontier_ids(8) == [(3, 0)]
    assert frontier_ids(2**64 - 1)[0] == (63, 0)
    assert frontier_ids(2**64 - 1)[-1] == (0, 2**64 - 2)
    for size in range(0, N + 1):
        ids = frontier_ids(size)
        # Contiguous cover of [0, size), largest first.
        pos = 0
        for lvl, idx in ids:
            assert idx << lvl == pos
            pos += 1 << lvl
        assert pos == size
        assert [lvl for lvl, _ in ids] == sorted((lvl for lvl, _ in ids), reverse=True)
        nodes = complete_nodes(DATA[:size]) if size <= 40 else None
        if nodes is not None:
            assert CompactRange(size, [nodes[i] for i in ids]).root() == mth(DATA[:size])
    with pytest.raises(InvalidParameterError):
        frontier_ids(-1)
    with pytest.raises(InvalidParameterError):
        frontier_ids(2**64)


def test_constructor_and_hashes() -> None:
    cr = CompactRange()
    cr.extend(LEAVES[:7])
    nodes = complete_nodes(DATA[:7])
    assert cr.hashes == tuple(nodes[i] for i in frontier_ids(7))
    assert CompactRange(7, cr.hashes) == cr
    assert cr != CompactRange(6, cr.hashes[:2])
    assert cr != "not a range"
    assert "size=7" in repr(cr)
    clone = cr.copy()
    clone.append(LEAVES[7])
    assert cr.size == 7 and clone.size == 8
    with pytest.raises(InvalidParameterError, match="got 2 hashes, want 3"):
        CompactRange(7, cr.hashes[:2])
    with pytest.raises(InvalidParameterError, match="want 32 bytes"):
        CompactRange(1, [b"short"])
    with pytest.raises(InvalidParameterError):
        CompactRange(1, [bytearray(32)])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError):
        CompactRange(-1)
    with pytest.raises(InvalidParameterError):
        CompactRange(True)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        CompactRange(2**64, [])


def test_bad_leaf_keeps_earlier_leaves() -> None:
    cr = CompactRange()
    with pytest.raises(InvalidParameterError, match="leaf hash 3"):
        cr.extend([*LEAVES[:3], b"x" * 31, LEAVES[4]])
    assert cr.size == 3 and cr.root() == mth(DATA[:3])
    with pytest.raises(InvalidParameterError):
        cr.append("x" * 32)  # type: ignore[arg-type]


def test_raising_visitor_leaves_consistent_range() -> None:
    cr = CompactRange()
    cr.extend(LEAVES[:3])

    def boom(level: int, index: int, h: bytes) -> None:
        if level == 2:
            raise KeyError("storage down")

    with pytest.raises(KeyError):
        cr.append(LEAVES[3], boom)
    assert cr.size == 3 and cr.root() == mth(DATA[:3])
    cr.append(LEAVES[3])
    assert cr.root() == mth(DATA[:4])


def test_full_tree_rejects_append() -> None:
    size = 2**64 - 1
    cr = CompactRange(size, [bytes([i]) * 32 for i in range(64)])
    with pytest.raises(InvalidParameterError, match="tree is full"):
        cr.append(LEAVES[0])
    assert cr.size == size


def test_bytes_round_trip() -> None:
    cr = CompactRange()
    assert cr.to_bytes() == bytes(8)
    assert CompactRange.from_bytes(bytes(8)) == cr
    for n in range(1, 70):
        cr.append(LEAVES[n - 1])
        b = cr.to_bytes()
        assert len(b) == 8 + 32 * n.bit_count()
        assert b[:8] == n.to_bytes(8, "big")
        back = CompactRange.from_bytes(b)
        assert back == cr and back.root() == cr.root()


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        bytes(7),
        bytes(8) + bytes(32),  # size 0 with a hash
        (1).to_bytes(8, "big"),  # size 1 without its hash
        (1).to_bytes(8, "big") + bytes(31),
        (1).to_bytes(8, "big") + bytes(33),
        (3).to_bytes(8, "big") + bytes(32),
        (3).to_bytes(8, "big") + bytes(96),
        bytes(9),
    ],
)
def test_from_bytes_rejects_malformed(blob: bytes) -> None:
    with pytest.raises(InvalidParameterError, match="got"):
        CompactRange.from_bytes(blob)


def test_from_bytes_rejects_non_bytes() -> None:
    with pytest.raises(InvalidParameterError):
        CompactRange.from_bytes(bytearray(8))  # type: ignore[arg-type]
