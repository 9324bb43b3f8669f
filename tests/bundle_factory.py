"""Test helpers: authority keys, fleet payloads and signed envelopes.

Typical use:

    from bundle_factory import BundleFactory, default_authorities  # tests/ is on sys.path

    auth = default_authorities()          # cached signer (Ed25519) + countersigner (P-256)
    factory = BundleFactory(auth)
    envelope = factory.envelope()         # valid, sequence 0, 1, 2, ... on each call
    body = factory.envelope_json()        # the same, as HTTP request bytes
    verify_envelope(envelope, auth.authority_set, NOW)

Everything is valid by default; keyword knobs break one thing at a time. Key
generation is deterministic (fixed seeds), so two runs produce the same keys.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from logserver.bundle import (
    PAYLOAD_TYPE,
    AuthorityKey,
    AuthorityPrivateKey,
    AuthoritySet,
    Envelope,
    Role,
    keyid_for,
    sign_envelope,
)

# A fixed "now" inside the default validity window.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_NOT_BEFORE = "2025-01-01T00:00:00Z"
DEFAULT_NOT_AFTER = "2100-01-01T00:00:00Z"  # far enough that real-clock tests pass too


def private_key(algorithm: str, seed: int) -> AuthorityPrivateKey:
    """A deterministic authority private key: "ed25519", "ecdsa-p256" or "ml-dsa-44"."""
    digest = hashlib.sha256(b"logserver test key %d" % seed).digest()
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(digest)
    if algorithm == "ecdsa-p256":
        # Any 256-bit value reduced into [1, n-1] is a valid scalar.
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        scalar = int.from_bytes(digest, "big") % (order - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())
    if algorithm == "ml-dsa-44":
        return mldsa.MLDSA44PrivateKey.from_seed_bytes(digest)  # FIPS 204 xi, 32 bytes
    raise ValueError(f"algorithm: got {algorithm!r}, want ed25519, ecdsa-p256 or ml-dsa-44")


@dataclass(frozen=True)
class AuthorityFixture:
    """One authority key with its private half."""

    name: str
    role: Role
    private_key: AuthorityPrivateKey

    @property
    def keyid(self) -> str:
        return keyid_for(self.private_key.public_key())

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

    def authority_key(self) -> AuthorityKey:
        return AuthorityKey.from_public_key(self.private_key.public_key(), self.name, self.role)


def make_authority(
    name: str, role: Role, algorithm: str = "ed25519", seed: int = 0
) -> AuthorityFixture:
    """An authority key; distinct (name, role, algorithm, seed) give distinct keys."""
    unique_seed = int.from_bytes(
        hashlib.sha256(f"{name}|{role}|{algorithm}|{seed}".encode()).digest()[:8], "big"
    )
    return AuthorityFixture(name, role, private_key(algorithm, unique_seed))


@dataclass(frozen=True)
class Authorities:
    """A signer and a countersigner (plus any extra keys) and the pinned set."""

    signer: AuthorityFixture
    countersigner: AuthorityFixture
    extra: tuple[AuthorityFixture, ...] = ()

    @property
    def all(self) -> tuple[AuthorityFixture, ...]:
        return (self.signer, self.countersigner, *self.extra)

    @functools.cached_property
    def authority_set(self) -> AuthoritySet:
        return AuthoritySet(a.authority_key() for a in self.all)

    def write_pems(self, directory: Path) -> dict[str, Path]:
        """Write each public key as <authority>-<role>-<keyid prefix>.pem; return name -> path."""
        paths: dict[str, Path] = {}
        for a in self.all:
            path = directory / f"{a.name}-{a.role}-{a.keyid[:8]}.pem"
            path.write_bytes(a.public_pem)
            paths[path.stem] = path
        return paths


def make_authorities(
    signer_algorithm: str = "ed25519",
    countersigner_algorithm: str = "ecdsa-p256",
    extra: Iterable[AuthorityFixture] = (),
) -> Authorities:
    """Signer authority "signer-ca" and countersigner authority "countersigner-ca"."""
    return Authorities(
        make_authority("signer-ca", "signer", signer_algorithm),
        make_authority("countersigner-ca", "countersigner", countersigner_algorithm),
        tuple(extra),
    )


@functools.cache
def default_authorities() -> Authorities:
    """The shared default: Ed25519 signer, ECDSA P-256 countersigner."""
    return make_authorities()


@functools.cache
def fleet_public_key(algorithm: str, index: int = 0) -> str:
    """Standard base64 of a DER SPKI fleet key of `algorithm` (cached, deterministic)."""
    seed = hashlib.sha256(f"fleet|{algorithm}|{index}".encode()).digest()
    if algorithm == "ed25519":
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    elif algorithm == "x25519":
        public = x25519.X25519PrivateKey.from_private_bytes(seed).public_key()
    elif algorithm in ("ecdsa-p256", "ecdsa-p384"):
        curve = ec.SECP256R1() if algorithm == "ecdsa-p256" else ec.SECP384R1()
        public = ec.derive_private_key(int.from_bytes(seed, "big") | 1, curve).public_key()
    elif algorithm == "ml-dsa-44":
        public = mldsa.MLDSA44PrivateKey.from_seed_bytes(seed).public_key()
    elif algorithm == "ml-kem-768":
        # FIPS 203 seed form: d || z, 64 bytes.
        public = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed + hashlib.sha256(seed).digest()).public_key()
    else:
        raise ValueError(f"algorithm: got {algorithm!r}")
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def make_key(key_id: str = "hsm-0", algorithm: str = "ed25519", index: int = 0) -> dict[str, str]:
    """One payload `keys` entry."""
    public_key = fleet_public_key(algorithm, index)
    return {"key_id": key_id, "algorithm": algorithm, "public_key": public_key}


def make_payload(**overrides: object) -> dict[str, object]:
    """A valid payload dict; keyword arguments replace (or, with value ..., remove) fields."""
    payload: dict[str, object] = {
        "fleet_id": "fleet-1",
        "sequence": 0,
        "not_before": DEFAULT_NOT_BEFORE,
        "not_after": DEFAULT_NOT_AFTER,
        "keys": [make_key("hsm-0", "ed25519"), make_key("hsm-1", "ecdsa-p256")],
    }
    for name, value in overrides.items():
        if value is ...:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def payload_bytes(payload: Mapping[str, object] | bytes | None = None) -> bytes:
    """Compact JSON bytes of a payload dict (bytes pass through; None = default payload)."""
    if isinstance(payload, bytes):
        return payload
    fields = make_payload() if payload is None else payload
    return json.dumps(fields, separators=(",", ":")).encode()


def make_envelope(
    payload: Mapping[str, object] | bytes | None = None,
    *,
    authorities: Authorities | None = None,
    signers: Sequence[AuthorityPrivateKey | AuthorityFixture] | None = None,
    payload_type: str = PAYLOAD_TYPE,
) -> Envelope:
    """A signed envelope; by default signed by the signer then the countersigner."""
    auth = authorities or default_authorities()
    chosen = (auth.signer, auth.countersigner) if signers is None else signers
    keys = [s.private_key if isinstance(s, AuthorityFixture) else s for s in chosen]
    return sign_envelope(payload_type, payload_bytes(payload), keys)


def envelope_json(envelope: Envelope | None = None, **layout: object) -> bytes:
    """JSON bytes of an envelope (default: make_envelope()); layout goes to json.dumps."""
    env = make_envelope() if envelope is None else envelope
    if not layout:
        return env.to_json()
    return json.dumps(env.to_dict(), **layout).encode()  # type: ignore[arg-type]


class BundleFactory:
    """Makes many distinct valid envelopes quickly (sequence numbers count up).

    Fleet keys are cached, so the cost per envelope is two signatures.
    """

    def __init__(self, authorities: Authorities | None = None, fleet_id: str = "fleet-1") -> None:
        self.authorities = authorities or default_authorities()
        self.fleet_id = fleet_id
        self._sequence = itertools.count()

    def payload(self, **overrides: object) -> dict[str, object]:
        fields: dict[str, object] = {"fleet_id": self.fleet_id, "sequence": next(self._sequence)}
        fields.update(overrides)
        return make_payload(**fields)

    def envelope(self, **overrides: object) -> Envelope:
        return make_envelope(self.payload(**overrides), authorities=self.authorities)

    def envelope_json(self, **overrides: object) -> bytes:
        return self.envelope(**overrides).to_json()

    def many(self, n: int) -> list[Envelope]:
        return [self.envelope() for _ in range(n)]
