"""C2SP tlog-tiles: tile coordinates, resource paths, tile hashes and entry bundles.

A hash tile at level L holds up to 256 consecutive tree nodes of tree level 8L (spec
"Merkle Tree": the n-th tile at level l holds MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l])).
Nodes at tree levels between multiples of 8 are not stored: they are recomputed by
hashing inside the tile ("The Merkle Tree levels between those expressed by the tile
hashes are reconstructed by hashing the leaves").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256

from ._checks import MAX_TREE_SIZE, check_size
from .compact import CompactRange, NodeID, frontier_ids
from .errors import InvalidParameterError, TileDataError, TilePathError
from .geometry import FULL_TILE_BYTES
from .geometry import TILE_HEIGHT as TILE_HEIGHT  # re-exported: the constants' old home
from .geometry import TILE_WIDTH as TILE_WIDTH
from .hashing import HASH_SIZE

# tlog-tiles: "<L> ... MUST be a decimal ASCII integer between 0 and 63".
MAX_TILE_LEVEL = 63
# tlog-tiles "Log entries": entries are big-endian uint16 length-prefixed.
MAX_ENTRY_SIZE = 0xFFFF

_NODE = b"\x01"


def _coverage_error(level: int, index: int, width: int) -> str | None:
    """Return why a tile cannot exist, or None. Tree sizes are uint64, so a tile whose
    last hash covers leaves at or beyond 2**64 - 1 belongs to no tree."""
    if type(level) is not int or not 0 <= level <= MAX_TILE_LEVEL:
        return f"tile level: got {level!r}, want 0..{MAX_TILE_LEVEL}"
    if type(index) is not int or index < 0:
        return f"tile index: got {index!r}, want a non-negative int"
    if type(width) is not int or not 1 <= width <= TILE_WIDTH:
        return f"tile width: got {width!r}, want 1..{TILE_WIDTH}"
    # geometry.tile_min_size, inlined: the tile route runs this per request.
    end = (index * TILE_WIDTH + width) << (TILE_HEIGHT * level)
    if end > MAX_TREE_SIZE:
        return f"tile level {level} index {index} width {width}: covers {end} leaves, want <= 2**64-1"
    return None


@dataclass(frozen=True, slots=True)
class TileID:
    """A hash tile: `width` (1..256, 256 = full) hashes of tree level 8 * `level`,
    starting at node index 256 * `index`."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        err = _coverage_error(self.level, self.index, self.width)
        if err is not None:
            raise InvalidParameterError(err)

    @property
    def is_full(self) -> bool:
        """True for a full (256-hash) tile."""
        return self.width == TILE_WIDTH


