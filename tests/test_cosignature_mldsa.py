"""ML-DSA-44 `subtree/v1` cosignatures (tlog-cosignature v1.1, type 0x06): the signed
message built independently here from the spec's struct, signing and verifying of
checkpoints and subtrees, every refusal, and the tlog-policy forms. The published
vector is in test_pq_interop.py."""
from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from logserver.formats import (
    Checkpoint,
    CheckpointFormatError,
    CosignatureError,
    CosignatureSigner,
    InvalidSignatureError,
    MLDSA44CosignatureSigner,
    MLDSA44CosignatureVerifier,
    PolicyFormatError,
    Subtree,
    open_note,
    parse_policy,
    sign_note,
    subtree_cosigned_message,
    timestamp_of,
)
from logserver.formats.keys import log_signers
from logserver.merkle import EMPTY_ROOT

NAME = "witness.example/pq"
ROOT = bytes(range(32))
CHECKPOINT = Checkpoint("example.com/log", 42, ROOT)
BODY = CHECKPOINT.body().encode()
KEY = MLDSA44PrivateKey.from_seed_bytes(bytes(32))


def spec_message(name: str, timestamp: int, origin: str, start: int, end: int, hash_: bytes) -> bytes:
    """cosigned_message as the spec's RFC 8446 struct reads, written out with struct."""
    n, o = name.encode(), origin.encode()
    return (b"subtree/v1\n\0" + struct.pack("B", len(n)) + n + struct.pack(">Q", timestamp)
            + struct.pack("B", len(o)) + o + struct.pack(">QQ", start, end) + hash_)


def signer(clock=lambda: 1_700_000_000.5) -> MLDSA44CosignatureSigner:
    return MLDSA44CosignatureSigner(NAME, KEY, clock)


def test_message_layout_matches_the_struct():
    subtree = Subtree("example.com/log", 8, 13, ROOT)
    assert subtree_cosigned_message(NAME, 0, subtree) == spec_message(NAME, 0, "example.com/log", 8, 13, ROOT)
    whole = Subtree.of_checkpoint(CHECKPOINT)
    assert subtree_cosigned_message(NAME, 7, whole) == spec_message(NAME, 7, "example.com/log", 0, 42, ROOT)
    assert len(b"subtree/v1\n\0") == 12


def test_checkpoint_cosignature_round_trip_and_note():
    s = signer()
    sig = s.sign(BODY)
    assert len(sig) == 8 + 2420 and timestamp_of(sig) == 1_700_000_000
    s.verifier().verify(BODY, sig)
    # The verifier from the vkey is equal and works as a NoteVerifier in open_note,
    # beside an Ed25519 cosignature of another key.
    v = MLDSA44CosignatureVerifier.from_vkey(s.vkey)
    assert v == s.verifier() and hash(v) == hash(s.verifier())
    assert s.vkey.split("+")[2].startswith(base64.b64encode(b"\x06").decode()[:1])
    ed = CosignatureSigner("witness.example/ed", Ed25519PrivateKey.generate(), lambda: 1_700_000_001)
    note = sign_note(CHECKPOINT.body(), [s.at(5), ed])
    opened = open_note(note, [v, ed.verifier()])
    assert [timestamp_of(sig.signature) for sig in opened.verified] == [5, 1_700_000_001]


def test_verification_refuses_what_the_signature_does_not_cover():
    s = signer()
    sig = s.sign_at(BODY, 9)
    v = s.verifier()
    for body in (Checkpoint("example.com/log", 43, ROOT).body(), Checkpoint("example.com/lag", 42, ROOT).body(),
                 Checkpoint("example.com/log", 42, ROOT, ("ext",)).body(), "not a checkpoint\n"):
        with pytest.raises(InvalidSignatureError):
            v.verify(body.encode(), sig)
    with pytest.raises(InvalidSignatureError, match="want 2428"):
        v.verify(BODY, sig[:-1])
    other = MLDSA44CosignatureSigner("witness.example/other", KEY).verifier()
    with pytest.raises(InvalidSignatureError):  # same key, another name: the name is signed
        other.verify(BODY, sig)


def test_signing_refuses_extension_lines_and_a_bad_empty_tree():
    s = signer()
    with pytest.raises(CheckpointFormatError, match="extension"):
        s.sign(Checkpoint("example.com/log", 42, ROOT, ("ext",)).body().encode())
    with pytest.raises(CheckpointFormatError, match="empty"):
        s.sign(Checkpoint("example.com/log", 0, ROOT).body().encode())
    empty = Checkpoint("example.com/log", 0, EMPTY_ROOT).body().encode()
    s.verifier().verify(empty, s.sign(empty))
    with pytest.raises(CheckpointFormatError):
        s.sign(b"\xff\n")


