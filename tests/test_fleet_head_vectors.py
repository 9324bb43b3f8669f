"""The fleet-head test vectors of tests/testdata/fleet-heads/ (README.md there): every
vector gives its expected outcome under `verify_fleet_head`, the files on disk are
exactly as many as counted (and as the README lists and counts), and regenerating them
(tests/fleet_head_vectors.py) gives the committed bytes."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

import fleet_head_vectors
from logserver.bundle import HeadsRow, encode_leaf, parse_envelope
from logserver.bundle.heads import LEGACY_HEADS_LEAF_TYPE, decode_heads_leaf
from logserver.client import (
    ClientState,
    FleetAbsentError,
    FleetRetiredError,
    TrustPolicy,
    VerificationFailure,
    verify_fleet_head,
)
from logserver.formats import parse_checkpoint, parse_note
from logserver.formats.fleet_head import parse_fleet_head_proof
from logserver.merkle import leaf_hash, verify_inclusion

DIRECTORY = fleet_head_vectors.DEFAULT_DIRECTORY
VECTORS = DIRECTORY / "vectors"
# The vectors are the files on disk, not a list here: a vector added, renamed or dropped
# changes NAMES, and the counts below must follow.
NAMES = sorted(p.name.removesuffix(".expect.json") for p in VECTORS.glob("*.expect.json"))

# Valid: 12 (present 4, absent 7, retired 1). Invalid: 77, by expected error below.
EXPECTED_COUNTS = {
    "valid": 12,
    "MalformedFleetHeadError": 25,
    "CheckpointVerificationError": 2,
    "WitnessQuorumError": 1,
    "StaleFleetHeadError": 5,
    "FleetMismatchError": 2,
    "HeadsLeafError": 9,
    "FleetHeadRootError": 15,
    "FleetHeadBundleError": 6,
    "SignatureError": 1,
    "AbsenceProofError": 8,
    "FleetHeadRollbackError": 3,
}


def _expect(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.expect.json").read_bytes())


def _policy(name: str) -> TrustPolicy:
    return TrustPolicy.load(DIRECTORY / "trust" / f"{name}.toml")


def _verify(name: str) -> Any:
    expect = _expect(name)
    state = None
    if "state" in expect:
        state = ClientState.loads(json.dumps({"version": 2, "logs": {}, "fleets": {}, "heads": expect["state"]}))
    return verify_fleet_head(
        (VECTORS / f"{name}.json").read_bytes(),
        _policy(expect["policy"]),
        datetime.fromtimestamp(expect["now"], UTC),
        fleet_id=expect["fleet_id"],
        max_age=expect["max_age_s"],
        state=state,
    )


def test_the_vectors_are_counted() -> None:
    # Every proof has its expectation and the other way round: nothing on disk is
    # left out of NAMES.
    proofs = sorted(p.name.removesuffix(".json") for p in VECTORS.glob("*.json") if not p.name.endswith(".expect.json"))
    assert proofs == NAMES
    assert sorted(p.name for p in VECTORS.iterdir()) == sorted([f"{n}.json" for n in NAMES]
                                                               + [f"{n}.expect.json" for n in NAMES])
    counts: dict[str, int] = {}
    for name in NAMES:
        expect = _expect(name)["expect"]
        counts[expect] = counts.get(expect, 0) + 1
    assert counts == EXPECTED_COUNTS
    assert len(NAMES) == sum(EXPECTED_COUNTS.values()) == 89
    results = [_expect(n)["outcome"]["result"] for n in NAMES if _expect(n)["expect"] == "valid"]
    assert sorted(results) == ["absent"] * 7 + ["present"] * 4 + ["retired"]
    # The README states the counts: they are those of the files.
    readme = (DIRECTORY / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"Valid: (\d+)\. Invalid: (\d+),", readme)
    assert stated is not None, "README.md: want a line 'Valid: N. Invalid: M, ...'"
    assert (int(stated[1]), int(stated[2])) == (counts["valid"], len(NAMES) - counts["valid"])


@pytest.mark.parametrize("name", [n for n in NAMES if _expect(n)["expect"] == "valid"])
def test_valid_vector(name: str) -> None:
    outcome = _expect(name)["outcome"]
    if outcome["result"] == "present":
        head = _verify(name)
        assert (head.sequence, head.leaf_index, head.position) == (
            outcome["sequence"], outcome["leaf_index"], outcome["position"])
        assert head.status == "active" and head.bundle.sequence == head.sequence
        assert head.freshness.rests_on_log_alone == (outcome.get("freshness") == "log")
    elif outcome["result"] == "absent":
        with pytest.raises(FleetAbsentError) as absent:
            _verify(name)
        verified = absent.value.absence
        assert verified.to_dict()["covering"] == outcome["covering"]
        if outcome["covering"] is None:
            assert verified.covering is None and verified.heads.count == 0
        else:
            assert verified.covering is not None and verified.covering.fleet_id == outcome["covering"]["fleet_id"]
    else:
        with pytest.raises(FleetRetiredError) as retired:
            _verify(name)
        head = retired.value.head
        assert (head.sequence, head.leaf_index, head.position, head.status) == (
            outcome["sequence"], outcome["leaf_index"], outcome["position"], "retired")
        assert head.bundle.status == "retired"


@pytest.mark.parametrize("name", [n for n in NAMES if _expect(n)["expect"] != "valid"])
def test_invalid_vector(name: str) -> None:
    want = _expect(name)["expect"]
    with pytest.raises(VerificationFailure) as failure:
        _verify(name)
    assert type(failure.value).__name__ == want, str(failure.value)
    assert not isinstance(failure.value, (FleetAbsentError, FleetRetiredError))


def test_the_vectors_are_byte_stable() -> None:
    generated = fleet_head_vectors.files()
    committed = {
        str(p.relative_to(DIRECTORY)): p.read_bytes()
        for p in DIRECTORY.rglob("*") if p.is_file() and p.name != "README.md"
    }
    assert sorted(committed) == sorted(generated)
    changed = [name for name in generated if committed[name] != generated[name]]
    assert changed == [], "regenerate with: python3 tests/fleet_head_vectors.py"


def test_the_readme_lists_every_vector() -> None:
    # The README's table lists exactly the vectors on disk, each with its expectation.
    readme = (DIRECTORY / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (\w+) \|", readme, flags=re.MULTILINE))
    assert sorted(listed) == NAMES
    assert {n: listed[n] for n in NAMES} == {n: _expect(n)["expect"] for n in NAMES}


def test_every_vector_mutates_one_thing() -> None:
    # The invalid vectors that are edits of a valid proof differ from it in one place:
    # their JSON objects differ in exactly one leaf value (or one key), whatever else.
    for base_name, single in (
        ("present", ["row-sequence-changed", "row-status-changed", "row-position-changed", "row-next-changed",
                     "heads-leaf-index-changed", "bundle-proof-flipped", "row-proof-flipped", "fleet-row-other",
                     "format-version-3", "format-missing-next-fleet-id"]),
        ("absent-between", ["covering-next-changed", "covering-sequence-changed", "covering-proof-flipped",
                            "absent-covering-null", "absent-claim-for-present-fleet", "format-bad-next-fleet-id",
                            "format-absent-without-covering"]),
    ):
        base = json.loads((VECTORS / f"{base_name}.json").read_bytes())
        for name in single:
            mutated = json.loads((VECTORS / f"{name}.json").read_bytes())
            assert len(_differences(base, mutated)) == 1, name


def _b64_hashes(text: str) -> list[bytes]:
    raw = base64.b64decode(text)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def test_the_type_2_heads_leaf_is_its_only_fault() -> None:
    # heads-leaf-type-2 must fail on the leaf's type alone: the leaf is the checkpoint's
    # last, the row's entry is in the tree of the leaf's root, the bundle is the row's.
    # A verifier that skips the type check would accept it.
    proof = parse_fleet_head_proof((VECTORS / "heads-leaf-type-2.json").read_bytes())
    checkpoint = proof.checkpoint
    heads = decode_heads_leaf(proof.heads_leaf.leaf)
    assert heads.layout == LEGACY_HEADS_LEAF_TYPE and proof.heads_leaf.index == checkpoint.size - 1
    verify_inclusion(proof.heads_leaf.index, checkpoint.size, leaf_hash(proof.heads_leaf.leaf),
                     list(proof.heads_leaf.inclusion_proof), checkpoint.root)
    assert proof.row is not None and proof.bundle is not None
    row = proof.row
    entry = HeadsRow(row.fleet_id, row.sequence, row.leaf_index, row.leaf_hash, row.status).entry_hash(
        row.next_fleet_id)
    verify_inclusion(row.position, heads.count, entry, list(row.proof), heads.root)
    bundle_leaf = encode_leaf(parse_envelope(json.dumps(proof.bundle.envelope).encode()))
    assert leaf_hash(bundle_leaf) == row.leaf_hash
    verify_inclusion(row.leaf_index, checkpoint.size, row.leaf_hash, list(proof.bundle.inclusion_proof),
                     checkpoint.root)
    # And it is the valid proof's, but for the type byte and the checkpoint over it.
    valid = parse_fleet_head_proof((VECTORS / "present.json").read_bytes())
    assert valid.heads_leaf.leaf[1:] == proof.heads_leaf.leaf[1:] and valid.row == proof.row


def test_the_version_1_vector_is_a_release_0_2_0_proof() -> None:
    # format-version-1 is what release 0.2.0 served (sorted layout, neighbours, type-2
    # HEADS leaf), consistent in itself: only its version refuses it.
    obj = json.loads((VECTORS / "format-version-1.json").read_bytes())
    assert obj["version"] == 1 and sorted(obj) == ["checkpoint", "fleet_id", "heads_leaf", "neighbours", "version"]
    checkpoint = parse_checkpoint(parse_note(obj["checkpoint"]).text)
    leaf = base64.b64decode(obj["heads_leaf"]["leaf"])
    heads = decode_heads_leaf(leaf)
    assert heads.layout == LEGACY_HEADS_LEAF_TYPE and obj["heads_leaf"]["index"] == checkpoint.size - 1
    verify_inclusion(checkpoint.size - 1, checkpoint.size, leaf_hash(leaf),
                     _b64_hashes(obj["heads_leaf"]["inclusion_proof"]), checkpoint.root)
    names = []
    for n in obj["neighbours"]:
        row = HeadsRow(n["fleet_id"], n["sequence"], n["leaf_index"], bytes.fromhex(n["leaf_hash"]), n["status"])
        # The sorted layout's tree leaf was the row alone, at its rank in byte order.
        verify_inclusion(n["position"], heads.count, row.legacy_tree_hash(), _b64_hashes(n["proof"]), heads.root)
        names.append((n["position"], n["fleet_id"]))
    assert names == [(0, "fleet-a"), (1, "fleet-c")] and "fleet-a" < obj["fleet_id"] < "fleet-c"


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in a.keys() ^ b.keys()]
        for k in a.keys() & b.keys():
            out += _differences(a[k], b[k], f"{path}.{k}")
        return out
    return [] if a == b else [path]
