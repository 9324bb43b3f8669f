"""Fleet bundle payload: every schema rule, timestamps, validity window."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from bundle_factory import fleet_public_key, make_key, make_payload, payload_bytes
from logserver.bundle import (
    ALGORITHMS,
    FleetBundle,
    FleetKey,
    MalformedPayloadError,
    ValidityError,
    check_validity,
    format_timestamp,
    parse_payload,
    parse_timestamp,
    payload_digest,
)


def _parse(**overrides: object) -> FleetBundle:
    return parse_payload(payload_bytes(make_payload(**overrides)))


def _rejects(data: bytes, match: str | None = None) -> MalformedPayloadError:
    with pytest.raises(MalformedPayloadError, match=match) as info:
        parse_payload(data)
    assert info.value.code == "malformed_payload"
    assert info.value.http_status == 400
    return info.value


def _rejects_fields(match: str | None = None, **overrides: object) -> None:
    _rejects(payload_bytes(make_payload(**overrides)), match)


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def _der(algorithm: str) -> bytes:
    return base64.b64decode(fleet_public_key(algorithm))


# ---- accepted ----


def test_default_payload_parses() -> None:
    bundle = _parse()
    assert bundle == FleetBundle(
        fleet_id="fleet-1",
        sequence=0,
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2100, 1, 1, tzinfo=UTC),
        keys=(
            FleetKey("hsm-0", "ed25519", _der("ed25519")),
            FleetKey("hsm-1", "ecdsa-p256", _der("ecdsa-p256")),
        ),
    )


def test_algorithm_set_is_documented_set() -> None:
    assert {"ed25519", "x25519", "ecdsa-p256", "ecdsa-p384", "ml-dsa-44", "ml-kem-768"} == ALGORITHMS


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_each_algorithm_accepted(algorithm: str) -> None:
    bundle = _parse(keys=[make_key("k", algorithm)])
    assert bundle.keys == (FleetKey("k", algorithm, _der(algorithm)),)


def test_whitespace_and_field_order_are_free() -> None:
    fields = make_payload()
    data = json.dumps(dict(reversed(list(fields.items()))), indent=2).encode()
    assert parse_payload(data) == _parse()


def test_sixty_four_keys_accepted() -> None:
    keys = [make_key(f"k{i}", "ed25519", i) for i in range(64)]
    assert len(_parse(keys=keys).keys) == 64


def test_payload_digest_is_sha256_of_the_bytes() -> None:
    data = payload_bytes()
    assert payload_digest(data) == hashlib.sha256(data).digest()
    assert len(payload_digest(data)) == 32


# ---- document-level rejections ----


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b"\xff{}",
        payload_bytes() + b"x",
        payload_bytes().replace(b'{"fleet_id":"fleet-1"', b'{"fleet_id":"a","fleet_id":"fleet-1"'),
        payload_bytes().replace(b'"sequence":0', b'"sequence":NaN'),
        payload_bytes().replace(b'"sequence":0', b'"sequence":Infinity'),
    ],
    ids=["empty", "truncated", "array", "null", "not-utf8", "trailing", "dup-key", "nan", "inf"],
)
def test_malformed_documents(data: bytes) -> None:
    _rejects(data)


def test_duplicate_key_message() -> None:
    data = payload_bytes().replace(b'"sequence":0', b'"sequence":0,"sequence":1')
    _rejects(data, "duplicate JSON object key 'sequence'")


def test_unknown_field_rejected() -> None:
    _rejects_fields("unknown fields \\['comment'\\]", comment="hi")


@pytest.mark.parametrize("field", ["fleet_id", "sequence", "not_before", "not_after", "keys"])
def test_each_field_required(field: str) -> None:
    _rejects_fields(f"missing fields \\['{field}'\\]", **{field: ...})


# ---- status (docs/fleet-heads.md, "Admission and retirement") ----


def test_status_absent_means_active() -> None:
    assert _parse().status == "active"


@pytest.mark.parametrize("status", ["active", "retired"])
def test_status_values(status: str) -> None:
    assert _parse(status=status).status == status


@pytest.mark.parametrize(
    "status, shown",
    [("Retired", "'Retired'"), ("", "''"), (None, "null"), (1, "integer"), (True, "boolean"),
     (["retired"], "array"), ({"retired": True}, "object")],
)
def test_status_other_values_rejected(status: object, shown: str) -> None:
    error = _rejects(payload_bytes(make_payload(status=status)), "status: got ")
    assert shown in str(error) and "want one of ['active', 'retired']" in str(error)


def test_status_is_still_an_exact_schema() -> None:
    # `status` is the one optional field: a second unknown field is still refused.
    _rejects_fields("unknown fields \\['comment'\\]", status="retired", comment="hi")


# ---- fleet_id and key_id ----


@pytest.mark.parametrize("value", ["a", "A-z_0.9:x", "x" * 128])
def test_fleet_id_accepted(value: str) -> None:
    assert _parse(fleet_id=value).fleet_id == value


@pytest.mark.parametrize(
    "value", ["", "x" * 129, "a b", "a/b", "caf\u00e9", "\u0661", "a\n", 5, None, ["a"]]
)
def test_fleet_id_rejected(value: object) -> None:
    _rejects_fields("fleet_id", fleet_id=value)


@pytest.mark.parametrize("value", ["", "k" * 129, "k k", "k#", 1, None])
def test_key_id_rejected(value: object) -> None:
    key = make_key()
    key["key_id"] = value  # type: ignore[assignment]
    _rejects_fields("keys\\[0\\].key_id", keys=[key])


def test_key_id_must_be_unique() -> None:
    keys = [make_key("same", "ed25519", 0), make_key("same", "ed25519", 1)]
    _rejects_fields("keys\\[1\\].key_id: 'same' repeats", keys=keys)


# ---- sequence ----


@pytest.mark.parametrize("value", [0, 1, 2**63 - 1])
def test_sequence_accepted(value: int) -> None:
    assert _parse(sequence=value).sequence == value


@pytest.mark.parametrize("value", [-1, 2**63, 2**64, True, False, 1.0, 0.5, "1", None, [1]])
def test_sequence_rejected(value: object) -> None:
    _rejects_fields("sequence", sequence=value)


@pytest.mark.parametrize("literal", [b"-0", b"1e3", b"1E0", b"1.0", b"1" * 25, b"01"])
def test_sequence_literal_rejected(literal: bytes) -> None:
    _rejects(payload_bytes().replace(b'"sequence":0', b'"sequence":' + literal))


def test_float_message_says_integer_only() -> None:
    data = payload_bytes().replace(b'"sequence":0', b'"sequence":2.0')
    _rejects(data, "sequence: got non-integer number 2.0, want integer")


# ---- timestamps ----


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2024-02-29T23:59:59Z", datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
        ("2000-02-29T00:00:00Z", datetime(2000, 2, 29, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2025-06-01T12:00:00.5Z", datetime(2025, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2025-06-01T12:00:00.000001Z", datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=UTC)),
        ("2025-06-01T12:00:00.120Z", datetime(2025, 6, 1, 12, 0, 0, 120000, tzinfo=UTC)),
    ],
)
def test_timestamps_accepted(text: str, want: datetime) -> None:
    got = parse_timestamp("t", text)
    assert got == want
    assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-01T00:00:00",  # no zone
        "2025-01-01T00:00:00+00:00",  # numeric offset, even zero
        "2025-01-01T00:00:00-05:00",
        "2025-01-01t00:00:00Z",  # lower-case T
        "2025-01-01T00:00:00z",  # lower-case Z
        "2025-01-01 00:00:00Z",  # space separator
        "2025-01-01T00:00:00.Z",  # empty fraction
        "2025-01-01T00:00:00.1234567Z",  # 7 fractional digits
        "2025-01-01T00:00Z",  # no seconds
        "2025-01-01",  # date only
        "25-01-01T00:00:00Z",
        "2025-1-01T00:00:00Z",
        "+2025-01-01T00:00:00Z",
        "2025-01-01T00:00:00Z\n",
        " 2025-01-01T00:00:00Z",
        "\u0662\u0660\u0662\u0665-01-01T00:00:00Z",  # Arabic-Indic digits
        "2025-02-29T00:00:00Z",  # not a leap year
        "1900-02-29T00:00:00Z",  # century, not a leap year
        "2025-04-31T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-00-10T00:00:00Z",
        "2025-01-00T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T23:60:00Z",
        "2016-12-31T23:59:60Z",  # leap second
        "",
    ],
)
def test_timestamps_rejected(text: str) -> None:
    with pytest.raises(MalformedPayloadError) as info:
        parse_timestamp("not_before", text)
    assert "not_before" in str(info.value)


@pytest.mark.parametrize("value", [1735689600, None, ["2025-01-01T00:00:00Z"]])
def test_timestamp_must_be_string(value: object) -> None:
    _rejects_fields("not_after: got", not_after=value)


def test_timestamp_fields_go_through_the_strict_parser() -> None:
    _rejects_fields("not_before", not_before="2025-01-01T00:00:00+00:00")
    _rejects_fields("not_after", not_after="2025-02-30T00:00:00Z")


@pytest.mark.parametrize(
    "value",
    [
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_format_timestamp_round_trips(value: datetime) -> None:
    assert parse_timestamp("t", format_timestamp(value)) == value


# ---- keys ----


@pytest.mark.parametrize("keys", [[], "k", {"key_id": "k"}, None])
def test_keys_shape_rejected(keys: object) -> None:
    _rejects_fields("keys", keys=keys)


def test_sixty_five_keys_rejected() -> None:
    keys = [make_key(f"k{i}", "ed25519", i) for i in range(65)]
    _rejects_fields("got 65 keys, want 1..64", keys=keys)


def test_key_entry_must_be_exact_object() -> None:
    _rejects_fields("keys\\[0\\]: got string", keys=["k"])
    _rejects_fields("unknown fields \\['usage'\\]", keys=[{**make_key(), "usage": "sign"}])
    partial = make_key()
    del partial["algorithm"]
    _rejects_fields("missing fields \\['algorithm'\\]", keys=[partial])


@pytest.mark.parametrize("algorithm", ["Ed25519", "ED25519", "rsa", "ecdsa", "ecdsa-p521", "", 1])
def test_unknown_algorithm_rejected(algorithm: object) -> None:
    key = make_key()
    key["algorithm"] = algorithm  # type: ignore[assignment]
    _rejects_fields("keys\\[0\\].algorithm", keys=[key])


@pytest.mark.parametrize(
    ("algorithm", "actual"),
    [
        ("ed25519", "x25519"),
        ("x25519", "ed25519"),
        ("ed25519", "ecdsa-p256"),
        ("ecdsa-p256", "ecdsa-p384"),
        ("ecdsa-p384", "ecdsa-p256"),
        ("ecdsa-p256", "ed25519"),
    ],
)
def test_spki_of_another_algorithm_rejected(algorithm: str, actual: str) -> None:
    key = {"key_id": "k", "algorithm": algorithm, "public_key": fleet_public_key(actual)}
    _rejects_fields(f"want a key of algorithm '{algorithm}'", keys=[key])


def test_other_key_types_rejected() -> None:
    rsa_der = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    ed448_der = ed448.Ed448PrivateKey.generate().public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    for der in (rsa_der, ed448_der):
        key = {"key_id": "k", "algorithm": "ed25519", "public_key": _b64(der)}
        _rejects_fields("want a key of algorithm 'ed25519'", keys=[key])


def _compressed_p256_spki() -> bytes:
    der = _der("ecdsa-p256")
    point = load_der_public_key(der).public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    # SEQUENCE { AlgorithmIdentifier (same 21 bytes), BIT STRING { 0 unused bits, point } }
    algorithm_identifier = der[2:23]
    return bytes([0x30, 0x39]) + algorithm_identifier + bytes([0x03, 0x22, 0x00]) + point


@pytest.mark.parametrize(
    ("algorithm", "der", "match"),
    [
        ("ecdsa-p256", _compressed_p256_spki(), "want canonical DER"),
        ("ed25519", _der("ed25519") + b"\x00", "not a DER SubjectPublicKeyInfo"),
        ("ed25519", b"\x30\x81\x2a" + _der("ed25519")[2:], "not a DER SubjectPublicKeyInfo"),
        ("ed25519", _der("ed25519")[:-1], "not a DER SubjectPublicKeyInfo"),
        ("ed25519", b"\x00" * 44, "not a DER SubjectPublicKeyInfo"),
        ("ed25519", b"x", "not a DER SubjectPublicKeyInfo"),
    ],
    ids=["compressed-point", "trailing-byte", "ber-long-length", "truncated", "zeros", "junk"],
)
def test_bad_or_non_canonical_spki_rejected(algorithm: str, der: bytes, match: str) -> None:
    key = {"key_id": "k", "algorithm": algorithm, "public_key": _b64(der)}
    _rejects_fields(match, keys=[key])


@pytest.mark.parametrize(
    "transform",
    [
        lambda s: s.rstrip("="),  # unpadded
        lambda s: s[:-2] + "\n" + s[-2:],  # embedded newline
        lambda s: s.replace("+", "-").replace("/", "_"),  # URL-safe: not in the payload
        lambda s: "",
        lambda s: s + "AA==",  # extra data after padding
    ],
    ids=["unpadded", "newline", "urlsafe", "empty", "concatenated"],
)
def test_public_key_base64_is_strict(transform: object) -> None:
    # This x25519 key's standard base64 contains "+" or "/", so the URL-safe variant differs.
    encoded = next(
        fleet_public_key("x25519", i)
        for i in range(100)
        if "+" in fleet_public_key("x25519", i) or "/" in fleet_public_key("x25519", i)
    )
    bad = transform(encoded)  # type: ignore[operator]
    assert bad != encoded
    key = {"key_id": "k", "algorithm": "x25519", "public_key": bad}
    _rejects_fields("keys\\[0\\].public_key", keys=[key])


def test_public_key_non_canonical_pad_bits_rejected() -> None:
    encoded = fleet_public_key("ed25519")  # 44 bytes -> ends in "="
    assert encoded.endswith("=") and not encoded.endswith("==")
    last = encoded[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    flipped = alphabet[alphabet.index(last) ^ 1]  # lowest bit is a pad bit here
    key = {"key_id": "k", "algorithm": "ed25519", "public_key": encoded[:-2] + flipped + "="}
    _rejects_fields("non-canonical base64", keys=[key])


def test_public_key_must_be_string() -> None:
    key = {"key_id": "k", "algorithm": "ed25519", "public_key": None}
    _rejects_fields("public_key: got null", keys=[key])


# ---- validity window ----

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _window(not_before: str, not_after: str) -> FleetBundle:
    return _parse(not_before=not_before, not_after=not_after)


def test_validity_inside_window() -> None:
    check_validity(_window("2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z"), NOW)


def test_validity_not_yet_valid_is_accepted() -> None:
    # Logging ahead of activation is allowed (docs/formats.md, "Validity").
    check_validity(_window("2030-01-01T00:00:00Z", "2031-01-01T00:00:00Z"), NOW)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2027-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2027-01-01T00:00:00.000001Z", "2027-01-01T00:00:00Z"),
    ],
)
def test_empty_or_inverted_window_rejected(not_before: str, not_after: str) -> None:
    with pytest.raises(ValidityError) as info:
        check_validity(_window(not_before, not_after), NOW)
    assert info.value.code == "invalid_validity_window"
    assert info.value.http_status == 422


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(microseconds=1), timedelta(days=400)])
def test_expired_rejected(delta: timedelta) -> None:
    bundle = _window("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z")
    with pytest.raises(ValidityError, match="got not_after 2025-06-01T00:00:00Z") as info:
        check_validity(bundle, bundle.not_after + delta)
    assert info.value.code == "expired"


def test_one_microsecond_before_expiry_is_fine() -> None:
    bundle = _window("2025-01-01T00:00:00Z", "2025-06-01T00:00:00Z")
    check_validity(bundle, bundle.not_after - timedelta(microseconds=1))


def test_validity_requires_aware_now() -> None:
    with pytest.raises(TypeError):
        check_validity(_parse(), datetime(2026, 1, 1))
