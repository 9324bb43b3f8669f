"""Which stored nodes make up an RFC 6962 proof, and how to assemble it (RFC 6962 §2.1.1-2.1.2).

Every hash of an inclusion or consistency proof is the Merkle Tree Hash of some subtree
D[a:b] of the RFC 6962 tree. All of them are complete power-of-two nodes except at most
one: the right sibling on the path to the root can be an *ephemeral* node covering the
ragged right edge [a, size). Its hash is the right-to-left fold of the complete nodes
covering [a, size), largest first. A `NodePlan` lists the complete nodes to read and the
run of them to fold, so storage only ever serves complete nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256

from ._checks import check_size
from .compact import NodeID
from .errors import InvalidParameterError
from .hashing import HASH_SIZE

ReadHashes = Callable[[Sequence[NodeID]], list[bytes]]
"""read_hashes(ids) -> the hashes of those complete nodes, in the same order."""

_NODE = b"\x01"


@dataclass(frozen=True, slots=True)
class NodePlan:
    """The complete nodes to read for a proof.

    `ids[fold_begin:fold_end]` (left to right, decreasing sizes) are folded right-to-left
    into a single ephemeral node that takes their place in the proof; when the run holds
    fewer than two ids there is nothing to fold and the proof is the read hashes as is.
    """

    ids: tuple[NodeID, ...]
    fold_begin: int = 0
    fold_end: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fold_begin <= self.fold_end <= len(self.ids):
            raise RuntimeError(f"bad fold run [{self.fold_begin}, {self.fold_end}) of {len(self.ids)} ids")

    @property
    def proof_size(self) -> int:
        """Number of hashes in the assembled proof."""
        return len(self.ids) - max(0, self.fold_end - self.fold_begin - 1)


_EMPTY_PLAN = NodePlan(())


def _node_path_plan(level: int, index: int, size: int) -> NodePlan:
    """Plan the audit path (bottom-up siblings, RFC 6962 PATH order) of the complete node
    (level, index) in a tree of `size` leaves."""
    first = index << level
    # `fork` is the lowest level at which the node's ancestor also covers the last leaf.
    # Below it every ancestor and sibling is complete; at fork - 1 the node's ancestor is
    # a left child whose right sibling [right_start, size) may be ephemeral.
    fork = (first ^ (size - 1)).bit_length()
    ids: list[NodeID] = []
    fold_begin = fold_end = 0
    top = level
    if fork > level:
        for lvl in range(level, fork - 1):
            ids.append((lvl, (first >> lvl) ^ 1))
        fold_begin = len(ids)
        right_start = ((first >> (fork - 1)) + 1) << (fork - 1)
        span = size - right_start
        for lvl in range(span.bit_length() - 1, -1, -1):
            if span >> lvl & 1:
                ids.append((lvl, right_start >> lvl))
                right_start += 1 << lvl
        fold_end = len(ids)
        top = fork
    # Above `fork` the ancestors end at `size`; each that is a right child has a complete
    # left sibling (RFC 6962 PATH case m >= k).
    for lvl in range(top, first.bit_length()):
        if first >> lvl & 1:
            ids.append((lvl, (first >> lvl) ^ 1))
    return NodePlan(tuple(ids), fold_begin, fold_end)


def _check_complete_node(level: int, index: int, size: int) -> None:
    check_size("size", size)
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise InvalidParameterError(f"node ({level}, {index}): want a complete node of a tree of size {size}")


def path_split(level: int, index: int, size: int) -> tuple[int, bool]:
    """Where the audit path of the complete node (level, index) at `size` stops depending
    on the node: returns (low, folds).

    The path's first `low - level` hashes are the complete siblings (lvl, (index << level
    >> lvl) ^ 1) for lvl in [level, low), bottom-up: the only ones that depend on the node.
    The rest (the ephemeral right sibling at level `low` when `folds`, then the complete
    left siblings above) is the same for every node with the same (size, low, folds). A
    tree has at most 2 * bit_length(size) such tails, so a reader can compute each once per
    tree size and join it to the siblings (tree_reader.TreeReader._audit_path).

    Why: `fork` is the lowest level at which the node's ancestor covers leaf size-1, so
    above it the ancestor's bits are those of size-1. The ephemeral sibling at fork-1
    starts where size-1's ancestor at fork-1 starts and ends at size, and each left
    sibling above is size-1's too. When the node itself ends at `size` nothing folds and
    every level from `level` up is above the fork.
    """
    _check_complete_node(level, index, size)
    fork = ((index << level) ^ (size - 1)).bit_length()
    return (fork - 1, True) if fork > level else (level, False)


def path_plan(level: int, index: int, size: int) -> NodePlan:
    """Plan the audit path of the complete node (level, index) in a tree of `size`."""
    _check_complete_node(level, index, size)
    return _node_path_plan(level, index, size)


def inclusion_plan(index: int, size: int) -> NodePlan:
    """Plan the inclusion proof (RFC 6962 §2.1.1 PATH(index, D[size])) of leaf `index`."""
    check_size("index", index)
    check_size("size", size)
    if index >= size:
        raise InvalidParameterError(f"index: got {index}, want < tree size {size}")
    return _node_path_plan(0, index, size)


def consistency_node(size1: int, size2: int) -> NodeID | None:
    """The node whose audit path at size2 is the consistency proof from size1 (RFC 6962
    §2.1.2), or None when the proof is empty (size1 == 0 or size1 == size2).

    SUBPROOF descends the ancestors of leaf size1-1 and stops at the first node that ends
    exactly at size1: the largest complete node ending there, i.e. the last node of size1's
    frontier. The proof is that node's hash, unless it is the whole old tree (index 0: b
    is still true, size1 is a power of two), followed by the node's audit path.
    """
    check_size("size1", size1)
    check_size("size2", size2)
    if size1 > size2:
        raise InvalidParameterError(f"size1: got {size1}, want <= size2 {size2}")
    if size1 == 0 or size1 == size2:
        return None
    level = (size1 & -size1).bit_length() - 1
    return level, (size1 >> level) - 1


def consistency_plan(size1: int, size2: int) -> NodePlan:
    """Plan the consistency proof (RFC 6962 §2.1.2 PROOF(size1, D[size2])).

    The proof is empty when size1 == 0 or size1 == size2.
    """
    node = consistency_node(size1, size2)
    if node is None:
        return _EMPTY_PLAN
    level, index = node
    path = _node_path_plan(level, index, size2)
    if index == 0:
        return path
    return NodePlan(((level, index), *path.ids), path.fold_begin + 1, path.fold_end + 1)


def rehash(plan: NodePlan, hashes: Sequence[bytes]) -> list[bytes]:
    """Turn the hashes read for `plan.ids` into the proof by folding the ephemeral run."""
    if len(hashes) != len(plan.ids):
        raise RuntimeError(f"rehash: got {len(hashes)} hashes, want {len(plan.ids)}")
    begin, end = plan.fold_begin, plan.fold_end
    if end - begin < 2:
        return list(hashes)
    acc = hashes[end - 1]
    for i in range(end - 2, begin - 1, -1):
        acc = sha256(_NODE + hashes[i] + acc).digest()
    return [*hashes[:begin], acc, *hashes[end:]]


def _read(plan: NodePlan, read_hashes: ReadHashes) -> list[bytes]:
    if not plan.ids:
        return []
    hashes = read_hashes(plan.ids)
    if len(hashes) != len(plan.ids):
        raise RuntimeError(f"read_hashes: got {len(hashes)} hashes, want {len(plan.ids)}")
    for node_id, h in zip(plan.ids, hashes, strict=True):  # the lengths were checked equal above
        if type(h) is not bytes or len(h) != HASH_SIZE:
            raise RuntimeError(f"read_hashes: node {node_id}: got {h!r}, want {HASH_SIZE} bytes")
    return rehash(plan, hashes)


def inclusion_proof(index: int, size: int, read_hashes: ReadHashes) -> list[bytes]:
    """Return the inclusion proof of leaf `index` in the tree of `size` leaves."""
    return _read(inclusion_plan(index, size), read_hashes)


def consistency_proof(size1: int, size2: int, read_hashes: ReadHashes) -> list[bytes]:
    """Return the consistency proof between the trees of `size1` and `size2` leaves."""
    return _read(consistency_plan(size1, size2), read_hashes)
