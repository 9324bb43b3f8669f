"""Post-quantum keys: ML-DSA-44 authorities (FIPS 204) and ml-dsa-44 / ml-kem-768 fleet keys.

The weak-key tests show the weakness itself with the standards' own arithmetic, written
here from FIPS 203 and FIPS 204 (hashlib's SHAKE and SHA-3), independently of
logserver/bundle/key_checks.py: a forged ML-DSA-44 signature that `cryptography`
accepts under a t1 = 0 key, and an ML-KEM-768 shared secret read off a ciphertext to a
t-hat = 0 key.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bundle_factory import (
    NOW,
    fleet_public_key,
    make_authorities,
    make_authority,
    make_envelope,
    make_key,
    make_payload,
    payload_bytes,
)
from logserver.bundle import (
    AuthorityConfigError,
    AuthorityKey,
    BundleError,
    MalformedEnvelopeError,
    MalformedPayloadError,
    Signature,
    SignaturePolicyError,
    encode_leaf,
    load_authority_key_pem,
    parse_envelope,
    parse_payload,
    verify_envelope,
)
from logserver.bundle.dsse import MAX_SIG_LEN
from logserver.bundle.key_checks import (
    MLDSA44_PUBLIC_KEY_BYTES,
    MLKEM768_PUBLIC_KEY_BYTES,
    mldsa44_problem,
    mlkem768_problem,
)
from logserver.write.admission_wire import decode_keys, encode_keys

# RFC 9881 (ML-DSA) and RFC 9935 (ML-KEM) SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID },
# BIT STRING (0 unused bits) of the raw FIPS public key }, parameters absent.
# The OIDs: ML-DSA-44 2.16.840.1.101.3.4.3.17, ML-KEM-768 2.16.840.1.101.3.4.4.2.
MLDSA44_SPKI_PREFIX = bytes.fromhex("30820532" "300b" "0609608648016503040311" "03820521" "00")
MLKEM768_SPKI_PREFIX = bytes.fromhex("308204b2" "300b" "0609608648016503040402" "038204a1" "00")
Q_KEM = 3329


def _der(public: object) -> bytes:
    der: bytes = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    return der


def spki_pem(der: bytes) -> bytes:
    return b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"


def _fleet_key(algorithm: str, der: bytes, key_id: str = "hsm-pq") -> dict[str, str]:
    return {"key_id": key_id, "algorithm": algorithm, "public_key": base64.b64encode(der).decode()}


def _refused(keys: list[dict[str, str]], code: str, match: str) -> None:
    with pytest.raises(MalformedPayloadError, match=match) as info:
        parse_payload(payload_bytes(make_payload(keys=keys)))
    assert info.value.code == code
    assert info.value.http_status == 400


# ---- authority keys: encoding, keyid, signatures ----


def test_an_ml_dsa_44_authority_key_is_the_rfc_9881_spki_and_its_keyid_its_sha256():
    fixture = make_authority("pq-ca", "countersigner", "ml-dsa-44")
    public = fixture.private_key.public_key()
    der = _der(public)
    assert der == MLDSA44_SPKI_PREFIX + public.public_bytes_raw()  # type: ignore[union-attr]
    assert len(der) == 22 + MLDSA44_PUBLIC_KEY_BYTES == 1334
    key = load_authority_key_pem(fixture.public_pem, "pq-ca", "countersigner")
    assert key.keyid == hashlib.sha256(der).hexdigest() == fixture.keyid
    assert key.algorithm == "ml-dsa-44"


def test_the_ml_dsa_signature_is_pure_ml_dsa_44_over_the_pae_with_the_empty_context():
    auth = make_authorities("ed25519", "ml-dsa-44")
    envelope = make_envelope(authorities=auth)
    sig = envelope.signatures[1].sig
    assert len(sig) == 2420 == MAX_SIG_LEN  # FIPS 204 Table 2
    public = auth.countersigner.private_key.public_key()
    assert isinstance(public, mldsa.MLDSA44PublicKey)
    public.verify(sig, envelope.pae())  # no exception: ML-DSA.Verify(pk, PAE, sig, ctx = "")
    public.verify(sig, envelope.pae(), b"")
    with pytest.raises(InvalidSignature):
        public.verify(sig, envelope.pae(), b"DSSEv1")
    # A signature with a context string (here the DSSE tag) is refused by the log.
    with_context = auth.countersigner.private_key.sign(envelope.pae(), b"DSSEv1")  # type: ignore[call-arg]
    forged = dataclasses.replace(envelope, signatures=(envelope.signatures[0],
                                                       Signature(auth.countersigner.keyid, with_context)))
    with pytest.raises(SignaturePolicyError, match=r"countersigner 'countersigner-ca', ml-dsa-44") as info:
        verify_envelope(forged, auth.authority_set, NOW)
    assert info.value.code == "invalid_signature"


def test_ml_dsa_signing_is_hedged_and_each_signature_verifies():
    auth = make_authorities("ml-dsa-44", "ml-dsa-44")
    one, two = make_envelope(authorities=auth), make_envelope(authorities=auth)
    assert one.payload == two.payload and one.signatures != two.signatures  # fresh randomness
    assert encode_leaf(one) != encode_leaf(two)  # so the leaf differs, as for ECDSA
    for envelope in (one, two):
        verified = verify_envelope(envelope, auth.authority_set, NOW)
        assert (verified.signer_keyid, verified.countersigner_keyid) == (auth.signer.keyid, auth.countersigner.keyid)


@pytest.mark.parametrize(
    "sig, code",
    [(b"\x00" * 2420, "invalid_signature"), (b"\x01" * 2419, "invalid_signature"), (b"\x01" * 64, "invalid_signature")],
    ids=["zeros", "2419-bytes", "ed25519-length"],
)
def test_a_wrong_ml_dsa_signature_is_invalid(sig: bytes, code: str):
    auth = make_authorities("ed25519", "ml-dsa-44")
    envelope = make_envelope(authorities=auth)
    bad = dataclasses.replace(envelope, signatures=(envelope.signatures[0], Signature(auth.countersigner.keyid, sig)))
    with pytest.raises(BundleError) as info:
        verify_envelope(bad, auth.authority_set, NOW)
    assert info.value.code == code


def test_a_signature_one_byte_over_ml_dsa_44_is_a_malformed_envelope():
    with pytest.raises(MalformedEnvelopeError, match=r"got 2421 bytes, want 1\.\.2420") as info:
        Signature("k", b"\x01" * 2421)
    assert info.value.code == "malformed_envelope"


def test_a_signature_by_another_algorithm_under_the_ml_dsa_keyid_is_invalid():
    """The keyid names the key, the key its algorithm: the Ed25519 signer's signature
    copied under the ML-DSA-44 countersigner's keyid does not verify."""
    auth = make_authorities("ed25519", "ml-dsa-44")
    envelope = make_envelope(authorities=auth)
    swapped = (envelope.signatures[0], Signature(auth.countersigner.keyid, envelope.signatures[0].sig))
    with pytest.raises(SignaturePolicyError, match="does not verify") as info:
        verify_envelope(dataclasses.replace(envelope, signatures=swapped), auth.authority_set, NOW)
    assert info.value.code == "invalid_signature"


