"""What a witness does with an authenticated add-checkpoint request (C2SP
tlog-witness, "add-checkpoint"), decided from its stored state alone. Pure: the
caller holds the state's row lock while deciding and recording the outcome.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..formats import Checkpoint
from ..merkle import EMPTY_ROOT, MerkleError, verify_consistency


@dataclass(frozen=True)
class Cosign:
    """The checkpoint extends the stored one: record it, then cosign it."""


@dataclass(frozen=True)
class Conflict:
    """409: the old size is not the stored size, or the stored size has another root.
    `size` is the stored size (the text/x.tlog.size body); `evidence` is set when the
    request contradicts a cosigned checkpoint (a fork), not when it is merely stale."""

    size: int
    detail: str
    evidence: bool = False


@dataclass(frozen=True)
class BadProof:
    """422: the consistency proof from the stored checkpoint does not verify."""

    detail: str


Decision = Cosign | Conflict | BadProof


def decide(stored_size: int, stored_root: bytes | None, old_size: int, checkpoint: Checkpoint,
           proof: Sequence[bytes]) -> Decision:
    """The outcome of a request with `old_size` and `proof` for `checkpoint`, given the
    latest cosigned size and root (root None: never cosigned, size 0).

    The request parser has already enforced old size <= checkpoint size (400) and an
    empty proof for old size 0.
    """
    if old_size != stored_size:
        # "The witness MUST check that the old size matches the size of the latest
        # checkpoint it cosigned ... (or zero if it never cosigned ...)". This is also
        # what refuses every checkpoint smaller than the stored one: its old size
        # would have to exceed its own size.
        return Conflict(stored_size, f"old size: got {old_size}, want the latest cosigned size {stored_size}")
    if old_size == checkpoint.size:
        want = stored_root if stored_root is not None else EMPTY_ROOT
        if checkpoint.root != want:
            if stored_root is None:
                # Size 0 never cosigned: the only root an empty tree can have.
                return BadProof(f"root of the empty tree: got {checkpoint.root.hex()}, want {EMPTY_ROOT.hex()}")
            # "If the old size matches the checkpoint size, the witness MUST check that
            # the root hashes are also identical. If they don't match ... 409 Conflict".
            return Conflict(stored_size, f"root at size {stored_size}: got {checkpoint.root.hex()}, "
                                         f"want the cosigned {stored_root.hex()}", evidence=True)
        return Cosign()
    if old_size == 0:
        return Cosign()  # every tree extends the empty one; the proof is empty (checked by the parser)
    assert stored_root is not None, "a positive stored size always has a root (schema CHECK)"
    try:
        verify_consistency(old_size, checkpoint.size, stored_root, checkpoint.root, list(proof))
    except MerkleError as exc:
        return BadProof(f"consistency proof from size {old_size} to {checkpoint.size}: {exc}")
    return Cosign()
