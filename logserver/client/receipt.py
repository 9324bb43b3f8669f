"""Strict parsing of the receipt a log returns for a submission (docs/formats.md,
"Receipts and tlog-proof"):

    {"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof",
     "duplicate"[, "envelope"]}

Parsing also checks that the C2SP tlog-proof text in `proof` says exactly what the
JSON fields say: the same index, the same inclusion proof hashes, the same checkpoint
note byte for byte, whose size is `tree_size`. A receipt whose two halves disagree is
refused, so a verifier can never be shown one and checked against the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..formats import Checkpoint, FormatError, TlogProof, parse_checkpoint, parse_note, parse_tlog_proof
from .errors import CheckpointVerificationError, InclusionError, MalformedError

MAX_RECEIPT_BYTES = 4 << 20
_REQUIRED = frozenset({"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof", "duplicate"})
_OPTIONAL = frozenset({"envelope"})
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_MAX_UINT63 = (1 << 63) - 1


@dataclass(frozen=True)
class Receipt:
    """A parsed receipt whose tlog-proof agrees with its JSON fields (nothing verified yet)."""

    index: int
    leaf_hash: bytes
    tree_size: int
    checkpoint_note: str
    checkpoint: Checkpoint
    inclusion_proof: tuple[bytes, ...]
    tlog_proof: TlogProof
    duplicate: bool
    logged_envelope: Mapping[str, Any] | None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load_json(data: bytes | str) -> Any:
    if isinstance(data, bytes):
        if len(data) > MAX_RECEIPT_BYTES:
            raise MalformedError(f"receipt: got {len(data)} bytes, want at most {MAX_RECEIPT_BYTES}", check="receipt_format")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError(f"receipt: invalid UTF-8 at byte {exc.start}", check="receipt_format") from None
    try:
        return json.loads(data, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedError(f"receipt: not strict JSON ({exc})", check="receipt_format") from None


def _uint(fields: Mapping[str, Any], name: str) -> int:
    value = fields[name]
    if type(value) is not int or not 0 <= value <= _MAX_UINT63:
        raise MalformedError(f"receipt {name}: got {value!r}, want an integer in [0, 2^63-1]", check="receipt_format")
    return value


def _hex_hash(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or _HEX_HASH.fullmatch(value) is None:
        raise MalformedError(f"receipt {name}: got {str(value)[:80]!r}, want 64 lowercase hex digits", check="receipt_format")
    return bytes.fromhex(value)


def parse_receipt(data: bytes | str | Mapping[str, Any]) -> Receipt:
    """Parse a receipt (JSON bytes/text or an already decoded object) strictly.

    Raises `MalformedError` for a malformed receipt, `InclusionError` when the
    tlog-proof's index or hashes disagree with the JSON fields, and `CheckpointVerificationError`
    when its checkpoint (or the checkpoint's size) disagrees.
    """
    if not isinstance(data, (bytes, str, Mapping)):
        raise MalformedError(f"receipt: got {type(data).__name__}, want JSON bytes, text or an object", check="receipt_format")
    obj = data if isinstance(data, Mapping) else _load_json(data)
    if not isinstance(obj, Mapping):
        raise MalformedError(f"receipt: got JSON {type(obj).__name__}, want an object", check="receipt_format")
    missing = sorted(_REQUIRED - obj.keys())
    unknown = sorted(obj.keys() - _REQUIRED - _OPTIONAL)
    if missing or unknown:
        raise MalformedError(
            f"receipt fields: got missing {missing} and unknown {unknown}, want exactly "
            f"{sorted(_REQUIRED)} (plus optional 'envelope')",
            check="receipt_format",
        )
    index, tree_size = _uint(obj, "index"), _uint(obj, "tree_size")
    leaf_hash = _hex_hash(obj["leaf_hash"], "leaf_hash")
    raw_proof = obj["inclusion_proof"]
    if not isinstance(raw_proof, list) or len(raw_proof) > 63:
        raise MalformedError("receipt inclusion_proof: want a list of at most 63 hex hashes", check="receipt_format")
    proof = tuple(_hex_hash(h, f"inclusion_proof[{i}]") for i, h in enumerate(raw_proof))
    if not isinstance(obj["duplicate"], bool):
        raise MalformedError(f"receipt duplicate: got {obj['duplicate']!r}, want true or false", check="receipt_format")
    note, proof_text = obj["checkpoint"], obj["proof"]
    if not isinstance(note, str) or not isinstance(proof_text, str):
        raise MalformedError("receipt checkpoint and proof: want strings", check="receipt_format")
    logged = obj.get("envelope")
    if logged is not None and not isinstance(logged, Mapping):
        raise MalformedError("receipt envelope: want a JSON object", check="receipt_format")
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
    except FormatError as exc:
        raise CheckpointVerificationError(f"receipt checkpoint: {exc}", check="checkpoint_signature") from None
    if index >= checkpoint.size:
        raise InclusionError(
            f"receipt index: got {index}, want less than the checkpoint's tree size {checkpoint.size}",
            check="inclusion_proof",
        )
    try:
        tlog_proof = parse_tlog_proof(proof_text)
    except FormatError as exc:
        raise MalformedError(f"receipt proof (tlog-proof): {exc}", check="receipt_format") from None

    # The two halves of the receipt must say the same thing.
    if tlog_proof.checkpoint != note:
        raise CheckpointVerificationError(
            "receipt: the tlog-proof's checkpoint differs from the receipt's checkpoint field, want identical notes",
            check="receipt_format",
        )
    if checkpoint.size != tree_size:
        raise CheckpointVerificationError(
            f"receipt tree_size: got {tree_size}, want the checkpoint's size {checkpoint.size}", check="receipt_format"
        )
    if tlog_proof.index != index:
        raise InclusionError(
            f"receipt index: got {index}, but its tlog-proof says index {tlog_proof.index}", check="receipt_format"
        )
    if tlog_proof.inclusion_proof != proof:
        raise InclusionError(
            "receipt inclusion_proof: the hex hashes differ from the tlog-proof's hashes, want the same proof",
            check="receipt_format",
        )
    return Receipt(
        index=index,
        leaf_hash=leaf_hash,
        tree_size=tree_size,
        checkpoint_note=note,
        checkpoint=checkpoint,
        inclusion_proof=proof,
        tlog_proof=tlog_proof,
        duplicate=obj["duplicate"],
        logged_envelope=logged,
    )
