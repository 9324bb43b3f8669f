"""C2SP tlog-witness bodies: the add-checkpoint request and the text/x.tlog.size body.

    old <decimal>\\n
    <base64 hash>\\n          (zero to 63: an RFC 6962 consistency proof)
    \\n
    <checkpoint note>

The response, one or more cosignature lines, is parsed by `note.parse_signature_lines`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoint import Checkpoint, parse_checkpoint
from .errors import FormatError, WitnessRequestError
from .note import MAX_NOTE_SIZE, parse_note
from .strict import (
    MAX_UINT63,
    clip,
    decode_bounded_text,
    decode_hash,
    encode_base64,
    parse_decimal,
    split_header_and_checkpoint,
)

TLOG_SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_CONSISTENCY_PROOF_HASHES = 63
"""tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"."""

MAX_ADD_CHECKPOINT_SIZE = MAX_NOTE_SIZE + 4096
"""The checkpoint note bound plus room for the old size line and 63 proof lines."""

_OLD_PREFIX = "old "


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed add-checkpoint request; `checkpoint` is the signed note, not yet verified."""

    old_size: int
    consistency_proof: tuple[bytes, ...]
    checkpoint: str

    def __post_init__(self) -> None:
        if type(self.old_size) is not int or not 0 <= self.old_size <= MAX_UINT63:
            raise WitnessRequestError(f"old size: got {self.old_size!r}, want an integer in [0, 2^63-1]")
        if not isinstance(self.consistency_proof, tuple):
            raise WitnessRequestError(
                f"consistency proof: got {type(self.consistency_proof).__name__}, want tuple"
            )
        if len(self.consistency_proof) > MAX_CONSISTENCY_PROOF_HASHES:
            raise WitnessRequestError(
                f"consistency proof: got {len(self.consistency_proof)} hashes, "
                f"want at most {MAX_CONSISTENCY_PROOF_HASHES}"
            )
        for node in self.consistency_proof:
            if not isinstance(node, bytes) or len(node) != 32:
                raise WitnessRequestError(f"consistency proof hash: got {node!r}, want 32 bytes")
        if self.old_size == 0 and self.consistency_proof:
            # "The proof MUST be empty if the old size is zero."
            raise WitnessRequestError(
                f"consistency proof: got {len(self.consistency_proof)} hashes for old size 0, want none"
            )
        size = self.parsed_checkpoint().size
        if self.old_size > size:
            # "The old size MUST be equal to or lower than the checkpoint size" (400).
            raise WitnessRequestError(f"old size: got {self.old_size}, want at most the checkpoint size {size}")

    def parsed_checkpoint(self) -> Checkpoint:
        """The submitted checkpoint (its signatures are NOT verified here)."""
        try:
            return parse_checkpoint(parse_note(self.checkpoint).text)
        except FormatError as exc:
            raise WitnessRequestError(f"checkpoint: {exc}") from None

    def format(self) -> str:
        """The request body."""
        lines = [f"{_OLD_PREFIX}{self.old_size}"] + [encode_base64(node) for node in self.consistency_proof]
        return "".join(line + "\n" for line in lines) + "\n" + self.checkpoint


def parse_add_checkpoint_request(body: bytes | str) -> AddCheckpointRequest:
    """Parse an add-checkpoint request body strictly; the checkpoint is parsed, not verified."""
    body = decode_bounded_text(body, "request", WitnessRequestError, MAX_ADD_CHECKPOINT_SIZE)
    lines, checkpoint = split_header_and_checkpoint(body, "request", WitnessRequestError)
    if not lines[0].startswith(_OLD_PREFIX):
        raise WitnessRequestError(f"request first line: got {clip(lines[0])}, want 'old <decimal>'")
    old_size = parse_decimal(lines[0][len(_OLD_PREFIX) :], "old size", WitnessRequestError)
    if len(lines) - 1 > MAX_CONSISTENCY_PROOF_HASHES:
        raise WitnessRequestError(
            f"consistency proof: got {len(lines) - 1} lines, want at most {MAX_CONSISTENCY_PROOF_HASHES}"
        )
    proof = tuple(decode_hash(line, "consistency proof hash", WitnessRequestError) for line in lines[1:])
    request = AddCheckpointRequest(old_size=old_size, consistency_proof=proof, checkpoint=checkpoint)
    if request.format() != body:
        raise AssertionError("add-checkpoint request does not round-trip")
    return request


def format_tlog_size(size: int) -> str:
    """A text/x.tlog.size body: the size in decimal and a newline."""
    if type(size) is not int or not 0 <= size <= MAX_UINT63:
        raise ValueError(f"tree size: got {size!r}, want an integer in [0, 2^63-1]")
    return f"{size}\n"


def parse_tlog_size(body: bytes | str) -> int:
    """Parse a text/x.tlog.size body strictly."""
    if isinstance(body, bytes):
        try:
            body = body.decode("ascii")
        except UnicodeDecodeError:
            raise WitnessRequestError(f"tlog size body: got {body[:40]!r}, want ASCII") from None
    if not body.endswith("\n"):
        raise WitnessRequestError(f"tlog size body: got {clip(body)}, want a decimal and a newline")
    return parse_decimal(body[:-1], "tlog size", WitnessRequestError)
