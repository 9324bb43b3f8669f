"""Subtrees and subtree consistency proofs (draft-ietf-plants-merkle-tree-certs-03 §4):
logserver.merkle.subtree against the draft's generator written out literally
(merkle_reference.subtree_proof), and against the accumulated vectors that
filippo.io/torchwood publishes for the same definitions (tests/testdata/pq/SOURCES.md)."""
from __future__ import annotations

import hashlib
from functools import cache

import pytest

import merkle_reference as ref
from logserver.merkle import (
    EMPTY_ROOT,
    InvalidParameterError,
    ProofError,
    is_valid_subtree,
    verify_subtree_consistency,
)

# torchwood subtree_test.go, TestAccumulatedSubtreeProof and TestAccumulatedSubtreeHash:
# 130 records, record i is the single byte i; every valid subtree of every tree size.
ACCUMULATED_SUBTREE_PROOF = "10fa99b37bf9bf9ffa26b412fbd98bd75363256d0b75d61bc4538b9c9c5a0a74"
ACCUMULATED_SUBTREE_HASH = "b82806ad4265bb151c1119c0f4db437bb4d1a1f887b3a7fba1cd4ebf552e3e81"
LEAVES = [bytes([i]) for i in range(130)]


@cache
def mth(start: int, end: int) -> bytes:
    """MTH(D[start:end]) of LEAVES, memoised (the naive reference is slow over 130 trees)."""
    return ref.mth(LEAVES[start:end])


def subtree_proof(start: int, end: int, n: int) -> list[bytes]:
    """SUBTREE_PROOF over LEAVES[:n], with the memoised MTH (same recursion as the reference)."""
    def sub(s: int, e: int, lo: int, hi: int, b: bool) -> list[bytes]:
        size = hi - lo
        if s == 0 and e == size:
            return [] if b else [mth(lo, hi)]
        k = 1
        while k * 2 < size:
            k *= 2
        if e <= k:
            return [*sub(s, e, lo, lo + k, b), mth(lo + k, hi)]
        if k <= s:
            return [*sub(s - k, e - k, lo + k, hi, b), mth(lo, lo + k)]
        return [*sub(0, e - k, lo + k, hi, False), mth(lo, lo + k)]
    return [] if start == end else sub(start, end, 0, n, True)


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0xFF]) + h[1:]


@pytest.mark.parametrize(("start", "end", "valid"), [
    (0, 1, True), (4, 8, True), (8, 13, True), (0, 13, True), (2, 4, True), (6, 8, True),
    (2, 6, False), (5, 13, False), (1, 7, False), (7, 9, False), (0, 0, True), (5, 5, True),
    (5, 3, False), (-1, 3, False), (0, 1 << 62, True), (1 << 63, (1 << 63) + 1, True),
    (1 << 62, (1 << 62) * 3, False),
])
def test_valid_subtrees(start, end, valid):
    """The draft's section 4.1 definition; the cases of torchwood's TestValidSubtree plus
    sizes past 2^62 (Python integers do not overflow BIT_CEIL)."""
    assert is_valid_subtree(start, end) is valid


def test_reference_generator_matches_the_memoised_one():
    for n in (1, 7, 14, 33):
        for end in range(n + 1):
            for start in range(end + 1):
                if is_valid_subtree(start, end):
                    assert ref.subtree_proof(start, end, LEAVES[:n]) == subtree_proof(start, end, n)


def test_accumulated_vectors_and_every_proof_verifies():
    """Every valid subtree of every tree of up to 130 records: the proofs hash to
    torchwood's accumulated value, each verifies, and any change is refused."""
    proofs, hashes = hashlib.sha256(), hashlib.sha256()
    for end in range(131):
        for start in range(end + 1):
            if is_valid_subtree(start, end):
                hashes.update(b"[%d, %d) %s\n" % (start, end, mth(start, end).hex().encode()))
    for n in range(131):
        root = mth(0, n)
        for end in range(n + 1):
            for start in range(end + 1):
                if not is_valid_subtree(start, end):
                    continue
                sh = mth(start, end)
                proof = subtree_proof(start, end, n)
                proofs.update(b"[%d, %d) %d" % (start, end, n) + b"".join(b" " + h.hex().encode() for h in proof)
                              + b"\n")
                verify_subtree_consistency(start, end, n, sh, root, proof)
                with pytest.raises(ProofError):
                    verify_subtree_consistency(start, end, n, flip(sh), root, proof)
                if start != end:  # an empty subtree is part of every tree: the root is not read
                    with pytest.raises(ProofError):
                        verify_subtree_consistency(start, end, n, sh, flip(root), proof)
                with pytest.raises(ProofError):
                    verify_subtree_consistency(start, end, n, sh, root, [*proof, bytes(32)])
                if proof:
                    with pytest.raises(ProofError):
                        verify_subtree_consistency(start, end, n, sh, root, proof[:-1])
                    with pytest.raises(ProofError):
                        verify_subtree_consistency(start, end, n, sh, root, [flip(proof[0]), *proof[1:]])
    assert proofs.hexdigest() == ACCUMULATED_SUBTREE_PROOF
    assert hashes.hexdigest() == ACCUMULATED_SUBTREE_HASH


def test_a_start_zero_proof_is_an_rfc6962_consistency_proof():
    for n in range(1, 40):
        for end in range(1, n + 1):
            assert subtree_proof(0, end, n) == ref.proof(end, LEAVES[:n])


def test_arguments_out_of_range():
    root = mth(0, 14)
    with pytest.raises(InvalidParameterError, match="BIT_CEIL"):
        verify_subtree_consistency(2, 6, 14, mth(2, 6), root, [])
    with pytest.raises(InvalidParameterError, match="at most the tree size 14"):
        verify_subtree_consistency(8, 16, 14, mth(8, 14), root, [])
    with pytest.raises(InvalidParameterError):
        verify_subtree_consistency(8, 13, 14, b"short", root, [])
    with pytest.raises(ProofError, match="empty"):
        verify_subtree_consistency(5, 5, 14, mth(0, 1), root, [])
    assert verify_subtree_consistency(5, 5, 14, EMPTY_ROOT, root, []) is None
