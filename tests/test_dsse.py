"""DSSE v1 envelope: PAE known answers and strict parsing."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bundle_factory import envelope_json, make_envelope
from logserver.bundle import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    MalformedEnvelopeError,
    Signature,
    SizeLimitError,
    pae,
    parse_envelope,
)
from logserver.bundle.dsse import MAX_SIG_LEN

# ---- PAE ----


def test_pae_matches_dsse_protocol_test_vector() -> None:
    # protocol.md, "Test Vectors".
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_by_definition_empty_and_binary() -> None:
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    body = bytes(range(256)) * 4
    assert pae("a/b", body) == b"DSSEv1 3 a/b 1024 " + body


def test_pae_lengths_count_utf8_bytes() -> None:
    # LEN is the byte length of UTF8(PAYLOAD_TYPE), not the character count.
    assert pae("é", b"x") == b"DSSEv1 2 \xc3\xa9 1 x"


def test_dsse_spec_example_signature_verifies_over_our_pae() -> None:
    # protocol.md test vector: ECDSA P-256 / SHA-256, signature as raw r || s.
    x = 46950820868899156662930047687818585632848591499744589407958293238635476079160
    y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
    public_key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    spec_envelope = (
        b'{"payload": "aGVsbG8gd29ybGQ=",\n "payloadType": "http://example.com/HelloWorld",\n'
        b' "signatures": [{"sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfU'
        b'iHqJPcIAriEGAHTVeCUjW2JIZA=="}]}'
    )
    raw = json.loads(spec_envelope)
    sig = base64.b64decode(raw["signatures"][0]["sig"])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    message = pae(raw["payloadType"], base64.b64decode(raw["payload"]))
    public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    # Our profile requires a keyid, which the spec example omits.
    with pytest.raises(MalformedEnvelopeError, match="missing fields \\['keyid'\\]"):
        parse_envelope(spec_envelope)


# ---- parse_envelope: accepted forms ----


def _doc(**overrides: object) -> dict[str, object]:
    doc = json.loads(envelope_json())
    doc.update(overrides)
    return doc


def _dumps(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_round_trip_through_json() -> None:
    envelope = make_envelope()
    assert parse_envelope(envelope.to_json()) == envelope
    assert list(json.loads(envelope.to_json())) == ["payloadType", "payload", "signatures"]
    assert b" " not in envelope.to_json()


def test_whitespace_and_key_order_do_not_matter() -> None:
    envelope = make_envelope()
    reordered = json.dumps(
        {"signatures": envelope.to_dict()["signatures"], "payload": envelope.to_dict()["payload"],
         "payloadType": envelope.payload_type},
        indent=3,
    ).encode()
    assert parse_envelope(reordered) == envelope


def test_urlsafe_base64_is_accepted() -> None:
    # protocol.md: "Either standard or URL-safe base64 encodings are allowed. Signers
    # may use either, and verifiers MUST accept either."
    payload = b"\xfb\xff\xfe" * 3  # standard base64 "+//+" material
    sig = b"\xff" * 64
    doc = {
        "payloadType": "x/y",
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "signatures": [{"keyid": "k", "sig": base64.urlsafe_b64encode(sig).decode()}],
    }
    assert "-" in doc["payload"] or "_" in doc["payload"]
    envelope = parse_envelope(_dumps(doc))
    assert envelope == Envelope("x/y", payload, (Signature("k", sig),))


# ---- parse_envelope: rejections ----


def _good_sig() -> str:
    return base64.b64encode(b"\x01" * 64).decode()


MALFORMED = {
    "not json": b"{not json",
    "not utf-8": b'{"payloadType": "\xff"}',
    "utf-8 bom": b"\xef\xbb\xbf" + envelope_json(),
    "utf-16": envelope_json().decode().encode("utf-16"),
    "top-level array": b"[]",
    "top-level string": b'"x"',
    "trailing data": envelope_json() + b" {}",
    "duplicate key": envelope_json().replace(
        b'{"payloadType":', b'{"payloadType":"x/y","payloadType":', 1
    ),
    "unknown field": _dumps(_doc(extra=1)),
    "missing payload": _dumps({k: v for k, v in _doc().items() if k != "payload"}),
    "missing payloadType": _dumps({k: v for k, v in _doc().items() if k != "payloadType"}),
    "missing signatures": _dumps({k: v for k, v in _doc().items() if k != "signatures"}),
    "payloadType not string": _dumps(_doc(payloadType=1)),
    "payloadType empty": _dumps(_doc(payloadType="")),
    "payloadType with space": _dumps(_doc(payloadType="a b")),
    "payloadType non-ascii": _dumps(_doc(payloadType="caf\u00e9")),
    "payloadType lone surrogate": _dumps(_doc()).replace(
        b'"application/vnd', b'"\\ud800application/vnd'
    ),
    "payloadType too long": _dumps(_doc(payloadType="a" * 256)),
    "payload not string": _dumps(_doc(payload=["eA=="])),
    "payload null": _dumps(_doc(payload=None)),
    "payload empty": _dumps(_doc(payload="")),
    "payload bad base64 char": _dumps(_doc(payload="eA*=")),
    "payload base64 whitespace": _dumps(_doc(payload="eA= =")),
    "payload base64 newline": _dumps(_doc(payload="eHh4\neHh4")),
    "payload base64 unpadded": _dumps(_doc(payload="eA")),
    "payload base64 extra padding": _dumps(_doc(payload="eA===")),
    "payload base64 non-zero pad bits": _dumps(_doc(payload="eB==")),
    "payload base64 mixed alphabets": _dumps(_doc(payload="+-8A")),
    "signatures not list": _dumps(_doc(signatures={"keyid": "k", "sig": _good_sig()})),
    "signatures empty": _dumps(_doc(signatures=[])),
    "signature not object": _dumps(_doc(signatures=["k"])),
    "signature unknown field": _dumps(
        _doc(signatures=[{"keyid": "k", "sig": _good_sig(), "cert": ""}])
    ),
    "signature missing keyid": _dumps(_doc(signatures=[{"sig": _good_sig()}])),
    "signature missing sig": _dumps(_doc(signatures=[{"keyid": "k"}])),
    "keyid not string": _dumps(_doc(signatures=[{"keyid": 7, "sig": _good_sig()}])),
    "keyid empty": _dumps(_doc(signatures=[{"keyid": "", "sig": _good_sig()}])),
    "keyid too long": _dumps(_doc(signatures=[{"keyid": "k" * 257, "sig": _good_sig()}])),
    "keyid control char": _dumps(_doc(signatures=[{"keyid": "k\n", "sig": _good_sig()}])),
    "sig empty": _dumps(_doc(signatures=[{"keyid": "k", "sig": ""}])),
    "sig not string": _dumps(_doc(signatures=[{"keyid": "k", "sig": None}])),
    "sig bad base64": _dumps(_doc(signatures=[{"keyid": "k", "sig": "AAA"}])),
    "sig non-canonical base64": _dumps(_doc(signatures=[{"keyid": "k", "sig": "AB=="}])),
    "sig too long": _dumps(
        _doc(signatures=[{"keyid": "k", "sig": base64.b64encode(b"s" * (MAX_SIG_LEN + 1)).decode()}])
    ),
    "NaN": _dumps(_doc()).replace(b'"payloadType"', b'"x": NaN, "payloadType"'),
    "Infinity": b'{"payloadType": Infinity}',
    "deeply nested": b"[" * 30_000 + b"]" * 30_000,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_envelopes_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_envelope(data)
    assert info.value.code == "malformed_envelope"
    assert info.value.http_status == 400


def test_non_canonical_base64_message_says_got_and_want() -> None:
    with pytest.raises(MalformedEnvelopeError, match="got 'eB==', want 'eA=='"):
        parse_envelope(_dumps(_doc(payload="eB==")))


def test_unknown_field_message_names_it() -> None:
    with pytest.raises(MalformedEnvelopeError, match="unknown fields \\['extra'\\]"):
        parse_envelope(_dumps(_doc(extra=1)))


def test_too_many_signatures() -> None:
    sigs = [{"keyid": f"k{i}", "sig": _good_sig()} for i in range(17)]
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_envelope(_dumps(_doc(signatures=sigs)))
    assert info.value.code == "too_many_signatures"
    # Sixteen is fine.
    assert len(parse_envelope(_dumps(_doc(signatures=sigs[:16]))).signatures) == 16


def test_duplicate_keyid_is_rejected_even_with_different_sigs() -> None:
    sigs = [
        {"keyid": "k", "sig": _good_sig()},
        {"keyid": "k", "sig": base64.b64encode(b"\x02" * 64).decode()},
    ]
    with pytest.raises(MalformedEnvelopeError) as info:
        parse_envelope(_dumps(_doc(signatures=sigs)))
    assert info.value.code == "duplicate_signature"


def test_oversize_envelope_is_rejected_before_parsing() -> None:
    envelope = make_envelope()
    data = b" " * (MAX_ENVELOPE_BYTES - len(envelope.to_json())) + envelope.to_json()
    assert len(data) == MAX_ENVELOPE_BYTES
    assert parse_envelope(data) == envelope
    with pytest.raises(SizeLimitError) as info:
        parse_envelope(b" " + data)
    assert info.value.code == "envelope_too_large"
    assert info.value.http_status == 413
    assert isinstance(info.value, MalformedEnvelopeError)


# ---- Envelope construction enforces the profile ----


def test_envelope_constructor_checks_fields() -> None:
    good = Signature("k", b"s")
    with pytest.raises(MalformedEnvelopeError):
        Envelope("", b"p", (good,))
    with pytest.raises(MalformedEnvelopeError):
        Envelope("t", b"", (good,))
    with pytest.raises(MalformedEnvelopeError):
        Envelope("t", b"p" * 65536, (good,))
    with pytest.raises(MalformedEnvelopeError):
        Envelope("t", b"p", ())
    with pytest.raises(MalformedEnvelopeError):
        Signature("k", b"")
    with pytest.raises(MalformedEnvelopeError):
        Signature("k y", b"s")
    with pytest.raises(TypeError):
        Envelope("t", "p", (good,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Envelope("t", b"p", [good])  # type: ignore[arg-type]
    assert Envelope("t", b"p" * 65535, (good,)).payload == b"p" * 65535


def test_envelope_pae_method_matches_function() -> None:
    envelope = make_envelope()
    assert envelope.pae() == pae(envelope.payload_type, envelope.payload)
