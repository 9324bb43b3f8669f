"""A signature verifier process: `python -m logserver.verify_worker`.

Started by the server (logserver/signature_verifier.py, which defines the frames).
It reads the pinned authority keys, then batches of signature checks from stdin
and answers each batch on stdout, until stdin closes. Its input comes from its
parent only, so a malformed frame is a bug: it exits, and the parent starts
another and fails what was in flight with 503.
"""
from __future__ import annotations

import signal
import struct
import sys
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_der_public_key

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _read(inp: BinaryIO, n: int) -> bytes:
    data = inp.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _load_keys(inp: BinaryIO) -> list:
    (count,) = struct.unpack(">H", _read(inp, 2))
    keys = []
    for _ in range(count):
        (n,) = struct.unpack(">H", _read(inp, 2))
        key = load_der_public_key(_read(inp, n))
        if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)):
            raise TypeError(f"authority key type {type(key).__name__}")
        keys.append(key)
    return keys


def _verify(key, message: bytes, sig: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(sig, message)
        else:
            key.verify(sig, message, _ECDSA_SHA256)
        return True
    except InvalidSignature:
        return False


def check_frame(frame: bytes, keys: list) -> bytes:
    """The answer to one batch frame (see signature_verifier.py)."""
    (items,) = struct.unpack_from(">I", frame, 0)
    pos = 4
    answer = bytearray()
    for _ in range(items):
        (n,) = struct.unpack_from(">I", frame, pos)
        message = frame[pos + 4: pos + 4 + n]
        pos += 4 + n
        count = frame[pos]
        pos += 1
        code = 0
        for i in range(count):
            key_number, sig_len = struct.unpack_from(">HH", frame, pos)
            sig = frame[pos + 4: pos + 4 + sig_len]
            pos += 4 + sig_len
            if code == 0 and not _verify(keys[key_number], message, sig):
                code = i + 1
        answer.append(code)
    if pos != len(frame):
        raise ValueError(f"frame has {len(frame) - pos} trailing bytes")
    return struct.pack(">I", items) + bytes(answer)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (closes stdin)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        keys = _load_keys(inp)
        while True:
            head = inp.read(4)
            if not head:
                return 0
            (n,) = struct.unpack(">I", head)
            out.write(check_frame(_read(inp, n), keys))
            out.flush()
    except (EOFError, BrokenPipeError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
