"""Pure parts of the monitor: fleet sequence tracking, entry verification, state file."""
from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from bundle_factory import BundleFactory, default_authorities, make_authorities
from logserver.bundle import encode_leaf
from logserver.client import StateError
from logserver.merkle import CompactRange, leaf_hash
from logserver.monitor import MonitorState
from logserver.monitor.entries import EntryVerifier, verify_entries
from logserver.monitor.fleets import RECENT, FleetTracker, LoggedBundle


def entry(index: int, seq: int, digest: int = 0, fleet: str = "f") -> LoggedBundle:
    return LoggedBundle(index, fleet, seq, bytes([digest]) * 32, bytes([index % 256]) * 32)


def kinds(alerts) -> list[str]:
    return [a.kind for a in alerts]


def test_in_order_sequences_raise_nothing():
    t = FleetTracker({})
    assert [kinds(t.observe(entry(i, i))) for i in range(5)] == [[]] * 5
    assert t.heads["f"].sequence == 4


def test_first_sighting_at_any_sequence_is_not_a_gap():
    assert FleetTracker({}).observe(entry(0, 7)) == []


def test_gap_rollback_duplicate_and_equivocation():
    t = FleetTracker({})
    t.observe(entry(0, 0, digest=1))
    t.observe(entry(1, 1, digest=2))
    gap = t.observe(entry(2, 4, digest=3))
    assert kinds(gap) == ["sequence_gap"] and gap[0].details["previous_sequence"] == 1
    dup = t.observe(entry(3, 1, digest=2))
    assert kinds(dup) == ["duplicate_bundle"] and dup[0].details["earlier_index"] == 1
    equiv = t.observe(entry(4, 1, digest=9))
    assert kinds(equiv) == ["equivocation"] and equiv[0].details["earlier_index"] == 1
    same_head = t.observe(entry(5, 4, digest=8))
    assert kinds(same_head) == ["equivocation"]
    assert t.heads["f"].sequence == 4  # none of these moved the head


def test_old_sequences_beyond_the_window_are_rollbacks():
    t = FleetTracker({})
    for i in range(RECENT + 5):
        t.observe(entry(i, i))
    assert len(t.heads["f"].recent) == RECENT
    assert kinds(t.observe(entry(100, 0))) == ["sequence_rollback"]
    assert kinds(t.observe(entry(101, RECENT + 4 - 1))) == ["duplicate_bundle"]


def test_watched_fleets_alert_on_every_bundle_and_only_theirs():
    t = FleetTracker({}, watch := ["w"])
    assert kinds(t.observe(entry(0, 0, fleet="w"))) == ["watched_fleet_bundle"]
    assert kinds(t.observe(entry(1, 0, fleet="x"))) == []
    assert kinds(t.observe(entry(2, 2, fleet="w"))) == ["watched_fleet_bundle", "sequence_gap"]
    assert watch == ["w"]


def test_tracker_works_on_a_copy_of_the_heads():
    t = FleetTracker({})
    t.observe(entry(0, 0))
    again = FleetTracker(t.heads)
    again.observe(entry(1, 1))
    assert t.heads["f"].sequence == 0 and again.heads["f"].sequence == 1


def test_verify_entries_hashes_every_leaf_and_reports_failures():
    factory = BundleFactory(fleet_id="ve")
    leaves = [encode_leaf(e) for e in factory.many(3)]
    leaves.append(b"\x04garbage")  # neither a bundle (version 1) nor a HEADS leaf (type 3, or 0.2.0's 2)
    result = verify_entries(leaves, 10, default_authorities().authority_set)
    assert result.leaf_hashes == [leaf_hash(leaf) for leaf in leaves]
    assert [(e.index, e.sequence) for e in result.verified] == [(10, 0), (11, 1), (12, 2)]
    assert [(a.kind, a.details["index"], a.details["code"]) for a in result.failures] == [
        ("policy_failure", 13, "malformed_leaf")]
    # A leaf starting with 2 or 3 goes to the heads fold, which decodes and checks it.
    for first in (b"\x02", b"\x03"):
        heads = verify_entries([first + b"garbage"], 7, default_authorities().authority_set)
        assert heads.failures == [] and heads.verified == []
        assert [(i.index, i.heads) for i in heads.fold_items] == [(7, first + b"garbage")]
    other = verify_entries(leaves[:1], 0, make_authorities("ecdsa-p256", "ed25519").authority_set)
    assert other.verified == [] and other.failures[0].details["code"] == "signer_signature_missing"


