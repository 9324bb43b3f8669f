"""Verifying a checkpoint note against a trust policy, and reading the log's signed time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..formats import (
    Checkpoint,
    FormatError,
    QuorumNotMetError,
    VerificationError,
    parse_note,
    timestamp_of,
    verify_note,
)
from ..formats.errors import UnverifiedNoteError
from ..formats.strict import utf8_text
from ..formats.vkey import SIG_TYPE_COSIGNATURE_MLDSA44, SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519
from .errors import CheckpointVerificationError, WitnessQuorumError
from .policy import TrustPolicy


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint signed by a policy log, with its quorum met.

    `witnesses` are the policy names of the witnesses whose cosignatures verified;
    `signed_at` is the POSIX time of the log's own cosignature/v1 line (None if the
    checkpoint has none); `witness_times` maps each of `witnesses` to the timestamp of
    its verified cosignature/v1 signature (C2SP tlog-cosignature), which fleet-head
    freshness reads (docs/fleet-heads.md).
    """

    checkpoint: Checkpoint
    note: str
    witnesses: frozenset[str]
    signed_at: int | None
    witness_times: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Which of the log's own signatures verified, in LOG_SIGNATURE_KINDS order: "ed25519"
    # (signed-note, 0x01), "ed25519-cosignature" (its cosignature/v1 time line, 0x04),
    # "ml-dsa-44" (its ML-DSA-44 subtree/v1 cosignature, 0x06). Only keys the policy lists
    # (or, for the time line, derives) are checked: an unknown line is ignored, never listed.
    log_signatures: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


LOG_SIGNATURE_KINDS = ("ed25519", "ed25519-cosignature", "ml-dsa-44")
_KIND_OF_TYPE = {SIG_TYPE_ED25519: "ed25519", SIG_TYPE_COSIGNATURE_V1: "ed25519-cosignature",
                 SIG_TYPE_COSIGNATURE_MLDSA44: "ml-dsa-44"}


def verify_checkpoint(note: str | bytes, policy: TrustPolicy) -> VerifiedCheckpoint:
    """Verify `note`: a well-formed checkpoint, signed by a log the policy lists for its
    origin, cosigned by witnesses meeting the quorum (C2SP tlog-policy). Any signature by
    a known key that fails rejects the note (signed-note "Signatures"). With the policy's
    `require_log_mldsa44`, the log's ML-DSA-44 signature must be among those that verified.

    Raises `CheckpointVerificationError` or `WitnessQuorumError`.
    """
    note = utf8_text(note, "checkpoint", CheckpointVerificationError)
    try:
        checkpoint, opened, witnesses = policy.tlog.verify_checkpoint(note)
    except QuorumNotMetError as exc:
        raise WitnessQuorumError(str(exc)) from None
    except (FormatError, VerificationError) as exc:
        raise CheckpointVerificationError(f"checkpoint: {exc}") from None
    kinds = {_KIND_OF_TYPE[t] for log in policy.log_for(checkpoint.origin)
             if (t := getattr(log.verifier, "sig_type", None)) in _KIND_OF_TYPE
             and opened.signature_by(log.verifier) is not None}
    if policy.require_log_mldsa44 and "ml-dsa-44" not in kinds:
        # The check that makes the policy post-quantum: without it an Ed25519 signature
        # alone (forgeable by a quantum computer) would still be enough.
        raise CheckpointVerificationError(
            f"checkpoint for {checkpoint.origin!r}: got no verified ML-DSA-44 signature by the log "
            f"(verified: {', '.join(sorted(kinds)) or 'none'}), want one: the trust policy sets require_log_mldsa44"
        )
    signed_at = log_timestamp(note, checkpoint.origin, policy)
    if signed_at is not None:
        kinds.add("ed25519-cosignature")
    times = {}
    for name in witnesses:
        signature = opened.signature_by(policy.tlog.witnesses[name].verifier)
        # A witness's cosignature verified, so it is a well-formed cosignature/v1
        # signature and its timestamp is within 2^63-1 (timestamp_of would raise).
        assert signature is not None
        times[name] = timestamp_of(signature.signature)
    return VerifiedCheckpoint(
        checkpoint, note, witnesses, signed_at, MappingProxyType(times),
        tuple(k for k in LOG_SIGNATURE_KINDS if k in kinds),
    )


def log_timestamp(note: str, origin: str, policy: TrustPolicy) -> int | None:
    """The log's signed time for the checkpoint: the timestamp of its cosignature/v1
    line by the log's own key (docs/formats.md, "Checkpoints"), verified. None when the
    note has no such line; `CheckpointVerificationError` when it has one that does not verify."""
    verifiers = policy.timestamp_verifiers(origin)
    if not verifiers:
        return None
    try:
        opened = verify_note(parse_note(note), verifiers)
    except UnverifiedNoteError:
        return None
    except (FormatError, VerificationError) as exc:
        raise CheckpointVerificationError(f"checkpoint time stamp line: {exc}") from None
    stamps = [timestamp_of(sig.signature) for sig in opened.verified]
    return max(stamps)
