"""C2SP tlog-witness bodies: add-checkpoint requests and text/x.tlog.size."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.formats import (
    AddCheckpointRequest,
    Checkpoint,
    CosignatureError,
    Ed25519NoteSigner,
    WitnessRequestError,
    format_tlog_size,
    open_checkpoint,
    parse_add_checkpoint_request,
    parse_signature_lines,
    parse_tlog_size,
    sign_checkpoint,
    timestamp_of,
)

# The example request and response bodies of C2SP tlog-witness "add-checkpoint".
SPEC_CHECKPOINT_NOTE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa "
    "opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
)
SPEC_PROOF = [
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=",
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=",
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=",
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=",
]
SPEC_REQUEST = "old 20852014\n" + "".join(h + "\n" for h in SPEC_PROOF) + "\n" + SPEC_CHECKPOINT_NOTE
SPEC_RESPONSE = (
    "\u2014 witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXD"
    "qI5G2HgLatVs0pWh6Up69HVOw==\n"
    "\u2014 witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+U"
    "fzuOBMh9ChdMkP1vi/lCAsmlw==\n"
    "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm"
    "/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
)

LOG = Ed25519NoteSigner("example.com/log", Ed25519PrivateKey.from_private_bytes(b"\x09" * 32))
NOTE = sign_checkpoint(Checkpoint("example.com/log", 10, bytes(32)), [LOG])
HASH = base64.b64encode(b"\x01" * 32).decode()


def test_spec_example_request():
    request = parse_add_checkpoint_request(SPEC_REQUEST.encode())
    assert request.old_size == 20852014
    assert request.consistency_proof == tuple(base64.b64decode(h) for h in SPEC_PROOF)
    assert request.checkpoint == SPEC_CHECKPOINT_NOTE
    checkpoint = request.parsed_checkpoint()
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert request.format() == SPEC_REQUEST


def test_spec_example_response_lines():
    lines = parse_signature_lines(SPEC_RESPONSE.encode())
    assert [line.name for line in lines] == ["witness.example/w1", "witness.example/w1", "witness.example/w2"]
    assert [line.key_id.hex() for line in lines] == ["08ca7ee8", "23bac4a6", "016ba2f1"]
    assert all(len(line.signature) == 72 for line in lines)
    # The example's bytes are illustrative: two of the "timestamps" exceed 2^63-1,
    # which tlog-cosignature forbids.
    assert timestamp_of(lines[2].signature) == 2970657736413210787
    for line in lines[:2]:
        with pytest.raises(CosignatureError):
            timestamp_of(line.signature)


def test_round_trip_and_verification_of_the_checkpoint():
    request = AddCheckpointRequest(old_size=3, consistency_proof=(b"\x01" * 32,) * 2, checkpoint=NOTE)
    body = request.format()
    assert body == f"old 3\n{HASH}\n{HASH}\n\n" + NOTE
    assert parse_add_checkpoint_request(body) == request
    checkpoint, _ = open_checkpoint(request.checkpoint, [LOG.verifier()])
    assert checkpoint.size == 10


def test_old_size_zero_without_proof_and_63_hashes():
    assert parse_add_checkpoint_request("old 0\n\n" + NOTE).old_size == 0
    body = "old 3\n" + (HASH + "\n") * 63 + "\n" + NOTE
    assert len(parse_add_checkpoint_request(body).consistency_proof) == 63
    assert parse_add_checkpoint_request("old 10\n\n" + NOTE).old_size == 10


def test_a_proof_with_old_size_zero_is_well_formed():
    """"The proof MUST be empty if the old size is zero": such a proof parses (it is in
    the format) and never verifies, which the witness answers 422 (test_witness_pq.py)."""
    request = parse_add_checkpoint_request("old 0\n" + HASH + "\n\n" + NOTE)
    assert (request.old_size, request.consistency_proof) == (0, (b"\x01" * 32,))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("\n" + NOTE, id="no old line"),
        pytest.param("old 3\n" + NOTE, id="no empty line"),
        pytest.param("old\n\n" + NOTE, id="old without size"),
        pytest.param("old 03\n\n" + NOTE, id="old leading zero"),
        pytest.param("old -1\n\n" + NOTE, id="old negative"),
        pytest.param("old +3\n\n" + NOTE, id="old plus"),
        pytest.param("old  3\n\n" + NOTE, id="old two spaces"),
        pytest.param("old 3 \n\n" + NOTE, id="old trailing space"),
        pytest.param("Old 3\n\n" + NOTE, id="Old capitalised"),
        pytest.param("old 11\n\n" + NOTE, id="old above checkpoint size"),
        pytest.param(f"old {2**63}\n\n" + NOTE, id="old 2^63"),
        pytest.param("old 3\n" + (HASH + "\n") * 64 + "\n" + NOTE, id="64 proof lines"),
        pytest.param("old 3\n" + base64.b64encode(bytes(31)).decode() + "\n\n" + NOTE, id="31-byte hash"),
        pytest.param("old 3\n" + HASH[:-2] + "F=\n\n" + NOTE, id="non-canonical hash"),
        pytest.param("old 3\r\n\n" + NOTE, id="CRLF"),
        pytest.param("old 3\n\n" + NOTE[:-1], id="checkpoint without final newline"),
        pytest.param("old 3\n\n" + NOTE + "x\n", id="trailing data"),
        pytest.param("old 3\n\nnot a checkpoint\n\n" + NOTE.splitlines(True)[-1], id="not a checkpoint"),
        pytest.param(b"old 3\n\n" + NOTE.encode().replace(b"/log\n", b"/l\xffg\n", 1), id="bad UTF-8"),
        pytest.param("old 3\n\n" + NOTE + "x" * (2 << 20), id="oversize"),
    ],
)
def test_parse_rejects(body):
    with pytest.raises(WitnessRequestError):
        parse_add_checkpoint_request(body)


@pytest.mark.parametrize(
    "fields",
    [
        dict(old_size=-1, consistency_proof=(), checkpoint=NOTE),
        dict(old_size=11, consistency_proof=(), checkpoint=NOTE),
        dict(old_size=1, consistency_proof=[b"\x01" * 32], checkpoint=NOTE),
        dict(old_size=1, consistency_proof=(b"\x01" * 31,), checkpoint=NOTE),
        dict(old_size=1, consistency_proof=(), checkpoint="not a note\n"),
    ],
)
def test_constructor_validates(fields):
    with pytest.raises(WitnessRequestError):
        AddCheckpointRequest(**fields)


def test_tlog_size_bodies():
    assert format_tlog_size(0) == "0\n"
    assert format_tlog_size(20852014) == "20852014\n"
    assert parse_tlog_size(b"20852014\n") == 20852014
    assert parse_tlog_size(f"{2**63 - 1}\n") == 2**63 - 1
    for bad in [b"", b"\n", b"1", b"01\n", b"+1\n", b" 1\n", b"1 \n", b"1\n\n", b"1\r\n", b"\xff\n", f"{2**63}\n"]:
        with pytest.raises(WitnessRequestError):
            parse_tlog_size(bad)
    for bad_size in [-1, 2**63, True]:
        with pytest.raises(ValueError):
            format_tlog_size(bad_size)
