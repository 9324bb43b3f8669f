"""Hypothesis: proofs verify, and every single mutation of a proof or claim is rejected.

Changing a tree size is the one mutation a verifier cannot always detect: RFC 6962
proofs do not commit to the size, so a size whose proof has the same shape (same
sequence of left/right combinations, per the reference's recursion) yields the same
computation. The tests require rejection exactly when the shape differs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.merkle import (
    CompactRange,
    MerkleError,
    consistency_proof,
    frontier_ids,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from merkle_reference import leaf_data, path_sides, proof_shape

N = 3000
LEAVES = [leaf_hash(leaf_data(i)) for i in range(N)]
NODES: dict[tuple[int, int], bytes] = {}
CompactRange().extend(LEAVES, lambda lvl, idx, h: NODES.__setitem__((lvl, idx), h))


def read_nodes(ids: Sequence[tuple[int, int]]) -> list[bytes]:
    return [NODES[i] for i in ids]


def root(size: int) -> bytes:
    return CompactRange(size, read_nodes(frontier_ids(size))).root()


def rejects(check: Callable[[], None]) -> bool:
    try:
        check()
    except MerkleError:
        return True
    return False


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


sizes = st.integers(min_value=1, max_value=N)
bits = st.integers(min_value=0, max_value=255)
SETTINGS = settings(max_examples=300, deadline=None)


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(min_value=0, max_value=size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(sizes)
    return draw(st.integers(min_value=1, max_value=size2)), size2


@SETTINGS
@given(index_and_size(), st.integers(min_value=-2, max_value=2), st.integers(min_value=-2, max_value=2))
def test_inclusion_index_and_size_mutations(pos: tuple[int, int], d_index: int, d_size: int) -> None:
    index, size = pos
    proof = inclusion_proof(index, size, read_nodes)
    verify_inclusion(index, size, LEAVES[index], proof, root(size))
    index2, size2 = index + d_index, size + d_size
    rejected = rejects(lambda: verify_inclusion(index2, size2, LEAVES[index], proof, root(size)))
    if not 0 <= index2 < size2:
        assert rejected
    else:
        assert rejected == (path_sides(index2, size2) != path_sides(index, size))
    if d_index or d_size:
        # Other leaves are never accepted at the original position.
        assert rejects(lambda: verify_inclusion(index, size, LEAVES[(index + 1) % N], proof, root(size)))


@SETTINGS
@given(index_and_size(), bits, st.data())
def test_inclusion_hash_mutations(pos: tuple[int, int], bit: int, data: st.DataObject) -> None:
    index, size = pos
    proof = inclusion_proof(index, size, read_nodes)
    r = root(size)
    assert rejects(lambda: verify_inclusion(index, size, LEAVES[index], proof, flip(r, bit)))
    assert rejects(lambda: verify_inclusion(index, size, flip(LEAVES[index], bit), proof, r))
    assert rejects(lambda: verify_inclusion(index, size, LEAVES[index], [*proof, r], r))
    assert rejects(lambda: verify_inclusion(index, size, LEAVES[index], [r, *proof], r))
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        mutated = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        assert rejects(lambda: verify_inclusion(index, size, LEAVES[index], mutated, r))
        assert rejects(lambda: verify_inclusion(index, size, LEAVES[index], proof[:i] + proof[i + 1 :], r))


@SETTINGS
@given(size_pairs(), st.integers(min_value=-2, max_value=2), st.integers(min_value=-2, max_value=2))
def test_consistency_size_mutations(pair: tuple[int, int], d1: int, d2: int) -> None:
    size1, size2 = pair
    proof = consistency_proof(size1, size2, read_nodes)
    r1, r2 = root(size1), root(size2)
    verify_consistency(size1, size2, r1, r2, proof)
    m, n = size1 + d1, size2 + d2
    rejected = rejects(lambda: verify_consistency(m, n, r1, r2, proof))
    if (m, n) == (size1, size2):
        assert not rejected
    elif not 0 < m < n:
        # Negative sizes, m > n, and the trivial cases (whose proofs are empty and whose
        # roots are fixed) all reject a proof made for another pair, save one: an empty
        # proof for size1 == size2 stays valid when both sizes move together.
        assert rejected or (m == n and size1 == size2 and proof == [])
    else:
        assert rejected == (proof_shape(m, n) != proof_shape(size1, size2))


@SETTINGS
@given(size_pairs(), bits, st.data())
def test_consistency_hash_mutations(pair: tuple[int, int], bit: int, data: st.DataObject) -> None:
    size1, size2 = pair
    proof = consistency_proof(size1, size2, read_nodes)
    r1, r2 = root(size1), root(size2)
    assert rejects(lambda: verify_consistency(size1, size2, flip(r1, bit), r2, proof))
    assert rejects(lambda: verify_consistency(size1, size2, r1, flip(r2, bit), proof))
    assert rejects(lambda: verify_consistency(size1, size2, r1, r2, [*proof, r1]))
    assert rejects(lambda: verify_consistency(size1, size2, r1, r2, [r2, *proof]))
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        mutated = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        assert rejects(lambda: verify_consistency(size1, size2, r1, r2, mutated))
        assert rejects(lambda: verify_consistency(size1, size2, r1, r2, proof[:i] + proof[i + 1 :]))
    if size1 != size2:
        assert rejects(lambda: verify_consistency(size1, size2, r2, r1, proof))
