"""C2SP signed-note: Ed25519 note keys, and signing, parsing and opening notes.

A note is a text ending in a newline, a blank line, then one or more signature lines
`— <key name> <base64(4-byte key ID || signature)>`. Any signature type plugs in through
the `NoteSigner` / `NoteVerifier` protocols; this module implements type 0x01 (Ed25519
over the note text), `cosignature` implements type 0x04.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from ._ed25519_key import Ed25519KeySigner, Ed25519KeyVerifier
from .errors import InvalidSignatureError, NoteError, UnverifiedNoteError
from .strict import clip, decode_base64, encode_base64
from .vkey import KEY_ID_SIZE, SIG_TYPE_ED25519, check_key_name

MAX_NOTE_SIZE = 1 << 20
"""Largest note we parse or produce, in bytes.

signed-note asks verifiers to bound the signature count or note size but to accept at
least 16 signatures, which may be post-quantum ones of nearly 5 kB (about 6.7 kB in
base64). 1 MiB holds 16 such lines with ample room, and our checkpoints are a few
hundred bytes.
"""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (spec minimum 16; the Go implementation's bound)."""

ED25519_SIGNATURE_SIZE = 64
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no ASCII controls but newline


class NoteSigner(Protocol):
    """A private key that produces note signatures of one signature type."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """The signature (without the key ID) of the note text `message`."""
        ...


class NoteVerifier(Protocol):
    """A public key that checks note signatures of one signature type."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise `InvalidSignatureError` unless `signature` (without the key ID) is a
        valid signature of the note text `message`."""
        ...


class Ed25519NoteVerifier(Ed25519KeyVerifier):
    """signed-note "Ed25519 signatures" (type 0x01): an Ed25519 signature over the note text."""

    sig_type = SIG_TYPE_ED25519
    type_label = "Ed25519"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise `InvalidSignatureError` unless `signature` is this key's signature of `message`."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            raise InvalidSignatureError(
                f"signature by {self._name}+{self._key_id.hex()}: got {len(signature)} bytes, want 64"
            )
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            raise InvalidSignatureError(
                f"signature by {self._name}+{self._key_id.hex()}: Ed25519 verification failed"
            ) from None


class Ed25519NoteSigner(Ed25519KeySigner):
    """The private counterpart of `Ed25519NoteVerifier`."""

    sig_type = SIG_TYPE_ED25519
    verifier_class = Ed25519NoteVerifier
    _verifier: Ed25519NoteVerifier  # what verifier_class builds in Ed25519KeySigner.__init__

    def verifier(self) -> Ed25519NoteVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID, signature bytes (without the ID)."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.key_id) != KEY_ID_SIZE:
            raise NoteError(f"key ID: got {len(self.key_id)} bytes, want {KEY_ID_SIZE}")
        if not self.signature:
            raise NoteError("signature: got 0 bytes, want at least 1")

    def line(self) -> str:
        """The signature line, final newline included."""
        return f"{SIGNATURE_PREFIX}{self.name} {encode_base64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """A syntactically valid, not yet verified, signed note."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


@dataclass(frozen=True)
class OpenedNote:
    """A note with at least one signature from a known key, all such signatures verified.

    `verified[i]` is the first signature line of `verifiers[i]`; later lines by the same
    key were verified too but are not listed again, so each key counts once.
    """

    text: str
    signatures: tuple[NoteSignature, ...]
    verified: tuple[NoteSignature, ...]
    verifiers: tuple[NoteVerifier, ...]

    def signature_by(self, verifier: NoteVerifier) -> NoteSignature | None:
        """The verified signature of `verifier`, or None if it did not sign."""
        for sig in self.verified:
            if sig.name == verifier.name and sig.key_id == verifier.key_id:
                return sig
        return None


