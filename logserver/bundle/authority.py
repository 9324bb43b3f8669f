"""Trust authority keys: loading, key ids, verification, and signing helpers.

An authority key is one of AUTHORITY_ALGORITHMS (docs/formats.md, "Authority keys"):

* `ed25519`: RFC 8032 Ed25519, raw 64-byte signatures;
* `ecdsa-p256`: ECDSA on P-256 with SHA-256, ASN.1 DER signatures (as `cryptography`
  produces them);
* `ml-dsa-44`: FIPS 204 ML-DSA-44, 2420-byte signatures, "pure" ML-DSA (ML-DSA.Sign and
  ML-DSA.Verify of FIPS 204, not HashML-DSA) with the empty context string, over the PAE
  itself, as RFC 9881 §3 uses it for X.509. DSSE's PAE already separates domains (it
  starts with "DSSEv1" and binds the payloadType), so no context string is needed.

Whatever the algorithm, an authority key's DSSE keyid is the lowercase hex SHA-256 of its
DER SubjectPublicKeyInfo (for ML-DSA-44 the RFC 9881 SPKI: OID 2.16.840.1.101.3.4.3.17,
no parameters, the 1312-byte FIPS 204 public key), so one rule covers every algorithm.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from .dsse import Envelope, Signature, pae
from .errors import AuthorityConfigError, SignaturePolicyError
from .key_checks import ed25519_problem, mldsa44_problem

Role: TypeAlias = Literal["signer", "countersigner"]
ROLES: tuple[Role, ...] = ("signer", "countersigner")

AuthorityPublicKey: TypeAlias = (
    ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | mldsa.MLDSA44PublicKey
)
AuthorityPrivateKey: TypeAlias = (
    ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | mldsa.MLDSA44PrivateKey
)
AUTHORITY_ALGORITHMS: tuple[str, ...] = ("ed25519", "ecdsa-p256", "ml-dsa-44")
"""The algorithm names of authority keys, as `keygen authority --algorithm` spells them."""

# One shared, immutable signature-algorithm object: nothing is built per verification.
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_AUTHORITY_NAME_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_WANT = "want Ed25519, ECDSA P-256 or ML-DSA-44"


def keyid_for(public_key: AuthorityPublicKey) -> str:
    """The DSSE keyid of a public key: lowercase hex SHA-256 of its DER SPKI."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def authority_public_key(key: object) -> AuthorityPublicKey:
    """`key` as an authority public key; AuthorityConfigError if its type or value is refused."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        # OpenSSL loads any 32 bytes as an Ed25519 key; a small-order one would let
        # anyone sign as this authority. (P-256 points are checked as they load.)
        problem = ed25519_problem(key.public_bytes_raw())
        if problem is not None:
            raise AuthorityConfigError(f"authority key: Ed25519 key refused: {problem}")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key
        raise AuthorityConfigError(f"authority key: got EC curve {key.curve.name}, {_WANT}")
    if isinstance(key, mldsa.MLDSA44PublicKey):
        # Every 1312-byte string is an ML-DSA-44 public key; the all-zero t1 is one
        # under which anyone can sign (key_checks.mldsa44_problem).
        problem = mldsa44_problem(key.public_bytes_raw())
        if problem is not None:
            raise AuthorityConfigError(f"authority key: ML-DSA-44 key refused: {problem}")
        return key
    raise AuthorityConfigError(f"authority key: got {_key_type_name(key)}, {_WANT}")


def algorithm_of(public_key: AuthorityPublicKey) -> str:
    """The AUTHORITY_ALGORITHMS name of an authority public key."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, mldsa.MLDSA44PublicKey):
        return "ml-dsa-44"
    return "ecdsa-p256"


def _key_type_name(key: object) -> str:
    if isinstance(key, mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey):
        return "an ML-DSA key of another parameter set (ML-DSA-65 or -87)"
    return type(key).__name__


