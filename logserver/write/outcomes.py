"""What a submission comes to: the pending entry, its outcomes, and the errors the
HTTP layer turns into responses (api/submit.py; the codes are in openapi.yaml)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeAlias

from ..storage import CheckpointRow


@dataclass
class Pending:
    """One verified submission waiting for integration."""

    leaf: bytes
    leaf_hash: bytes
    fleet_id: str
    sequence: int
    payload_digest: bytes
    future: asyncio.Future = field(repr=False)
    retired: bool = False  # the payload's status is "retired" (docs/fleet-heads.md)


@dataclass(frozen=True)
class Appended:
    """The entry was added by this submission: index, and a proof at `checkpoint`."""

    index: int
    leaf_hash: bytes
    checkpoint: CheckpointRow
    inclusion_proof: list[bytes]


@dataclass(frozen=True)
class Duplicate:
    """An identical payload was already logged at `index` (its leaf may differ in signatures)."""

    index: int
    leaf_hash: bytes


class SequencerError(Exception):
    """Base for outcomes the HTTP layer turns into error responses."""

    status = 503
    code = "unavailable"


class OverloadedError(SequencerError):
    code = "overloaded"


class UnavailableError(SequencerError):
    code = "unavailable"


class DatabaseUnavailableError(UnavailableError):
    """The batch failed because the database could not be reached (or timed out)."""

    code = "database_unavailable"


class IntegrityError(SequencerError):
    """The pre-sign check failed: stored state does not reproduce the signed tree."""

    code = "integrity_check_failed"


class ReceiptUnavailableError(UnavailableError):
    """The entry was committed, but building its answer failed (a bug, logged).

    Still 503 `unavailable`: a retry is answered as a duplicate, with the
    receipt of the stored entry."""


class SequenceRollbackError(SequencerError):
    """The fleet's sequence is not above its latest logged one (not client.errors.RollbackError,
    which is a log's checkpoint going back)."""

    status = 409
    code = "rollback"


class EquivocationError(SequencerError):
    status = 409
    code = "equivocation"


class FleetRetiredError(SequencerError):
    """The fleet was retired by a logged bundle: it accepts no later bundle
    (docs/fleet-heads.md, "Admission and retirement")."""

    status = 409
    code = "fleet_retired"


# What classification decided for one submission of a batch (write/classify.py), in
# arrival order: (the submission, its result). The result is the index the entry is
# appended at (its Appended, with the proof, is built after the COMMIT), the Duplicate
# it is, or the refusal to answer with. A plain tuple: one is made per entry on the
# sequencer's hot path, where a NamedTuple costs ten times as much to build.
BatchOutcome: TypeAlias = tuple[Pending, int | Duplicate | SequencerError]