def _decode_note_bytes(data: bytes | str, what: str) -> str:
    """UTF-8, size and character checks common to notes and bare signature lines."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise NoteError(f"{what}: got lone surrogates, want valid UTF-8") from None
    if len(data) > MAX_NOTE_SIZE:
        raise NoteError(f"{what} size: got {len(data)} bytes, want at most {MAX_NOTE_SIZE}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"{what}: invalid UTF-8 at byte {exc.start}") from None
    control = _CONTROL.search(text)
    if control:
        raise NoteError(
            f"{what}: got control character U+{ord(control.group()):04X} at {control.start()}, "
            "want none but newline"
        )
    if not text.endswith("\n"):
        raise NoteError(f"{what}: want a final newline")
    return text


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line: got {clip(line)}, want it to start with an em dash and a space")
    fields = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(fields) != 2:
        raise NoteError(f"signature line: got {clip(line)}, want '\u2014 <key name> <base64>'")
    name, b64 = fields
    check_key_name(name)
    raw = decode_base64(b64, "signature", NoteError)
    if len(raw) <= KEY_ID_SIZE:
        raise NoteError(f"signature: got {len(raw)} bytes, want a 4-byte key ID and a signature")
    return NoteSignature(name=name, key_id=raw[:KEY_ID_SIZE], signature=raw[KEY_ID_SIZE:])


def _parse_signature_block(block: str) -> tuple[NoteSignature, ...]:
    """Parse newline-terminated signature lines; `block` ends with a newline."""
    lines = block.split("\n")[:-1]
    if not lines:
        raise NoteError("signatures: got none, want at least one")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"signatures: got {len(lines)}, want at most {MAX_SIGNATURES}")
    return tuple(_parse_signature_line(line) for line in lines)


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note strictly (C2SP signed-note "Format"), without verifying it.

    The text is everything up to and including the newline before the *last* blank
    line; the text may itself contain blank lines.
    """
    note = _decode_note_bytes(data, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note: want a blank line between the text and the signatures")
    return Note(text=note[: split + 1], signatures=_parse_signature_block(note[split + 2 :]))


def parse_signature_lines(data: bytes | str) -> tuple[NoteSignature, ...]:
    """Parse a body of one or more note signature lines and nothing else
    (e.g. a tlog-witness add-checkpoint response)."""
    return _parse_signature_block(_decode_note_bytes(data, "signature lines"))


def check_note_text(text: str) -> None:
    """Raise `NoteError` unless `text` can be the text of a signed note."""
    if not isinstance(text, str) or not text:
        raise NoteError("note text: got nothing, want text ending in a newline")
    _decode_note_bytes(text, "note text")


def _index_verifiers(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    index: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if key in index:
            # signed-note: name and key ID identify a key; two keys sharing both are a
            # configuration error we refuse to guess around.
            raise ValueError(f"two verifiers share key name {verifier.name!r} and key ID {verifier.key_id.hex()}")
        index[key] = verifier
    return index


def sign_note(
    text: str,
    signers: Sequence[NoteSigner],
    existing_signatures: Sequence[NoteSignature] = (),
) -> str:
    """Sign `text` with every signer and return the note.

    The new signatures follow `existing_signatures`, except that an existing signature
    by the same (name, key ID) as a signer is replaced by the signer's new one.
    """
    check_note_text(text)
    new_keys = {(s.name, s.key_id) for s in signers}
    if len(new_keys) != len(signers):
        raise ValueError("sign_note: two signers share a key name and key ID")
    message = text.encode("utf-8")
    signatures = [sig for sig in existing_signatures if (sig.name, sig.key_id) not in new_keys]
    signatures += [NoteSignature(s.name, s.key_id, s.sign(message)) for s in signers]
    if not signatures:
        raise ValueError("sign_note: no signers and no existing signatures")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"signatures: got {len(signatures)}, want at most {MAX_SIGNATURES}")
    note = Note(text, tuple(signatures)).format()
    if len(note.encode("utf-8")) > MAX_NOTE_SIZE:
        raise NoteError(f"note size: got {len(note.encode('utf-8'))} bytes, want at most {MAX_NOTE_SIZE}")
    return note


def verify_note(note: Note, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Verify a parsed note against known keys (C2SP signed-note "Signatures").

    Signatures whose (name, key ID) match no verifier are ignored. Every signature that
    matches one is verified, and one that fails rejects the whole note
    (`InvalidSignatureError`). Raises `UnverifiedNoteError` if no known key signed.
    """
    index = _index_verifiers(verifiers)
    message = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    for sig in note.signatures:
        key = (sig.name, sig.key_id)
        verifier = index.get(key)
        if verifier is None:
            continue
        verifier.verify(message, sig.signature)
        verified.setdefault(key, sig)
    if not verified:
        names = sorted({f"{s.name}+{s.key_id.hex()}" for s in note.signatures})
        raise UnverifiedNoteError(
            f"note signatures: got {len(note.signatures)} from unknown keys {names}, "
            f"want at least one from {len(index)} known keys"
        )
    return OpenedNote(
        text=note.text,
        signatures=note.signatures,
        verified=tuple(verified.values()),
        verifiers=tuple(index[key] for key in verified),
    )


def open_note(data: bytes | str, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Parse and verify a signed note: `verify_note(parse_note(data), verifiers)`."""
    return verify_note(parse_note(data), verifiers)
