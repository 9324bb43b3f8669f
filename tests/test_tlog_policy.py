"""C2SP tlog-policy: parsing, quorum evaluation and checkpoint verification."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.formats import (
    Checkpoint,
    CosignatureSigner,
    Ed25519NoteSigner,
    InvalidSignatureError,
    NoteSignature,
    PolicyFormatError,
    QuorumNotMetError,
    UnknownOriginError,
    UnverifiedNoteError,
    format_vkey,
    log_signers,
    parse_policy,
    sign_checkpoint,
    sign_note,
)

ORIGIN = "example.com/log"


def private(seed_byte: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)


LOG = Ed25519NoteSigner(ORIGIN, private(1))
WITNESS_NAMES = ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
WITNESSES = {
    name: CosignatureSigner(f"{name.lower()}.witness.example", private(10 + i), clock=lambda: 1000)
    for i, name in enumerate(WITNESS_NAMES)
}


def witness_lines(names=WITNESS_NAMES) -> str:
    return "".join(f"witness {name} {WITNESSES[name].vkey}\n" for name in names)


# The example policy of C2SP tlog-policy, with its elided keys filled in.
SPEC_POLICY = f"""log {LOG.vkey}

witness X1 {WITNESSES["X1"].vkey}
witness X2 {WITNESSES["X2"].vkey}
witness X3 {WITNESSES["X3"].vkey}
group X-witnesses 2 X1 X2 X3

witness Y1 {WITNESSES["Y1"].vkey}
witness Y2 {WITNESSES["Y2"].vkey}
witness Y3 {WITNESSES["Y3"].vkey}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def checkpoint_note(cosigners=(), *, log=LOG, origin=ORIGIN) -> str:
    checkpoint = Checkpoint(origin, 5, bytes(32))
    return sign_checkpoint(checkpoint, [log, *(WITNESSES[name] for name in cosigners)])


# --- Parsing -------------------------------------------------------------------------


def test_spec_example_structure():
    policy = parse_policy(SPEC_POLICY)
    assert list(policy.logs) == [ORIGIN]
    (log,) = policy.logs[ORIGIN]
    assert (log.origin, log.verifier.key_id, log.url) == (ORIGIN, LOG.key_id, None)
    assert list(policy.witnesses) == WITNESS_NAMES
    assert policy.witnesses["Y2"].verifier.key_id == WITNESSES["Y2"].key_id
    assert policy.groups["X-witnesses"].threshold == 2
    assert policy.groups["Y-witnesses"].threshold == 1
    assert policy.groups["X-and-Y"].threshold == 2
    assert policy.groups["X-and-Y"].members == ("X-witnesses", "Y-witnesses")
    assert policy.quorum == "X-and-Y"


def test_spec_example_quorum():
    policy = parse_policy(SPEC_POLICY)
    policy.check_quorum({"X1", "X3", "Y2"})
    policy.check_quorum(set(WITNESS_NAMES))
    want = r"group 'X-and-Y': got 1 of 2 members witnessed, want at least 2 \(not witnessed: 'X-witnesses'\)"
    with pytest.raises(QuorumNotMetError, match=want):
        policy.check_quorum({"X1", "Y1", "Y2", "Y3"})
    with pytest.raises(QuorumNotMetError, match="not witnessed: 'Y-witnesses'"):
        policy.check_quorum({"X1", "X2", "X3"})
    with pytest.raises(QuorumNotMetError, match="got 0 of 2"):
        policy.check_quorum(set())


def test_syntax_whitespace_comments_urls():
    text = (
        "# a comment\n"
        "   # an indented comment\n"
        "\t \n"
        "\n"
        f"  log\t {LOG.vkey}   https://log.example/\t\n"
        f"witness\tW1 {WITNESSES['X1'].vkey} https://w1.example/\n"
        f"witness W2\t\t{WITNESSES['X2'].vkey}\n"
        "group g 1 W1 W2\n"
        "quorum g   \n"
    )
    policy = parse_policy(text.encode())
    assert policy.logs[ORIGIN][0].url == "https://log.example/"
    assert policy.witnesses["W1"].url == "https://w1.example/"
    assert policy.witnesses["W2"].url is None
    assert policy.quorum == "g"