def test_two_ml_dsa_keys_of_one_authority_are_still_one_role():
    second = make_authority("signer-ca", "signer", "ml-dsa-44", seed=2)
    auth = make_authorities("ml-dsa-44", "ml-dsa-44", extra=[second])
    envelope = make_envelope(authorities=auth, signers=[auth.signer, second])
    with pytest.raises(SignaturePolicyError) as info:
        verify_envelope(envelope, auth.authority_set, NOW)
    assert info.value.code == "countersigner_signature_missing"


@pytest.mark.parametrize("cls", [mldsa.MLDSA65PrivateKey, mldsa.MLDSA87PrivateKey], ids=["65", "87"])
def test_other_ml_dsa_parameter_sets_are_refused_as_authority_keys(cls):
    pem = cls.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(AuthorityConfigError, match=r"got an ML-DSA key of another parameter set .* want Ed25519, "
                                                   r"ECDSA P-256 or ML-DSA-44"):
        load_authority_key_pem(pem, "pq-ca", "signer")


def test_an_ml_kem_key_is_not_an_authority_key():
    pem = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(AuthorityConfigError, match=r"got MLKEM768PublicKey, want Ed25519, ECDSA P-256 or ML-DSA-44"):
        load_authority_key_pem(pem, "pq-ca", "signer")


