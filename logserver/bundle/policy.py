"""The dual-signature policy: when does the log accept an envelope?

Checks, in this order (the first failure is reported; docs/formats.md, "Signature
policy"):

1. payloadType is the fleet bundle type;
2. among the signatures whose keyid names a pinned authority key, at least one key
   has role `signer` and at least one has role `countersigner` (signatures under
   unknown keyids are ignored);
3. every signature under a pinned keyid verifies over the PAE. A pinned key whose
   signature fails is a rejection, not a skip: the log would otherwise store, under
   a trusted keyid, a signature that every monitor flags as invalid;
4. the payload follows the schema;
5. the validity window is well-formed and not over.

Steps 1 and 2 cost nothing, so a hopeless envelope never reaches the signature
verifications (the server's throughput ceiling). The PAE is built once. DSSE
protocol.md verifies before checking the type and parsing; checking the type first
rejects the same set of envelopes, only with a more precise code, and parsing still
happens only after the signatures verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .authority import AuthorityKey, AuthoritySet
from .dsse import Envelope
from .errors import SignaturePolicyError
from .payload import PAYLOAD_TYPE, FleetBundle, check_validity, parse_payload, payload_digest


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    """An envelope the policy accepted, with its parsed payload.

    `signer_keyid` / `countersigner_keyid` are the smallest verified keyid of each
    role (deterministic whatever the signature order).
    """

    envelope: Envelope
    bundle: FleetBundle
    payload_digest: bytes
    signer_keyid: str
    countersigner_keyid: str


def verify_envelope(
    envelope: Envelope, authorities: AuthoritySet, now: datetime | None = None
) -> VerifiedBundle:
    """Apply the dual-signature policy; raise a BundleError subclass on refusal.

    `now` (timezone-aware) is the time the expiry check uses; None means the
    current UTC time.
    """
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignaturePolicyError(
            f"payloadType: got {envelope.payload_type!r}, want {PAYLOAD_TYPE!r}",
            code="unsupported_payload_type",
        )

    pinned: list[tuple[bytes, AuthorityKey]] = []
    for signature in envelope.signatures:
        key = authorities.get(signature.keyid)
        if key is not None:
            pinned.append((signature.sig, key))
    signer_keyids = sorted(key.keyid for _, key in pinned if key.role == "signer")
    countersigner_keyids = sorted(key.keyid for _, key in pinned if key.role == "countersigner")
    if not signer_keyids:
        raise SignaturePolicyError(
            f"no signature under a signer key: got keyids {_keyids(envelope)}, want one of "
            f"authorities {sorted(authorities.authorities('signer'))}",
            code="signer_signature_missing",
        )
    if not countersigner_keyids:
        raise SignaturePolicyError(
            f"no signature under a countersigner key: got keyids {_keyids(envelope)}, want "
            f"one of authorities {sorted(authorities.authorities('countersigner'))}",
            code="countersigner_signature_missing",
        )

    message = envelope.pae()
    for sig, key in pinned:
        key.verify(message, sig)

    bundle = parse_payload(envelope.payload)
    check_validity(bundle, datetime.now(UTC) if now is None else now)
    return VerifiedBundle(
        envelope=envelope,
        bundle=bundle,
        payload_digest=payload_digest(envelope.payload),
        signer_keyid=signer_keyids[0],
        countersigner_keyid=countersigner_keyids[0],
    )


def _keyids(envelope: Envelope) -> list[str]:
    return [s.keyid[:64] for s in envelope.signatures]
