"""Pure bundle logic: DSSE envelope and PAE, payload schema, authority keys, the
dual-signature policy and the canonical leaf encoding. See docs/architecture.md and
docs/formats.md."""

from .admit import Admitted, admit
from .authority import (
    ROLES,
    AuthorityKey,
    AuthorityPrivateKey,
    AuthorityPublicKey,
    AuthoritySet,
    Role,
    add_signature,
    keyid_for,
    load_authority_key_pem,
    sign_envelope,
)
from .dsse import MAX_ENVELOPE_BYTES, MAX_SIGNATURES, Envelope, Signature, pae, parse_envelope
from .errors import (
    ALL_CODES,
    AuthorityConfigError,
    BundleError,
    MalformedEnvelopeError,
    MalformedPayloadError,
    SignaturePolicyError,
    SizeLimitError,
    ValidityError,
)
from .leaf import LEAF_VERSION, MAX_LEAF_BYTES, decode_leaf, encode_leaf, envelope_leaf_hash
from .payload import (
    ALGORITHMS,
    PAYLOAD_TYPE,
    FleetBundle,
    FleetKey,
    check_validity,
    format_timestamp,
    parse_payload,
    parse_timestamp,
    payload_digest,
)
from .policy import VerifiedBundle, verify_envelope

__all__ = [
    "ALGORITHMS",
    "ALL_CODES",
    "LEAF_VERSION",
    "MAX_ENVELOPE_BYTES",
    "MAX_LEAF_BYTES",
    "MAX_SIGNATURES",
    "PAYLOAD_TYPE",
    "ROLES",
    "Admitted",
    "AuthorityConfigError",
    "AuthorityKey",
    "AuthorityPrivateKey",
    "AuthorityPublicKey",
    "AuthoritySet",
    "BundleError",
    "Envelope",
    "FleetBundle",
    "FleetKey",
    "MalformedEnvelopeError",
    "MalformedPayloadError",
    "Role",
    "Signature",
    "SignaturePolicyError",
    "SizeLimitError",
    "ValidityError",
    "VerifiedBundle",
    "add_signature",
    "admit",
    "check_validity",
    "decode_leaf",
    "encode_leaf",
    "envelope_leaf_hash",
    "format_timestamp",
    "keyid_for",
    "load_authority_key_pem",
    "pae",
    "parse_envelope",
    "parse_payload",
    "parse_timestamp",
    "payload_digest",
    "sign_envelope",
    "verify_envelope",
]
