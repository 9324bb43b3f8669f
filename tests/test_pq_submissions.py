"""ML-DSA-44 authorities and post-quantum fleet keys through the real server.

The server pins, per authority, a classical key and an ML-DSA-44 key: signer-ca holds an
Ed25519 and an ML-DSA-44 key, countersigner-ca an ECDSA P-256 and an ML-DSA-44 key. It
checks submissions in its admission process (verify_processes = 1, the default), so the
keys cross the keys frame. Every accepted combination is logged, served back byte for
byte, verified by the client library and re-verified by `logserver monitor`; every
refusal gets its 4xx and code and leaves the log as it was.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bundle_factory import (
    Authorities,
    BundleFactory,
    make_authority,
    make_envelope,
    make_key,
)
from logserver.bundle import Envelope, Signature, envelope_leaf_hash
from logserver.client import TrustPolicy, verify_receipt
from logserver.client.policy import authorities_toml
from logserver.config import ConfigError, load_config
from logserver.server import create_app
from server_harness import start_server, write_config
from test_client_support import log_vkey, submit
from test_pq_keys import MLDSA44_SPKI_PREFIX, MLKEM768_SPKI_PREFIX, spki_pem
from test_server_rejections import assert_error, log_state

JSON = {"Content-Type": "application/json"}
ED_SIGNER = make_authority("signer-ca", "signer", "ed25519", seed=11)
PQ_SIGNER = make_authority("signer-ca", "signer", "ml-dsa-44", seed=11)
P256_COUNTER = make_authority("countersigner-ca", "countersigner", "ecdsa-p256", seed=11)
PQ_COUNTER = make_authority("countersigner-ca", "countersigner", "ml-dsa-44", seed=11)
PINNED = Authorities(ED_SIGNER, PQ_COUNTER, (PQ_SIGNER, P256_COUNTER))
UNPINNED_PQ = make_authority("signer-ca", "signer", "ml-dsa-44", seed=99)

COMBINATIONS = {
    "ed25519+ml-dsa-44": (ED_SIGNER, PQ_COUNTER),
    "ml-dsa-44+ml-dsa-44": (PQ_SIGNER, PQ_COUNTER),
    "ml-dsa-44+ecdsa-p256": (PQ_SIGNER, P256_COUNTER),
}


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pq-submissions")
    cfg = write_config(directory, database_url)  # the log key and the base config
    for fixture in PINNED.all:
        (directory / f"{fixture.keyid[:16]}.pem").write_bytes(fixture.public_pem)
    tables = authorities_toml([
        ("signer-ca", "signer", [f"{ED_SIGNER.keyid[:16]}.pem", f"{PQ_SIGNER.keyid[:16]}.pem"]),
        ("countersigner-ca", "countersigner", [f"{P256_COUNTER.keyid[:16]}.pem", f"{PQ_COUNTER.keyid[:16]}.pem"]),
    ])
    text = cfg.read_text()
    cfg.write_text(text[:text.index("[[authorities]]")] + tables)
    s = await start_server(cfg)
    yield s
    await s.close()


def envelope(fleet: str, signers=COMBINATIONS["ed25519+ml-dsa-44"], sequence: int = 0, **payload) -> Envelope:
    return make_envelope(BundleFactory(PINNED, fleet_id=fleet).payload(sequence=sequence, **payload), signers=signers)


def pq_keys(n: int = 2) -> list[dict]:
    return [make_key(f"hsm-{i}", ("ml-dsa-44", "ml-kem-768")[i % 2], i) for i in range(n)]


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
async def test_each_combination_is_logged_served_and_verified(server, combination, tmp_path):
    signers = COMBINATIONS[combination]
    sent = envelope(f"pq-{combination.replace('+', '-')}", signers, keys=pq_keys(4))
    receipt = await submit(server.session, sent)
    assert receipt["duplicate"] is False
    leaf_hash = envelope_leaf_hash(sent)
    assert receipt["leaf_hash"] == leaf_hash.hex()

    async with server.session.get(f"/v1/bundles/{leaf_hash.hex()}") as resp:
        assert resp.status == 200, await resp.text()
        served = (await resp.json())["envelope"]
    by_keyid = {s["keyid"]: base64.b64decode(s["sig"]) for s in served["signatures"]}
    assert by_keyid == {s.keyid: s.sig for s in sent.signatures}
    sizes = {ED_SIGNER.keyid: 64, PQ_SIGNER.keyid: 2420, PQ_COUNTER.keyid: 2420}
    for keyid, sig in by_keyid.items():
        assert len(sig) == sizes[keyid] if keyid in sizes else 8 <= len(sig) <= 72  # DER ECDSA P-256

    policy = TrustPolicy.from_parts(PINNED.authority_set, f"log {await log_vkey(server.session)}\nquorum none\n")
    verified = verify_receipt(sent, receipt, policy)
    assert (verified.signer_keyid, verified.countersigner_keyid) == (signers[0].keyid, signers[1].keyid)
    assert [k.algorithm for k in verified.bundle.keys] == ["ml-dsa-44", "ml-kem-768"] * 2


async def test_the_monitor_reverifies_every_pq_entry(server, tmp_path):
    for combination, signers in sorted(COMBINATIONS.items()):
        await submit(server.session, envelope(f"monitored-{combination.replace('+', '-')}", signers, keys=pq_keys()))
    for fixture in PINNED.all:
        (tmp_path / f"{fixture.keyid[:16]}.pem").write_bytes(fixture.public_pem)
    (tmp_path / "log.policy").write_text(f"log {await log_vkey(server.session)} {server.url}\nquorum none\n")
    (tmp_path / "trust.toml").write_text('tlog_policy = "log.policy"\n\n' + authorities_toml([
        ("signer-ca", "signer", [f"{ED_SIGNER.keyid[:16]}.pem", f"{PQ_SIGNER.keyid[:16]}.pem"]),
        ("countersigner-ca", "countersigner", [f"{P256_COUNTER.keyid[:16]}.pem", f"{PQ_COUNTER.keyid[:16]}.pem"]),
    ]))
    size, _ = await log_state(server)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "logserver.cli", "monitor", "--log", server.url, "--policy", "trust.toml",
         "--state", "monitor-state", "--once"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no alerts" in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["entries_verified"] >= size >= 3, done.stdout


async def test_the_most_ml_dsa_fleet_keys_that_fit_are_logged_and_one_more_is_413(server):
    """docs/formats.md, "Sizes": with two ML-DSA-44 authority signatures, 23 ML-DSA-44 fleet keys."""
    signers = COMBINATIONS["ml-dsa-44+ml-dsa-44"]
    keys = [make_key(f"hsm-{i}", "ml-dsa-44", i) for i in range(24)]
    fits = envelope("pq-largest", signers, keys=keys[:23])
    assert len(fits.to_json()) <= 65536
    await submit(server.session, fits)
    before = await log_state(server)
    async with server.session.post("/v1/bundles", data=envelope("pq-largest", signers, 1, keys=keys).to_json(),
                                   headers=JSON) as resp:
        # The HTTP body limit (limits.max_body_bytes, 65,536) answers before the envelope's own.
        await assert_error(resp, 413, "too_large")
    assert await log_state(server) == before


# --- refusals ---------------------------------------------------------------------------


def _replace_sig(env: Envelope, keyid: str, sig: bytes) -> Envelope:
    return dataclasses.replace(env, signatures=tuple(Signature(s.keyid, sig if s.keyid == keyid else s.sig)
                                                     for s in env.signatures))


def tampered_ml_dsa_signature() -> bytes:
    env = envelope("refused-pq")
    sig = next(s.sig for s in env.signatures if s.keyid == PQ_COUNTER.keyid)
    return _replace_sig(env, PQ_COUNTER.keyid, sig[:-1] + bytes([sig[-1] ^ 1])).to_json()


def ml_dsa_signature_with_a_context() -> bytes:
    env = envelope("refused-pq")
    return _replace_sig(env, PQ_COUNTER.keyid, PQ_COUNTER.private_key.sign(env.pae(), b"ctx")).to_json()


def ed25519_signature_under_the_ml_dsa_keyid() -> bytes:
    env = envelope("refused-pq")
    ed_sig = next(s.sig for s in env.signatures if s.keyid == ED_SIGNER.keyid)
    return _replace_sig(env, PQ_COUNTER.keyid, ed_sig).to_json()


def signature_longer_than_ml_dsa_44() -> bytes:
    d = envelope("refused-pq").to_dict()
    for s in d["signatures"]:  # type: ignore[union-attr]
        if s["keyid"] == PQ_COUNTER.keyid:
            s["sig"] = base64.b64encode(base64.b64decode(s["sig"]) + b"\x00").decode()
    return json.dumps(d).encode()


def ml_dsa_65_signature_under_the_ml_dsa_44_keyid() -> bytes:
    """A signer with the wrong parameter set: its 3309-byte signature cannot be an ML-DSA-44 one."""
    env = envelope("refused-pq")
    d = env.to_dict()
    other = mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes(32)).sign(env.pae())
    assert len(other) == 3309
    for s in d["signatures"]:  # type: ignore[union-attr]
        if s["keyid"] == PQ_COUNTER.keyid:
            s["sig"] = base64.b64encode(other).decode()
    return json.dumps(d).encode()


def fleet_key(algorithm: str, der: bytes) -> bytes:
    key = {"key_id": "hsm-bad", "algorithm": algorithm, "public_key": base64.b64encode(der).decode()}
    return envelope("refused-pq", keys=[make_key("hsm-ok", "ed25519"), key]).to_json()


def _raw(algorithm: str) -> bytes:
    return base64.b64decode(make_key("x", algorithm)["public_key"])


def _rho() -> bytes:
    return hashlib.sha256(b"rho").digest()


REFUSALS = {
    # name: (body maker, status, code)
    "tampered_ml_dsa_signature": (tampered_ml_dsa_signature, 422, "invalid_signature"),
    "ml_dsa_signature_with_a_context": (ml_dsa_signature_with_a_context, 422, "invalid_signature"),
    "ed25519_signature_under_the_ml_dsa_keyid": (ed25519_signature_under_the_ml_dsa_keyid, 422, "invalid_signature"),
    "unpinned_ml_dsa_signer_only": (
        lambda: envelope("refused-pq", (UNPINNED_PQ, PQ_COUNTER)).to_json(), 422, "signer_signature_missing"),
    "ml_dsa_countersigner_only": (
        lambda: envelope("refused-pq", (PQ_COUNTER,)).to_json(), 422, "signer_signature_missing"),
    "two_ml_dsa_signatures_of_the_signer": (
        lambda: envelope("refused-pq", (PQ_SIGNER, ED_SIGNER)).to_json(), 422, "countersigner_signature_missing"),
    "signature_longer_than_ml_dsa_44": (signature_longer_than_ml_dsa_44, 400, "malformed_envelope"),
    "ml_dsa_65_signature_under_the_ml_dsa_44_keyid": (ml_dsa_65_signature_under_the_ml_dsa_44_keyid, 400,
                                                      "malformed_envelope"),
    "ml_kem_fleet_key_that_is_ml_dsa": (lambda: fleet_key("ml-kem-768", _raw("ml-dsa-44")), 400, "malformed_payload"),
    "ml_dsa_fleet_key_that_is_ml_kem": (lambda: fleet_key("ml-dsa-44", _raw("ml-kem-768")), 400, "malformed_payload"),
    "ml_dsa_fleet_key_truncated": (lambda: fleet_key("ml-dsa-44", _raw("ml-dsa-44")[:-1]), 400, "malformed_payload"),
    "ml_kem_fleet_key_trailing_byte": (lambda: fleet_key("ml-kem-768", _raw("ml-kem-768") + b"\x00"), 400,
                                       "malformed_payload"),
    "ml_kem_coefficient_not_below_q": (
        lambda: fleet_key("ml-kem-768", MLKEM768_SPKI_PREFIX + b"\xff\x0f" + _raw("ml-kem-768")[24:]), 400,
        "malformed_payload"),
    "ml_dsa_fleet_key_t1_zero": (lambda: fleet_key("ml-dsa-44", MLDSA44_SPKI_PREFIX + _rho() + bytes(1280)), 400,
                                 "weak_fleet_key"),
    "ml_kem_fleet_key_t_hat_zero": (lambda: fleet_key("ml-kem-768", MLKEM768_SPKI_PREFIX + bytes(1152) + _rho()),
                                    400, "weak_fleet_key"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
async def test_refused_pq_submission_appends_nothing(server, name):
    make_body, status, code = REFUSALS[name]
    before = await log_state(server)
    async with server.session.post("/v1/bundles", data=make_body(), headers=JSON) as resp:
        error = await assert_error(resp, status, code)
    if code == "invalid_signature":
        assert f"keyid {PQ_COUNTER.keyid}" in error["message"] and "ml-dsa-44" in error["message"], error
    if name.startswith(("ml_kem", "ml_dsa_fleet")):
        assert error["message"].startswith("keys[1].public_key (key_id 'hsm-bad'): "), error
    assert await log_state(server) == before


def test_the_refusals_break_only_what_they_claim():
    good = envelope("refused-pq")
    assert sorted(s.keyid for s in good.signatures) == sorted([ED_SIGNER.keyid, PQ_COUNTER.keyid])
    assert len(json.loads(signature_longer_than_ml_dsa_44())["signatures"]) == 2
    bad_kem = MLKEM768_SPKI_PREFIX + b"\xff\x0f" + _raw("ml-kem-768")[24:]
    assert len(bad_kem) == len(_raw("ml-kem-768")) and int.from_bytes(bad_kem[22:24], "little") & 0xFFF == 4095
    assert UNPINNED_PQ.keyid not in PINNED.authority_set


# --- start-up ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pem, match",
    [(lambda: spki_pem(MLDSA44_SPKI_PREFIX + _rho() + bytes(1280)), r"ML-DSA-44 key refused: t1 = 0"),
     (lambda: mldsa.MLDSA65PrivateKey.generate().public_key().public_bytes(Encoding.PEM,
                                                                            PublicFormat.SubjectPublicKeyInfo),
      r"got an ML-DSA key of another parameter set \(ML-DSA-65 or -87\), want Ed25519, ECDSA P-256 or ML-DSA-44"),
     (lambda: mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes(Encoding.PEM,
                                                                             PublicFormat.SubjectPublicKeyInfo),
      r"got MLKEM768PublicKey, want Ed25519, ECDSA P-256 or ML-DSA-44")],
    ids=["ml-dsa-44-t1-zero", "ml-dsa-65", "ml-kem-768"],
)
def test_a_refused_pq_authority_key_stops_start_up_naming_the_file(tmp_path, pem, match):
    config_path = write_config(tmp_path, "postgresql://127.0.0.1:1/never-used")
    (tmp_path / "countersigner.pem").write_bytes(pem())
    config = load_config(config_path, environ={})
    with pytest.raises(ConfigError, match=r"^authorities\[1\]\.keys: .*countersigner\.pem: authority key: " + match):
        create_app(config)
