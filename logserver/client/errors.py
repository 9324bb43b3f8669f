"""Typed verification failures of the client library.

Every failed check raises a `VerificationFailure` subclass naming *what* failed, so
callers (and `logserver verify`) can tell a bad signature from a bad proof from a
rollback. `check` names the check that failed (the ids of docs/client.md).

Failures of the transport (the log cannot be reached, answers garbage) are not
verification failures: they raise `LogClientError` from `logserver.client.log_client`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .evidence import SplitViewEvidence
    from .fleet_head import VerifiedFleetAbsence, VerifiedFleetHead


class VerificationFailure(Exception):
    """Base class: something the client was asked to trust does not check out."""

    default_check = "verification"

    def __init__(self, message: str, *, check: str | None = None) -> None:
        super().__init__(message)
        self.check: str = check or self.default_check
        self.check_given = check is not None


class MalformedError(VerificationFailure):
    """A receipt, envelope, payload or proof that does not parse under its strict format."""

    default_check = "format"


class SignatureError(VerificationFailure):
    """The envelope's authority signatures do not satisfy the dual-signature policy."""

    default_check = "envelope_signatures"


class ExpiredError(VerificationFailure):
    """The bundle is outside its validity window at the verification time (expired,
    not yet valid, or an inverted window)."""

    default_check = "validity_window"


class InclusionError(VerificationFailure):
    """The leaf hash or inclusion proof does not tie the envelope to the checkpoint,
    or the receipt's proof fields disagree with each other."""

    default_check = "inclusion_proof"


class CheckpointVerificationError(VerificationFailure):
    """The checkpoint is malformed, from a log the policy does not list, or not
    validly signed by that log."""

    default_check = "checkpoint_signature"


class WitnessQuorumError(VerificationFailure):
    """The checkpoint's verified witness cosignatures do not satisfy the policy quorum."""

    default_check = "witness_quorum"


class FleetRollbackError(VerificationFailure):
    """The bundle is older than one already accepted for its fleet, differs from the
    accepted bundle of the same sequence, or is no longer the fleet's latest."""

    default_check = "fleet_rollback"


class ConsistencyError(VerificationFailure):
    """A checkpoint of another size than the stored one came without the consistency
    proof needed to compare them (fetch one with --log, or supply it)."""

    default_check = "checkpoint_consistency"


class LogMisbehaviourError(VerificationFailure):
    """An online answer of the log contradicts what was already verified (e.g. it names
    as a fleet's latest bundle one older than a bundle it has logged)."""

    default_check = "log_answer"


class SplitViewError(VerificationFailure):
    """Two checkpoints signed by the same log cannot both be views of one append-only
    tree. `evidence` holds both signed checkpoints and the failed proof; anyone can
    re-check it with `logserver.client.verify_evidence` without trusting the log."""

    default_check = "checkpoint_consistency"

    def __init__(self, message: str, evidence: SplitViewEvidence, *, check: str | None = None) -> None:
        super().__init__(message, check=check)
        self.evidence = evidence


# --- fleet-head proofs (docs/fleet-heads.md, "A verifier checks"; client/fleet_head.py) ---


class MalformedFleetHeadError(MalformedError):
    """The fleet-head proof, or the envelope in it, does not parse under its strict format."""

    default_check = "fleet_head_format"


class FleetMismatchError(VerificationFailure):
    """The fleet-head proof is about another fleet than the one asked for (its
    `fleet_id`, or its row's)."""

    default_check = "fleet_head_fleet"


class StaleFleetHeadError(VerificationFailure):
    """The checkpoint is not fresh: no quorum of the pinned witnesses cosigned it within
    `max_age` of now (or, without witnesses, the log's own signed time is not)."""

    default_check = "fleet_head_freshness"


class HeadsLeafError(VerificationFailure):
    """The HEADS leaf is not the checkpoint's last leaf: a wrong index, not a HEADS
    leaf, or an inclusion proof that does not lead to the checkpoint's root."""

    default_check = "heads_leaf"


class FleetHeadRootError(VerificationFailure):
    """A row's (or the covering row's) entry, with its next fleet id, has an inclusion
    proof that does not lead to the HEADS leaf's heads-tree root at its position in a
    tree of `count` entries."""

    default_check = "heads_row"


class FleetHeadBundleError(VerificationFailure):
    """The bundle does not match its row: another leaf hash, an inclusion proof that
    does not verify at `row.leaf_index`, or a payload that names another fleet,
    sequence or status."""

    default_check = "head_bundle"


class AbsenceProofError(VerificationFailure):
    """The covering row does not prove absence: its link (fleet id to next fleet id)
    does not pass over the fleet asked for, a lone row does not link to itself (or a
    row of a larger table does), or no row is given for a table that has rows."""

    default_check = "fleet_absence"


class FleetHeadRollbackError(VerificationFailure):
    """(state) The head is older than one already seen for the fleet, another bundle
    with the same sequence, or an absence from a log that showed the fleet before."""

    default_check = "fleet_head_rollback"


class FleetRetiredError(VerificationFailure):
    """A verified proof that the fleet is retired: refuse every bundle of it. `head`
    is the verified head, whose bundle is the retirement."""

    default_check = "fleet_retired"

    def __init__(self, message: str, head: VerifiedFleetHead, *, check: str | None = None) -> None:
        super().__init__(message, check=check)
        self.head = head


class FleetAbsentError(VerificationFailure):
    """A verified proof that the fleet has no bundle in the log at the checkpoint's
    size. `absence` is what was verified."""

    default_check = "fleet_absent"

    def __init__(self, message: str, absence: VerifiedFleetAbsence, *, check: str | None = None) -> None:
        super().__init__(message, check=check)
        self.absence = absence


class NotCurrentHeadError(VerificationFailure):
    """A receipt's fleet-head proof verifies but names another bundle as the fleet's
    head than the receipt's: the bundle was logged, and has since been superseded."""

    default_check = "fleet_head_current"


class StateError(ValueError):
    """A client or monitor state file is unreadable or inconsistent (a local problem,
    not a verification failure: fix or remove the file)."""
