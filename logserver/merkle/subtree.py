"""Subtrees of an RFC 6962 Merkle tree and their consistency proofs
(draft-ietf-plants-merkle-tree-certs-03, section 4: "Subtrees").

A subtree `[start, end)` is the Merkle tree hash of the entries `start` to `end - 1`
taken as a list of their own, `MTH(D[start:end])`. Only intervals aligned with the
big tree qualify (section 4.1), and only those can be proven consistent with it by a
subtree consistency proof (section 4.4). tlog-witness `sign-subtree` and the
ML-DSA-44 `subtree/v1` cosignature (formats/cosignature.py) sign such subtrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from ._checks import check_hash, check_size
from .errors import InvalidParameterError, ProofError
from .hashing import EMPTY_ROOT, HASH_SIZE

_NODE = b"\x01"
_MAX_SUBTREE_PROOF = 2 * 64
"""More hashes than any subtree consistency proof of a uint64 tree can hold (at most one
per level on each of the two paths); a longer proof is refused before any hashing."""


def is_valid_subtree(start: int, end: int) -> bool:
    """Whether `[start, end)` is a subtree (section 4.1, "Definition of a Subtree"):
    `0 <= start <= end` and `start` is a multiple of BIT_CEIL(end - start).

    `[0, x)` is always one (0 is a multiple of everything), and so is the empty `[x, x)`
    (BIT_CEIL(0) is 1). Python integers do not overflow, so the draft's special case for
    sizes above 2^63 is not needed: BIT_CEIL is computed exactly.
    """
    if type(start) is not int or type(end) is not int or start < 0 or start > end:
        return False
    size = end - start
    bit_ceil = 1 if size <= 1 else 1 << (size - 1).bit_length()
    return start % bit_ceil == 0


def verify_subtree_consistency(
    start: int, end: int, size: int, subtree_hash: bytes, root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the subtree `[start, end)` with hash `subtree_hash` is part of the tree
    of `size` entries whose root is `root`, with the proof `proof`.

    Follows section 4.4.3, "Verifying a Subtree Consistency Proof", step by step.
    Raises InvalidParameterError for arguments out of range (not a subtree, end > size,
    hashes that are not 32 bytes) and ProofError when the proof does not verify.
    """
    check_size("start", start)
    check_size("end", end)
    check_size("size", size)
    check_hash("subtree_hash", subtree_hash)
    check_hash("root", root)
    what = f"subtree consistency proof of [{start}, {end}) in a tree of size {size}"
    # Step 1: a valid subtree, end <= n (so 0 <= start <= end <= n).
    if not is_valid_subtree(start, end):
        raise InvalidParameterError(f"subtree: got [{start}, {end}), want start a multiple of BIT_CEIL(end - start)")
    if end > size:
        raise InvalidParameterError(f"subtree end: got {end}, want at most the tree size {size}")
    for i, node in enumerate(proof):
        if not isinstance(node, bytes) or len(node) != HASH_SIZE:
            raise ProofError(f"{what}: hash {i} is not {HASH_SIZE} bytes")
    if len(proof) > _MAX_SUBTREE_PROOF:
        raise ProofError(f"{what}: got {len(proof)} hashes, want at most {_MAX_SUBTREE_PROOF}")
    # Step 2: the empty subtree is part of every tree; its hash is that of the empty list.
    if start == end:
        if proof:
            raise ProofError(f"{what}: got {len(proof)} hashes for an empty subtree, want none")
        if subtree_hash != EMPTY_ROOT:
            raise ProofError(f"{what}: got subtree hash {subtree_hash.hex()}, want the empty tree's")
        return
    # Step 3: fn, sn, tn are the first and last entries of the subtree and the last entry
    # of the tree, moved up one level at a time as the walk climbs.
    fn, sn, tn = start, end - 1, size - 1
    if sn == tn:
        # Step 4: the subtree ends at the tree's right edge; climb to where its first
        # and last entries meet.
        while fn != sn:
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    else:
        # Step 5: climb while the last entry is a right child inside the subtree.
        while fn != sn and sn & 1:
            fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    # Steps 6 and 7: the walk starts from the subtree's hash when the node reached is
    # the subtree's root, else from the first proof hash (a node inside the subtree).
    if fn == sn:
        fr = sr = subtree_hash
        rest = list(proof)
    else:
        if not proof:
            raise ProofError(f"{what}: got no hashes, want at least one")
        fr = sr = proof[0]
        rest = list(proof[1:])
    # Step 8: fr rebuilds the subtree's hash, sr the tree's root.
    for c in rest:
        if tn == 0:
            raise ProofError(f"{what}: got more hashes than the path has levels")
        if sn & 1 or sn == tn:
            # c is a left sibling: inside the subtree while fn < sn, always in the tree.
            if fn < sn:
                fr = sha256(_NODE + c + fr).digest()
            sr = sha256(_NODE + c + sr).digest()
            while not sn & 1:
                fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
        else:
            # c is a right sibling beyond the subtree: only the tree's root includes it.
            sr = sha256(_NODE + sr + c).digest()
        fn, sn, tn = fn >> 1, sn >> 1, tn >> 1
    # Step 9.
    if tn != 0:
        raise ProofError(f"{what}: got {len(proof)} hashes, want more (the path does not reach the root)")
    if fr != subtree_hash:
        raise ProofError(f"{what}: got subtree hash {fr.hex()}, want {subtree_hash.hex()}")
    if sr != root:
        raise ProofError(f"{what}: got root {sr.hex()}, want {root.hex()}")
