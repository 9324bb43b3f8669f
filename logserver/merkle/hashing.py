"""RFC 6962 §2.1 hashing: SHA-256 with domain separation between leaves and nodes."""

from __future__ import annotations

from hashlib import sha256

HASH_SIZE = 32

# RFC 6962 §2.1: "The hash of an empty list is the hash of an empty string".
EMPTY_ROOT: bytes = sha256(b"").digest()

# RFC 6962 §2.1 / §2.1.1 (second-preimage protection): 0x00 prefixes leaves, 0x01 nodes.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Return the Merkle leaf hash of `data`: SHA-256(0x00 || data)."""
    return sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the interior node hash of two child hashes: SHA-256(0x01 || left || right)."""
    return sha256(NODE_PREFIX + left + right).digest()
