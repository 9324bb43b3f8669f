"""DSSE v1 envelopes (secure-systems-lab/dsse, protocol.md and envelope.md), strict profile.

The profile (documented in docs/formats.md, "Envelope"):

* exactly the fields `payloadType`, `payload`, `signatures`; every signature exactly
  `keyid` and `sig` (DSSE lets empty fields be omitted; we require them all);
* `payloadType` and `keyid` are printable ASCII without spaces, of bounded length;
* base64 is padded RFC 4648, standard or URL-safe alphabet (protocol.md: "verifiers
  MUST accept either"), one alphabet per string, canonical (re-encodes identically);
* 1..16 signatures, no keyid twice, and every size bound the leaf encoding needs.

Every `Envelope` value satisfies the profile: `__post_init__` checks it, so an envelope
from `parse_envelope`, `decode_leaf` or a signing helper can always be encoded as a leaf.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from ..formats.strict import decode_base64, exact_object, json_type, strict_json
from .errors import MalformedEnvelopeError, SizeLimitError

MAX_ENVELOPE_BYTES = 64 * 1024
MAX_SIGNATURES = 16
MAX_PAYLOAD_TYPE_LEN = 255  # leaf: opaque payload_type<1..2^8-1>
MAX_PAYLOAD_LEN = 65535  # leaf: opaque payload<1..2^16-1>
MAX_KEYID_LEN = 256
# The largest signature of an authority algorithm: ML-DSA-44's, exactly 2420 bytes (FIPS 204
# Table 2); Ed25519's are 64 and DER ECDSA P-256's at most 72. Signatures under unknown
# keyids get the same bound.
MAX_SIG_LEN = 2420

_ENVELOPE_FIELDS = frozenset({"payloadType", "payload", "signatures"})
_SIGNATURE_FIELDS = frozenset({"keyid", "sig"})


@dataclass(frozen=True, slots=True)
class Signature:
    """One DSSE signature: an unauthenticated key hint and the raw signature bytes."""

    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.keyid, str) or not isinstance(self.sig, bytes):
            raise TypeError("Signature(keyid: str, sig: bytes)")
        _check_token("keyid", self.keyid, MAX_KEYID_LEN)
        if not 1 <= len(self.sig) <= MAX_SIG_LEN:
            raise MalformedEnvelopeError(
                f"signature of keyid {self.keyid!r}: got {len(self.sig)} bytes, "
                f"want 1..{MAX_SIG_LEN}"
            )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DSSE envelope that satisfies the strict profile (checked on construction)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if (
            not isinstance(self.payload_type, str)
            or not isinstance(self.payload, bytes)
            or not isinstance(self.signatures, tuple)
            or not all(isinstance(s, Signature) for s in self.signatures)
        ):
            raise TypeError("Envelope(payload_type: str, payload: bytes, signatures: tuple)")
        _check_token("payloadType", self.payload_type, MAX_PAYLOAD_TYPE_LEN)
        if not 1 <= len(self.payload) <= MAX_PAYLOAD_LEN:
            raise MalformedEnvelopeError(
                f"payload: got {len(self.payload)} bytes, want 1..{MAX_PAYLOAD_LEN}"
            )
        count = len(self.signatures)
        if count == 0:
            raise MalformedEnvelopeError("signatures: got 0, want 1..16")
        if count > MAX_SIGNATURES:
            raise MalformedEnvelopeError(
                f"signatures: got {count}, want 1..{MAX_SIGNATURES}",
                code="too_many_signatures",
            )
        seen: set[str] = set()
        for signature in self.signatures:
            if signature.keyid in seen:
                # A keyid counts once: refusing repeats keeps the policy and the leaf
                # encoding free of "which of the two signatures counts" questions.
                raise MalformedEnvelopeError(
                    f"keyid {signature.keyid!r} appears more than once, want each keyid once",
                    code="duplicate_signature",
                )
            seen.add(signature.keyid)

    def to_dict(self) -> dict[str, object]:
        """The JSON envelope as a dict, base64 in the standard alphabet."""
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        """Compact JSON bytes, keys in the order payloadType, payload, signatures."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("ascii")

    def pae(self) -> bytes:
        """The DSSE pre-authentication encoding of this envelope (what was signed)."""
        return pae(self.payload_type, self.payload)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 PAE (protocol.md, "Signature Definition").

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, where type
    is UTF8(PAYLOAD_TYPE) and LEN is the ASCII decimal byte length without leading zeros.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def parse_envelope(data: bytes) -> Envelope:
    """Parse a JSON envelope under the strict profile; raise MalformedEnvelopeError."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SizeLimitError(
            f"envelope: got {len(data)} bytes, want <= {MAX_ENVELOPE_BYTES}",
            code="envelope_too_large",
        )
    obj = strict_json(data, "envelope", MalformedEnvelopeError)
    fields = exact_object("envelope", obj, _ENVELOPE_FIELDS, MalformedEnvelopeError)
    payload_type = _string("payloadType", fields["payloadType"])
    payload = _base64("payload", _string("payload", fields["payload"]))
    raw_signatures = fields["signatures"]
    if not isinstance(raw_signatures, list):
        raise MalformedEnvelopeError(
            f"signatures: got {json_type(raw_signatures)}, want array"
        )
    if len(raw_signatures) > MAX_SIGNATURES:
        # Checked before decoding any of them: bounded work for a hostile envelope.
        raise MalformedEnvelopeError(
            f"signatures: got {len(raw_signatures)}, want 1..{MAX_SIGNATURES}",
            code="too_many_signatures",
        )
    signatures = []
    for i, raw in enumerate(raw_signatures):
        entry = exact_object(f"signatures[{i}]", raw, _SIGNATURE_FIELDS, MalformedEnvelopeError)
        keyid = _string(f"signatures[{i}].keyid", entry["keyid"])
        sig = _base64(f"signatures[{i}].sig", _string(f"signatures[{i}].sig", entry["sig"]))
        signatures.append(Signature(keyid, sig))
    return Envelope(payload_type, payload, tuple(signatures))


# Printable ASCII without space: media types, URIs and key ids all fit, and the
# value is safe to echo in error messages and logs. UTF-8 bytes == characters.
_TOKEN_RE = re.compile(r"[!-~]+")


def _check_token(name: str, value: str, max_len: int) -> None:
    if not 1 <= len(value) <= max_len:
        raise MalformedEnvelopeError(f"{name}: got {len(value)} characters, want 1..{max_len}")
    if _TOKEN_RE.fullmatch(value) is None:
        raise MalformedEnvelopeError(
            f"{name}: got {value[:64]!r}, want printable ASCII (U+0021..U+007E) only"
        )


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedEnvelopeError(f"{name}: got {json_type(value)}, want string")
    return value


def _base64(name: str, value: str) -> bytes:
    return decode_base64(value, name, MalformedEnvelopeError, urlsafe=True)
