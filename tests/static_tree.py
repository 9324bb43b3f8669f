"""An independent check of a published static tree (issue 19, section 4).

Given a way to read objects of the tree (a directory, nginx, an S3 bucket's public URL),
`check_checkpoint` checks one checkpoint as a reader would, with tests/independent_merkle
only (no logserver.merkle): its signature by the log's key, that every tile and entry
bundle it needs is there, that the entries hash to the level-0 tiles, each full tile to
its hash in the tile above, and the tiles to the checkpoint's root; and, given the final
tree's leaf hashes, that it is consistent with the final tree (its root is the MTH of
the final tree's first `size` leaves, RFC 6962 §2.1).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from independent_merkle import (
    TILE_WIDTH,
    CheckError,
    decode_entry_bundle,
    leaf_hash,
    mth,
    root_from_tiles,
    subtree_root,
    tile_url_path,
    tiles_implied,
)
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import NoteVerifier

Read = Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True)
class CheckedTree:
    size: int
    root: bytes
    leaf_hashes: list[bytes]  # of the first `size` leaves, from the entry bundles


async def check_checkpoint(read: Read, note: bytes, verifiers: Sequence[NoteVerifier],
                           final_leaf_hashes: Sequence[bytes] | None = None) -> CheckedTree:
    cp, _ = open_checkpoint(note, verifiers)
    size, root = cp.size, cp.root
    tiles: dict[tuple[int, int], bytes] = {}
    for level, index, width in tiles_implied(size):
        path = tile_url_path(level, index, width)
        data = await read(path)
        if data is None:
            raise CheckError(f"checkpoint size {size}: {path} is missing")
        if len(data) != 32 * width:
            raise CheckError(f"{path}: got {len(data)} bytes, want {32 * width}")
        tiles[(level, index)] = data
    leaves: list[bytes] = []
    for index in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
        width = min(TILE_WIDTH, size - index * TILE_WIDTH)
        path = tile_url_path("entries", index, width)
        data = await read(path)
        if data is None:
            raise CheckError(f"checkpoint size {size}: {path} is missing")
        entries = decode_entry_bundle(data)
        if len(entries) != width:
            raise CheckError(f"{path}: got {len(entries)} entries, want {width}")
        hashes = [leaf_hash(e) for e in entries]
        if b"".join(hashes) != tiles[(0, index)]:
            raise CheckError(f"{path}: its entries do not hash to {tile_url_path(0, index, width)}")
        leaves += hashes
    for (level, index), data in tiles.items():
        if level and len(data) // 32:  # each hash is the root of a full tile below
            for pos in range(len(data) // 32):
                below = tiles.get((level - 1, index * TILE_WIDTH + pos))
                if below is None or len(below) != 32 * TILE_WIDTH:
                    raise CheckError(f"tile {level}/{index}: hash {pos} has no full tile below")
                if subtree_root([below[i:i + 32] for i in range(0, len(below), 32)]) != data[32 * pos:32 * pos + 32]:
                    raise CheckError(f"tile {level}/{index}: hash {pos} is not the root of the tile below")
    if root_from_tiles(size, tiles) != root:
        raise CheckError(f"checkpoint size {size}: the tiles' root is not the checkpoint's root {root.hex()}")
    if mth(leaves) != root:
        raise CheckError(f"checkpoint size {size}: the entries' root is not the checkpoint's root")
    if final_leaf_hashes is not None:
        if len(final_leaf_hashes) < size:
            raise CheckError(f"checkpoint size {size} is beyond the final tree ({len(final_leaf_hashes)})")
        if mth(list(final_leaf_hashes[:size])) != root:
            raise CheckError(f"checkpoint size {size} is not consistent with the final tree")
    return CheckedTree(size, root, leaves)
