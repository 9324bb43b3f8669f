"""Verifying the entries of one entry bundle (pure).

Each entry is a leaf (docs/formats.md, "Leaf encoding"): decode it, apply the
dual-signature policy (both authority signatures over the PAE, the payload schema,
a well-formed validity window) and hash it. Expiry is not judged: an entry that was
valid when logged may have expired since. Work is per bundle (256 entries) so the
caller's per-entry overhead is one function call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from hashlib import sha256

from ..bundle import AuthoritySet, BundleError, decode_leaf, verify_envelope
from .alerts import POLICY_FAILURE, Alert
from .fleets import LoggedBundle

# verify_envelope checks not_after against this time; the beginning of time disables
# the expiry test but keeps the window check (not_before < not_after).
_BEGINNING = datetime(1, 1, 1, tzinfo=timezone.utc)


@dataclass
class BundleResult:
    """Leaf hashes of the verified range, the entries that passed, and policy alerts."""

    leaf_hashes: list[bytes]
    verified: list[LoggedBundle]
    failures: list[Alert]


def verify_entries(leaves: Sequence[bytes], first_index: int, authorities: AuthoritySet) -> BundleResult:
    """Verify consecutive entries starting at log index `first_index`."""
    hashes: list[bytes] = []
    verified: list[LoggedBundle] = []
    failures: list[Alert] = []
    for offset, leaf in enumerate(leaves):
        index = first_index + offset
        h = sha256(b"\x00" + leaf).digest()  # RFC 6962 §2.1 leaf hash
        hashes.append(h)
        try:
            result = verify_envelope(decode_leaf(leaf), authorities, _BEGINNING)
        except BundleError as exc:
            failures.append(Alert(
                POLICY_FAILURE,
                f"entry {index} fails the policy: {exc}",
                {"index": index, "leaf_hash": h.hex(), "code": exc.code},
                key=f"policy:{index}",
            ))
            continue
        bundle = result.bundle
        verified.append(LoggedBundle(index, bundle.fleet_id, bundle.sequence, result.payload_digest, h))
    return BundleResult(hashes, verified, failures)
