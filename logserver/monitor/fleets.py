"""Per-fleet sequence tracking: gaps, rollbacks, duplicates and equivocation.

The log promises that each fleet's sequences strictly increase and that no
(fleet, sequence) is logged with two payloads (docs/formats.md). The monitor checks
that promise from the entries alone. Per fleet it keeps the head (highest sequence)
and the last `RECENT` sequences' payload digests, so an old sequence logged again is
told apart as a duplicate (same payload) or an equivocation (another payload) while
it is recent, and reported as a rollback otherwise. Memory is O(fleets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .alerts import (
    DUPLICATE_BUNDLE,
    EQUIVOCATION,
    SEQUENCE_GAP,
    SEQUENCE_ROLLBACK,
    WATCHED_FLEET_BUNDLE,
    Alert,
)

RECENT = 16


@dataclass(frozen=True, slots=True)
class LoggedBundle:
    """What the tracker needs to know about one verified entry."""

    index: int
    fleet_id: str
    sequence: int
    payload_digest: bytes
    leaf_hash: bytes


@dataclass
class FleetHead:
    """The highest sequence seen for a fleet, and recent sequences' (digest, index)."""

    sequence: int
    payload_digest: bytes
    index: int
    recent: dict[int, tuple[bytes, int]] = field(default_factory=dict)

    def copy(self) -> FleetHead:
        return FleetHead(self.sequence, self.payload_digest, self.index, dict(self.recent))


class FleetTracker:
    """Observes verified entries in log order and returns the alerts they raise."""

    def __init__(self, heads: Mapping[str, FleetHead], watched: Iterable[str] = ()) -> None:
        self.heads: dict[str, FleetHead] = {k: v.copy() for k, v in heads.items()}
        self.watched = frozenset(watched)

    def observe(self, entry: LoggedBundle) -> list[Alert]:
        alerts: list[Alert] = []
        fleet, seq = entry.fleet_id, entry.sequence
        details = {
            "fleet_id": fleet,
            "sequence": seq,
            "index": entry.index,
            "leaf_hash": entry.leaf_hash.hex(),
            "payload_digest": entry.payload_digest.hex(),
        }
        if fleet in self.watched:
            alerts.append(Alert(WATCHED_FLEET_BUNDLE, f"fleet {fleet!r} logged sequence {seq} at index {entry.index}",
                                dict(details), key=f"watch:{entry.index}"))
        head = self.heads.get(fleet)
        if head is None:
            self.heads[fleet] = FleetHead(
                seq, entry.payload_digest, entry.index, {seq: (entry.payload_digest, entry.index)}
            )
            return alerts
        if seq > head.sequence:
            if seq > head.sequence + 1:
                alerts.append(Alert(
                    SEQUENCE_GAP,
                    f"fleet {fleet!r} jumped from sequence {head.sequence} (index {head.index}) to {seq} "
                    f"(index {entry.index}): {seq - head.sequence - 1} sequence(s) never logged",
                    {**details, "previous_sequence": head.sequence, "previous_index": head.index},
                    key=f"gap:{entry.index}",
                ))
            head.sequence, head.payload_digest, head.index = seq, entry.payload_digest, entry.index
            head.recent[seq] = (entry.payload_digest, entry.index)
            while len(head.recent) > RECENT:
                del head.recent[min(head.recent)]
            return alerts
        earlier = head.recent.get(seq)
        if earlier is not None:
            digest, index = earlier
            extra = {**details, "earlier_index": index, "earlier_payload_digest": digest.hex()}
            if digest == entry.payload_digest:
                alerts.append(Alert(DUPLICATE_BUNDLE, f"fleet {fleet!r} sequence {seq}: the same payload logged again "
                                    f"at index {entry.index} (first at {index})", extra, key=f"dup:{entry.index}"))
            else:
                alerts.append(Alert(EQUIVOCATION, f"fleet {fleet!r} sequence {seq}: two different payloads logged, "
                                    f"at indexes {index} and {entry.index}", extra, key=f"equiv:{entry.index}"))
            return alerts
        alerts.append(Alert(
            SEQUENCE_ROLLBACK,
            f"fleet {fleet!r} logged sequence {seq} at index {entry.index} after sequence {head.sequence} "
            f"(index {head.index})",
            {**details, "head_sequence": head.sequence, "head_index": head.index},
            key=f"rollback:{entry.index}",
        ))
        return alerts
