"""The fleet-head proof, version 2 (docs/fleet-heads.md, "The fleet-head proof"): the
log builds it (`build_fleet_head_proof`), a client parses it (`parse_fleet_head_proof`)
and verifies it (`logserver.client.fleet_head`).

    {"version": 2, "fleet_id", "checkpoint",
     "heads_leaf": {"index", "leaf", "inclusion_proof"},
     and either (present)
     "row": {"position", "fleet_id", "sequence", "leaf_index", "leaf_hash", "status",
             "next_fleet_id", "proof"},
     "bundle": {"envelope", "inclusion_proof"}
     or (absent)
     "covering": row, shaped as "row" (its chain link passes over the fleet id),
                 or null (an empty table)}

Version 1 (release 0.2.0: the sorted layout, "neighbours" for an absent fleet) is
refused by its version number, before its fields are read.

A proof (`inclusion_proof`, `proof`) is the standard padded base64 (RFC 4648 §4) of its
hashes concatenated, 32 bytes each, in RFC 6962 §2.1.1 order; `leaf` is the base64 of
the 49-byte HEADS leaf; `leaf_hash` is 64 lowercase hex digits; integers are JSON
numbers in [0, 2^63-1]; `envelope` is the DSSE envelope's JSON object.

Parsing is strict (formats/strict.py: one UTF-8 JSON value, no duplicate keys, exact
fields, canonical base64, sized hashes, bounded integers, no trailing data) and checks
form only: nothing is verified here, and the envelope is left to `bundle.parse_envelope`
(formats/ sits below bundle/, docs/architecture.md), as the receipt's logged envelope is.

The builder writes one byte string per proof: keys sorted, no whitespace, ASCII only
(non-ASCII characters escaped as \\uXXXX, as `json.dumps` does), so a static tree can
serve the same bytes the route answers, and test vectors are byte-stable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint, parse_checkpoint
from .errors import FleetHeadFormatError, FormatError
from .note import parse_note
from .strict import clip, decode_base64, encode_base64, exact_object, hex_hash, json_type, json_uint, strict_json

FLEET_HEAD_PROOF_VERSION = 2

MAX_FLEET_HEAD_PROOF_BYTES = 512 * 1024
"""A bound on the whole document: an envelope is at most 64 KiB (docs/formats.md), a
checkpoint with a handful of witnesses a few KiB, the rest about 2 KiB."""

MAX_PROOF_HASHES = 63
"""An inclusion proof in a tree of at most 2^63 - 1 leaves has at most 63 hashes."""

HEADS_LEAF_BYTES = 49
HASH_BYTES = 32

# The payload schema's fleet id (bundle/payload.py FLEET_ID_PATTERN and is_fleet_id),
# repeated because formats/ may not import bundle/; tests/test_fleet_heads.py checks
# that the two agree, as it checks STATUSES against bundle.payload.STATUSES.
_FLEET_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_RESERVED_FLEET_IDS = frozenset({".", ".."})
STATUSES: tuple[str, ...] = ("active", "retired")

_TOP_COMMON = frozenset({"version", "fleet_id", "checkpoint", "heads_leaf"})
_TOP_PRESENT = _TOP_COMMON | {"row", "bundle"}
_TOP_ABSENT = _TOP_COMMON | {"covering"}
_HEADS_LEAF_FIELDS = frozenset({"index", "leaf", "inclusion_proof"})
_ROW_FIELDS = frozenset({"position", "fleet_id", "sequence", "leaf_index", "leaf_hash", "status", "next_fleet_id",
                         "proof"})
_BUNDLE_FIELDS = frozenset({"envelope", "inclusion_proof"})
# Longest base64 text of MAX_PROOF_HASHES hashes; checked before decoding.
_MAX_PROOF_TEXT = 4 * -(-MAX_PROOF_HASHES * HASH_BYTES // 3)


@dataclass(frozen=True)
class ProvedRow:
    """A heads row with its position, the next fleet id in byte order (its entry's
    chain link), and the entry's RFC 6962 inclusion proof in the heads tree."""

    position: int
    fleet_id: str
    sequence: int
    leaf_index: int
    leaf_hash: bytes
    status: str
    proof: tuple[bytes, ...]
    next_fleet_id: str

    def to_dict(self) -> dict[str, object]:
        return {
            "position": self.position,
            "next_fleet_id": self.next_fleet_id,
            "fleet_id": self.fleet_id,
            "sequence": self.sequence,
            "leaf_index": self.leaf_index,
            "leaf_hash": self.leaf_hash.hex(),
            "status": self.status,
            "proof": encode_base64(b"".join(self.proof)),
        }


@dataclass(frozen=True)
class HeadsLeafProof:
    """The HEADS leaf claimed to be the checkpoint's last leaf, with its inclusion proof."""

    index: int
    leaf: bytes
    inclusion_proof: tuple[bytes, ...]

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "leaf": encode_base64(self.leaf),
                "inclusion_proof": encode_base64(b"".join(self.inclusion_proof))}


