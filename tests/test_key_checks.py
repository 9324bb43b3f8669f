"""Degenerate, weak and repeated keys: fleet keys in payloads and pinned authority keys.

The lists of bad keys are derived here with the curves' own arithmetic, independently of
logserver/bundle/key_checks.py (which finds small order by doubling), and compared with
the published lists, so a typo in either shows.
"""
from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bundle_factory import make_key, make_payload, payload_bytes
from logserver.bundle import (
    ALL_CODES,
    AuthorityConfigError,
    AuthorityKey,
    MalformedPayloadError,
    load_authority_key_pem,
    parse_payload,
)
from logserver.bundle.key_checks import ed25519_problem, x25519_problem

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
X25519_SPKI_PREFIX = bytes.fromhex("302a300506032b656e032100")


def _sqrt(a: int) -> int | None:
    """A square root mod p (p = 5 mod 8, Atkin's method), or None."""
    a %= P
    if a == 0:
        return 0
    if pow(a, (P - 1) // 2, P) != 1:
        return None
    r = pow(a, (P + 3) // 8, P)
    if r * r % P != a:
        r = r * SQRT_M1 % P
    assert r * r % P == a
    return r


def _on_edwards(x: int, y: int) -> bool:
    return (-x * x + y * y - 1 - D * x * x * y * y) % P == 0


def _edwards_double(x: int, y: int) -> tuple[int, int]:
    # Affine doubling on -x^2 + y^2 = 1 + d x^2 y^2 (the addition law with both points equal).
    t = D * x * x * y * y % P
    return 2 * x * y * pow(1 + t, -1, P) % P, (y * y + x * x) * pow(1 - t, -1, P) % P


def _order(x: int, y: int) -> int:
    for order in (1, 2, 4, 8):
        if (x, y) == (0, 1):
            return order
        x, y = _edwards_double(x, y)
    raise AssertionError("not of small order")


def _small_order_edwards_points() -> set[tuple[int, int]]:
    # Order 1 and 2: x = 0, so y^2 = 1. Order 4: y = 0, so -x^2 = 1. Order 8: doubling
    # gives y = 0, i.e. y^2 + x^2 = 0; with the curve equation, d y^4 + 2 y^2 - 1 = 0.
    points = {(0, 1), (0, P - 1), (SQRT_M1, 0), (P - SQRT_M1, 0)}
    root = _sqrt(1 + D)
    for y2 in ((-1 + root) * pow(D, -1, P) % P, (-1 - root) * pow(D, -1, P) % P):
        y0 = _sqrt(y2)
        if y0 is None:
            continue
        for y in (y0, P - y0):
            x0 = _sqrt((y * y - 1) * pow(D * y * y + 1, -1, P))
            for x in (x0, P - x0):
                points.add((x, y))
    assert all(_on_edwards(x, y) for x, y in points)
    return points


def _encode(x: int, y: int, *, y_plus: int = 0, sign: int | None = None) -> bytes:
    bit = x & 1 if sign is None else sign
    return ((y + y_plus) | bit << 255).to_bytes(32, "little")


SMALL_ORDER_POINTS = _small_order_edwards_points()
# The canonical encodings, as listed by libsodium's blocklist and in Chalkias et al.,
# "Taming the many EdDSAs" (2020), Table 6.
PUBLISHED_SMALL_ORDER = {
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
}


def _ed25519_bad_encodings() -> dict[str, bytes]:
    out = {f"order {_order(x, y)} {_encode(x, y).hex()}": _encode(x, y) for x, y in SMALL_ORDER_POINTS}
    # RFC 8032 §5.1.3: y >= p must be refused. y + p < 2^255 only for y < 19; of those,
    # y = 0 and y = 1 are small-order points, so each has two more encodings per sign.
    for x, y in SMALL_ORDER_POINTS:
        if y + P < 2**255:
            for sign in (0, 1):
                out[f"y = p + {y}, sign {sign}"] = _encode(x, y, y_plus=P, sign=sign)
        if x == 0:  # "x = 0 and x_0 = 1: decoding fails"
            out[f"x = 0 with sign bit, y = {'p - 1' if y == P - 1 else y}"] = _encode(x, y, sign=1)
    return out


ED25519_BAD = _ed25519_bad_encodings()


def test_the_derived_small_order_points_are_the_published_eight():
    assert len(SMALL_ORDER_POINTS) == 8
    assert sorted(_order(x, y) for x, y in SMALL_ORDER_POINTS) == [1, 2, 4, 4, 8, 8, 8, 8]
    assert {_encode(x, y).hex() for x, y in SMALL_ORDER_POINTS} == PUBLISHED_SMALL_ORDER
    # The 8 points; y = p and y = p + 1 (for y = 0 and y = 1), each with sign 0 and 1;
    # x = 0 with the sign bit, for y = 1 and y = p - 1.
    assert len(ED25519_BAD) == 8 + 2 * 2 + 2


def test_an_identity_authority_key_would_let_anyone_sign():
    """Why it matters: OpenSSL verifies a forged signature under the identity point."""
    identity = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex("01" + "00" * 31))
    forged = bytes.fromhex("01" + "00" * 31) + bytes(32)  # R = identity, S = 0
    try:
        identity.verify(forged, b"any message at all")
    except InvalidSignature:
        pytest.skip("this OpenSSL refuses the forgery itself; the key is refused anyway below")
    with pytest.raises(AuthorityConfigError, match="small order 1"):
        AuthorityKey.from_public_key(identity, "evil", "signer")


def _fleet(algorithm: str, raw: bytes, key_id: str = "hsm-weak") -> bytes:
    prefix = ED25519_SPKI_PREFIX if algorithm == "ed25519" else X25519_SPKI_PREFIX
    key = {"key_id": key_id, "algorithm": algorithm, "public_key": base64.b64encode(prefix + raw).decode()}
    return payload_bytes(make_payload(keys=[make_key("hsm-good", "ed25519"), key]))


def _refused(data: bytes, code: str, match: str) -> MalformedPayloadError:
    with pytest.raises(MalformedPayloadError, match=match) as info:
        parse_payload(data)
    assert info.value.code == code and info.value.http_status == 400
    return info.value


@pytest.mark.parametrize("raw", ED25519_BAD.values(), ids=ED25519_BAD.keys())
def test_small_order_and_non_canonical_ed25519_fleet_keys_are_refused(raw):
    error = _refused(_fleet("ed25519", raw), "weak_fleet_key", r"^keys\[1\]\.public_key \(key_id 'hsm-weak'\): ed25519")
    assert "small order" in str(error) or "non-canonical" in str(error), error


@pytest.mark.parametrize("raw", ED25519_BAD.values(), ids=ED25519_BAD.keys())
def test_small_order_and_non_canonical_ed25519_authority_keys_are_refused(raw):
    pem = (b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(ED25519_SPKI_PREFIX + raw)
           + b"-----END PUBLIC KEY-----\n")
    with pytest.raises(AuthorityConfigError,
                       match=r"^authority key: Ed25519 key refused: (a point of small order|non-canonical)"):
        load_authority_key_pem(pem, "signer-a", "signer")


def test_an_ed25519_y_off_the_curve_is_refused():
    y = next(y for y in range(2, 100) if _sqrt((y * y - 1) * pow(D * y * y + 1, -1, P)) is None)
    _refused(_fleet("ed25519", y.to_bytes(32, "little")), "weak_fleet_key", "not a point of edwards25519")
    assert ed25519_problem(y.to_bytes(32, "little")) is not None


# ---- X25519 ----

# The low-order u-coordinates as published (e.g. the blocklist of Bernstein's
# curve25519 page, libsodium): 0, 1, the two of order 8, p - 1, p, p + 1.
PUBLISHED_LOW_ORDER_U = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
]


