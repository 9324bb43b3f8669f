"""RFC 6962 proof verification (RFC 9162 §2.1.3.2 / §2.1.4.2 describe the same checks).

The length of a valid proof is fully determined by the sizes, so any other length is
rejected before hashing. Functions raise; they never return False.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from ._checks import check_hash, check_size
from .errors import InvalidParameterError, ProofError
from .hashing import EMPTY_ROOT, HASH_SIZE

_NODE = b"\x01"


def _check_proof(proof: Sequence[bytes], want: int, what: str) -> None:
    if len(proof) != want:
        raise ProofError(f"{what}: got {len(proof)} hashes, want {want}")
    for i, h in enumerate(proof):
        if type(h) is not bytes or len(h) != HASH_SIZE:
            got = f"{len(h)} bytes" if isinstance(h, (bytes, bytearray)) else type(h).__name__
            raise ProofError(f"{what}: hash {i}: got {got}, want {HASH_SIZE} bytes")


def _path_shape(index: int, size: int) -> tuple[int, int]:
    """Return (inner, border) for the audit path of `index` in a tree of `size`:
    `inner` siblings below the level where the path meets the last leaf's path (their
    side given by the bits of index), then `border` left siblings above it."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def root_from_inclusion_proof(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the root implied by an inclusion proof of `leaf_hash` at `index` in a tree of `size`."""
    check_size("index", index)
    check_size("size", size)
    if index >= size:
        raise InvalidParameterError(f"index: got {index}, want < tree size {size}")
    check_hash("leaf hash", leaf_hash)
    inner, border = _path_shape(index, size)
    _check_proof(proof, inner + border, f"inclusion proof for index {index} in tree of size {size}")
    h = leaf_hash
    for i in range(inner):
        h = sha256(_NODE + proof[i] + h).digest() if index >> i & 1 else sha256(_NODE + h + proof[i]).digest()
    for i in range(inner, inner + border):
        h = sha256(_NODE + proof[i] + h).digest()
    return h


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with hash `root`."""
    check_hash("root", root)
    got = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if got != root:
        raise ProofError(f"inclusion proof: got root {got.hex()}, want {root.hex()}")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of `size1` leaves with hash `root1` is a prefix of the tree of
    `size2` leaves with hash `root2`."""
    check_size("size1", size1)
    check_size("size2", size2)
    if size1 > size2:
        raise InvalidParameterError(f"size1: got {size1}, want <= size2 {size2}")
    check_hash("root1", root1)
    check_hash("root2", root2)
    what = f"consistency proof from size {size1} to {size2}"
    if size1 == 0 or size1 == size2:
        # RFC 6962 §2.1.2: PROOF(m, D[m]) is empty; every tree extends the empty tree,
        # whose hash is fixed (§2.1: MTH({}) = SHA-256()).
        _check_proof(proof, 0, what)
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ProofError(f"{what}: got root1 {root1.hex()}, want empty tree root {EMPTY_ROOT.hex()}")
        if size1 == size2 and root1 != root2:
            raise ProofError(f"{what}: got root2 {root2.hex()}, want root1 {root1.hex()}")
        return
    # The proof starts at the last frontier node of the old tree, node (level, index),
    # then walks its audit path in the new tree (see proof.consistency_plan). When the old
    # tree is a power of two that node is root1 itself and is not sent.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 >> level) - 1
    inner, border = _path_shape(index, ((size2 - 1) >> level) + 1)
    seeded = index != 0
    _check_proof(proof, int(seeded) + inner + border, what)
    if seeded:
        h1 = h2 = proof[0]
        rest = proof[1:]
    else:
        h1 = h2 = root1
        rest = proof
    for i in range(inner):
        if index >> i & 1:
            # A left sibling lies inside the old tree: both roots include it.
            h1 = sha256(_NODE + rest[i] + h1).digest()
            h2 = sha256(_NODE + rest[i] + h2).digest()
        else:
            # A right sibling lies beyond size1: only the new root includes it.
            h2 = sha256(_NODE + h2 + rest[i]).digest()
    for i in range(inner, inner + border):
        h1 = sha256(_NODE + rest[i] + h1).digest()
        h2 = sha256(_NODE + rest[i] + h2).digest()
    if h1 != root1:
        raise ProofError(f"{what}: got root1 {h1.hex()}, want {root1.hex()}")
    if h2 != root2:
        raise ProofError(f"{what}: got root2 {h2.hex()}, want {root2.hex()}")