@dataclass(frozen=True)
class BundleProof:
    """The envelope the row names (its JSON object, not yet parsed) and its inclusion proof."""

    envelope: Mapping[str, Any]
    inclusion_proof: tuple[bytes, ...]

    def to_dict(self) -> dict[str, object]:
        return {"envelope": dict(self.envelope), "inclusion_proof": encode_base64(b"".join(self.inclusion_proof))}


@dataclass(frozen=True)
class FleetHeadProof:
    """A parsed fleet-head proof: `row` and `bundle` when the fleet is present,
    `covering` (a row, or None for an empty table) when it is absent. Nothing in it is
    verified."""

    fleet_id: str
    checkpoint_note: str
    checkpoint: Checkpoint
    heads_leaf: HeadsLeafProof
    row: ProvedRow | None = None
    bundle: BundleProof | None = None
    covering: ProvedRow | None = None
    version: int = FLEET_HEAD_PROOF_VERSION

    @property
    def present(self) -> bool:
        """Whether the proof claims the fleet has a row (else it claims absence)."""
        return self.row is not None

    def to_dict(self) -> dict[str, object]:
        obj: dict[str, object] = {
            "version": self.version,
            "fleet_id": self.fleet_id,
            "checkpoint": self.checkpoint_note,
            "heads_leaf": self.heads_leaf.to_dict(),
        }
        if self.row is not None and self.bundle is not None:
            obj["row"] = self.row.to_dict()
            obj["bundle"] = self.bundle.to_dict()
        else:
            obj["covering"] = None if self.covering is None else self.covering.to_dict()
        return obj

    def to_json(self) -> bytes:
        """The canonical bytes: sorted keys, no whitespace, ASCII (see the module docstring)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def build_fleet_head_proof(
    fleet_id: str,
    checkpoint_note: str,
    heads_leaf: HeadsLeafProof,
    *,
    row: ProvedRow | None = None,
    bundle: BundleProof | None = None,
    absent: bool = False,
    covering: ProvedRow | None = None,
    checkpoint: Checkpoint | None = None,
    check: bool = True,
) -> bytes:
    """The canonical JSON of a fleet-head proof: `row` and `bundle` for a present fleet,
    or `absent=True` and `covering` (None for an empty table) for an absent one. The
    result is parsed back before it is returned, so it always parses; an argument that
    would not (a bad hash size, both kinds at once) raises `ValueError`, a broken
    invariant of the caller.

    For many proofs at one checkpoint (a static publication pass rewrites every fleet's),
    pass `checkpoint` parsed once from `checkpoint_note`, and `check=False` to skip the
    parse-back for proofs made the same way as one that was checked: parsing the note
    and the proof back is most of the cost of a proof."""
    if (row is None) != (bundle is None) or (row is None) != absent or (covering is not None and not absent):
        raise ValueError("build_fleet_head_proof: want row and bundle (present) or absent=True and covering "
                         "(absent)")
    if checkpoint is None:
        try:
            checkpoint = parse_checkpoint(parse_note(checkpoint_note).text)
        except FormatError as exc:
            raise ValueError(f"build_fleet_head_proof: checkpoint: {exc}") from None
    proof = FleetHeadProof(
        fleet_id, checkpoint_note, checkpoint, heads_leaf, row, bundle, covering,
    )
    data = proof.to_json()
    if check:
        try:
            parse_fleet_head_proof(data)
        except FleetHeadFormatError as exc:
            raise ValueError(f"build_fleet_head_proof: the proof would not parse: {exc}") from None
    return data


def parse_fleet_head_proof(data: bytes | str) -> FleetHeadProof:
    """Parse a fleet-head proof strictly (see the module docstring); raises
    `FleetHeadFormatError` whose message names the field, what was got and what is wanted."""
    if len(data) > MAX_FLEET_HEAD_PROOF_BYTES:
        unit = "bytes" if isinstance(data, bytes) else "characters"
        raise FleetHeadFormatError(
            f"fleet-head proof: got {len(data)} {unit}, want at most {MAX_FLEET_HEAD_PROOF_BYTES}"
        )
    return parse_fleet_head_object(strict_json(data, "fleet-head proof", FleetHeadFormatError))


def parse_fleet_head_object(obj: object) -> FleetHeadProof:
    """Parse a fleet-head proof already decoded by `strict_json` (the object a receipt
    carries in its `fleet_head` field); the same checks as `parse_fleet_head_proof`."""
    if not isinstance(obj, dict):
        raise FleetHeadFormatError(f"fleet-head proof: got {json_type(obj)}, want object")
    if "version" in obj:
        # Before the fields: another version may have other fields.
        version = json_uint(obj["version"], "fleet-head proof version", FleetHeadFormatError)
        if version != FLEET_HEAD_PROOF_VERSION:
            raise FleetHeadFormatError(f"fleet-head proof version: got {version}, want {FLEET_HEAD_PROOF_VERSION}")
    present = "row" in obj or "bundle" in obj
    fields = exact_object(
        "fleet-head proof (" + ("present: row and bundle" if present else "absent: covering") + ")",
        obj, _TOP_PRESENT if present else _TOP_ABSENT, FleetHeadFormatError,
    )
    fleet_id = _fleet_id(fields["fleet_id"], "fleet_id")
    note = fields["checkpoint"]
    if not isinstance(note, str):
        raise FleetHeadFormatError(f"checkpoint: got {json_type(note)}, want string (a signed note)")
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
    except FormatError as exc:
        raise FleetHeadFormatError(f"checkpoint: {exc}") from None
    heads_leaf = _heads_leaf(fields["heads_leaf"])
    if present:
        row = _row(fields["row"], "row")
        raw_bundle = exact_object("bundle", fields["bundle"], _BUNDLE_FIELDS, FleetHeadFormatError)
        envelope = raw_bundle["envelope"]
        if not isinstance(envelope, dict):
            raise FleetHeadFormatError(f"bundle.envelope: got {json_type(envelope)}, want object (a DSSE envelope)")
        bundle = BundleProof(envelope, _hashes(raw_bundle["inclusion_proof"], "bundle.inclusion_proof"))
        return FleetHeadProof(fleet_id, note, checkpoint, heads_leaf, row=row, bundle=bundle)
    raw_covering = fields["covering"]
    covering = None if raw_covering is None else _row(raw_covering, "covering")
    return FleetHeadProof(fleet_id, note, checkpoint, heads_leaf, covering=covering)


def _fleet_id(value: object, what: str) -> str:
    if not isinstance(value, str) or _FLEET_ID.fullmatch(value) is None or value in _RESERVED_FLEET_IDS:
        shown = clip(value) if isinstance(value, str) else json_type(value)
        raise FleetHeadFormatError(
            f"{what}: got {shown}, want 1..128 characters of [A-Za-z0-9._:-], not '.' or '..'"
        )
    return value


def _hashes(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, str):
        raise FleetHeadFormatError(f"{what}: got {json_type(value)}, want base64 string")
    if len(value) > _MAX_PROOF_TEXT:
        raise FleetHeadFormatError(
            f"{what}: got {len(value)} base64 characters, want at most {_MAX_PROOF_TEXT} ({MAX_PROOF_HASHES} hashes)"
        )
    raw = decode_base64(value, what, FleetHeadFormatError)
    if len(raw) % HASH_BYTES:
        raise FleetHeadFormatError(f"{what}: got {len(raw)} bytes, want a multiple of {HASH_BYTES} (whole hashes)")
    return tuple(raw[i : i + HASH_BYTES] for i in range(0, len(raw), HASH_BYTES))


def _heads_leaf(value: object) -> HeadsLeafProof:
    fields = exact_object("heads_leaf", value, _HEADS_LEAF_FIELDS, FleetHeadFormatError)
    index = json_uint(fields["index"], "heads_leaf.index", FleetHeadFormatError)
    text = fields["leaf"]
    if not isinstance(text, str) or len(text) > 4 * HEADS_LEAF_BYTES:
        shown = f"{len(text)} characters" if isinstance(text, str) else json_type(text)
        raise FleetHeadFormatError(f"heads_leaf.leaf: got {shown}, want the base64 of {HEADS_LEAF_BYTES} bytes")
    leaf = decode_base64(text, "heads_leaf.leaf", FleetHeadFormatError)
    if len(leaf) != HEADS_LEAF_BYTES:
        raise FleetHeadFormatError(f"heads_leaf.leaf: got {len(leaf)} bytes, want {HEADS_LEAF_BYTES}")
    return HeadsLeafProof(index, leaf, _hashes(fields["inclusion_proof"], "heads_leaf.inclusion_proof"))


def _row(value: object, what: str) -> ProvedRow:
    fields = exact_object(what, value, _ROW_FIELDS, FleetHeadFormatError)
    status = fields["status"]
    if not isinstance(status, str) or status not in STATUSES:
        shown = clip(status) if isinstance(status, str) else json_type(status)
        raise FleetHeadFormatError(f"{what}.status: got {shown}, want one of {list(STATUSES)}")
    return ProvedRow(
        position=json_uint(fields["position"], f"{what}.position", FleetHeadFormatError),
        fleet_id=_fleet_id(fields["fleet_id"], f"{what}.fleet_id"),
        sequence=json_uint(fields["sequence"], f"{what}.sequence", FleetHeadFormatError),
        leaf_index=json_uint(fields["leaf_index"], f"{what}.leaf_index", FleetHeadFormatError),
        leaf_hash=hex_hash(fields["leaf_hash"], f"{what}.leaf_hash", FleetHeadFormatError),
        status=status,
        proof=_hashes(fields["proof"], f"{what}.proof"),
        next_fleet_id=_fleet_id(fields["next_fleet_id"], f"{what}.next_fleet_id"),
    )
