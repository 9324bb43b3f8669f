"""Comparing two verified checkpoints of one log: equal, consistent, or a split view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..formats import Ed25519NoteVerifier, FormatError, VerificationError, open_checkpoint
from ..merkle import MerkleError, verify_consistency
from .checkpoints import VerifiedCheckpoint
from .errors import ConsistencyError, SplitViewError
from .evidence import SplitViewEvidence
from .policy import TrustPolicy


@dataclass(frozen=True)
class ConsistencyProof:
    """An RFC 6962 consistency proof from tree size `first` to `second`, and where it
    came from (kept in split-view evidence)."""

    first: int
    second: int
    hashes: tuple[bytes, ...]
    source: str = "supplied"


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def common_log_vkey(policy: TrustPolicy, origin: str, notes: Sequence[str]) -> str | None:
    """The vkey of a policy log key (Ed25519, type 0x01) that signed every note, if any."""
    for log in policy.log_for(origin):
        verifier = log.verifier
        if not isinstance(verifier, Ed25519NoteVerifier):
            continue
        try:
            for note in notes:
                open_checkpoint(note, [verifier])
        except (FormatError, VerificationError):
            continue
        return verifier.vkey
    return None


def _evidence(
    policy: TrustPolicy, a: VerifiedCheckpoint, b: VerifiedCheckpoint, proof: ConsistencyProof | None, reason: str
) -> SplitViewEvidence:
    vkey = common_log_vkey(policy, a.origin, [a.note, b.note])
    if vkey is None:
        # Both checkpoints verified under the policy, but not under one common key (a
        # key rotation): there is no single-key evidence to give.
        raise ConsistencyError(
            f"checkpoints of sizes {a.size} and {b.size} disagree ({reason}), but no single log key signed both"
        )
    return SplitViewEvidence(
        origin=a.origin,
        log_vkey=vkey,
        first=a.note,
        second=b.note,
        proof=None if proof is None else proof.hashes,
        proof_source="" if proof is None else proof.source,
        reason=reason,
        observed_at=utc_now_text(),
    )


def check_consistent(
    policy: TrustPolicy,
    x: VerifiedCheckpoint,
    y: VerifiedCheckpoint,
    proof: ConsistencyProof | None,
) -> str:
    """Check that the smaller of two verified checkpoints of one log is a prefix of the
    larger, using `proof` (from the smaller size to the larger). Returns an account of
    the check.

    Raises `SplitViewError` with evidence when they disagree (same size with different
    roots, or a proof that fails), `ConsistencyError` when the sizes differ and no proof
    for exactly those sizes was given.
    """
    if x.origin != y.origin:
        raise ValueError(f"checkpoints of different logs: {x.origin!r} and {y.origin!r}")
    a, b = (x, y) if x.size <= y.size else (y, x)
    if a.size == b.size:
        if a.root == b.root:
            return f"same tree: size {a.size}, root {a.root.hex()}"
        reason = f"two different roots for tree size {a.size}"
        raise SplitViewError(f"split view: {reason}", _evidence(policy, a, b, None, reason))
    if proof is None or (proof.first, proof.second) != (a.size, b.size):
        raise ConsistencyError(
            f"checkpoint of size {y.size} vs {x.size}: no consistency proof from {a.size} to {b.size}, "
            "want one fetched from the log (--log URL) or supplied"
        )
    try:
        verify_consistency(a.size, b.size, a.root, b.root, list(proof.hashes))
    except MerkleError as exc:
        reason = f"consistency proof from {a.size} to {b.size} fails: {exc}"
        raise SplitViewError(f"split view: {reason}", _evidence(policy, a, b, proof, reason)) from None
    return (f"tree of size {a.size} is a prefix of the tree of size {b.size} "
            f"(proof of {len(proof.hashes)} hashes from {proof.source})")
