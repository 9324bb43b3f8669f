"""Compact range: the right frontier of an append-only RFC 6962 tree.

A tree of `size` leaves is covered by exactly popcount(size) complete subtrees, one per
set bit of `size`, largest (leftmost) first. Keeping only their hashes is enough to
append leaves and to compute the root (RFC 6962 §2.1: MTH splits at the largest power
of two smaller than n, so the root is the right-to-left fold of those subtrees).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from hashlib import sha256

from ._checks import MAX_TREE_SIZE, check_hash, check_size
from .errors import InvalidParameterError
from .hashing import EMPTY_ROOT, HASH_SIZE

NodeID = tuple[int, int]
"""(level, index): the node whose subtree covers leaves [index << level, (index + 1) << level)."""

Visitor = Callable[[int, int, bytes], None]
"""visit(level, index, hash), called for every node that becomes complete."""

_SIZE_BYTES = 8
_NODE = b"\x01"


def frontier_ids(size: int) -> list[NodeID]:
    """Return the complete nodes covering leaves [0, size), left to right (largest first)."""
    check_size("size", size)
    ids: list[NodeID] = []
    begin = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ids.append((level, begin >> level))
            begin += 1 << level
    return ids


class CompactRange:
    """The right frontier of a tree of `size` leaves, in O(log size) memory.

    `hashes` are the hashes of `frontier_ids(size)`, in that order.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        check_size("size", size)
        hashes = list(hashes)
        want = size.bit_count()
        if len(hashes) != want:
            raise InvalidParameterError(
                f"compact range of size {size}: got {len(hashes)} hashes, want {want}"
            )
        for i, h in enumerate(hashes):
            check_hash(f"compact range hash {i}", h)
        self._size = size
        self._hashes = hashes

    @property
    def size(self) -> int:
        """Number of leaves in the tree."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of the frontier nodes, left to right."""
        return tuple(self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"

    def copy(self) -> CompactRange:
        """Return an independent copy (appending to it leaves self unchanged)."""
        clone = CompactRange.__new__(CompactRange)
        clone._size = self._size
        clone._hashes = list(self._hashes)
        return clone

    def append(self, leaf_hash: bytes, visit: Visitor | None = None) -> None:
        """Append one leaf hash; `visit` sees the leaf and every node it completes, bottom-up."""
        self.extend((leaf_hash,), visit)

    def extend(self, leaf_hashes: Iterable[bytes], visit: Visitor | None = None) -> None:
        """Append leaf hashes in order; `visit` sees every completed node, bottom-up per leaf.

        If a leaf hash is invalid or `visit` raises, the range keeps exactly the leaves
        appended before that leaf.
        """
        hashes = self._hashes
        size = self._size
        try:
            for h in leaf_hashes:
                if type(h) is not bytes or len(h) != HASH_SIZE:
                    check_hash(f"leaf hash {size}", h)
                if size == MAX_TREE_SIZE:
                    raise InvalidParameterError(f"tree is full: got size {size}, want < 2**64-1")
                if visit is not None:
                    visit(0, size, h)
                # Each trailing 1 bit of `size` is a frontier node that the new leaf's
                # subtree completes: merge it, moving one level up.
                # The frontier is only mutated once the visitor has seen every node, so an
                # exception from `visit` leaves a consistent range.
                index = size
                level = 0
                top = len(hashes)
                while index & 1:
                    top -= 1
                    h = sha256(_NODE + hashes[top] + h).digest()
                    index >>= 1
                    level += 1
                    if visit is not None:
                        visit(level, index, h)
                del hashes[top:]
                hashes.append(h)
                size += 1
        finally:
            self._size = size

    def root(self) -> bytes:
        """Return the RFC 6962 Merkle Tree Hash of the tree (EMPTY_ROOT for size 0)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        root = hashes[-1]
        for h in reversed(hashes[:-1]):
            root = sha256(_NODE + h + root).digest()
        return root

    def to_bytes(self) -> bytes:
        """Serialize as an 8-byte big-endian size followed by the frontier hashes."""
        return self._size.to_bytes(_SIZE_BYTES, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Parse the output of to_bytes(), rejecting any other length or layout."""
        if not isinstance(data, bytes):
            raise InvalidParameterError(f"compact range: got {type(data).__name__}, want bytes")
        if len(data) < _SIZE_BYTES:
            raise InvalidParameterError(
                f"compact range: got {len(data)} bytes, want at least {_SIZE_BYTES}"
            )
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        want = _SIZE_BYTES + HASH_SIZE * size.bit_count()
        if len(data) != want:
            raise InvalidParameterError(
                f"compact range of size {size}: got {len(data)} bytes, want {want}"
            )
        hashes = [data[i : i + HASH_SIZE] for i in range(_SIZE_BYTES, want, HASH_SIZE)]
        return cls(size, hashes)
