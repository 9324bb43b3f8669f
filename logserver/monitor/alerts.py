"""Monitor alerts: one JSON line each (docs/client.md, "Monitor alerts").

    {"type": "alert", "kind": "<kind>", "time": "<RFC 3339>", "origin": "<log>",
     "message": "<text>", "details": {...}, "evidence": {...} | null}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WATCHED_FLEET_BUNDLE = "watched_fleet_bundle"
"""A new bundle of a fleet named with --watch-fleet was logged."""
POLICY_FAILURE = "policy_failure"
"""A logged entry fails the dual-signature policy or does not decode."""
SEQUENCE_GAP = "sequence_gap"
"""A fleet's sequence jumped forward by more than one."""
SEQUENCE_ROLLBACK = "sequence_rollback"
"""A fleet's sequence went backwards (an older sequence logged after a newer one)."""
DUPLICATE_BUNDLE = "duplicate_bundle"
"""The same payload was logged again for a fleet sequence already seen."""
EQUIVOCATION = "equivocation"
"""Two different payloads were logged for the same fleet and sequence."""
FROZEN_LOG = "frozen_log"
"""The log's latest checkpoint is older than --max-checkpoint-age (or has no signed time)."""
TIME_REGRESSION = "checkpoint_time_regression"
"""A newer checkpoint carries an earlier signed time than the previous one."""
CHECKPOINT_INVALID = "checkpoint_invalid"
"""The served checkpoint is malformed, from another log, or not signed by a policy log."""
QUORUM_FAILURE = "quorum_failure"
"""The served checkpoint lacks the witness quorum of the policy."""
SPLIT_VIEW = "split_view"
"""Two checkpoints of the log are inconsistent (evidence: both notes and the proof)."""
ROOT_MISMATCH = "root_mismatch"
"""The entries (and level-0 tiles) served do not hash to the signed checkpoint root."""
CORRUPT_ENTRY = "corrupt_entry"
"""A served entry differs from the signed tree (its level-0 tile hash matches the tree)."""
CORRUPT_TILE = "corrupt_tile"
"""A served level-0 tile differs from the verified entries, or is malformed."""
MALFORMED_DATA = "malformed_data"
"""An entry bundle or other served resource does not decode."""
HEADS_MISMATCH = "heads_mismatch"
"""A HEADS leaf does not commit to the heads table folded from the bundles before it."""
HEADS_MISSING = "heads_missing"
"""A checkpoint's last leaf is not a HEADS leaf, after the log's first HEADS leaf."""
RETIRED_FLEET_BUNDLE = "retired_fleet_bundle"
"""A bundle was logged for a fleet after its retirement."""

ALL_KINDS = (
    WATCHED_FLEET_BUNDLE, POLICY_FAILURE, SEQUENCE_GAP, SEQUENCE_ROLLBACK, DUPLICATE_BUNDLE, EQUIVOCATION,
    FROZEN_LOG, TIME_REGRESSION, CHECKPOINT_INVALID, QUORUM_FAILURE, SPLIT_VIEW, ROOT_MISMATCH,
    CORRUPT_ENTRY, CORRUPT_TILE, MALFORMED_DATA, HEADS_MISMATCH, HEADS_MISSING, RETIRED_FLEET_BUNDLE,
)


@dataclass(frozen=True)
class Alert:
    """One finding. `key` identifies it for de-duplication within a monitor process."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] | None = None
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ALL_KINDS:
            raise AssertionError(f"unknown alert kind {self.kind!r}")

    def to_dict(self, origin: str | None, time: str) -> dict[str, Any]:
        return {
            "type": "alert",
            "kind": self.kind,
            "time": time,
            "origin": origin,
            "message": self.message,
            "details": self.details,
            "evidence": self.evidence,
        }