def test_the_admission_keys_frame_carries_ml_dsa_keys():
    auth = make_authorities("ml-dsa-44", "ed25519", extra=[make_authority("signer-ca", "signer", "ml-dsa-44", seed=5)])
    frame = encode_keys(auth.authority_set)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return frame[pos - n: pos]

    decoded = decode_keys(read)
    assert pos == len(frame)
    assert {k: (v.authority, v.role, v.algorithm) for k, v in decoded.items()} == {
        k: (v.authority, v.role, v.algorithm) for k, v in auth.authority_set.items()}


# ---- a t1 = 0 ML-DSA-44 key: anyone can sign ----

# FIPS 204 Table 1, ML-DSA-44: k = l = 4, gamma1 = 2^17, gamma2 = (q - 1)/88, omega = 80,
# lambda = 128 (c-tilde is lambda/4 = 32 bytes).
GAMMA1, OMEGA, K_DSA, L_DSA = 2**17, 80, 4, 4


def _shake256(data: bytes, n: int) -> bytes:
    return hashlib.shake_256(data).digest(n)


def _forge_for_zero_t1(pk: bytes, message: bytes) -> bytes:
    """An ML-DSA-44 signature of `message` under a t1 = 0 public key, without a private key.

    ML-DSA.Verify_internal computes w'Approx = A*z - c*t1*2^d. With t1 = 0 and z = 0 that is
    0, so w1' = UseHint(0, 0) = HighBits(0) = 0, and the only check left is that c-tilde
    is H(mu || w1Encode(0)), which anyone computes.
    """
    tr = _shake256(pk, 64)
    mu = _shake256(tr + b"\x00\x00" + message, 64)  # M' = 0 || |ctx| = 0 || M (ML-DSA.Verify)
    w1_encoding = bytes(K_DSA * 256 * 6 // 8)  # w1 coefficients in [0, 43]: 6 bits each
    c_tilde = _shake256(mu + w1_encoding, 32)
    # sigEncode: z by BitPack(z, gamma1 - 1, gamma1), i.e. gamma1 - z in 18 bits, little-endian.
    z_poly = sum(GAMMA1 << (18 * i) for i in range(256)).to_bytes(256 * 18 // 8, "little")
    hints = bytes(OMEGA + K_DSA)  # HintBitPack of h = 0
    return c_tilde + z_poly * L_DSA + hints


def _zero_t1_key() -> bytes:
    return hashlib.sha256(b"rho").digest() + bytes(MLDSA44_PUBLIC_KEY_BYTES - 32)


def test_a_zero_t1_ml_dsa_key_would_let_anyone_sign():
    pk = _zero_t1_key()
    public = mldsa.MLDSA44PublicKey.from_public_bytes(pk)  # cryptography loads it
    forged = _forge_for_zero_t1(pk, b"any message at all")
    assert len(forged) == 2420
    public.verify(forged, b"any message at all")  # no exception: a valid signature, no key
    with pytest.raises(InvalidSignature):
        public.verify(forged, b"another message")
    assert mldsa44_problem(pk) is not None and "t1 = 0" in mldsa44_problem(pk)  # type: ignore[operator]


def test_a_zero_t1_ml_dsa_key_is_refused_as_an_authority_key_and_as_a_fleet_key():
    der = MLDSA44_SPKI_PREFIX + _zero_t1_key()
    with pytest.raises(AuthorityConfigError, match=r"ML-DSA-44 key refused: t1 = 0"):
        load_authority_key_pem(spki_pem(der), "pq-ca", "countersigner")
    with pytest.raises(AuthorityConfigError, match=r"t1 = 0"):
        AuthorityKey.from_public_key(mldsa.MLDSA44PublicKey.from_public_bytes(_zero_t1_key()), "pq-ca", "signer")
    _refused([_fleet_key("ml-dsa-44", der)], "weak_fleet_key",
             r"^keys\[0\]\.public_key \(key_id 'hsm-pq'\): ml-dsa-44 key refused: t1 = 0")


# ---- a t-hat = 0 ML-KEM-768 key: anyone reads the shared secret ----


def _secret_from_ciphertext_to_zero_key(ek: bytes, ciphertext: bytes) -> bytes:
    """The ML-KEM-768 shared secret of a ciphertext to a t-hat = 0 key, from public data.

    K-PKE.Encrypt: v = NTT^-1(t-hat . r-hat) + e2 + Decompress1(m) = e2 + Decompress1(m) when
    t-hat = 0. c2 = ByteEncode4(Compress4(v)) (d_v = 4 for ML-KEM-768) is the last 128 bytes;
    Compress1(Decompress4(c2)) gives m back (the noise stays well below q/4). ML-KEM.Encaps:
    (K, r) = G(m || H(ek)), G = SHA3-512, H = SHA3-256.
    """
    c2 = int.from_bytes(ciphertext[-128:], "little")
    bits = 0
    for i in range(256):
        y = (c2 >> (4 * i)) & 0xF
        v = (Q_KEM * y + 8) // 16  # Decompress4: round(q * y / 2^4)
        bit = ((2 * v + Q_KEM // 2) // Q_KEM) % 2  # Compress1: round(2 v / q) mod 2
        bits |= bit << i
    m = bits.to_bytes(32, "little")
    return hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()[:32]


def test_a_zero_ml_kem_key_gives_its_shared_secret_to_anyone():
    ek = bytes(MLKEM768_PUBLIC_KEY_BYTES - 32) + hashlib.sha256(b"rho").digest()
    public = mlkem.MLKEM768PublicKey.from_public_bytes(ek)  # passes the modulus check: 0 < q
    for _ in range(5):
        secret, ciphertext = public.encapsulate()
        assert _secret_from_ciphertext_to_zero_key(ek, ciphertext) == secret
    real = mlkem.MLKEM768PrivateKey.generate().public_key()
    secret, ciphertext = real.encapsulate()
    assert _secret_from_ciphertext_to_zero_key(real.public_bytes_raw(), ciphertext) != secret
    assert mlkem768_problem(ek) is not None and mlkem768_problem(real.public_bytes_raw()) is None
    _refused([_fleet_key("ml-kem-768", MLKEM768_SPKI_PREFIX + ek)], "weak_fleet_key",
             r"^keys\[0\]\.public_key \(key_id 'hsm-pq'\): ml-kem-768 key refused: t-hat = 0")


def test_an_ml_kem_coefficient_not_below_q_is_refused_when_the_key_loads():
    """FIPS 203 §7.2 modulus check: ByteDecode12 then ByteEncode12 must give ek back. The
    first 12 bits set to 0xfff make a coefficient 4095 >= q; OpenSSL refuses the key."""
    raw = base64.b64decode(fleet_public_key("ml-kem-768"))[len(MLKEM768_SPKI_PREFIX):]
    bad = b"\xff\x0f" + raw[2:]  # coefficient 0 = 0xfff, coefficient 1 keeps its high 8 bits
    assert int.from_bytes(bad[:2], "little") & 0xFFF == 4095
    _refused([_fleet_key("ml-kem-768", MLKEM768_SPKI_PREFIX + bad)], "malformed_payload",
             r"^keys\[0\]\.public_key \(key_id 'hsm-pq'\): not a DER SubjectPublicKeyInfo")


# ---- fleet keys ----


def test_every_real_pq_fleet_key_passes():
    for _ in range(20):
        assert mldsa44_problem(mldsa.MLDSA44PrivateKey.generate().public_key().public_bytes_raw()) is None
        assert mlkem768_problem(mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()) is None
    keys = [make_key(f"k{i}-{a}", a, i) for i in range(3) for a in ("ml-dsa-44", "ml-kem-768")]
    bundle = parse_payload(payload_bytes(make_payload(keys=keys)))
    assert [k.algorithm for k in bundle.keys] == ["ml-dsa-44", "ml-kem-768"] * 3
    assert bundle.keys[0].public_key[:22] == MLDSA44_SPKI_PREFIX
    assert bundle.keys[1].public_key[:22] == MLKEM768_SPKI_PREFIX


def _other(kind: str) -> bytes:
    if kind == "ML-DSA-65":
        return _der(mldsa.MLDSA65PrivateKey.generate().public_key())
    if kind == "ML-KEM-1024":
        return _der(mlkem.MLKEM1024PrivateKey.generate().public_key())
    if kind == "EC secp256r1":
        return _der(ec.generate_private_key(ec.SECP256R1()).public_key())
    return base64.b64decode(fleet_public_key({"ML-DSA-44": "ml-dsa-44", "ML-KEM-768": "ml-kem-768"}[kind]))


@pytest.mark.parametrize(
    "algorithm, kind",
    [("ml-kem-768", "ML-DSA-44"), ("ml-dsa-44", "ML-KEM-768"), ("ml-dsa-44", "ML-DSA-65"),
     ("ml-kem-768", "ML-KEM-1024"), ("ml-dsa-44", "EC secp256r1"), ("ed25519", "ML-DSA-44")],
)
def test_a_fleet_key_of_another_algorithm_is_refused(algorithm: str, kind: str):
    _refused([_fleet_key(algorithm, _other(kind))], "malformed_payload",
             rf"^keys\[0\]\.public_key \(key_id 'hsm-pq'\): got a {kind} key, want a key of algorithm '{algorithm}'")


@pytest.mark.parametrize("algorithm", ["ml-dsa-44", "ml-kem-768"])
def test_malformed_pq_spkis_are_refused(algorithm: str):
    der = base64.b64decode(fleet_public_key(algorithm))
    n = len(der)
    # The outer SEQUENCE length in the long form with one more byte: BER, not DER.
    ber = b"\x30\x83\x00" + der[2:]
    cases = {
        "truncated": der[:-1],
        "trailing byte": der + b"\x00",
        "raw key, no SPKI": der[22:],
        "BER length": ber,
        "one byte short inside": der[:4] + der[4:22] + der[23:],
    }
    for what, bad in cases.items():
        with pytest.raises(MalformedPayloadError, match=r"^keys\[0\]\.public_key \(key_id 'hsm-pq'\): ") as info:
            parse_payload(payload_bytes(make_payload(keys=[_fleet_key(algorithm, bad)])))
        assert info.value.code == "malformed_payload", what
    assert n in (1334, 1206)


@pytest.mark.parametrize("algorithm", ["ml-dsa-44", "ml-kem-768"])
def test_the_same_pq_key_under_two_key_ids_is_refused(algorithm: str):
    keys = [make_key("hsm-a", algorithm), make_key("hsm-b", algorithm)]
    _refused(keys, "duplicate_fleet_key", r"^keys\[1\]\.public_key \(key_id 'hsm-b'\): the same key as key_id 'hsm-a'")


def test_key_check_lengths():
    assert mldsa44_problem(bytes(1311)) == "got 1311 bytes, want 1312"
    assert mlkem768_problem(bytes(1185)) == "got 1185 bytes, want 1184"


# ---- sizes against the envelope and leaf limits (docs/formats.md, "Sizes") ----


@pytest.mark.parametrize(
    "signer, countersigner, algorithm, most",
    [("ed25519", "ecdsa-p256", "ml-dsa-44", 26), ("ml-dsa-44", "ml-dsa-44", "ml-dsa-44", 23),
     ("ed25519", "ecdsa-p256", "ml-kem-768", 29), ("ml-dsa-44", "ml-dsa-44", "ml-kem-768", 26)],
)
def test_how_many_pq_fleet_keys_fit_in_one_envelope(signer, countersigner, algorithm, most):
    """The numbers docs/formats.md gives: compact JSON, key_ids "hsm-0", "hsm-1", ...; the
    envelope's 65,536 bytes bind before the leaf's 65,535 (base64 takes 4/3)."""
    auth = make_authorities(signer, countersigner)

    def envelope(n: int):
        keys = [make_key(f"hsm-{i}", algorithm, i) for i in range(n)]
        return make_envelope(make_payload(keys=keys), authorities=auth)

    fits = envelope(most)
    assert parse_envelope(fits.to_json()) == fits
    assert len(encode_leaf(fits)) < 65535
    verify_envelope(fits, auth.authority_set, NOW)
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_envelope(envelope(most + 1).to_json())
    assert info.value.code == "envelope_too_large" and info.value.http_status == 413


def test_the_sizes_docs_formats_md_gives_for_a_small_payload():
    assert len(payload_bytes()) == 416
    for signer, countersigner, body, leaf in (("ed25519", "ml-dsa-44", 4133, 3084),
                                              ("ml-dsa-44", "ml-dsa-44", 7273, 5440)):
        envelope = make_envelope(authorities=make_authorities(signer, countersigner))
        assert (len(envelope.to_json()), len(encode_leaf(envelope))) == (body, leaf)
    classical = make_envelope(authorities=make_authorities("ed25519", "ecdsa-p256"))
    assert 995 <= len(classical.to_json()) <= 1005 and 730 <= len(encode_leaf(classical)) <= 740


# ---- RFC 9935's example key (tests/testdata/rfc9935, README.md there) ----


def test_the_rfc_9935_example_key_is_an_ml_kem_768_fleet_key():
    hex_text = (Path(__file__).parent / "testdata" / "rfc9935" / "ml-kem-768.pub.hex").read_text()
    raw = bytes.fromhex("".join(hex_text.split()))
    assert len(raw) == MLKEM768_PUBLIC_KEY_BYTES
    # FIPS 203 ML-KEM.KeyGen_internal(d, z) of the example's seed gives the same key.
    assert mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(range(64))).public_key().public_bytes_raw() == raw
    der = MLKEM768_SPKI_PREFIX + raw
    bundle = parse_payload(payload_bytes(make_payload(keys=[_fleet_key("ml-kem-768", der, "rfc-9935")])))
    assert bundle.keys[0].public_key == der and bundle.keys[0].algorithm == "ml-kem-768"
    _refused([_fleet_key("ml-dsa-44", der)], "malformed_payload",
             r"got a ML-KEM-768 key, want a key of algorithm 'ml-dsa-44'")


def test_the_rfc_9881_example_key_is_an_ml_dsa_44_fleet_key():
    pem = (Path(__file__).parent / "testdata" / "rfc9881" / "ml-dsa-44.pub.pem").read_bytes()
    der = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    assert der[:22] == MLDSA44_SPKI_PREFIX
    bundle = parse_payload(payload_bytes(make_payload(keys=[_fleet_key("ml-dsa-44", der, "rfc-9881")])))
    assert bundle.keys[0].public_key == der
    _refused([_fleet_key("ml-kem-768", der)], "malformed_payload",
             r"got a ML-DSA-44 key, want a key of algorithm 'ml-kem-768'")
