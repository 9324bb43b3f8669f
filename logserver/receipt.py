"""The receipt a submitter gets: everything needed to verify inclusion offline.

    {"index", "leaf_hash", "tree_size", "checkpoint", "inclusion_proof", "proof", "duplicate"}

`checkpoint` is the signed note text, `inclusion_proof` the RFC 6962 audit path
as lowercase hex, and `proof` the same inclusion as C2SP tlog-proof@v1 text.
Together with the envelope and the log's public key it verifies offline.
"""
from __future__ import annotations

from .formats.tlog_proof import TlogProof


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
