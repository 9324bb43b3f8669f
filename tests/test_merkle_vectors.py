"""transparency-dev/merkle proof verification vectors (tests/testdata/merkle, see its README)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from logserver.merkle import InvalidParameterError, MerkleError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).parent / "testdata" / "merkle"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))

# Counted from the copied directory; a change means vectors were lost or added.
WANT_INCLUSION = 98
WANT_CONSISTENCY = 98

# A wantErr:false case our verifier rejects on purpose: its roots are 12-byte
# placeholders ("don't care 2"), and we require every hash to be exactly 32 bytes even
# when size1 == size2 makes the roots' values only compared, not hashed.
STRICTER_THAN_VECTORS = {"consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"}


def _b64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _name(path: Path) -> str:
    return path.relative_to(VECTORS).as_posix()


def _check_inclusion(case: dict[str, Any]) -> None:
    verify_inclusion(
        case["leafIdx"],
        case["treeSize"],
        _b64(case["leafHash"]),
        [_b64(p) for p in case["proof"] or []],
        _b64(case["root"]),
    )


def _check_consistency(case: dict[str, Any]) -> None:
    verify_consistency(
        case["size1"],
        case["size2"],
        _b64(case["root1"]),
        _b64(case["root2"]),
        [_b64(p) for p in case["proof"] or []],
    )


def _run(path: Path, check: Any) -> None:
    case = _load(path)
    name = _name(path)
    if name in STRICTER_THAN_VECTORS:
        assert case["wantErr"] is False
        with pytest.raises(InvalidParameterError, match="want 32 bytes"):
            check(case)
        # With well-formed equal roots the same case verifies.
        check({**case, "root1": base64.b64encode(b"r" * 32).decode(), "root2": base64.b64encode(b"r" * 32).decode()})
    elif case["wantErr"]:
        with pytest.raises(MerkleError):
            check(case)
    else:
        check(case)


@pytest.mark.parametrize("path", INCLUSION, ids=_name)
def test_inclusion_vector(path: Path) -> None:
    _run(path, _check_inclusion)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_name)
def test_consistency_vector(path: Path) -> None:
    _run(path, _check_consistency)


def test_vector_counts() -> None:
    assert len(INCLUSION) == WANT_INCLUSION
    assert len(CONSISTENCY) == WANT_CONSISTENCY
    # Both outcomes are represented.
    outcomes = {_load(p)["wantErr"] for p in INCLUSION + CONSISTENCY}
    assert outcomes == {True, False}


def test_all_vectors_in_one_pass() -> None:
    ran = 0
    for path in INCLUSION:
        _run(path, _check_inclusion)
        ran += 1
    for path in CONSISTENCY:
        _run(path, _check_consistency)
        ran += 1
    assert ran == WANT_INCLUSION + WANT_CONSISTENCY == 196
