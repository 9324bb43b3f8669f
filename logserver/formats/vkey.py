"""Key names, key IDs and verifier keys (vkeys) of C2SP signed-note.

A vkey is the text form `<name>+<key ID as 8 hex digits>+<base64(type || public key)>`
that names a public key together with its signature type (the "verifier keys" of
signed-note that tlog-cosignature and tlog-policy refer to). We emit the key ID in
lowercase hex and, being strict, accept only that; the key ID must match the one
computed from the name, type and key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import NoteError, VkeyError
from .strict import clip, decode_base64, encode_base64

SIG_TYPE_ED25519 = 0x01
"""signed-note "Signature types": plain Ed25519 over the note text."""

SIG_TYPE_COSIGNATURE_V1 = 0x04
"""signed-note "Signature types": timestamped Ed25519 cosignatures (tlog-cosignature)."""

SIG_TYPE_COSIGNATURE_MLDSA44 = 0x06
"""tlog-cosignature v1.1 "Format": timestamped ML-DSA-44 cosignatures over a
`subtree/v1` cosigned_message; the vkey's key material is the 1312-byte public key."""

KEY_ID_SIZE = 4

_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x1f]")


def check_key_name(name: str) -> None:
    """Raise `NoteError` unless `name` is a valid signed-note key name.

    signed-note "Format": non-empty, no Unicode spaces, no "+", and (as all of a note)
    valid UTF-8 without ASCII control characters.
    """
    if not isinstance(name, str) or not name:
        raise NoteError(f"key name: got {name!r}, want a non-empty string")
    if "+" in name or any(ch.isspace() for ch in name):
        raise NoteError(f"key name: got {clip(name)}, want no spaces and no '+'")
    if _CONTROL.search(name):
        raise NoteError(f"key name: got {clip(name)}, want no control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteError(f"key name: got {clip(name)}, want valid UTF-8 (no lone surrogates)") from None


def compute_key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """signed-note: SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    check_key_name(name)
    if not 0 <= sig_type <= 0xFF:
        raise ValueError(f"signature type: got {sig_type}, want one byte")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()
    return digest[:KEY_ID_SIZE]


@dataclass(frozen=True)
class Vkey:
    """A parsed verifier key. `key_id` has been checked against the other fields."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    def __str__(self) -> str:
        return format_vkey(self.name, self.sig_type, self.public_key)


def format_vkey(name: str, sig_type: int, public_key: bytes) -> str:
    """The vkey text of a public key of signature type `sig_type` under key name `name`."""
    key_id = compute_key_id(name, sig_type, public_key)
    return f"{name}+{key_id.hex()}+{encode_base64(bytes([sig_type]) + public_key)}"


def parse_vkey(vkey: str) -> Vkey:
    """Parse a vkey strictly: valid name, 8 lowercase hex digits, canonical base64 of
    at least a type byte and one key byte, and a key ID matching the computed one."""
    if not isinstance(vkey, str):
        raise VkeyError(f"vkey: got {type(vkey).__name__}, want str")
    # The name cannot contain "+", base64 can: split on the first two only.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise VkeyError(f"vkey: got {clip(vkey)}, want <name>+<key id>+<key data>")
    name, key_id_hex, key_data_b64 = parts
    try:
        check_key_name(name)
    except NoteError as exc:
        raise VkeyError(f"vkey {exc}") from None
    if _KEY_ID_HEX.fullmatch(key_id_hex) is None:
        raise VkeyError(f"vkey key id: got {clip(key_id_hex)}, want 8 lowercase hex digits")
    key_data = decode_base64(key_data_b64, "vkey key data", VkeyError)
    if len(key_data) < 2:
        raise VkeyError(f"vkey key data: got {len(key_data)} bytes, want a type byte and a public key")
    sig_type, public_key = key_data[0], key_data[1:]
    want = compute_key_id(name, sig_type, public_key)
    if bytes.fromhex(key_id_hex) != want:
        raise VkeyError(f"vkey key id: got {key_id_hex}, want {want.hex()} (computed from name and key)")
    return Vkey(name=name, key_id=want, sig_type=sig_type, public_key=public_key)
