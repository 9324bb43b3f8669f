"""Argument validation shared by the merkle modules (raises InvalidParameterError)."""

from __future__ import annotations

from .errors import InvalidParameterError
from .hashing import HASH_SIZE

# Tree sizes are uint64 on the wire (tlog-checkpoint, RFC 6962 TreeHeadSignature).
MAX_TREE_SIZE = 2**64 - 1


def check_size(name: str, value: int) -> None:
    """Reject a tree size or index that is not an int in [0, 2**64 - 1]."""
    if type(value) is not int:
        raise InvalidParameterError(f"{name}: got {type(value).__name__}, want int")
    if value < 0 or value > MAX_TREE_SIZE:
        raise InvalidParameterError(f"{name}: got {value}, want 0 <= {name} <= 2**64-1")


def check_hash(name: str, value: bytes) -> None:
    """Reject a value that is not a 32-byte bytes object."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise InvalidParameterError(f"{name}: got {got}, want {HASH_SIZE} bytes")
