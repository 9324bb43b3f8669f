"""Typed errors of the wire-format layer.

Two families: `FormatError` (a `ValueError`) for input that is not in the strict
canonical form of its format, and `VerificationError` for well-formed input whose
signatures, or quorum of signatures, do not check out. The HTTP layer maps the first
to 400 and the second to 403 (or whatever the protocol at hand prescribes).
"""

from __future__ import annotations

from typing import Literal


class FormatError(ValueError):
    """Base class: malformed input for one of the formats of logserver.formats."""


class NoteError(FormatError):
    """A malformed signed note, signature line or key name (C2SP signed-note)."""


class VkeyError(FormatError):
    """A malformed verifier key (vkey) or one of a signature type we cannot use here."""


class CheckpointFormatError(FormatError):
    """A malformed checkpoint body (C2SP tlog-checkpoint)."""


class CosignatureError(FormatError):
    """A malformed timestamped signature (C2SP tlog-cosignature)."""


class TlogProofError(FormatError):
    """A malformed proof file (C2SP tlog-proof@v1)."""


class PolicyFormatError(FormatError):
    """A malformed or inconsistent policy file (C2SP tlog-policy)."""


class ReceiptError(FormatError):
    """A malformed receipt (docs/formats.md, "Receipts and tlog-proof").

    `part` is what is wrong: the receipt's JSON ("receipt"), its checkpoint
    ("checkpoint") or its inclusion claim, index and proof hashes ("inclusion").
    `disagreement` is True when both halves, the JSON fields and the tlog-proof text,
    are well-formed but say different things.
    """

    def __init__(
        self, message: str, *, part: Literal["receipt", "checkpoint", "inclusion"] = "receipt",
        disagreement: bool = False,
    ) -> None:
        super().__init__(message)
        self.part = part
        self.disagreement = disagreement


class FleetHeadFormatError(FormatError):
    """A malformed fleet-head proof (docs/fleet-heads.md, "The fleet-head proof")."""


class WitnessRequestError(FormatError):
    """A malformed add-checkpoint request or size body (C2SP tlog-witness)."""


class VerificationError(Exception):
    """Base class: well-formed input whose signatures do not verify."""


class InvalidSignatureError(VerificationError):
    """A signature by a known key (matching name and key ID) does not verify."""


class UnverifiedNoteError(VerificationError):
    """No signature of the note is from a known key and verifies."""


class UnknownOriginError(VerificationError):
    """A checkpoint from a log (origin) the policy does not list."""


class QuorumNotMetError(VerificationError):
    """The verified cosignatures do not satisfy the policy's quorum."""