@dataclass(frozen=True, slots=True)
class EntriesTileID:
    """An entry bundle: `width` (1..256) entries starting at leaf 256 * `index`."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        err = _coverage_error(0, self.index, self.width)
        if err is not None:
            raise InvalidParameterError(err)

    @property
    def is_full(self) -> bool:
        """True for a full (256-entry) bundle."""
        return self.width == TILE_WIDTH


# --- paths (tlog-tiles "Merkle Tree" and "Log entries") ---------------------------------

_LEVEL_RE = re.compile(r"0|[1-9][0-9]?")
_WIDTH_RE = re.compile(r"[1-9][0-9]{0,2}")
# 2**64 has 20 decimal digits: 7 groups of 3.
_MAX_GROUPS = 7


def _encode_index(n: int) -> str:
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(tile: TileID | EntriesTileID) -> str:
    """Return the resource path (without prefix), e.g. `tile/1/x001/234.p/17`, `tile/entries/000`."""
    if isinstance(tile, TileID):
        head = f"tile/{tile.level}/"
    elif isinstance(tile, EntriesTileID):
        head = "tile/entries/"
    else:
        raise InvalidParameterError(f"tile: got {type(tile).__name__}, want TileID or EntriesTileID")
    tail = "" if tile.width == TILE_WIDTH else f".p/{tile.width}"
    return head + _encode_index(tile.index) + tail


# One pass over the canonical form: level (or "entries"), up to 7 index elements of three
# digits with all but the last prefixed by "x", and an optional ".p/<W>" (W = 1..255
# without leading zeros; tlog-tiles "Partial Tiles"). Size bounds are checked after.
_TILE_PATH_RE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/){0,6})([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


def parse_tile_path(path: str) -> TileID | EntriesTileID:
    """Parse `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` (no prefix, no leading
    slash), accepting only the canonical encoding that tile_path() produces."""
    level, index, width = parse_tile_coordinates(path)
    if level is None:
        return EntriesTileID(index, width)
    return TileID(level, index, width)


def parse_tile_coordinates(path: str) -> tuple[int | None, int, int]:
    """parse_tile_path() as (level, index, width), level None for an entry bundle:
    the same checks, without building the ID (the server's tile route)."""
    if not isinstance(path, str):
        raise TilePathError(f"tile path: got {type(path).__name__}, want str")
    m = _TILE_PATH_RE.fullmatch(path)
    head, xgroups, last, w = m.groups() if m else ("", "", "", None)
    level = None if head == "entries" else int(head or 0)
    width = TILE_WIDTH if w is None else int(w)
    # tlog-tiles: "zero-padded 3-digit path elements. All but the last path element MUST
    # begin with an x." Canonical form has no all-zero leading element.
    bad_width = w is not None and width >= TILE_WIDTH
    if m is None or (level or 0) > MAX_TILE_LEVEL or bad_width or xgroups.startswith("x000/"):
        raise TilePathError(_why_not_tile_path(path))
    index = int(xgroups.replace("x", "").replace("/", "") + last)
    err = _coverage_error(0 if level is None else level, index, width)
    if err is not None:
        raise TilePathError(f"tile path {path!r}: {err}")
    return level, index, width


def _why_not_tile_path(path: str) -> str:
    """The message for a path that is not canonical: which part is wrong, checked in
    order (shape, level, width, number of elements, their form, a leading x000)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        return f"tile path {path!r}: want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]"
    if parts[1] != "entries" and not (_LEVEL_RE.fullmatch(parts[1]) and int(parts[1]) <= MAX_TILE_LEVEL):
        return f"tile path {path!r}: level: got {parts[1]!r}, want 0..{MAX_TILE_LEVEL} without leading zeros"
    groups = parts[2:]
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        w = groups[-1]
        if not _WIDTH_RE.fullmatch(w) or int(w) >= TILE_WIDTH:
            return f"tile path {path!r}: width: got {w!r}, want 1..255 without leading zeros"
        groups = [*groups[:-2], groups[-2][:-2]]
    if len(groups) > _MAX_GROUPS:
        return f"tile path {path!r}: index: got {len(groups)} path elements, want <= {_MAX_GROUPS}"
    if len(groups) > 1 and groups[0] == "x000" and _TILE_PATH_RE.fullmatch(path):
        return f"tile path {path!r}: index: got a leading x000 element, want none"
    return f"tile path {path!r}: index: want 3-digit elements, all but the last prefixed with x"


# --- which tiles a tree has ---------------------------------------------------------------


def tiles_for_size(size: int) -> list[TileID]:
    """Every full and partial hash tile of a tree of `size` leaves, level by level."""
    check_size("size", size)
    tiles: list[TileID] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        # tlog-tiles "Partial Tiles": the partial tile at level l has floor(s / 256**l) mod 256 entries.
        nodes = size >> (TILE_HEIGHT * level)
        full, partial = divmod(nodes, TILE_WIDTH)
        tiles.extend(TileID(level, i) for i in range(full))
        if partial:
            tiles.append(TileID(level, full, partial))
        level += 1
    return tiles


def tiles_between(old_size: int, new_size: int) -> tuple[list[TileID], list[EntriesTileID]]:
    """The hash tiles and entry bundles of a tree of `new_size` that a tree of `old_size`
    (<= new_size) does not have with the same width: what a static copy at `old_size`
    lacks to serve `new_size` (the publisher's objects, logserver/publish/). Full ones
    first, left to right and level by level, then the partial ones."""
    check_size("old_size", old_size)
    check_size("new_size", new_size)
    if old_size > new_size:
        raise InvalidParameterError(f"old_size: got {old_size}, want <= new_size {new_size}")
    full: list[TileID] = []
    partial: list[TileID] = []
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        nodes, old_nodes = new_size >> (TILE_HEIGHT * level), old_size >> (TILE_HEIGHT * level)
        if nodes != old_nodes:
            # Tile old_nodes // 256 is the first whose width changed (it was partial or absent).
            for i in range(old_nodes // TILE_WIDTH, nodes // TILE_WIDTH):
                full.append(TileID(level, i))
            if nodes % TILE_WIDTH:
                partial.append(TileID(level, nodes // TILE_WIDTH, nodes % TILE_WIDTH))
        level += 1
    bundles = [EntriesTileID(t.index, t.width) for t in (*full, *partial) if t.level == 0]
    return [*full, *partial], bundles


def entries_tiles_for_size(size: int) -> list[EntriesTileID]:
    """Every full and partial entry bundle of a tree of `size` leaves."""
    check_size("size", size)
    full, partial = divmod(size, TILE_WIDTH)
    bundles = [EntriesTileID(i) for i in range(full)]
    if partial:
        bundles.append(EntriesTileID(full, partial))
    return bundles


def tile_for_node(level: int, index: int, size: int) -> TileID:
    """Return the tile, with its width at `size`, that holds or reconstructs the complete
    node (level, index) of a tree of `size` leaves."""
    check_size("size", size)
    if type(level) is not int or type(index) is not int or level < 0 or index < 0:
        raise InvalidParameterError(f"node: got ({level!r}, {index!r}), want non-negative ints")
    if (index + 1) << level > size:
        raise InvalidParameterError(f"node ({level}, {index}): not complete in a tree of size {size}")
    # geometry.node_in_tile and tile_width, inlined: the sequencer and the integrity
    # checks call this for every frontier node of every batch.
    tile_level, below = divmod(level, TILE_HEIGHT)
    tile_index = index >> (TILE_HEIGHT - below)
    nodes = size >> (TILE_HEIGHT * tile_level)
    width = min(TILE_WIDTH, nodes - tile_index * TILE_WIDTH)
    return TileID(tile_level, tile_index, width)


def tiles_for_nodes(ids: Iterable[NodeID], size: int) -> list[TileID]:
    """The tiles needed to read the complete nodes `ids` at `size`, deduplicated, in first-use order."""
    return list(dict.fromkeys(tile_for_node(level, index, size) for level, index in ids))


def _tile_data(tiles: Mapping[TileID, bytes], tile: TileID) -> bytes:
    data = tiles.get(tile)
    if data is None and tile.width < TILE_WIDTH:
        # tlog-tiles: clients MAY fall back to the full tile once the partial one is gone.
        data = tiles.get(TileID(tile.level, tile.index))
    if data is None:
        raise InvalidParameterError(f"missing tile {tile_path(tile)}")
    if type(data) is not bytes:
        raise TileDataError(f"tile {tile_path(tile)}: got {type(data).__name__}, want bytes")
    need = tile.width * HASH_SIZE
    if len(data) % HASH_SIZE or not need <= len(data) <= FULL_TILE_BYTES:
        raise TileDataError(
            f"tile {tile_path(tile)}: got {len(data)} bytes,"
            f" want a multiple of {HASH_SIZE} in {need}..{FULL_TILE_BYTES}"
        )
    return data


def hashes_from_tiles(ids: Iterable[NodeID], size: int, tiles: Mapping[TileID, bytes]) -> list[bytes]:
    """Return the hashes of the complete nodes `ids` of the tree of `size` leaves.

    `tiles` maps each tile of tiles_for_nodes(ids, size) (or, for a partial tile, the
    full tile with the same level and index) to its data, which may be longer than the
    tile's width at `size`: only the needed prefix is used.
    """
    out: list[bytes] = []
    for level, index in ids:
        tile = tile_for_node(level, index, size)
        data = _tile_data(tiles, tile)
        below = level % TILE_HEIGHT
        # The node's subtree spans 2**below consecutive hashes of the tile (geometry.node_span,
        # inlined: the sequencer rebuilds its frontier with this in every batch).
        start = ((index << below) - tile.index * TILE_WIDTH) * HASH_SIZE
        stop = start + (HASH_SIZE << below)
        row = [data[i : i + HASH_SIZE] for i in range(start, stop, HASH_SIZE)]
        while len(row) > 1:
            row = [sha256(_NODE + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
        out.append(row[0])
    return out


def expand_tile(data: bytes) -> list[bytes]:
    """Every complete node inside one tile's data: element k holds, concatenated, the
    hashes of the nodes k tree levels above the tile's level, left to right.

    For a tile of n hashes, level k has n >> k nodes (element 0 is `data` itself); the
    node at position p of level k covers the tile's hashes [p << k, (p + 1) << k). A
    full tile expands to 511 hashes, 8 levels above its own (tlog-tiles: "The Merkle
    Tree levels between those expressed by the tile hashes are reconstructed by hashing
    the leaves"). Because tiles only grow by appending, the nodes of a prefix of the
    data are a prefix of each level: an expansion stays correct for any narrower width.
    """
    if type(data) is not bytes or len(data) % HASH_SIZE or len(data) > FULL_TILE_BYTES:
        raise TileDataError(f"tile data: got {len(data) if isinstance(data, bytes) else type(data).__name__} "
                            f"bytes, want a multiple of {HASH_SIZE} up to {FULL_TILE_BYTES}")
    levels = [data]
    row = data
    pair = 2 * HASH_SIZE
    while len(row) >= pair:
        row = b"".join(sha256(_NODE + row[i : i + pair]).digest() for i in range(0, len(row) - len(row) % pair, pair))
        levels.append(row)
    return levels


def root_from_tiles(size: int, tiles: Mapping[TileID, bytes]) -> bytes:
    """Return the root hash of the tree of `size` leaves from its tiles."""
    ids = frontier_ids(size)
    return CompactRange(size, hashes_from_tiles(ids, size, tiles)).root()


def read_hashes_from(size: int, tiles: Mapping[TileID, bytes]) -> Callable[[Sequence[NodeID]], list[bytes]]:
    """Return a read_hashes callable for proof.inclusion_proof/consistency_proof backed by tiles."""

    def read_hashes(ids: Sequence[NodeID]) -> list[bytes]:
        return hashes_from_tiles(ids, size, tiles)

    return read_hashes


def append_to_tiles(
    existing: Mapping[tuple[int, int], bytes], new_nodes: Iterable[tuple[int, int, bytes]]
) -> dict[tuple[int, int], bytes]:
    """Append newly completed nodes (CompactRange visit order) to the hash tiles.

    `existing` maps (tile_level, tile_index) to the current data of the tiles that may be
    touched (absent = empty). Only nodes at tree levels that are multiples of 8 belong to
    tiles: tree level 8L is tile level L. Returns the new data of every touched tile.
    Precondition: each node extends its tile contiguously (its position in the tile equals
    the number of hashes already there); otherwise RuntimeError, as the caller's view of
    the tree is inconsistent.
    """
    touched: dict[tuple[int, int], bytearray] = {}
    for level, index, h in new_nodes:
        if level % TILE_HEIGHT:
            continue
        key = (level // TILE_HEIGHT, index >> TILE_HEIGHT)
        buf = touched.get(key)
        if buf is None:
            buf = touched[key] = bytearray(existing.get(key, b""))
        have = len(buf)
        want = (index % TILE_WIDTH) * HASH_SIZE
        if have != want:
            raise RuntimeError(
                f"tile {key}: node ({level}, {index}) lands at byte {want}, but the tile has {have} bytes"
            )
        if type(h) is not bytes or len(h) != HASH_SIZE:
            raise RuntimeError(f"tile {key}: node ({level}, {index}): got {h!r}, want {HASH_SIZE} bytes")
        buf += h
    return {key: bytes(buf) for key, buf in touched.items()}


# --- entry bundles (tlog-tiles "Log entries") ---------------------------------------------


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Encode 1..256 entries, each prefixed by its big-endian uint16 length."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise InvalidParameterError(f"entry bundle: got {len(entries)} entries, want 1..{TILE_WIDTH}")
    parts: list[bytes] = []
    for i, entry in enumerate(entries):
        if type(entry) is not bytes:
            raise InvalidParameterError(f"entry {i}: got {type(entry).__name__}, want bytes")
        if len(entry) > MAX_ENTRY_SIZE:
            raise InvalidParameterError(f"entry {i}: got {len(entry)} bytes, want <= {MAX_ENTRY_SIZE}")
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(entry)
    return b"".join(parts)


def decode_entry_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """Decode an entry bundle of 1..256 entries (exactly `width` when given), rejecting
    truncated or trailing data."""
    if width is not None and (type(width) is not int or not 1 <= width <= TILE_WIDTH):
        raise InvalidParameterError(f"entry bundle width: got {width!r}, want 1..{TILE_WIDTH}")
    if type(data) is not bytes:
        raise TileDataError(f"entry bundle: got {type(data).__name__}, want bytes")
    limit = TILE_WIDTH if width is None else width
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(entries) == limit:
            raise TileDataError(f"entry bundle: got {end - pos} trailing bytes after {limit} entries, want none")
        if end - pos < 2:
            raise TileDataError(f"entry bundle: entry {len(entries)}: got {end - pos} length bytes, want 2")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if end - pos < n:
            raise TileDataError(f"entry bundle: entry {len(entries)}: got {end - pos} bytes, want {n}")
        entries.append(data[pos : pos + n])
        pos += n
    want = 1 if width is None else width
    if len(entries) < want:
        at_least = "at least " if width is None else ""
        raise TileDataError(f"entry bundle: got {len(entries)} entries, want {at_least}{want}")
    return entries
