"""Fleet heads (docs/fleet-heads.md), unit by unit: the row and HEADS leaf encodings,
the incremental heads table, the fold, the proof format, the trust policy's
max_age_s, the client state's heads, and the verifier's account of its checks.
The vectors are in test_fleet_head_vectors.py, the properties in
test_fleet_heads_properties.py."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet_head_vectors import (
    MAX_AGE_S,
    NOW,
    SIGNED_AT,
    WITNESSED_AT,
    MemoryLog,
    VectorKeys,
    bundle,
    canonical,
    fleet_head_proof,
)
from logserver.bundle import (
    HEADS_LEAF_SIZE,
    HeadsLeaf,
    HeadsMismatchError,
    HeadsRow,
    HeadsTable,
    HeadsUpdateError,
    MalformedHeadsError,
    decode_heads_leaf,
    decode_leaf,
    decode_row,
    encode_leaf,
    fold,
    is_heads_leaf,
)
from logserver.bundle import payload as payload_module
from logserver.client import (
    CheckLog,
    ClientState,
    FleetAbsentError,
    FleetHeadRollbackError,
    MalformedFleetHeadError,
    StateError,
    TrustPolicy,
    TrustPolicyError,
    verify_fleet_head,
)
from logserver.formats import FleetHeadFormatError, build_fleet_head_proof, parse_fleet_head_proof
from logserver.formats import fleet_head as format_module
from logserver.formats.fleet_head import HeadsLeafProof
from logserver.merkle import EMPTY_ROOT, InvalidParameterError, leaf_hash
from merkle_reference import mth, path

KEYS = VectorKeys()
H = hashlib.sha256(b"a leaf").digest()


def row(fleet_id: str = "fleet-a", sequence: int = 1, leaf_index: int = 0, status: str = "active") -> HeadsRow:
    return HeadsRow(fleet_id, sequence, leaf_index, hashlib.sha256(f"{fleet_id}/{sequence}".encode()).digest(),
                    status)


# --- rows ---------------------------------------------------------------------------------


def test_row_encoding_is_the_documented_struct() -> None:
    r = HeadsRow("fleet-a", 3, 5, H, "retired")
    assert r.encode() == b"\x07fleet-a" + struct.pack(">QQ", 3, 5) + H + b"\x01"
    assert decode_row(r.encode()) == r
    assert r.tree_hash() == leaf_hash(r.encode())
    assert HeadsRow("f", 0, 0, H).encode()[-1] == 0  # active


@pytest.mark.parametrize("data, why", [
    (b"", "want bytes"),
    (HeadsRow("fleet-a", 3, 5, H).encode() + b"\x00", "want 57"),
    (HeadsRow("fleet-a", 3, 5, H).encode()[:-1], "want 57"),
    (HeadsRow("fleet-a", 3, 5, H).encode()[:-1] + b"\x02", "status: got byte 2"),
    (b"\x07fleet/a" + bytes(49), "fleet_id"),
    (b"\x00" + bytes(49), "fleet_id"),
    (b"\x02.." + bytes(49), "fleet_id"),
    (b"\x07fleet-\xe9" + bytes(49), "non-ASCII"),
    (bytes([129]) + b"a" * 129 + bytes(49), "fleet_id"),
    (b"\x01a" + struct.pack(">QQ", 2**63, 0) + H + b"\x00", "sequence"),
    (b"\x01a" + struct.pack(">QQ", 0, 2**64 - 1) + H + b"\x00", "leaf_index"),
])
def test_row_decoding_is_strict(data: bytes, why: str) -> None:
    with pytest.raises(MalformedHeadsError, match=why):
        decode_row(data)


def test_row_fields_are_checked() -> None:
    for bad in ({"status": "gone"}, {"leaf_hash": H[:31]}, {"sequence": -1}, {"sequence": True},
                {"fleet_id": "a" * 129}):
        fields = {"fleet_id": "f", "sequence": 0, "leaf_index": 0, "leaf_hash": H, "status": "active", **bad}
        with pytest.raises(MalformedHeadsError):
            HeadsRow(**fields)  # type: ignore[arg-type]


def test_the_fleet_id_rule_is_the_payload_schemas() -> None:
    # formats/ repeats the rule (it may not import bundle/): the two must agree.
    assert format_module._FLEET_ID.pattern == payload_module.FLEET_ID_PATTERN
    assert format_module._RESERVED_FLEET_IDS == payload_module._RESERVED_FLEET_IDS
    assert format_module.STATUSES == payload_module.STATUSES


# --- the HEADS leaf -------------------------------------------------------------------------


def test_heads_leaf_encoding() -> None:
    leaf = HeadsLeaf(7, 5, H)
    data = leaf.encode()
    assert len(data) == HEADS_LEAF_SIZE == 49
    assert data == b"\x02" + struct.pack(">QQ", 7, 5) + H
    assert decode_heads_leaf(data) == leaf and is_heads_leaf(data)
    assert not is_heads_leaf(encode_leaf(bundle("fleet-a", 1)))  # a bundle leaf starts with version 1
    assert decode_heads_leaf(HeadsLeaf(0, 0, EMPTY_ROOT).encode()).count == 0


@pytest.mark.parametrize("data, why", [
    (HeadsLeaf(7, 5, H).encode() + b"\x00", "got 50 bytes"),
    (HeadsLeaf(7, 5, H).encode()[:48], "got 48 bytes"),
    (b"\x01" + HeadsLeaf(7, 5, H).encode()[1:], "type: got 1"),
    (b"\x02" + struct.pack(">QQ", 2**63, 5) + H, "previous"),
    (b"\x02" + struct.pack(">QQ", 0, 2**63) + H, "count"),
    (b"\x02" + struct.pack(">QQ", 0, 0) + H, "empty tree"),
])
def test_heads_leaf_decoding_is_strict(data: bytes, why: str) -> None:
    with pytest.raises(MalformedHeadsError, match=why):
        decode_heads_leaf(data)


# --- the table ------------------------------------------------------------------------------


def test_empty_table() -> None:
    table = HeadsTable()
    assert table.count == 0 and table.root() == EMPTY_ROOT == mth([])
    assert table.neighbours("fleet-a") == () and table.position("fleet-a") is None
    with pytest.raises(InvalidParameterError):
        table.row_proof(0)


def test_apply_inserts_in_order_and_replaces() -> None:
    table = HeadsTable()
    for fleet in ("fleet-m", "fleet-c", "fleet-x", "fleet-a"):
        table.apply(row(fleet))
    assert [r.fleet_id for r in table] == ["fleet-a", "fleet-c", "fleet-m", "fleet-x"]
    assert table.apply(row("fleet-m", 2, 9)) == 2
    assert table.get("fleet-m") == row("fleet-m", 2, 9)
    assert table.root() == mth([r.encode() for r in table.rows])
    # Bytes order: a proper prefix first, upper case before lower case.
    table.apply(row("fleet"))
    table.apply(row("Fleet-z"))
    assert [r.fleet_id for r in table][:2] == ["Fleet-z", "fleet"]


def test_apply_refuses_a_sequence_not_above_the_head_and_a_retired_fleet() -> None:
    table = HeadsTable()
    table.apply(row("fleet-a", 5))
    root = table.root()
    for sequence in (5, 4, 0):
        with pytest.raises(HeadsUpdateError, match="want above the head's 5"):
            table.apply(row("fleet-a", sequence))
    table.apply(row("fleet-a", 6, status="retired"))
    with pytest.raises(HeadsUpdateError, match="retired by sequence 6"):
        table.apply(row("fleet-a", 7))
    assert table.get("fleet-a") == row("fleet-a", 6, status="retired") and table.root() != root


def test_neighbours() -> None:
    table = HeadsTable.from_rows([row("b"), row("d"), row("f")])
    assert table.neighbours("a") == (0,)
    assert table.neighbours("c") == (0, 1)
    assert table.neighbours("e") == (1, 2)
    assert table.neighbours("g") == (2,)
    with pytest.raises(KeyError):
        table.neighbours("d")
    with pytest.raises(MalformedHeadsError):
        table.neighbours("not/a/fleet")


def test_from_rows_refuses_two_rows_of_one_fleet() -> None:
    with pytest.raises(HeadsUpdateError, match="twice"):
        HeadsTable.from_rows([row("a"), row("a", 2)])


def test_incremental_tree_matches_the_reference_at_every_size() -> None:
    # Inserts at the front (the worst case), in the middle, at the end and replaces,
    # checked after each: root and every row's proof against RFC 6962 as written.
    table = HeadsTable()
    for i in range(40):
        fleet = f"f{(i * 37) % 101:03d}"
        current = table.get(fleet)
        table.apply(row(fleet, 0 if current is None else current.sequence + 1, i))
        if i % 3 == 0 and table.count > 1:
            first = table.row(0)
            table.apply(row(first.fleet_id, first.sequence + 1, i))
        data = [r.encode() for r in table.rows]
        assert table.root() == mth(data)
        for p in range(table.count):
            assert table.row_proof(p) == path(p, data)
    assert HeadsTable.from_rows(reversed(table.rows)).root() == table.root()


def test_copy_is_independent() -> None:
    table = HeadsTable.from_rows([row("a"), row("c")])
    clone = table.copy()
    clone.apply(row("b"))
    clone.apply(row("a", 2))
    assert table.count == 2 and table.root() == mth([row("a").encode(), row("c").encode()])
    assert clone.root() == mth([row("a", 2).encode(), row("b").encode(), row("c").encode()])


# --- the fold --------------------------------------------------------------------------------


def test_fold_checks_every_heads_leaf() -> None:
    log = MemoryLog()
    log.batch([bundle("fleet-a", 1), bundle("fleet-b", 1)])
    log.batch([bundle("fleet-a", 2)])
    folded = fold(log.leaves)
    assert folded.rows == log.table.rows and folded.root() == log.table.root()
    assert folded.get("fleet-a") == HeadsRow("fleet-a", 2, 3, leaf_hash(log.leaves[3]))


def test_fold_finds_a_lying_heads_leaf() -> None:
    log = MemoryLog()
    log.add_bundles([bundle("fleet-a", 1)])
    log.add_heads(HeadsLeaf(0, 1, H))
    with pytest.raises(HeadsMismatchError, match="HEADS leaf 1"):
        fold(log.leaves)
    assert fold(log.leaves, check_heads=False).count == 1
    wrong_previous = MemoryLog()
    wrong_previous.batch([bundle("fleet-a", 1)])
    wrong_previous.add_bundles([bundle("fleet-a", 2)])
    wrong_previous.add_heads(HeadsLeaf(0, 1, wrong_previous.table.root()))  # previous should be 1
    with pytest.raises(HeadsMismatchError, match="want previous 1"):
        fold(wrong_previous.leaves)


def test_fold_refuses_a_bundle_the_log_should_have_refused() -> None:
    log = MemoryLog()
    log.add_bundles([bundle("fleet-a", 2), bundle("fleet-a", 2, status="retired")], apply=False)
    with pytest.raises(HeadsUpdateError, match="leaf 1: fleet 'fleet-a' sequence: got 2"):
        fold(log.leaves)
    retired = MemoryLog()
    retired.add_bundles([bundle("fleet-a", 2, status="retired"), bundle("fleet-a", 3)], apply=False)
    with pytest.raises(HeadsUpdateError, match="leaf 1: fleet 'fleet-a': retired"):
        fold(retired.leaves)


# --- the proof format --------------------------------------------------------------------------


def _log_and_note() -> tuple[MemoryLog, str]:
    log = MemoryLog()
    log.batch([bundle("fleet-a", 1), bundle("fleet-c", 1)])
    return log, log.checkpoint(KEYS)


def test_build_is_canonical_and_parses_back() -> None:
    log, note = _log_and_note()
    for fleet in ("fleet-a", "fleet-b"):
        data = fleet_head_proof(log, fleet, note)
        parsed = parse_fleet_head_proof(data)
        assert parsed.to_json() == data == canonical(json.loads(data))
        # ASCII: the signature lines' em dash is escaped.
        assert data.isascii() and b"\\u2014 example.com" in data
        assert parsed.present == (fleet == "fleet-a")


def test_parse_accepts_any_layout() -> None:
    log, note = _log_and_note()
    data = fleet_head_proof(log, "fleet-a", note)
    relaid = json.dumps(json.loads(data), indent=3).encode()
    assert parse_fleet_head_proof(relaid) == parse_fleet_head_proof(data)


def test_build_refuses_what_would_not_parse() -> None:
    log, note = _log_and_note()
    heads = HeadsLeafProof(2, log.leaves[2], log.inclusion(2))
    with pytest.raises(ValueError, match="want row and bundle"):
        build_fleet_head_proof("fleet-b", note, heads)
    with pytest.raises(ValueError, match="would not parse"):
        build_fleet_head_proof("fleet-b", note, HeadsLeafProof(2, log.leaves[2][:48], ()), neighbours=[])


@pytest.mark.parametrize("data, why", [
    (b"[]", "got array, want object"),
    (b'{"version": 1}', "missing fields"),
    (b'{"version": "1"}', "version: got '1'"),
    (b'{"version": 1, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "neighbours": {}}', "checkpoint"),
    (b'{"version": 1, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "bundle": {}}', "missing fields"),
    (b"{}" + b" " * 10, "missing fields"),
    (b"x" * (format_module.MAX_FLEET_HEAD_PROOF_BYTES + 1), "want at most"),
])
def test_parse_refuses(data: bytes, why: str) -> None:
    with pytest.raises(FleetHeadFormatError, match=why):
        parse_fleet_head_proof(data)


def test_parse_bounds_the_proof_length_before_decoding() -> None:
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a", note))
    obj["row"]["proof"] = "A" * 4000
    with pytest.raises(FleetHeadFormatError, match="row.proof: got 4000 base64 characters"):
        parse_fleet_head_proof(canonical(obj))


@pytest.mark.parametrize("value", ["1.5", "1e3", "[1.0]", "{\"a\": -0.0}"])
def test_a_number_in_the_envelope_is_a_format_error(value: str) -> None:
    # strict_json keeps fractions as NonInteger; the envelope must refuse them, not crash.
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a", note))
    text = canonical(obj).decode().replace(obj["bundle"]["envelope"]["signatures"][0]["keyid"], "@", 1)
    data = text.replace('"@"', value).encode()
    with pytest.raises(MalformedFleetHeadError, match="bundle.envelope"):
        verify_fleet_head(data, KEYS.policy(), datetime.fromtimestamp(NOW, UTC))


def test_deep_nesting_in_the_envelope_is_a_format_error_at_any_stack_depth() -> None:
    # The envelope is re-serialised for parse_envelope: nesting that the proof's parse
    # just accepted must still fail typed when verification runs deeper in the stack.
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a", note))
    text = canonical(obj).decode().replace(obj["bundle"]["envelope"]["signatures"][0]["keyid"], "@", 1)
    deepest = max(d for d in range(800, 1100, 4) if _parses(text.replace('"@"', "[" * d + "]" * d)))
    data = text.replace('"@"', "[" * deepest + "]" * deepest).encode()
    messages = set()
    for extra in range(0, 200, 5):
        with pytest.raises(MalformedFleetHeadError) as info:
            _at_depth(extra, lambda: verify_fleet_head(data, KEYS.policy(), datetime.fromtimestamp(NOW, UTC)))
        messages.add(str(info.value).split(":")[0])
    assert messages <= {"fleet-head proof", "bundle.envelope"}


def _parses(text: str) -> bool:
    try:
        parse_fleet_head_proof(text)
    except FleetHeadFormatError:
        return False
    return True


def _at_depth(depth: int, call: Callable[[], object]) -> object:
    return call() if depth == 0 else _at_depth(depth - 1, call)


# --- the trust policy's max_age_s ----------------------------------------------------------------


def _write_policy(tmp_path: Path, extra: str) -> Path:
    for authority in KEYS.authorities.all:
        (tmp_path / f"{authority.role}.pem").write_bytes(authority.public_pem)
    (tmp_path / "log.policy").write_text(KEYS.policy_text(True))
    path = tmp_path / "trust.toml"
    path.write_text(
        f'tlog_policy = "log.policy"\n{extra}\n'
        '[[authorities]]\nname = "s"\nrole = "signer"\nkeys = ["signer.pem"]\n'
        '[[authorities]]\nname = "c"\nrole = "countersigner"\nkeys = ["countersigner.pem"]\n'
    )
    return path


def test_trust_policy_max_age_s(tmp_path: Path) -> None:
    assert TrustPolicy.load(_write_policy(tmp_path, "max_age_s = 600")).max_age_s == 600
    assert TrustPolicy.load(_write_policy(tmp_path, "")).max_age_s is None
    for bad in ("0", "-1", "1.5", "true", '"600"', "31700000"):
        with pytest.raises(TrustPolicyError, match="max_age_s: got"):
            TrustPolicy.load(_write_policy(tmp_path, f"max_age_s = {bad}"))


def test_max_age_comes_from_the_policy_unless_given() -> None:
    log, note = _log_and_note()
    data = fleet_head_proof(log, "fleet-a", note)
    at = datetime.fromtimestamp(WITNESSED_AT + 500, UTC)
    assert verify_fleet_head(data, KEYS.policy(max_age_s=600), at).sequence == 1
    assert verify_fleet_head(data, KEYS.policy(max_age_s=60), at, max_age=timedelta(seconds=600)).sequence == 1
    assert verify_fleet_head(data, KEYS.policy(max_age_s=None), at, max_age=501).sequence == 1
    with pytest.raises(ValueError, match="no max_age"):
        verify_fleet_head(data, KEYS.policy(max_age_s=None), at)
    with pytest.raises(TypeError, match="timezone-aware"):
        verify_fleet_head(data, KEYS.policy(), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="fleet_id"):
        verify_fleet_head(data, KEYS.policy(), at, fleet_id="../x")


# --- the verifier's account and the state -------------------------------------------------------


def test_the_checks_are_named_in_order() -> None:
    log, note = _log_and_note()
    checks = CheckLog()
    head = verify_fleet_head(fleet_head_proof(log, "fleet-a", note), KEYS.policy(),
                             datetime.fromtimestamp(NOW, UTC), checks=checks, state=ClientState())
    assert [c.name for c in checks.results] == [
        "fleet_head_format", "fleet_head_fleet", "checkpoint_signature", "witness_quorum", "fleet_head_freshness",
        "heads_leaf", "fleet_head_fleet", "heads_row", "head_bundle", "envelope_signatures", "fleet_head_rollback",
    ]
    assert all(c.ok for c in checks.results)
    assert head.freshness.basis == "witnesses" and dict(head.freshness.witness_times) == {"w1": WITNESSED_AT}
    assert head.checkpoint.signed_at == SIGNED_AT
    assert head.to_dict()["outcome"] == "present"
    absent = CheckLog()
    with pytest.raises(FleetAbsentError) as info:
        verify_fleet_head(fleet_head_proof(log, "fleet-b", note), KEYS.policy(), datetime.fromtimestamp(NOW, UTC),
                          checks=absent)
    assert [c.name for c in absent.results][-2:] == ["heads_row", "fleet_absence"]
    assert info.value.absence.to_dict()["neighbours"] == [{"position": 0, "fleet_id": "fleet-a"},
                                                          {"position": 1, "fleet_id": "fleet-c"}]


def test_the_state_remembers_heads_and_refuses_older_ones(tmp_path: Path) -> None:
    log = MemoryLog()
    log.batch([bundle("fleet-a", 1)])
    old = fleet_head_proof(log, "fleet-a", log.checkpoint(KEYS))
    log.batch([bundle("fleet-a", 2)])
    new = fleet_head_proof(log, "fleet-a", log.checkpoint(KEYS))
    at = datetime.fromtimestamp(NOW, UTC)
    state = ClientState(tmp_path / "state.json")
    assert state.dumps().startswith(b'{\n  "version": 1,')  # no heads: still a version 1 file
    verify_fleet_head(new, KEYS.policy(), at, state=state)
    record = state.head("fleet-a")
    assert record is not None and (record.sequence, record.index, record.status) == (2, 2, "active")
    state.save()
    reloaded = ClientState.load(tmp_path / "state.json")
    assert reloaded.heads == state.heads and json.loads(reloaded.dumps())["version"] == 2
    with pytest.raises(FleetHeadRollbackError, match="got 1, want at least 2"):
        verify_fleet_head(old, KEYS.policy(), at, state=reloaded)
    verify_fleet_head(new, KEYS.policy(), at, state=reloaded)  # the same head again is fine


def test_a_receipt_seen_counts_for_rollback() -> None:
    log = MemoryLog()
    log.batch([bundle("fleet-a", 1)])
    proof = fleet_head_proof(log, "fleet-a", log.checkpoint(KEYS))
    state = ClientState()
    state.record_fleet("fleet-a", 5, b"\x00" * 32, "elsewhere", 9)
    with pytest.raises(FleetHeadRollbackError, match="the accepted bundle seen at index 9"):
        verify_fleet_head(proof, KEYS.policy(), datetime.fromtimestamp(NOW, UTC), state=state)
    # An absence from another log than the one the bundle was seen in is no contradiction.
    absent = fleet_head_proof(log, "fleet-z", log.checkpoint(KEYS))
    state.record_fleet("fleet-z", 1, b"\x00" * 32, "elsewhere", 3)
    with pytest.raises(FleetAbsentError):
        verify_fleet_head(absent, KEYS.policy(), datetime.fromtimestamp(NOW, UTC), state=state)


@pytest.mark.parametrize("heads", [
    {"fleet-a": {"sequence": 1}},
    {"fleet/a": {"sequence": 1, "payload_digest": "00" * 32, "status": "active", "origin": "o", "index": 0}},
    {"fleet-a": {"sequence": 1, "payload_digest": "00" * 32, "status": "gone", "origin": "o", "index": 0}},
    {"fleet-a": {"sequence": -1, "payload_digest": "00" * 32, "status": "active", "origin": "o", "index": 0}},
    [],
])
def test_state_heads_are_parsed_strictly(heads: object) -> None:
    with pytest.raises(StateError):
        ClientState.loads(json.dumps({"version": 2, "logs": {}, "fleets": {}, "heads": heads}))


def test_state_versions() -> None:
    assert ClientState.loads('{"version": 1, "logs": {}, "fleets": {}}').heads == {}
    for bad in ('{"version": 1, "logs": {}, "fleets": {}, "heads": {}}', '{"version": 2, "logs": {}, "fleets": {}}',
                '{"version": 3, "logs": {}, "fleets": {}, "heads": {}}'):
        with pytest.raises(StateError, match="version 1"):
            ClientState.loads(bad)


def test_freshness_without_witnesses_rests_on_the_log() -> None:
    log, note = _log_and_note()
    head = verify_fleet_head(fleet_head_proof(log, "fleet-a", note), KEYS.policy(witnessed=False),
                             datetime.fromtimestamp(SIGNED_AT + MAX_AGE_S, UTC))
    assert head.freshness.rests_on_log_alone and head.freshness.log_time == SIGNED_AT
    assert head.envelope == decode_leaf(log.leaves[0])
