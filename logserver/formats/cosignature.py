"""C2SP tlog-cosignature v1.1: the two cosignature types.

Both are note signatures whose bytes (after the 4-byte key ID) are a
`timestamped_signature`: an 8-byte big-endian POSIX timestamp, at most 2^63 - 1, then
the signature ("Format").

* **Ed25519**, note signature type 0x04 (`CosignatureSigner`, `CosignatureVerifier`): a
  64-byte Ed25519 signature over

      cosignature/v1\\n
      time <timestamp>\\n
      <checkpoint body>

  ("Ed25519 signed message"). The key ID uses type byte 0x04, so the same key and name
  also used for type 0x01 signatures get a different key ID.

* **ML-DSA-44**, note signature type 0x06 (`MLDSA44CosignatureSigner`,
  `MLDSA44CosignatureVerifier`): a 2420-byte ML-DSA-44 signature (FIPS 204, pure
  ML-DSA, empty context) over the `cosigned_message` structure ("ML-DSA-44 signed
  message", `subtree_cosigned_message`):

      struct {
          uint8 label[12] = "subtree/v1\\n\\0";
          opaque cosigner_name<1..2^8-1>;
          uint64 timestamp;
          opaque log_origin<1..2^8-1>;
          uint64 start;
          uint64 end;
          uint8 hash[32];
      } cosigned_message;

  It signs a `Subtree` `[start, end)` of the log: a checkpoint is the subtree
  `[0, size)` with the checkpoint's root, cosigned at a timestamp; other subtrees
  (tlog-witness `sign-subtree`) carry the timestamp 0. The message commits to the
  cosigner's name, and it does not cover checkpoint extension lines, so, as the
  reference implementation (filippo.io/torchwood) does, we neither make nor accept an
  ML-DSA-44 cosignature of a checkpoint that has extension lines: they would ride along
  unauthenticated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from ..merkle import EMPTY_ROOT, is_valid_subtree
from ._ed25519_key import Ed25519KeySigner, Ed25519KeyVerifier
from .checkpoint import Checkpoint, parse_checkpoint
from .errors import CheckpointFormatError, CosignatureError, InvalidSignatureError, VkeyError
from .note import NoteSignature
from .strict import MAX_UINT63, clip
from .vkey import (
    SIG_TYPE_COSIGNATURE_MLDSA44,
    SIG_TYPE_COSIGNATURE_V1,
    check_key_name,
    compute_key_id,
    format_vkey,
    parse_vkey,
)

COSIGNATURE_V1_HEADER = b"cosignature/v1\n"
TIMESTAMP_SIZE = 8
COSIGNATURE_V1_SIZE = TIMESTAMP_SIZE + 64

SUBTREE_V1_LABEL = b"subtree/v1\n\x00"
"""The 12-byte label that opens the ML-DSA-44 cosigned_message (domain separation)."""
MLDSA44_PUBLIC_KEY_SIZE = 1312
MLDSA44_SIGNATURE_SIZE = 2420
MLDSA44_COSIGNATURE_SIZE = TIMESTAMP_SIZE + MLDSA44_SIGNATURE_SIZE
_MAX_UINT64 = (1 << 64) - 1


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """The message an Ed25519 cosignature signs: header line, time line, checkpoint body."""
    if not 0 <= timestamp <= MAX_UINT63:
        raise ValueError(f"timestamp: got {timestamp}, want an integer in [0, 2^63-1]")
    return COSIGNATURE_V1_HEADER + b"time %d\n" % timestamp + body


def timestamp_of(signature: bytes) -> int:
    """The timestamp of a cosignature of either type (the bytes after the key ID): an
    Ed25519 `cosignature/v1` (72 bytes) or an ML-DSA-44 `subtree/v1` (2428 bytes)."""
    if len(signature) not in (COSIGNATURE_V1_SIZE, MLDSA44_COSIGNATURE_SIZE):
        raise CosignatureError(
            f"cosignature: got {len(signature)} bytes, want {COSIGNATURE_V1_SIZE} (Ed25519) "
            f"or {MLDSA44_COSIGNATURE_SIZE} (ML-DSA-44)"
        )
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


class _TimestampingSigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign_at(self, message: bytes, timestamp: int) -> bytes: ...


class FixedTimeCosigner:
    """A `NoteSigner` cosigning with one key at one fixed timestamp (`CosignatureSigner.at`,
    `MLDSA44CosignatureSigner.at`)."""

    def __init__(self, signer: _TimestampingSigner, timestamp: int) -> None:
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


@dataclass(frozen=True)
class Subtree:
    """A subtree `[start, end)` of the log named `origin`, with its Merkle tree hash:
    what an ML-DSA-44 cosignature signs (tlog-cosignature "ML-DSA-44 signed message").

    A checkpoint is the subtree `[0, size)` whose hash is the root (`of_checkpoint`).
    Construction checks the cosigned_message's constraints: an origin of 1 to 255 bytes,
    uint64 bounds, a valid subtree (draft-ietf-plants-merkle-tree-certs §4.1), a 32-byte
    hash, and the empty tree's hash for an empty subtree. Raises `CosignatureError`.
    """

    origin: str
    start: int
    end: int
    hash: bytes

    def __post_init__(self) -> None:
        _check_opaque8(self.origin, "log origin")
        for what, value in (("start", self.start), ("end", self.end)):
            if type(value) is not int or not 0 <= value <= _MAX_UINT64:
                raise CosignatureError(f"subtree {what}: got {value!r}, want an integer in [0, 2^64-1]")
        if not is_valid_subtree(self.start, self.end):
            raise CosignatureError(
                f"subtree: got [{self.start}, {self.end}), want start <= end and start a multiple of "
                "BIT_CEIL(end - start)"
            )
        if not isinstance(self.hash, bytes) or len(self.hash) != 32:
            raise CosignatureError(f"subtree hash: got {self.hash!r:.60}, want 32 bytes")
        if self.start == self.end and self.hash != EMPTY_ROOT:
            raise CosignatureError(
                f"subtree hash of the empty [{self.start}, {self.end}): got {self.hash.hex()}, "
                f"want the empty tree's {EMPTY_ROOT.hex()}"
            )

    @classmethod
    def of_checkpoint(cls, checkpoint: Checkpoint) -> Self:
        """The subtree `[0, size)` a checkpoint stands for (its extension lines are not part of it)."""
        return cls(checkpoint.origin, 0, checkpoint.size, checkpoint.root)


def _check_opaque8(value: str, what: str) -> bytes:
    """The UTF-8 of `value`, refused unless it fits `opaque <1..2^8-1>`."""
    if not isinstance(value, str):
        raise CosignatureError(f"{what}: got {type(value).__name__}, want str")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise CosignatureError(f"{what}: got lone surrogates, want valid UTF-8") from None
    if not 1 <= len(raw) <= 255:
        raise CosignatureError(f"{what}: got {len(raw)} bytes, want 1 to 255 (opaque<1..2^8-1>)")
    return raw


def subtree_cosigned_message(cosigner_name: str, timestamp: int, subtree: Subtree) -> bytes:
    """The ML-DSA-44 signed message: the RFC 8446 §3 serialization of `cosigned_message`
    (fixed label, 1-byte length-prefixed name and origin, big-endian uint64s, hash).

    tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1, and MUST be zero when
    `start` is not zero (only a tree from index 0 can be "the largest tree observed").
    Raises `CosignatureError`.
    """
    name = _check_opaque8(cosigner_name, "cosigner name")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_UINT63:
        raise CosignatureError(f"cosignature timestamp: got {timestamp!r}, want an integer in [0, 2^63-1]")
    if subtree.start != 0 and timestamp != 0:
        raise CosignatureError(
            f"cosignature timestamp: got {timestamp} for a subtree starting at {subtree.start}, want 0"
        )
    origin = subtree.origin.encode("utf-8")
    return b"".join((
        SUBTREE_V1_LABEL,
        bytes([len(name)]), name,
        timestamp.to_bytes(8, "big"),
        bytes([len(origin)]), origin,
        subtree.start.to_bytes(8, "big"),
        subtree.end.to_bytes(8, "big"),
        subtree.hash,
    ))


def _checkpoint_subtree(message: bytes, what: str) -> Subtree:
    """The subtree of the checkpoint body `message`, for an ML-DSA-44 cosignature.
    Raises CheckpointFormatError for anything but a checkpoint without extension lines."""
    try:
        checkpoint = parse_checkpoint(message.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointFormatError(f"{what}: got invalid UTF-8, want a checkpoint body") from None
    if checkpoint.extensions:
        # The cosigned_message does not cover them: refuse rather than vouch for text no
        # signature protects (filippo.io/torchwood refuses both ways too).
        raise CheckpointFormatError(
            f"{what}: got {len(checkpoint.extensions)} extension line(s), want none "
            "(an ML-DSA-44 cosignature does not cover extension lines)"
        )
    try:
        return Subtree.of_checkpoint(checkpoint)
    except CosignatureError as exc:
        raise CheckpointFormatError(f"{what}: {exc}") from None


class MLDSA44CosignatureVerifier:
    """Verifies ML-DSA-44 `subtree/v1` cosignatures of one cosigner key (note signature
    type 0x06). As a `NoteVerifier`, `verify` checks a cosignature of a checkpoint note's
    text, at whatever timestamp it carries (0 included); `verify_subtree` checks one of
    any subtree. Build one with `from_vkey` or from a public key."""

    sig_type = SIG_TYPE_COSIGNATURE_MLDSA44
    type_label = "ML-DSA-44 cosignature"

    def __init__(self, name: str, public_key: MLDSA44PublicKey) -> None:
        check_key_name(name)
        _check_opaque8(name, "cosigner name")
        self._name = name
        self.public_key = public_key
        self.public_key_bytes = public_key.public_bytes_raw()
        self._key_id = compute_key_id(name, self.sig_type, self.public_key_bytes)

    @classmethod
    def from_public_bytes(cls, name: str, public_key: bytes) -> Self:
        """A verifier for the 1312-byte ML-DSA-44 public key `public_key` (FIPS 204 encoding)."""
        if len(public_key) != MLDSA44_PUBLIC_KEY_SIZE:
            raise VkeyError(f"ML-DSA-44 public key: got {len(public_key)} bytes, want {MLDSA44_PUBLIC_KEY_SIZE}")
        try:
            key = MLDSA44PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise VkeyError(f"ML-DSA-44 public key: {exc}") from None
        return cls(name, key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        """A verifier from a type 0x06 vkey (tlog-cosignature: "signature type 0x06 and the
        1312-byte ML-DSA-44 cosigner public key as the public key material")."""
        parsed = parse_vkey(vkey)
        if parsed.sig_type != cls.sig_type:
            raise VkeyError(
                f"vkey signature type: got 0x{parsed.sig_type:02x}, want 0x{cls.sig_type:02x} ({cls.type_label})"
            )
        try:
            return cls.from_public_bytes(parsed.name, parsed.public_key)
        except CosignatureError as exc:
            raise VkeyError(f"vkey {exc}") from None

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    @property
    def vkey(self) -> str:
        return format_vkey(self._name, self.sig_type, self.public_key_bytes)

    def _who(self) -> str:
        return f"ML-DSA-44 cosignature by {self._name}+{self._key_id.hex()}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise `InvalidSignatureError` unless `signature` (after the key ID) is this
        cosigner's cosignature of the checkpoint body `message`, i.e. of the subtree
        `[0, size)` with the checkpoint's root. A body with extension lines is refused."""
        try:
            subtree = _checkpoint_subtree(message, "cosigned checkpoint")
        except CheckpointFormatError as exc:
            raise InvalidSignatureError(f"{self._who()}: {exc}") from None
        self.verify_subtree(subtree, signature)

    def verify_subtree(self, subtree: Subtree, signature: bytes) -> None:
        """Raise `InvalidSignatureError` unless `signature` (a `timestamped_signature`, the
        bytes after the key ID) is this cosigner's cosignature of `subtree`. A subtree not
        starting at 0 must carry the timestamp 0."""
        if len(signature) != MLDSA44_COSIGNATURE_SIZE:
            raise InvalidSignatureError(
                f"{self._who()}: got {len(signature)} bytes, want {MLDSA44_COSIGNATURE_SIZE} "
                "(8-byte timestamp, 2420-byte ML-DSA-44 signature)"
            )
        timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
        try:
            message = subtree_cosigned_message(self._name, timestamp, subtree)
        except CosignatureError as exc:
            raise InvalidSignatureError(f"{self._who()}: {exc}") from None
        try:
            self.public_key.verify(signature[TIMESTAMP_SIZE:], message)
        except InvalidSignature:
            raise InvalidSignatureError(
                f"{self._who()}: ML-DSA-44 verification failed for [{subtree.start}, {subtree.end}) "
                f"of {clip(subtree.origin)} at time {timestamp}"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MLDSA44CosignatureVerifier):
            return NotImplemented
        return (self._name, self.public_key_bytes) == (other._name, other.public_key_bytes)

    def __hash__(self) -> int:
        return hash((self.sig_type, self._name, self.public_key_bytes))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name}+{self._key_id.hex()})"


