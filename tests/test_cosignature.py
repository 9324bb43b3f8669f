"""C2SP tlog-cosignature, Ed25519 cosignature/v1 (signature type 0x04)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from logserver.formats import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Checkpoint,
    CheckpointFormatError,
    CosignatureError,
    CosignatureSigner,
    CosignatureVerifier,
    InvalidSignatureError,
    NoteSignature,
    VkeyError,
    cosigned_message,
    format_vkey,
    log_signers,
    log_verifiers,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
    timestamp_of,
    verifier_from_vkey,
)
from logserver.formats.note import Ed25519NoteVerifier

# The example of C2SP tlog-cosignature: a checkpoint with a log signature and a witness
# cosignature. The spec's "Ed25519 signed message" example shows the same checkpoint
# cosigned at "time 1679315147", which is the timestamp inside the example cosignature.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY + "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

WITNESS = "witness.example/w1"
SEED = bytes(range(32))
# Pinned outputs of our implementation for SEED (stability vectors).
PINNED_VKEY = "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
PINNED_SIGNATURE_B64 = (
    "519lMgAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ=="
)


def private(seed: bytes = SEED) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


# --- An independent implementation, straight from the spec text ---------------------


def reference_key_id(name: str, public_key: bytes) -> bytes:
    # "SHA-256(<name> || "\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]"
    return hashlib.sha256(name.encode() + b"\n\x04" + public_key).digest()[:4]


def reference_cosign(key: Ed25519PrivateKey, body: str, timestamp: int) -> bytes:
    # timestamped_signature: u64 big-endian timestamp, then Ed25519 over the header
    # line, the time line and the checkpoint body.
    message = ("cosignature/v1\n" + f"time {timestamp}\n" + body).encode()
    return timestamp.to_bytes(8, "big") + key.sign(message)


def reference_verify(public_key: bytes, body: str, signature: bytes) -> int:
    timestamp = int.from_bytes(signature[:8], "big")
    message = ("cosignature/v1\n" + f"time {timestamp}\n" + body).encode()
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature[8:], message)
    return timestamp


# --- Tests -------------------------------------------------------------------------------


def test_spec_example_cosignature_fields():
    note = parse_note(SPEC_NOTE)
    log_sig, witness_sig = note.signatures
    assert witness_sig.name == "witness.example.com/w1"
    assert witness_sig.key_id == bytes.fromhex("8d66cf3f")
    assert len(witness_sig.signature) == 72
    assert timestamp_of(witness_sig.signature) == 1679315147
    assert len(log_sig.signature) == 64


def test_cosigned_message_matches_spec_example():
    assert cosigned_message(SPEC_BODY.encode(), 1679315147) == SPEC_MESSAGE.encode()


def test_known_answer_and_reference_implementation():
    signer = CosignatureSigner(WITNESS, private())
    public_key = private().public_key().public_bytes_raw()
    assert signer.vkey == PINNED_VKEY
    assert signer.vkey == format_vkey(WITNESS, SIG_TYPE_COSIGNATURE_V1, public_key)
    assert signer.key_id == reference_key_id(WITNESS, public_key)
    signature = signer.sign_at(SPEC_BODY.encode(), 1679315147)
    assert base64.b64encode(signer.key_id + signature).decode() == PINNED_SIGNATURE_B64
    # Ed25519 is deterministic: the reference produces the very same bytes...
    assert signature == reference_cosign(private(), SPEC_BODY, 1679315147)
    # ...and verifies ours.
    assert reference_verify(public_key, SPEC_BODY, signature) == 1679315147


def test_verifier_accepts_reference_cosignature_in_a_note():
    key = private(b"\x05" * 32)
    public_key = key.public_key().public_bytes_raw()
    line = NoteSignature(WITNESS, reference_key_id(WITNESS, public_key), reference_cosign(key, SPEC_BODY, 42))
    verifier = CosignatureVerifier.from_vkey(format_vkey(WITNESS, 0x04, public_key))
    opened = open_note(SPEC_BODY + "\n" + line.line(), [verifier])
    assert opened.verified == (line,)
    assert timestamp_of(opened.signature_by(verifier).signature) == 42


def test_signer_uses_clock_and_verifier_round_trips():
    signer = CosignatureSigner(WITNESS, private(), clock=lambda: 1_700_000_000.9)
    note = sign_note(SPEC_BODY, [signer])
    opened = open_note(note, [signer.verifier()])
    assert timestamp_of(opened.verified[0].signature) == 1_700_000_000
    assert opened.verifiers == (signer.verifier(),)


@pytest.mark.parametrize("timestamp", [0, 1, 2**63 - 1])
def test_timestamp_bounds_accepted(timestamp):
    signer = CosignatureSigner(WITNESS, private())
    signature = signer.sign_at(SPEC_BODY.encode(), timestamp)
    assert timestamp_of(signature) == timestamp
    signer.verifier().verify(SPEC_BODY.encode(), signature)


@pytest.mark.parametrize("timestamp", [-1, 2**63])
def test_signer_rejects_out_of_range_timestamps(timestamp):
    with pytest.raises(ValueError):
        CosignatureSigner(WITNESS, private()).sign_at(SPEC_BODY.encode(), timestamp)


def test_timestamp_of_rejects_malformed():
    with pytest.raises(CosignatureError, match="want 72"):
        timestamp_of(bytes(64))
    with pytest.raises(CosignatureError, match="want 72"):
        timestamp_of(bytes(73))
    with pytest.raises(CosignatureError, match="2\\^63-1"):
        timestamp_of(b"\x80" + bytes(71))


def test_verifier_rejects_bad_cosignatures():
    signer = CosignatureSigner(WITNESS, private())
    verifier = signer.verifier()
    body = SPEC_BODY.encode()
    good = signer.sign_at(body, 1000)
    changed_time = (1001).to_bytes(8, "big") + good[8:]
    # Same Ed25519 key and message but with the top bit of the timestamp set: > 2^63-1.
    huge = reference_cosign(private(), SPEC_BODY, 2**63)
    for bad in [changed_time, good[:-1], good + b"\0", huge, good[:8] + bytes(64)]:
        with pytest.raises(InvalidSignatureError):
            verifier.verify(body, bad)
    with pytest.raises(InvalidSignatureError):
        verifier.verify(body.replace(b"20852163", b"20852164"), good)


def test_signer_only_cosigns_checkpoints():
    signer = CosignatureSigner(WITNESS, private())
    reserved_origin = SPEC_BODY.replace("example.com/behind-the-sofa", "cosignature/v1").encode()
    for message in [b"not a checkpoint\n", b"\xff\n", reserved_origin]:
        with pytest.raises(CheckpointFormatError):
            signer.sign_at(message, 1)


def test_vkey_types_are_checked():
    public_key = private().public_key().public_bytes_raw()
    ed_vkey = format_vkey(WITNESS, SIG_TYPE_ED25519, public_key)
    with pytest.raises(VkeyError, match="want 0x04"):
        CosignatureVerifier.from_vkey(ed_vkey)
    with pytest.raises(VkeyError, match="want 32"):
        CosignatureVerifier.from_vkey(format_vkey(WITNESS, SIG_TYPE_COSIGNATURE_V1, public_key + b"\0"))
    assert isinstance(verifier_from_vkey(PINNED_VKEY), CosignatureVerifier)
    assert isinstance(verifier_from_vkey(ed_vkey), Ed25519NoteVerifier)
    with pytest.raises(VkeyError, match="want one of 0x04"):
        verifier_from_vkey(ed_vkey, {SIG_TYPE_COSIGNATURE_V1})
    with pytest.raises(VkeyError):
        verifier_from_vkey(format_vkey(WITNESS, 0x02, public_key))


def test_log_signs_each_checkpoint_twice_with_one_key():
    # docs/architecture.md "Log signatures": type 0x01 and type 0x04 lines from one key.
    origin = "example.com/log"
    checkpoint = Checkpoint(origin, 10, bytes(32))
    plain, stamped = log_signers(origin, private(), clock=lambda: 1234)
    note = sign_checkpoint(checkpoint, [plain, stamped])
    ed_verifier, cosig_verifier = log_verifiers(origin, private().public_key())
    assert ed_verifier.key_id != cosig_verifier.key_id
    got, opened = open_checkpoint(note, [ed_verifier, cosig_verifier])
    assert got == checkpoint
    assert len(opened.verified) == 2
    assert timestamp_of(opened.signature_by(cosig_verifier).signature) == 1234
    # A client pinning only the 0x01 key ignores the 0x04 line, and vice versa.
    assert open_checkpoint(note, [ed_verifier])[1].verifiers == (ed_verifier,)
    assert open_checkpoint(note, [cosig_verifier])[1].verifiers == (cosig_verifier,)


def test_plain_and_timestamped_signatures_do_not_substitute():
    origin = "example.com/log"
    body = Checkpoint(origin, 10, bytes(32)).body().encode()
    plain, stamped = log_signers(origin, private(), clock=lambda: 1234)
    ed_verifier, cosig_verifier = log_verifiers(origin, private().public_key())
    # A 0x01 signature presented under the 0x04 key ID, with any 8-byte prefix, fails.
    with pytest.raises(InvalidSignatureError):
        cosig_verifier.verify(body, (1234).to_bytes(8, "big") + plain.sign(body))
    # The 0x04 signature's Ed25519 part is over a different message than the body.
    with pytest.raises(InvalidSignatureError):
        ed_verifier.verify(body, stamped.sign(body)[8:])


def test_fixed_time_cosigner_signs_like_sign_at():
    signer = CosignatureSigner(WITNESS, private(), clock=lambda: 5)
    fixed = signer.at(1679315147)
    assert (fixed.name, fixed.key_id) == (signer.name, signer.key_id)
    note = sign_note(SPEC_BODY, [fixed])
    assert parse_note(note).signatures[0].signature == signer.sign_at(SPEC_BODY.encode(), 1679315147)
    assert signer.sign(SPEC_BODY.encode())[:8] == (5).to_bytes(8, "big")  # the clock is untouched


def test_log_key_stamps_the_signing_second_after_its_plain_signature():
    from logserver.keys.log_key import LogKey

    key = LogKey("example.com/log", private())
    note = key.sign_checkpoint(10, bytes(32), 1_700_000_123_999)
    plain, stamp = parse_note(note).signatures
    ed_verifier, cosig_verifier = key.verifiers()
    assert (plain.key_id, stamp.key_id) == (ed_verifier.key_id, cosig_verifier.key_id)
    assert key.timestamp_vkey == cosig_verifier.vkey
    _, opened = open_checkpoint(note, key.verifiers())
    assert timestamp_of(opened.signature_by(cosig_verifier).signature) == 1_700_000_123
