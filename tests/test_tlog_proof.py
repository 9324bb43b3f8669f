"""C2SP tlog-proof@v1: formatting and strict parsing."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.formats import (
    Checkpoint,
    Ed25519NoteSigner,
    TlogProof,
    TlogProofError,
    open_checkpoint,
    parse_tlog_proof,
    sign_checkpoint,
)

# The header of the example in C2SP tlog-proof ("extra", index, five proof hashes). The
# example's signatures are elided ("[...]"), so the checkpoint is re-signed with our key.
SPEC_HEADER = (
    "c2sp.org/tlog-proof@v1\n"
    "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
    "index 73894\n"
    "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
    "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
    "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
)
SPEC_CHECKPOINT = Checkpoint(
    "example.com/fancylog", 109482, base64.b64decode("sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=")
)
SPEC_ELIDED_NOTE = (
    SPEC_CHECKPOINT.body() + "\n"
    "\u2014 example.com/fancylog hI2DJw[...]1roloI=\n"
    "\u2014 witness1.example mJirIklj[...]qY9v2B/5bg==\n"
)

SIGNER = Ed25519NoteSigner("example.com/fancylog", Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))
NOTE = sign_checkpoint(SPEC_CHECKPOINT, [SIGNER])
H = [bytes([i]) * 32 for i in range(4)]
H_B64 = [base64.b64encode(h).decode() for h in H]

# Pinned output of our implementation (stability vector).
PINNED = (
    "c2sp.org/tlog-proof@v1\n"
    "extra AQID\n"
    "index 5\n"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"
    "\n" + NOTE
)


def test_spec_example_header_parses():
    proof = parse_tlog_proof(SPEC_HEADER + "\n" + NOTE)
    assert proof.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert proof.index == 73894
    assert len(proof.inclusion_proof) == 5
    assert proof.inclusion_proof[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert proof.checkpoint == NOTE
    assert proof.parsed_checkpoint() == SPEC_CHECKPOINT
    assert proof.format() == SPEC_HEADER + "\n" + NOTE
    checkpoint, _ = open_checkpoint(proof.checkpoint, [SIGNER.verifier()])
    assert checkpoint == SPEC_CHECKPOINT


def test_spec_example_with_elided_signatures_is_rejected():
    with pytest.raises(TlogProofError, match="checkpoint"):
        parse_tlog_proof(SPEC_HEADER + "\n" + SPEC_ELIDED_NOTE)


def test_format_known_answer_and_round_trip():
    proof = TlogProof(index=5, inclusion_proof=(H[0], H[1]), checkpoint=NOTE, extra=b"\x01\x02\x03")
    assert proof.format() == PINNED
    assert parse_tlog_proof(PINNED) == proof
    assert parse_tlog_proof(PINNED.encode()) == proof


def test_minimal_proof_without_extra_or_hashes():
    single = sign_checkpoint(Checkpoint("example.com/fancylog", 1, bytes(32)), [SIGNER])
    text = "c2sp.org/tlog-proof@v1\nindex 0\n\n" + single
    proof = parse_tlog_proof(text)
    assert (proof.index, proof.inclusion_proof, proof.extra) == (0, (), None)
    assert proof.format() == text


def test_63_hashes_accepted():
    text = "c2sp.org/tlog-proof@v1\nindex 0\n" + (H_B64[0] + "\n") * 63 + "\n" + NOTE
    assert len(parse_tlog_proof(text).inclusion_proof) == 63


HEAD = "c2sp.org/tlog-proof@v1\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(HEAD + "index 5\n" + H_B64[0] + "\n", id="no checkpoint"),
        pytest.param(HEAD + "index 5\n" + NOTE, id="no empty line"),
        pytest.param("c2sp.org/tlog-proof@v2\nindex 5\n\n" + NOTE, id="other version"),
        pytest.param("c2sp.org/tlog-proof@v1 \nindex 5\n\n" + NOTE, id="header trailing space"),
        pytest.param("index 5\n\n" + NOTE, id="no header"),
        pytest.param("\n" + HEAD + "index 5\n\n" + NOTE, id="leading newline"),
        pytest.param(HEAD + "\n" + NOTE, id="no index"),
        pytest.param(HEAD + "extra AQID\n\n" + NOTE, id="extra without index"),
        pytest.param(HEAD + "index 5\nextra AQID\n\n" + NOTE, id="extra after index"),
        pytest.param(HEAD + "extra AQID\nextra AQID\nindex 5\n\n" + NOTE, id="two extra lines"),
        pytest.param(HEAD + "extra \nindex 5\n\n" + NOTE, id="empty extra"),
        pytest.param(HEAD + "extra\nindex 5\n\n" + NOTE, id="extra without space"),
        pytest.param(HEAD + "extra AQI\nindex 5\n\n" + NOTE, id="extra bad padding"),
        pytest.param(HEAD + "extra AQJ=\nindex 5\n\n" + NOTE, id="extra non-canonical"),
        pytest.param(HEAD + "extra  AQID\nindex 5\n\n" + NOTE, id="extra two spaces"),
        pytest.param(HEAD + "index 05\n\n" + NOTE, id="index leading zero"),
        pytest.param(HEAD + "index +5\n\n" + NOTE, id="index plus"),
        pytest.param(HEAD + "index -1\n\n" + NOTE, id="index negative"),
        pytest.param(HEAD + "index  5\n\n" + NOTE, id="index two spaces"),
        pytest.param(HEAD + "index\n\n" + NOTE, id="index no value"),
        pytest.param(HEAD + "Index 5\n\n" + NOTE, id="index capitalised"),
        pytest.param(HEAD + "index 109482\n\n" + NOTE, id="index equals size"),
        pytest.param(HEAD + f"index {2**63}\n\n" + NOTE, id="index 2^63"),
        pytest.param(HEAD + "index 5\n" + base64.b64encode(bytes(31)).decode() + "\n\n" + NOTE, id="31-byte hash"),
        pytest.param(HEAD + "index 5\n" + base64.b64encode(bytes(33)).decode() + "\n\n" + NOTE, id="33-byte hash"),
        pytest.param(HEAD + "index 5\n" + H_B64[0][:-2] + "B=\n\n" + NOTE, id="non-canonical hash"),
        pytest.param(HEAD + "index 5\n" + H_B64[1] + " \n\n" + NOTE, id="hash trailing space"),
        pytest.param(HEAD + "index 5\n" + (H_B64[0] + "\n") * 64 + "\n" + NOTE, id="64 hashes"),
        pytest.param(HEAD.replace("\n", "\r\n") + "index 5\n\n" + NOTE, id="CRLF"),
        pytest.param(HEAD + "index 5\n\n" + NOTE[:-1], id="checkpoint missing newline"),
        pytest.param(HEAD + "index 5\n\n" + NOTE + "trailing\n", id="trailing data"),
        pytest.param(HEAD + "index 0\n\n" + "not a checkpoint\n\n" + NOTE.splitlines(True)[-1], id="not a checkpoint"),
        pytest.param(HEAD.encode() + b"index 5\n\xff\n\n" + NOTE.encode(), id="invalid UTF-8"),
        pytest.param(HEAD + "extra " + "A" * (3 << 20) + "\nindex 5\n\n" + NOTE, id="oversize"),
    ],
)
def test_parse_rejects(text):
    with pytest.raises(TlogProofError):
        parse_tlog_proof(text)


@pytest.mark.parametrize(
    "fields",
    [
        dict(index=-1, inclusion_proof=(), checkpoint=NOTE),
        dict(index=109482, inclusion_proof=(), checkpoint=NOTE),
        dict(index=True, inclusion_proof=(), checkpoint=NOTE),
        dict(index=0, inclusion_proof=[H[0]], checkpoint=NOTE),
        dict(index=0, inclusion_proof=(H[0][:31],), checkpoint=NOTE),
        dict(index=0, inclusion_proof=(H[0],) * 64, checkpoint=NOTE),
        dict(index=0, inclusion_proof=(), checkpoint=NOTE, extra=b""),
        dict(index=0, inclusion_proof=(), checkpoint=NOTE, extra="text"),
        dict(index=0, inclusion_proof=(), checkpoint=SPEC_CHECKPOINT.body()),
    ],
)
def test_constructor_validates(fields):
    with pytest.raises(TlogProofError):
        TlogProof(**fields)


def test_receipt_json_is_byte_identical_to_the_dict_encoding():
    """The server's fast receipt encoder against json.dumps of build_receipt."""
    import json
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from logserver.formats.receipt import build_receipt, receipt_json
    from logserver.keys.log_key import LogKey

    key = LogKey("example.com/log", Ed25519PrivateKey.from_private_bytes(b"\3" * 32))
    note = key.sign_checkpoint(30, bytes(range(32)), 1_700_000_000_000)
    assert "\u2014" in note  # non-ASCII: escaped the way json.dumps escapes it
    checked = 0
    for n in (0, 1, 5, 24):
        proof = [os.urandom(32) for _ in range(n)]
        for duplicate in (True, False):
            want = json.dumps(build_receipt(7, b"\1" * 32, 30, note, proof, duplicate=duplicate),
                              separators=(",", ":")).encode()
            assert receipt_json(7, b"\1" * 32, 30, note, proof, duplicate=duplicate) == want
            checked += 1
    assert checked == 8


