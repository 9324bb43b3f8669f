"""merkle.geometry (C2SP tlog-tiles coordinates) against a brute-force reference.

The reference below is written from the spec's definitions, in leaf ranges and
multiplications, never in the shifts and masks the module uses: a node (l, i)
covers leaves [i * 2**l, (i + 1) * 2**l) and is complete in a tree of size s when
that range lies in [0, s); tile (L, N) holds the nodes (8L, 256N + j), j = 0..255,
and its expansion the nodes of tree levels 8L..8L+8 whose leaves lie in the tile's.
Where the data matters (positions in an expansion, sibling slices), the check is
against real hashes: a tree built leaf by leaf, its tiles assembled node by node as
the spec says, the proofs from the RFC 6962 reference.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.merkle import CompactRange, expand_tile, leaf_hash, tiles_for_nodes, tiles_for_size
from logserver.merkle.geometry import (
    FULL_TILE_BYTES,
    SIBLING_SLICES,
    TILE_HEIGHT,
    TILE_WIDTH,
    expansion_spans,
    node_in_tile,
    node_span,
    plan_tile_reads,
    sibling_slice,
    tile_min_size,
    tile_node,
    tile_width,
)
from merkle_reference import leaf_data, path

U64 = 2**64 - 1
SETTINGS = settings(max_examples=300, deadline=None)


# --- the reference ------------------------------------------------------------------------------


def leaves_of(level: int, index: int) -> range:
    return range(index * 2**level, (index + 1) * 2**level)


def complete(level: int, index: int, size: int) -> bool:
    return leaves_of(level, index).stop <= size


def ref_tile_width(tile_level: int, tile_index: int, size: int) -> int:
    return sum(complete(8 * tile_level, 256 * tile_index + j, size) for j in range(256))


def tile_leaves(tile_level: int, tile_index: int) -> range:
    span = 256 * 256**tile_level
    return range(tile_index * span, (tile_index + 1) * span)


def ref_node_in_tile(level: int, index: int) -> tuple[int, int, int, int]:
    """The tile whose expansion holds the node below its top level (8L <= level < 8L + 8),
    found by leaf ranges; the node's position counts the nodes of its level from the
    tile's left edge."""
    tile_level = 0
    while not 8 * tile_level <= level < 8 * tile_level + 8:
        tile_level += 1
    leaves = leaves_of(level, index)
    tile_index = leaves.start // len(tile_leaves(tile_level, 0))
    tile = tile_leaves(tile_level, tile_index)
    assert tile.start <= leaves.start and leaves.stop <= tile.stop
    return tile_level, tile_index, level - 8 * tile_level, (leaves.start - tile.start) // len(leaves)


def ref_node_span(k: int, pos: int) -> tuple[int, int]:
    """The tile hashes (level-k-below nodes, 2**k leaves of the tile's level each) whose
    ranges lie inside the node's, as [first, end)."""
    inside = [j for j in range(256) if pos * 2**k <= j and j + 1 <= (pos + 1) * 2**k]
    return inside[0], inside[-1] + 1


# --- widths and sizes -----------------------------------------------------------------------------

small_levels = st.integers(min_value=0, max_value=2)
levels = st.integers(min_value=0, max_value=7)
widths = st.integers(min_value=1, max_value=TILE_WIDTH)


@st.composite
def tile_and_size(draw: st.DrawFn) -> tuple[int, int, int]:
    """A tile of level 0..2 and a tree size around it (before, inside, past it)."""
    level = draw(small_levels)
    index = draw(st.integers(min_value=0, max_value=20))
    span = len(tile_leaves(level, 0))
    size = draw(st.integers(min_value=max(0, (index - 1) * span), max_value=(index + 2) * span))
    return level, index, size


@SETTINGS
@given(tile_and_size())
def test_tile_width_counts_the_complete_nodes_of_the_tile(case: tuple[int, int, int]) -> None:
    level, index, size = case
    assert tile_width(level, index, size) == ref_tile_width(level, index, size)


@SETTINGS
@given(st.integers(min_value=0, max_value=2), st.integers(min_value=0, max_value=20), widths)
def test_tile_min_size_is_the_first_size_with_that_width(level: int, index: int, width: int) -> None:
    size = tile_min_size(level, index, width)
    assert ref_tile_width(level, index, size) >= width
    assert ref_tile_width(level, index, size - 1) < width


@SETTINGS
@given(levels, st.integers(min_value=0, max_value=U64 >> 8), widths, st.integers(min_value=0, max_value=U64))
def test_tile_width_and_tile_min_size_are_inverse_at_any_size(level: int, index: int, width: int, size: int) -> None:
    got = tile_width(level, index, size)
    assert 0 <= got <= TILE_WIDTH
    assert (got >= width) == (size >= tile_min_size(level, index, width))


def test_tile_width_agrees_with_tiles_for_size() -> None:
    for size in [*range(0, 600, 7), 65535, 65536, 65537, 70000, 16777216]:
        tiles = {(t.level, t.index): t.width for t in tiles_for_size(size)}
        for level in range(8):
            for index in range(300):
                assert tiles.get((level, index), 0) == tile_width(level, index, size), (size, level, index)
    assert tile_width(7, 0, U64) == 255  # the top of a full uint64 tree
    assert tile_min_size(7, 0, 255) == 255 * 2**56 <= U64 < tile_min_size(7, 0, 256)


# --- where a node lives -------------------------------------------------------------------------


@SETTINGS
@given(st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=3 * 2**16))
def test_node_in_tile_matches_the_leaf_ranges(level: int, index: int) -> None:
    assert node_in_tile(level, index) == ref_node_in_tile(level, index)


