"""Interop: the witness's cosignatures checked by a tiny verifier written directly from
the C2SP tlog-cosignature and signed-note texts, sharing no code with logserver.formats.

Spec facts used (tlog-cosignature, "Format" and "Ed25519 signed message"):
  * a signature line is "— <key name> base64(32-bit key ID || signature)";
  * the Ed25519 key ID is SHA-256(<name> || "\\n" || 0x04 || 32-byte public key)[:4];
  * signature = timestamped_signature: u64 big-endian timestamp || 64-byte Ed25519 signature;
  * the signed message is "cosignature/v1\\n", "time <decimal timestamp>\\n", then the
    checkpoint note body including its final newline;
  * a vkey is <name>+<hex key ID>+base64(0x04 || public key) (signed-note "verifier keys").
"""
from __future__ import annotations

import base64
import hashlib
import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from witness_harness import ScriptedLog, start_witness, write_witness_config


def spec_parse_vkey(vkey: str) -> tuple[str, bytes]:
    name, key_id_hex, data_b64 = vkey.split("+", 2)
    data = base64.b64decode(data_b64, validate=True)
    assert data[0] == 0x04 and len(data) == 33, "an Ed25519 cosignature/v1 vkey"
    public_key = data[1:]
    assert spec_key_id(name, public_key).hex() == key_id_hex
    return name, public_key


def spec_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x04" + public_key).digest()[:4]


def spec_verify_cosignatures(vkey: str, note_body: str, response: str) -> list[int]:
    """Verify every line of `response` by the vkey's cosigner over `note_body`; return
    the timestamps. Raises AssertionError / InvalidSignature on any failure."""
    name, public_key = spec_parse_vkey(vkey)
    assert response.endswith("\n")
    stamps = []
    for line in response[:-1].split("\n"):
        assert line.startswith("\u2014 "), line
        line_name, b64 = line[2:].split(" ")
        assert line_name == name
        raw = base64.b64decode(b64, validate=True)
        assert raw[:4] == spec_key_id(name, public_key)
        sig = raw[4:]
        assert len(sig) == 8 + 64
        (timestamp,) = struct.unpack(">Q", sig[:8])
        assert timestamp <= 2**63 - 1
        message = b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + note_body.encode()
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig[8:], message)
        stamps.append(timestamp)
    return stamps


def note_body_of(note: str) -> str:
    return note[: note.rindex("\n\n") + 1]


@pytest.fixture(scope="module")
async def setup(tmp_path_factory, database_url):
    log = ScriptedLog("interop.example/log")
    w = await start_witness(write_witness_config(tmp_path_factory.mktemp("wi"), "interop.example/witness",
                                                 database_url, [log.vkey]))
    yield log, w
    await w.close()


async def test_cosignatures_verify_from_the_spec_text(setup):
    log, w = setup
    old = 0
    for size in (1, 2, 7, 300):
        log.append(size - len(log.leaves))
        before = int(time.time())
        status, _, body = await w.add_checkpoint(log.request(old, size))
        assert status == 200, body
        stamps = spec_verify_cosignatures(w.vkey, note_body_of(log.checkpoint(size)), body)
        assert stamps and all(before <= t <= int(time.time()) for t in stamps)
        old = size


async def test_the_spec_verifier_rejects_a_cosignature_over_another_checkpoint(setup):
    log, w = setup
    size = len(log.leaves)
    status, _, body = await w.add_checkpoint(log.request(size, size))
    assert status == 200, body
    other_body = note_body_of(log.checkpoint(size - 1))
    from cryptography.exceptions import InvalidSignature
    with pytest.raises(InvalidSignature):
        spec_verify_cosignatures(w.vkey, other_body, body)


async def test_status_publishes_the_vkey_the_spec_verifier_accepts(setup):
    _log, w = setup
    status = await w.get_json("/status")
    assert status["vkey"] == w.vkey
    name, public_key = spec_parse_vkey(status["vkey"])
    assert name == "interop.example/witness" and len(public_key) == 32