def _derived_low_order_u() -> set[int]:
    # RFC 7748 §4.1: the birational map u = (1 + y) / (1 - y) takes edwards25519's
    # small-order points to curve25519's (the identity, y = 1, to the point at infinity,
    # which has no u). The twist adds u = -1, of order 4 there.
    on_curve = {(1 + y) * pow(1 - y, -1, P) % P for _, y in SMALL_ORDER_POINTS if y != 1}
    return on_curve | {P - 1}


def test_the_published_low_order_u_are_the_derived_ones_and_give_a_zero_secret():
    canonical = {u % P for u in PUBLISHED_LOW_ORDER_U}
    assert canonical == _derived_low_order_u()
    # Each is of small order whatever the private key: X25519 clamps scalars to a
    # multiple of 8, so the shared secret is the point at infinity, all zeros, which
    # OpenSSL refuses to return.
    for u in PUBLISHED_LOW_ORDER_U:
        peer = x25519.X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))
        for _ in range(3):
            with pytest.raises(ValueError):
                x25519.X25519PrivateKey.generate().exchange(peer)


X25519_BAD = dict(zip(["u = 0", "u = 1", "u of order 8 (a)", "u of order 8 (b)", "u = p - 1", "u = p", "u = p + 1"],
                      PUBLISHED_LOW_ORDER_U, strict=True))
X25519_BAD.update({f"{name}, high bit set": u + 2**255 for name, u in list(X25519_BAD.items())})
X25519_BAD["u = p + 2 (non-canonical, not low order)"] = P + 2


@pytest.mark.parametrize("u", X25519_BAD.values(), ids=X25519_BAD.keys())
def test_low_order_and_non_canonical_x25519_fleet_keys_are_refused(u):
    error = _refused(_fleet("x25519", u.to_bytes(32, "little")), "weak_fleet_key",
                     r"^keys\[1\]\.public_key \(key_id 'hsm-weak'\): x25519 key refused: ")
    assert "small order" in str(error) or "non-canonical" in str(error), error


