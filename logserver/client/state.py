"""`ClientState`: what a client remembers between verifications, in one JSON file.

* per log (origin): the latest verified checkpoint note; every newer checkpoint must be
  proved consistent with it (split-view detection);
* per fleet: the highest bundle sequence accepted, with its payload digest (rollback
  and same-sequence substitution detection);
* per fleet: the newest head seen through a verified fleet-head proof
  (docs/fleet-heads.md; `FleetHeadRollbackError` refuses an older one).

File format (docs/client.md, "Client state"):

    {"version": 2,
     "logs": {"<origin>": {"checkpoint": "<signed note>"}},
     "fleets": {"<fleet id>": {"sequence": N, "payload_digest": "<hex>", "origin": "<origin>", "index": N}},
     "heads": {"<fleet id>": {"sequence": N, "payload_digest": "<hex>", "status": "active" | "retired",
                              "origin": "<origin>", "index": N}}}

Version 2 added `heads`. A state without heads is written as version 1 (the same bytes
as before), so a client that never verified a fleet-head proof keeps a file older
versions read; both versions load.

`save()` replaces the file atomically (temp file, fsync, rename). Verification updates
the in-memory state only; the caller saves after a successful verification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..formats import Checkpoint, FormatError, parse_checkpoint, parse_note
from ..formats.strict import hex_hash, json_uint, strict_json
from .checkpoints import VerifiedCheckpoint, verify_checkpoint
from .consistency import ConsistencyProof, check_consistent
from .errors import (
    CheckpointVerificationError,
    FleetHeadRollbackError,
    FleetRollbackError,
    StateError,
    WitnessQuorumError,
)
from .files import atomic_write, exclusive_lock
from .policy import TrustPolicy

STATE_VERSION = 2
_V1_FIELDS = frozenset({"version", "logs", "fleets"})
_V2_FIELDS = _V1_FIELDS | {"heads"}
_HEAD_STATUSES = ("active", "retired")
STATE_FILE = "client-state.json"
LOCK_FILE = "client-state.lock"
_FLEET_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class FleetRecord:
    """The highest-sequence bundle accepted for a fleet."""

    sequence: int
    payload_digest: bytes
    origin: str
    index: int


@dataclass(frozen=True)
class HeadRecord:
    """The newest fleet head seen through a verified fleet-head proof: the bundle's
    sequence and payload digest, its status, the log and the bundle's leaf index."""

    sequence: int
    payload_digest: bytes
    status: str
    origin: str
    index: int


