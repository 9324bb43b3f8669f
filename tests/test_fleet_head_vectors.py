"""The fleet-head test vectors of tests/testdata/fleet-heads/ (README.md there): every
vector gives its expected outcome under `verify_fleet_head`, there are exactly as many
as listed, and regenerating them (tests/fleet_head_vectors.py) gives the committed
bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import fleet_head_vectors
from logserver.client import (
    ClientState,
    FleetAbsentError,
    FleetRetiredError,
    TrustPolicy,
    VerificationFailure,
    verify_fleet_head,
)

DIRECTORY = fleet_head_vectors.DEFAULT_DIRECTORY
VECTORS = DIRECTORY / "vectors"
NAMES = sorted(p.name.removesuffix(".expect.json") for p in VECTORS.glob("*.expect.json"))

# Valid: 11 (present 4, absent 6, retired 1). Invalid: 67, by expected error below.
EXPECTED_COUNTS = {
    "valid": 11,
    "MalformedFleetHeadError": 21,
    "CheckpointVerificationError": 2,
    "WitnessQuorumError": 1,
    "StaleFleetHeadError": 5,
    "FleetMismatchError": 2,
    "HeadsLeafError": 8,
    "FleetHeadRootError": 10,
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
    counts: dict[str, int] = {}
    for name in NAMES:
        expect = _expect(name)["expect"]
        counts[expect] = counts.get(expect, 0) + 1
    assert counts == EXPECTED_COUNTS
    assert len(NAMES) == sum(EXPECTED_COUNTS.values()) == 78
    results = [_expect(n)["outcome"]["result"] for n in NAMES if _expect(n)["expect"] == "valid"]
    assert sorted(results) == ["absent"] * 6 + ["present"] * 4 + ["retired"]


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
        assert list(absent.value.absence.positions) == outcome["positions"]
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
    readme = (DIRECTORY / "README.md").read_text(encoding="utf-8")
    missing = [name for name in NAMES if f"`{name}`" not in readme]
    assert missing == []


def test_every_vector_mutates_one_thing(tmp_path: Path) -> None:
    # The invalid vectors that are edits of a valid proof differ from it in one place:
    # their JSON objects differ in exactly one leaf value (or one key), whatever else.
    base = json.loads((VECTORS / "present.json").read_bytes())
    single = ["row-sequence-changed", "row-status-changed", "row-position-changed", "heads-leaf-index-changed",
              "bundle-proof-flipped", "row-proof-flipped", "fleet-row-other", "format-version-2"]
    for name in single:
        mutated = json.loads((VECTORS / f"{name}.json").read_bytes())
        assert len(_differences(base, mutated)) == 1, name


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in a.keys() ^ b.keys()]
        for k in a.keys() & b.keys():
            out += _differences(a[k], b[k], f"{path}.{k}")
        return out
    return [] if a == b else [path]
