"""Everything the log checks about a submitted body before sequencing it, in one call.

`admit` is pure CPU work on untrusted bytes (strict parsing, the dual-signature
policy with its two signature checks, the payload schema and validity window, the
leaf encoding), so the server runs it in helper processes (logserver/write/admission.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .authority import AuthoritySet
from .dsse import parse_envelope
from .leaf import encode_leaf
from .payload import RETIRED
from .policy import verify_envelope


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the sequencer needs of an accepted envelope."""

    leaf: bytes
    fleet_id: str
    sequence: int
    payload_digest: bytes
    retired: bool = False  # the payload's status is "retired": the fleet's last bundle


def admit(body: bytes, authorities: AuthoritySet, now: datetime) -> Admitted:
    """Parse and check a submitted body; raise a BundleError subclass on refusal."""
    envelope = parse_envelope(body)
    verified = verify_envelope(envelope, authorities, now)
    leaf = encode_leaf(envelope)
    return Admitted(leaf, verified.bundle.fleet_id, verified.bundle.sequence, verified.payload_digest,
                    verified.bundle.status == RETIRED)
