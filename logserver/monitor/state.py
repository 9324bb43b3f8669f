"""The monitor's state file: where it is in the log, in O(log n + fleets) space.

    {"version": 3,
     "origin": "<log origin>" | null,
     "checkpoint": "<latest verified signed checkpoint note>" | null,
     "verified": {"size": N, "frontier": ["<hex>", ...]},
     "fleets": {"<fleet id>": {"sequence": N, "payload_digest": "<hex>", "index": N,
                               "recent": [[sequence, "<hex digest>", index], ...]}},
     "heads": {"previous": N, "first": N | null,
               "rows": [[fleet_id, sequence, leaf_index, "<leaf hash hex>", status], ...]} | null}

`heads` is the monitor's fold of the heads table (monitor/heads.py) over the verified
entries: its rows, the index of the last HEADS leaf (`previous`, 0 if none) and of the
first (`first`), the rows in the heads tree's order (the order their fleets first
appeared). A version 1 file (written before the fold existed) loads with `heads` null:
its fold is unknown without reading the log again from 0, so that monitor does not
check HEADS leaves (docs/client.md, "Fleet heads"); a fresh state directory does. So
does a version 2 file (release 0.2.0): its rows are sorted by fleet id, and the order
they first appeared in, which the chained layout needs, is not in it; its `heads` is
read for form and dropped.

`verified` is the compact range (RFC 6962 right frontier) of the entries the monitor
has verified itself: with it the monitor resumes at entry N without replaying, and
recomputes every later root from the entries. The checkpoint may be ahead of it
(size >= N) while a catch-up is in progress. Written atomically (temp, fsync, rename).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.heads import HeadsError, HeadsRow, HeadsTable, HeadsUpdateError
from ..client.errors import StateError
from ..client.files import atomic_write
from ..formats import Checkpoint, FormatError, parse_checkpoint, parse_note
from ..formats.strict import hex_hash, json_uint, strict_json
from ..merkle import CompactRange, MerkleError
from .fleets import FleetHead
from .heads import HeadsFolder

STATE_VERSION = 3
STATE_FILE = "monitor-state.json"


@dataclass
class MonitorState:
    origin: str | None = None
    checkpoint: str | None = None
    verified: CompactRange = field(default_factory=CompactRange)
    fleets: dict[str, FleetHead] = field(default_factory=dict)
    heads: HeadsFolder | None = field(default_factory=HeadsFolder)

    def parsed_checkpoint(self) -> Checkpoint | None:
        if self.checkpoint is None:
            return None
        return parse_checkpoint(parse_note(self.checkpoint).text)

    def dumps(self) -> bytes:
        obj = {
            "version": STATE_VERSION,
            "origin": self.origin,
            "checkpoint": self.checkpoint,
            "verified": {"size": self.verified.size, "frontier": [h.hex() for h in self.verified.hashes]},
            "fleets": {
                fid: {
                    "sequence": h.sequence,
                    "payload_digest": h.payload_digest.hex(),
                    "index": h.index,
                    "recent": [[s, d.hex(), i] for s, (d, i) in sorted(h.recent.items())],
                }
                for fid, h in sorted(self.fleets.items())
            },
            "heads": None if self.heads is None else {
                "previous": self.heads.previous,
                "first": self.heads.first,
                "rows": [[r.fleet_id, r.sequence, r.leaf_index, r.leaf_hash.hex(), r.status]
                         for r in self.heads.table.rows],
            },
        }
        return (json.dumps(obj, indent=1) + "\n").encode()

    def save(self, path: Path) -> None:
        atomic_write(path, self.dumps())

    @classmethod
    def load(cls, path: Path) -> MonitorState:
        """Load the state at `path`; a missing file is a fresh state."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise StateError(f"monitor state {path}: {exc.strerror or exc}") from None
        try:
            return cls.loads(data)
        except StateError as exc:
            raise StateError(f"monitor state {path}: {exc}") from None

    @classmethod
    def loads(cls, data: bytes) -> MonitorState:
        obj = strict_json(data, "not strict JSON", StateError)
        want = {"version", "origin", "checkpoint", "verified", "fleets"}
        version = obj.get("version") if isinstance(obj, dict) else None
        if version in (2, STATE_VERSION):
            want.add("heads")
        if not isinstance(obj, dict) or set(obj) != want or version not in (1, 2, STATE_VERSION):
            raise StateError(f"want an object with version {STATE_VERSION} (or 1 or 2) and fields {sorted(want)}")
        state = cls(origin=obj["origin"], checkpoint=obj["checkpoint"])
        if state.origin is not None and not isinstance(state.origin, str):
            raise StateError("origin: want a string or null")
        cp = None
        if state.checkpoint is not None:
            if not isinstance(state.checkpoint, str):
                raise StateError("checkpoint: want a signed note or null")
            try:
                cp = state.parsed_checkpoint()
            except FormatError as exc:
                raise StateError(f"checkpoint: {exc}") from None
            assert cp is not None
            if cp.origin != state.origin:
                raise StateError(f"checkpoint: origin {cp.origin!r}, want {state.origin!r}")
        state.verified = _compact_range(obj["verified"])
        if cp is not None and state.verified.size > cp.size:
            raise StateError(f"verified size {state.verified.size} is beyond the checkpoint size {cp.size}")
        if not isinstance(obj["fleets"], dict):
            raise StateError("fleets: want an object")
        state.fleets = {fid: _fleet(fid, v) for fid, v in obj["fleets"].items()}
        # Versions 1 and 2: no fold kept in the heads tree's order. Unknown, unless
        # nothing was verified yet.
        if version == 2 and obj["heads"] is not None:
            _heads(obj["heads"])
        heads = obj.get("heads") if version == STATE_VERSION else None
        state.heads = _heads(heads) if heads is not None else (HeadsFolder() if state.verified.size == 0 else None)
        if state.heads is not None:
            _check_fold(state.heads, state.verified.size)
        return state


