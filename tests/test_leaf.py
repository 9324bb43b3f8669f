"""Canonical leaf encoding: determinism, round trip, strict decoding, worked example."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from bundle_factory import make_authorities, make_envelope
from logserver.bundle import (
    MAX_LEAF_BYTES,
    PAYLOAD_TYPE,
    Envelope,
    MalformedEnvelopeError,
    Signature,
    SizeLimitError,
    decode_leaf,
    encode_leaf,
    envelope_leaf_hash,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from logserver.bundle.dsse import MAX_SIG_LEN
from logserver.merkle.hashing import leaf_hash


def _sorted(envelope: Envelope) -> Envelope:
    signatures = tuple(sorted(envelope.signatures, key=lambda s: (s.keyid.encode(), s.sig)))
    return Envelope(envelope.payload_type, envelope.payload, signatures)


def _leaf(
    payload_type: bytes,
    payload: bytes,
    sigs: list[tuple[bytes, bytes]],
    version: int = 1,
    count: int | None = None,
) -> bytes:
    """Hand-assembled leaf bytes, independent of encode_leaf."""
    out = bytes([version, len(payload_type)]) + payload_type
    out += struct.pack(">H", len(payload)) + payload
    out += bytes([len(sigs) if count is None else count])
    for keyid, sig in sigs:
        out += struct.pack(">H", len(keyid)) + keyid + struct.pack(">H", len(sig)) + sig
    return out


# ---- layout ----


def test_layout_matches_the_documented_struct() -> None:
    envelope = Envelope("t/x", b"{}", (Signature("b", b"\x02\x03"), Signature("a", b"\x01")))
    assert encode_leaf(envelope) == bytes.fromhex(
        "01"  # version
        "03" "742f78"  # payload_type<1..2^8-1>
        "0002" "7b7d"  # payload<1..2^16-1>
        "02"  # signature_count
        "0001" "61" "0001" "01"  # keyid "a", sig 01
        "0001" "62" "0002" "0203"  # keyid "b", sig 0203
    )


def test_leaf_hash_is_rfc6962_leaf_hash() -> None:
    envelope = make_envelope()
    leaf = encode_leaf(envelope)
    assert envelope_leaf_hash(envelope) == hashlib.sha256(b"\x00" + leaf).digest()
    assert envelope_leaf_hash(envelope) == leaf_hash(leaf)


# ---- determinism ----


def test_signature_order_does_not_matter() -> None:
    envelope = make_envelope()
    reversed_env = Envelope(envelope.payload_type, envelope.payload, envelope.signatures[::-1])
    assert encode_leaf(reversed_env) == encode_leaf(envelope)


def test_json_layout_does_not_matter() -> None:
    envelope = make_envelope()
    doc = envelope.to_dict()
    variants = [
        envelope.to_json(),
        json.dumps(doc, indent=4, sort_keys=True).encode(),
        json.dumps(
            {
                "signatures": doc["signatures"][::-1],  # type: ignore[index]
                "payload": doc["payload"],
                "payloadType": doc["payloadType"],
            }
        ).encode(),
        json.dumps(
            {**doc, "payload": base64.urlsafe_b64encode(envelope.payload).decode()}
        ).encode(),
    ]
    leaves = {encode_leaf(parse_envelope(v)) for v in variants}
    assert leaves == {encode_leaf(envelope)}


def test_different_signature_sets_give_different_leaves() -> None:
    auth = make_authorities()
    one = make_envelope(signers=[auth.signer, auth.countersigner])
    two = make_envelope(signers=[auth.signer, auth.countersigner])  # ECDSA: fresh nonce
    assert one.payload == two.payload
    assert encode_leaf(one) != encode_leaf(two)


# ---- round trip ----


def test_round_trip() -> None:
    envelope = make_envelope()
    leaf = encode_leaf(envelope)
    decoded = decode_leaf(leaf)
    assert decoded == _sorted(envelope)
    assert encode_leaf(decoded) == leaf
    auth = make_authorities()
    verify_envelope(decoded, auth.authority_set)  # self-contained: both signatures verify


printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
signature_strategy = st.builds(
    Signature,
    keyid=st.text(alphabet=printable, min_size=1, max_size=80),
    sig=st.binary(min_size=1, max_size=120),
)
envelope_strategy = st.builds(
    Envelope,
    payload_type=st.text(alphabet=printable, min_size=1, max_size=255),
    payload=st.binary(min_size=1, max_size=600),
    signatures=st.lists(
        signature_strategy, min_size=1, max_size=16, unique_by=lambda s: s.keyid
    ).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(envelope=envelope_strategy, data=st.data())
def test_property_round_trip_and_order_independence(
    envelope: Envelope, data: st.DataObject
) -> None:
    leaf = encode_leaf(envelope)
    assert decode_leaf(leaf) == _sorted(envelope)
    assert encode_leaf(decode_leaf(leaf)) == leaf
    permuted = data.draw(st.permutations(envelope.signatures))
    assert encode_leaf(Envelope(envelope.payload_type, envelope.payload, tuple(permuted))) == leaf
    # The JSON envelope and the leaf carry the same information.
    assert encode_leaf(parse_envelope(envelope.to_json())) == leaf


@settings(max_examples=200, deadline=None)
@given(envelope=envelope_strategy, data=st.data())
def test_property_mutated_leaf_is_refused_or_canonical(
    envelope: Envelope, data: st.DataObject
) -> None:
    # Any byte string decodes to an envelope that re-encodes to it, or is refused
    # with malformed_leaf: nothing else (no crash, no second encoding).
    leaf = bytearray(encode_leaf(envelope))
    position = data.draw(st.integers(0, len(leaf) - 1))
    action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if action == "flip":
        leaf[position] ^= data.draw(st.integers(1, 255))
    elif action == "insert":
        leaf.insert(position, data.draw(st.integers(0, 255)))
    else:
        del leaf[position]
    _refused_or_canonical(bytes(leaf))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_property_random_bytes_refused_or_canonical(data: bytes) -> None:
    _refused_or_canonical(data)


def _refused_or_canonical(data: bytes) -> None:
    try:
        envelope = decode_leaf(data)
    except MalformedEnvelopeError as exc:
        assert exc.code == "malformed_leaf"
    else:
        assert encode_leaf(envelope) == data


# ---- strict decoding ----

GOOD_SIGS = [(b"a", b"\x01"), (b"b", b"\x02")]

MALFORMED = {
    "empty": b"",
    "version 0": _leaf(b"t", b"p", GOOD_SIGS, version=0),
    "version 2": _leaf(b"t", b"p", GOOD_SIGS, version=2),
    "trailing byte": _leaf(b"t", b"p", GOOD_SIGS) + b"\x00",
    "empty payload_type": _leaf(b"", b"p", GOOD_SIGS),
    "empty payload": _leaf(b"t", b"", GOOD_SIGS),
    "zero signatures": _leaf(b"t", b"p", []),
    "seventeen signatures": _leaf(b"t", b"p", [(b"k%02d" % i, b"s") for i in range(17)]),
    "count larger than present": _leaf(b"t", b"p", GOOD_SIGS, count=3),
    "count smaller than present": _leaf(b"t", b"p", GOOD_SIGS, count=1),
    "empty keyid": _leaf(b"t", b"p", [(b"", b"\x01")]),
    "empty sig": _leaf(b"t", b"p", [(b"a", b"")]),
    "unsorted": _leaf(b"t", b"p", GOOD_SIGS[::-1]),
    "duplicate keyid": _leaf(b"t", b"p", [(b"a", b"\x01"), (b"a", b"\x02")]),
    "prefix keyid sorted after": _leaf(b"t", b"p", [(b"ab", b"\x01"), (b"a", b"\x02")]),
    "non-ascii keyid": _leaf(b"t", b"p", [(b"\xc3\xa9", b"\x01")]),
    "keyid with space": _leaf(b"t", b"p", [(b"a b", b"\x01")]),
    "payload_type with NUL": _leaf(b"t\x00", b"p", GOOD_SIGS),
    "oversize sig": _leaf(b"t", b"p", [(b"a", b"s" * (MAX_SIG_LEN + 1))]),
    "oversize leaf": _leaf(b"t", b"p" * 65535, GOOD_SIGS),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_leaves_rejected(data: bytes) -> None:
    with pytest.raises(MalformedEnvelopeError) as info:
        decode_leaf(data)
    assert info.value.code == "malformed_leaf"


def test_hand_built_leaf_decodes() -> None:
    data = _leaf(b"t", b"p", GOOD_SIGS)
    want = Envelope("t", b"p", (Signature("a", b"\x01"), Signature("b", b"\x02")))
    assert decode_leaf(data) == want
    # A proper prefix sorts first.
    assert len(decode_leaf(_leaf(b"t", b"p", [(b"a", b"\x01"), (b"ab", b"\x02")])).signatures) == 2


def test_every_truncation_rejected() -> None:
    leaf = encode_leaf(make_envelope())
    for cut in range(len(leaf)):
        with pytest.raises(MalformedEnvelopeError):
            decode_leaf(leaf[:cut])


# ---- size limit ----


def _envelope_of_leaf_size(size: int) -> Envelope:
    sig = Signature("k", b"s" * 64)
    overhead = 1 + 1 + len(PAYLOAD_TYPE) + 2 + 1 + (2 + 1 + 2 + 64)
    return Envelope(PAYLOAD_TYPE, b"p" * (size - overhead), (sig,))


def test_leaf_at_the_limit_is_accepted() -> None:
    leaf = encode_leaf(_envelope_of_leaf_size(MAX_LEAF_BYTES))
    assert len(leaf) == MAX_LEAF_BYTES == 65535
    assert len(encode_leaf(decode_leaf(leaf))) == MAX_LEAF_BYTES


def test_leaf_over_the_limit_is_refused() -> None:
    with pytest.raises(SizeLimitError) as info:
        encode_leaf(_envelope_of_leaf_size(MAX_LEAF_BYTES + 1))
    assert info.value.code == "leaf_too_large"
    assert info.value.http_status == 413


# ---- worked example in docs/formats.md ----

# RFC 8032 §7.1 test keys: TEST 1 signs, TEST 2 countersigns, TEST 3's public key is
# the fleet's HSM key.
EXAMPLE_SIGNER_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
EXAMPLE_COUNTERSIGNER_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
EXAMPLE_FLEET_KEY = "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"
EXAMPLE_LEAF_HASH = "2723524c98ae4d3efb4b74179df0cde5776b3e928993c7bb27679f1ca82b24ed"


def _example_envelope() -> Envelope:
    fleet_key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(EXAMPLE_FLEET_KEY))
    spki = fleet_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    payload = {
        "fleet_id": "example-fleet",
        "sequence": 1,
        "not_before": "2025-01-01T00:00:00Z",
        "not_after": "2026-01-01T00:00:00Z",
        "keys": [
            {"key_id": "hsm-1", "algorithm": "ed25519",
             "public_key": base64.b64encode(spki).decode()}
        ],
    }
    keys = [
        ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
        for seed in (EXAMPLE_COUNTERSIGNER_SEED, EXAMPLE_SIGNER_SEED)
    ]
    return sign_envelope(PAYLOAD_TYPE, json.dumps(payload, separators=(",", ":")).encode(), keys)


def _doc() -> str:
    return (Path(__file__).parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")


def _hex_blocks(section: str) -> list[str]:
    """Concatenated hex of each fenced block in `section` that is only hex and comments."""
    blocks = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        lines = [line.split("#")[0].strip().replace(" ", "") for line in block.splitlines()]
        joined = "".join(lines)
        if joined and re.fullmatch("[0-9a-f]+", joined):
            blocks.append(joined)
    return blocks


def test_worked_example_envelope_is_in_the_docs() -> None:
    envelope = _example_envelope()
    assert envelope.to_json().decode() in _doc()


def test_worked_example_leaf_and_hash_are_in_the_docs() -> None:
    envelope = _example_envelope()
    leaf = encode_leaf(envelope)
    assert envelope_leaf_hash(envelope).hex() == EXAMPLE_LEAF_HASH
    section = _doc().split("### Worked example", 1)[1]
    blocks = _hex_blocks(section)
    assert leaf.hex() in blocks  # the annotated field-by-field dump
    assert EXAMPLE_LEAF_HASH in section
