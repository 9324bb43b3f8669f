"""Private key files: the log key, the witness key and authority keys share one loader."""
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.cli.errors import CliError
from logserver.cli.sign import load_authority_private_key
from logserver.config import ConfigError
from logserver.keys.log_key import LogKey, generate_log_key_pem
from logserver.witness.cosigner import Cosigner


def _write(path, data, mode=0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_log_and_witness_keys_load_the_same_key(tmp_path):
    pem = generate_log_key_pem()
    path = _write(tmp_path / "k.pem", pem)
    public = serialization.load_pem_private_key(pem, None).public_key().public_bytes_raw()
    assert LogKey.load(path, "example.com/log").public_key_bytes == public
    [(_, witness_public, _)] = Cosigner.load([path], "witness.example/w").public_keys()
    assert witness_public == public


@pytest.mark.parametrize("load, name", [
    (lambda p: LogKey.load(p, "example.com/log"), "log_key"),
    (lambda p: Cosigner.load([p], "witness.example/w"), "key"),
])
def test_ed25519_loaders_name_the_key_in_each_refusal(tmp_path, load, name):
    with pytest.raises(ConfigError, match=f"^{name}: file .* does not exist"):
        load(tmp_path / "missing.pem")
    readable = _write(tmp_path / "readable.pem", generate_log_key_pem(), 0o640)
    with pytest.raises(ConfigError, match=f"^{name}: private key file .* \\(mode 0640\\)"):
        load(readable)
    junk = _write(tmp_path / "junk.pem", b"not a key")
    with pytest.raises(ConfigError, match=f"^{name}: .* is not an unencrypted PKCS#8 PEM private key"):
        load(junk)
    p256 = _write(tmp_path / "p256.pem", _pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match=f"^{name}: .* holds a \\w+, want an Ed25519( or ML-DSA-44)? key"):
        load(p256)


def test_authority_keys_may_be_ed25519_or_p256_only(tmp_path):
    ed = _write(tmp_path / "ed.pem", _pem(Ed25519PrivateKey.generate()))
    assert isinstance(load_authority_private_key(ed), Ed25519PrivateKey)
    p256 = _write(tmp_path / "p256.pem", _pem(ec.generate_private_key(ec.SECP256R1())))
    assert isinstance(load_authority_private_key(p256), ec.EllipticCurvePrivateKey)
    p384 = _write(tmp_path / "p384.pem", _pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(CliError,
                       match=r"^--key: .* got an EC key on secp384r1, want Ed25519, ECDSA P-256 or ML-DSA-44"):
        load_authority_private_key(p384)
    readable = _write(tmp_path / "readable.pem", _pem(Ed25519PrivateKey.generate()), 0o644)
    with pytest.raises(CliError, match=r"^--key: private key file .* \(mode 0644\)"):
        load_authority_private_key(readable)
