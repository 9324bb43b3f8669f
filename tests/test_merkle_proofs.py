"""Proof plans, assembly and verification against the naive RFC 6962 reference."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from logserver.merkle import (
    EMPTY_ROOT,
    InvalidParameterError,
    MerkleError,
    NodePlan,
    ProofError,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    path_plan,
    path_split,
    rehash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from merkle_reference import complete_nodes, leaf_data, mth, path, proof

N = 130
DATA = [leaf_data(i) for i in range(N)]
LEAVES = [leaf_hash(d) for d in DATA]
NODES = complete_nodes(DATA)
ROOTS = [mth(DATA[:n]) for n in range(N + 1)]


def read_nodes(ids: Sequence[tuple[int, int]]) -> list[bytes]:
    return [NODES[i] for i in ids]


def test_inclusion_matches_reference_for_every_index_and_size() -> None:
    for size in range(1, N + 1):
        for index in range(size):
            want = path(index, DATA[:size])
            plan = inclusion_plan(index, size)
            assert plan.proof_size == len(want)
            got = inclusion_proof(index, size, read_nodes)
            assert got == want, (index, size)
            verify_inclusion(index, size, LEAVES[index], got, ROOTS[size])
            assert root_from_inclusion_proof(index, size, LEAVES[index], got) == ROOTS[size]


def test_consistency_matches_reference_for_every_pair() -> None:
    for size2 in range(0, N + 1):
        for size1 in range(0, size2 + 1):
            want = proof(size1, DATA[:size2])
            plan = consistency_plan(size1, size2)
            assert plan.proof_size == len(want)
            got = consistency_proof(size1, size2, read_nodes)
            assert got == want, (size1, size2)
            verify_consistency(size1, size2, ROOTS[size1], ROOTS[size2], got)


def test_plans_read_only_complete_distinct_nodes() -> None:
    for size in range(1, 70):
        for other in range(size + 1):
            for plan in (inclusion_plan(other, size) if other < size else NodePlan(()), consistency_plan(other, size)):
                assert len(set(plan.ids)) == len(plan.ids)
                for lvl, idx in plan.ids:
                    assert (idx + 1) << lvl <= size


def test_plan_examples() -> None:
    # RFC 6962 §2.1.3 example tree of 7 leaves d0..d6 (a..f, d6 leaf hashes; g, h, i
    # the level-1 nodes; k = node (2, 0); l = H(i, d6), ephemeral).
    # PATH(3) = [c, g, l]: l is the fold of (1, 2) and (0, 6).
    assert inclusion_plan(3, 7) == NodePlan(((0, 2), (1, 0), (1, 2), (0, 6)), 2, 4)
    # PATH(0) = [b, h, l].
    assert inclusion_plan(0, 7) == NodePlan(((0, 1), (1, 1), (1, 2), (0, 6)), 2, 4)
    # PATH(4) = [f, j, k] (j = leaf 6, a one-node "fold"); PATH(6) = [i, k].
    assert inclusion_plan(4, 7) == NodePlan(((0, 5), (0, 6), (2, 0)), 1, 2)
    assert inclusion_plan(6, 7) == NodePlan(((1, 2), (2, 0)), 0, 0)
    # PROOF(3, D[7]) = [c, d, g, l]; PROOF(4, D[7]) = [l]; PROOF(6, D[7]) = [i, j, k].
    assert consistency_plan(3, 7) == NodePlan(((0, 2), (0, 3), (1, 0), (1, 2), (0, 6)), 3, 5)
    assert consistency_plan(4, 7) == NodePlan(((1, 2), (0, 6)), 0, 2)
    assert consistency_plan(6, 7) == NodePlan(((1, 2), (0, 6), (2, 0)), 1, 2)
    assert consistency_plan(0, 7) == NodePlan(())
    assert consistency_plan(7, 7) == NodePlan(())
    assert consistency_plan(0, 0) == NodePlan(())


def test_path_split_separates_the_node_dependent_siblings_from_a_shared_tail() -> None:
    """For every complete node of every size up to N: the path's first low - level ids are
    the node's siblings, and all nodes with the same (size, low, folds) share the rest of
    the plan (ids and fold run), so its rehashed tail can be cached per tree size."""
    checked = 0
    for size in range(1, N + 1):
        tails: dict[tuple[int, bool], tuple] = {}
        for level in range(size.bit_length()):
            for index in range(size >> level):
                plan = path_plan(level, index, size)
                low, folds = path_split(level, index, size)
                first = index << level
                n = low - level
                assert plan.ids[:n] == tuple((lvl, (first >> lvl) ^ 1) for lvl in range(level, low))
                assert (plan.fold_end - plan.fold_begin > 0) == folds
                tail = (plan.ids[n:], plan.fold_begin - n, plan.fold_end - n)
                if folds:
                    assert plan.fold_begin == n
                assert tails.setdefault((low, folds), tail) == tail, (level, index, size)
                checked += 1
        assert len(tails) <= 2 * size.bit_length()
    assert checked == sum(sum(size >> level for level in range(size.bit_length())) for size in range(1, N + 1))


def test_path_split_refuses_incomplete_nodes() -> None:
    for level, index, size in ((0, 5, 5), (1, 2, 5), (3, 0, 7), (-1, 0, 4), (0, -1, 4)):
        with pytest.raises(InvalidParameterError):
            path_split(level, index, size)
        with pytest.raises(InvalidParameterError):
            path_plan(level, index, size)


def test_large_sizes() -> None:
    size = 2**64 - 1
    plan = inclusion_plan(size - 1, size)
    assert len(plan.ids) == 63 and plan.fold_begin == plan.fold_end
    plan = inclusion_plan(0, size)
    assert plan.proof_size == 64
    plan = consistency_plan(2**63 + 1, size)
    assert plan.ids[0] == (0, 2**63)


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 0), (5, 5), (6, 5), (-1, 5), (0, -1), (2**64, 2**64), (True, 5), (1.0, 5)],
)
def test_inclusion_plan_rejects(index: int, size: int) -> None:
    with pytest.raises(InvalidParameterError):
        inclusion_plan(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(2, 1), (1, 0), (-1, 3), (0, -1), (0, 2**64)])
def test_consistency_plan_rejects(size1: int, size2: int) -> None:
    with pytest.raises(InvalidParameterError):
        consistency_plan(size1, size2)


def test_empty_proofs_do_not_read() -> None:
    def must_not_read(ids: Sequence[tuple[int, int]]) -> list[bytes]:
        raise AssertionError(f"read {ids}")

    assert consistency_proof(0, 5, must_not_read) == []
    assert consistency_proof(5, 5, must_not_read) == []
    assert inclusion_proof(0, 1, must_not_read) == []


def test_broken_reader_is_a_loud_crash() -> None:
    with pytest.raises(RuntimeError, match="got 1 hashes, want 3"):
        inclusion_proof(0, 8, lambda ids: [b"x" * 32])
    with pytest.raises(RuntimeError, match="want 32 bytes"):
        inclusion_proof(0, 2, lambda ids: [b"x" * 31])
    with pytest.raises(RuntimeError):
        inclusion_proof(0, 2, lambda ids: [bytearray(32)])  # type: ignore[list-item]
    with pytest.raises(RuntimeError):
        rehash(inclusion_plan(0, 8), [b"x" * 32])
    with pytest.raises(RuntimeError):
        NodePlan(((0, 1),), 1, 3)


def test_rehash_without_fold_copies() -> None:
    plan = inclusion_plan(0, 8)
    hashes = read_nodes(plan.ids)
    out = rehash(plan, hashes)
    assert out == hashes and out is not hashes


# --- verification edge cases ------------------------------------------------------------------


def test_verify_inclusion_errors() -> None:
    good = inclusion_proof(3, 7, read_nodes)
    verify_inclusion(3, 7, LEAVES[3], good, ROOTS[7])
    with pytest.raises(InvalidParameterError, match="index"):
        verify_inclusion(7, 7, LEAVES[3], good, ROOTS[7])
    with pytest.raises(InvalidParameterError):
        verify_inclusion(-1, 7, LEAVES[3], good, ROOTS[7])
    with pytest.raises(InvalidParameterError, match="leaf hash"):
        verify_inclusion(3, 7, LEAVES[3][:31], good, ROOTS[7])
    with pytest.raises(InvalidParameterError, match="root"):
        verify_inclusion(3, 7, LEAVES[3], good, ROOTS[7] + b"\x00")
    with pytest.raises(ProofError, match="got 2 hashes, want 3"):
        verify_inclusion(3, 7, LEAVES[3], good[:2], ROOTS[7])
    with pytest.raises(ProofError, match="hash 1: got 31 bytes"):
        verify_inclusion(3, 7, LEAVES[3], [good[0], good[1][:31], good[2]], ROOTS[7])
    with pytest.raises(ProofError, match="hash 0: got str"):
        verify_inclusion(3, 7, LEAVES[3], ["x" * 32, good[1], good[2]], ROOTS[7])  # type: ignore[list-item]
    with pytest.raises(ProofError, match=f"got root .*, want {ROOTS[6].hex()}"):
        verify_inclusion(3, 7, LEAVES[3], good, ROOTS[6])
    with pytest.raises(ProofError):
        verify_inclusion(3, 7, LEAVES[4], good, ROOTS[7])


def test_verify_consistency_errors() -> None:
    good = consistency_proof(3, 7, read_nodes)
    verify_consistency(3, 7, ROOTS[3], ROOTS[7], good)
    with pytest.raises(InvalidParameterError, match="size1"):
        verify_consistency(8, 7, ROOTS[3], ROOTS[7], good)
    with pytest.raises(InvalidParameterError, match="root1"):
        verify_consistency(3, 7, ROOTS[3][:-1], ROOTS[7], good)
    with pytest.raises(InvalidParameterError, match="root2"):
        verify_consistency(3, 7, ROOTS[3], b"", good)
    with pytest.raises(ProofError, match="got 3 hashes, want 4"):
        verify_consistency(3, 7, ROOTS[3], ROOTS[7], good[:3])
    with pytest.raises(ProofError, match="root1"):
        verify_consistency(3, 7, ROOTS[4], ROOTS[7], good)
    with pytest.raises(ProofError, match="root2"):
        verify_consistency(3, 7, ROOTS[3], ROOTS[6], good)
    # Power-of-two old tree: the proof omits root1, which seeds the computation.
    good = consistency_proof(4, 7, read_nodes)
    verify_consistency(4, 7, ROOTS[4], ROOTS[7], good)
    with pytest.raises(ProofError, match="root2"):
        verify_consistency(4, 7, ROOTS[3], ROOTS[7], good)


def test_verify_consistency_trivial_cases() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [])
    verify_consistency(9, 9, ROOTS[9], ROOTS[9], [])
    with pytest.raises(ProofError, match="got 1 hashes, want 0"):
        verify_consistency(9, 9, ROOTS[9], ROOTS[9], [ROOTS[9]])
    with pytest.raises(ProofError, match="got 1 hashes, want 0"):
        verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [ROOTS[9]])
    with pytest.raises(ProofError, match="want root1"):
        verify_consistency(9, 9, ROOTS[9], ROOTS[8], [])
    with pytest.raises(ProofError, match="empty tree root"):
        verify_consistency(0, 9, ROOTS[1], ROOTS[9], [])
    with pytest.raises(ProofError, match="empty tree root"):
        verify_consistency(0, 0, ROOTS[1], ROOTS[1], [])


def test_errors_are_typed() -> None:
    assert issubclass(InvalidParameterError, MerkleError) and issubclass(InvalidParameterError, ValueError)
    assert issubclass(ProofError, MerkleError) and not issubclass(ProofError, ValueError)