def test_logs_group_by_origin_and_accept_both_ed25519_types():
    rotated = Ed25519NoteSigner(ORIGIN, private(2))
    other = Ed25519NoteSigner("other.example/log", private(3))
    _, stamped = log_signers("stamped.example/log", private(4))
    policy = parse_policy(f"log {LOG.vkey}\nlog {rotated.vkey}\nlog {other.vkey}\nlog {stamped.vkey}\nquorum none\n")
    assert [log.verifier.key_id for log in policy.logs[ORIGIN]] == [LOG.key_id, rotated.key_id]
    assert set(policy.logs) == {ORIGIN, "other.example/log", "stamped.example/log"}


def test_names_are_opaque_octets():
    # tlog-policy "Character set": "K" and KELVIN SIGN are different names; non-UTF-8 is allowed.
    data = (
        f"witness K {WITNESSES['X1'].vkey}\n".encode()
        + f"witness \u212a {WITNESSES['X2'].vkey}\n".encode()
        + f"witness \xff {WITNESSES['X3'].vkey}\n".encode("latin-1")
        + "group all-of-them all K \u212a ".encode()
        + b"\xff\nquorum all-of-them\n"
    )
    policy = parse_policy(data)
    assert len(policy.witnesses) == 3
    assert len(policy.groups["all-of-them"].members) == 3
    with pytest.raises(QuorumNotMetError):
        policy.check_quorum({"K", "\u212a"})
    policy.check_quorum(set(policy.witnesses))


def test_quorum_none_and_single_witness():
    none = parse_policy(f"log {LOG.vkey}\nquorum none\n")
    none.check_quorum(set())
    assert none.quorum == "none"
    single = parse_policy(witness_lines(["X1", "X2"]) + "quorum X2\n")
    single.check_quorum({"X2"})
    with pytest.raises(QuorumNotMetError, match="witness 'X2': got no verified cosignature"):
        single.check_quorum({"X1"})


@pytest.mark.parametrize(
    ("threshold", "passing", "failing"),
    [
        ("any", [{"X1"}, {"X3"}], [set()]),
        ("all", [{"X1", "X2", "X3"}], [{"X1", "X2"}, {"X3"}]),
        ("1", [{"X2"}], [set()]),
        ("2", [{"X1", "X3"}, {"X1", "X2", "X3"}], [{"X1"}, set()]),
        ("3", [{"X1", "X2", "X3"}], [{"X1", "X3"}]),
    ],
)
def test_k_of_n(threshold, passing, failing):
    policy = parse_policy(witness_lines() + f"group g {threshold} X1 X2 X3\nquorum g\n")
    for witnessed in passing:
        policy.check_quorum(witnessed)
    for witnessed in failing:
        with pytest.raises(QuorumNotMetError, match="group 'g'"):
            policy.check_quorum(witnessed)


def test_nested_groups_three_levels():
    policy = parse_policy(
        witness_lines()
        + "group a 2 X1 X2 X3\n"
        + "group b any Y1 Y2\n"
        + "group ab 1 a b\n"
        + "group top all ab Y3\n"
        + "quorum top\n"
    )
    policy.check_quorum({"Y1", "Y3"})
    policy.check_quorum({"X1", "X2", "Y3"})
    with pytest.raises(QuorumNotMetError, match="not witnessed: 'ab'"):
        policy.check_quorum({"X1", "Y3"})
    with pytest.raises(QuorumNotMetError, match="not witnessed: 'Y3'"):
        policy.check_quorum({"X1", "X2", "Y1"})


def test_check_quorum_rejects_names_outside_the_policy():
    policy = parse_policy(SPEC_POLICY)
    with pytest.raises(ValueError):
        policy.check_quorum({"X1", "Z9"})
    with pytest.raises(ValueError):
        policy.check_quorum({"X-witnesses"})


def test_implementation_limit_of_32_is_supported():
    signers = [CosignatureSigner(f"w{i}.example", private(100 + i)) for i in range(32)]
    lines = "".join(f"witness w{i} {s.vkey}\n" for i, s in enumerate(signers))
    groups = "".join(f"group g{i} any w{i}\n" for i in range(32))
    policy = parse_policy(lines + groups + "group top 32 " + " ".join(f"g{i}" for i in range(32)) + "\nquorum top\n")
    policy.check_quorum({f"w{i}" for i in range(32)})
    with pytest.raises(QuorumNotMetError, match="got 31 of 32"):
        policy.check_quorum({f"w{i}" for i in range(31)})


