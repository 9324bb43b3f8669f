"""Proofs from hash tiles, every tile first tied to a signed tree.

A static copy of the log's tree (nginx, an S3 bucket) serves whatever bytes it holds.
A proof computed from them is only as good as those bytes: if it does not verify, the
log may have signed two histories (a split view) or an object of the copy may be
corrupted or replaced. To tell the two apart, every tile is checked against the root
of a signed checkpoint of size N before a proof is computed from the tiles of N:

* the tiles that hold the right frontier of N must hash to its signed root. They are
  all partial: a frontier node lies inside a tile that is not full at N, or the full
  tile's own root would be a larger complete node covering it;
* a full tile (L, n) must hash to node (8L+8, n), which is hash n mod 256 of its
  parent tile (L+1, n div 256) at N, itself checked the same way up to a frontier
  tile (tlog-tiles: "the n-th tile at level l holds MTH(D[(n*256+i)*256**l : ...])").

A tile that fails is named, path and URL (`TileMismatchError`). A proof computed from
tiles that pass is the signed tree's own: if it does not verify between two signed
checkpoints, the log signed two trees that are not one append-only history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..merkle import (
    HASH_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    MerkleError,
    TileID,
    consistency_plan,
    expand_tile,
    frontier_ids,
    hashes_from_tiles,
    inclusion_plan,
    rehash,
    tile_for_node,
    tile_path,
    tiles_for_nodes,
)
from .log_client import LogClient, MalformedResponseError


@dataclass(frozen=True)
class TileFault:
    """Tiles that do not belong to the signed tree of `size` leaves: one tile, or the
    frontier tiles together (the root alone cannot say which of them is wrong)."""

    tiles: tuple[TileID, ...]
    size: int
    message: str

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(tile_path(t) for t in self.tiles)


class TileMismatchError(MalformedResponseError):
    """Tiles served are well formed but do not hash to the signed tree they are read
    for: an object of the tiles URL is corrupted or was replaced. `paths` and `urls`
    name it (or, for the frontier, the tiles among which one is wrong)."""

    def __init__(self, fault: TileFault, urls: tuple[str, ...]) -> None:
        super().__init__(fault.message.replace("{urls}", ", ".join(urls)))
        self.fault = fault
        self.paths = fault.paths
        self.urls = urls
        self.size = fault.size


def frontier_tiles(size: int) -> list[TileID]:
    """The tiles (all partial) that hold the right frontier of the tree of `size`."""
    return tiles_for_nodes(frontier_ids(size), size)


def tiles_to_check(tiles: Iterable[TileID], size: int) -> list[TileID]:
    """`tiles`, the frontier tiles of `size` and every ancestor a full tile is checked
    through: what `tile_faults` needs. Each tile must have its width at `size`."""
    out: dict[TileID, None] = dict.fromkeys(frontier_tiles(size))
    for tile in tiles:
        while tile not in out:
            out[tile] = None
            if not tile.is_full:
                break  # a partial tile at its width at `size` is a frontier tile (checked by tile_faults)
            tile = _parent(tile, size)
    return list(out)


def _parent(tile: TileID, size: int) -> TileID:
    """The tile, at its width at `size`, holding the root of the full tile `tile`."""
    return tile_for_node(TILE_HEIGHT * (tile.level + 1), tile.index, size)


def tile_faults(size: int, root: bytes, tiles: Mapping[TileID, bytes]) -> list[TileFault]:
    """Check every tile of `tiles` against the signed tree of `size` leaves and `root`.

    `tiles` must hold `tiles_to_check(...)` (ValueError otherwise: a caller's mistake),
    each at its width at `size`; data longer than the width (a full tile standing in
    for a partial one) is cut to it. Returns the faults, parents before children; a
    tile below one that failed cannot be checked and is not reported again. Messages
    say `{urls}` where the caller puts the objects' URLs.
    """
    if size == 0:
        if tiles:
            raise ValueError("the empty tree has no tiles")
        return []
    faults: list[TileFault] = []
    bad: set[TileID] = set()
    frontier = frontier_tiles(size)
    for tile in tiles:
        if not tile.is_full and tile not in frontier:
            raise ValueError(f"{tile_path(tile)} is not a tile of the tree of size {size}")
    missing = [tile_path(t) for t in tiles_to_check(tiles, size) if t not in tiles]
    if missing:
        raise ValueError(f"tile_faults: missing {', '.join(missing)}")
    data = {t: tiles[t][: t.width * HASH_SIZE] for t in tiles}
    try:
        computed = CompactRange(size, hashes_from_tiles(frontier_ids(size), size, data)).root()
    except MerkleError as exc:
        computed, why = b"", f"malformed: {exc}"
    else:
        why = f"hash to root {computed.hex()}"
    if computed != root:
        names = ", ".join(tile_path(t) for t in frontier)
        which = "tile" if len(frontier) == 1 else "frontier tiles (at least one of them is wrong)"
        faults.append(TileFault(tuple(frontier), size, (
            f"the {which} {names} of the tree of size {size} ({{urls}}) {why}, want the signed root {root.hex()}")))
        bad.update(frontier)
    for tile in sorted((t for t in tiles if t.is_full), key=lambda t: (-t.level, t.index)):
        parent = _parent(tile, size)
        if parent in bad:
            bad.add(tile)  # cannot be checked against a parent that is wrong
            continue
        want = data[parent][(tile.index % TILE_WIDTH) * HASH_SIZE:][:HASH_SIZE]
        got = _full_tile_root(data[tile])
        if got != want:
            faults.append(TileFault((tile,), size, (
                f"tile {tile_path(tile)} ({{urls}}) does not belong to the signed tree of size {size}: its hashes "
                f"hash to {got.hex() if got else '(malformed)'}, but its parent {tile_path(parent)}, checked up "
                f"to the signed root {root.hex()}, has {want.hex()} for it")))
            bad.add(tile)
    return faults


def _full_tile_root(data: bytes) -> bytes:
    if len(data) != TILE_WIDTH * HASH_SIZE:
        return b""
    return expand_tile(data)[TILE_HEIGHT]


def _error(client: LogClient, fault: TileFault) -> TileMismatchError:
    return TileMismatchError(fault, tuple(client.tiles_url_of(p) for p in fault.paths))


async def verified_tiles(client: LogClient, tiles: Iterable[TileID], size: int, root: bytes) -> dict[TileID, bytes]:
    """Fetch `tiles` (each at its width at `size`) and check them, with what they are
    checked through, against the signed tree of `size` and `root`. Raises
    `TileMismatchError` naming the first tile that fails, `LogClientError` if a tile
    cannot be read."""
    wanted = list(dict.fromkeys(tiles))
    data = await client.tiles(tiles_to_check(wanted, size))
    faults = tile_faults(size, root, data)
    if faults:
        raise _error(client, faults[0])
    return {t: data[t] for t in wanted}


async def locate_tile_faults(
    client: LogClient, tiles: Iterable[TileID], size: int, root: bytes
) -> list[TileMismatchError]:
    """Every fault among `tiles` and the tiles they are checked through (for an alert
    that names what is wrong), as errors carrying the paths and URLs."""
    data = await client.tiles(tiles_to_check(list(tiles), size))
    return [_error(client, f) for f in tile_faults(size, root, data)]


async def verified_consistency_proof(
    client: LogClient, first: int, second: int, *, size: int, root: bytes
) -> list[bytes]:
    """The consistency proof from `first` to `second` (<= `size`), computed from the
    tiles of the signed tree of `size` and `root`, every tile checked first."""
    if not 0 <= first <= second <= size:
        raise ValueError(f"consistency proof from {first} to {second} from the tiles of size {size}: "
                         "want first <= second <= size")
    plan = consistency_plan(first, second)
    return rehash(plan, await _node_hashes(client, list(plan.ids), size, root)) if plan.ids else []


async def verified_inclusion_proof(client: LogClient, index: int, tree: int, *, size: int, root: bytes) -> list[bytes]:
    """The inclusion proof of leaf `index` in the tree of `tree` (<= `size`) leaves,
    computed from the tiles of the signed tree of `size` and `root`, checked first."""
    if not tree <= size:
        raise ValueError(f"inclusion proof at size {tree} from the tiles of size {size}: want {tree} <= {size}")
    plan = inclusion_plan(index, tree)
    return rehash(plan, await _node_hashes(client, list(plan.ids), size, root)) if plan.ids else []


async def _node_hashes(client: LogClient, ids: list[tuple[int, int]], size: int, root: bytes) -> list[bytes]:
    tiles = await verified_tiles(client, tiles_for_nodes(ids, size), size, root)
    try:
        return hashes_from_tiles(ids, size, tiles)
    except MerkleError as exc:  # checked tiles have the right lengths: unreachable but typed
        raise MalformedResponseError(f"tiles of {client.tiles_url} for size {size}: {exc}") from None