@SETTINGS
@given(st.integers(min_value=0, max_value=63), st.integers(min_value=0, max_value=U64))
def test_tile_node_inverts_node_in_tile(level: int, index: int) -> None:
    tile_level, tile_index, k, pos = node_in_tile(level, index)
    assert 0 <= k < TILE_HEIGHT and 0 <= pos < TILE_WIDTH >> k
    assert tile_node(tile_level, tile_index, k, pos) == (level, index)
    assert node_in_tile(*tile_node(tile_level, tile_index, k, pos)) == (tile_level, tile_index, k, pos)
    # A node at a multiple of 8 is stored as hash `pos` of its tile.
    if k == 0:
        assert (level, index) == (8 * tile_level, 256 * tile_index + pos)


def test_node_span_is_the_tile_hashes_below_the_node() -> None:
    for k in range(TILE_HEIGHT + 1):
        for pos in range(TILE_WIDTH >> k):
            assert node_span(k, pos) == ref_node_span(k, pos), (k, pos)


def test_expansion_spans_are_the_levels_of_expand_tile() -> None:
    for width in range(1, TILE_WIDTH + 1):
        levels = expand_tile(bytes(range(32)) * width)
        spans = expansion_spans(width)
        joined = b"".join(levels)
        assert len(spans) == len(levels)
        assert [joined[a:b] for a, b in spans] == levels
        assert spans[0][0] == 0 and spans[-1][1] == len(joined)
    assert expansion_spans(TILE_WIDTH)[-1][1] == (2 * TILE_WIDTH - 1) * 32
    assert FULL_TILE_BYTES == TILE_WIDTH * 32


# --- against real hashes ------------------------------------------------------------------------

SIZE = 70_000  # three tile levels: 273 full level-0 tiles, a partial, two level-1 tiles, a level-2 one
NODES: dict[tuple[int, int], bytes] = {}
CompactRange().extend([leaf_hash(leaf_data(i)) for i in range(SIZE)],
                      lambda lvl, idx, h: NODES.__setitem__((lvl, idx), h))


def tile_data(tile_level: int, tile_index: int, size: int) -> bytes:
    """tlog-tiles "Merkle Tree": the tile's hashes are the complete nodes (8L, 256N + j)."""
    return b"".join(NODES[(8 * tile_level, 256 * tile_index + j)] for j in range(256)
                    if complete(8 * tile_level, 256 * tile_index + j, size))


@st.composite
def complete_node(draw: st.DrawFn) -> tuple[int, int, int]:
    """(level, index, size): a node complete in a tree of `size` <= SIZE leaves."""
    size = draw(st.integers(min_value=1, max_value=SIZE))
    level = draw(st.integers(min_value=0, max_value=size.bit_length() - 1))
    index = draw(st.integers(min_value=0, max_value=size // 2**level - 1))
    return level, index, size


@SETTINGS
@given(complete_node())
def test_node_in_tile_finds_the_node_in_its_tile_expansion(node: tuple[int, int, int]) -> None:
    level, index, size = node
    tile_level, tile_index, k, pos = node_in_tile(level, index)
    data = tile_data(tile_level, tile_index, size)
    assert len(data) // 32 == tile_width(tile_level, tile_index, size) >= node_span(k, pos)[1]
    assert expand_tile(data)[k][32 * pos : 32 * pos + 32] == NODES[(level, index)]


@SETTINGS
@given(st.lists(complete_node(), min_size=1, max_size=6), st.integers(min_value=0, max_value=SIZE))
def test_plan_tile_reads_reads_each_node_from_its_tile(nodes: list[tuple[int, int, int]], extra: int) -> None:
    size = max(s for _, _, s in nodes) + extra
    size = min(size, SIZE)
    ids = [(level, index) for level, index, _ in nodes]
    needed, where = plan_tile_reads(ids, size)
    assert needed == {(t.level, t.index): t.width for t in tiles_for_nodes(ids, size)}
    assert len(where) == len(ids)
    for (level, index), (key, k, pos) in zip(ids, where, strict=True):
        assert (*key, k, pos) == node_in_tile(level, index)
        levels = expand_tile(tile_data(*key, size))
        assert levels[k][32 * pos : 32 * pos + 32] == NODES[(level, index)]


def test_plan_tile_reads_refuses_a_node_that_is_not_complete() -> None:
    assert plan_tile_reads([], 5) == ({}, [])
    for level, index, size in [(0, 5, 5), (3, 1, 15), (8, 0, 255), (9, 1, 1023), (16, 0, 65535)]:
        want = f"node ({level}, {index}) is not complete at tree size {size}"
        with pytest.raises(RuntimeError, match=re.escape(want)):
            plan_tile_reads([(0, 0), (level, index)], size)


def test_sibling_slices_are_the_audit_path_inside_a_full_tile() -> None:
    """RFC 6962 PATH(m, D[256]) of each hash m of a full tile is, hash k, the slice
    SIBLING_SLICES[m][k] of level k of the tile's expansion."""
    data = [leaf_data(i) for i in range(TILE_WIDTH)]
    levels = expand_tile(b"".join(leaf_hash(d) for d in data))
    for m in range(TILE_WIDTH):
        assert len(SIBLING_SLICES[m]) == TILE_HEIGHT
        assert [levels[k][a:b] for k, a, b in SIBLING_SLICES[m]] == path(m, data), m
        assert list(SIBLING_SLICES[m]) == [sibling_slice(k, m) for k in range(TILE_HEIGHT)]
