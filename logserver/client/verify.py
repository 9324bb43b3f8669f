"""Offline receipt verification: `verify_receipt(envelope, receipt, policy)`.

Checks, in this order (each one named; docs/client.md, "What verify checks"):

1. `receipt_format`      the receipt parses strictly and its tlog-proof text agrees with
                         its JSON fields (index, proof hashes, checkpoint, tree size);
2. `envelope_signatures` the envelope carries valid signatures by a pinned signer and a
                         pinned countersigner over the DSSE PAE (docs/formats.md,
                         "Signature policy"), and its payload follows the schema;
3. `validity_window`     not_before <= now < not_after;
4. `leaf_hash`           the leaf hash recomputed from the envelope (docs/formats.md,
                         "Leaf encoding") equals the receipt's;
5. `checkpoint_signature` the checkpoint is signed by a log the tlog-policy lists for its
                         origin (and every signature by a known key verifies);
6. `witness_quorum`      the verified witness cosignatures satisfy the policy quorum;
7. `inclusion_proof`     the RFC 6962 inclusion proof leads from the leaf hash at `index`
                         to the checkpoint's root at its size;
with a `ClientState`:
8. `fleet_rollback`      no higher sequence (and no other bundle with this sequence) was
                         accepted for the fleet;
9. `checkpoint_consistency` the checkpoint is the stored one, or provably consistent with
                         it (a consistency proof must be supplied when the sizes differ).

The first failure raises its `VerificationFailure` subclass. The state is updated in
memory only when every check passed; the caller saves it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ..bundle import (
    BundleError,
    Envelope,
    FleetBundle,
    FleetKey,
    MalformedEnvelopeError,
    MalformedPayloadError,
    ValidityError,
    envelope_leaf_hash,
    format_timestamp,
    parse_envelope,
    verify_envelope,
)
from ..bundle.errors import SignaturePolicyError
from ..formats.receipt import Receipt, ReceiptError, parse_receipt
from ..merkle import MerkleError, verify_inclusion
from .checkpoints import VerifiedCheckpoint, verify_checkpoint
from .consistency import ConsistencyProof
from .errors import (
    CheckpointVerificationError,
    ExpiredError,
    InclusionError,
    MalformedError,
    SignatureError,
    VerificationFailure,
    WitnessQuorumError,
)
from .policy import TrustPolicy
from .state import ClientState

if TYPE_CHECKING:  # pragma: no cover
    from .fleet_head import VerifiedFleetHead

# verify_envelope's own expiry check is disabled with the earliest time there is; the
# window is checked here instead, against both of its ends.
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
T = TypeVar("T")


@dataclass(frozen=True)
class CheckResult:
    """One check of a verification: its id, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a successful verification proves: this bundle, signed by both authorities,
    is entry `index` of the log tree committed to by `checkpoint`."""

    envelope: Envelope
    bundle: FleetBundle
    payload_digest: bytes
    signer_keyid: str
    countersigner_keyid: str
    leaf_hash: bytes
    index: int
    checkpoint: VerifiedCheckpoint
    # The receipt's fleet-head proof, verified to name this bundle (None: it carries none).
    fleet_head: VerifiedFleetHead | None = None

    @property
    def fleet_id(self) -> str:
        return self.bundle.fleet_id

    @property
    def sequence(self) -> int:
        return self.bundle.sequence

    @property
    def keys(self) -> tuple[FleetKey, ...]:
        return self.bundle.keys

    def to_dict(self) -> dict[str, Any]:
        cp = self.checkpoint
        return {
            "fleet_id": self.fleet_id,
            "sequence": self.sequence,
            "not_before": format_timestamp(self.bundle.not_before),
            "not_after": format_timestamp(self.bundle.not_after),
            "keys": [{"key_id": k.key_id, "algorithm": k.algorithm} for k in self.keys],
            "payload_digest": self.payload_digest.hex(),
            "signer_keyid": self.signer_keyid,
            "countersigner_keyid": self.countersigner_keyid,
            "leaf_hash": self.leaf_hash.hex(),
            "index": self.index,
            "checkpoint": {
                "origin": cp.origin,
                "size": cp.size,
                "root": cp.root.hex(),
                "signed_at": cp.signed_at,
                "witnesses": sorted(cp.witnesses),
                "log_signatures": list(cp.log_signatures),
            },
            **({} if self.fleet_head is None else {"fleet_head": self.fleet_head.to_dict()}),
        }


@dataclass
class CheckLog:
    """Collects `CheckResult`s as checks run (pass it as `checks=` to get an account)."""

    results: list[CheckResult] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], tuple[T, str]]) -> T:
        """Run `check` (returning (value, detail)); record the outcome under `name`."""
        try:
            value, detail = check()
        except VerificationFailure as exc:
            # A failure raised for a named check (e.g. an inverted validity window
            # found while checking signatures) keeps that name.
            if not exc.check_given:
                exc.check = name
            self.results.append(CheckResult(exc.check, False, str(exc)))
            raise
        self.results.append(CheckResult(name, True, detail))
        return value

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results.append(CheckResult(name, ok, detail))


def load_envelope(envelope: Envelope | bytes | str) -> Envelope:
    """An `Envelope` from its JSON (bytes or text), strictly parsed; raises `MalformedError`."""
    if isinstance(envelope, Envelope):
        return envelope
    data = envelope.encode("utf-8") if isinstance(envelope, str) else envelope
    try:
        return parse_envelope(data)
    except BundleError as exc:
        raise MalformedError(f"envelope: {exc}") from None


# What each part of a malformed receipt fails (docs/client.md, "Checks"): when the
# receipt's two halves disagree, the check is `receipt_format` whatever the part.
_RECEIPT_FAILURES: dict[str, tuple[type[VerificationFailure], str]] = {
    "receipt": (MalformedError, "receipt_format"),
    "checkpoint": (CheckpointVerificationError, "checkpoint_signature"),
    "inclusion": (InclusionError, "inclusion_proof"),
}


def load_receipt(receipt: Mapping[str, Any] | bytes | str) -> Receipt:
    """A `Receipt` from its JSON (bytes, text or decoded object), strictly parsed and
    its two halves compared (`logserver.formats.parse_receipt`); raises
    `MalformedError`, `CheckpointVerificationError` or `InclusionError`."""
    try:
        return parse_receipt(receipt)
    except ReceiptError as exc:
        failure, check = _RECEIPT_FAILURES[exc.part]
        raise failure(str(exc), check="receipt_format" if exc.disagreement else check) from None


def _check_signatures(envelope: Envelope, policy: TrustPolicy) -> tuple[Any, str]:
    try:
        verified = verify_envelope(envelope, policy.authorities, _BEGINNING)
    except SignaturePolicyError as exc:
        raise SignatureError(f"{exc} [{exc.code}]") from None
    except MalformedPayloadError as exc:
        raise MalformedError(f"payload: {exc}") from None
    except MalformedEnvelopeError as exc:
        raise MalformedError(f"envelope: {exc}") from None
    except ValidityError as exc:
        raise ExpiredError(f"{exc} [{exc.code}]", check="validity_window") from None
    signer = policy.authorities[verified.signer_keyid]
    counter = policy.authorities[verified.countersigner_keyid]
    b = verified.bundle
    return verified, (
        f"signed by signer {signer.authority!r} ({signer.algorithm}, keyid {signer.keyid[:16]}...) and "
        f"countersigner {counter.authority!r} ({counter.algorithm}, keyid {counter.keyid[:16]}...); "
        f"fleet {b.fleet_id!r} sequence {b.sequence}, "
        f"{len(b.keys)} key(s)"
    )


def _check_window(bundle: FleetBundle, now: datetime) -> tuple[None, str]:
    window = f"[{format_timestamp(bundle.not_before)}, {format_timestamp(bundle.not_after)})"
    if now < bundle.not_before:
        raise ExpiredError(f"bundle not yet valid: now {format_timestamp(now)} is before not_before, window {window}")
    if now >= bundle.not_after:
        raise ExpiredError(f"bundle expired: now {format_timestamp(now)} is not before not_after, window {window}")
    return None, f"now {format_timestamp(now)} is inside {window}"


def _check_leaf_hash(envelope: Envelope, receipt: Receipt) -> tuple[bytes, str]:
    computed = envelope_leaf_hash(envelope)
    if computed != receipt.leaf_hash:
        hint = ""
        if receipt.logged_envelope is not None:
            hint = " (the receipt carries the logged envelope of this payload: verify that one)"
        raise InclusionError(
            f"leaf hash: got {computed.hex()} from the envelope, want the receipt's {receipt.leaf_hash.hex()}{hint}"
        )
    return computed, f"SHA-256(0x00 || leaf) = {computed.hex()}"


def _check_inclusion(receipt: Receipt, leaf_hash: bytes) -> tuple[None, str]:
    cp = receipt.checkpoint
    try:
        verify_inclusion(receipt.index, cp.size, leaf_hash, list(receipt.inclusion_proof), cp.root)
    except MerkleError as exc:
        raise InclusionError(f"inclusion proof of index {receipt.index} in tree size {cp.size}: {exc}") from None
    return None, (
        f"entry {receipt.index} is in the tree of size {cp.size} with root {cp.root.hex()} "
        f"({len(receipt.inclusion_proof)} proof hashes)"
    )


def _check_checkpoint(receipt: Receipt, policy: TrustPolicy, log: CheckLog) -> VerifiedCheckpoint:
    return check_checkpoint_note(receipt.checkpoint_note, receipt.checkpoint.origin, policy, log)


def check_checkpoint_note(note: str, origin: str, policy: TrustPolicy, log: CheckLog) -> VerifiedCheckpoint:
    """Checks `checkpoint_signature` and `witness_quorum` of a checkpoint note whose
    origin line is `origin` (one verification yields both): a receipt's, a fleet head's."""
    try:
        verified = verify_checkpoint(note, policy)
    except WitnessQuorumError as exc:
        log.add("checkpoint_signature", True, f"signed by log {origin!r}")
        log.add("witness_quorum", False, str(exc))
        exc.check = "witness_quorum"
        raise
    except CheckpointVerificationError as exc:
        log.add("checkpoint_signature", False, str(exc))
        exc.check = "checkpoint_signature"
        raise
    log.add("checkpoint_signature", True, _describe_checkpoint(verified))
    log.add("witness_quorum", True, _describe_quorum(verified, policy))
    return verified


def _describe_checkpoint(v: VerifiedCheckpoint) -> str:
    stamp = "no signed time" if v.signed_at is None else (
        "signed at " + datetime.fromtimestamp(v.signed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    kinds = ", ".join(LOG_SIGNATURE_NAMES[k] for k in v.log_signatures)
    return f"signed by log {v.origin!r}: size {v.size}, root {v.root.hex()}, {stamp}; verified: {kinds}"


LOG_SIGNATURE_NAMES = {
    "ed25519": "Ed25519 signed-note (0x01)",
    "ed25519-cosignature": "Ed25519 cosignature/v1 (0x04)",
    "ml-dsa-44": "ML-DSA-44 subtree/v1 cosignature (0x06)",
}
"""How `verify` names each kind of the log's own checkpoint signatures (checkpoints.LOG_SIGNATURE_KINDS)."""


