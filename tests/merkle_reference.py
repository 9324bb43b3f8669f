"""A deliberately naive RFC 6962 reference, written as literally as §2.1-2.1.2 read.

Only for tests: exponential-looking recursion over lists of leaf data, no caching.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256


def _largest_power_of_two_below(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n]), RFC 6962 §2.1."""
    n = len(d)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return sha256(b"\x00" + d[0]).digest()
    k = _largest_power_of_two_below(n)
    return sha256(b"\x01" + mth(d[0:k]) + mth(d[k:n])).digest()


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 6962 §2.1.1: the audit path of leaf m."""
    n = len(d)
    assert 0 <= m < n
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return [*path(m, d[0:k]), mth(d[k:n])]
    return [*path(m - k, d[k:n]), mth(d[0:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]), RFC 6962 §2.1.2, for 0 < m <= n.

    The RFC defines PROOF only for 0 < m <= n; m == 0 (any tree extends the empty tree)
    is given the empty proof here, as logserver serves it.
    """
    assert 0 <= m <= len(d)
    if m == 0:
        return []
    return subproof(m, d, True)


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 6962 §2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*subproof(m, d[0:k], b), mth(d[k:n])]
    return [*subproof(m - k, d[k:n], False), mth(d[0:k])]


def complete_nodes(d: Sequence[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete node (level, index) of the tree over `d`, hashed with mth()."""
    nodes: dict[tuple[int, int], bytes] = {}
    level = 0
    while (1 << level) <= len(d):
        width = 1 << level
        for index in range(len(d) // width):
            nodes[(level, index)] = mth(d[index * width : (index + 1) * width])
        level += 1
    return nodes


def path_sides(m: int, n: int) -> list[str]:
    """Which side of the running hash each PATH(m, D[n]) element is hashed on, bottom-up
    ("R": MTH(D[k:n]) to the right, "L": MTH(D[0:k]) to the left), per §2.1.1's recursion.

    Two (index, size) pairs with equal sides are indistinguishable to any inclusion
    verifier, since it only ever combines the same hashes in the same way.
    """
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return [*path_sides(m, k), "R"]
    return [*path_sides(m - k, n - k), "L"]


def proof_shape(m: int, n: int) -> list[str]:
    """The role of each PROOF(m, D[n]) element, per §2.1.2's recursion: "S" the seed
    MTH(D[m]) of a sub-tree, "R" a subtree right of the old tree, "L" one inside it, and
    a leading "root1" when the seed is the old root itself (b still true)."""
    return _subproof_shape(m, n, True)


def _subproof_shape(m: int, n: int, b: bool) -> list[str]:
    if m == n:
        return ["root1"] if b else ["S"]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof_shape(m, k, b), "R"]
    return [*_subproof_shape(m - k, n - k, False), "L"]


def leaf_data(i: int) -> bytes:
    """Distinct leaf data for test trees (leaf 0 is the empty string, which RFC 6962 allows)."""
    return b"" if i == 0 else b"leaf %d" % i


def subtree_proof(start: int, end: int, d: Sequence[bytes]) -> list[bytes]:
    """SUBTREE_PROOF(start, end, D_n) of draft-ietf-plants-merkle-tree-certs-03, §4.4.1,
    as literally as it reads: the subtree consistency proof of [start, end) in D_n."""
    if start == end:
        return []
    return _subtree_subproof(start, end, d, True)


def _subtree_subproof(start: int, end: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if start == 0 and end == n:
        return [] if b else [mth(d)]
    k = _largest_power_of_two_below(n)
    if end <= k:
        return [*_subtree_subproof(start, end, d[0:k], b), mth(d[k:n])]
    if k <= start:
        return [*_subtree_subproof(start - k, end - k, d[k:n], b), mth(d[0:k])]
    assert start == 0, "start < k < end implies start == 0 for a valid subtree"
    return [*_subtree_subproof(0, end - k, d[k:n], False), mth(d[0:k])]
