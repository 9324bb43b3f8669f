"""The witness's keys and its cosignatures (C2SP tlog-cosignature v1.1): an Ed25519
`cosignature/v1` key, an ML-DSA-44 `subtree/v1` key, or both, all under the witness's
one name. tlog-witness: "Witnesses SHOULD use ML-DSA-44 cosignatures"; an Ed25519 key
keeps today's verifiers working."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..formats import (
    AnyCosignatureVerifier,
    Checkpoint,
    CosignatureSigner,
    MLDSA44CosignatureSigner,
    NoteSignature,
    Subtree,
)
from ..keys.files import CosigningKey, load_cosigning_key

Signer = CosignatureSigner | MLDSA44CosignatureSigner


class Cosigner:
    """The witness's signers, Ed25519 first: at most one key of each type."""

    def __init__(self, name: str, keys: Sequence[CosigningKey], clock: Callable[[], float] = time.time):
        if not keys:
            raise ValueError("a witness needs at least one key")
        signers: list[Signer] = []
        for key in keys:
            signers.append(CosignatureSigner(name, key, clock) if isinstance(key, Ed25519PrivateKey)
                           else MLDSA44CosignatureSigner(name, key, clock))
        types = [s.sig_type for s in signers]
        if len(set(types)) != len(types):
            raise ValueError("a witness has at most one Ed25519 and one ML-DSA-44 key")
        self.signers: tuple[Signer, ...] = tuple(sorted(signers, key=lambda s: s.sig_type))
        self._clock = clock

    @classmethod
    def load(cls, paths: Sequence[Path], name: str, clock: Callable[[], float] = time.time) -> Cosigner:
        """Load PKCS#8 PEM keys (Ed25519 or ML-DSA-44), refusing files others can read."""
        return cls(name, [load_cosigning_key(path, "key") for path in paths], clock)

    @property
    def name(self) -> str:
        return self.signers[0].name

    @property
    def vkeys(self) -> tuple[str, ...]:
        """One vkey per key (types 0x04 and 0x06), for tlog-policy `witness` lines."""
        return tuple(s.vkey for s in self.signers)

    @property
    def vkey(self) -> str:
        """The first vkey (the Ed25519 one if the witness has both)."""
        return self.signers[0].vkey

    def verifiers(self) -> tuple[AnyCosignatureVerifier, ...]:
        return tuple(s.verifier() for s in self.signers)

    def public_keys(self) -> tuple[tuple[int, bytes, str], ...]:
        """(signature type, public key, vkey) of each key, as the store records them."""
        return tuple((s.sig_type, s.verifier().public_key_bytes, s.vkey) for s in self.signers)

    def signers_for(self, checkpoint: Checkpoint) -> tuple[Signer, ...]:
        """The keys that can cosign `checkpoint`: an ML-DSA-44 cosignature does not cover
        extension lines, so that key does not cosign a checkpoint that has some
        (formats/cosignature.py)."""
        return tuple(s for s in self.signers if not (checkpoint.extensions and isinstance(s, MLDSA44CosignatureSigner)))

    def cosign(self, checkpoint: Checkpoint) -> tuple[NoteSignature, ...]:
        """One signature per key able to (`signers_for`), all stamped with the same
        current time (never 0: tlog-witness "the timestamp MUST NOT be zero"; for an
        ML-DSA-44 key the subtree is [0, size), as add-checkpoint requires)."""
        now = max(1, int(self._clock()))
        body = checkpoint.body().encode("utf-8")
        return tuple(NoteSignature(s.name, s.key_id, s.sign_at(body, now)) for s in self.signers_for(checkpoint))

    @property
    def subtree_signers(self) -> tuple[MLDSA44CosignatureSigner, ...]:
        """The keys whose cosignatures support subtrees (ML-DSA-44 only)."""
        return tuple(s for s in self.signers if isinstance(s, MLDSA44CosignatureSigner))

    def sign_subtree(self, subtree: Subtree) -> tuple[NoteSignature, ...]:
        """sign-subtree: one timestamp-0 `subtree/v1` line per ML-DSA-44 key."""
        return tuple(s.subtree_signature(subtree) for s in self.subtree_signers)

    def __repr__(self) -> str:  # never show key material
        return f"Cosigner({', '.join(self.vkeys)!r})"