def test_receipt_parses_what_the_log_builds():
    from logserver.formats import build_receipt, parse_receipt, receipt_json

    for duplicate in (False, True):
        data = receipt_json(5, b"\1" * 32, SPEC_CHECKPOINT.size, NOTE, H, duplicate=duplicate)
        receipt = parse_receipt(data)
        assert (receipt.index, receipt.leaf_hash, receipt.tree_size) == (5, b"\1" * 32, SPEC_CHECKPOINT.size)
        assert (receipt.inclusion_proof, receipt.checkpoint) == (tuple(H), SPEC_CHECKPOINT)
        assert receipt.duplicate is duplicate
        assert receipt.tlog_proof == parse_tlog_proof(receipt.tlog_proof.format())
        built = build_receipt(5, b"\1" * 32, SPEC_CHECKPOINT.size, NOTE, H, duplicate=duplicate)
        assert parse_receipt(built) == receipt


@pytest.mark.parametrize(
    ("change", "part", "disagreement"),
    [
        pytest.param(lambda r: r.update(index=6), "inclusion", True, id="index differs from the tlog-proof"),
        pytest.param(lambda r: r.update(index=SPEC_CHECKPOINT.size), "inclusion", False, id="index beyond the tree"),
        pytest.param(lambda r: r.update(inclusion_proof=r["inclusion_proof"][::-1]), "inclusion", True,
                     id="hashes differ from the tlog-proof"),
        pytest.param(lambda r: r.update(tree_size=1), "checkpoint", True, id="tree_size differs from the checkpoint"),
        pytest.param(lambda r: r.update(checkpoint=NOTE.replace("109482", "109483")), "checkpoint", True,
                     id="checkpoint differs from the tlog-proof's"),
        pytest.param(lambda r: r.update(checkpoint="not a note"), "checkpoint", False, id="checkpoint malformed"),
        pytest.param(lambda r: r.update(duplicate=0), "receipt", False, id="duplicate not a boolean"),
        pytest.param(lambda r: r.update(extra=1), "receipt", False, id="unknown field"),
    ],
)
def test_receipt_error_names_the_part_that_is_wrong(change, part, disagreement):
    from logserver.formats import ReceiptError, build_receipt, parse_receipt

    receipt = build_receipt(5, b"\1" * 32, SPEC_CHECKPOINT.size, NOTE, H, duplicate=False)
    change(receipt)
    with pytest.raises(ReceiptError) as info:
        parse_receipt(receipt)
    assert (info.value.part, info.value.disagreement) == (part, disagreement)


def test_receipt_json_is_strict():
    from logserver.formats import ReceiptError, parse_receipt, receipt_json

    data = receipt_json(5, b"\1" * 32, SPEC_CHECKPOINT.size, NOTE, H, duplicate=False)
    for bad in (data[:-1] + b',"index":5}', data + b"\n{}", data.replace(b'"index":5', b'"index":-0'),
                data.decode().encode("utf-16"), data.replace(b'"index":5', b'"index":5.0')):
        with pytest.raises(ReceiptError, match="receipt"):
            parse_receipt(bad)
