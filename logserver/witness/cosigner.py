"""The witness's key: loading it and cosigning checkpoints (C2SP tlog-cosignature,
Ed25519 `cosignature/v1`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..formats import Checkpoint, CosignatureSigner, NoteSignature
from ..keys.files import load_ed25519_private_key


class Cosigner:
    def __init__(self, name: str, private_key: Ed25519PrivateKey, clock: Callable[[], float] = time.time):
        self._signer = CosignatureSigner(name, private_key, clock)
        self.public_key_bytes = private_key.public_key().public_bytes_raw()

    @classmethod
    def load(cls, path: Path, name: str, clock: Callable[[], float] = time.time) -> Cosigner:
        """Load a PKCS#8 PEM Ed25519 key, refusing a file others can read."""
        return cls(name, load_ed25519_private_key(path, "key"), clock)

    @property
    def name(self) -> str:
        return self._signer.name

    @property
    def vkey(self) -> str:
        """The cosigner's vkey (signature type 0x04), for tlog-policy `witness` lines."""
        return self._signer.vkey

    def cosign(self, checkpoint: Checkpoint) -> str:
        """One signature line (ending in a newline) cosigning `checkpoint` now."""
        signature = self._signer.sign(checkpoint.body().encode("utf-8"))
        return NoteSignature(self._signer.name, self._signer.key_id, signature).line()

    def __repr__(self) -> str:  # never show key material
        return f"Cosigner({self.vkey!r})"