def log_signature_lines(v: VerifiedCheckpoint, policy: TrustPolicy) -> list[str]:
    """One line per kind of the log's own signature: verified, or why not (no key pinned)."""
    lines = []
    pinned = {getattr(log.verifier, "sig_type", None) for log in policy.log_for(v.origin)}
    for kind, name in LOG_SIGNATURE_NAMES.items():
        if kind in v.log_signatures:
            state = "verified"
        elif kind == "ml-dsa-44" and 0x06 not in pinned:
            state = "not checked: the trust policy lists no ML-DSA-44 key for this log"
        elif kind == "ed25519" and 0x01 not in pinned:
            state = "not checked: the trust policy lists no Ed25519 key for this log"
        else:
            state = "absent"
        lines.append(f"log signature {name}: {state}")
    if policy.require_log_mldsa44:
        lines.append("post-quantum: required by the trust policy (require_log_mldsa44), met")
    return lines


def _describe_quorum(v: VerifiedCheckpoint, policy: TrustPolicy) -> str:
    if policy.tlog.quorum == "none":
        return "policy quorum is 'none': no cosignature required" + (
            f" (verified anyway: {sorted(v.witnesses)})" if v.witnesses else "")
    return f"quorum {policy.tlog.quorum!r} met by witnesses {sorted(v.witnesses)}"


