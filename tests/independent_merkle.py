"""An independent RFC 6962 / C2SP tlog-tiles checker for the server tests.

Written from the spec text only, deliberately without importing logserver.merkle,
so a bug shared by the server's prover and its own verifier cannot hide.

RFC 6962 §2.1: MTH({}) = SHA-256(), MTH({d0}) = SHA-256(0x00 || d0), and for n > 1,
with k the largest power of two smaller than n,
MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
The verifiers below invert the recursive definitions of PATH (§2.1.1) and PROOF /
SUBPROOF (§2.1.2) step by step: each proof element is consumed from the end, where
the definition appends it, so the proof length is checked exactly as well.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

TILE_HEIGHT = 8
TILE_WIDTH = 256


class CheckError(AssertionError):
    """A proof, tile or root did not check out; the message says got/want."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """k: the largest power of two smaller than n (n >= 2)."""
    assert n >= 2, n
    return 1 << ((n - 1).bit_length() - 1)


def mth(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (RFC 6962 §2.1)."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = split(len(hashes))
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root implied by PATH(index, D[size]) (RFC 6962 §2.1.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])     for m < k
                  = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k
    and PATH(0, {d0}) = {}.
    """
    if not 0 <= index < size:
        raise CheckError(f"inclusion: index {index} not in [0, {size})")
    if size == 1:
        if path:
            raise CheckError(f"inclusion: {len(path)} proof hashes left over, want 0")
        return leaf
    if not path:
        raise CheckError(f"inclusion: proof too short for index {index} in a tree of {size}")
    k, sibling, rest = split(size), path[-1], path[:-1]
    if index < k:
        return node_hash(root_from_inclusion(index, k, leaf, rest), sibling)
    return node_hash(sibling, root_from_inclusion(index - k, size - k, leaf, rest))


def check_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    got = root_from_inclusion(index, size, leaf, path)
    if got != root:
        raise CheckError(f"inclusion of {index} in {size}: root got {got.hex()}, want {root.hex()}")


def check_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check PROOF(size1, D[size2]) (RFC 6962 §2.1.2) links root1 to root2.

    SUBPROOF(m, D[m], true) = {}, SUBPROOF(m, D[m], false) = {MTH(D[m])},
    SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])        for m <= k
                         = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) for m > k.
    A size1 of 0 or size2 has the empty proof (nothing to link).
    """
    if not 0 <= size1 <= size2:
        raise CheckError(f"consistency: sizes {size1} -> {size2} go backwards")
    if size1 == 0 or size1 == size2:
        if proof:
            raise CheckError(f"consistency {size1} -> {size2}: got {len(proof)} hashes, want 0")
        if size1 == size2 and root1 != root2:
            raise CheckError(f"consistency at equal size {size1}: roots differ {root1.hex()} != {root2.hex()}")
        return

    def sub(m: int, n: int, whole_old_tree: bool, p: Sequence[bytes]) -> tuple[bytes, bytes]:
        # Returns (MTH of the first m leaves of this subtree, MTH of the subtree).
        if m == n:
            if whole_old_tree:
                if p:
                    raise CheckError(f"consistency {size1} -> {size2}: {len(p)} proof hashes left over")
                return root1, root1
            if len(p) != 1:
                raise CheckError(f"consistency {size1} -> {size2}: got {len(p)} hashes at the old "
                                 "subtree's root, want 1")
            return p[0], p[0]
        if not p:
            raise CheckError(f"consistency {size1} -> {size2}: proof too short")
        k, sibling, rest = split(n), p[-1], p[:-1]
        if m <= k:
            old, new_left = sub(m, k, whole_old_tree, rest)
            return old, node_hash(new_left, sibling)
        old_right, new_right = sub(m - k, n - k, False, rest)
        return node_hash(sibling, old_right), node_hash(sibling, new_right)

    old, new = sub(size1, size2, True, proof)
    if old != root1:
        raise CheckError(f"consistency {size1} -> {size2}: old root got {old.hex()}, want {root1.hex()}")
    if new != root2:
        raise CheckError(f"consistency {size1} -> {size2}: new root got {new.hex()}, want {root2.hex()}")


# --- C2SP tlog-tiles ----------------------------------------------------------------------


def encode_tile_index(n: int) -> str:
    """tlog-tiles: <N> as zero-padded 3-digit path elements, all but the last prefixed "x"."""
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def tile_url_path(level: int | str, index: int, width: int) -> str:
    """`tile/<L>/<N>[.p/<W>]`, or `tile/entries/<N>[.p/<W>]` when level is "entries"."""
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_tile_index(index)}{suffix}"


def tiles_implied(size: int) -> list[tuple[int, int, int]]:
    """(level, index, width) of every hash tile a tree of `size` has.

    tlog-tiles: level l holds floor(size / 256**l) hashes; full tiles are 256 wide, the
    partial one at level l has floor(size / 256**l) mod 256 entries, empty tiles do
    not exist.
    """
    out = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        out += [(level, i, TILE_WIDTH) for i in range(count // TILE_WIDTH)]
        if count % TILE_WIDTH:
            out.append((level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return out


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """tlog-tiles: big-endian uint16 length-prefixed entries."""
    entries, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise CheckError(f"entry bundle: truncated length prefix at byte {pos}")
        n = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 + n > len(data):
            raise CheckError(f"entry bundle: entry at byte {pos} claims {n} bytes, {len(data) - pos - 2} left")
        entries.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    return entries


def tile_hash(tiles: Mapping[tuple[int, int], bytes], level: int, node: int) -> bytes:
    """Hash `node` of tree level 8*level, read from the tile that holds it."""
    data = tiles.get((level, node // TILE_WIDTH))
    pos = node % TILE_WIDTH
    if data is None or len(data) < 32 * (pos + 1):
        raise CheckError(f"tile {level}/{node // TILE_WIDTH} lacks hash {pos}")
    return data[32 * pos:32 * (pos + 1)]


def root_from_tiles(size: int, tiles: Mapping[tuple[int, int], bytes]) -> bytes:
    """MTH(D[0:size]) from tile hashes, following the §2.1 recursion.

    Every power-of-two range the recursion meets is aligned; one of height 8*l is a
    single hash of a level-l tile ("a tile represents the entire subtree of height 8").
    """
    def mth_range(start: int, end: int) -> bytes:
        n = end - start
        height = n.bit_length() - 1
        if n == 1 << height and height % TILE_HEIGHT == 0:
            return tile_hash(tiles, height // TILE_HEIGHT, start >> height)
        k = split(n)
        return node_hash(mth_range(start, start + k), mth_range(start + k, end))

    if size == 0:
        return mth([])
    return mth_range(0, size)


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The root over a power-of-two run of same-level node hashes (a full tile)."""
    assert len(hashes) & (len(hashes) - 1) == 0 and hashes
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def split_hashes(data: bytes) -> list[bytes]:
    if len(data) % 32:
        raise CheckError(f"tile data: got {len(data)} bytes, want a multiple of 32")
    return [data[i:i + 32] for i in range(0, len(data), 32)]