def test_an_x25519_u_of_the_twist_is_refused():
    u = next(u for u in range(2, 100) if pow((u**3 + 486662 * u * u + u) % P, (P - 1) // 2, P) != 1)
    _refused(_fleet("x25519", u.to_bytes(32, "little")), "weak_fleet_key", "quadratic twist")


def test_real_keys_pass_every_check():
    for _ in range(200):
        assert ed25519_problem(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()) is None
        assert x25519_problem(x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()) is None
    keys = [make_key(f"k{i}-{a}", a, i) for i in range(4) for a in ("ed25519", "x25519", "ecdsa-p256", "ecdsa-p384")]
    assert len(parse_payload(payload_bytes(make_payload(keys=keys))).keys) == 16


# ---- NIST curves: the loader checks the point ----


def _spki_with_point(curve: ec.EllipticCurve, point: bytes) -> bytes:
    der = ec.generate_private_key(curve).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert der[0] == 0x30 and der[1] < 0x80 and der[2] == 0x30  # short-form lengths throughout
    algorithm_identifier = der[2: 4 + der[3]]
    body = algorithm_identifier + b"\x03" + bytes([len(point) + 1]) + b"\x00" + point
    return b"\x30" + bytes([len(body)]) + body


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_the_spki_construction_rebuilds_a_real_key_byte_for_byte(curve):
    public = ec.generate_private_key(curve).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert _spki_with_point(curve, public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)) == der


def _p256_point_with_small_x() -> tuple[int, int]:
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    for x in range(1, 100):
        rhs = (x**3 - 3 * x + b) % p
        y = pow(rhs, (p + 1) // 4, p)  # p = 3 mod 4
        if y * y % p == rhs:
            return x, y
    raise AssertionError("no point")


@pytest.mark.parametrize("algorithm, curve, size",
                         [("ecdsa-p256", ec.SECP256R1(), 32), ("ecdsa-p384", ec.SECP384R1(), 48)])
def test_ec_points_off_the_curve_or_at_infinity_are_refused(algorithm, curve, size):
    good = ec.generate_private_key(curve).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    off = good[:-1] + bytes([good[-1] ^ 1])
    for point, what in ((off, "off the curve"), (b"\x00", "the point at infinity"),
                        (b"\x04" + bytes(2 * size), "(0, 0)")):
        der = _spki_with_point(curve, point)
        key = {"key_id": "hsm-bad", "algorithm": algorithm, "public_key": base64.b64encode(der).decode()}
        with pytest.raises(MalformedPayloadError, match=r"hsm-bad.*not a DER SubjectPublicKeyInfo") as info:
            parse_payload(payload_bytes(make_payload(keys=[key])))
        assert info.value.code == "malformed_payload", what
        if algorithm == "ecdsa-p256":
            pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"
            with pytest.raises(AuthorityConfigError, match="not a PEM public key"):
                load_authority_key_pem(pem, "signer-a", "signer")


def test_an_ec_coordinate_not_reduced_mod_p_is_refused():
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    x, y = _p256_point_with_small_x()
    canonical = b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")
    assert parse_payload(payload_bytes(make_payload(keys=[{
        "key_id": "hsm-ok", "algorithm": "ecdsa-p256",
        "public_key": base64.b64encode(_spki_with_point(ec.SECP256R1(), canonical)).decode()}])))
    for point in (b"\x04" + (x + p).to_bytes(32, "big") + y.to_bytes(32, "big"),
                  b"\x04" + x.to_bytes(32, "big") + (y + p).to_bytes(32, "big") if y + p < 2**256 else None):
        if point is None:
            continue
        key = {"key_id": "hsm-big", "algorithm": "ecdsa-p256",
               "public_key": base64.b64encode(_spki_with_point(ec.SECP256R1(), point)).decode()}
        with pytest.raises(MalformedPayloadError, match="hsm-big") as info:
            parse_payload(payload_bytes(make_payload(keys=[key])))
        assert info.value.code == "malformed_payload"


# ---- one key, one key_id; reserved fleet ids ----


@pytest.mark.parametrize("algorithm", ["ed25519", "x25519", "ecdsa-p256", "ecdsa-p384"])
def test_the_same_key_under_two_key_ids_is_refused(algorithm):
    keys = [make_key("hsm-a", algorithm), make_key("hsm-other", "ed25519", 7), make_key("hsm-b", algorithm)]
    _refused(payload_bytes(make_payload(keys=keys)), "duplicate_fleet_key",
             r"^keys\[2\]\.public_key \(key_id 'hsm-b'\): the same key as key_id 'hsm-a'")


@pytest.mark.parametrize("fleet_id", [".", ".."])
def test_dot_segment_fleet_ids_are_refused(fleet_id):
    _refused(payload_bytes(make_payload(fleet_id=fleet_id)), "reserved_fleet_id",
             "fleet_id: got '\\.+', a URL dot segment")


@pytest.mark.parametrize("fleet_id", ["...", ".a", "a..", "._", "-"])
def test_other_dotted_fleet_ids_stay_accepted(fleet_id):
    assert parse_payload(payload_bytes(make_payload(fleet_id=fleet_id))).fleet_id == fleet_id


def test_the_new_codes_are_listed():
    assert {"weak_fleet_key", "duplicate_fleet_key", "reserved_fleet_id"} <= ALL_CODES
