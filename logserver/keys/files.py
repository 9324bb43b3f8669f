"""Loading private keys from PKCS#8 PEM files: the log key, the witness key and
authority keys. Files that group or others can read are refused
(`config.check_private_key_file`); every problem is a ConfigError naming the key.
"""
from __future__ import annotations

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
        # The message from cryptography never contains key material.
        raise ConfigError(f"{key}: {path} is not an unencrypted PKCS#8 PEM private key ({e})") from None


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
