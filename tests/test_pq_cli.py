"""`logserver keygen authority --algorithm ml-dsa-44` and `logserver sign` with it, as a
user runs them (child processes, exit status and output checked)."""
from __future__ import annotations

import base64
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


# ---- RFC 9881's example keys (tests/testdata/rfc9881, README.md there) ----

RFC9881 = Path(__file__).parent / "testdata" / "rfc9881"


def _private_copy(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _both_form() -> bytes:
    """RFC 9881 C.1.1.3: OneAsymmetricKey whose privateKey holds SEQUENCE { seed, expandedKey },
    rebuilt from the seed (000102...1f) and C.1.1.2's expanded key."""
    pem = (RFC9881 / "ml-dsa-44-expanded.priv.pem").read_bytes()
    expanded = load_der_expanded(pem)
    inner = b"\x30\x82\x0a\x26" + b"\x04\x20" + bytes(range(32)) + b"\x04\x82\x0a\x00" + expanded
    body = b"\x02\x01\x00" + bytes.fromhex("300b0609608648016503040311") + b"\x04\x82\x0a\x2a" + inner
    der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    # The RFC's own text of C.1.1.3 starts with these 48 bytes (its first PEM line).
    assert der[:48] == base64.b64decode("MIIKPgIBADALBglghkgBZQMEAxEEggoqMIIKJgQgAAECAwQFBgcICQoLDA0ODxAR")
    lines = [base64.b64encode(der[i:i + 48]) for i in range(0, len(der), 48)]
    return b"-----BEGIN PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n-----END PRIVATE KEY-----\n"


def load_der_expanded(pem: bytes) -> bytes:
    der = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    assert len(der) == 2588 and der[-2564:-2560] == b"\x04\x82\x0a\x00"  # OCTET STRING of 2560 bytes
    return der[-2560:]


def test_the_rfc_9881_example_key_pins_signs_and_verifies(tmp_path):
    public_pem = (RFC9881 / "ml-dsa-44.pub.pem").read_bytes()
    pinned = load_authority_key_pem(public_pem, "rfc-9881", "countersigner")
    der = pinned.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert der[:22] == bytes.fromhex("30820532300b060960864801650304031103820521" "00")
    assert pinned.keyid == hashlib.sha256(der).hexdigest() and pinned.algorithm == "ml-dsa-44"
    # The seed form derives the RFC's public key (FIPS 204 ML-DSA.KeyGen_internal of the seed).
    seed_pem = (RFC9881 / "ml-dsa-44-seed.priv.pem").read_bytes()
    seed_key = load_pem_private_key(seed_pem, None)
    assert isinstance(seed_key, mldsa.MLDSA44PrivateKey) and seed_key.public_key() == pinned.public_key
    assert seed_key.private_bytes_raw() == bytes(range(32))

    key_path = _private_copy(tmp_path, "rfc.key", seed_pem)
    signer_keyid = keygen(tmp_path, "ed25519", "signer")
    (tmp_path / "payload.json").write_bytes(payload_bytes())
    for argv in (("--key", "signer.key", "--payload", "payload.json"),
                 ("--key", str(key_path), "--envelope", "bundle.json")):
        done = cli(tmp_path, "sign", *argv, "--out", "bundle.json")
        assert done.returncode == 0, done.stderr
    assert f"with ml-dsa-44 keyid {pinned.keyid}" in done.stdout, done.stdout
    envelope = parse_envelope((tmp_path / "bundle.json").read_bytes())
    pinned_set = AuthoritySet([
        load_authority_key_pem((tmp_path / "signer.pub.pem").read_bytes(), "signer-ca", "signer"), pinned])
    verified = verify_envelope(envelope, pinned_set, NOW)
    assert (verified.signer_keyid, verified.countersigner_keyid) == (signer_keyid, pinned.keyid)


def test_the_expanded_and_both_forms_are_refused_saying_what_to_do(tmp_path):
    (tmp_path / "payload.json").write_bytes(payload_bytes())
    for name, pem in (("expanded.key", (RFC9881 / "ml-dsa-44-expanded.priv.pem").read_bytes()),
                      ("both.key", _both_form())):
        path = _private_copy(tmp_path, name, pem)
        done = cli(tmp_path, "sign", "--key", str(path), "--payload", "payload.json", "--out", "bundle.json")
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr == (
            f"logserver sign: error: --key: {path} holds an ML-DSA-44 private key in RFC 9881's expanded or "
            "both form, which cannot be read; want the seed form (the 32-byte seed only), as `logserver keygen "
            "authority --algorithm ml-dsa-44` writes it\n"), done.stderr
        assert not (tmp_path / "bundle.json").exists()