def _check_fold(heads: HeadsFolder, size: int) -> None:
    """The fold covers the verified entries and nothing beyond them: its HEADS leaves
    (the first, the last) and every row's bundle are among the first `size` leaves, and
    a fold that saw a HEADS leaf knows its first one (index 0 holds a bundle: a
    `previous` of 0 means none)."""
    if size and heads.previous >= size:
        raise StateError(f"heads.previous {heads.previous} is beyond the verified size {size}")
    if (heads.first is None) != (heads.previous == 0) or (heads.first is not None and heads.first > heads.previous):
        raise StateError(f"heads.first {heads.first} and heads.previous {heads.previous}: want null and 0 (no HEADS "
                         "leaf folded yet) or first <= previous")
    late = next((r for r in heads.table if r.leaf_index >= size), None)
    if late is not None:
        raise StateError(f"heads.rows: fleet {late.fleet_id!r} names leaf {late.leaf_index}, want a leaf below the "
                         f"verified size {size}")


def _uint(value: Any, what: str) -> int:
    return json_uint(value, what, StateError)


def _hex(value: Any, what: str) -> bytes:
    return hex_hash(value, what, StateError)


def _compact_range(obj: Any) -> CompactRange:
    if not isinstance(obj, dict) or set(obj) != {"size", "frontier"} or not isinstance(obj["frontier"], list):
        raise StateError("verified: want {size, frontier}")
    size = _uint(obj["size"], "verified.size")
    try:
        return CompactRange(size, [_hex(h, "verified.frontier") for h in obj["frontier"]])
    except MerkleError as exc:
        raise StateError(f"verified: {exc}") from None


def _fleet(fleet_id: str, obj: Any) -> FleetHead:
    where = f"fleets[{fleet_id!r}]"
    if not isinstance(obj, dict) or set(obj) != {"sequence", "payload_digest", "index", "recent"}:
        raise StateError(f"{where}: want sequence, payload_digest, index, recent")
    recent: dict[int, tuple[bytes, int]] = {}
    if not isinstance(obj["recent"], list):
        raise StateError(f"{where}.recent: want a list")
    for item in obj["recent"]:
        if not isinstance(item, list) or len(item) != 3:
            raise StateError(f"{where}.recent: want [sequence, digest, index] items")
        recent[_uint(item[0], where)] = (_hex(item[1], where), _uint(item[2], where))
    return FleetHead(
        _uint(obj["sequence"], where), _hex(obj["payload_digest"], where), _uint(obj["index"], where), recent
    )


def _heads(obj: Any) -> HeadsFolder:
    if not isinstance(obj, dict) or set(obj) != {"previous", "first", "rows"} or not isinstance(obj["rows"], list):
        raise StateError("heads: want null or {previous, first, rows}")
    previous = _uint(obj["previous"], "heads.previous")
    first = None if obj["first"] is None else _uint(obj["first"], "heads.first")
    rows = []
    for i, item in enumerate(obj["rows"]):
        if not isinstance(item, list) or len(item) != 5 or not isinstance(item[0], str) or not isinstance(item[4], str):
            raise StateError(f"heads.rows[{i}]: want [fleet_id, sequence, leaf_index, leaf_hash, status]")
        try:
            rows.append(HeadsRow(item[0], _uint(item[1], f"heads.rows[{i}]"), _uint(item[2], f"heads.rows[{i}]"),
                                 _hex(item[3], f"heads.rows[{i}]"), item[4]))
        except HeadsError as exc:
            raise StateError(f"heads.rows[{i}]: {exc}") from None
    try:
        table = HeadsTable.from_rows(rows)
    except HeadsUpdateError as exc:
        raise StateError(f"heads.rows: {exc}") from None
    return HeadsFolder(table, previous, first)
