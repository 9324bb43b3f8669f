"""The fleet bundle payload: schema, strict parser and validity check.

The schema is documented in docs/formats.md ("Payload schema"). The payload bytes are
what the authorities signed and what the log stores verbatim; parsing only decides
whether they are acceptable, it never re-serialises them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from ..formats.strict import decode_base64, exact_object, json_type, strict_json
from .errors import MalformedPayloadError, ValidityError
from .key_checks import ed25519_problem, mldsa44_problem, mlkem768_problem, x25519_problem

PAYLOAD_TYPE = "application/vnd.logserver.fleet-bundle+json"

MAX_SEQUENCE = 2**63 - 1
MAX_KEYS = 64
MAX_ID_LEN = 128

# Algorithm name -> predicate on the loaded public key. Keep this set small: every
# entry is a promise to clients that they can use such a key (docs/formats.md, "Payload
# schema", says why each is here). The post-quantum two are the NIST parameter sets the
# ecosystem settled on: ML-DSA-44 (FIPS 204) as C2SP's signature algorithm, ML-KEM-768
# (FIPS 203) as TLS's hybrid key agreement; the larger sets are left out.
_ALGORITHM_CHECKS = {
    "ed25519": lambda key: isinstance(key, ed25519.Ed25519PublicKey),
    "x25519": lambda key: isinstance(key, x25519.X25519PublicKey),
    "ecdsa-p256": lambda key: isinstance(key, ec.EllipticCurvePublicKey)
    and isinstance(key.curve, ec.SECP256R1),
    "ecdsa-p384": lambda key: isinstance(key, ec.EllipticCurvePublicKey)
    and isinstance(key.curve, ec.SECP384R1),
    "ml-dsa-44": lambda key: isinstance(key, mldsa.MLDSA44PublicKey),
    "ml-kem-768": lambda key: isinstance(key, mlkem.MLKEM768PublicKey),
}
ALGORITHMS: frozenset[str] = frozenset(_ALGORITHM_CHECKS)

_PAYLOAD_FIELDS = frozenset({"fleet_id", "sequence", "not_before", "not_after", "keys"})
# Optional (docs/formats.md, "Payload schema"): absent means "active", so every payload
# written before the field existed keeps its meaning (docs/fleet-heads.md, "Admission
# and retirement").
_STATUS_FIELD = "status"
ACTIVE = "active"
RETIRED = "retired"
STATUSES: tuple[str, ...] = (ACTIVE, RETIRED)
_KEY_FIELDS = frozenset({"key_id", "algorithm", "public_key"})

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A fleet id is a path segment of /v1/fleets/{fleet_id}; these two are the dot
# segments that RFC 3986 §5.2.4 removes, so no URL can name such a fleet.
_RESERVED_FLEET_IDS = frozenset({".", ".."})
FLEET_ID_PATTERN = _ID_RE.pattern
"""The fleet id charset, as a regular expression to match in full."""
# RFC 3339 §5.6 date-time, restricted: upper-case "T", UTC offset written "Z" only,
# at most 6 fractional digits (microseconds, what datetime holds). [0-9] not \d:
# \d would also match non-ASCII digits.
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z"
)


@dataclass(frozen=True, slots=True)
class FleetKey:
    """One HSM public key of the fleet; `public_key` is canonical DER SubjectPublicKeyInfo."""

    key_id: str
    algorithm: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class FleetBundle:
    """A parsed payload. Timestamps are timezone-aware UTC datetimes."""

    fleet_id: str
    sequence: int
    not_before: datetime
    not_after: datetime
    keys: tuple[FleetKey, ...]
    status: str = ACTIVE
    """ACTIVE or RETIRED: the payload's optional `status` (absent means active)."""


def is_fleet_id(value: str) -> bool:
    """Whether `value` is a fleet id a payload may carry: the charset, and not "." or ".."."""
    return _ID_RE.fullmatch(value) is not None and value not in _RESERVED_FLEET_IDS


def payload_digest(payload: bytes) -> bytes:
    """SHA-256 of the exact payload bytes: the identity of a bundle's signed content."""
    return hashlib.sha256(payload).digest()


