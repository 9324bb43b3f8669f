"""verify_receipt against receipts from a running server: valid ones verify, and
tampering with any single field fails with the specific error."""
from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timedelta

import pytest

from bundle_factory import NOW, BundleFactory, make_authorities
from logserver.bundle import Envelope, envelope_leaf_hash, parse_payload
from logserver.client import (
    CheckLog,
    CheckpointVerificationError,
    ExpiredError,
    InclusionError,
    MalformedError,
    SignatureError,
    TrustPolicy,
    VerificationFailure,
    WitnessQuorumError,
    verify_receipt,
)
from logserver.formats import CosignatureSigner
from logserver.formats.note import parse_note
from server_harness import start_server, write_config
from test_client_support import submit, trust_policy_for, write_trust_policy


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("receipts"), database_url))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy(server, tmp_path_factory) -> TrustPolicy:
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[0]


@pytest.fixture(scope="module")
async def logged(server) -> tuple[Envelope, dict]:
    """One envelope in a log of several entries (so the proof has hashes), and its receipt."""
    factory = BundleFactory(fleet_id="receipts-fleet")
    for _ in range(5):
        await submit(server.session, factory.envelope())
    envelope = factory.envelope()
    receipt = await submit(server.session, envelope)
    for _ in range(2):
        await submit(server.session, factory.envelope())
    return envelope, receipt