async def test_verifying_in_child_processes_gives_what_inline_gives():
    factory = BundleFactory(fleet_id="vp")
    bundles = [[encode_leaf(e) for e in factory.many(20)] for _ in range(3)]
    bundles[1][5] = b"\x04garbage"
    authorities = default_authorities().authority_set
    inline = [verify_entries(leaves, 100 * i, authorities) for i, leaves in enumerate(bundles)]
    assert sum(len(r.failures) for r in inline) == 1 and sum(len(r.verified) for r in inline) == 59
    verifier = EntryVerifier(authorities, 2)
    try:
        parallel = await asyncio.gather(*(verifier.verify(leaves, 100 * i) for i, leaves in enumerate(bundles)))
    finally:
        verifier.close()
    assert parallel == inline


async def test_a_killed_verification_process_is_replaced():
    factory = BundleFactory(fleet_id="vk")
    leaves = [encode_leaf(e) for e in factory.many(5)]
    authorities = default_authorities().authority_set
    want = verify_entries(leaves, 0, authorities)
    verifier = EntryVerifier(authorities, 1)
    try:
        assert await verifier.verify(leaves, 0) == want
        children = list(verifier._pool._processes.values())
        assert children
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        assert await verifier.verify(leaves, 0) == want  # a new pool (or, failing that, inline)
    finally:
        verifier.close()


def test_verify_processes_must_not_be_negative():
    with pytest.raises(ValueError, match="processes"):
        EntryVerifier(default_authorities().authority_set, -1)


def test_state_round_trip_and_refusals(tmp_path):
    state = MonitorState()
    r = CompactRange()
    r.extend([bytes([i]) * 32 for i in range(13)])
    state.verified = r
    t = FleetTracker({})
    t.observe(entry(0, 0))
    t.observe(entry(1, 1))
    state.fleets = t.heads
    path = tmp_path / "m.json"
    state.save(path)
    loaded = MonitorState.load(path)
    assert loaded.verified == r and loaded.fleets["f"].recent == t.heads["f"].recent
    assert loaded.dumps() == path.read_bytes()
    assert MonitorState.load(tmp_path / "missing.json").verified.size == 0
    obj = json.loads(path.read_bytes())
    assert obj["version"] == 3
    for mutate in (lambda o: o.update(version=4),
                   lambda o: o.update(version=0),
                   lambda o: o.pop("heads"),
                   lambda o: o["heads"].update(previous=-1),
                   lambda o: o["heads"].update(previous=13),
                   # The fold's first HEADS leaf: known iff one was folded, and not after the last.
                   lambda o: o["heads"].update(first=5),
                   lambda o: o["heads"].update(previous=5),
                   lambda o: o["heads"].update(first=7, previous=5),
                   # A row naming a leaf the monitor has not verified (13 are).
                   lambda o: o["heads"]["rows"].append(["f", 1, 13, "00" * 32, "active"]),
                   lambda o: o["heads"]["rows"].append(["f", 1, 0, "zz", "active"]),
                   lambda o: o["heads"]["rows"].append(["f", 1, 0, "00" * 32, []]),
                   lambda o: o["heads"]["rows"].extend([["f", 1, 0, "00" * 32, "active"]] * 2),
                   lambda o: o["verified"].update(size=12),
                   lambda o: o["verified"]["frontier"].append("00" * 32),
                   lambda o: o["fleets"]["f"].update(sequence=-1),
                   lambda o: o.update(checkpoint="not a note")):
        bad = json.loads(json.dumps(obj))
        mutate(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(StateError):
            MonitorState.load(path)
    # A version 1 file (before the heads fold) loads without one: HEADS leaves unchecked.
    old = {k: v for k, v in obj.items() if k != "heads"} | {"version": 1}
    path.write_text(json.dumps(old))
    assert MonitorState.load(path).heads is None
    path.write_text(json.dumps(old | {"verified": {"size": 0, "frontier": []}}))
    assert MonitorState.load(path).heads is not None  # nothing verified yet: the fold starts at 0
    # A version 2 file (release 0.2.0: rows sorted by fleet id, not in the heads tree's
    # order) loads without its fold too; its heads are still read for form.
    path.write_text(json.dumps(obj | {"version": 2}))
    assert MonitorState.load(path).heads is None
    path.write_text(json.dumps(obj | {"version": 2, "heads": dict(obj["heads"], rows=[["f", 1, 0, "zz", "active"]])}))
    with pytest.raises(StateError, match=r"heads\.rows\[0\]"):
        MonitorState.load(path)
