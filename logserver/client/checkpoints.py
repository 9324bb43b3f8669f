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

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


def verify_checkpoint(note: str | bytes, policy: TrustPolicy) -> VerifiedCheckpoint:
    """Verify `note`: a well-formed checkpoint, signed by a log the policy lists for its
    origin, cosigned by witnesses meeting the quorum (C2SP tlog-policy). Any signature by
    a known key that fails rejects the note (signed-note "Signatures").

    Raises `CheckpointVerificationError` or `WitnessQuorumError`.
    """
    note = utf8_text(note, "checkpoint", CheckpointVerificationError)
    try:
        checkpoint, opened, witnesses = policy.tlog.verify_checkpoint(note)
    except QuorumNotMetError as exc:
        raise WitnessQuorumError(str(exc)) from None
    except (FormatError, VerificationError) as exc:
        raise CheckpointVerificationError(f"checkpoint: {exc}") from None
    times = {}
    for name in witnesses:
        signature = opened.signature_by(policy.tlog.witnesses[name].verifier)
        # A witness's cosignature verified, so it is a well-formed cosignature/v1
        # signature and its timestamp is within 2^63-1 (timestamp_of would raise).
        assert signature is not None
        times[name] = timestamp_of(signature.signature)
    return VerifiedCheckpoint(
        checkpoint, note, witnesses, log_timestamp(note, checkpoint.origin, policy), MappingProxyType(times)
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