class MLDSA44CosignatureSigner:
    """Makes ML-DSA-44 `subtree/v1` cosignatures with one private key (a `NoteSigner`).

    `sign` cosigns a checkpoint body at the clock's current time (seconds since the
    Epoch, truncated), `sign_at` at a given timestamp, `at` makes a fixed-time
    `NoteSigner` for `sign_note`; `sign_subtree` cosigns any subtree with the timestamp
    0. Signing a checkpoint with extension lines, or an empty tree whose root is not the
    empty tree's hash, raises `CheckpointFormatError`.
    """

    sig_type = SIG_TYPE_COSIGNATURE_MLDSA44

    def __init__(self, name: str, private_key: MLDSA44PrivateKey, clock: Callable[[], float] = time.time) -> None:
        self._private_key = private_key
        self._verifier = MLDSA44CosignatureVerifier(name, private_key.public_key())
        self._clock = clock

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def vkey(self) -> str:
        return self._verifier.vkey

    def verifier(self) -> MLDSA44CosignatureVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """Cosign the checkpoint body `message` at the clock's current time."""
        return self.sign_at(message, int(self._clock()))

    def sign_at(self, message: bytes, timestamp: int) -> bytes:
        """The `timestamped_signature` cosigning the checkpoint body `message` at `timestamp`."""
        return self._sign(_checkpoint_subtree(message, "cosigned message"), timestamp)

    def sign_subtree(self, subtree: Subtree) -> bytes:
        """The `timestamped_signature` cosigning `subtree` with the timestamp 0 (tlog-witness
        sign-subtree: "If the cosignature format supports timestamps, the timestamp MUST
        be zero")."""
        return self._sign(subtree, 0)

    def subtree_signature(self, subtree: Subtree) -> NoteSignature:
        """`sign_subtree` as a note signature line (`.line()` gives its text)."""
        return NoteSignature(self.name, self.key_id, self.sign_subtree(subtree))

    def _sign(self, subtree: Subtree, timestamp: int) -> bytes:
        message = subtree_cosigned_message(self.name, timestamp, subtree)
        return timestamp.to_bytes(TIMESTAMP_SIZE, "big") + self._private_key.sign(message)

    def at(self, timestamp: int) -> FixedTimeCosigner:
        """This key as a `NoteSigner` whose signatures all carry `timestamp`."""
        return FixedTimeCosigner(self, timestamp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}+{self.key_id.hex()})"
