"""The receipt a log returns for a submission (docs/formats.md, "Receipts and
tlog-proof"): everything needed to verify inclusion offline. The log builds it
(`build_receipt`, `receipt_json`), a client parses it (`parse_receipt`).

    {"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof",
     "duplicate"[, "envelope"][, "fleet_head"]}

`checkpoint` is the signed note text, `inclusion_proof` the RFC 6962 audit path
as lowercase hex, and `proof` the same inclusion as C2SP tlog-proof@v1 text.
`envelope`, the logged envelope, is in a duplicate's answer and GET /v1/fleets.
`fleet_head`, a fleet-head proof (formats/fleet_head.py, as a JSON object), is added
by a client (`logserver submit --with-head`), never by the log: with it, a verifier
checks offline that the bundle is also its fleet's current head (docs/fleet-heads.md).

Parsing also checks that the tlog-proof text says exactly what the JSON fields say:
the same index, the same inclusion proof hashes, the same checkpoint note byte for
byte, whose size is `tree_size`. A receipt whose two halves disagree is refused, so
a verifier can never be shown one and checked against the other. Nothing is
verified here: signatures and the proof are the client's checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring_ascii  # what json.dumps uses for str (C)
from typing import Any

from .checkpoint import Checkpoint, parse_checkpoint
from .errors import FleetHeadFormatError, FormatError, ReceiptError
from .fleet_head import FleetHeadProof, parse_fleet_head_object
from .note import parse_note
from .strict import hex_hash, json_type, json_uint, strict_json
from .tlog_proof import MAX_INCLUSION_PROOF_HASHES, TlogProof, format_tlog_proof, parse_tlog_proof

MAX_RECEIPT_BYTES = 4 << 20
_REQUIRED = frozenset({"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof", "duplicate"})
_OPTIONAL = frozenset({"envelope", "fleet_head"})


def build_receipt(
    index: int, leaf_hash: bytes, tree_size: int, checkpoint_note: str, proof: list[bytes], *, duplicate: bool
) -> dict:
    return {
        "index": index,
        "leaf_hash": leaf_hash.hex(),
        "tree_size": tree_size,
        "checkpoint": checkpoint_note,
        "inclusion_proof": [h.hex() for h in proof],
        "proof": TlogProof(index=index, inclusion_proof=tuple(proof), checkpoint=checkpoint_note).format(),
        "duplicate": duplicate,
    }


def receipt_json(index: int, leaf_hash: bytes, tree_size: int, checkpoint_note: str, proof: list[bytes],
                 *, duplicate: bool) -> bytes:
    """json.dumps(build_receipt(...), separators=(",", ":")), byte for byte, without the
    dict and the encoder: every submission's answer. The proof hashes are ours (32
    bytes each) and the note is the log's own signed checkpoint."""
    note = _escaped_note(checkpoint_note)
    # The tlog-proof is its header lines then the note: JSON escaping works character by
    # character, so the escaped proof is the escaped header followed by the escaped note.
    head = encode_basestring_ascii(format_tlog_proof(index, proof, "")).encode()[:-1]
    return b'{"index":%d,"leaf_hash":"%s","tree_size":%d,"checkpoint":"%s","inclusion_proof":[%s],' \
           b'"proof":%s%s","duplicate":%s}' % (
               index, leaf_hash.hex().encode(), tree_size, note,
               b",".join(b'"' + h.hex().encode() + b'"' for h in proof),
               head, note, b"true" if duplicate else b"false")


@lru_cache(maxsize=8)
def _escaped_note(note: str) -> bytes:
    """The JSON string body (no quotes) of a checkpoint note. Every receipt of a commit
    carries the same note twice, and with the log's ML-DSA-44 line it is ~3.6 KB: it is
    escaped once per note, not twice per receipt (bench/results, section 8)."""
    return encode_basestring_ascii(note).encode()[1:-1]


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
    fleet_head: FleetHeadProof | None = None


