"""Degenerate-key checks for the 25519 curves, in pure integer arithmetic, and for the
lattice keys (ML-DSA-44, ML-KEM-768), on their bytes.

`cryptography` (OpenSSL) loads any 32 bytes as an Ed25519 or X25519 public key: it
checks nothing about the point. The NIST curves need no such code: OpenSSL refuses an
EC point that is not on the curve, and the point at infinity, when it loads the key,
and P-256 and P-384 have cofactor 1, so every other point has the group's prime order.

OpenSSL loads any 1312 bytes as an ML-DSA-44 public key (every string is a valid
encoding), and an ML-KEM-768 key after the FIPS 203 §7.2 modulus check (every
coefficient below q; tests/test_key_checks.py holds it to that). What no key generator
makes and an attacker could use is the all-zero vector, checked here.

Each function returns why the raw public key is unacceptable, or None. They run once
per distinct key (the payload parser caches its verdicts; authority keys are checked
when loaded), never per signature.
"""

from __future__ import annotations

P = 2**255 - 19
# RFC 8032 §5.1: edwards25519 is -x^2 + y^2 = 1 + d x^2 y^2 with d = -121665/121666.
_D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 mod p (RFC 8032 §5.1.3 step 3)
# RFC 7748 §4.1: curve25519 is v^2 = u^3 + A u^2 + u.
_A = 486662
_HIGH_BIT = 1 << 255


def ed25519_problem(raw: bytes) -> str | None:
    """Why `raw` is not a usable Ed25519 public key (RFC 8032 §5.1.3), or None.

    Refused: a non-canonical encoding (y >= p, or x = 0 with the sign bit set), a y that
    is no point of the curve, and the eight points of small order (order 1, 2, 4 or 8;
    the identity among them), for which signatures can be forged without a private key.
    """
    if len(raw) != 32:
        return f"got {len(raw)} bytes, want 32"
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= _HIGH_BIT - 1
    if y >= P:
        return f"non-canonical encoding: y = p + {y - P}, want y < p (RFC 8032 §5.1.3)"
    x = _recover_x(y)
    if x is None:
        return "not a point of edwards25519: no x satisfies the curve equation for this y"
    if x == 0 and sign:
        return "non-canonical encoding: x = 0 with the sign bit set (RFC 8032 §5.1.3)"
    if sign != x & 1:
        x = P - x
    order = _ed25519_small_order(x, y)
    if order is not None:
        return (f"a point of small order {order}: anyone can make signatures that verify "
                "under it, without a private key")
    return None


def _recover_x(y: int) -> int | None:
    # RFC 8032 §5.1.3 steps 2-3: x^2 = (y^2 - 1) / (d y^2 + 1).
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx == u:
        return x
    if vxx == (-u) % P:
        return x * _SQRT_M1 % P
    return None


def _ed25519_small_order(x: int, y: int) -> int | None:
    """The order of (x, y) if it divides 8 (the cofactor), else None."""
    # Extended coordinates (X : Y : Z : T); doubling as in RFC 8032 §5.1.4.
    px, py, pz = x, y, 1
    for order in (1, 2, 4, 8):
        if px == 0 and py == pz:  # the identity (0, 1)
            return order
        a, b, c = px * px % P, py * py % P, 2 * pz * pz % P
        h = (a + b) % P
        e = (h - (px + py) ** 2) % P
        g = (a - b) % P
        f = (c + g) % P
        px, py, pz = e * f % P, g * h % P, f * g % P
    return None


