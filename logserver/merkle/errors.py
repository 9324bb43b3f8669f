"""Typed errors of the Merkle tree layer."""

from __future__ import annotations


class MerkleError(Exception):
    """Base class of every error raised by logserver.merkle on bad input."""


class InvalidParameterError(MerkleError, ValueError):
    """A caller error: index >= size, size1 > size2, a negative value, a hash that is
    not 32 bytes, malformed serialized state, a missing tile... (HTTP 400)."""


class ProofError(MerkleError):
    """A proof does not verify: wrong length, malformed proof hash, root mismatch."""


class TilePathError(MerkleError, ValueError):
    """A C2SP tlog-tiles resource path that is not in canonical form."""


class TileDataError(MerkleError, ValueError):
    """Tile contents or an entry bundle that is malformed (truncated, trailing data,
    wrong width...)."""