def verify_receipt(
    envelope: Envelope | bytes | str,
    receipt: Mapping[str, Any] | bytes | str,
    policy: TrustPolicy,
    *,
    now: datetime | None = None,
    state: ClientState | None = None,
    consistency_proofs: Iterable[ConsistencyProof] = (),
    checks: CheckLog | None = None,
    max_age: timedelta | int | None = None,
) -> VerifiedReceipt:
    """Verify a receipt for an envelope fully offline (see the module docstring).

    `now` (timezone-aware; default: the current UTC time) is the time for the validity
    window. `state`, when given, adds the rollback and consistency checks and is updated
    in memory on success. `consistency_proofs` are proofs between the stored checkpoint
    and the receipt's. `checks` collects an account of every check.
    A receipt that carries a fleet-head proof (`fleet_head`) is also checked to be its
    fleet's current head, fresh within `max_age` (default: the policy's `max_age_s`;
    ValueError when neither is set): `check_receipt_head`.
    Returns the `VerifiedReceipt`; raises a `VerificationFailure` subclass.
    """
    return _verify(envelope, receipt, policy, now=now, state=state, proofs=consistency_proofs, checks=checks,
                   max_age=max_age)


def _verify(
    envelope: Envelope | bytes | str,
    receipt: Mapping[str, Any] | bytes | str,
    policy: TrustPolicy,
    *,
    now: datetime | None,
    state: ClientState | None,
    proofs: Iterable[ConsistencyProof],
    checks: CheckLog | None,
    check_window: bool = True,
    max_age: timedelta | int | None = None,
) -> VerifiedReceipt:
    log = checks if checks is not None else CheckLog()
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise TypeError("verify_receipt: now must be timezone-aware")
    parsed = log.run("receipt_format", lambda: (
        load_receipt(receipt), "receipt parses; its tlog-proof agrees with its index, proof hashes and checkpoint"))
    env = log.run("envelope_format", lambda: (load_envelope(envelope), "envelope is a well-formed DSSE envelope"))
    verified = log.run("envelope_signatures", lambda: _check_signatures(env, policy))
    if check_window:
        log.run("validity_window", lambda: _check_window(verified.bundle, now))
    leaf_hash = log.run("leaf_hash", lambda: _check_leaf_hash(env, parsed))

    cp = _check_checkpoint(parsed, policy, log)
    log.run("inclusion_proof", lambda: _check_inclusion(parsed, leaf_hash))

    if state is not None:
        b = verified.bundle
        log.run("fleet_rollback", lambda: (None, state.check_fleet(b.fleet_id, b.sequence, verified.payload_digest)))
        by_sizes = {(p.first, p.second): p for p in proofs}
        log.run("checkpoint_consistency", lambda: (None, state.advance(cp, policy, by_sizes)))
        state.record_fleet(b.fleet_id, b.sequence, verified.payload_digest, cp.origin, parsed.index)

    head = None
    if parsed.fleet_head is not None:
        from .fleet_head import check_receipt_head  # fleet_head.py imports this module

        head = check_receipt_head(parsed.fleet_head, parsed.index, leaf_hash, verified.bundle.fleet_id, policy, now,
                                  max_age=max_age, state=state, checks=log)

    return VerifiedReceipt(
        envelope=env,
        bundle=verified.bundle,
        payload_digest=verified.payload_digest,
        signer_keyid=verified.signer_keyid,
        countersigner_keyid=verified.countersigner_keyid,
        leaf_hash=leaf_hash,
        index=parsed.index,
        checkpoint=cp,
        fleet_head=head,
    )
