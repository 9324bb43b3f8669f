"""The log's Ed25519 signing key and how checkpoints are signed with it.

The signed-note key name is the log's origin. Each checkpoint gets two
signatures from the key: the plain signed-note one (type 0x01) that checkpoint
verifiers check, and a cosignature/v1 (type 0x04) one whose timestamp is the
checkpoint's signing time (docs/architecture.md, "Log signatures").
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..formats.checkpoint import Checkpoint
from ..formats.cosignature import CosignatureSigner
from ..formats.note import Ed25519NoteSigner, NoteVerifier, sign_note
from .files import load_ed25519_private_key


class LogKey:
    def __init__(self, origin: str, private_key: Ed25519PrivateKey):
        self.origin = origin
        self._private_key = private_key
        self._note_signer = Ed25519NoteSigner(origin, private_key)
        self._stamper = CosignatureSigner(origin, private_key)
        public = private_key.public_key()
        self.public_key_bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @classmethod
    def load(cls, path: Path, origin: str, *, key: str = "log_key") -> LogKey:
        """Load a PKCS#8 PEM Ed25519 private key, refusing files others can read."""
        return cls(origin, load_ed25519_private_key(path, key))

    @property
    def vkey(self) -> str:
        """The signed-note verifier key (type 0x01) clients pin."""
        return self._note_signer.vkey

    @property
    def timestamp_vkey(self) -> str:
        """The cosignature/v1 verifier key (type 0x04) for the checkpoints' signed time."""
        return self._stamper.vkey

    def verifiers(self) -> list[NoteVerifier]:
        return [self._note_signer.verifier(), self._stamper.verifier()]

    def sign_checkpoint(self, size: int, root: bytes, signed_at_ms: int) -> str:
        """The signed note of the checkpoint (origin, size, root) signed at `signed_at_ms`."""
        body = Checkpoint(self.origin, size, root).body()
        return sign_note(body, [self._note_signer, self._stamper.at(signed_at_ms // 1000)])

    def __repr__(self) -> str:  # never show key material
        return f"LogKey({self.vkey!r})"


def generate_log_key_pem() -> bytes:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