def x25519_problem(raw: bytes) -> str | None:
    """Why `raw` is not a usable X25519 public key (RFC 7748), or None.

    Refused: a non-canonical encoding (the high bit set, which RFC 7748 §5 says a
    receiver masks, or u >= p), a u of small order on the curve or on its twist (0, 1,
    p - 1 and the two points of order 8: the shared secret with them is one of a few
    known values whatever the private key), and a u of the quadratic twist, which no
    private key produces.
    """
    if len(raw) != 32:
        return f"got {len(raw)} bytes, want 32"
    u = int.from_bytes(raw, "little")
    if u & _HIGH_BIT:
        return "non-canonical encoding: the high bit is set (RFC 7748 §5 masks it), want it clear"
    if u >= P:
        return f"non-canonical encoding: u = p + {u - P}, want u < p"
    order = _x25519_small_order(u)
    if order is not None:
        return (f"a point of small order {order}: the X25519 shared secret with it is one of "
                f"{order} values whatever the private key (RFC 7748 §6.1)")
    rhs = (u * u * u + _A * u * u + u) % P
    if pow(rhs, (P - 1) // 2, P) != 1:
        return "not a point of curve25519 but of its quadratic twist; no X25519 private key gives it"
    return None


def _x25519_small_order(u: int) -> int | None:
    """The order of a point with coordinate u if it divides 8, on the curve or the twist."""
    # x-only doubling (RFC 7748 §5 ladder step with both inputs equal) in (X : Z);
    # Z = 0 is the point at infinity.
    x, z = u, 1
    for order in (2, 4, 8):
        x, z = (x * x - z * z) ** 2 % P, 4 * x * z * (x * x + _A * x * z + z * z) % P
        if z == 0:
            return order
    return None


# FIPS 204 Table 1 / pkEncode: an ML-DSA-44 public key is rho (32 bytes) followed by t1,
# k = 4 polynomials of 256 coefficients packed in 10 bits each (1280 bytes).
MLDSA44_PUBLIC_KEY_BYTES = 32 + 4 * 256 * 10 // 8
# FIPS 203 K-PKE.KeyGen: an ML-KEM-768 encapsulation key is ByteEncode12(t-hat), k = 3
# polynomials of 256 coefficients in 12 bits each (1152 bytes), followed by rho (32 bytes).
MLKEM768_PUBLIC_KEY_BYTES = 3 * 256 * 12 // 8 + 32


def mldsa44_problem(raw: bytes) -> str | None:
    """Why `raw` is not a usable ML-DSA-44 public key (FIPS 204), or None.

    Refused: t1 = 0. ML-DSA.Verify_internal computes w'Approx = A*z - c*t1*2^d; with t1 = 0
    that is A*z for a z the signature itself carries, so anyone picks a short z, computes
    w1 = HighBits(A*z) and the challenge hash over the message and w1, and has a signature
    that verifies (no hint needed), without a private key. No key generator makes it: each of
    the 1024 coefficients of a generated t1 is 0 with probability about 2^-11.
    """
    if len(raw) != MLDSA44_PUBLIC_KEY_BYTES:
        return f"got {len(raw)} bytes, want {MLDSA44_PUBLIC_KEY_BYTES}"
    if not any(raw[32:]):
        return ("t1 = 0 (every coefficient zero): anyone can make signatures that verify under it, "
                "without a private key (the verifier's w'Approx is then A*z, chosen by the signer)")
    return None


def mlkem768_problem(raw: bytes) -> str | None:
    """Why `raw` is not a usable ML-KEM-768 encapsulation key (FIPS 203), or None.

    Refused: t-hat = 0. K-PKE.Encrypt then makes v = e2 + Decompress1(m), the message m
    under small noise only, so whoever sees the ciphertext decodes m and derives the shared
    secret: the X25519 small-order problem again (RFC 7748 §6.1). The modulus check
    (coefficients < q) is OpenSSL's, when the key loads.
    """
    if len(raw) != MLKEM768_PUBLIC_KEY_BYTES:
        return f"got {len(raw)} bytes, want {MLKEM768_PUBLIC_KEY_BYTES}"
    if not any(raw[:-32]):
        return ("t-hat = 0 (every coefficient zero): a ciphertext to it carries the message under "
                "small noise only, so anyone who sees it derives the shared secret")
    return None
