"""`logserver keygen authority --algorithm ml-dsa-44` and `logserver sign` with it, as a
user runs them (child processes, exit status and output checked)."""
from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from bundle_factory import NOW, make_key, make_payload, payload_bytes
from logserver.bundle import AuthoritySet, load_authority_key_pem, parse_envelope, verify_envelope

CLI = [sys.executable, "-m", "logserver.cli"]


def cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


def keygen(cwd: Path, algorithm: str, name: str) -> str:
    done = cli(cwd, "keygen", "authority", "--algorithm", algorithm, "--out", f"{name}.key")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"algorithm: {algorithm}\n" in done.stdout, done.stdout
    keyid = re.search(r"^keyid: +([0-9a-f]{64})$", done.stdout, re.M)
    assert keyid, done.stdout
    return keyid.group(1)


def test_keygen_makes_an_ml_dsa_44_authority_key_pair(tmp_path):
    keyid = keygen(tmp_path, "ml-dsa-44", "pq")
    private, public = tmp_path / "pq.key", tmp_path / "pq.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
    key = load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, mldsa.MLDSA44PrivateKey)
    # PKCS#8 holding the 32-byte seed only (RFC 9881 "seed" form): 54 bytes of DER.
    assert len(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())) == 54
    assert load_pem_public_key(public.read_bytes()) == key.public_key()
    pinned = load_authority_key_pem(public.read_bytes(), "pq-ca", "countersigner")
    der = pinned.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert pinned.keyid == keyid == hashlib.sha256(der).hexdigest()
    assert pinned.algorithm == "ml-dsa-44"


def test_sign_with_ed25519_then_ml_dsa_44_makes_an_envelope_the_policy_accepts(tmp_path):
    signer_keyid = keygen(tmp_path, "ed25519", "signer")
    counter_keyid = keygen(tmp_path, "ml-dsa-44", "counter")
    payload = make_payload(keys=[make_key("hsm-1", "ml-kem-768"), make_key("hsm-2", "ml-dsa-44")])
    (tmp_path / "payload.json").write_bytes(payload_bytes(payload))

    first = cli(tmp_path, "sign", "--key", "signer.key", "--payload", "payload.json", "--out", "bundle.json")
    assert first.returncode == 0, first.stderr
    assert f"with ed25519 keyid {signer_keyid}" in first.stdout, first.stdout
    second = cli(tmp_path, "sign", "--key", "counter.key", "--envelope", "bundle.json", "--out", "bundle.json")
    assert second.returncode == 0, second.stderr
    assert f"with ml-dsa-44 keyid {counter_keyid}" in second.stdout and "(2 signature(s))" in second.stdout

    envelope = parse_envelope((tmp_path / "bundle.json").read_bytes())
    assert {s.keyid: len(s.sig) for s in envelope.signatures} == {signer_keyid: 64, counter_keyid: 2420}
    pinned = AuthoritySet([
        load_authority_key_pem((tmp_path / "signer.pub.pem").read_bytes(), "signer-ca", "signer"),
        load_authority_key_pem((tmp_path / "counter.pub.pem").read_bytes(), "counter-ca", "countersigner"),
    ])
    verified = verify_envelope(envelope, pinned, NOW)
    assert (verified.signer_keyid, verified.countersigner_keyid) == (signer_keyid, counter_keyid)

    twice = cli(tmp_path, "sign", "--key", "counter.key", "--envelope", "bundle.json", "--out", "bundle.json")
    assert twice.returncode == 1 and f"already has a signature by keyid {counter_keyid}" in twice.stderr


def test_sign_refuses_an_ml_dsa_key_of_another_parameter_set(tmp_path):
    key = mldsa.MLDSA65PrivateKey.generate()
    path = tmp_path / "ml-dsa-65.key"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    (tmp_path / "payload.json").write_bytes(payload_bytes())
    done = cli(tmp_path, "sign", "--key", str(path), "--payload", "payload.json", "--out", "bundle.json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (f"logserver sign: error: --key: {path}: authority private key: got MLDSA65PrivateKey, "
                           "want Ed25519, ECDSA P-256 or ML-DSA-44\n")
    assert not (tmp_path / "bundle.json").exists()


def test_keygen_lists_ml_dsa_44_and_refuses_other_algorithms(tmp_path):
    helped = cli(tmp_path, "keygen", "--help")
    assert "ml-dsa-44" in helped.stdout, helped.stdout
    refused = cli(tmp_path, "keygen", "authority", "--algorithm", "ml-dsa-65", "--out", "x.key")
    assert refused.returncode == 2 and "invalid choice: 'ml-dsa-65'" in refused.stderr, refused.stderr
    assert not (tmp_path / "x.key").exists()
