"""The log's signing keys and how checkpoints are signed with them.

The signed-note key name of every log key is the log's origin (tlog-checkpoint
"Signatures": "The log's key name in its signature line SHOULD match the origin
line"). Each checkpoint gets, in this order:

1. the plain signed-note Ed25519 signature (type 0x01) that every checkpoint verifier
   checks (Go's sumdb note, every tlog client);
2. an Ed25519 cosignature/v1 (type 0x04) from the same key, whose timestamp is the
   checkpoint's signing time (docs/architecture.md, "Log signatures");
3. when the log has an ML-DSA-44 key, an ML-DSA-44 `subtree/v1` cosignature (type 0x06,
   C2SP tlog-cosignature v1.1) of the subtree [0, size) at the same timestamp.
   tlog-checkpoint: "Logs SHOULD use ML-DSA-44 cosignatures to sign the checkpoint";
   the non-zero timestamp makes it also the statement that this is the largest tree
   the log has signed as of that time ("ML-DSA-44 signed message").

Verifiers that know only some of these keys ignore the other lines (signed-note).
"""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from ..config import Config, ConfigError
from ..formats.checkpoint import Checkpoint
from ..formats.cosignature import CosignatureSigner, MLDSA44CosignatureSigner, MLDSA44CosignatureVerifier
from ..formats.errors import FormatError
from ..formats.note import Ed25519NoteSigner, NoteSigner, NoteVerifier, sign_note
from .files import load_ed25519_private_key, load_private_key


class LogKey:
    def __init__(self, origin: str, private_key: Ed25519PrivateKey, mldsa44_key: MLDSA44PrivateKey | None = None):
        self.origin = origin
        self._private_key = private_key
        self._note_signer = Ed25519NoteSigner(origin, private_key)
        self._stamper = CosignatureSigner(origin, private_key)
        self._mldsa44 = MLDSA44CosignatureSigner(origin, mldsa44_key) if mldsa44_key is not None else None
        public = private_key.public_key()
        self.public_key_bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @classmethod
    def load(cls, path: Path, origin: str, *, key: str = "log_key", mldsa44_path: Path | None = None,
             mldsa44_key: str = "log_key_mldsa44") -> LogKey:
        """Load the PKCS#8 PEM Ed25519 private key in `path` and, if given, the ML-DSA-44
        one (seed form) in `mldsa44_path`, refusing files others can read."""
        mldsa44 = None if mldsa44_path is None else load_mldsa44_private_key(mldsa44_path, mldsa44_key)
        ed25519 = load_ed25519_private_key(path, key)
        if mldsa44 is not None:
            try:
                MLDSA44CosignatureSigner(origin, mldsa44)  # the origin fits the cosigned message
            except FormatError as e:
                raise ConfigError(f"{mldsa44_key}: {e}") from None
        return cls(origin, ed25519, mldsa44)

    @classmethod
    def from_config(cls, config: Config) -> LogKey:
        """The keys `config` names: `log_key` and, if set, `log_key_mldsa44`."""
        return cls.load(config.log_key, config.origin, mldsa44_path=config.log_key_mldsa44)

    @property
    def vkey(self) -> str:
        """The signed-note verifier key (type 0x01) clients pin."""
        return self._note_signer.vkey

    @property
    def timestamp_vkey(self) -> str:
        """The cosignature/v1 verifier key (type 0x04) for the checkpoints' signed time."""
        return self._stamper.vkey

    @property
    def mldsa44_vkey(self) -> str | None:
        """The ML-DSA-44 subtree/v1 verifier key (type 0x06), or None without that key."""
        return None if self._mldsa44 is None else self._mldsa44.vkey

    @property
    def mldsa44_public_key_bytes(self) -> bytes | None:
        return None if self._mldsa44 is None else self._mldsa44.verifier().public_key_bytes

    @property
    def vkeys(self) -> tuple[str, ...]:
        """Every verifier key this log signs checkpoints with (0x01, 0x04, then 0x06 if any):
        what `GET /v1/log` lists and what the database records as published."""
        return (self.vkey, self.timestamp_vkey) + ((self._mldsa44.vkey,) if self._mldsa44 is not None else ())

    def verifiers(self) -> list[NoteVerifier]:
        """The two Ed25519 verifiers: the signed-note key and the cosignature/v1 key."""
        return [self._note_signer.verifier(), self._stamper.verifier()]

    def mldsa44_verifier(self) -> MLDSA44CosignatureVerifier | None:
        return None if self._mldsa44 is None else self._mldsa44.verifier()

    def sign_checkpoint(self, size: int, root: bytes, signed_at_ms: int) -> str:
        """The signed note of the checkpoint (origin, size, root) signed at `signed_at_ms`."""
        body = Checkpoint(self.origin, size, root).body()
        at = signed_at_ms // 1000
        signers: list[NoteSigner] = [self._note_signer, self._stamper.at(at)]
        if self._mldsa44 is not None:
            signers.append(self._mldsa44.at(at))
        return sign_note(body, signers)

    def __repr__(self) -> str:  # never show key material
        return f"LogKey({self.vkey!r}{', ML-DSA-44' if self._mldsa44 is not None else ''})"


def load_mldsa44_private_key(path: Path, key: str) -> MLDSA44PrivateKey:
    """Like `load_private_key`, refusing any key type but ML-DSA-44."""
    private_key = load_private_key(path, key)
    if not isinstance(private_key, MLDSA44PrivateKey):
        raise ConfigError(f"{key}: {path} holds a {type(private_key).__name__}, want an ML-DSA-44 key")
    return private_key


def generate_log_key_pem() -> bytes:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_mldsa44_key_pem() -> bytes:
    """A new ML-DSA-44 private key as PKCS#8 PEM in RFC 9881's seed form (what `cryptography`
    writes and reads)."""
    return MLDSA44PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
