"""Fleet heads (docs/fleet-heads.md), unit by unit: the row and HEADS leaf encodings,
the incremental heads table, the fold, the proof format, the trust policy's
max_age_s, the client state's heads, and the verifier's account of its checks.
The vectors are in test_fleet_head_vectors.py, the properties in
test_fleet_heads_properties.py."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    HEADS_LEAF_TYPE,
    LEGACY_HEADS_LEAF_TYPE,
    HeadsLeaf,
    HeadsMismatchError,
    HeadsRow,
    HeadsTable,
    HeadsUpdateError,
    MalformedHeadsError,
    covers,
    decode_entry,
    decode_heads_leaf,
    decode_leaf,
    decode_row,
    encode_leaf,
    fold,
    is_heads_leaf,
    legacy_sorted_root,
)
from logserver.bundle import payload as payload_module
from logserver.client import (
    AbsenceProofError,
    CheckLog,
    ClientState,
    FleetAbsentError,
    FleetHeadRollbackError,
    HeadsLeafError,
    MalformedFleetHeadError,
    StateError,
    TrustPolicy,
    TrustPolicyError,
    VerifiedFleetAbsence,
    verify_fleet_head,
)
from logserver.formats import FleetHeadFormatError, build_fleet_head_proof, parse_fleet_head_proof
from logserver.formats import fleet_head as format_module
from logserver.formats.fleet_head import HeadsLeafProof, ProvedRow
from logserver.merkle import EMPTY_ROOT, InvalidParameterError, leaf_hash, verify_inclusion
from merkle_reference import mth, path

KEYS = VectorKeys()
H = hashlib.sha256(b"a leaf").digest()


def row(fleet_id: str = "fleet-a", sequence: int = 1, leaf_index: int = 0, status: str = "active") -> HeadsRow:
    return HeadsRow(fleet_id, sequence, leaf_index, hashlib.sha256(f"{fleet_id}/{sequence}".encode()).digest(),
                    status)


# --- independent references -----------------------------------------------------------


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1, written out here on leaf hashes: MTH({}) = SHA-256(), MTH of one
    leaf is its leaf hash, else SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])) with k the
    largest power of two smaller than n. Independent of logserver.merkle."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()  # RFC 6962 §2.1: the leaf hash


def _next_ids(fleet_ids: list[str]) -> dict[str, str]:
    """Each fleet id's successor in byte order, circular: computed here from the
    definition (docs/fleet-heads.md, "The heads tree"), not with the table's code."""
    ordered = sorted(fleet_ids, key=lambda f: f.encode("ascii"))
    return {f: ordered[(i + 1) % len(ordered)] for i, f in enumerate(ordered)}


def _entry_bytes(r: HeadsRow, next_id: str) -> bytes:
    """The HeadsEntry as bundle/heads.py documents it: the HeadsRow bytes, then the next
    fleet id with a one-byte length prefix (RFC 8446 §3 opaque<1..2^8-1>)."""
    key = r.fleet_id.encode("ascii")
    row_bytes = bytes((len(key),)) + key + struct.pack(">QQ", r.sequence, r.leaf_index) + r.leaf_hash + \
        (b"\x01" if r.status == "retired" else b"\x00")
    return row_bytes + bytes((len(next_id),)) + next_id.encode("ascii")


def _entries(rows: Sequence[HeadsRow]) -> list[bytes]:
    """The heads tree's leaves for rows in tree order (first appearance)."""
    following = _next_ids([r.fleet_id for r in rows]) if rows else {}
    return [_entry_bytes(r, following[r.fleet_id]) for r in rows]


def _chained_root(rows: Sequence[HeadsRow]) -> bytes:
    return _mth([_leaf(e) for e in _entries(rows)])


# --- rows and entries --------------------------------------------------------------------


def test_row_encoding_is_the_documented_struct() -> None:
    r = HeadsRow("fleet-a", 3, 5, H, "retired")
    assert r.encode() == b"\x07fleet-a" + struct.pack(">QQ", 3, 5) + H + b"\x01"
    assert decode_row(r.encode()) == r
    # Release 0.2.0's leaf hash (the sorted layout) is of the row alone.
    assert r.legacy_tree_hash() == _leaf(r.encode())
    assert not hasattr(r, "tree_hash")  # renamed: no caller may hash a row as a chained leaf
    assert HeadsRow("f", 0, 0, H).encode()[-1] == 0  # active


def test_entry_encoding_is_the_row_then_the_next_fleet_id() -> None:
    r = HeadsRow("fleet-a", 3, 5, H, "retired")
    entry = r.entry("fleet-bb")
    assert entry == r.encode() + b"\x08fleet-bb" == _entry_bytes(r, "fleet-bb")
    assert r.entry_hash("fleet-bb") == _leaf(entry) != r.legacy_tree_hash()
    assert decode_entry(entry) == (r, "fleet-bb")
    # A lone row names itself; the longest fleet id fits the one-byte prefix.
    assert decode_entry(r.entry("fleet-a")) == (r, "fleet-a")
    longest = "n" * 128
    assert r.entry(longest)[-129:] == b"\x80" + longest.encode() and decode_entry(r.entry(longest))[1] == longest


