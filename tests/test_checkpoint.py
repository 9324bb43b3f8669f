"""C2SP tlog-checkpoint: body formatting, strict parsing, signing and opening."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.formats import (
    RESERVED_ORIGIN,
    Checkpoint,
    CheckpointFormatError,
    Ed25519NoteSigner,
    InvalidSignatureError,
    UnverifiedNoteError,
    open_checkpoint,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    sign_note,
)

# The example of C2SP tlog-checkpoint (its log key is not published).
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_BODY + "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
SPEC_ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
ROOT_B64 = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="

ORIGIN = "example.com/log"
ROOT = bytes(range(32))


def signer(name: str = ORIGIN, seed_byte: int = 7) -> Ed25519NoteSigner:
    return Ed25519NoteSigner(name, Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32))


def test_spec_example_parses():
    checkpoint = parse_checkpoint(SPEC_BODY)
    assert checkpoint == Checkpoint("example.com/behind-the-sofa", 20852163, SPEC_ROOT)
    assert checkpoint.body() == SPEC_BODY
    note = parse_note(SPEC_NOTE)
    assert parse_checkpoint(note.text) == checkpoint
    assert note.signatures[0].name == checkpoint.origin
    assert note.signatures[0].key_id == bytes.fromhex("033de0ae")


def test_body_known_answer():
    checkpoint = Checkpoint(ORIGIN, 0, bytes(32), ("ext one", "\u00e8xt"))
    assert checkpoint.body() == (
        "example.com/log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next one\n\u00e8xt\n"
    )
    assert parse_checkpoint(checkpoint.body()) == checkpoint


def test_origin_may_be_any_non_empty_line():
    # tlog-checkpoint: clients MUST NOT assume the origin follows the URL recommendation.
    for origin in ["has spaces", "a+b", "\u2014", "x"]:
        assert parse_checkpoint(f"{origin}\n1\n{ROOT_B64}\n").origin == origin


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=8),
        max_size=3,
    ),
)
def test_round_trip_property(size, root, extensions):
    checkpoint = Checkpoint(ORIGIN, size, root, tuple(extensions))
    assert parse_checkpoint(checkpoint.body()) == checkpoint


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="empty"),
        pytest.param("example.com/log\n", id="one line"),
        pytest.param("example.com/log\n1\n", id="two lines"),
        pytest.param(f"example.com/log\n1\n{ROOT_B64}", id="no final newline"),
        pytest.param(f"\n1\n{ROOT_B64}\n", id="empty origin"),
        pytest.param(f"cosignature/v1\n1\n{ROOT_B64}\n", id="reserved origin"),
        pytest.param(f"example.com/log\n01\n{ROOT_B64}\n", id="leading zero"),
        pytest.param(f"example.com/log\n00\n{ROOT_B64}\n", id="double zero"),
        pytest.param(f"example.com/log\n+1\n{ROOT_B64}\n", id="plus sign"),
        pytest.param(f"example.com/log\n-1\n{ROOT_B64}\n", id="negative"),
        pytest.param(f"example.com/log\n 1\n{ROOT_B64}\n", id="space before size"),
        pytest.param(f"example.com/log\n1 \n{ROOT_B64}\n", id="space after size"),
        pytest.param(f"example.com/log\n1_000\n{ROOT_B64}\n", id="underscore"),
        pytest.param(f"example.com/log\n\u0661\n{ROOT_B64}\n", id="arabic digit"),
        pytest.param(f"example.com/log\n0x10\n{ROOT_B64}\n", id="hex size"),
        pytest.param(f"example.com/log\n{2**63}\n{ROOT_B64}\n", id="size 2^63"),
        pytest.param(f"example.com/log\n{'9' * 30}\n{ROOT_B64}\n", id="huge size"),
        pytest.param(f"example.com/log\n\n{ROOT_B64}\n", id="empty size"),
        pytest.param(f"example.com/log\n1\n{base64.b64encode(bytes(31)).decode()}\n", id="31-byte root"),
        pytest.param(f"example.com/log\n1\n{base64.b64encode(bytes(33)).decode()}\n", id="33-byte root"),
        pytest.param("example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", id="non-canonical root"),
        pytest.param("example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", id="unpadded root"),
        pytest.param("example.com/log\n1\nCsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\n", id="url-safe root"),
        pytest.param(f"example.com/log\n1\n {ROOT_B64}\n", id="space in root"),
        pytest.param(f"example.com/log\n1\n\n{ROOT_B64}\n", id="blank line"),
        pytest.param(f"example.com/log\n1\n{ROOT_B64}\n\n", id="empty extension"),
        pytest.param(f"example.com/log\n1\n{ROOT_B64}\next\n\nmore\n", id="empty line among extensions"),
        pytest.param(f"example.com/log\r\n1\n{ROOT_B64}\n", id="carriage return"),
        pytest.param(f"example\x00.com/log\n1\n{ROOT_B64}\n", id="nul in origin"),
        pytest.param(f"example.com/log\n1\n{ROOT_B64}\n" + "x" * (1 << 20) + "\n", id="oversize"),
    ],
)
def test_parse_rejects(body):
    with pytest.raises(CheckpointFormatError):
        parse_checkpoint(body)


def test_parse_rejects_bytes():
    with pytest.raises(CheckpointFormatError):
        parse_checkpoint(SPEC_BODY.encode())  # type: ignore[arg-type]


def test_size_limits_accepted():
    assert parse_checkpoint(f"o\n0\n{ROOT_B64}\n").size == 0
    assert parse_checkpoint(f"o\n{2**63 - 1}\n{ROOT_B64}\n").size == 2**63 - 1


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (RESERVED_ORIGIN, 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, 2**63, ROOT, ()),
        (ORIGIN, True, ROOT, ()),
        (ORIGIN, 1.0, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, bytearray(ROOT), ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\nb",)),
        (ORIGIN, 1, ROOT, ("tab\t",)),
        (ORIGIN, 1, ROOT, ["list"]),
    ],
)
def test_constructor_validates(fields):
    with pytest.raises(CheckpointFormatError):
        Checkpoint(*fields)


def test_sign_and_open():
    s = signer()
    checkpoint = Checkpoint(ORIGIN, 42, ROOT)
    note = sign_checkpoint(checkpoint, [s])
    assert note.startswith(checkpoint.body() + "\n\u2014 example.com/log ")
    got, opened = open_checkpoint(note.encode(), [s.verifier()])
    assert got == checkpoint
    assert opened.verifiers == (s.verifier(),)


def test_open_rejects_wrong_key_and_tampering():
    note = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), [signer()])
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(note, [signer(seed_byte=8).verifier()])
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(note.replace("\n42\n", "\n43\n"), [signer().verifier()])


def test_open_verifies_before_parsing_the_body():
    # A signed note whose text is not a checkpoint: the signature verifies, then the
    # body is refused as a checkpoint.
    s = signer()
    with pytest.raises(CheckpointFormatError):
        open_checkpoint(sign_note("not a checkpoint\n", [s]), [s.verifier()])
