"""The canonical leaf encoding of an envelope (docs/formats.md, "Leaf encoding").

In the presentation language of RFC 8446 §3 (big-endian integers, vectors prefixed by
their byte length in as many bytes as the ceiling needs):

    struct {
        opaque keyid<1..2^16-1>;        /* ASCII bytes of the DSSE keyid */
        opaque sig<1..2^16-1>;          /* raw signature bytes */
    } LeafSignature;

    struct {
        uint8 version;                  /* 1 */
        opaque payload_type<1..2^8-1>;  /* ASCII bytes of payloadType */
        opaque payload<1..2^16-1>;      /* the exact signed payload bytes */
        uint8 signature_count;          /* 1..16 */
        LeafSignature signatures[signature_count];  /* ascending keyid */
    } BundleLeaf;

The last field departs from RFC 8446 (whose arrays have a fixed byte length): it is
`signature_count` consecutive LeafSignature structs. Keyids are unique in an envelope,
so sorting by keyid bytes (unsigned lexicographic, a proper prefix first) gives one
order. The whole leaf is at most 65535 bytes, the tlog-tiles entry bundle limit
(entries carry a big-endian uint16 length prefix).
"""

from __future__ import annotations

import struct

from ..merkle.hashing import leaf_hash
from .dsse import Envelope, Signature
from .errors import MalformedEnvelopeError, SizeLimitError

LEAF_VERSION = 1
MAX_LEAF_BYTES = 65535

_U16 = struct.Struct(">H")


def encode_leaf(envelope: Envelope) -> bytes:
    """The canonical leaf bytes: independent of JSON layout and signature order."""
    # Envelope.__post_init__ guarantees every field fits its length prefix and the
    # keyids are unique ASCII; the asserts guard that invariant, not the input.
    type_bytes = envelope.payload_type.encode("ascii")
    assert 1 <= len(type_bytes) <= 0xFF and 1 <= len(envelope.payload) <= 0xFFFF
    assert 1 <= len(envelope.signatures) <= 0xFF
    parts = [
        bytes((LEAF_VERSION, len(type_bytes))),
        type_bytes,
        _U16.pack(len(envelope.payload)),
        envelope.payload,
        bytes((len(envelope.signatures),)),
    ]
    size = 1 + 1 + len(type_bytes) + 2 + len(envelope.payload) + 1
    for keyid, sig in sorted((s.keyid.encode("ascii"), s.sig) for s in envelope.signatures):
        assert 1 <= len(keyid) <= 0xFFFF and 1 <= len(sig) <= 0xFFFF
        parts += (_U16.pack(len(keyid)), keyid, _U16.pack(len(sig)), sig)
        size += 4 + len(keyid) + len(sig)
    if size > MAX_LEAF_BYTES:
        raise SizeLimitError(
            f"leaf encoding: got {size} bytes, want <= {MAX_LEAF_BYTES} (tlog-tiles entry limit)",
            code="leaf_too_large",
        )
    leaf = b"".join(parts)
    assert len(leaf) == size
    return leaf


def envelope_leaf_hash(envelope: Envelope) -> bytes:
    """The RFC 6962 §2.1 leaf hash of the envelope's leaf: SHA-256(0x00 || encode_leaf)."""
    return leaf_hash(encode_leaf(envelope))


def decode_leaf(data: bytes) -> Envelope:
    """Decode leaf bytes strictly: canonical order, counts in range, no trailing data.

    The result has its signatures in leaf (ascending keyid) order, and
    `encode_leaf(decode_leaf(data)) == data`. Raises MalformedEnvelopeError with code
    `malformed_leaf`.
    """
    if len(data) > MAX_LEAF_BYTES:
        raise MalformedEnvelopeError(
            f"leaf: got {len(data)} bytes, want <= {MAX_LEAF_BYTES}", code="malformed_leaf"
        )
    reader = _Reader(data)
    version = reader.uint8("version")
    if version != LEAF_VERSION:
        raise MalformedEnvelopeError(
            f"leaf version: got {version}, want {LEAF_VERSION}", code="malformed_leaf"
        )
    type_bytes = reader.vector("payload_type", reader.uint8("payload_type length"))
    payload = reader.vector("payload", reader.uint16("payload length"))
    count = reader.uint8("signature_count")
    signatures: list[tuple[bytes, bytes]] = []
    for i in range(count):
        keyid = reader.vector(f"signatures[{i}].keyid", reader.uint16("keyid length"))
        sig = reader.vector(f"signatures[{i}].sig", reader.uint16("sig length"))
        if signatures and not signatures[-1][0] < keyid:
            raise MalformedEnvelopeError(
                f"leaf signatures[{i}]: keyid {keyid[:64]!r} does not sort after "
                f"{signatures[-1][0][:64]!r}, want strictly ascending keyids",
                code="malformed_leaf",
            )
        signatures.append((keyid, sig))
    if reader.remaining:
        raise MalformedEnvelopeError(
            f"leaf: got {reader.remaining} trailing bytes, want none", code="malformed_leaf"
        )
    try:
        # Envelope enforces the remaining field rules (ASCII tokens, non-empty and
        # bounded lengths, 1..16 signatures), the same ones parse_envelope applies.
        return Envelope(
            _ascii(type_bytes),
            payload,
            tuple(Signature(_ascii(keyid), sig) for keyid, sig in signatures),
        )
    except MalformedEnvelopeError as exc:
        raise MalformedEnvelopeError(f"leaf: {exc}", code="malformed_leaf") from None


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEnvelopeError(
            f"leaf: got non-ASCII bytes {raw[:32]!r}, want printable ASCII",
            code="malformed_leaf",
        ) from None


class _Reader:
    """Bounds-checked cursor over leaf bytes."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, name: str, n: int) -> bytes:
        if n > self.remaining:
            raise MalformedEnvelopeError(
                f"leaf {name}: got {self.remaining} bytes left, want {n}", code="malformed_leaf"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint8(self, name: str) -> int:
        return self._take(name, 1)[0]

    def uint16(self, name: str) -> int:
        value: int = _U16.unpack(self._take(name, 2))[0]
        return value

    def vector(self, name: str, length: int) -> bytes:
        return self._take(name, length)