@dataclass(frozen=True, slots=True)
class AuthorityKey:
    """A pinned public key of one trust authority, in one role."""

    keyid: str
    authority: str
    role: Role
    public_key: AuthorityPublicKey

    def __post_init__(self) -> None:
        authority_public_key(self.public_key)
        if self.role not in ROLES:
            raise AuthorityConfigError(f"role: got {self.role!r}, want one of {ROLES}")
        if _AUTHORITY_NAME_RE.fullmatch(self.authority) is None:
            raise AuthorityConfigError(
                f"authority name: got {self.authority!r}, "
                "want 1..128 characters of [A-Za-z0-9._:-]"
            )
        want = keyid_for(self.public_key)
        if self.keyid != want:
            raise AuthorityConfigError(f"keyid: got {self.keyid!r}, want {want!r}")

    @classmethod
    def from_public_key(
        cls, public_key: AuthorityPublicKey, authority: str, role: Role
    ) -> AuthorityKey:
        """Wrap a loaded public key, computing its keyid."""
        return cls(keyid_for(public_key), authority, role, public_key)

    @property
    def algorithm(self) -> str:
        """The key's algorithm: one of AUTHORITY_ALGORITHMS."""
        return algorithm_of(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify `signature` over `message` (the PAE); raise SignaturePolicyError if invalid."""
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, message)
            elif isinstance(self.public_key, mldsa.MLDSA44PublicKey):
                # FIPS 204 ML-DSA.Verify with the empty context; a signature that is not
                # exactly 2420 bytes, or whose hint encoding is not canonical, is invalid.
                self.public_key.verify(signature, message)
            else:
                self.public_key.verify(signature, message, _ECDSA_SHA256)
        except InvalidSignature:
            raise SignaturePolicyError(
                f"signature by keyid {self.keyid} ({self.role} {self.authority!r}, "
                f"{self.algorithm}) "
                "does not verify over the envelope's PAE",
                code="invalid_signature",
            ) from None


def load_authority_key_pem(pem: bytes, authority: str, role: Role) -> AuthorityKey:
    """Load a PEM SubjectPublicKeyInfo ("PUBLIC KEY") as an authority key."""
    try:
        public_key = load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AuthorityConfigError(
            f"authority {authority!r}: not a PEM public key: {exc}"
        ) from None
    return AuthorityKey.from_public_key(authority_public_key(public_key), authority, role)


class AuthoritySet(Mapping[str, AuthorityKey]):
    """The pinned authority keys, keyid -> key.

    Invariants (AuthorityConfigError otherwise): a key appears once; an authority
    name has a single role, so no authority can satisfy both roles; there is at least
    one signer and one countersigner.
    """

    __slots__ = ("_by_keyid",)

    def __init__(self, keys: Iterable[AuthorityKey]) -> None:
        by_keyid: dict[str, AuthorityKey] = {}
        role_of: dict[str, Role] = {}
        for key in keys:
            if key.keyid in by_keyid:
                other = by_keyid[key.keyid]
                raise AuthorityConfigError(
                    f"key {key.keyid} listed twice: as {other.role} {other.authority!r} "
                    f"and as {key.role} {key.authority!r}, want each key once"
                )
            known_role = role_of.setdefault(key.authority, key.role)
            if known_role != key.role:
                raise AuthorityConfigError(
                    f"authority {key.authority!r} has keys in roles {known_role} and "
                    f"{key.role}, want one role per authority"
                )
            by_keyid[key.keyid] = key
        for role in ROLES:
            if role not in role_of.values():
                raise AuthorityConfigError(f"authority set: no {role} key, want at least one")
        self._by_keyid = by_keyid

    def __getitem__(self, keyid: str) -> AuthorityKey:
        return self._by_keyid[keyid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_keyid)

    def __len__(self) -> int:
        return len(self._by_keyid)

    def authorities(self, role: Role) -> frozenset[str]:
        """Names of the authorities that hold `role`."""
        return frozenset(k.authority for k in self._by_keyid.values() if k.role == role)

    def __repr__(self) -> str:
        entries = ", ".join(f"{k.role}:{k.authority}:{k.keyid[:12]}" for k in self.values())
        return f"AuthoritySet({entries})"


# ---- Private-key side, for signing tools and tests. ----


def generate_authority_key(algorithm: str) -> AuthorityPrivateKey:
    """A new private key of `algorithm` (one of AUTHORITY_ALGORITHMS)."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ml-dsa-44":
        return mldsa.MLDSA44PrivateKey.generate()
    raise ValueError(f"authority key algorithm: got {algorithm!r}, want one of {AUTHORITY_ALGORITHMS}")


def authority_private_key(key: object) -> AuthorityPrivateKey:
    """`key` as an authority private key; TypeError (got/want) if it is of another type."""
    if isinstance(key, ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    got = f"an EC key on {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
    raise TypeError(f"authority private key: got {got}, {_WANT}")


def _sign(private_key: AuthorityPrivateKey, message: bytes) -> bytes:
    key = authority_private_key(private_key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, mldsa.MLDSA44PrivateKey):
        # FIPS 204 ML-DSA.Sign, hedged (fresh randomness per signature, so two signatures
        # of one PAE differ, as ECDSA's do), with the empty context.
        return key.sign(message)
    return key.sign(message, _ECDSA_SHA256)


def sign_envelope(
    payload_type: str, payload: bytes, private_keys: Iterable[AuthorityPrivateKey]
) -> Envelope:
    """A new envelope signed by each key in turn (keyid from the key's public SPKI)."""
    message = pae(payload_type, payload)
    signatures = tuple(
        Signature(keyid_for(key.public_key()), _sign(key, message)) for key in private_keys
    )
    return Envelope(payload_type, payload, signatures)


def add_signature(envelope: Envelope, private_key: AuthorityPrivateKey) -> Envelope:
    """The envelope with one more signature (e.g. the countersignature) appended."""
    signature = Signature(keyid_for(private_key.public_key()), _sign(private_key, envelope.pae()))
    return Envelope(envelope.payload_type, envelope.payload, (*envelope.signatures, signature))