def parse_payload(data: bytes) -> FleetBundle:
    """Parse payload bytes under the strict schema; raise MalformedPayloadError."""
    obj = strict_json(data, "payload", MalformedPayloadError)
    want = _PAYLOAD_FIELDS | {_STATUS_FIELD} if isinstance(obj, dict) and _STATUS_FIELD in obj else _PAYLOAD_FIELDS
    fields = exact_object("payload", obj, want, MalformedPayloadError)
    fleet_id = _identifier("fleet_id", fields["fleet_id"])
    if fleet_id in _RESERVED_FLEET_IDS:
        raise MalformedPayloadError(
            f"fleet_id: got {fleet_id!r}, a URL dot segment (RFC 3986 §5.2.4) that "
            "/v1/fleets/{fleet_id} cannot name; want any other id",
            code="reserved_fleet_id",
        )
    sequence = fields["sequence"]
    # bool is a subclass of int in Python; JSON true is not a number.
    if type(sequence) is not int:
        raise MalformedPayloadError(f"sequence: got {json_type(sequence)}, want integer")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise MalformedPayloadError(f"sequence: got {sequence}, want 0..{MAX_SEQUENCE}")
    not_before = parse_timestamp("not_before", fields["not_before"])
    not_after = parse_timestamp("not_after", fields["not_after"])
    raw_keys = fields["keys"]
    if not isinstance(raw_keys, list):
        raise MalformedPayloadError(f"keys: got {json_type(raw_keys)}, want array")
    if not 1 <= len(raw_keys) <= MAX_KEYS:
        raise MalformedPayloadError(f"keys: got {len(raw_keys)} keys, want 1..{MAX_KEYS}")
    keys: list[FleetKey] = []
    seen: set[str] = set()
    key_id_of: dict[bytes, str] = {}
    for i, raw in enumerate(raw_keys):
        key = _fleet_key(i, raw)
        if key.key_id in seen:
            raise MalformedPayloadError(
                f"keys[{i}].key_id: {key.key_id!r} repeats an earlier key_id, want unique"
            )
        seen.add(key.key_id)
        first = key_id_of.setdefault(key.public_key, key.key_id)
        if first != key.key_id:
            # One key under two names: a client choosing "two of the fleet's keys"
            # would get one.
            raise MalformedPayloadError(
                f"keys[{i}].public_key (key_id {key.key_id!r}): the same key as key_id "
                f"{first!r}, want each key once",
                code="duplicate_fleet_key",
            )
        keys.append(key)
    status = fields.get(_STATUS_FIELD, ACTIVE)
    if not isinstance(status, str) or status not in STATUSES:
        shown = repr(status[:40]) if isinstance(status, str) else json_type(status)
        raise MalformedPayloadError(f"status: got {shown}, want one of {list(STATUSES)} (or no status: active)")
    return FleetBundle(fleet_id, sequence, not_before, not_after, tuple(keys), status)


def check_validity(bundle: FleetBundle, now: datetime) -> None:
    """Raise ValidityError unless not_before < not_after and now < not_after.

    A bundle whose window has not started yet (now < not_before) is accepted: it may
    be logged ahead of its activation, which is when clients most need to see it.
    """
    if now.tzinfo is None:
        raise TypeError("check_validity: now must be timezone-aware")
    if not bundle.not_before < bundle.not_after:
        raise ValidityError(
            f"validity window: got not_before {format_timestamp(bundle.not_before)} and "
            f"not_after {format_timestamp(bundle.not_after)}, want not_before < not_after",
            code="invalid_validity_window",
        )
    if not now < bundle.not_after:
        raise ValidityError(
            f"bundle expired: got not_after {format_timestamp(bundle.not_after)}, "
            f"want later than now ({format_timestamp(now)})",
            code="expired",
        )


def parse_timestamp(name: str, value: object) -> datetime:
    """Parse a strict RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`)."""
    if not isinstance(value, str):
        raise MalformedPayloadError(f"{name}: got {json_type(value)}, want string")
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        raise MalformedPayloadError(
            f"{name}: got {value[:40]!r}, want YYYY-MM-DDTHH:MM:SS[.ffffff]Z (UTC)"
        )
    year, month, day, hour, minute, second, fraction = match.groups()
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    try:
        # datetime validates the calendar (month lengths, leap years) and the clock
        # (hour <= 23, second <= 59: leap seconds are not representable, so rejected).
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise MalformedPayloadError(f"{name}: got {value!r}, not a real date/time: {exc}") from None