W = witness_lines(["X1", "X2", "X3"])
ED_VKEY_OF_X1 = format_vkey("x1.witness.example", 0x01, WITNESSES["X1"].verifier().public_key_bytes)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(W, id="no quorum"),
        pytest.param(W + "quorum X1\nquorum X1\n", id="two quorums"),
        pytest.param(W + "quorum none\nquorum none\n", id="two quorum none"),
        pytest.param(W + "quorum Z\n", id="undefined quorum"),
        pytest.param("quorum X1\n" + W, id="quorum before witness"),
        pytest.param(W + "quorum\n", id="quorum without name"),
        pytest.param(W + "quorum X1 X2\n", id="quorum two names"),
        pytest.param(W + "quorum X1", id="missing final newline"),
        pytest.param(W + "quorum X1 # comment\n", id="trailing comment"),
        pytest.param(W + "group g any X1 Z\nquorum g\n", id="undefined member"),
        pytest.param(W + "group g any X1 g2\ngroup g2 any X2\nquorum g\n", id="forward reference"),
        pytest.param(W + "group g any g\nquorum g\n", id="self reference"),
        pytest.param(W + "group g any none\nquorum g\n", id="none as member"),
        pytest.param(W + "group g any X1 X1\nquorum g\n", id="member twice in a group"),
        pytest.param(W + "group g any X1\ngroup h any X1 X2\nquorum h\n", id="member of two groups"),
        pytest.param(W + "group g any\nquorum g\n", id="no members"),
        pytest.param(W + "group g\nquorum none\n", id="no threshold"),
        pytest.param(W + "group g 0 X1\nquorum g\n", id="k zero"),
        pytest.param(W + "group g 3 X1 X2\nquorum g\n", id="k above n"),
        pytest.param(W + "group g 01 X1 X2\nquorum g\n", id="k leading zero"),
        pytest.param(W + "group g -1 X1 X2\nquorum g\n", id="k negative"),
        pytest.param(W + "group g +1 X1 X2\nquorum g\n", id="k plus"),
        pytest.param(W + "group g ALL X1 X2\nquorum g\n", id="ALL uppercase"),
        pytest.param(W + "group g 99999999999999999999 X1\nquorum g\n", id="k huge"),
        pytest.param(W + "group X1 any X2\nquorum none\n", id="group named like a witness"),
        pytest.param(W + "group none any X1\nquorum none\n", id="group named none"),
        pytest.param(W + "group g any X1\ngroup g any X2\nquorum none\n", id="group defined twice"),
        pytest.param(W + f"witness X1 {WITNESSES['Y1'].vkey}\nquorum none\n", id="witness name twice"),
        pytest.param(f"witness none {WITNESSES['X1'].vkey}\nquorum none\n", id="witness named none"),
        pytest.param(W + f"witness Z {WITNESSES['X1'].vkey}\nquorum none\n", id="duplicate witness key"),
        pytest.param(
            W + "witness Z " + format_vkey("other.name", 0x04, WITNESSES["X1"].verifier().public_key_bytes) + "\n"
            "quorum none\n",
            id="duplicate witness key under another name",
        ),
        pytest.param(f"witness Z {ED_VKEY_OF_X1}\nquorum none\n", id="witness with Ed25519 0x01 key"),
        pytest.param("witness Z\nquorum none\n", id="witness without key"),
        pytest.param(f"witness Z {WITNESSES['X1'].vkey} url extra\nquorum none\n", id="witness extra field"),
        pytest.param(f"witness Z {WITNESSES['X1'].vkey[:-2]}\nquorum none\n", id="witness bad vkey"),
        pytest.param(f"log {LOG.vkey}\nlog {LOG.vkey}\nquorum none\n", id="duplicate log"),
        pytest.param(
            f"log {LOG.vkey}\nlog {format_vkey('other.example', 1, LOG.verifier().public_key_bytes)}\nquorum none\n",
            id="duplicate log key under another name",
        ),
        pytest.param(f"log {format_vkey(ORIGIN, 0x02, b'spki')}\nquorum none\n", id="log with unsupported type"),
        pytest.param(
            f"log {WITNESSES['X1'].vkey}\nwitness X1 {WITNESSES['X1'].vkey}\nquorum none\n",
            id="log and witness with one name and key ID",
        ),
        pytest.param("log\nquorum none\n", id="log without key"),
        pytest.param(f"log {LOG.vkey} url extra\nquorum none\n", id="log extra field"),
        pytest.param(f"log {LOG.vkey.upper()}\nquorum none\n", id="log bad vkey"),
        pytest.param("LOG x\nquorum none\n", id="unknown keyword case"),
        pytest.param("monitor x\nquorum none\n", id="unknown keyword"),
        pytest.param(W + "quorum none\x00\n", id="nul"),
        pytest.param(W + "quorum none\r\n", id="carriage return"),
        pytest.param(W + "quorum\x0bnone\n", id="vertical tab"),
        pytest.param(W + "quorum\x0cnone\n", id="form feed"),
        pytest.param(W + "quorum none\x7f\n", id="DEL"),
        pytest.param(W + "#" + "x" * (1 << 20) + "\nquorum none\n", id="oversize"),
        pytest.param("\ud800\nquorum none\n", id="lone surrogate"),
    ],
)
def test_parse_rejects(text):
    with pytest.raises(PolicyFormatError):
        parse_policy(text)


