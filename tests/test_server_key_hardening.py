"""Keys through a running server: weak fleet keys, reserved fleet ids, unpadded base64,
the (n - s) twin of a logged ECDSA signature, and degenerate authority keys at start-up.

The server runs with its default admission processes, so refusals cross the process
boundary (write/admission_wire.py) exactly as in production.
"""
from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from bundle_factory import BundleFactory, default_authorities, make_envelope, make_key
from logserver.bundle import Envelope, Signature
from logserver.config import ConfigError, load_config
from logserver.server import create_app
from server_harness import start_server, write_config
from test_server_duplicates import submit, tree_size

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
IDENTITY_SPKI = bytes.fromhex("302a300506032b6570032100" + "01" + "00" * 31)


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("keys"), database_url))
    yield s
    await s.close()


async def _refused(server, body: bytes, status: int, code: str) -> str:
    before = await tree_size(server)
    got, answer = await submit(server, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert await tree_size(server) == before
    return answer["error"]["message"]


async def test_a_small_order_fleet_key_is_refused_naming_the_key(server):
    weak = {"key_id": "hsm-identity", "algorithm": "ed25519",
            "public_key": base64.b64encode(IDENTITY_SPKI).decode()}
    body = BundleFactory(fleet_id="weak").envelope_json(keys=[make_key("hsm-0"), weak])
    message = await _refused(server, body, 400, "weak_fleet_key")
    assert "key_id 'hsm-identity'" in message and "small order 1" in message, message


async def test_low_order_x25519_fleet_keys_are_refused(server):
    factory = BundleFactory(fleet_id="weak-x")
    for u in (0, 1):
        key = {"key_id": f"hsm-u{u}", "algorithm": "x25519", "public_key": base64.b64encode(
            bytes.fromhex("302a300506032b656e032100") + u.to_bytes(32, "little")).decode()}
        message = await _refused(server, factory.envelope_json(keys=[key]), 400, "weak_fleet_key")
        assert f"key_id 'hsm-u{u}'" in message and "small order" in message, message


async def test_one_key_under_two_key_ids_is_refused(server):
    body = BundleFactory(fleet_id="twice").envelope_json(keys=[make_key("hsm-a"), make_key("hsm-b")])
    message = await _refused(server, body, 400, "duplicate_fleet_key")
    assert "'hsm-b'" in message and "'hsm-a'" in message, message


@pytest.mark.parametrize("fleet_id", [".", ".."])
async def test_dot_segment_fleet_ids_are_refused(server, fleet_id):
    await _refused(server, BundleFactory(fleet_id=fleet_id).envelope_json(), 400, "reserved_fleet_id")


async def test_unpadded_payload_base64_is_refused(server):
    envelope = BundleFactory(fleet_id="unpadded").envelope()
    doc = envelope.to_dict()
    if not doc["payload"].endswith("="):  # make the payload length not a multiple of 3
        envelope = BundleFactory(fleet_id="unpadded-1").envelope()
        doc = envelope.to_dict()
    assert doc["payload"].endswith("=")
    doc["payload"] = doc["payload"].rstrip("=")
    message = await _refused(server, json.dumps(doc).encode(), 400, "malformed_envelope")
    assert message.startswith("payload: got ") and "want padded base64" in message, message


def _twin(envelope: Envelope, keyid: str) -> Envelope:
    """The envelope with the ECDSA signature of `keyid` replaced by (r, n - s)."""
    signatures = []
    for s in envelope.signatures:
        if s.keyid == keyid:
            r, value = decode_dss_signature(s.sig)
            s = Signature(s.keyid, encode_dss_signature(r, P256_ORDER - value))
        signatures.append(s)
    return Envelope(envelope.payload_type, envelope.payload, tuple(signatures))


async def test_the_n_minus_s_twin_of_a_logged_ecdsa_envelope_is_a_duplicate(server):
    authorities = default_authorities()
    payload = BundleFactory(fleet_id="ecdsa-twin").payload()
    logged = make_envelope(payload)
    twin = _twin(logged, authorities.countersigner.keyid)
    assert twin.to_json() != logged.to_json()
    # Both verify: ECDSA (FIPS 186-5 §6.4.2) accepts s and n - s alike.
    counter = authorities.countersigner.authority_key()
    for envelope in (logged, twin):
        (sig,) = [s.sig for s in envelope.signatures if s.keyid == counter.keyid]
        counter.verify(envelope.pae(), sig)

    status, first = await submit(server, logged.to_json())
    assert status == 201, first
    size = await tree_size(server)
    status, again = await submit(server, twin.to_json())
    assert status == 200 and again["duplicate"] is True, again
    assert (again["index"], again["leaf_hash"]) == (first["index"], first["leaf_hash"])
    # The answer carries the logged envelope (the one the receipt proves), not the twin.
    logged_sigs = {s["keyid"]: s["sig"] for s in logged.to_dict()["signatures"]}
    assert {s["keyid"]: s["sig"] for s in again["envelope"]["signatures"]} == logged_sigs
    assert again["envelope"]["payload"] == logged.to_dict()["payload"]
    assert await tree_size(server) == size


def test_a_small_order_authority_key_stops_start_up_naming_the_file(tmp_path):
    config_path = write_config(tmp_path, "postgresql://127.0.0.1:1/never-used")
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(IDENTITY_SPKI) + b"-----END PUBLIC KEY-----\n"
    (tmp_path / "signer.pem").write_bytes(pem)
    config = load_config(config_path, environ={})
    with pytest.raises(ConfigError, match=r"^authorities\[0\]\.keys: .*signer\.pem: authority key: "
                                          r"Ed25519 key refused: a point of small order 1"):
        create_app(config)