def format_timestamp(value: datetime) -> str:
    """Format an aware datetime in the payload's timestamp syntax (UTC, "Z")."""
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _fleet_key(index: int, raw: object) -> FleetKey:
    name = f"keys[{index}]"
    fields = exact_object(name, raw, _KEY_FIELDS, MalformedPayloadError)
    key_id = _identifier(f"{name}.key_id", fields["key_id"])
    algorithm = fields["algorithm"]
    if not isinstance(algorithm, str) or algorithm not in _ALGORITHM_CHECKS:
        shown = repr(algorithm[:40]) if isinstance(algorithm, str) else json_type(algorithm)
        raise MalformedPayloadError(
            f"{name}.algorithm: got {shown}, want one of {sorted(ALGORITHMS)}"
        )
    encoded = fields["public_key"]
    if not isinstance(encoded, str):
        raise MalformedPayloadError(f"{name}.public_key: got {json_type(encoded)}, want string")
    der = decode_base64(encoded, f"{name}.public_key", MalformedPayloadError)
    problem = _spki_problem(algorithm, der)
    if problem is not None:
        code, reason = problem
        raise MalformedPayloadError(f"{name}.public_key (key_id {key_id!r}): {reason}", code=code)
    return FleetKey(key_id, algorithm, der)


# Raw-key checks for the algorithms whose keys `cryptography` loads unchecked (or, for
# ML-KEM, checked only for the modulus); the EC curves' points are checked (on the curve,
# not the point at infinity) as they load.
_POINT_CHECKS = {
    "ed25519": lambda key: ed25519_problem(key.public_bytes_raw()),
    "x25519": lambda key: x25519_problem(key.public_bytes_raw()),
    "ml-dsa-44": lambda key: mldsa44_problem(key.public_bytes_raw()),
    "ml-kem-768": lambda key: mlkem768_problem(key.public_bytes_raw()),
}
_KEY_TYPE_NAMES = (
    (mldsa.MLDSA44PublicKey, "ML-DSA-44"),
    (mldsa.MLDSA65PublicKey, "ML-DSA-65"),
    (mldsa.MLDSA87PublicKey, "ML-DSA-87"),
    (mlkem.MLKEM768PublicKey, "ML-KEM-768"),
    (mlkem.MLKEM1024PublicKey, "ML-KEM-1024"),
)


# A fleet's keys recur in every bundle it logs, and loading an EC key validates its
# point (tens of microseconds; the 25519 point checks take about 150), so verdicts
# are remembered: a pure function of the bytes, in a bounded LRU.
@functools.lru_cache(maxsize=4096)
def _spki_problem(algorithm: str, der: bytes) -> tuple[str, str] | None:
    """(code, why) when `der` is not a canonical DER SPKI of a sound `algorithm` key, or None."""
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        return "malformed_payload", f"not a DER SubjectPublicKeyInfo cryptography can load: {exc}"
    if not _ALGORITHM_CHECKS[algorithm](key):
        return "malformed_payload", f"got a {_describe_key(key)} key, want a key of algorithm {algorithm!r}"
    canonical = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if canonical != der:
        # Catches BER-not-DER, trailing bytes, compressed EC points, EC coordinates
        # not reduced mod p and the like: one key, one encoding.
        return "malformed_payload", (f"got {len(der)} bytes that re-encode to {len(canonical)} "
                                     "different bytes, want canonical DER (uncompressed points for EC)")
    point_check = _POINT_CHECKS.get(algorithm)
    problem = None if point_check is None else point_check(key)
    if problem is not None:
        return "weak_fleet_key", f"{algorithm} key refused: {problem}"
    return None


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    for cls, name in _KEY_TYPE_NAMES:
        if isinstance(key, cls):
            return name
    return type(key).__name__.removesuffix("PublicKey").removeprefix("_")


def _identifier(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedPayloadError(f"{name}: got {json_type(value)}, want string")
    if _ID_RE.fullmatch(value) is None:
        raise MalformedPayloadError(
            f"{name}: got {value[:40]!r} ({len(value)} characters), "
            f"want 1..{MAX_ID_LEN} characters of [A-Za-z0-9._:-]"
        )
    return value