def flip_bit(data: bytes, position: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 0x01
    return bytes(out)


def flip_b64(text: str, position: int = 0) -> str:
    return base64.b64encode(flip_bit(base64.b64decode(text), position)).decode()


async def test_valid_receipt_verifies_and_returns_the_bundle(logged, policy):
    envelope, receipt = logged
    checks = CheckLog()
    result = verify_receipt(envelope.to_json(), receipt, policy, now=NOW, checks=checks)
    bundle = parse_payload(envelope.payload)
    assert (result.fleet_id, result.sequence) == ("receipts-fleet", bundle.sequence)
    assert result.keys == bundle.keys
    assert result.index == receipt["index"]
    assert result.leaf_hash == envelope_leaf_hash(envelope)
    assert result.checkpoint.size == receipt["tree_size"]
    assert result.checkpoint.signed_at is not None  # the log's cosignature/v1 time line
    assert all(c.ok for c in checks.results)
    assert [c.name for c in checks.results] == [
        "receipt_format", "envelope_format", "envelope_signatures", "validity_window", "leaf_hash",
        "checkpoint_signature", "witness_quorum", "inclusion_proof",
    ]


async def test_receipt_accepts_bytes_text_and_envelope_objects(logged, policy):
    envelope, receipt = logged
    for env in (envelope, envelope.to_json(), envelope.to_json().decode()):
        for rec in (receipt, json.dumps(receipt), json.dumps(receipt).encode()):
            assert verify_receipt(env, rec, policy, now=NOW).index == receipt["index"]


@pytest.mark.parametrize("position", [0, 10, 100, 200])
async def test_flipped_bit_in_the_payload_is_a_signature_error(logged, policy, position):
    envelope, receipt = logged
    d = envelope.to_dict()
    d["payload"] = flip_b64(d["payload"], position)
    with pytest.raises(SignatureError) as info:
        verify_receipt(json.dumps(d), receipt, policy, now=NOW)
    assert info.value.check == "envelope_signatures"


async def test_flipped_bit_in_the_envelope_json_fails(logged, policy):
    envelope, receipt = logged
    raw = envelope.to_json()
    # A flipped bit in the JSON syntax makes it unparseable; in the base64 text, the
    # payload or a signature changes.
    with pytest.raises(MalformedError):
        verify_receipt(flip_bit(raw, 0), receipt, policy, now=NOW)
    with pytest.raises((SignatureError, MalformedError)):
        verify_receipt(flip_bit(raw, raw.index(b'"payload"') + 20), receipt, policy, now=NOW)


@pytest.mark.parametrize("which", [0, 1])
async def test_flipped_bit_in_a_signature_is_a_signature_error(logged, policy, which):
    envelope, receipt = logged
    d = envelope.to_dict()
    d["signatures"][which]["sig"] = flip_b64(d["signatures"][which]["sig"], 7)
    with pytest.raises(SignatureError):
        verify_receipt(json.dumps(d), receipt, policy, now=NOW)


async def test_missing_countersignature_is_a_signature_error(logged, policy):
    envelope, receipt = logged
    d = envelope.to_dict()
    d["signatures"] = d["signatures"][:1]
    with pytest.raises(SignatureError):
        verify_receipt(json.dumps(d), receipt, policy, now=NOW)


async def test_unknown_authorities_are_a_signature_error(logged, tmp_path, server):
    envelope, receipt = logged
    other, _ = await trust_policy_for(server, tmp_path, authorities=make_authorities("ecdsa-p256", "ed25519"))
    with pytest.raises(SignatureError):
        verify_receipt(envelope, receipt, other, now=NOW)


@pytest.mark.parametrize("delta", [-1, 1, 2])
async def test_index_tampering_is_an_inclusion_error(logged, policy, delta):
    envelope, receipt = logged
    index = receipt["index"] + delta
    only_json = dict(receipt, index=index)
    with pytest.raises(InclusionError):
        verify_receipt(envelope, only_json, policy, now=NOW)
    # The same change made consistently in the tlog-proof too: the proof no longer verifies
    # (or the index lies beyond the checkpoint's tree).
    both = dict(only_json, proof=receipt["proof"].replace(f"index {receipt['index']}\n", f"index {index}\n"))
    with pytest.raises(InclusionError) as info:
        verify_receipt(envelope, both, policy, now=NOW)
    assert info.value.check == "inclusion_proof"


@pytest.mark.parametrize("which", [0, -1])
async def test_proof_hash_tampering_is_an_inclusion_error(logged, policy, which):
    envelope, receipt = logged
    hashes = list(receipt["inclusion_proof"])
    assert len(hashes) >= 2
    old = hashes[which]
    new = bytes.fromhex(old)
    new = flip_bit(new, 31).hex()
    hashes[which] = new
    only_json = dict(receipt, inclusion_proof=hashes)
    with pytest.raises(InclusionError):
        verify_receipt(envelope, only_json, policy, now=NOW)
    b64 = lambda h: base64.b64encode(bytes.fromhex(h)).decode()  # noqa: E731
    both = dict(only_json, proof=receipt["proof"].replace(b64(old) + "\n", b64(new) + "\n", 1))
    assert both["proof"] != receipt["proof"]
    with pytest.raises(InclusionError) as info:
        verify_receipt(envelope, both, policy, now=NOW)
    assert info.value.check == "inclusion_proof"


async def test_leaf_hash_tampering_is_an_inclusion_error(logged, policy):
    envelope, receipt = logged
    bad = dict(receipt, leaf_hash=flip_bit(bytes.fromhex(receipt["leaf_hash"]), 0).hex())
    with pytest.raises(InclusionError) as info:
        verify_receipt(envelope, bad, policy, now=NOW)
    assert info.value.check == "leaf_hash"


def _replace_checkpoint(receipt: dict, note: str) -> dict:
    return dict(receipt, checkpoint=note, proof=receipt["proof"].replace(receipt["checkpoint"], note))


async def test_checkpoint_tampering_is_a_checkpoint_error(logged, policy):
    envelope, receipt = logged
    note = receipt["checkpoint"]
    origin, size, root, rest = note.split("\n", 3)
    root_bytes = flip_bit(base64.b64decode(root), 3)
    tampered = "\n".join([origin, size, base64.b64encode(root_bytes).decode(), rest])
    with pytest.raises(CheckpointVerificationError):
        verify_receipt(envelope, dict(receipt, checkpoint=tampered), policy, now=NOW)  # JSON only
    with pytest.raises(CheckpointVerificationError) as info:
        verify_receipt(envelope, _replace_checkpoint(receipt, tampered), policy, now=NOW)
    assert info.value.check == "checkpoint_signature"


async def test_checkpoint_signature_tampering_is_a_checkpoint_error(logged, policy):
    envelope, receipt = logged
    note = parse_note(receipt["checkpoint"])
    sigs = list(note.signatures)
    # The first line is the log's Ed25519 signature (type 0x01).
    first = sigs[0]
    sigs[0] = type(first)(first.name, first.key_id, flip_bit(first.signature, 5))
    tampered = type(note)(note.text, tuple(sigs)).format()
    with pytest.raises(CheckpointVerificationError) as info:
        verify_receipt(envelope, _replace_checkpoint(receipt, tampered), policy, now=NOW)
    assert info.value.check == "checkpoint_signature"
    # A tampered time stamp line (the log's key, type 0x04) is refused too.
    sigs = list(note.signatures)
    stamp = sigs[1]
    sigs[1] = type(stamp)(stamp.name, stamp.key_id, flip_bit(stamp.signature, 70))
    stamp_tampered = type(note)(note.text, tuple(sigs)).format()
    with pytest.raises(CheckpointVerificationError):
        verify_receipt(envelope, _replace_checkpoint(receipt, stamp_tampered), policy, now=NOW)


async def test_checkpoint_of_an_unknown_log_is_a_checkpoint_error(logged, tmp_path):
    envelope, receipt = logged
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from logserver.formats import Ed25519NoteSigner

    other = Ed25519NoteSigner(parse_note(receipt["checkpoint"]).text.split("\n")[0], Ed25519PrivateKey.generate())
    stranger = TrustPolicy.load(write_trust_policy(tmp_path, other.vkey))
    with pytest.raises(CheckpointVerificationError):
        verify_receipt(envelope, receipt, stranger, now=NOW)


async def test_inverted_validity_window_is_an_expired_error(server, policy):
    env = BundleFactory(fleet_id="inverted").envelope(not_before="2030-01-01T00:00:00Z",
                                                      not_after="2029-01-01T00:00:00Z")
    # The log refuses such a bundle, so pair it with any receipt: the window check
    # comes first.
    receipt = await submit(server.session, BundleFactory(fleet_id="inverted-ok").envelope())
    checks = CheckLog()
    with pytest.raises(ExpiredError) as info:
        verify_receipt(env, receipt, policy, now=NOW, checks=checks)
    assert info.value.check == "validity_window" == checks.results[-1].name


async def test_validity_window_uses_the_injected_time(logged, policy):
    envelope, receipt = logged
    bundle = parse_payload(envelope.payload)
    verify_receipt(envelope, receipt, policy, now=bundle.not_before)
    with pytest.raises(ExpiredError):
        verify_receipt(envelope, receipt, policy, now=bundle.not_after)
    with pytest.raises(ExpiredError):
        verify_receipt(envelope, receipt, policy, now=bundle.not_before - timedelta(microseconds=1))
    with pytest.raises(TypeError):
        verify_receipt(envelope, receipt, policy, now=datetime(2026, 1, 1))


async def test_witness_quorum_is_enforced(logged, server, tmp_path):
    envelope, receipt = logged
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    witness = CosignatureSigner("witness.example/w1", Ed25519PrivateKey.generate())
    extra = f"witness w1 {witness.vkey}\n"
    strict, _ = await trust_policy_for(server, tmp_path, extra_policy=extra, quorum="w1")
    with pytest.raises(WitnessQuorumError) as info:
        verify_receipt(envelope, receipt, strict, now=NOW)
    assert info.value.check == "witness_quorum"
    # The same checkpoint with that witness's cosignature added meets the quorum.
    note = parse_note(receipt["checkpoint"])
    from logserver.formats import sign_note

    cosigned = sign_note(note.text, [witness], note.signatures)
    result = verify_receipt(envelope, _replace_checkpoint(receipt, cosigned), strict, now=NOW)
    assert result.checkpoint.witnesses == frozenset({"w1"})


async def test_a_witness_holding_the_log_key_is_refused(server, tmp_path):
    from logserver.client import TrustPolicyError
    from logserver.formats import CosignatureVerifier, Ed25519NoteVerifier
    from test_client_support import log_vkey

    vkey = await log_vkey(server.session)
    log_verifier = Ed25519NoteVerifier.from_vkey(vkey)
    own = CosignatureVerifier("some-witness", log_verifier.public_key)
    with pytest.raises(TrustPolicyError):
        TrustPolicy.load(write_trust_policy(tmp_path, vkey, extra_policy=f"witness w {own.vkey}\n", quorum="w"))


@pytest.mark.parametrize("mutate", [
    lambda r: r.pop("proof"),
    lambda r: r.update(extra=1),
    lambda r: r.update(index=-1),
    lambda r: r.update(index=True),
    lambda r: r.update(leaf_hash=r["leaf_hash"].upper()),
    lambda r: r.update(inclusion_proof="nope"),
    lambda r: r.update(duplicate="no"),
])
async def test_malformed_receipts_are_refused(logged, policy, mutate):
    envelope, receipt = logged
    bad = copy.deepcopy(receipt)
    mutate(bad)
    with pytest.raises(MalformedError):
        verify_receipt(envelope, bad, policy, now=NOW)


async def test_receipt_with_duplicate_json_keys_is_refused(logged, policy):
    envelope, receipt = logged
    text = json.dumps(receipt)
    with pytest.raises(MalformedError):
        verify_receipt(envelope, text[:-1] + ', "index": 0}', policy, now=NOW)


async def test_every_failure_is_a_verification_failure(logged, policy):
    envelope, receipt = logged
    d = envelope.to_dict()
    d["signatures"] = [{"keyid": s["keyid"], "sig": flip_b64(s["sig"])} for s in d["signatures"]]
    checks = CheckLog()
    with pytest.raises(VerificationFailure):
        verify_receipt(json.dumps(d), receipt, policy, now=NOW, checks=checks)
    assert checks.results[-1].ok is False and checks.results[-1].name == "envelope_signatures"
