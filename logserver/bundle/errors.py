"""Typed errors of the bundle layer.

Every rejection of untrusted input raises a `BundleError` subclass carrying a short
snake_case `code` (the machine-readable part of an HTTP error body) and an
`http_status` hint. The full code list is documented in docs/formats.md
("Signature policy", "Error codes"); `ALL_CODES` is the single source of truth.

Misconfiguration of the authority keys is not untrusted input: it raises
`AuthorityConfigError`, which deliberately is *not* a `BundleError` so that the HTTP
layer can never turn an operator mistake into a 4xx response.
"""

from __future__ import annotations

from typing import ClassVar


class BundleError(ValueError):
    """Base class: an envelope, payload or leaf was rejected."""

    http_status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bundle_error"
    codes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        chosen = self.default_code if code is None else code
        if chosen not in self.codes:
            raise AssertionError(f"{type(self).__name__} has no error code {chosen!r}")
        self.code: str = chosen


class MalformedEnvelopeError(BundleError):
    """The envelope (or a leaf) is not well-formed: HTTP 400."""

    http_status = 400
    default_code = "malformed_envelope"
    codes = frozenset(
        {"malformed_envelope", "too_many_signatures", "duplicate_signature", "malformed_leaf"}
    )


# Payload refusals with a code of their own (docs/formats.md, "Fleet keys"). They are
# MalformedPayloadError codes, not new classes: the admission processes send a refusal
# to the server by class name (write/admission_wire.py), so a class unknown there
# would turn a refusal into a crash.
PAYLOAD_KEY_CODES: frozenset[str] = frozenset(
    {
        "weak_fleet_key",  # a degenerate, small-order or non-canonical fleet key
        "duplicate_fleet_key",  # one public key under two key_ids
        "reserved_fleet_id",  # fleet_id "." or "..", which no URL path can name
    }
)


class MalformedPayloadError(MalformedEnvelopeError):
    """The (signed) payload does not follow the fleet bundle schema: HTTP 400."""

    default_code = "malformed_payload"
    codes = frozenset({"malformed_payload"}) | PAYLOAD_KEY_CODES


class SizeLimitError(MalformedEnvelopeError):
    """An envelope or its leaf encoding exceeds a size bound: HTTP 413."""

    http_status = 413
    default_code = "envelope_too_large"
    codes = frozenset({"envelope_too_large", "leaf_too_large"})


class SignaturePolicyError(BundleError):
    """The envelope is well-formed but the dual-signature policy refuses it: HTTP 422."""

    http_status = 422
    default_code = "invalid_signature"
    codes = frozenset(
        {
            "unsupported_payload_type",
            "signer_signature_missing",
            "countersigner_signature_missing",
            "invalid_signature",
        }
    )


class ValidityError(BundleError):
    """The bundle's validity window is inverted or already over: HTTP 422."""

    http_status = 422
    default_code = "expired"
    codes = frozenset({"invalid_validity_window", "expired"})


class AuthorityConfigError(ValueError):
    """An authority key or authority set is unusable (operator error, not client input)."""


ALL_CODES: frozenset[str] = frozenset().union(
    *(
        cls.codes
        for cls in (
            MalformedEnvelopeError,
            MalformedPayloadError,
            SizeLimitError,
            SignaturePolicyError,
            ValidityError,
        )
    )
)