@pytest.mark.parametrize("next_id", ["", ".", "..", "fleet/a", "fleet a", "n" * 129, "fl\u00e9et", None, b"fleet-b"])
def test_entry_refuses_a_next_fleet_id_no_payload_may_carry(next_id: object) -> None:
    with pytest.raises(MalformedHeadsError, match="next_fleet_id: got"):
        HeadsRow("fleet-a", 3, 5, H).entry(next_id)  # type: ignore[arg-type]


_ROW = HeadsRow("fleet-a", 3, 5, H).encode()


@pytest.mark.parametrize("data, why", [
    (b"", "entry: got 0 bytes, want the bytes of a row and a next fleet id"),
    (bytearray(_ROW + b"\x01b"), "entry: got bytearray, want the bytes"),
    (_ROW, "want a 57-byte row and a next fleet id"),
    (_ROW[:-1], "want a 57-byte row"),
    (_ROW + b"\x01b\x00", "got 60 bytes, want 59 for a 1-byte next fleet id"),
    (_ROW + b"\x02b", "got 59 bytes, want 60 for a 2-byte"),
    (_ROW + b"\x01", "got 58 bytes, want 59"),
    (_ROW + b"\x00", "next_fleet_id: got '', want a payload's fleet id"),
    (_ROW + b"\x07fleet/b", "next_fleet_id: got 'fleet/b'"),
    (_ROW + b"\x02..", "next_fleet_id: got '..'"),
    (_ROW + b"\x07fleet-\xe9", "next_fleet_id: got non-ASCII"),
    (_ROW + bytes([129]) + b"b" * 129, "next_fleet_id: got 'bbb"),
    (_ROW[:-1] + b"\x02" + b"\x01b", "status: got byte 2"),
    (b"\x07fleet/a" + _ROW[8:] + b"\x01b", "row fleet_id"),
    (b"\x09fleet-a" + _ROW[8:] + b"\x01b", "want a 59-byte row"),
])
def test_entry_decoding_is_strict(data: bytes, why: str) -> None:
    with pytest.raises(MalformedHeadsError, match=why):
        decode_entry(data)


