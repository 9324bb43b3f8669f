"""write/classify.py: a pure function of (batch, first index, existing entries, heads)."""
from __future__ import annotations

import asyncio
import hashlib

from logserver.storage import ExistingEntry, FleetHead
from logserver.write.classify import Equivocation, classify
from logserver.write.outcomes import Duplicate, EquivocationError, Pending, RetiredFleetError, SequenceRollbackError

H = lambda s: hashlib.sha256(s).digest()  # noqa: E731


def pending(fleet: str, sequence: int, payload: bytes = b"p", leaf: bytes | None = None,
            retired: bool = False) -> Pending:
    leaf = leaf if leaf is not None else b"%s %d %s" % (fleet.encode(), sequence, payload)
    return Pending(leaf, H(b"\0" + leaf), fleet, sequence, H(payload), asyncio.get_running_loop().create_future(),
                   retired)


async def test_new_entries_get_consecutive_indices_and_become_the_fleets_heads():
    a1, b1, a2 = pending("a", 1), pending("b", 7), pending("a", 2)
    out = classify([a1, b1, a2], 10, {}, {"b": 6})
    assert out.outcomes == [(a1, 10), (b1, 11), (a2, 12)]
    assert out.accepted == [a1, b1, a2]
    assert out.fleets == {"a": FleetHead(2, 12), "b": FleetHead(7, 11)}
    assert out.equivocations == []


async def test_duplicates_of_the_log_and_of_the_batch():
    logged = pending("a", 1)
    again = pending("a", 1, leaf=b"same payload, other signatures")
    first, repeat = pending("b", 1), pending("b", 1)
    existing = {("a", 1): ExistingEntry(3, logged.leaf_hash, logged.payload_digest)}
    out = classify([again, first, repeat], 5, existing, {"a": 1})
    assert out.outcomes == [
        (again, Duplicate(3, logged.leaf_hash)), (first, 5), (repeat, Duplicate(5, first.leaf_hash)),
    ]
    assert out.accepted == [first] and out.fleets == {"b": FleetHead(1, 5)}


async def test_rollbacks_and_equivocations_are_refused_and_equivocations_reported():
    logged = pending("a", 4)
    other = pending("a", 4, payload=b"another payload")
    old = pending("a", 3)
    in_batch_back = [pending("c", 9), pending("c", 8)]
    existing = {("a", 4): ExistingEntry(0, logged.leaf_hash, logged.payload_digest)}
    out = classify([other, old, *in_batch_back], 1, existing, {"a": 4})
    (p0, r0), (p1, r1), (p2, r2), (p3, r3) = out.outcomes
    assert (p0, p1, p2, p3) == (other, old, *in_batch_back)
    assert isinstance(r0, EquivocationError) and logged.payload_digest.hex() in str(r0)
    assert isinstance(r1, SequenceRollbackError) and r1.code == "rollback" and "latest logged sequence 4" in str(r1)
    assert r2 == 1
    assert isinstance(r3, SequenceRollbackError) and "latest logged sequence 9" in str(r3)
    assert out.equivocations == [Equivocation(other, logged.payload_digest)]
    assert out.accepted == [in_batch_back[0]] and out.fleets == {"c": FleetHead(9, 1)}


async def test_an_empty_batch_classifies_to_nothing():
    out = classify([], 0, {}, {})
    assert (out.outcomes, out.accepted, out.fleets, out.equivocations) == ([], [], {}, [])


async def test_a_retirement_refuses_every_later_bundle_of_its_fleet_in_the_batch():
    r, later, other = pending("a", 5, retired=True), pending("a", 6), pending("b", 1)
    out = classify([r, later, other], 3, {}, {"a": 4})
    assert out.outcomes[0] == (r, 3) and out.outcomes[2] == (other, 4)
    assert isinstance(out.outcomes[1][1], RetiredFleetError) and out.outcomes[1][1].status == 409
    assert "retired by its bundle of sequence 5" in str(out.outcomes[1][1])
    assert out.fleets == {"a": FleetHead(5, 3, True), "b": FleetHead(1, 4)}
    assert out.accepted == [r, other]


async def test_a_fleet_retired_in_the_log_refuses_new_bundles_but_answers_duplicates():
    logged = pending("a", 5, retired=True)
    replay, later, lower = pending("a", 5, retired=True), pending("a", 9), pending("a", 2)
    existing = {("a", 5): ExistingEntry(7, logged.leaf_hash, logged.payload_digest)}
    out = classify([replay, later, lower], 20, existing, {"a": 5}, frozenset({"a"}))
    assert out.outcomes[0] == (replay, Duplicate(7, logged.leaf_hash))
    # Retired comes before rollback: a lower sequence of a retired fleet is refused as retired.
    assert [type(r) for _, r in out.outcomes[1:]] == [RetiredFleetError, RetiredFleetError]
    assert out.accepted == [] and out.fleets == {}
