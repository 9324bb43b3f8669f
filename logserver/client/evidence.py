"""Split-view evidence: two checkpoints signed by one log that cannot both describe
one append-only tree, in a form anyone can re-check without trusting the log.

The evidence holds both signed checkpoint notes, the log's verifier key and, when the
sizes differ, the consistency proof that failed. Re-checking (`verify_evidence`)
needs nothing else:

* same size, different roots: conclusive. An append-only log has one root per size
  (RFC 6962 §2.1: the tree hash is a function of the entries), so the log signed two
  different trees.
* different sizes: both signatures verify and the proof does not. RFC 6962 §2.1.2
  consistency proofs are unique for a pair of sizes, so if the smaller tree were a
  prefix of the larger, the log could produce the one proof that verifies; the
  evidence stands until someone shows it (`verify_evidence(..., fresh_proof=...)`).

JSON form (`to_json`), `type` = EVIDENCE_TYPE:

    {"type", "origin", "log_vkey", "checkpoints": [note_a, note_b],
     "consistency_proof": [hex, ...] | null, "proof_source", "reason", "observed_at"}

`checkpoints` is ordered by tree size (the smaller first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..formats import Ed25519NoteVerifier, FormatError, VerificationError, open_checkpoint
from ..formats.strict import hex_hash, strict_json
from ..merkle import MerkleError, verify_consistency
from .policy import TrustPolicy

EVIDENCE_TYPE = "logserver/split-view-evidence@v1"
_FIELDS = frozenset(
    {"type", "origin", "log_vkey", "checkpoints", "consistency_proof", "proof_source", "reason", "observed_at"}
)


class EvidenceError(ValueError):
    """The evidence does not show a split view (malformed, bad signatures, untrusted
    key, consistent checkpoints, or a fresh proof refutes it)."""


@dataclass(frozen=True)
class SplitViewEvidence:
    """Two signed checkpoints of one log and the consistency proof that failed between
    them (`proof` is None when the sizes are equal)."""

    origin: str
    log_vkey: str
    first: str
    second: str
    proof: tuple[bytes, ...] | None
    proof_source: str
    reason: str
    observed_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": EVIDENCE_TYPE,
            "origin": self.origin,
            "log_vkey": self.log_vkey,
            "checkpoints": [self.first, self.second],
            "consistency_proof": None if self.proof is None else [h.hex() for h in self.proof],
            "proof_source": self.proof_source,
            "reason": self.reason,
            "observed_at": self.observed_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, obj: object) -> SplitViewEvidence:
        """Parse the JSON form; raises `EvidenceError`."""
        if not isinstance(obj, Mapping) or set(obj) != _FIELDS or obj.get("type") != EVIDENCE_TYPE:
            raise EvidenceError(f"evidence: want a JSON object of type {EVIDENCE_TYPE!r} with fields {sorted(_FIELDS)}")
        for name in ("origin", "log_vkey", "proof_source", "reason", "observed_at"):
            if not isinstance(obj[name], str):
                raise EvidenceError(f"evidence {name}: want a string")
        notes = obj["checkpoints"]
        if not isinstance(notes, list) or len(notes) != 2 or not all(isinstance(n, str) for n in notes):
            raise EvidenceError("evidence checkpoints: want a list of two signed checkpoint notes")
        raw_proof = obj["consistency_proof"]
        proof = None
        if raw_proof is not None:
            if not isinstance(raw_proof, list) or len(raw_proof) > 128:
                raise EvidenceError("evidence consistency_proof: want null or a list of hex hashes")
            proof = tuple(
                hex_hash(h, f"evidence consistency_proof[{i}]", EvidenceError) for i, h in enumerate(raw_proof))
        return cls(obj["origin"], obj["log_vkey"], notes[0], notes[1], proof,
                   obj["proof_source"], obj["reason"], obj["observed_at"])

    @classmethod
    def from_json(cls, data: bytes | str) -> SplitViewEvidence:
        return cls.from_dict(strict_json(data, "evidence", EvidenceError))

    def report(self) -> str:
        """A human-readable account, with the JSON form to re-check at the end."""
        verdict = verify_evidence(self)
        lines = [
            f"SPLIT VIEW: log {self.origin!r} signed two checkpoints that are not one append-only tree.",
            f"log key: {self.log_vkey}",
            f"observed at: {self.observed_at}",
            f"reason: {self.reason}",
            "",
        ]
        for label, note in (("A", self.first), ("B", self.second)):
            cp = verdict.checkpoints[0 if label == "A" else 1]
            lines.append(f"checkpoint {label}: size {cp.size}, root {cp.root.hex()}")
            lines.extend("    " + line for line in note.rstrip("\n").split("\n"))
        if self.proof is not None:
            lines.append(f"consistency proof A -> B ({len(self.proof)} hashes, from {self.proof_source}):")
            lines.extend("    " + h.hex() for h in self.proof)
        lines += ["", f"finding: {verdict.finding}", "",
                  "Re-check without trusting the log: save the JSON below to a file and run",
                  "    logserver verify --evidence FILE [--policy TRUST.toml] [--log URL]", "",
                  self.to_json().rstrip("\n")]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EvidenceVerdict:
    """The outcome of re-checking evidence. `conclusive` is True when the two signed
    checkpoints alone prove the fork (same size, different roots)."""

    conclusive: bool
    finding: str
    checkpoints: tuple[Any, Any]


def verify_evidence(
    evidence: SplitViewEvidence | Mapping[str, Any] | bytes | str,
    policy: TrustPolicy | None = None,
    *,
    fresh_proof: Sequence[bytes] | None = None,
) -> EvidenceVerdict:
    """Re-check split-view evidence from its own contents; raise `EvidenceError` if it
    does not show a split view.

    `policy`, when given, must list `log_vkey` for the origin (otherwise anyone could
    make "evidence" with a key of their own). `fresh_proof`, a consistency proof
    obtained independently (e.g. fetched again from the log), refutes the evidence
    if it verifies.
    """
    if isinstance(evidence, (bytes, str)):
        evidence = SplitViewEvidence.from_json(evidence)
    elif not isinstance(evidence, SplitViewEvidence):
        evidence = SplitViewEvidence.from_dict(evidence)
    try:
        verifier = Ed25519NoteVerifier.from_vkey(evidence.log_vkey)
    except (FormatError, ValueError) as exc:
        raise EvidenceError(f"evidence log_vkey: {exc}") from None
    if verifier.name != evidence.origin:
        raise EvidenceError(f"evidence log_vkey: key name {verifier.name!r}, want the origin {evidence.origin!r}")
    if policy is not None:
        trusted = [log.verifier for log in policy.log_for(evidence.origin)]
        if verifier not in trusted:
            raise EvidenceError(f"evidence log_vkey: not a key the policy lists for log {evidence.origin!r}")
    checkpoints = []
    for label, note in (("A", evidence.first), ("B", evidence.second)):
        try:
            checkpoint, _ = open_checkpoint(note, [verifier])
        except (FormatError, VerificationError) as exc:
            raise EvidenceError(f"evidence checkpoint {label}: {exc}") from None
        if checkpoint.origin != evidence.origin:
            raise EvidenceError(f"evidence checkpoint {label}: origin {checkpoint.origin!r}, want {evidence.origin!r}")
        checkpoints.append(checkpoint)
    a, b = checkpoints
    if a.size > b.size:
        raise EvidenceError(f"evidence checkpoints: sizes {a.size} then {b.size}, want the smaller first")
    if a.size == b.size:
        if a.root == b.root:
            raise EvidenceError(f"evidence checkpoints: both size {a.size} with the same root: no split view")
        return EvidenceVerdict(
            True,
            f"conclusive: the log signed two different roots for tree size {a.size} "
            f"({a.root.hex()} and {b.root.hex()})",
            (a, b),
        )
    if evidence.proof is None:
        raise EvidenceError(f"evidence: sizes {a.size} and {b.size} differ, want the consistency proof that failed")
    failure = _consistency_failure(a, b, evidence.proof)
    if failure is None:
        raise EvidenceError(
            f"evidence refuted: its consistency proof from {a.size} to {b.size} verifies, "
            "the checkpoints are consistent"
        )
    if fresh_proof is not None and _consistency_failure(a, b, fresh_proof) is None:
        raise EvidenceError(
            f"evidence refuted: a fresh consistency proof from {a.size} to {b.size} verifies, "
            "the checkpoints are consistent (the proof in the evidence was wrong, not the log's trees)"
        )
    return EvidenceVerdict(
        False,
        f"both checkpoints carry valid signatures by {evidence.origin!r}, and the consistency proof from size "
        f"{a.size} to {b.size} fails ({failure}). If tree A were a prefix of tree B the log could produce a "
        f"proof that verifies; the evidence stands until one is shown "
        f"(e.g. GET /v1/proof/consistency?first={a.size}&second={b.size}).",
        (a, b),
    )


def _consistency_failure(a: Any, b: Any, proof: Sequence[bytes]) -> str | None:
    """Why `proof` fails to show checkpoint `a` is a prefix of `b`, or None if it shows it."""
    try:
        verify_consistency(a.size, b.size, a.root, b.root, list(proof))
    except MerkleError as exc:
        return str(exc)
    return None