@pytest.mark.parametrize("data, why", [
    (b"", "want bytes"),
    (_ROW + b"\x00", "want 57"),
    (_ROW[:-1], "want 57"),
    (_ROW[:-1] + b"\x02", "status: got byte 2"),
    (b"\x07fleet/a" + bytes(49), "fleet_id"),
    (b"\x00" + bytes(49), "fleet_id"),
    (b"\x02.." + bytes(49), "fleet_id"),
    (b"\x07fleet-\xe9" + bytes(49), "non-ASCII"),
    (bytes([129]) + b"a" * 129 + bytes(49), "fleet_id"),
    (b"\x01a" + struct.pack(">QQ", 2**63, 0) + H + b"\x00", "sequence"),
    (b"\x01a" + struct.pack(">QQ", 0, 2**64 - 1) + H + b"\x00", "leaf_index"),
    (HeadsRow("fleet-a", 3, 5, H).entry("fleet-b"), "want 57"),  # an entry is not a row
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
    assert (HEADS_LEAF_TYPE, LEGACY_HEADS_LEAF_TYPE) == (3, 2)
    leaf = HeadsLeaf(7, 5, H)
    data = leaf.encode()
    assert len(data) == HEADS_LEAF_SIZE == 49
    assert data == b"\x03" + struct.pack(">QQ", 7, 5) + H
    assert decode_heads_leaf(data) == leaf and is_heads_leaf(data)
    assert leaf.layout == 3 and not leaf.legacy
    assert not is_heads_leaf(encode_leaf(bundle("fleet-a", 1)))  # a bundle leaf starts with version 1
    assert decode_heads_leaf(HeadsLeaf(0, 0, EMPTY_ROOT).encode()).count == 0


def test_a_type_2_heads_leaf_decodes_as_release_0_2_0s() -> None:
    data = b"\x02" + struct.pack(">QQ", 7, 5) + H
    legacy = decode_heads_leaf(data)
    assert legacy == HeadsLeaf(7, 5, H, LEGACY_HEADS_LEAF_TYPE) and legacy.legacy and legacy.layout == 2
    assert legacy.encode() == data and is_heads_leaf(data)
    assert legacy != HeadsLeaf(7, 5, H)  # the same numbers in the other layout are another leaf


@pytest.mark.parametrize("first", [0, 1, 4, 5, 0x7B, 255])
def test_other_heads_leaf_types_are_refused(first: int) -> None:
    data = bytes((first,)) + HeadsLeaf(7, 5, H).encode()[1:]
    with pytest.raises(MalformedHeadsError, match=f"type: got {first}, want 3 \\(or 2"):
        decode_heads_leaf(data)
    with pytest.raises(MalformedHeadsError, match=f"type: got {first}"):
        HeadsLeaf(7, 5, H, first)
    assert is_heads_leaf(data) is False


@pytest.mark.parametrize("data, why", [
    (HeadsLeaf(7, 5, H).encode() + b"\x00", "got 50 bytes"),
    (HeadsLeaf(7, 5, H).encode()[:48], "got 48 bytes"),
    (b"\x03" + struct.pack(">QQ", 2**63, 5) + H, "previous"),
    (b"\x03" + struct.pack(">QQ", 0, 2**63) + H, "count"),
    (b"\x03" + struct.pack(">QQ", 0, 0) + H, "empty tree"),
    (b"\x02" + struct.pack(">QQ", 0, 0) + H, "empty tree"),
    (b"\x02" + struct.pack(">QQ", 0, 2**63) + H, "count"),
])
def test_heads_leaf_decoding_is_strict(data: bytes, why: str) -> None:
    with pytest.raises(MalformedHeadsError, match=why):
        decode_heads_leaf(data)


# --- the table ------------------------------------------------------------------------------


def test_empty_table() -> None:
    table = HeadsTable()
    assert table.count == 0 and table.root() == EMPTY_ROOT == _mth([]) == mth([])
    assert table.covering("fleet-a") is None and table.position("fleet-a") is None
    with pytest.raises(InvalidParameterError):
        table.row_proof(0)
    with pytest.raises(IndexError):
        table.next_fleet_id(0)
    assert HeadsTable.from_rows([]).root() == EMPTY_ROOT


def test_positions_are_the_order_fleets_first_appeared() -> None:
    table = HeadsTable()
    for fleet in ("fleet-m", "fleet-c", "fleet-x", "fleet-a"):
        table.apply(row(fleet))
    assert [r.fleet_id for r in table] == ["fleet-m", "fleet-c", "fleet-x", "fleet-a"]
    assert [table.position(f) for f in ("fleet-m", "fleet-c", "fleet-x", "fleet-a")] == [0, 1, 2, 3]
    # A known fleet's newer row replaces its entry in place.
    assert table.apply(row("fleet-m", 2, 9)) == 0
    assert table.get("fleet-m") == row("fleet-m", 2, 9) and table.row(0) == row("fleet-m", 2, 9)
    assert [r.fleet_id for r in table.rows] == ["fleet-m", "fleet-c", "fleet-x", "fleet-a"]
    # A new fleet is appended, wherever it sorts.
    assert table.apply(row("Fleet-z")) == 4 and table.apply(row("fleet")) == 5
    assert table.root() == _chained_root(table.rows) == mth(_entries(table.rows))
    # The tree is over first-appearance order: the same rows sorted are another tree.
    assert table.root() != _chained_root(sorted(table.rows, key=lambda r: r.key))


def test_next_fleet_id_is_the_successor_in_byte_order_circular() -> None:
    table = HeadsTable()
    table.apply(row("fleet-m"))
    assert table.next_fleet_id(0) == "fleet-m"  # a lone row names itself
    table.apply(row("fleet-c"))
    assert [table.next_fleet_id(p) for p in range(2)] == ["fleet-c", "fleet-m"]  # the greatest names the smallest
    for fleet in ("fleet-x", "fleet", "Fleet-z", "fleet-", "fleet-m0"):
        table.apply(row(fleet))
    # Bytes order: a proper prefix first, upper case (0x46) before lower case (0x66).
    links = {table.row(p).fleet_id: table.next_fleet_id(p) for p in range(table.count)}
    assert links == {"Fleet-z": "fleet", "fleet": "fleet-", "fleet-": "fleet-c", "fleet-c": "fleet-m",
                     "fleet-m": "fleet-m0", "fleet-m0": "fleet-x", "fleet-x": "Fleet-z"}
    assert links == _next_ids(list(links))
    proved = table.proved_row(table.position("fleet-x"))
    assert (proved.fleet_id, proved.next_fleet_id, proved.position) == ("fleet-x", "Fleet-z", 2)


def test_covering() -> None:
    # Positions (first appearance) differ from the byte order: f, b, d.
    table = HeadsTable()
    for fleet in ("f", "b", "d"):
        table.apply(row(fleet))
    assert table.covering("a") == 0  # before the first: the wrapping link f -> b
    assert table.covering("c") == 1  # between: b -> d
    assert table.covering("e") == 2  # between: d -> f
    assert table.covering("g") == 0  # after the last: f -> b again
    assert table.covering("b0") == 1 and table.covering("B") == 0  # 'B' (0x42) sorts before 'b'
    for present in ("b", "d", "f"):
        with pytest.raises(KeyError, match=f"fleet '{present}' has a row at position"):
            table.covering(present)
    with pytest.raises(MalformedHeadsError, match="fleet_id: got"):
        table.covering("not/a/fleet")
    lone = HeadsTable.from_rows([row("m")])
    assert lone.covering("a") == lone.covering("z") == 0 and lone.next_fleet_id(0) == "m"


@pytest.mark.parametrize("absent", ["0", "A", "a", "b0", "c", "cc", "e", "f-", "g", "zzz", "-", "::", "_"])
def test_exactly_one_link_covers_an_absent_fleet_and_it_is_the_covering_row(absent: str) -> None:
    table = HeadsTable.from_rows([row(f) for f in ("f", "b", "d", "cb")])
    links = [(table.row(p).fleet_id, table.next_fleet_id(p)) for p in range(table.count)]
    covering = [p for p, (a, b) in enumerate(links) if covers(a, b, absent)]
    assert covering == [table.covering(absent)]


@pytest.mark.parametrize("a, b, x, want", [
    # An ascending link covers exactly the ids strictly between its ends.
    ("b", "d", "c", True), ("b", "d", "b", False), ("b", "d", "d", False), ("b", "d", "a", False),
    ("b", "d", "e", False), ("b", "d", "bz", True), ("b", "d", "d0", False),
    # The wrapping link (greatest -> smallest) covers ids above its start or below its end.
    ("f", "b", "g", True), ("f", "b", "a", True), ("f", "b", "f", False), ("f", "b", "b", False),
    ("f", "b", "c", False), ("f", "b", "f0", True), ("f", "b", "A", True),
    # A lone row's link to itself covers every other id.
    ("m", "m", "a", True), ("m", "m", "z", True), ("m", "m", "m", False), ("m", "m", "m0", True),
    # Byte order: a proper prefix sorts first; 'Z' (0x5a) < '_' (0x5f) < 'a' (0x61).
    ("fleet", "fleet-a", "fleet-", True), ("fleet-", "fleet-a", "fleet", False), ("Z", "a", "_", True),
    ("A", "a", "b", False), ("A", "a", "B", True),
])
def test_covers_truth_table(a: str, b: str, x: str, want: bool) -> None:
    assert covers(a, b, x) is want


def test_apply_refuses_a_sequence_not_above_the_head_and_a_retired_fleet() -> None:
    table = HeadsTable()
    table.apply(row("fleet-a", 5))
    table.apply(row("fleet-b", 1))
    root = table.root()
    for sequence in (5, 4, 0):
        with pytest.raises(HeadsUpdateError, match="want above the head's 5"):
            table.apply(row("fleet-a", sequence))
    assert table.root() == root and table.rows == (row("fleet-a", 5), row("fleet-b", 1))  # unchanged
    table.apply(row("fleet-a", 6, status="retired"))
    with pytest.raises(HeadsUpdateError, match="retired by sequence 6"):
        table.apply(row("fleet-a", 7))
    assert table.get("fleet-a") == row("fleet-a", 6, status="retired") and table.root() != root
    assert table.root() == _chained_root(table.rows)
    with pytest.raises(TypeError, match="want HeadsRow"):
        table.apply(("fleet-c", 1))  # type: ignore[arg-type]


def test_from_rows_refuses_two_rows_of_one_fleet() -> None:
    with pytest.raises(HeadsUpdateError, match="twice"):
        HeadsTable.from_rows([row("a"), row("b"), row("a", 2)])
    with pytest.raises(TypeError, match="want HeadsRow"):
        HeadsTable.from_rows([row("a"), "b"])  # type: ignore[list-item]


def _leaf_hashes(table: HeadsTable) -> list[bytes]:
    """The heads tree's leaf hashes, from the definition (not from the table), checked to
    be the table's: each one's inclusion proof leads to the table's root."""
    hashes = [_leaf(e) for e in _entries(table.rows)]
    for p, h in enumerate(hashes):
        verify_inclusion(p, table.count, h, table.row_proof(p), table.root())
    return hashes


@pytest.mark.parametrize("new", ["a", "c", "e", "g", "dd"])
def test_a_new_fleet_changes_exactly_its_own_entry_and_its_predecessors(new: str) -> None:
    table = HeadsTable.from_rows([row(f) for f in ("d", "f", "b")])
    before = _leaf_hashes(table)
    p = table.apply(row(new))
    after = _leaf_hashes(table)
    assert p == 3 and len(after) == 4
    changed = {q for q in range(3) if before[q] != after[q]}
    # The predecessor in byte order (the greatest, 'f', when the new id sorts first or last).
    predecessor = max((r for r in ("b", "d", "f") if r < new), default="f")
    assert changed == {table.position(predecessor)}
    assert table.next_fleet_id(table.position(predecessor)) == new
    # A known fleet's newer row changes its own entry only.
    table.apply(row("d", 2))
    again = _leaf_hashes(table)
    assert {q for q in range(4) if after[q] != again[q]} == {table.position("d")}


def test_the_second_fleet_changes_the_lone_rows_self_link() -> None:
    table = HeadsTable.from_rows([row("m")])
    lone = _leaf_hashes(table)
    assert lone == [_leaf(row("m").entry("m"))]
    table.apply(row("c"))
    assert _leaf_hashes(table) == [_leaf(row("m").entry("c")), _leaf(row("c").entry("m"))]


def test_incremental_tree_matches_the_reference_at_every_size() -> None:
    # New fleets sorting first, in the middle and last, and replaces, checked after each:
    # root and every entry's proof against RFC 6962 as written (merkle_reference).
    table = HeadsTable()
    for i in range(40):
        fleet = f"f{(i * 37) % 101:03d}"
        current = table.get(fleet)
        table.apply(row(fleet, 0 if current is None else current.sequence + 1, i))
        if i % 3 == 0 and table.count > 1:
            first = table.row(0)
            table.apply(row(first.fleet_id, first.sequence + 1, i))
        data = _entries(table.rows)
        assert table.root() == mth(data) == _mth([_leaf(e) for e in data])
        for p in range(table.count):
            assert table.row_proof(p) == path(p, data)
    assert HeadsTable.from_rows(table.rows).root() == table.root()
    assert HeadsTable.from_rows(reversed(table.rows)).root() != table.root()  # the order is the tree's


def test_copy_is_independent() -> None:
    table = HeadsTable.from_rows([row("a"), row("c")])
    clone = table.copy()
    clone.apply(row("b"))
    clone.apply(row("a", 2))
    assert table.count == 2 and table.root() == mth([row("a").entry("c"), row("c").entry("a")])
    assert clone.root() == mth([row("a", 2).entry("b"), row("c").entry("a"), row("b").entry("c")])
    assert table.covering("b") == 0 and clone.position("b") == 2


# --- release 0.2.0's sorted root ----------------------------------------------------------------


@pytest.mark.parametrize("fleets", [[], ["m"], ["b", "a"], ["c", "a", "b"], ["e", "a", "d", "b", "c"],
                                    [f"f{i * 7 % 11:02d}" for i in range(11)]])
def test_legacy_sorted_root_is_the_mth_of_the_sorted_rows(fleets: list[str]) -> None:
    rows = [row(f, i, i) for i, f in enumerate(fleets)]
    ordered = sorted(rows, key=lambda r: r.fleet_id.encode("ascii"))
    want = _mth([_leaf(r.encode()) for r in ordered])
    assert legacy_sorted_root(rows) == legacy_sorted_root(reversed(rows)) == want
    assert legacy_sorted_root(HeadsTable.from_rows(rows)) == want
    if rows:
        assert want != HeadsTable.from_rows(rows).root()  # the layouts never share a root


# --- the fold --------------------------------------------------------------------------------


def test_fold_checks_every_heads_leaf() -> None:
    log = MemoryLog()
    log.batch([bundle("fleet-b", 1), bundle("fleet-a", 1)])
    log.batch([bundle("fleet-a", 2)])
    folded = fold(log.leaves)
    assert folded.rows == log.table.rows and folded.root() == log.table.root()
    assert [r.fleet_id for r in folded] == ["fleet-b", "fleet-a"]  # first appearance
    assert folded.get("fleet-a") == HeadsRow("fleet-a", 2, 3, leaf_hash(log.leaves[3]))
    assert [decode_heads_leaf(log.leaves[i]).layout for i in (2, 4)] == [3, 3]


def _legacy_heads(log: MemoryLog) -> HeadsLeaf:
    """The type-2 HEADS leaf release 0.2.0 would have written for the log's table."""
    return HeadsLeaf(log.previous, log.table.count, legacy_sorted_root(log.table.rows), LEGACY_HEADS_LEAF_TYPE)


def _upgraded_log() -> MemoryLog:
    """A log that ran release 0.2.0 (type-2 HEADS leaves over the sorted layout), then
    this release (type-3 leaves over the chained layout), fleets not in sorted order."""
    log = MemoryLog()
    log.add_bundles([bundle("fleet-m", 1), bundle("fleet-c", 1)])
    log.add_heads(_legacy_heads(log))  # 2
    log.add_bundles([bundle("fleet-x", 1), bundle("fleet-c", 2)])
    log.add_heads(_legacy_heads(log))  # 5
    log.batch([bundle("fleet-a", 1), bundle("fleet-m", 2)])  # HEADS 8, type 3, previous 5
    log.batch([bundle("fleet-b", 1)])  # HEADS 10, previous 8
    return log


def test_a_log_with_type_2_then_type_3_heads_leaves_folds_clean() -> None:
    log = _upgraded_log()
    assert [log.leaves[i][0] for i in (2, 5, 8, 10)] == [2, 2, 3, 3]
    assert [decode_heads_leaf(log.leaves[i]).previous for i in (2, 5, 8, 10)] == [0, 2, 5, 8]
    folded = fold(log.leaves)
    assert folded.rows == log.table.rows and folded.root() == log.table.root()
    assert [r.fleet_id for r in folded] == ["fleet-m", "fleet-c", "fleet-x", "fleet-a", "fleet-b"]


@pytest.mark.parametrize("lie", ["chained-root-as-type-2", "count", "previous", "sorted-root-as-type-3",
                                 "rows-in-first-appearance-order"])
def test_a_wrong_type_2_heads_leaf_is_a_mismatch(lie: str) -> None:
    log = MemoryLog()
    log.add_bundles([bundle("fleet-m", 1), bundle("fleet-c", 1)])
    log.add_heads(_legacy_heads(log))
    log.add_bundles([bundle("fleet-a", 1)])
    honest = _legacy_heads(log)
    first_appearance = _mth([_leaf(r.encode()) for r in log.table.rows])
    wrong = {
        "chained-root-as-type-2": HeadsLeaf(honest.previous, honest.count, log.table.root(), 2),
        "count": HeadsLeaf(honest.previous, honest.count - 1, honest.root, 2),
        "previous": HeadsLeaf(0, honest.count, honest.root, 2),
        "sorted-root-as-type-3": HeadsLeaf(honest.previous, honest.count, honest.root, 3),
        "rows-in-first-appearance-order": HeadsLeaf(honest.previous, honest.count, first_appearance, 2),
    }[lie]
    assert wrong != honest
    log.add_heads(wrong)
    with pytest.raises(HeadsMismatchError, match=f"HEADS leaf 4 \\(type {wrong.layout}\\)"):
        fold(log.leaves)
    assert fold(log.leaves, check_heads=False).rows == log.table.rows
    # The honest type-2 leaf in its place folds clean.
    log.pop()
    log.previous = 2
    log.add_heads(honest)
    assert fold(log.leaves).root() == log.table.root()


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
    # A lone row that does not name itself: the link an honest table never has.
    self_link = MemoryLog()
    self_link.add_bundles([bundle("fleet-a", 1)])
    a = self_link.table.row(0)
    self_link.add_heads(HeadsLeaf(0, 1, _mth([_leaf(a.entry("fleet-b"))])))
    with pytest.raises(HeadsMismatchError, match="HEADS leaf 1"):
        fold(self_link.leaves)


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
        assert parsed.present == (fleet == "fleet-a") and parsed.version == 2


def test_the_v2_document_carries_next_fleet_ids_and_one_covering_row() -> None:
    log, note = _log_and_note()  # fleet-a at 0, fleet-c at 1
    present = json.loads(fleet_head_proof(log, "fleet-a", note))
    assert set(present) == {"version", "fleet_id", "checkpoint", "heads_leaf", "row", "bundle"}
    assert present["version"] == 2 and present["row"]["next_fleet_id"] == "fleet-c"
    assert set(present["row"]) == {"position", "fleet_id", "sequence", "leaf_index", "leaf_hash", "status",
                                   "next_fleet_id", "proof"}
    for asked, covering, next_id in (("fleet-b", "fleet-a", "fleet-c"), ("aaa", "fleet-c", "fleet-a"),
                                     ("zeta", "fleet-c", "fleet-a")):
        absent = json.loads(fleet_head_proof(log, asked, note))
        assert set(absent) == {"version", "fleet_id", "checkpoint", "heads_leaf", "covering"}
        assert (absent["covering"]["fleet_id"], absent["covering"]["next_fleet_id"]) == (covering, next_id)
        parsed = parse_fleet_head_proof(canonical(absent))
        assert parsed.covering is not None and parsed.covering.next_fleet_id == next_id and parsed.row is None
    empty = MemoryLog()
    empty.add_heads(HeadsLeaf(0, 0, EMPTY_ROOT))
    nothing = json.loads(fleet_head_proof(empty, "fleet-a", empty.checkpoint(KEYS)))
    assert nothing["covering"] is None and parse_fleet_head_proof(canonical(nothing)).covering is None


def test_parse_accepts_any_layout() -> None:
    log, note = _log_and_note()
    data = fleet_head_proof(log, "fleet-a", note)
    relaid = json.dumps(json.loads(data), indent=3).encode()
    assert parse_fleet_head_proof(relaid) == parse_fleet_head_proof(data)


def test_build_refuses_what_would_not_parse() -> None:
    log, note = _log_and_note()
    heads = HeadsLeafProof(2, log.leaves[2], log.inclusion(2))
    covering = log.table.proved_row(0)
    with pytest.raises(ValueError, match="want row and bundle"):
        build_fleet_head_proof("fleet-b", note, heads)  # neither kind
    with pytest.raises(ValueError, match="want row and bundle"):
        build_fleet_head_proof("fleet-b", note, heads, covering=covering)  # a covering row, not absent=True
    with pytest.raises(ValueError, match="want row and bundle"):
        build_fleet_head_proof("fleet-a", note, heads, row=covering, absent=True)
    with pytest.raises(ValueError, match="would not parse"):
        build_fleet_head_proof("fleet-b", note, HeadsLeafProof(2, log.leaves[2][:48], ()), absent=True)
    assert parse_fleet_head_proof(build_fleet_head_proof("fleet-b", note, heads, absent=True,
                                                         covering=covering)).covering == covering


_V1_ABSENT = (b'{"version": 1, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, '
              b'"neighbours": [{"position": 0}]}')


@pytest.mark.parametrize("data, why", [
    (b"[]", "got array, want object"),
    (b'{"version": 2}', "missing fields"),
    (b'{"version": "2"}', "version: got '2'"),
    # Release 0.2.0's format is refused by its version number, before its fields are read.
    (b'{"version": 1}', "version: got 1, want 2"),
    (_V1_ABSENT, "version: got 1, want 2"),
    (b'{"version": 3, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "covering": null}',
     "version: got 3, want 2"),
    # Version 2 with v1's field: "neighbours" is unknown, "covering" missing.
    (_V1_ABSENT.replace(b'"version": 1', b'"version": 2'),
     r"unknown fields \['neighbours'\], missing fields \['covering'\]"),
    (b'{"version": 2, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "covering": {}}', "checkpoint"),
    (b'{"version": 2, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "bundle": {}}', "missing fields"),
    (b'{"version": 2, "fleet_id": "a", "checkpoint": "x", "heads_leaf": {}, "covering": null, "row": {}}',
     "missing fields"),
    (b"{}" + b" " * 10, "missing fields"),
    (b"x" * (format_module.MAX_FLEET_HEAD_PROOF_BYTES + 1), "want at most"),
])
def test_parse_refuses(data: bytes, why: str) -> None:
    with pytest.raises(FleetHeadFormatError, match=why):
        parse_fleet_head_proof(data)


@pytest.mark.parametrize("where", ["row", "covering"])
@pytest.mark.parametrize("mutate, why", [
    (lambda r: r.pop("next_fleet_id"), r"missing fields \['next_fleet_id'\]"),
    (lambda r: r.update(next_fleet_id=None), "next_fleet_id: got null"),
    (lambda r: r.update(next_fleet_id=""), "next_fleet_id: got ''"),
    (lambda r: r.update(next_fleet_id="fleet/c"), "next_fleet_id: got 'fleet/c'"),
    (lambda r: r.update(next_fleet_id=".."), "next_fleet_id: got '..'"),
    (lambda r: r.update(next_fleet_id="c" * 129), "next_fleet_id: got 'ccc"),
    (lambda r: r.update(neighbours=[]), r"unknown fields \['neighbours'\]"),
])
def test_parse_refuses_a_bad_next_fleet_id(where: str, mutate: Callable[[dict[str, Any]], None], why: str) -> None:
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a" if where == "row" else "fleet-b", note))
    mutate(obj[where])
    with pytest.raises(FleetHeadFormatError, match=f"{where}"):
        parse_fleet_head_proof(canonical(obj))
    with pytest.raises(FleetHeadFormatError, match=why):
        parse_fleet_head_proof(canonical(obj))


def test_parse_refuses_a_covering_that_is_not_a_row_or_null() -> None:
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-b", note))
    for value, why in (([obj["covering"]], "covering: got array, want object"), ("x", "covering: got string"),
                       (0, "covering: got integer")):
        with pytest.raises(FleetHeadFormatError, match=why):
            parse_fleet_head_proof(canonical(dict(obj, covering=value)))


def test_parse_bounds_the_proof_length_before_decoding() -> None:
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a", note))
    obj["row"]["proof"] = "A" * 4000
    with pytest.raises(FleetHeadFormatError, match=r"row\.proof: got 4000 base64 characters"):
        parse_fleet_head_proof(canonical(obj))


@pytest.mark.parametrize("value", ["1.5", "1e3", "[1.0]", "{\"a\": -0.0}"])
def test_a_number_in_the_envelope_is_a_format_error(value: str) -> None:
    # strict_json keeps fractions as NonInteger; the envelope must refuse them, not crash.
    log, note = _log_and_note()
    obj = json.loads(fleet_head_proof(log, "fleet-a", note))
    text = canonical(obj).decode().replace(obj["bundle"]["envelope"]["signatures"][0]["keyid"], "@", 1)
    data = text.replace('"@"', value).encode()
    with pytest.raises(MalformedFleetHeadError, match=r"bundle\.envelope"):
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
    assert all(c.ok for c in absent.results)
    absence = info.value.absence
    assert absence.to_dict()["covering"] == {"position": 0, "fleet_id": "fleet-a", "next_fleet_id": "fleet-c"}
    assert absence.to_dict()["outcome"] == "absent" and "neighbours" not in absence.to_dict()
    assert (absence.covering, absence.next_fleet_id, absence.position) == (log.table.row(0), "fleet-c", 0)
    assert (absence.heads.count, absence.heads_index) == (2, 2)


def _absence(log: MemoryLog, asked: str) -> VerifiedFleetAbsence:
    with pytest.raises(FleetAbsentError) as info:
        verify_fleet_head(fleet_head_proof(log, asked, log.checkpoint(KEYS)), KEYS.policy(),
                          datetime.fromtimestamp(NOW, UTC), fleet_id=asked)
    return info.value.absence


def test_absence_outcomes_name_the_covering_link() -> None:
    log = MemoryLog()
    log.batch([bundle("fleet-m", 1), bundle("fleet-c", 1), bundle("fleet-x", 1)])  # positions m 0, c 1, x 2
    for asked, covering, next_id, position in (("fleet-d", "fleet-c", "fleet-m", 1),
                                               ("fleet-n", "fleet-m", "fleet-x", 0),
                                               ("fleet-a", "fleet-x", "fleet-c", 2),  # before the first: wraps
                                               ("fleet-z", "fleet-x", "fleet-c", 2)):  # after the last: wraps
        absence = _absence(log, asked)
        assert absence.covering is not None
        assert (absence.covering.fleet_id, absence.next_fleet_id, absence.position) == (covering, next_id, position)
        assert absence.covering == log.table.row(position)
    lone = MemoryLog()
    lone.batch([bundle("fleet-m", 4)])
    for asked in ("fleet-a", "fleet-z"):
        absence = _absence(lone, asked)
        assert absence.covering is not None and (absence.covering.fleet_id, absence.next_fleet_id) == \
            ("fleet-m", "fleet-m")
    empty = MemoryLog()
    empty.add_heads(HeadsLeaf(0, 0, EMPTY_ROOT))
    absence = _absence(empty, "fleet-a")
    assert (absence.covering, absence.next_fleet_id, absence.position) == (None, None, None)
    assert absence.to_dict()["covering"] is None


def _forged(log: MemoryLog, links: dict[str, str]) -> tuple[list[bytes], list[HeadsRow]]:
    """The entries of the log's rows with the chain links `links` (fleet -> next id),
    which an honest table never has."""
    rows = list(log.table.rows)
    return [r.entry(links[r.fleet_id]) for r in rows], rows


def _forged_absence(log: MemoryLog, asked: str, links: dict[str, str], covering: str) -> bytes:
    """A log whose HEADS leaf commits to entries with forged links, and the absence
    proof of `asked` with the row of `covering` (its proof valid in that tree)."""
    entries, rows = _forged(log, links)
    log.add_heads(HeadsLeaf(log.previous, len(rows), mth(entries)))
    note = log.checkpoint(KEYS)
    p = [r.fleet_id for r in rows].index(covering)
    r = rows[p]
    proved = ProvedRow(p, r.fleet_id, r.sequence, r.leaf_index, r.leaf_hash, r.status, tuple(path(p, entries)),
                       links[covering])
    size = log.size
    heads = HeadsLeafProof(size - 1, log.leaves[size - 1], log.inclusion(size - 1, size))
    return build_fleet_head_proof(asked, note, heads, absent=True, covering=proved)


def test_the_client_refuses_a_self_link_in_a_larger_table_and_a_lone_row_linking_elsewhere() -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    two = MemoryLog()
    two.add_bundles([bundle("fleet-m", 1), bundle("fleet-c", 1)])
    # fleet-m's link to itself would cover every other id: refused in a table of 2 rows.
    proof = _forged_absence(two, "fleet-d", {"fleet-m": "fleet-m", "fleet-c": "fleet-m"}, "fleet-m")
    checks = CheckLog()
    with pytest.raises(AbsenceProofError, match="got next fleet id 'fleet-m' in a table of 2 rows, want another"):
        verify_fleet_head(proof, KEYS.policy(), at, checks=checks)
    assert [(c.name, c.ok) for c in checks.results][-2:] == [("heads_row", True), ("fleet_absence", False)]
    one = MemoryLog()
    one.add_bundles([bundle("fleet-m", 1)])
    # A lone row must name itself: a link m -> p would leave the ids after p uncovered.
    proof = _forged_absence(one, "fleet-n", {"fleet-m": "fleet-p"}, "fleet-m")
    with pytest.raises(AbsenceProofError, match="in a table of 1 rows, want itself"):
        verify_fleet_head(proof, KEYS.policy(), at)


def test_the_client_alone_accepts_a_link_that_skips_an_existing_fleet() -> None:
    # The soundness boundary (docs/fleet-heads.md, "Soundness"): a log that commits to a
    # link a -> e while fleet-c has a row makes a consistent absence proof of fleet-c;
    # the client cannot see it; the fold of the log (test_fleet_heads_adversarial.py,
    # the monitor) can.
    log = MemoryLog()
    log.add_bundles([bundle("fleet-a", 1), bundle("fleet-c", 1), bundle("fleet-e", 1)])
    links = {"fleet-a": "fleet-e", "fleet-c": "fleet-e", "fleet-e": "fleet-a"}
    proof = _forged_absence(log, "fleet-c", links, "fleet-a")
    with pytest.raises(FleetAbsentError) as info:
        verify_fleet_head(proof, KEYS.policy(), datetime.fromtimestamp(NOW, UTC))
    assert info.value.absence.heads.count == 3 and info.value.absence.next_fleet_id == "fleet-e"
    with pytest.raises(HeadsMismatchError, match="HEADS leaf 3"):
        fold(log.leaves)


def test_a_type_2_heads_leaf_is_refused_by_the_client() -> None:
    # A log that ran 0.2.0 and has not yet appended a batch since: its last HEADS leaf is
    # type 2. No proof is made or accepted at it, even one whose other parts verify.
    log = MemoryLog()
    log.add_bundles([bundle("fleet-a", 1), bundle("fleet-c", 1)])
    log.add_heads(_legacy_heads(log))
    assert fold(log.leaves).root() == log.table.root()  # a valid leaf of the log
    note = log.checkpoint(KEYS)
    for asked in ("fleet-a", "fleet-b"):
        checks = CheckLog()
        with pytest.raises(HeadsLeafError, match=r"got type 2 \(release 0\.2\.0's sorted layout\), want 3"):
            verify_fleet_head(fleet_head_proof(log, asked, note), KEYS.policy(), datetime.fromtimestamp(NOW, UTC),
                              checks=checks)
        assert [(c.name, c.ok) for c in checks.results][-1] == ("heads_leaf", False)


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