def test_subtree_cosignatures_have_timestamp_zero():
    s = signer()
    subtree = Subtree("example.com/log", 8, 13, ROOT)
    line = s.subtree_signature(subtree)
    assert line.key_id == s.key_id and timestamp_of(line.signature) == 0
    s.verifier().verify_subtree(subtree, line.signature)
    # A non-zero timestamp with a non-zero start is refused by the message builder, so a
    # forged blob claiming one never verifies.
    forged = (1).to_bytes(8, "big") + line.signature[8:]
    with pytest.raises(InvalidSignatureError, match="want 0"):
        s.verifier().verify_subtree(subtree, forged)
    with pytest.raises(CosignatureError, match="want 0"):
        subtree_cosigned_message(NAME, 1, subtree)


@pytest.mark.parametrize(("args", "match"), [
    (("example.com/log", 2, 6, ROOT), "BIT_CEIL"),
    (("example.com/log", 5, 3, ROOT), "BIT_CEIL"),
    (("example.com/log", 5, 5, ROOT), "empty"),
    (("example.com/log", 0, 1 << 64, ROOT), "2\\^64-1"),
    (("example.com/log", 0, 1, b"short"), "32 bytes"),
    (("", 0, 1, ROOT), "1 to 255"),
    (("x" * 256, 0, 1, ROOT), "1 to 255"),
])
def test_subtree_constraints(args, match):
    with pytest.raises(CosignatureError, match=match):
        Subtree(*args)


def test_names_longer_than_255_bytes_cannot_cosign():
    with pytest.raises(CosignatureError, match="1 to 255"):
        MLDSA44CosignatureSigner("w" * 256, KEY)


def test_timestamp_of_both_types():
    ed = CosignatureSigner("witness.example/ed", Ed25519PrivateKey.generate())
    assert timestamp_of(ed.sign_at(BODY, 3)) == 3
    assert timestamp_of(signer().sign_at(BODY, 4)) == 4
    with pytest.raises(CosignatureError, match=r"72 .* or 2428"):
        timestamp_of(bytes(100))
    with pytest.raises(CosignatureError, match="2\\^63-1"):
        timestamp_of(b"\xff" * 8 + bytes(2420))


def test_policy_accepts_ml_dsa_44_vkeys_for_witnesses_and_logs():
    log_ed, _ = log_signers("example.com/log", Ed25519PrivateKey.generate())
    log_pq = MLDSA44CosignatureSigner("example.com/log", MLDSA44PrivateKey.generate())
    w_pq = signer()
    w_ed = CosignatureSigner("witness.example/ed", Ed25519PrivateKey.generate())
    policy = parse_policy(
        f"log {log_ed.vkey}\nlog {log_pq.vkey}\nwitness pq {w_pq.vkey}\nwitness ed {w_ed.vkey}\n"
        "group both all pq ed\nquorum both\n"
    )
    assert isinstance(policy.witnesses["pq"].verifier, MLDSA44CosignatureVerifier)
    assert len(policy.logs["example.com/log"]) == 2
    note = sign_note(CHECKPOINT.body(), [log_pq, w_pq, w_ed])
    checkpoint, _, witnessed = policy.verify_checkpoint(note)
    assert checkpoint == CHECKPOINT and witnessed == {"pq", "ed"}
    # Signed by the log's ML-DSA-44 key alone, the log requirement is met too.
    policy.verify_checkpoint(sign_note(CHECKPOINT.body(), [log_pq.at(0), w_pq, w_ed]))


def test_policy_refuses_a_witness_key_of_a_log_type_and_duplicates():
    log_ed, _ = log_signers("example.com/log", Ed25519PrivateKey.generate())
    w_pq = signer()
    with pytest.raises(PolicyFormatError, match="want one of 0x04, 0x06"):
        parse_policy(f"witness w {log_ed.vkey}\nquorum w\n")
    renamed = MLDSA44CosignatureSigner("witness.example/renamed", KEY)
    with pytest.raises(PolicyFormatError, match="duplicate public key"):
        parse_policy(f"witness a {w_pq.vkey}\nwitness b {renamed.vkey}\nquorum a\n")
