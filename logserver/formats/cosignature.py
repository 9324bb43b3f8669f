"""C2SP tlog-cosignature, Ed25519 flavour: `cosignature/v1`, note signature type 0x04.

The signature is `timestamped_signature`: an 8-byte big-endian POSIX timestamp then a
64-byte Ed25519 signature over

    cosignature/v1\\n
    time <timestamp>\\n
    <checkpoint body>

("Ed25519 signed message"). The key ID uses type byte 0x04, so the same key and name
also used for type 0x01 signatures get a different key ID.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._ed25519_key import Ed25519KeySigner, Ed25519KeyVerifier
from .checkpoint import parse_checkpoint
from .errors import CheckpointFormatError, CosignatureError, InvalidSignatureError
from .strict import MAX_UINT63
from .vkey import SIG_TYPE_COSIGNATURE_V1

COSIGNATURE_V1_HEADER = b"cosignature/v1\n"
TIMESTAMP_SIZE = 8
COSIGNATURE_V1_SIZE = TIMESTAMP_SIZE + 64


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """The message an Ed25519 cosignature signs: header line, time line, checkpoint body."""
    if not 0 <= timestamp <= MAX_UINT63:
        raise ValueError(f"timestamp: got {timestamp}, want an integer in [0, 2^63-1]")
    return COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + body


def timestamp_of(signature: bytes) -> int:
    """The timestamp of a `cosignature/v1` signature (the bytes after the key ID)."""
    if len(signature) != COSIGNATURE_V1_SIZE:
        raise CosignatureError(f"cosignature: got {len(signature)} bytes, want {COSIGNATURE_V1_SIZE}")
    timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
    if timestamp > MAX_UINT63:
        # tlog-cosignature "Format": the timestamp MUST NOT exceed 2^63 - 1.
        raise CosignatureError(f"cosignature timestamp: got {timestamp}, want at most 2^63-1")
    return timestamp


class CosignatureVerifier(Ed25519KeyVerifier):
    """Verifies `cosignature/v1` signatures of one cosigner key (a `NoteVerifier`);
    `from_vkey` takes a type 0x04 vkey (tlog-cosignature "Format")."""

    sig_type = SIG_TYPE_COSIGNATURE_V1
    type_label = "cosignature/v1"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise `InvalidSignatureError` unless `signature` is this cosigner's
        timestamped signature of the checkpoint body `message`."""
        who = f"cosignature by {self._name}+{self._key_id.hex()}"
        try:
            timestamp = timestamp_of(signature)
        except CosignatureError as exc:
            raise InvalidSignatureError(f"{who}: {exc}") from None
        try:
            self.public_key.verify(signature[TIMESTAMP_SIZE:], cosigned_message(message, timestamp))
        except InvalidSignature:
            raise InvalidSignatureError(f"{who}: Ed25519 verification failed") from None


class CosignatureSigner(Ed25519KeySigner):
    """Produces `cosignature/v1` signatures of checkpoint bodies (a `NoteSigner`).

    `sign` stamps the current time from `clock` (seconds since the Epoch, truncated);
    `sign_at` takes the timestamp explicitly, and `at` makes a `NoteSigner` that
    stamps a fixed one (for `sign_note`).
    """

    sig_type = SIG_TYPE_COSIGNATURE_V1
    verifier_class = CosignatureVerifier
    _verifier: CosignatureVerifier  # what verifier_class builds in Ed25519KeySigner.__init__

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, private_key)
        self._clock = clock

    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """Cosign the checkpoint body `message` at the clock's current time."""
        return self.sign_at(message, int(self._clock()))

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """Cosign the checkpoint body `message` with the given POSIX timestamp.

        Refuses (`CheckpointFormatError`) anything but a valid checkpoint body: the cosigned
        message is defined only over checkpoints, and the check upholds the
        domain separation argued in `checkpoint.RESERVED_ORIGIN`.
        """
        try:
            parse_checkpoint(message.decode("utf-8"))
        except UnicodeDecodeError:
            raise CheckpointFormatError("cosigned message: got invalid UTF-8, want a checkpoint body") from None
        signed = cosigned_message(message, timestamp)
        return timestamp.to_bytes(TIMESTAMP_SIZE, "big") + self._private_key.sign(signed)

    def at(self, timestamp: int) -> FixedTimeCosigner:
        """This key as a `NoteSigner` whose signatures all carry `timestamp`."""
        return FixedTimeCosigner(self, timestamp)


class FixedTimeCosigner:
    """A `NoteSigner` cosigning with one key at one fixed timestamp (`CosignatureSigner.at`)."""

    def __init__(self, signer: CosignatureSigner, timestamp: int) -> None:
        self._signer = signer
        self.timestamp = timestamp

    @property
    def name(self) -> str:
        return self._signer.name

    @property
    def key_id(self) -> bytes:
        return self._signer.key_id

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign_at(message, self.timestamp)