class ClientState:
    """Latest verified checkpoint per log, highest accepted sequence per fleet, and
    newest fleet head seen per fleet."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._checkpoints: dict[str, str] = {}
        self._fleets: dict[str, FleetRecord] = {}
        self._heads: dict[str, HeadRecord] = {}

    # --- persistence --------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> ClientState:
        """Load the state file at `path`; a missing file is an empty state bound to `path`."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise StateError(f"state file {path}: {exc.strerror or exc}") from None
        state = cls.loads(data)
        state.path = path
        return state

    @classmethod
    def loads(cls, data: bytes | str) -> ClientState:
        """Parse the JSON form strictly; raises `StateError`."""
        obj = strict_json(data, "client state", StateError)
        if not isinstance(obj, dict) or not (
            (obj.get("version") == 1 and set(obj) == _V1_FIELDS) or (obj.get("version") == 2 and set(obj) == _V2_FIELDS)
        ):
            raise StateError(
                f"client state: want an object with version 1 (logs, fleets) or {STATE_VERSION} (logs, fleets, heads)"
            )
        state = cls()
        heads = obj.get("heads", {})
        if not isinstance(heads, dict):
            raise StateError("client state: heads must be an object")
        for fleet_id, entry in heads.items():
            state._heads[fleet_id] = _parse_head(fleet_id, entry)
        if not isinstance(obj["logs"], dict) or not isinstance(obj["fleets"], dict):
            raise StateError("client state: logs and fleets must be objects")
        for origin, entry in obj["logs"].items():
            if not isinstance(entry, dict) or set(entry) != {"checkpoint"} or not isinstance(entry["checkpoint"], str):
                raise StateError(f"client state: logs[{origin!r}]: want {{'checkpoint': <signed note>}}")
            checkpoint = _parse_note_checkpoint(entry["checkpoint"], f"logs[{origin!r}]")
            if checkpoint.origin != origin:
                raise StateError(f"client state: logs[{origin!r}] holds a checkpoint of {checkpoint.origin!r}")
            state._checkpoints[origin] = entry["checkpoint"]
        for fleet_id, entry in obj["fleets"].items():
            state._fleets[fleet_id] = _parse_fleet(fleet_id, entry)
        return state

    def dumps(self) -> bytes:
        obj: dict[str, object] = {
            "version": STATE_VERSION if self._heads else 1,
            "logs": {origin: {"checkpoint": note} for origin, note in sorted(self._checkpoints.items())},
            "fleets": {
                fleet_id: {
                    "sequence": r.sequence,
                    "payload_digest": r.payload_digest.hex(),
                    "origin": r.origin,
                    "index": r.index,
                }
                for fleet_id, r in sorted(self._fleets.items())
            },
        }
        if self._heads:
            obj["heads"] = {
                fleet_id: {
                    "sequence": h.sequence,
                    "payload_digest": h.payload_digest.hex(),
                    "status": h.status,
                    "origin": h.origin,
                    "index": h.index,
                }
                for fleet_id, h in sorted(self._heads.items())
            }
        return (json.dumps(obj, indent=2) + "\n").encode()

    def save(self, path: Path | str | None = None) -> None:
        """Write the state atomically to `path` (default: the path it was loaded from)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("ClientState.save: no path")
        atomic_write(target, self.dumps())

    # --- queries ------------------------------------------------------------------------

    def checkpoint_note(self, origin: str) -> str | None:
        """The latest verified checkpoint note stored for the log `origin`."""
        return self._checkpoints.get(origin)

    def stored_checkpoint(self, origin: str) -> Checkpoint | None:
        note = self._checkpoints.get(origin)
        return None if note is None else _parse_note_checkpoint(note, f"logs[{origin!r}]")

    def fleet(self, fleet_id: str) -> FleetRecord | None:
        return self._fleets.get(fleet_id)

    @property
    def fleets(self) -> Mapping[str, FleetRecord]:
        return dict(self._fleets)

    def head(self, fleet_id: str) -> HeadRecord | None:
        """The newest head seen for the fleet through a fleet-head proof."""
        return self._heads.get(fleet_id)

    @property
    def heads(self) -> Mapping[str, HeadRecord]:
        return dict(self._heads)

    # --- checks and updates -------------------------------------------------------------

    def check_fleet(self, fleet_id: str, sequence: int, payload_digest: bytes) -> str:
        """Raise `FleetRollbackError` if a bundle of `fleet_id` with a higher sequence, or a
        different bundle with the same sequence, was already accepted."""
        record = self._fleets.get(fleet_id)
        if record is None:
            return f"first bundle seen for fleet {fleet_id!r} (sequence {sequence})"
        if sequence < record.sequence:
            raise FleetRollbackError(
                f"fleet {fleet_id!r} sequence: got {sequence}, want at least {record.sequence} "
                f"(already accepted, logged at index {record.index} of {record.origin!r})"
            )
        if sequence == record.sequence and payload_digest != record.payload_digest:
            raise FleetRollbackError(
                f"fleet {fleet_id!r} sequence {sequence}: got payload digest {payload_digest.hex()}, want the "
                f"accepted bundle's {record.payload_digest.hex()} (two different bundles with one sequence)"
            )
        if sequence == record.sequence:
            return f"fleet {fleet_id!r} sequence {sequence} is the bundle already accepted"
        return f"fleet {fleet_id!r} sequence {sequence} is newer than the accepted {record.sequence}"

    def record_fleet(self, fleet_id: str, sequence: int, payload_digest: bytes, origin: str, index: int) -> None:
        """Remember an accepted bundle (call `check_fleet` first)."""
        record = self._fleets.get(fleet_id)
        if record is None or sequence > record.sequence:
            self._fleets[fleet_id] = FleetRecord(sequence, payload_digest, origin, index)

    def check_head(self, fleet_id: str, sequence: int, payload_digest: bytes) -> str:
        """Raise `FleetHeadRollbackError` if a fleet-head proof names a head older than
        one already seen for the fleet, through a head or an accepted receipt, or
        another payload with the same sequence (docs/fleet-heads.md, check 6)."""
        seen = [
            (what, r.sequence, r.payload_digest, r.origin, r.index)
            for what, r in (("head", self._heads.get(fleet_id)), ("accepted bundle", self._fleets.get(fleet_id)))
            if r is not None
        ]
        if not seen:
            return f"first head seen for fleet {fleet_id!r} (sequence {sequence})"
        what, newest, digest, origin, index = max(seen, key=lambda s: s[1])
        if sequence < newest:
            raise FleetHeadRollbackError(
                f"fleet {fleet_id!r} head sequence: got {sequence}, want at least {newest} "
                f"(the {what} seen at index {index} of {origin!r})"
            )
        for what, seq, digest, origin, index in seen:
            if seq == sequence and digest != payload_digest:
                raise FleetHeadRollbackError(
                    f"fleet {fleet_id!r} sequence {sequence}: got payload digest {payload_digest.hex()}, want the "
                    f"{what}'s {digest.hex()} (index {index} of {origin!r}): two different bundles with one sequence"
                )
        if sequence == newest:
            return f"fleet {fleet_id!r} head sequence {sequence} is the newest already seen"
        return f"fleet {fleet_id!r} head sequence {sequence} is newer than the {newest} seen"

    def check_absent(self, fleet_id: str, origin: str) -> str:
        """Raise `FleetHeadRollbackError` if a verified absence of the fleet from log
        `origin` contradicts a head or an accepted bundle of the fleet already seen in
        that log (an older checkpoint, or a log that dropped the fleet)."""
        for what, r in (("head", self._heads.get(fleet_id)), ("accepted bundle", self._fleets.get(fleet_id))):
            if r is not None and r.origin == origin:
                raise FleetHeadRollbackError(
                    f"fleet {fleet_id!r}: got a proof of absence from {origin!r}, want its head: the {what} "
                    f"with sequence {r.sequence} was seen at index {r.index} of that log"
                )
        return f"no head or bundle of fleet {fleet_id!r} seen in {origin!r}"

    def record_head(
        self, fleet_id: str, sequence: int, payload_digest: bytes, status: str, origin: str, index: int
    ) -> None:
        """Remember a verified head (call `check_head` first); an older one is ignored."""
        if status not in _HEAD_STATUSES:
            raise ValueError(f"record_head: status {status!r}, want one of {_HEAD_STATUSES}")
        record = self._heads.get(fleet_id)
        if record is None or sequence > record.sequence:
            self._heads[fleet_id] = HeadRecord(sequence, payload_digest, status, origin, index)

    def advance(
        self, new: VerifiedCheckpoint, policy: TrustPolicy, proofs: Mapping[tuple[int, int], ConsistencyProof]
    ) -> str:
        """Compare a verified checkpoint with the stored one for its log and keep the
        larger. Raises `SplitViewError` (with evidence) or `ConsistencyError` (no proof
        for the sizes at hand); the state changes only on success."""
        note = self._checkpoints.get(new.origin)
        if note is None:
            self._checkpoints[new.origin] = new.note
            return f"no stored checkpoint for {new.origin!r}: stored this one (size {new.size})"
        stored = _reverify(note, policy)
        pair = (min(stored.size, new.size), max(stored.size, new.size))
        account = check_consistent(policy, stored, new, proofs.get(pair))
        if new.size > stored.size:
            self._checkpoints[new.origin] = new.note
        return f"consistent with the stored checkpoint (size {stored.size}): {account}"

    def set_checkpoint(self, checkpoint: VerifiedCheckpoint) -> None:
        """Store a checkpoint unconditionally (tests and tools; normally use `advance`)."""
        self._checkpoints[checkpoint.origin] = checkpoint.note


@contextmanager
def open_state(directory: Path | str) -> Iterator[ClientState]:
    """Load `directory/client-state.json` under an exclusive lock held for the block
    (the caller saves inside the block)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory / LOCK_FILE):
        yield ClientState.load(directory / STATE_FILE)