# --- Verifying checkpoints -------------------------------------------------------------


def test_verify_checkpoint_with_quorum():
    policy = parse_policy(SPEC_POLICY)
    note = checkpoint_note(["X1", "X3", "Y2"])
    checkpoint, opened, witnessed = policy.verify_checkpoint(note.encode())
    assert checkpoint == Checkpoint(ORIGIN, 5, bytes(32))
    assert witnessed == {"X1", "X3", "Y2"}
    assert opened.signature_by(LOG.verifier()) is not None


def test_verify_checkpoint_quorum_not_met():
    policy = parse_policy(SPEC_POLICY)
    with pytest.raises(QuorumNotMetError, match="X-witnesses"):
        policy.verify_checkpoint(checkpoint_note(["X1", "Y1", "Y2"]))


def test_verify_checkpoint_unknown_origin():
    other = Ed25519NoteSigner("other.example/log", private(5))
    policy = parse_policy(SPEC_POLICY)
    with pytest.raises(UnknownOriginError, match=r"other\.example/log"):
        policy.verify_checkpoint(checkpoint_note(log=other, origin="other.example/log"))


def test_verify_checkpoint_needs_a_log_signature():
    policy = parse_policy(SPEC_POLICY)
    impostor = Ed25519NoteSigner(ORIGIN, private(6))
    # Enough cosignatures, but the log line is from an unknown key.
    with pytest.raises(UnverifiedNoteError, match="no verified log signature"):
        policy.verify_checkpoint(checkpoint_note(["X1", "X2", "Y1"], log=impostor))


def test_verify_checkpoint_rejects_bad_cosignature_from_known_witness():
    policy = parse_policy(SPEC_POLICY)
    note = checkpoint_note(["X1", "X2", "Y1"])
    forged = NoteSignature(WITNESSES["Y2"].name, WITNESSES["Y2"].key_id, bytes(72))
    with pytest.raises(InvalidSignatureError, match=r"y2\.witness\.example"):
        policy.verify_checkpoint(note + forged.line())


def test_verify_checkpoint_ignores_unknown_cosigners_and_duplicates():
    policy = parse_policy(witness_lines(["X1", "X2"]) + f"log {LOG.vkey}\ngroup g 2 X1 X2\nquorum g\n")
    stranger = CosignatureSigner("stranger.example", private(60))
    body = Checkpoint(ORIGIN, 5, bytes(32)).body()
    note = sign_note(body, [LOG, WITNESSES["X1"], stranger])
    duplicated = note + note.splitlines(True)[-2]  # the X1 line again
    with pytest.raises(QuorumNotMetError, match="got 1 of 2"):
        policy.verify_checkpoint(duplicated)


def test_verify_checkpoint_with_quorum_none_and_stamped_log_key():
    # A policy may pin the log's cosignature/v1 key (docs/architecture.md "Log signatures").
    plain, stamped = log_signers(ORIGIN, private(1), clock=lambda: 99)
    policy = parse_policy(f"log {stamped.vkey}\nquorum none\n")
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, bytes(32)), [plain, stamped])
    _, opened, witnessed = policy.verify_checkpoint(note)
    assert witnessed == frozenset()
    assert opened.verifiers[0].key_id == stamped.key_id
