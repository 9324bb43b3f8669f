"""C2SP tlog-checkpoint: the note text that commits a log to a tree head."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import CheckpointFormatError, NoteError
from .note import NoteSigner, NoteVerifier, OpenedNote, check_note_text, open_note, sign_note
from .strict import MAX_UINT63, clip, decode_hash, encode_base64, parse_decimal

RESERVED_ORIGIN = "cosignature/v1"
"""The one origin we refuse, on every checkpoint we build or parse.

The log signs each checkpoint twice with one Ed25519 key (docs/architecture.md, "Log
signatures"): a type 0x01 signature over the body, which starts with the origin line,
and a type 0x04 cosignature over "cosignature/v1\\ntime <t>\\n" + body. With this origin
excluded the two signed messages differ in their first line, so neither signature can
ever be replayed as the other. (The size line, "time <t>" not being a decimal, already
separates them; this keeps the argument independent of the size syntax.) tlog-checkpoint
itself allows the origin; no real log uses it.
"""


def _check_line(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointFormatError(f"{what}: got {value!r}, want a non-empty line")
    if "\n" in value:
        raise CheckpointFormatError(f"{what}: got {clip(value)}, want a single line")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, tree size, RFC 6962 root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if self.origin == RESERVED_ORIGIN:
            raise CheckpointFormatError(f"checkpoint origin: got {RESERVED_ORIGIN!r}, want any other name")
        if type(self.size) is not int or not 0 <= self.size <= MAX_UINT63:
            raise CheckpointFormatError(f"checkpoint size: got {self.size!r}, want an integer in [0, 2^63-1]")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise CheckpointFormatError(f"checkpoint root: got {self.root!r}, want 32 bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointFormatError(f"checkpoint extensions: got {type(self.extensions).__name__}, want tuple")
        for line in self.extensions:
            # tlog-checkpoint "Note text": extension lines MUST be non-empty.
            _check_line(line, "checkpoint extension line")
        try:
            check_note_text(self.body())
        except NoteError as exc:
            raise CheckpointFormatError(f"checkpoint body is not a valid note text: {exc}") from None

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), encode_base64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint note text strictly and canonically (tlog-checkpoint "Note text")."""
    if not isinstance(text, str):
        raise CheckpointFormatError(f"checkpoint: got {type(text).__name__}, want str")
    try:
        check_note_text(text)
    except NoteError as exc:
        raise CheckpointFormatError(f"checkpoint: {exc}") from None
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointFormatError(f"checkpoint: got {len(lines)} lines, want at least 3")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise CheckpointFormatError(f"checkpoint line {number}: got an empty line, want non-empty")
    size = parse_decimal(lines[1], "checkpoint size", CheckpointFormatError)
    root = decode_hash(lines[2], "checkpoint root", CheckpointFormatError)
    checkpoint = Checkpoint(origin=lines[0], size=size, root=root, extensions=tuple(lines[3:]))
    if checkpoint.body() != text:
        raise AssertionError(f"checkpoint does not round-trip: {text!r}")
    return checkpoint


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> str:
    """The signed note of `checkpoint`, signed by every signer."""
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(note: bytes | str, verifiers: Iterable[NoteVerifier]) -> tuple[Checkpoint, OpenedNote]:
    """Verify a checkpoint note against `verifiers` (see `open_note`), then parse its text."""
    opened = open_note(note, verifiers)
    return parse_checkpoint(opened.text), opened
