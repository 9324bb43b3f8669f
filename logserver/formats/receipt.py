"""The receipt a submitter gets: everything needed to verify inclusion offline.

    {"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof", "duplicate"}

`checkpoint` is the signed note text, `inclusion_proof` the RFC 6962 audit path
as lowercase hex, and `proof` the same inclusion as C2SP tlog-proof@v1 text.
Together with the envelope and the log's public key it verifies offline.
"""
from __future__ import annotations

from json.encoder import encode_basestring_ascii  # what json.dumps uses for str (C)

from .tlog_proof import TlogProof, format_tlog_proof


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
    return b'{"index":%d,"leaf_hash":"%s","tree_size":%d,"checkpoint":%s,"inclusion_proof":[%s],' \
           b'"proof":%s,"duplicate":%s}' % (
               index, leaf_hash.hex().encode(), tree_size, encode_basestring_ascii(checkpoint_note).encode(),
               b",".join(b'"' + h.hex().encode() + b'"' for h in proof),
               encode_basestring_ascii(format_tlog_proof(index, proof, checkpoint_note)).encode(),
               b"true" if duplicate else b"false")
