"""Authority keys and the dual-signature policy."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from bundle_factory import (
    NOW,
    Authorities,
    BundleFactory,
    make_authorities,
    make_authority,
    make_envelope,
    make_payload,
    payload_bytes,
)
from logserver.bundle import (
    ALL_CODES,
    PAYLOAD_TYPE,
    AuthorityConfigError,
    AuthorityKey,
    AuthoritySet,
    BundleError,
    Envelope,
    MalformedEnvelopeError,
    MalformedPayloadError,
    Signature,
    SignaturePolicyError,
    ValidityError,
    add_signature,
    keyid_for,
    load_authority_key_pem,
    parse_envelope,
    payload_digest,
    sign_envelope,
    verify_envelope,
)

ALGORITHMS = ("ed25519", "ecdsa-p256", "ml-dsa-44")


@pytest.fixture(scope="module")
def auth() -> Authorities:
    return make_authorities()


def _code(envelope: Envelope, authorities: AuthoritySet, now: datetime = NOW) -> str:
    with pytest.raises(BundleError) as info:
        verify_envelope(envelope, authorities, now)
    return info.value.code


def _with_sigs(envelope: Envelope, *signatures: Signature) -> Envelope:
    return dataclasses.replace(envelope, signatures=signatures)


# ---- accepted ----


@pytest.mark.parametrize("signer_alg", ALGORITHMS)
@pytest.mark.parametrize("countersigner_alg", ALGORITHMS)
def test_accepts_every_algorithm_combination(signer_alg: str, countersigner_alg: str) -> None:
    auth = make_authorities(signer_alg, countersigner_alg)
    envelope = make_envelope(authorities=auth)
    verified = verify_envelope(envelope, auth.authority_set, NOW)
    assert verified.envelope is envelope
    assert verified.signer_keyid == auth.signer.keyid
    assert verified.countersigner_keyid == auth.countersigner.keyid
    assert verified.payload_digest == hashlib.sha256(envelope.payload).digest()
    assert verified.bundle.fleet_id == "fleet-1"


def test_signature_order_does_not_matter(auth: Authorities) -> None:
    envelope = make_envelope(signers=[auth.countersigner, auth.signer])
    verified = verify_envelope(envelope, auth.authority_set, NOW)
    assert (verified.signer_keyid, verified.countersigner_keyid) == (
        auth.signer.keyid,
        auth.countersigner.keyid,
    )


def test_unknown_keyids_are_ignored(auth: Authorities) -> None:
    stranger = make_authority("stranger", "signer")
    envelope = make_envelope(signers=[auth.signer, stranger, auth.countersigner])
    garbage = Signature("not-a-pinned-key", b"\x00" * 64)
    envelope = _with_sigs(envelope, *envelope.signatures, garbage)
    verified = verify_envelope(envelope, auth.authority_set, NOW)
    assert verified.signer_keyid == auth.signer.keyid


def test_two_signer_authorities_either_suffices() -> None:
    second = make_authority("second-signer-ca", "signer", "ecdsa-p256")
    auth = make_authorities(extra=[second])
    for signer in (auth.signer, second):
        envelope = make_envelope(authorities=auth, signers=[signer, auth.countersigner])
        assert verify_envelope(envelope, auth.authority_set, NOW).signer_keyid == signer.keyid


def test_smallest_verified_keyid_is_reported() -> None:
    extra = make_authority("signer-ca", "signer", "ed25519", seed=1)  # second key, same authority
    auth = make_authorities(extra=[extra])
    envelope = make_envelope(authorities=auth, signers=[auth.signer, extra, auth.countersigner])
    verified = verify_envelope(envelope, auth.authority_set, NOW)
    assert verified.signer_keyid == min(auth.signer.keyid, extra.keyid)


def test_now_defaults_to_current_time(auth: Authorities) -> None:
    assert verify_envelope(make_envelope(), auth.authority_set).bundle.sequence == 0


def test_factory_makes_distinct_valid_envelopes(auth: Authorities) -> None:
    factory = BundleFactory(auth)
    envelopes = factory.many(5)
    digests = {payload_digest(e.payload) for e in envelopes}
    assert len(digests) == 5
    for i, envelope in enumerate(envelopes):
        assert verify_envelope(envelope, auth.authority_set, NOW).bundle.sequence == i
    assert parse_envelope(factory.envelope_json()).payload_type == PAYLOAD_TYPE


# ---- refused ----


def test_signer_missing(auth: Authorities) -> None:
    envelope = make_envelope(signers=[auth.countersigner])
    assert _code(envelope, auth.authority_set) == "signer_signature_missing"


def test_countersigner_missing(auth: Authorities) -> None:
    envelope = make_envelope(signers=[auth.signer])
    assert _code(envelope, auth.authority_set) == "countersigner_signature_missing"


def test_two_keys_of_the_signer_authority_are_not_a_countersignature() -> None:
    second_key = make_authority("signer-ca", "signer", "ecdsa-p256", seed=7)
    auth = make_authorities(extra=[second_key])
    envelope = make_envelope(authorities=auth, signers=[auth.signer, second_key])
    assert _code(envelope, auth.authority_set) == "countersigner_signature_missing"


def test_signature_by_unknown_key_only(auth: Authorities) -> None:
    stranger = make_authority("stranger", "signer")
    envelope = make_envelope(signers=[stranger])
    assert _code(envelope, auth.authority_set) == "signer_signature_missing"


def test_stranger_claiming_a_pinned_keyid(auth: Authorities) -> None:
    # The keyid is an unauthenticated hint: the pinned key must verify the signature.
    stranger = make_authority("stranger", "signer")
    forged = make_envelope(signers=[stranger])
    envelope = make_envelope()
    signatures = (Signature(auth.signer.keyid, forged.signatures[0].sig), envelope.signatures[1])
    assert _code(_with_sigs(envelope, *signatures), auth.authority_set) == "invalid_signature"


def test_tampered_payload(auth: Authorities) -> None:
    envelope = make_envelope()
    tampered = dataclasses.replace(envelope, payload=payload_bytes(make_payload(sequence=1)))
    assert _code(tampered, auth.authority_set) == "invalid_signature"


def test_changed_payload_type(auth: Authorities) -> None:
    envelope = make_envelope()
    changed = dataclasses.replace(envelope, payload_type="application/vnd.in-toto+json")
    with pytest.raises(SignaturePolicyError, match=r"want 'application/vnd\.logserver\.fleet-bundle\+json'"):
        verify_envelope(changed, auth.authority_set, NOW)
    assert _code(changed, auth.authority_set) == "unsupported_payload_type"


def test_signatures_over_another_payload_type(auth: Authorities) -> None:
    # PAE binds the type: relabelling an envelope signed for another type fails.
    other = make_envelope(payload_type="application/vnd.other+json")
    relabelled = dataclasses.replace(other, payload_type=PAYLOAD_TYPE)
    assert _code(relabelled, auth.authority_set) == "invalid_signature"


def test_duplicate_signatures(auth: Authorities) -> None:
    envelope = make_envelope()
    doubled = envelope.to_dict()
    doubled["signatures"] = [*doubled["signatures"], doubled["signatures"][0]]  # type: ignore[misc]
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_envelope(json.dumps(doubled).encode())
    assert info.value.code == "duplicate_signature"
    with pytest.raises(MalformedEnvelopeError):
        _with_sigs(envelope, *envelope.signatures, envelope.signatures[0])


@pytest.mark.parametrize("role", ["signer", "countersigner"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_invalid_signature_by_known_key(role: str, algorithm: str) -> None:
    auth = make_authorities(algorithm, algorithm)
    envelope = make_envelope(authorities=auth)
    index = 0 if role == "signer" else 1
    sigs = list(envelope.signatures)
    corrupted = bytearray(sigs[index].sig)
    corrupted[-1] ^= 0x01
    sigs[index] = Signature(sigs[index].keyid, bytes(corrupted))
    with pytest.raises(SignaturePolicyError, match=f"keyid {sigs[index].keyid}") as info:
        verify_envelope(_with_sigs(envelope, *sigs), auth.authority_set, NOW)
    assert info.value.code == "invalid_signature"
    assert info.value.http_status == 422


def test_invalid_signature_by_extra_known_key_rejects_despite_valid_pair() -> None:
    # Documented choice: a pinned key's bad signature is never skipped.
    extra = make_authority("signer-ca", "signer", "ed25519", seed=3)
    auth = make_authorities(extra=[extra])
    envelope = make_envelope(authorities=auth)
    bad = Signature(extra.keyid, b"\x00" * 64)
    assert _code(_with_sigs(envelope, *envelope.signatures, bad), auth.authority_set) == (
        "invalid_signature"
    )


@pytest.mark.parametrize(
    "sig",
    [b"\x01", b"\x00" * 63, b"\x00" * 65],
    ids=["one-byte", "63-bytes", "65-bytes"],
)
def test_wrong_length_ed25519_signature(auth: Authorities, sig: bytes) -> None:
    envelope = make_envelope()
    signatures = (Signature(auth.signer.keyid, sig), envelope.signatures[1])
    assert _code(_with_sigs(envelope, *signatures), auth.authority_set) == "invalid_signature"


def test_ecdsa_signature_must_be_der_not_raw(auth: Authorities) -> None:
    envelope = make_envelope()
    der = envelope.signatures[1].sig
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    signatures = (envelope.signatures[0], Signature(auth.countersigner.keyid, raw))
    assert _code(_with_sigs(envelope, *signatures), auth.authority_set) == "invalid_signature"


def test_signatures_are_checked_before_the_payload(auth: Authorities) -> None:
    signed_junk = make_envelope(b"not json")
    assert _code(signed_junk, auth.authority_set) == "malformed_payload"
    bad_countersignature = Signature(auth.countersigner.keyid, b"\x30\x00")
    unsigned_junk = _with_sigs(signed_junk, signed_junk.signatures[0], bad_countersignature)
    assert _code(unsigned_junk, auth.authority_set) == "invalid_signature"


def test_malformed_payload_error_type(auth: Authorities) -> None:
    with pytest.raises(MalformedPayloadError):
        verify_envelope(make_envelope(make_payload(sequence=-1)), auth.authority_set, NOW)


def test_expired(auth: Authorities) -> None:
    envelope = make_envelope(make_payload(not_after="2025-12-31T23:59:59Z"))
    with pytest.raises(ValidityError) as info:
        verify_envelope(envelope, auth.authority_set, NOW)
    assert info.value.code == "expired"


def test_inverted_window(auth: Authorities) -> None:
    payload = make_payload(not_before="2099-01-01T00:00:00Z", not_after="2098-01-01T00:00:00Z")
    assert _code(make_envelope(payload), auth.authority_set) == "invalid_validity_window"


def test_hopeless_envelope_costs_no_verification(
    auth: Authorities, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = AuthorityKey.verify

    def counting(self: AuthorityKey, message: bytes, signature: bytes) -> None:
        calls.append(self.keyid)
        original(self, message, signature)

    monkeypatch.setattr(AuthorityKey, "verify", counting)
    assert _code(make_envelope(signers=[auth.signer]), auth.authority_set) == (
        "countersigner_signature_missing"
    )
    assert calls == []
    verify_envelope(make_envelope(), auth.authority_set, NOW)
    assert sorted(calls) == sorted([auth.signer.keyid, auth.countersigner.keyid])


# ---- authority keys ----


def test_keyid_is_sha256_of_der_spki(auth: Authorities) -> None:
    public = auth.countersigner.private_key.public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert keyid_for(public) == hashlib.sha256(der).hexdigest()
    assert re.fullmatch("[0-9a-f]{64}", auth.countersigner.keyid)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_load_authority_key_pem(algorithm: str) -> None:
    fixture = make_authority("ca", "signer", algorithm)
    key = load_authority_key_pem(fixture.public_pem, "ca", "signer")
    assert key.keyid == fixture.keyid
    assert (key.authority, key.role) == ("ca", "signer")


def test_load_pem_from_files(tmp_path: Path, auth: Authorities) -> None:
    paths = auth.write_pems(tmp_path)
    loaded = {
        load_authority_key_pem(path.read_bytes(), "x", "signer").keyid for path in paths.values()
    }
    assert loaded == {auth.signer.keyid, auth.countersigner.keyid}


def _pem(public: object) -> bytes:
    pem: bytes = public.public_bytes(  # type: ignore[attr-defined]
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    return pem


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        (_pem(ec.generate_private_key(ec.SECP384R1()).public_key()), "secp384r1"),
        (_pem(ec.generate_private_key(ec.SECP256K1()).public_key()), "secp256k1"),
        (_pem(x25519.X25519PrivateKey.generate().public_key()), "X25519"),
        (_pem(rsa.generate_private_key(65537, 1024).public_key()), "RSA"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (b"", "not a PEM public key"),
    ],
    ids=["p384", "secp256k1", "x25519", "rsa", "garbage", "empty"],
)
def test_load_rejects_other_keys(pem: bytes, match: str) -> None:
    with pytest.raises(AuthorityConfigError, match=match):
        load_authority_key_pem(pem, "ca", "signer")


def test_private_key_pem_is_not_a_public_key(auth: Authorities) -> None:
    with pytest.raises(AuthorityConfigError):
        load_authority_key_pem(auth.signer.private_pem, "ca", "signer")


def test_authority_key_checks_its_fields(auth: Authorities) -> None:
    public = auth.signer.private_key.public_key()
    with pytest.raises(AuthorityConfigError, match="keyid"):
        AuthorityKey("00" * 32, "ca", "signer", public)
    with pytest.raises(AuthorityConfigError, match="role"):
        AuthorityKey.from_public_key(public, "ca", "witness")  # type: ignore[arg-type]
    with pytest.raises(AuthorityConfigError, match="authority name"):
        AuthorityKey.from_public_key(public, "", "signer")
    assert not isinstance(AuthorityConfigError("x"), BundleError)


def test_authority_set_mapping(auth: Authorities) -> None:
    pinned = auth.authority_set
    assert len(pinned) == 2
    assert set(pinned) == {auth.signer.keyid, auth.countersigner.keyid}
    assert pinned[auth.signer.keyid].role == "signer"
    assert pinned.get("unknown") is None
    assert pinned.authorities("countersigner") == {"countersigner-ca"}


def test_authority_set_rejects_same_key_twice(auth: Authorities) -> None:
    key = auth.signer.authority_key()
    as_counter = AuthorityKey.from_public_key(key.public_key, "other-ca", "countersigner")
    with pytest.raises(AuthorityConfigError, match="listed twice"):
        AuthoritySet([key, auth.countersigner.authority_key(), as_counter])
    with pytest.raises(AuthorityConfigError, match="listed twice"):
        AuthoritySet([key, key, auth.countersigner.authority_key()])


def test_authority_set_rejects_authority_in_two_roles(auth: Authorities) -> None:
    second = make_authority("signer-ca", "countersigner", "ecdsa-p256")
    with pytest.raises(AuthorityConfigError, match="one role per authority"):
        AuthoritySet([auth.signer.authority_key(), second.authority_key()])


@pytest.mark.parametrize("missing", ["signer", "countersigner"])
def test_authority_set_needs_both_roles(auth: Authorities, missing: str) -> None:
    keep = auth.countersigner if missing == "signer" else auth.signer
    with pytest.raises(AuthorityConfigError, match=f"no {missing} key"):
        AuthoritySet([keep.authority_key()])


# ---- signing helpers ----


def test_add_signature_equals_sign_envelope_for_ed25519() -> None:
    auth = make_authorities("ed25519", "ed25519")
    data = payload_bytes()
    keys = [auth.signer.private_key, auth.countersigner.private_key]
    both = sign_envelope(PAYLOAD_TYPE, data, keys)
    step = add_signature(sign_envelope(PAYLOAD_TYPE, data, keys[:1]), keys[1])
    assert both == step  # Ed25519 signatures are deterministic (RFC 8032)
    assert [s.keyid for s in both.signatures] == [auth.signer.keyid, auth.countersigner.keyid]


def test_signing_rejects_other_private_keys() -> None:
    with pytest.raises(TypeError):
        p384 = ec.generate_private_key(ec.SECP384R1())
        sign_envelope(PAYLOAD_TYPE, b"x", [p384])  # type: ignore[list-item]


def test_ecdsa_signature_is_der_over_sha256(auth: Authorities) -> None:
    envelope = make_envelope()
    public = load_der_public_key(
        auth.countersigner.private_key.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    )
    public.verify(  # type: ignore[union-attr, call-arg]
        envelope.signatures[1].sig, envelope.pae(), ec.ECDSA(hashes.SHA256())
    )


# ---- error codes ----


def test_error_codes_are_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")
    for code in sorted(ALL_CODES):
        assert f"`{code}`" in doc, code


def test_unknown_error_code_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        SignaturePolicyError("x", code="expired")


def test_error_time_is_reported_in_utc() -> None:
    envelope = make_envelope(make_payload(not_after="2025-06-01T00:00:00Z"))
    with pytest.raises(ValidityError, match="now \\(2026-01-01T00:00:00Z\\)"):
        now = datetime(2026, 1, 1, tzinfo=UTC)
        verify_envelope(envelope, make_authorities().authority_set, now)
