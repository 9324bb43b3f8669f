"""The one frontier check: do the stored tiles reproduce a signed root?

Both the sequencer's pre-sign check (before every signature, write/sequencer.py
step 3) and the start-up check (integrity/checks.py) rebuild the tree's right
frontier, the O(log n) complete nodes covering [0, size), from the stored hash
tiles and compare its root with the signed one. A missing or short tile, or a
root that differs, is a FrontierError with got/want. Pure: the callers read the
tiles (`frontier_tile_keys`) and pass them in.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..merkle import CompactRange, frontier_ids
from ..merkle.tiles import TileID, hashes_from_tiles, tiles_for_nodes

TileKey = tuple[int, int]


class FrontierError(Exception):
    """The stored tiles do not reproduce the signed root at `size`.

    `got` and `want` are the roots when the tiles were all there, and None when a
    tile was missing or short (the message names it, with the hashes it has and
    needs).
    """

    def __init__(self, message: str, size: int, got: bytes | None = None, want: bytes | None = None):
        super().__init__(message)
        self.size = size
        self.got = got
        self.want = want


@dataclass(frozen=True)
class Frontier:
    """The verified frontier at a signed size, and the right-edge tiles it was read
    from, trimmed to their width at that size (what the next batch grows)."""

    range: CompactRange
    right_edge: dict[TileKey, bytes]


def frontier_tiles(size: int) -> list[TileID]:
    """The tiles holding the frontier of the tree of `size` leaves, at their width there."""
    return tiles_for_nodes(frontier_ids(size), size)


def frontier_tile_keys(size: int) -> list[TileKey]:
    """(level, index) of each frontier tile: what to read from storage."""
    return [(t.level, t.index) for t in frontier_tiles(size)]


def check_frontier(size: int, signed_root: bytes, stored: Mapping[TileKey, bytes], *,
                   checkpoint: str = "latest checkpoint") -> Frontier:
    """Rebuild the frontier at `size` from `stored` tiles (level, index) -> data, which
    may be wider than needed; it must reproduce `signed_root`, else FrontierError.
    `checkpoint` names the signed checkpoint in the message."""
    ids = frontier_ids(size)
    tiles: dict[TileID, bytes] = {}
    for t in tiles_for_nodes(ids, size):
        data = stored.get((t.level, t.index))
        if data is None or len(data) < 32 * t.width:
            raise FrontierError(
                f"tile {t.level}/{t.index} is missing or short in storage "
                f"(got {0 if data is None else len(data) // 32} hashes, want {t.width}) at tree size {size}",
                size,
            )
        tiles[t] = data
    frontier = CompactRange(size, hashes_from_tiles(ids, size, tiles))
    root = frontier.root()
    if root != signed_root:
        raise FrontierError(
            f"stored tiles do not reproduce the {checkpoint} (size {size}): "
            f"root got {root.hex()}, want {signed_root.hex()}",
            size, root, signed_root,
        )
    return Frontier(frontier, {(t.level, t.index): data[: 32 * t.width] for t, data in tiles.items()})
