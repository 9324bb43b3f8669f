"""C2SP tlog-proof@v1: an offline-verifiable proof that an entry is in a log.

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional)
    index <decimal>
    <base64 hash>             (zero or more: the RFC 6962 inclusion proof)
    <empty line>
    <checkpoint note, verbatim>
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from .checkpoint import Checkpoint, parse_checkpoint
from .errors import FormatError, TlogProofError
from .note import MAX_NOTE_SIZE, parse_note
from .strict import (
    MAX_UINT63,
    clip,
    decode_base64,
    decode_bounded_text,
    decode_hash,
    encode_base64,
    parse_decimal,
    split_header_and_checkpoint,
)

HEADER = "c2sp.org/tlog-proof@v1"
MAX_INCLUSION_PROOF_HASHES = 63
"""An inclusion proof in a tree of at most 2^63-1 leaves has at most 63 hashes."""

MAX_TLOG_PROOF_SIZE = 2 * MAX_NOTE_SIZE
"""Bound on a whole proof file: the checkpoint note bound plus as much for the rest."""

_EXTRA_PREFIX = "extra "
_INDEX_PREFIX = "index "


# A log builds every receipt of a batch around one checkpoint note: parse each note
# once (a pure function of the text; failures are not cached and raise every time).
@functools.lru_cache(maxsize=64)
def _parse_checkpoint_note(note: str) -> Checkpoint:
    return parse_checkpoint(parse_note(note).text)


@dataclass(frozen=True)
class TlogProof:
    """A parsed proof. `checkpoint` is the signed checkpoint note, not yet verified."""

    index: int
    inclusion_proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if type(self.index) is not int or not 0 <= self.index <= MAX_UINT63:
            raise TlogProofError(f"index: got {self.index!r}, want an integer in [0, 2^63-1]")
        if not isinstance(self.inclusion_proof, tuple):
            raise TlogProofError(f"inclusion proof: got {type(self.inclusion_proof).__name__}, want tuple")
        if len(self.inclusion_proof) > MAX_INCLUSION_PROOF_HASHES:
            raise TlogProofError(
                f"inclusion proof: got {len(self.inclusion_proof)} hashes, want at most {MAX_INCLUSION_PROOF_HASHES}"
            )
        for node in self.inclusion_proof:
            if not isinstance(node, bytes) or len(node) != 32:
                raise TlogProofError(f"inclusion proof hash: got {node!r}, want 32 bytes")
        if self.extra is not None and (not isinstance(self.extra, bytes) or not self.extra):
            # No extra data is spelled by omitting the line; an empty "extra " line
            # would be a second encoding of the same proof.
            raise TlogProofError(f"extra: got {self.extra!r}, want None or non-empty bytes")
        checkpoint = self.parsed_checkpoint()
        if self.index >= checkpoint.size:
            raise TlogProofError(f"index: got {self.index}, want less than the checkpoint size {checkpoint.size}")

    def parsed_checkpoint(self) -> Checkpoint:
        """The checkpoint carried by the proof (its signatures are NOT verified here)."""
        try:
            return _parse_checkpoint_note(self.checkpoint)
        except FormatError as exc:
            raise TlogProofError(f"checkpoint: {exc}") from None

    def format(self) -> str:
        """The proof file text."""
        return format_tlog_proof(self.index, self.inclusion_proof, self.checkpoint, self.extra)


def format_tlog_proof(index: int, inclusion_proof: Iterable[bytes], checkpoint: str, extra: bytes | None = None) -> str:
    """The proof file text of already-valid parts (what TlogProof.format returns; the
    log's receipts call it directly for proofs of its own checkpoints)."""
    lines = [HEADER]
    if extra is not None:
        lines.append(_EXTRA_PREFIX + encode_base64(extra))
    lines.append(f"{_INDEX_PREFIX}{index}")
    lines.extend(encode_base64(node) for node in inclusion_proof)
    return "\n".join(lines) + "\n\n" + checkpoint


def parse_tlog_proof(data: str | bytes) -> TlogProof:
    """Parse a tlog-proof@v1 file strictly; the checkpoint is parsed but not verified."""
    data = decode_bounded_text(data, "proof", TlogProofError, MAX_TLOG_PROOF_SIZE)
    lines, checkpoint = split_header_and_checkpoint(data, "proof", TlogProofError)
    if lines[0] != HEADER:
        raise TlogProofError(f"proof first line: got {clip(lines[0])}, want {HEADER!r}")
    position = 1
    extra = None
    if position < len(lines) and lines[position].startswith(_EXTRA_PREFIX):
        extra = decode_base64(lines[position][len(_EXTRA_PREFIX) :], "extra", TlogProofError)
        if not extra:
            raise TlogProofError("extra: got empty data, want the line omitted")
        position += 1
    if position >= len(lines) or not lines[position].startswith(_INDEX_PREFIX):
        got = clip(lines[position]) if position < len(lines) else "nothing"
        raise TlogProofError(f"proof line {position + 1}: got {got}, want 'index <decimal>'")
    index = parse_decimal(lines[position][len(_INDEX_PREFIX) :], "index", TlogProofError)
    hashes = lines[position + 1 :]
    if len(hashes) > MAX_INCLUSION_PROOF_HASHES:
        raise TlogProofError(
            f"inclusion proof: got {len(hashes)} hashes, want at most {MAX_INCLUSION_PROOF_HASHES}"
        )
    proof = tuple(decode_hash(line, "inclusion proof hash", TlogProofError) for line in hashes)
    result = TlogProof(index=index, inclusion_proof=proof, checkpoint=checkpoint, extra=extra)
    if result.format() != data:
        raise AssertionError("tlog-proof does not round-trip")
    return result
