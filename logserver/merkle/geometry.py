"""C2SP tlog-tiles geometry: where a tree node lives in the hash tiles, as plain integers.

tlog-tiles "Merkle Tree": the tile at level L and index N holds the hashes of the
nodes (8L, 256N + i) of the tree, i = 0..255 (tree level 8L: each covers 256**L
leaves), and the tree levels between multiples of 8 are reconstructed by hashing
inside the tile. So a tile's *expansion* (tiles.expand_tile) holds, at level k
(0..8), the complete nodes of tree level 8L + k whose subtrees lie in the tile:
position p of level k is the node (8L + k, (256N >> k) + p), the hash of the
tile's hashes [p << k, (p + 1) << k).

Everything here is arithmetic on those coordinates: no hashing, no data, and no
argument checks. The callers (the reader, the tile file, fsck) pass coordinates
derived from sizes that were validated where they came in; tiles.TileID and
tiles.tile_for_node are the checked entry points. Tiles are keyed by the
`(tile_level, tile_index)` tuple that storage and the tile cache use (`TileKey`),
not by TileID objects. The package root (logserver.merkle) does not re-export these
names: importing logserver.merkle.geometry says the caller skips the checks. Where
a call would cost on a per-request or per-batch path, the caller inlines the
helper's arithmetic and its comment names the helper.
"""

from __future__ import annotations

from collections.abc import Iterable

from .compact import NodeID
from .hashing import HASH_SIZE

# tlog-tiles fixes the height at 8 (256 hashes a tile); plan_tile_reads and
# TreeReader._audit_path shift by 3 and mask by 7 on that ground.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE

TileKey = tuple[int, int]
"""A hash tile as (tile_level, tile_index), without its width."""


def tile_width(tile_level: int, tile_index: int, size: int) -> int:
    """How many hashes tile (tile_level, tile_index) holds in a tree of `size` leaves:
    0 (the tile is beyond the tree) to 256 (full).

    tlog-tiles "Partial Tiles": tree level 8L has floor(size / 256**L) complete nodes,
    so the tile at level L and index N holds that minus 256N of them, at most 256.
    """
    width = (size >> (TILE_HEIGHT * tile_level)) - (tile_index << TILE_HEIGHT)
    return TILE_WIDTH if width > TILE_WIDTH else max(width, 0)


def tile_min_size(tile_level: int, tile_index: int, width: int) -> int:
    """The smallest tree size at which tile (tile_level, tile_index) holds at least
    `width` (1..256) hashes: its last one, node (8L, 256N + width - 1), covers leaves up
    to (256N + width) * 256**L. The inverse of tile_width:
    tile_width(L, N, size) >= width exactly when size >= tile_min_size(L, N, width)."""
    # Multiplications where they can be: CPython 3.11 has a fast path for int * int,
    # none for <<, and the tile route calls this per request (cached_hash_tile).
    return (tile_index * TILE_WIDTH + width) << (TILE_HEIGHT * tile_level)


def node_in_tile(level: int, index: int) -> tuple[int, int, int, int]:
    """Where the node (level, index) lies in the tiles: (tile_level, tile_index, k, pos),
    the node is position `pos` of level `k` of the expansion of tile (tile_level,
    tile_index). k = level mod 8 is how many tree levels the node sits above the
    tile's own hashes; the node is their hash [pos << k, (pos + 1) << k) (node_span),
    so the tile must hold at least (pos + 1) << k hashes for the node to be complete.
    A node at a multiple of 8 (k = 0) is stored as hash `pos` of its tile."""
    tile_level, k = divmod(level, TILE_HEIGHT)
    shift = TILE_HEIGHT - k
    tile_index = index >> shift
    return tile_level, tile_index, k, index - (tile_index << shift)


def tile_node(tile_level: int, tile_index: int, k: int, pos: int) -> NodeID:
    """The node at position `pos` of level `k` of the expansion of tile (tile_level,
    tile_index): the inverse of node_in_tile. With k = 0, the node whose hash the tile
    stores at `pos`, (8 * tile_level, 256 * tile_index + pos)."""
    return TILE_HEIGHT * tile_level + k, ((tile_index << TILE_HEIGHT) >> k) + pos


def node_span(k: int, pos: int) -> tuple[int, int]:
    """The tile hashes [first, end) below position `pos` of level `k` of an expansion:
    the node is their Merkle Tree Hash, and a tile of `end` or more hashes holds it."""
    return pos << k, (pos + 1) << k


def expansion_spans(width: int) -> list[tuple[int, int]]:
    """Byte offsets [start, end) of each level of the expansion of a tile of `width`
    (1..256) hashes, laid end to end (b"".join(tiles.expand_tile(data))): level k has
    width >> k hashes, and there are width.bit_length() levels. A full tile's expansion
    is 9 levels, 511 hashes (read/tile_file.py stores it so)."""
    spans = []
    offset = 0
    for k in range(width.bit_length()):
        end = offset + (width >> k) * HASH_SIZE
        spans.append((offset, end))
        offset = end
    return spans


def sibling_slice(k: int, pos: int) -> tuple[int, int, int]:
    """Where the sibling of the ancestor at level `k` of position `pos` of a tile's
    hashes lies in the tile's expansion: (k, start, end), a byte slice of level k.
    The ancestor is position pos >> k of level k; its sibling is the neighbour it is
    hashed with (the one whose position differs in the lowest bit), which is the
    (k+1)-th hash of the RFC 6962 audit path of hash `pos` inside the tile."""
    sibling = (pos >> k) ^ 1
    return k, sibling * HASH_SIZE, (sibling + 1) * HASH_SIZE


SIBLING_SLICES: tuple[tuple[tuple[int, int, int], ...], ...] = tuple(
    tuple(sibling_slice(k, pos) for k in range(TILE_HEIGHT)) for pos in range(TILE_WIDTH)
)
"""SIBLING_SLICES[pos][k] = sibling_slice(k, pos), precomputed: the audit path of hash
`pos` from level k0 up to level k1 of one tile is the slices SIBLING_SLICES[pos][k0:k1]
of its expansion (TreeReader._audit_path slices a proof straight out of this row)."""


def plan_tile_reads(ids: Iterable[NodeID], size: int) -> tuple[dict[TileKey, int], list[tuple[TileKey, int, int]]]:
    """How to read the complete nodes `ids` of the tree of `size` leaves from expanded tiles.

    Returns (needed, where): `needed` maps each tile to read to its width at `size`
    (tile_width); `where[i]` is (tile, k, pos) for ids[i]: its hash is bytes
    [pos * 32, (pos + 1) * 32) of level k of that tile's expansion (node_in_tile).
    A node that is not complete at `size` is a broken invariant of the caller (the ids
    come from proof plans): RuntimeError.
    """
    needed: dict[TileKey, int] = {}
    where: list[tuple[TileKey, int, int]] = []
    for level, index in ids:
        # node_in_tile and tile_width inlined (shifts, no divmod/min/max): this loop runs
        # ~20 times per proof whose tail the reader has not cached yet.
        tile_level = level >> 3
        k = level & 7
        shift = TILE_HEIGHT - k
        tile_index = index >> shift
        width = (size >> (TILE_HEIGHT * tile_level)) - (tile_index << TILE_HEIGHT)
        if width > TILE_WIDTH:
            width = TILE_WIDTH
        pos = index - (tile_index << shift)
        if (pos + 1) << k > width:
            raise RuntimeError(f"node ({level}, {index}) is not complete at tree size {size}")
        key = (tile_level, tile_index)
        needed[key] = width  # the same for every node of one tile
        where.append((key, k, pos))
    return needed, where
