"""Loading private keys from PKCS#8 PEM files: the log key, the witness key and
authority keys. Files that group or others can read are refused
(`config.check_private_key_file`); every problem is a ConfigError naming the key.
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..config import ConfigError, check_private_key_file


def load_private_key(path: Path, key: str) -> PrivateKeyTypes:
    """The unencrypted PKCS#8 PEM private key in `path` (`key` names it in errors)."""
    data = check_private_key_file(path, key)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        if _is_ml_dsa_44(data):
            # RFC 9881 §6 allows three forms; `cryptography` reads the seed form only.
            raise ConfigError(
                f"{key}: {path} holds an ML-DSA-44 private key in RFC 9881's expanded or both form, which "
                "cannot be read; want the seed form (the 32-byte seed only), as `logserver keygen authority "
                "--algorithm ml-dsa-44` writes it") from None
        # The message from cryptography never contains key material.
        raise ConfigError(f"{key}: {path} is not an unencrypted PKCS#8 PEM private key ({e})") from None


# PKCS#8 OneAsymmetricKey: SEQUENCE, version INTEGER 0, then the AlgorithmIdentifier whose
# OID is id-ml-dsa-44 (RFC 9881 §2): 2.16.840.1.101.3.4.3.17.
_ML_DSA_44_OID = bytes.fromhex("0609608648016503040311")


def _is_ml_dsa_44(pem: bytes) -> bool:
    """Whether `pem` is one PKCS#8 PEM block whose algorithm is ML-DSA-44 (for a clearer message)."""
    lines = pem.strip().splitlines()
    if len(lines) < 3 or lines[0] != b"-----BEGIN PRIVATE KEY-----" or lines[-1] != b"-----END PRIVATE KEY-----":
        return False
    try:
        der = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return False
    return _ML_DSA_44_OID in der[:24]


def load_ed25519_private_key(path: Path, key: str) -> Ed25519PrivateKey:
    """Like `load_private_key`, refusing any key type but Ed25519."""
    private_key = load_private_key(path, key)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigError(f"{key}: {path} holds a {type(private_key).__name__}, want an Ed25519 key")
    return private_key


CosigningKey = Ed25519PrivateKey | MLDSA44PrivateKey
"""A witness's cosigning key: Ed25519 (cosignature/v1) or ML-DSA-44 (subtree/v1)."""


def load_cosigning_key(path: Path, key: str) -> CosigningKey:
    """Like `load_private_key`, refusing any key type but Ed25519 and ML-DSA-44 (the
    two tlog-cosignature key types). An ML-DSA-44 PKCS#8 file holds the 32-byte seed
    form of the key, which is what `cryptography` writes and what `logserver keygen witness
    --algorithm ml-dsa-44` makes)."""
    private_key = load_private_key(path, key)
    if not isinstance(private_key, (Ed25519PrivateKey, MLDSA44PrivateKey)):
        raise ConfigError(f"{key}: {path} holds a {type(private_key).__name__}, want an Ed25519 or ML-DSA-44 key")
    return private_key
