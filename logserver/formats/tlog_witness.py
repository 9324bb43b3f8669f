"""C2SP tlog-witness bodies: the add-checkpoint and sign-subtree requests and the
text/x.tlog.size body.

add-checkpoint:

    old <decimal>\\n
    <base64 hash>\\n          (zero to 63: an RFC 6962 consistency proof)
    \\n
    <checkpoint note>

sign-subtree:

    subtree <start> <end>\\n
    <base64 subtree hash>\\n
    — <name> <base64>\\n      (zero to 8 subtree cosignature lines)
    <base64 hash>\\n          (zero to 63: a subtree consistency proof, MTC draft §4.4)
    \\n
    <reference checkpoint: a signed note, or its body alone>

Responses, one or more note signature lines, are parsed by `note.parse_signature_lines`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoint import Checkpoint, parse_checkpoint
from .cosignature import Subtree
from .errors import FormatError, WitnessRequestError
from .note import MAX_NOTE_SIZE, SIGNATURE_PREFIX, Note, NoteSignature, parse_note, parse_signature_lines
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
        # "The proof MUST be empty if the old size is zero": a proof that is not is
        # well-formed but never verifies, which the witness answers 422 (witness/checks.py).
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


MAX_SUBTREE_COSIGNATURES = 8
"""tlog-witness sign-subtree: "The client MUST NOT send more than 8 subtree cosignature lines"."""

MAX_REFERENCE_SIGNATURES = 8
"""tlog-witness sign-subtree: "The client MUST NOT send more than 8 checkpoint signatures"."""

_SUBTREE_PREFIX = "subtree "


@dataclass(frozen=True)
class SignSubtreeRequest:
    """A parsed sign-subtree request: the subtree `[start, end)` and its hash, optional
    subtree cosignatures (a DoS gate: tlog-witness lets a witness demand one), the
    subtree consistency proof, and the reference checkpoint, whose signatures are NOT
    verified here (`reference` is the signed note, or only its body when the client
    omitted the signatures)."""

    start: int
    end: int
    subtree_hash: bytes
    cosignatures: tuple[NoteSignature, ...]
    consistency_proof: tuple[bytes, ...]
    reference: str

    def __post_init__(self) -> None:
        for what, value in (("start", self.start), ("end", self.end)):
            if type(value) is not int or not 0 <= value <= MAX_UINT63:
                raise WitnessRequestError(f"subtree {what}: got {value!r}, want an integer in [0, 2^63-1]")
        if not isinstance(self.subtree_hash, bytes) or len(self.subtree_hash) != 32:
            raise WitnessRequestError(f"subtree hash: got {self.subtree_hash!r:.60}, want 32 bytes")
        if not isinstance(self.cosignatures, tuple) or not isinstance(self.consistency_proof, tuple):
            raise WitnessRequestError("subtree cosignatures and consistency proof: want tuples")
        if len(self.cosignatures) > MAX_SUBTREE_COSIGNATURES:
            raise WitnessRequestError(
                f"subtree cosignatures: got {len(self.cosignatures)}, want at most {MAX_SUBTREE_COSIGNATURES}"
            )
        if any(not isinstance(c, NoteSignature) for c in self.cosignatures):
            raise WitnessRequestError("subtree cosignatures: want NoteSignature values")
        if len(self.consistency_proof) > MAX_CONSISTENCY_PROOF_HASHES:
            raise WitnessRequestError(
                f"consistency proof: got {len(self.consistency_proof)} hashes, "
                f"want at most {MAX_CONSISTENCY_PROOF_HASHES}"
            )
        for node in self.consistency_proof:
            if not isinstance(node, bytes) or len(node) != 32:
                raise WitnessRequestError(f"consistency proof hash: got {node!r:.60}, want 32 bytes")
        note = self.reference_note()
        if note is not None and len(note.signatures) > MAX_REFERENCE_SIGNATURES:
            raise WitnessRequestError(
                f"reference checkpoint: got {len(note.signatures)} signatures, want at most "
                f"{MAX_REFERENCE_SIGNATURES}"
            )
        size = self.parsed_checkpoint().size
        # "start MUST be less than end, and end MUST be less than or equal to the
        # checkpoint size. Otherwise, the witness MUST respond with 400."
        if not self.start < self.end <= size:
            raise WitnessRequestError(
                f"subtree: got [{self.start}, {self.end}) with a reference checkpoint of size {size}, "
                f"want start < end <= {size}"
            )
        self.subtree()  # a valid subtree whose origin fits the cosigned message

    def reference_note(self) -> Note | None:
        """The reference checkpoint as a signed note, or None when it came without signatures."""
        if not isinstance(self.reference, str):
            raise WitnessRequestError(f"reference checkpoint: got {type(self.reference).__name__}, want str")
        if "\n\n" not in self.reference:
            return None
        try:
            return parse_note(self.reference)
        except FormatError as exc:
            raise WitnessRequestError(f"reference checkpoint: {exc}") from None

    def parsed_checkpoint(self) -> Checkpoint:
        """The reference checkpoint's body, parsed (no signature verified)."""
        note = self.reference_note()
        try:
            return parse_checkpoint(self.reference if note is None else note.text)
        except FormatError as exc:
            raise WitnessRequestError(f"reference checkpoint: {exc}") from None

    def subtree(self) -> Subtree:
        """The subtree to cosign, of the reference checkpoint's log."""
        try:
            return Subtree(self.parsed_checkpoint().origin, self.start, self.end, self.subtree_hash)
        except FormatError as exc:
            # e.g. [start, end) not a valid subtree (MTC draft §4.1), an origin over 255 bytes.
            raise WitnessRequestError(str(exc)) from None

    def format(self) -> str:
        """The request body."""
        lines = [f"{_SUBTREE_PREFIX}{self.start} {self.end}", encode_base64(self.subtree_hash)]
        lines += [c.line()[:-1] for c in self.cosignatures]
        lines += [encode_base64(node) for node in self.consistency_proof]
        return "".join(line + "\n" for line in lines) + "\n" + self.reference


