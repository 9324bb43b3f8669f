"""What a witness does with an authenticated add-checkpoint or sign-subtree request
(C2SP tlog-witness), decided from its stored state alone. Pure: for add-checkpoint the
caller holds the state's row lock while deciding and recording the outcome;
sign-subtree only reads (stale state is safe: "the stateful verification mechanisms
above only require read access to the witness state and can operate on stale state").
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
    """422: the consistency proof from the stored checkpoint does not verify, or the
    checkpoint is of an empty tree with another root. `evidence` is set when the
    log-signed checkpoint itself contradicts what the witness holds (kept as evidence),
    not when only the request's proof is malformed."""

    detail: str
    evidence: bool = True


Decision = Cosign | Conflict | BadProof


def decide(stored_size: int, stored_root: bytes | None, old_size: int, checkpoint: Checkpoint,
           proof: Sequence[bytes]) -> Decision:
    """The outcome of a request with `old_size` and `proof` for `checkpoint`, given the
    latest cosigned size and root (root None: never cosigned, size 0).

    The request parser has already enforced old size <= checkpoint size (400).
    """
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        # tlog-witness: "A checkpoint of size zero MUST have the root hash of the empty
        # tree, which RFC 6962, Section 2.1 defines as the hash of the empty string.
        # Otherwise, the witness MUST respond with a 422". Checked first, whatever the
        # stored state: the log signed a tree that cannot exist.
        return BadProof(f"root of the empty tree: got {checkpoint.root.hex()}, want {EMPTY_ROOT.hex()}")
    if old_size != stored_size:
        # "The witness MUST check that the old size matches the size of the latest
        # checkpoint it cosigned ... (or zero if it never cosigned ...)". This is also
        # what refuses every checkpoint smaller than the stored one: its old size
        # would have to exceed its own size.
        return Conflict(stored_size, f"old size: got {old_size}, want the latest cosigned size {stored_size}")
    if old_size == 0 and proof:
        # "The proof MUST be empty if the old size is zero": any hash is a proof that
        # does not verify (422). The checkpoint may be fine, so it is not evidence.
        return BadProof(f"consistency proof: got {len(proof)} hashes for old size 0, want none", evidence=False)
    if old_size == checkpoint.size:
        want = stored_root if stored_root is not None else EMPTY_ROOT
        if checkpoint.root != want:
            assert stored_root is not None, "an empty tree with another root returned 422 above"
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


@dataclass(frozen=True)
class KnownCheckpoint:
    """sign-subtree may go on: the reference checkpoint is one this witness cosigned."""


@dataclass(frozen=True)
class UnknownCheckpoint:
    """sign-subtree 409: "If the checkpoint is not known, the witness MAY respond with a
    409 Conflict HTTP status code, and the response body MUST consist of a known
    checkpoint for the same origin" (`note`, the latest cosigned one)."""

    note: str
    detail: str


@dataclass(frozen=True)
class NothingCosigned:
    """sign-subtree 403: no cosignature of this witness on the reference checkpoint, and
    no cosigned checkpoint of the log to compare it with or to offer instead."""

    detail: str


ReferenceDecision = KnownCheckpoint | UnknownCheckpoint | NothingCosigned


def check_reference(cosigned_by_witness: bool, stored_size: int, stored_root: bytes | None,
                    stored_note: str | None, reference: Checkpoint) -> ReferenceDecision:
    """Whether the sign-subtree reference checkpoint is consistent with the witness's view
    (tlog-witness "sign-subtree"), in the two ways this witness can tell:

    * statelessly, by a verified cosignature of the witness's own key on it (the caller
      verified it: `cosigned_by_witness`);
    * statefully, when it is the latest checkpoint the witness cosigned (same size and
      root), which lets a client omit the signatures altogether.

    The witness keeps only the latest checkpoint of each log, so an older one without
    its cosignature gets the 409 with the latest, which the client can resend.
    """
    if cosigned_by_witness:
        return KnownCheckpoint()
    if stored_root is None or stored_note is None:
        return NothingCosigned(f"reference checkpoint of {reference.origin!r}: got no cosignature of this "
                               "witness, and it has cosigned no checkpoint of this log")
    if (reference.size, reference.root) == (stored_size, stored_root):
        return KnownCheckpoint()
    return UnknownCheckpoint(stored_note, f"reference checkpoint: got size {reference.size} root "
                             f"{reference.root.hex()} without a cosignature of this witness, want one it cosigned "
                             f"(latest: size {stored_size})")