def _reverify(note: str, policy: TrustPolicy) -> VerifiedCheckpoint:
    """Re-verify a stored checkpoint. The quorum is not required again: it was met when
    the checkpoint was stored, and only the log's signature matters for evidence."""
    try:
        return verify_checkpoint(note, policy)
    except WitnessQuorumError:
        checkpoint = _parse_note_checkpoint(note, "stored checkpoint")
        return VerifiedCheckpoint(checkpoint, note, frozenset(), None)
    except CheckpointVerificationError as exc:
        raise StateError(f"stored checkpoint no longer verifies under the policy: {exc}") from None


def _parse_note_checkpoint(note: str, where: str) -> Checkpoint:
    try:
        return parse_checkpoint(parse_note(note).text)
    except FormatError as exc:
        raise StateError(f"client state: {where}: {exc}") from None


def _parse_head(fleet_id: str, entry: Any) -> HeadRecord:
    where = f"client state: heads[{fleet_id!r}]"
    if _FLEET_ID.fullmatch(fleet_id) is None:
        raise StateError(f"{where}: bad fleet id")
    if not isinstance(entry, dict) or set(entry) != {"sequence", "payload_digest", "status", "origin", "index"}:
        raise StateError(f"{where}: want sequence, payload_digest, status, origin and index")
    sequence = json_uint(entry["sequence"], f"{where}.sequence", StateError)
    index = json_uint(entry["index"], f"{where}.index", StateError)
    digest = hex_hash(entry["payload_digest"], f"{where}.payload_digest", StateError)
    if entry["status"] not in _HEAD_STATUSES:
        raise StateError(f"{where}.status: want one of {list(_HEAD_STATUSES)}")
    if not isinstance(entry["origin"], str) or not entry["origin"]:
        raise StateError(f"{where}.origin: want a non-empty string")
    return HeadRecord(sequence, digest, entry["status"], entry["origin"], index)


def _parse_fleet(fleet_id: str, entry: Any) -> FleetRecord:
    where = f"client state: fleets[{fleet_id!r}]"
    if _FLEET_ID.fullmatch(fleet_id) is None:
        raise StateError(f"{where}: bad fleet id")
    if not isinstance(entry, dict) or set(entry) != {"sequence", "payload_digest", "origin", "index"}:
        raise StateError(f"{where}: want sequence, payload_digest, origin and index")
    sequence = json_uint(entry["sequence"], f"{where}.sequence", StateError)
    index = json_uint(entry["index"], f"{where}.index", StateError)
    digest = hex_hash(entry["payload_digest"], f"{where}.payload_digest", StateError)
    if not isinstance(entry["origin"], str) or not entry["origin"]:
        raise StateError(f"{where}.origin: want a non-empty string")
    return FleetRecord(sequence, digest, entry["origin"], index)