def parse_sign_subtree_request(body: bytes | str) -> SignSubtreeRequest:
    """Parse a sign-subtree request body strictly; nothing in it is verified."""
    body = decode_bounded_text(body, "request", WitnessRequestError, MAX_ADD_CHECKPOINT_SIZE)
    lines, reference = split_header_and_checkpoint(body, "request", WitnessRequestError)
    if len(lines) < 2:
        raise WitnessRequestError(f"request: got {len(lines)} line(s) before the empty line, want a subtree "
                                  "range line and a subtree hash line")
    if not lines[0].startswith(_SUBTREE_PREFIX):
        raise WitnessRequestError(f"request first line: got {clip(lines[0])}, want 'subtree <start> <end>'")
    numbers = lines[0][len(_SUBTREE_PREFIX):].split(" ")
    if len(numbers) != 2:
        raise WitnessRequestError(f"subtree range line: got {clip(lines[0])}, want 'subtree <start> <end>'")
    start = parse_decimal(numbers[0], "subtree start", WitnessRequestError)
    end = parse_decimal(numbers[1], "subtree end", WitnessRequestError)
    subtree_hash = decode_hash(lines[1], "subtree hash", WitnessRequestError)
    rest = lines[2:]
    signature_count = 0
    while signature_count < len(rest) and rest[signature_count].startswith(SIGNATURE_PREFIX):
        signature_count += 1
    if signature_count > MAX_SUBTREE_COSIGNATURES:
        raise WitnessRequestError(
            f"subtree cosignatures: got {signature_count} lines, want at most {MAX_SUBTREE_COSIGNATURES}"
        )
    cosignatures: tuple[NoteSignature, ...] = ()
    if signature_count:
        try:
            cosignatures = parse_signature_lines("".join(line + "\n" for line in rest[:signature_count]))
        except FormatError as exc:
            raise WitnessRequestError(f"subtree cosignature: {exc}") from None
    proof_lines = rest[signature_count:]
    if len(proof_lines) > MAX_CONSISTENCY_PROOF_HASHES:
        raise WitnessRequestError(
            f"consistency proof: got {len(proof_lines)} lines, want at most {MAX_CONSISTENCY_PROOF_HASHES}"
        )
    # A signature line among the proof lines fails here: it is not a base64 hash.
    proof = tuple(decode_hash(line, "consistency proof hash", WitnessRequestError) for line in proof_lines)
    request = SignSubtreeRequest(start, end, subtree_hash, cosignatures, proof, reference)
    if request.format() != body:
        raise AssertionError("sign-subtree request does not round-trip")
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
