"""The frames between the server and its admission processes (logserver/write/admission.py).

Private to this package; both ends run the same code, so nothing here is
untrusted input, and a frame that does not parse is a bug (a loud crash).

    keys frame:    u16 count, then per key: u16 length, authority name (UTF-8),
                   u8 role (0 signer, 1 countersigner), u16 length, DER SPKI
    ready:         the byte 0x01, once, from the admission process after it
                   decoded the keys frame (before any answer frame)
    request frame: u32 length of the rest, u64 now (POSIX ms), u32 items,
                   then per item: u32 length, the submitted body
    answer frame:  u32 length of the rest, u32 items, then per item one of
                   0 admitted: u16 length, fleet_id, u64 sequence, 32-byte payload
                     digest, u8 retired (0 or 1), u32 length, leaf
                   1 refused (a BundleError): u16 length, class name, u16 length,
                     code, u32 length, message (all UTF-8)
                   2 failed (any other exception, a bug): u32 length, its repr

Answers come in order: each answer frame covers the next items of the oldest
request frame not fully answered yet (at least one, never more than it has left).
The admission process sends one answer frame per body, as soon as it is checked.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from ..bundle import (
    Admitted,
    AuthorityKey,
    AuthoritySet,
    BundleError,
    MalformedEnvelopeError,
    MalformedPayloadError,
    Role,
    SignaturePolicyError,
    SizeLimitError,
    ValidityError,
    authority_public_key,
)

ROLE_NUMBERS: dict[Role, int] = {"signer": 0, "countersigner": 1}
ERROR_CLASSES = {c.__name__: c for c in (MalformedEnvelopeError, MalformedPayloadError, SizeLimitError,
                                          SignaturePolicyError, ValidityError)}
ADMITTED, REFUSED, FAILED = 0, 1, 2
READY = b"\x01"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class AdmissionFailure(RuntimeError):
    """An admission process raised something other than a BundleError (a bug)."""


def _text16(s: str) -> bytes:
    b = s.encode()
    return _U16.pack(len(b)) + b


def encode_keys(authorities: AuthoritySet) -> bytes:
    parts = [_U16.pack(len(authorities))]
    for key in authorities.values():
        der = key.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        parts += (_text16(key.authority), bytes((ROLE_NUMBERS[key.role],)), _U16.pack(len(der)), der)
    return b"".join(parts)


def decode_keys(read: Callable[[int], bytes]) -> AuthoritySet:
    """The authority set from a keys frame; `read(n)` returns exactly n bytes."""
    roles = {v: k for k, v in ROLE_NUMBERS.items()}
    (count,) = _U16.unpack(read(2))
    keys = []
    for _ in range(count):
        (n,) = _U16.unpack(read(2))
        authority = read(n).decode()
        role = roles[read(1)[0]]
        (n,) = _U16.unpack(read(2))
        # encode_keys wrote an AuthorityKey's key: a refusal here (AuthorityConfigError,
        # a ValueError) is a bug.
        public_key = authority_public_key(load_der_public_key(read(n)))
        keys.append(AuthorityKey.from_public_key(public_key, authority, role))
    return AuthoritySet(keys)


def encode_request(now_ms: int, bodies: list[bytes]) -> bytes:
    parts = [b"", _U64.pack(now_ms), _U32.pack(len(bodies))]
    for body in bodies:
        parts += (_U32.pack(len(body)), body)
    parts[0] = _U32.pack(sum(map(len, parts)))
    return b"".join(parts)


def decode_request(frame: bytes) -> tuple[int, list[bytes]]:
    (now_ms,) = _U64.unpack_from(frame, 0)
    (items,) = _U32.unpack_from(frame, 8)
    pos, bodies = 12, []
    for _ in range(items):
        (n,) = _U32.unpack_from(frame, pos)
        bodies.append(frame[pos + 4: pos + 4 + n])
        pos += 4 + n
    if pos != len(frame):
        raise ValueError(f"request frame has {len(frame) - pos} trailing bytes")
    return now_ms, bodies


def encode_answer(results: list[Admitted | BaseException]) -> bytes:
    parts = [b"", _U32.pack(len(results))]
    for r in results:
        if isinstance(r, Admitted):
            parts += (bytes((ADMITTED,)), _text16(r.fleet_id), _U64.pack(r.sequence), r.payload_digest,
                      bytes((r.retired,)), _U32.pack(len(r.leaf)), r.leaf)
        elif isinstance(r, BundleError):
            message = str(r).encode()
            parts += (bytes((REFUSED,)), _text16(type(r).__name__), _text16(r.code), _U32.pack(len(message)),
                      message)
        else:
            text = repr(r).encode()
            parts += (bytes((FAILED,)), _U32.pack(len(text)), text)
    parts[0] = _U32.pack(sum(map(len, parts)))
    return b"".join(parts)


def decode_answer(frame: bytes) -> list[Admitted | BaseException]:
    """Each item as an Admitted, or the exception to raise for it."""
    (items,) = _U32.unpack_from(frame, 0)
    pos = 4
    out: list[Admitted | BaseException] = []

    def text16() -> str:
        nonlocal pos
        (n,) = _U16.unpack_from(frame, pos)
        pos += 2 + n
        return frame[pos - n: pos].decode()

    def blob32() -> bytes:
        nonlocal pos
        (n,) = _U32.unpack_from(frame, pos)
        pos += 4 + n
        return frame[pos - n: pos]

    for _ in range(items):
        kind = frame[pos]
        pos += 1
        if kind == ADMITTED:
            fleet_id = text16()
            (sequence,) = _U64.unpack_from(frame, pos)
            digest = frame[pos + 8: pos + 40]
            retired = frame[pos + 40] == 1
            pos += 41
            out.append(Admitted(blob32(), fleet_id, sequence, digest, retired))
        elif kind == REFUSED:
            cls, code = ERROR_CLASSES[text16()], text16()
            out.append(cls(blob32().decode(), code=code))
        elif kind == FAILED:
            out.append(AdmissionFailure(f"admission process: {blob32().decode()}"))
        else:
            raise ValueError(f"answer item kind {kind}")
    if pos != len(frame):
        raise ValueError(f"answer frame has {len(frame) - pos} trailing bytes")
    return out
