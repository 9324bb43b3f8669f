"""What the two Ed25519 note key types share: signed-note type 0x01 (`note`) and
tlog-cosignature type 0x04 (`cosignature`) both name an Ed25519 public key, derive
the key ID from name, type byte and key (signed-note "Format"), and print as a vkey.
Subclasses set `sig_type` and `type_label` and implement how a signature is made or
checked.
"""

from __future__ import annotations

from typing import ClassVar, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import VkeyError
from .vkey import check_key_name, compute_key_id, format_vkey, parse_vkey


class Ed25519KeyVerifier:
    """An Ed25519 public key under a key name, for one signature type (a `NoteVerifier`
    once the subclass defines `verify`)."""

    sig_type: ClassVar[int]
    type_label: ClassVar[str]  # for "want 0x01 (Ed25519)" in errors

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        check_key_name(name)
        self._name = name
        self.public_key = public_key
        self.public_key_bytes = public_key.public_bytes_raw()
        self._key_id = compute_key_id(name, self.sig_type, self.public_key_bytes)

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """Build a verifier from a vkey of this class's signature type."""
        parsed = parse_vkey(vkey)
        if parsed.sig_type != cls.sig_type:
            raise VkeyError(
                f"vkey signature type: got 0x{parsed.sig_type:02x}, want 0x{cls.sig_type:02x} ({cls.type_label})"
            )
        if len(parsed.public_key) != 32:
            raise VkeyError(f"vkey Ed25519 public key: got {len(parsed.public_key)} bytes, want 32")
        return cls(parsed.name, Ed25519PublicKey.from_public_bytes(parsed.public_key))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    @property
    def vkey(self) -> str:
        return format_vkey(self._name, self.sig_type, self.public_key_bytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ed25519KeyVerifier) or other.sig_type != self.sig_type:
            return NotImplemented
        return (self._name, self.public_key_bytes) == (other._name, other.public_key_bytes)

    def __hash__(self) -> int:
        return hash((self.sig_type, self._name, self.public_key_bytes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class Ed25519KeySigner:
    """The private counterpart of an `Ed25519KeyVerifier` subclass (a `NoteSigner` once
    the subclass defines `sign`)."""

    sig_type: ClassVar[int]
    verifier_class: ClassVar[type[Ed25519KeyVerifier]]

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._verifier = self.verifier_class(name, private_key.public_key())

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def vkey(self) -> str:
        return self._verifier.vkey

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"
