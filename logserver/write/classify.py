"""Step 4 of a batch (write/sequencer.py): which submissions are new, duplicates,
rollbacks or equivocations. Pure: a function of the batch, what the log already
holds at the batch's (fleet, sequence) pairs, and the fleets' latest sequences,
all read under the sequencer lock (step 2)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

from ..storage import ExistingEntry, FleetHead
from .outcomes import (
    BatchOutcome,
    Duplicate,
    EquivocationError,
    FleetRetiredError,
    Pending,
    SequenceRollbackError,
)


@dataclass(frozen=True)
class Equivocation:
    """A submission whose (fleet, sequence) is logged with another payload: refused,
    and worth an alarm (the fleet's authorities signed two different bundles)."""

    pending: Pending
    logged_digest: bytes


@dataclass
class Classified:
    outcomes: list[BatchOutcome] = field(default_factory=list)  # one per submission, in arrival order
    accepted: list[Pending] = field(default_factory=list)  # the new entries, at first_index, first_index + 1, ...
    fleets: dict[str, FleetHead] = field(default_factory=dict)  # fleet_id -> its new head
    equivocations: list[Equivocation] = field(default_factory=list)


def classify(batch: Sequence[Pending], first_index: int, existing: Mapping[tuple[str, int], ExistingEntry],
             heads: Mapping[str, int], retired: Set[str] = frozenset()) -> Classified:
    """Decide, in arrival order, what each submission of `batch` is.

    `existing` maps (fleet_id, sequence) to what the log holds there; `heads` maps
    fleet_id to its latest logged sequence, and `retired` holds the fleets whose
    latest logged bundle retired them. The first new entry gets index
    `first_index`. Within the batch, a later submission sees the earlier ones: a
    repeat is a duplicate of the first, a fleet's sequence must increase, and a
    retirement refuses every later new bundle of its fleet (a logged one is still a
    duplicate: replaying it changes nothing).
    """
    out = Classified()
    in_batch: dict[tuple[str, int], tuple[int, Pending]] = {}
    for p in batch:
        key = (p.fleet_id, p.sequence)
        prior = existing.get(key)
        if prior is not None:
            logged: tuple[bytes, bytes, int] | None = (prior.payload_digest, prior.leaf_hash, prior.idx)
        elif key in in_batch:
            idx, first = in_batch[key]
            logged = (first.payload_digest, first.leaf_hash, idx)
        else:
            logged = None
        if logged is not None:
            prior_digest, prior_hash, prior_idx = logged
            if prior_digest == p.payload_digest:
                out.outcomes.append((p, Duplicate(prior_idx, prior_hash)))
            else:
                out.equivocations.append(Equivocation(p, prior_digest))
                out.outcomes.append((p, EquivocationError(
                    f"fleet {p.fleet_id!r} sequence {p.sequence} is already logged with a different "
                    f"payload (logged digest {prior_digest.hex()}, submitted {p.payload_digest.hex()})"
                )))
            continue
        head: int | None
        if p.fleet_id in out.fleets:
            new = out.fleets[p.fleet_id]
            head, is_retired = new.sequence, new.retired
        else:
            head, is_retired = heads.get(p.fleet_id), p.fleet_id in retired
        if is_retired:
            out.outcomes.append((p, FleetRetiredError(
                f"fleet {p.fleet_id!r} was retired by its bundle of sequence {head}: "
                f"it accepts no later bundle (got sequence {p.sequence})"
            )))
            continue
        if head is not None and p.sequence <= head:
            out.outcomes.append((p, SequenceRollbackError(
                f"fleet {p.fleet_id!r} sequence {p.sequence} is not greater than the latest "
                f"logged sequence {head}"
            )))
            continue
        idx = first_index + len(out.accepted)
        out.accepted.append(p)
        in_batch[key] = (idx, p)
        out.fleets[p.fleet_id] = FleetHead(p.sequence, idx, p.retired)
        out.outcomes.append((p, idx))
    return out