def parse_receipt(data: bytes | str | Mapping[str, Any]) -> Receipt:
    """Parse a receipt (JSON bytes/text or an already decoded object) strictly.

    Raises `ReceiptError`: `part` "receipt" for malformed JSON or fields, "checkpoint"
    when the checkpoint note does not parse or disagrees with `tree_size` or the
    tlog-proof, "inclusion" when the index lies beyond the checkpoint or disagrees
    with the tlog-proof's index or hashes; `disagreement` when the two halves of the
    receipt are each well-formed but say different things.
    """
    if isinstance(data, bytes) and len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"receipt: got {len(data)} bytes, want at most {MAX_RECEIPT_BYTES}")
    if isinstance(data, (bytes, str)):
        obj = strict_json(data, "receipt", ReceiptError)
    elif isinstance(data, Mapping):
        obj = data
    else:
        raise ReceiptError(f"receipt: got {type(data).__name__}, want JSON bytes, text or an object")
    if not isinstance(obj, Mapping):
        raise ReceiptError(f"receipt: got JSON {json_type(obj)}, want an object")
    missing = sorted(_REQUIRED - obj.keys())
    unknown = sorted(obj.keys() - _REQUIRED - _OPTIONAL)
    if missing or unknown:
        raise ReceiptError(
            f"receipt fields: got missing {missing} and unknown {unknown}, want exactly "
            f"{sorted(_REQUIRED)} (plus optional 'envelope' and 'fleet_head')"
        )
    index = json_uint(obj["index"], "receipt index", ReceiptError)
    tree_size = json_uint(obj["tree_size"], "receipt tree_size", ReceiptError)
    leaf_hash = hex_hash(obj["leaf_hash"], "receipt leaf_hash", ReceiptError)
    raw_proof = obj["inclusion_proof"]
    if not isinstance(raw_proof, list) or len(raw_proof) > MAX_INCLUSION_PROOF_HASHES:
        raise ReceiptError(f"receipt inclusion_proof: want a list of at most {MAX_INCLUSION_PROOF_HASHES} hex hashes")
    proof = tuple(hex_hash(h, f"receipt inclusion_proof[{i}]", ReceiptError) for i, h in enumerate(raw_proof))
    if not isinstance(obj["duplicate"], bool):
        raise ReceiptError(f"receipt duplicate: got {json_type(obj['duplicate'])}, want true or false")
    note, proof_text = obj["checkpoint"], obj["proof"]
    if not isinstance(note, str) or not isinstance(proof_text, str):
        raise ReceiptError("receipt checkpoint and proof: want strings")
    logged = obj.get("envelope")
    if logged is not None and not isinstance(logged, Mapping):
        raise ReceiptError("receipt envelope: want a JSON object")
    head = None
    if "fleet_head" in obj:
        try:
            head = parse_fleet_head_object(obj["fleet_head"])
        except FleetHeadFormatError as exc:
            raise ReceiptError(f"receipt fleet_head: {exc}") from None
    try:
        checkpoint = parse_checkpoint(parse_note(note).text)
    except FormatError as exc:
        raise ReceiptError(f"receipt checkpoint: {exc}", part="checkpoint") from None
    if index >= checkpoint.size:
        raise ReceiptError(
            f"receipt index: got {index}, want less than the checkpoint's tree size {checkpoint.size}",
            part="inclusion",
        )
    try:
        tlog_proof = parse_tlog_proof(proof_text)
    except FormatError as exc:
        raise ReceiptError(f"receipt proof (tlog-proof): {exc}") from None

    # The two halves of the receipt must say the same thing.
    if tlog_proof.checkpoint != note:
        raise ReceiptError(
            "receipt: the tlog-proof's checkpoint differs from the receipt's checkpoint field, want identical notes",
            part="checkpoint", disagreement=True,
        )
    if checkpoint.size != tree_size:
        raise ReceiptError(
            f"receipt tree_size: got {tree_size}, want the checkpoint's size {checkpoint.size}",
            part="checkpoint", disagreement=True,
        )
    if tlog_proof.index != index:
        raise ReceiptError(
            f"receipt index: got {index}, but its tlog-proof says index {tlog_proof.index}",
            part="inclusion", disagreement=True,
        )
    if tlog_proof.inclusion_proof != proof:
        raise ReceiptError(
            "receipt inclusion_proof: the hex hashes differ from the tlog-proof's hashes, want the same proof",
            part="inclusion", disagreement=True,
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
        fleet_head=head,
    )
