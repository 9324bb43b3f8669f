"""Interop: our ML-DSA-44 cosignature verifier against a vector published by the
reference implementation (filippo.io/torchwood; tests/testdata/pq/SOURCES.md). The
valid vector verifies; each mutation of it that the spec makes invalid is refused.
Written from tlog-cosignature v1.1's text; nothing here reuses torchwood code."""
from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from logserver.formats import (
    FormatError,
    InvalidSignatureError,
    MLDSA44CosignatureVerifier,
    Subtree,
    VerificationError,
    compute_key_id,
    format_vkey,
    open_note,
    parse_add_checkpoint_request,
    parse_note,
    parse_vkey,
    timestamp_of,
    verifier_from_vkey,
)
from logserver.formats.note import Note, NoteSignature
from pq_vectors import litewitness_vector

V = litewitness_vector()
ORIGIN = "example.com/mldsa-log"
# gentest/mldsa.go: the root is tlog.RecordHash("testonly"), SHA-256(0x00 || data).
ROOT = hashlib.sha256(b"\x00testonly").digest()


def note_and_signature() -> tuple[Note, NoteSignature]:
    note = parse_note(parse_add_checkpoint_request(V.request).checkpoint)
    [signature] = note.signatures
    return note, signature


def test_the_vkey_is_the_seed_s_key_under_type_0x06():
    vkey = parse_vkey(V.log_vkey)
    assert (vkey.name, vkey.sig_type, len(vkey.public_key)) == (ORIGIN, 0x06, 1312)
    derived = MLDSA44PrivateKey.from_seed_bytes(V.seed).public_key().public_bytes_raw()
    assert vkey.public_key == derived
    assert vkey.key_id == compute_key_id(ORIGIN, 0x06, derived) == bytes.fromhex("b5df45c5")
    verifier = verifier_from_vkey(V.log_vkey)
    assert isinstance(verifier, MLDSA44CosignatureVerifier)
    assert verifier.vkey == V.log_vkey  # and prints back byte for byte


def test_the_published_checkpoint_signature_verifies():
    verifier = MLDSA44CosignatureVerifier.from_vkey(V.log_vkey)
    opened = open_note(parse_add_checkpoint_request(V.request).checkpoint, [verifier])
    assert opened.verifiers == (verifier,)
    note, signature = note_and_signature()
    assert note.text == f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n"
    assert timestamp_of(signature.signature) == 0  # made with SignSubtree: timestamp 0
    # The same signature is the cosignature of the subtree [0, 1) with that hash.
    verifier.verify_subtree(Subtree(ORIGIN, 0, 1, ROOT), signature.signature)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1:]


@pytest.mark.parametrize("mutation", [
    "signature byte", "timestamp", "size", "root", "origin", "extension line", "truncated", "long",
])
def test_mutations_are_refused(mutation):
    verifier = MLDSA44CosignatureVerifier.from_vkey(V.log_vkey)
    note, sig = note_and_signature()
    text, raw = note.text, sig.signature
    if mutation == "signature byte":
        raw = flip(raw, 100)
    elif mutation == "timestamp":
        raw = (1).to_bytes(8, "big") + raw[8:]
    elif mutation == "size":
        text = text.replace("\n1\n", "\n2\n")
    elif mutation == "root":
        text = text.replace(base64.b64encode(ROOT).decode(), base64.b64encode(flip(ROOT, 0)).decode())
    elif mutation == "origin":
        text = text.replace(ORIGIN, ORIGIN + "2")
    elif mutation == "extension line":
        text += "extension\n"  # not covered by the signature: refused, not ignored
    elif mutation == "truncated":
        raw = raw[:-1]
    elif mutation == "long":
        raw = raw + b"\x00"
    with pytest.raises(InvalidSignatureError):
        verifier.verify(text.encode(), raw)


def test_the_subtree_signature_binds_range_hash_and_origin():
    verifier = MLDSA44CosignatureVerifier.from_vkey(V.log_vkey)
    _, sig = note_and_signature()
    for subtree in (Subtree(ORIGIN, 0, 2, ROOT), Subtree(ORIGIN, 1, 2, ROOT),
                    Subtree(ORIGIN, 0, 1, flip(ROOT, 5)), Subtree("example.com/other", 0, 1, ROOT)):
        with pytest.raises(VerificationError):
            verifier.verify_subtree(subtree, sig.signature)


def test_another_name_for_the_same_key_is_another_key():
    """The ML-DSA-44 message commits to the cosigner name: the same public key under
    another name neither shares the key ID nor verifies the signature."""
    vkey = parse_vkey(V.log_vkey)
    other = MLDSA44CosignatureVerifier.from_public_bytes("example.com/renamed", vkey.public_key)
    assert other.key_id != vkey.key_id
    note, sig = note_and_signature()
    with pytest.raises(InvalidSignatureError):
        other.verify(note.text.encode(), sig.signature)


@pytest.mark.parametrize("vkey", [
    # The key material one byte short, and the type byte claimed as Ed25519 cosignature.
    pytest.param("short", id="short key"),
    pytest.param("type 0x04", id="wrong type"),
])
def test_broken_vkeys_are_refused(vkey):
    parsed = parse_vkey(V.log_vkey)
    text = (format_vkey(parsed.name, 0x06, parsed.public_key[:-1]) if vkey == "short"
            else format_vkey(parsed.name, 0x04, parsed.public_key))
    with pytest.raises(FormatError):
        MLDSA44CosignatureVerifier.from_vkey(text)
    with pytest.raises(FormatError):
        verifier_from_vkey(text)
