"""Key helpers tying the signature types together: vkey dispatch and the log's key pair."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .cosignature import CosignatureSigner, CosignatureVerifier, MLDSA44CosignatureVerifier
from .errors import VkeyError
from .note import Ed25519NoteSigner, Ed25519NoteVerifier
from .vkey import SIG_TYPE_COSIGNATURE_MLDSA44, SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, parse_vkey

SUPPORTED_SIG_TYPES = frozenset({SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_COSIGNATURE_MLDSA44})

COSIGNATURE_SIG_TYPES = frozenset({SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_COSIGNATURE_MLDSA44})
"""The two tlog-cosignature types: Ed25519 `cosignature/v1` and ML-DSA-44 `subtree/v1`."""

AnyCosignatureVerifier: TypeAlias = CosignatureVerifier | MLDSA44CosignatureVerifier
"""A verifier of either cosignature type (each has `.vkey`, `.public_key_bytes`)."""

VkeyVerifier: TypeAlias = Ed25519NoteVerifier | CosignatureVerifier | MLDSA44CosignatureVerifier
"""What `verifier_from_vkey` returns."""


def verifier_from_vkey(vkey: str, allowed_types: Collection[int] = SUPPORTED_SIG_TYPES) -> VkeyVerifier:
    """A verifier for a vkey of signature type 0x01 (Ed25519), 0x04 (Ed25519
    cosignature/v1) or 0x06 (ML-DSA-44 cosignature), restricted to `allowed_types`."""
    sig_type = parse_vkey(vkey).sig_type
    if sig_type not in allowed_types:
        want = ", ".join(f"0x{t:02x}" for t in sorted(allowed_types))
        raise VkeyError(f"vkey signature type: got 0x{sig_type:02x}, want one of {want}")
    if sig_type == SIG_TYPE_ED25519:
        return Ed25519NoteVerifier.from_vkey(vkey)
    if sig_type == SIG_TYPE_COSIGNATURE_V1:
        return CosignatureVerifier.from_vkey(vkey)
    if sig_type == SIG_TYPE_COSIGNATURE_MLDSA44:
        return MLDSA44CosignatureVerifier.from_vkey(vkey)
    raise VkeyError(f"vkey signature type: got 0x{sig_type:02x}, which logserver does not implement")


def log_signers(
    origin: str,
    private_key: Ed25519PrivateKey,
    clock: Callable[[], float] = time.time,
) -> tuple[Ed25519NoteSigner, CosignatureSigner]:
    """The log's two checkpoint signers (docs/architecture.md "Log signatures"): the
    plain type 0x01 signature and the timestamped type 0x04 one, both named `origin`."""
    return Ed25519NoteSigner(origin, private_key), CosignatureSigner(origin, private_key, clock)


def log_verifiers(origin: str, public_key: Ed25519PublicKey) -> tuple[Ed25519NoteVerifier, CosignatureVerifier]:
    """The verifiers matching `log_signers`."""
    return Ed25519NoteVerifier(origin, public_key), CosignatureVerifier(origin, public_key)
