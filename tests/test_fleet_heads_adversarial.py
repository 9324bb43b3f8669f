"""A misbehaving log, and who catches it (issue 20 §6, docs/fleet-heads.md "Soundness").

Each log is built in memory with the pure layers (fleet_head_vectors.MemoryLog), made to
misbehave, signed with the vectors' log and witness keys and served over tlog-tiles by a
tiny aiohttp app (served_log.py). The client is `verify_fleet_head` (with and without a
`ClientState`); the monitor is the real `Monitor`, reading the served tiles over HTTP:

* a log that serves an older head: an old, still fresh proof is refused by a client
  that saw the newer head; a HEADS leaf that commits to the older row is a
  `heads_mismatch` alert (a client without memory is fooled: the monitor is what
  catches it);
* a log that omits a fleet (the chained layout, docs/fleet-heads.md "Absence"): a
  covering row whose link skips a fleet that exists, with that fleet's row dropped
  or even kept in the table. Its absence proof verifies at a fresh client (it sees
  one link, and the link is in the committed tree); a client that saw the fleet
  refuses it; the monitor's fold alerts, and its evidence holds the skipped row;
* a HEADS leaf that disagrees with the bundles (previous, a row, a link, undecodable,
  an empty table, release 0.2.0's type 2 with a wrong root or the other layout's),
  and a bundle logged after its fleet's retirement; a log that ran release 0.2.0
  (type-2 leaves, then type-3 ones) is no finding;
* a checkpoint whose last leaf is not a HEADS leaf: `heads_missing` (not for a log's
  checkpoints from before its first HEADS leaf), and a client handed the older HEADS
  leaf with the newer checkpoint refuses it;
* a stale checkpoint and one without the witness quorum: refused by the client,
  alerted by the monitor.

Every alert's evidence is re-checked with `verify_heads_evidence`, from its own contents
and by refolding the log's leaves.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet_head_vectors import NOW, MemoryLog, VectorKeys, bundle, fleet_head_proof
from logserver.bundle import LEGACY_HEADS_LEAF_TYPE, HeadsLeaf, HeadsRow, HeadsTable, bundle_row, legacy_sorted_root
from logserver.client import (
    ClientState,
    FleetAbsentError,
    FleetHeadRollbackError,
    FleetHeadRootError,
    HeadsLeafError,
    LogClient,
    StaleFleetHeadError,
    WitnessQuorumError,
    verify_fleet_head,
)
from logserver.formats.fleet_head import (
    BundleProof,
    HeadsLeafProof,
    ProvedRow,
    build_fleet_head_proof,
    parse_fleet_head_proof,
)
from logserver.monitor import Monitor
from logserver.monitor.heads import HeadsEvidenceError, verify_heads_evidence
from merkle_reference import mth, path
from served_log import ServedLog

KEYS = VectorKeys()
POLICY = KEYS.policy()  # the log, witness w1, quorum w1, max_age 300 s
AT = datetime.fromtimestamp(NOW, UTC)


class Collected(list):
    def __call__(self, alert):
        self.append(alert)

    def kinds(self) -> list[str]:
        return [a["kind"] for a in self]


@pytest.fixture
async def served() -> AsyncIterator[ServedLog]:
    s = ServedLog(MemoryLog(), KEYS)
    await s.start()
    yield s
    await s.close()


async def poll(served: ServedLog, state: Path, **kwargs) -> tuple[bool, Monitor, Collected]:
    alerts = Collected()
    kwargs.setdefault("max_checkpoint_age", None)
    async with LogClient(tiles_url=served.url) as client:
        monitor = Monitor(client, POLICY, state, emit=alerts, clock=lambda: NOW, **kwargs)
        ok = await monitor.poll_once()
    return ok, monitor, alerts


def lying_table(log: MemoryLog, *, drop: str | None = None, replace: HeadsRow | None = None) -> HeadsTable:
    """The honest table of `log` with one fleet's row dropped or replaced (the others
    keep their first-appearance order, and their links are remade around the gap)."""
    rows = [r for r in log.table.rows if r.fleet_id != drop]
    if replace is not None:
        rows = [replace if r.fleet_id == replace.fleet_id else r for r in rows]
    return HeadsTable.from_rows(rows)


class ForgedLinks:
    """The log's rows, all of them in their honest positions, with some chain links
    forged (`links`: fleet -> the next fleet id it claims): a tree HeadsTable cannot
    build. RFC 6962 §2.1 root and §2.1.1 paths from merkle_reference."""

    def __init__(self, log: MemoryLog, links: dict[str, str]) -> None:
        self.rows = list(log.table.rows)
        self.links = {r.fleet_id: links.get(r.fleet_id, log.table.next_fleet_id(p)) for p, r in enumerate(self.rows)}
        self.entries = [r.entry(self.links[r.fleet_id]) for r in self.rows]

    def heads_leaf(self, previous: int) -> HeadsLeaf:
        return HeadsLeaf(previous, len(self.rows), mth(self.entries))

    def proved_row(self, fleet: str) -> ProvedRow:
        p = [r.fleet_id for r in self.rows].index(fleet)
        r = self.rows[p]
        return ProvedRow(p, r.fleet_id, r.sequence, r.leaf_index, r.leaf_hash, r.status, tuple(path(p, self.entries)),
                         self.links[fleet])


def absence_proof(log: MemoryLog, note: str, fleet: str, covering: ProvedRow) -> bytes:
    """An absence proof of `fleet` at the log's last HEADS leaf, with `covering`."""
    size = log.size
    heads = HeadsLeafProof(size - 1, log.leaves[size - 1], log.inclusion(size - 1, size))
    return build_fleet_head_proof(fleet, note, heads, absent=True, covering=covering)


def recheck(alert: dict, log: MemoryLog) -> str:
    """The alert's evidence re-checks from its contents, and against a refold of the log."""
    evidence = alert["evidence"]
    verify_heads_evidence(evidence, POLICY)
    return verify_heads_evidence(evidence, POLICY, leaves=log.leaves)


async def test_a_log_that_serves_an_older_head(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0), bundle("fleet-c", 0)])  # leaves 0, 1; HEADS 2
    old_table, old_note = log.table.copy(), log.checkpoint(KEYS)
    a0 = log.table.get("fleet-a")
    log.batch([bundle("fleet-a", 1)])  # leaf 3; HEADS 4
    note = served.publish()
    state = ClientState()
    assert verify_fleet_head(fleet_head_proof(log, "fleet-a", note), POLICY, AT, state=state).sequence == 1
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == []

    # 1. The old proof, from the checkpoint before sequence 1: still within max_age, so
    # a client without memory takes it; one that saw sequence 1 refuses it.
    old = fleet_head_proof(log, "fleet-a", old_note, table=old_table)
    assert verify_fleet_head(old, POLICY, AT).sequence == 0
    with pytest.raises(FleetHeadRollbackError, match="sequence"):
        verify_fleet_head(old, POLICY, AT, state=state)

    # 2. The log's next HEADS leaf commits to a table that rolls fleet-a back to sequence 0.
    log.add_bundles([bundle("fleet-b", 0)])  # leaf 5
    rolled_back = lying_table(log, replace=a0)
    lie = log.add_heads(rolled_back.heads_leaf(log.previous))  # leaf 6
    note = served.publish()
    proof = fleet_head_proof(log, "fleet-a", note, table=rolled_back)
    assert verify_fleet_head(proof, POLICY, AT).sequence == 0  # signed, witnessed, fresh: believed
    with pytest.raises(FleetHeadRollbackError):
        verify_fleet_head(proof, POLICY, AT, state=state)
    ok, monitor, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["heads_mismatch"]
    alert = alerts[0]
    assert alert["details"]["index"] == lie and alert["details"]["size"] == log.size
    assert alert["details"]["want"]["root"] == log.table.root().hex()
    assert alert["details"]["got"]["root"] == rolled_back.root().hex()
    # The fold says fleet-a's row is sequence 1, at leaf 3.
    assert ["fleet-a", 1, 3] in [row[:3] for row in alert["evidence"]["rows"]]
    assert f"HEADS leaf {lie}" in recheck(alert, log)
    assert monitor.metrics.heads_checked.labels("mismatch")._value.get() == 1
    assert monitor.entries_verified == 2  # resumed from its state: leaves 5 and 6 only


async def test_a_log_that_omits_a_fleet(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-e", 0), bundle("fleet-a", 0), bundle("fleet-c", 0)])  # positions e 0, a 1, c 2
    note = served.publish()
    state = ClientState()
    verify_fleet_head(fleet_head_proof(log, "fleet-c", note), POLICY, AT, state=state)
    log.add_bundles([bundle("fleet-a", 1)])
    omitting = lying_table(log, drop="fleet-c")
    lie = log.add_heads(omitting.heads_leaf(log.previous))
    note = served.publish()
    proof = fleet_head_proof(log, "fleet-c", note, table=omitting)
    # The absence proof verifies: in the committed table fleet-a links to fleet-e,
    # passing over fleet-c; the client sees that one link and cannot know it skips a row.
    with pytest.raises(FleetAbsentError) as absent:
        verify_fleet_head(proof, POLICY, AT)
    absence = absent.value.absence
    assert absence.covering is not None
    assert (absence.covering.fleet_id, absence.next_fleet_id, absence.position, absence.heads.count) == \
        ("fleet-a", "fleet-e", 1, 2)
    with pytest.raises(FleetHeadRollbackError, match="fleet-c"):
        verify_fleet_head(proof, POLICY, AT, state=state)  # a client that saw fleet-c
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["heads_mismatch"]
    assert alerts[0]["details"]["index"] == lie
    assert alerts[0]["details"]["got"]["count"] == 2 and alerts[0]["details"]["want"]["count"] == 3
    # The fold's rows, in the order the fleets first appeared (the heads tree's).
    assert [r[0] for r in alerts[0]["evidence"]["rows"]] == ["fleet-e", "fleet-a", "fleet-c"]
    recheck(alerts[0], log)


async def test_a_log_whose_covering_link_skips_a_fleet_it_still_holds(served: ServedLog, tmp_path: Path) -> None:
    # The lie the chained layout leaves a log: every row in the table, the count right,
    # one link forged to pass over a fleet that has a row. The client checks that the
    # link is in the committed tree and covers the fleet id; only the fold of the log,
    # which knows every fleet id, can see that fleet-c sorts between fleet-a and fleet-e.
    log = served.log
    log.batch([bundle("fleet-e", 0), bundle("fleet-a", 0), bundle("fleet-c", 0)])
    note = served.publish()
    state = ClientState()
    verify_fleet_head(fleet_head_proof(log, "fleet-c", note), POLICY, AT, state=state)
    log.add_bundles([bundle("fleet-e", 1)])
    forged = ForgedLinks(log, {"fleet-a": "fleet-e"})
    assert [r.fleet_id for r in forged.rows] == ["fleet-e", "fleet-a", "fleet-c"]
    lie = log.add_heads(forged.heads_leaf(log.previous))
    note = served.publish()
    proof = absence_proof(log, note, "fleet-c", forged.proved_row("fleet-a"))
    with pytest.raises(FleetAbsentError) as absent:
        verify_fleet_head(proof, POLICY, AT)
    assert absent.value.absence.heads.count == 3 == log.table.count  # the count does not give it away
    assert (absent.value.absence.covering.fleet_id, absent.value.absence.next_fleet_id) == ("fleet-a", "fleet-e")
    with pytest.raises(FleetHeadRollbackError, match="fleet-c"):
        verify_fleet_head(proof, POLICY, AT, state=state)
    # The honest link (fleet-a -> fleet-c) is not in the committed tree: no proof of it verifies.
    honest = ForgedLinks(log, {}).proved_row("fleet-a")
    with pytest.raises(FleetHeadRootError):
        verify_fleet_head(absence_proof(log, note, "fleet-b", honest), POLICY, AT)
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["heads_mismatch"]
    details = alerts[0]["details"]
    assert details["index"] == lie and details["got"]["count"] == details["want"]["count"] == 3
    assert details["got"]["root"] == forged.heads_leaf(0).root.hex() != details["want"]["root"]
    assert details["want"]["root"] == log.table.root().hex()
    rows = alerts[0]["evidence"]["rows"]
    assert [r[0] for r in rows] == ["fleet-e", "fleet-a", "fleet-c"] and rows[2][1:3] == [0, 2]
    assert "HEADS leaf" in recheck(alerts[0], log)


def _wrong_previous(log: MemoryLog) -> bytes:
    return log.table.heads_leaf(log.previous + 1).encode()


def _wrong_row(log: MemoryLog) -> bytes:
    row = log.table.get("fleet-a")
    assert row is not None
    moved = HeadsRow(row.fleet_id, row.sequence, row.leaf_index + 1, row.leaf_hash, row.status)
    return lying_table(log, replace=moved).heads_leaf(log.previous).encode()


def _wrong_link(log: MemoryLog) -> bytes:
    # fleet-b (the greatest) links to itself instead of wrapping to fleet-a.
    return ForgedLinks(log, {"fleet-b": "fleet-b"}).heads_leaf(log.previous).encode()


def _legacy_with_the_chained_root(log: MemoryLog) -> bytes:
    return HeadsLeaf(log.previous, log.table.count, log.table.root(), LEGACY_HEADS_LEAF_TYPE).encode()


def _legacy_of_other_rows(log: MemoryLog) -> bytes:
    older = [r for r in log.table.rows if r.fleet_id != "fleet-a"] + [HeadsRow("fleet-a", 0, 0, bytes(32))]
    return HeadsLeaf(log.previous, log.table.count, legacy_sorted_root(older), LEGACY_HEADS_LEAF_TYPE).encode()


def _undecodable(log: MemoryLog) -> bytes:
    return log.table.heads_leaf(log.previous).encode()[:-1]


def _empty(log: MemoryLog) -> bytes:
    return HeadsTable().heads_leaf(log.previous).encode()


@pytest.mark.parametrize("lie", [_wrong_previous, _wrong_row, _wrong_link, _undecodable, _empty,
                                 _legacy_with_the_chained_root, _legacy_of_other_rows],
                         ids=["previous", "row", "link", "undecodable", "empty-table", "type-2-chained-root",
                              "type-2-other-rows"])
async def test_a_heads_leaf_that_disagrees_with_the_bundles(served: ServedLog, tmp_path: Path, lie) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0), bundle("fleet-b", 0)])
    log.add_bundles([bundle("fleet-a", 1)])
    index = log.append(lie(log))
    log.previous = index
    served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["heads_mismatch"]
    assert alerts[0]["details"]["index"] == index
    assert alerts[0]["evidence"]["heads_leaf"]["index"] == index
    recheck(alerts[0], log)
    # The fold goes on from the bundles: the log's next, honest HEADS leaf matches it.
    log.batch([bundle("fleet-b", 1)])
    served.publish()
    ok, monitor, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == []
    assert monitor.metrics.heads_checked.labels("match")._value.get() == 1


def _legacy(log: MemoryLog) -> HeadsLeaf:
    """Release 0.2.0's HEADS leaf for the log's table (type 2, the sorted root)."""
    return HeadsLeaf(log.previous, log.table.count, legacy_sorted_root(log.table.rows), LEGACY_HEADS_LEAF_TYPE)


async def test_a_log_that_ran_release_0_2_0_is_no_finding(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.add_bundles([bundle("fleet-m", 0), bundle("fleet-c", 0)])
    log.add_heads(_legacy(log))  # 2
    served.publish()
    ok, monitor, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == [] and monitor.metrics.heads_checked.labels("match")._value.get() == 1
    log.add_bundles([bundle("fleet-a", 0), bundle("fleet-m", 1)])
    log.add_heads(_legacy(log))  # 5
    log.batch([bundle("fleet-x", 0), bundle("fleet-c", 1)])  # the upgraded log: type 3, previous 5
    log.batch([bundle("fleet-b", 0)])
    assert [log.leaves[i][0] for i in (2, 5, 8, 10)] == [2, 2, 3, 3]
    served.publish()
    ok, monitor, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == [] and monitor.metrics.heads_checked.labels("match")._value.get() == 3
    assert monitor.state.heads is not None and monitor.state.heads.table.rows == log.table.rows
    # A client takes a proof at the type-3 leaf, not at a type-2 one.
    note = log.checkpoint(KEYS)
    assert verify_fleet_head(fleet_head_proof(log, "fleet-m", note), POLICY, AT).sequence == 1
    old = MemoryLog()
    old.add_bundles([bundle("fleet-m", 0)])
    old.add_heads(_legacy(old))
    with pytest.raises(HeadsLeafError, match="type 2"):
        verify_fleet_head(fleet_head_proof(old, "fleet-m", old.checkpoint(KEYS)), POLICY, AT)


async def test_evidence_of_a_heads_leaf_that_agrees_is_refused(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0)])
    log.add_bundles([bundle("fleet-a", 1)])
    log.add_heads(HeadsLeaf(0, 1, log.table.root()))  # previous 0; the HEADS leaf before it is 1
    served.publish()
    _, _, alerts = await poll(served, tmp_path / "m.json")
    evidence = alerts[0]["evidence"]
    recheck(alerts[0], log)
    honest = dict(evidence, want={"previous": 0, "count": 1, "root": log.table.root().hex()})
    with pytest.raises(HeadsEvidenceError, match="is the fold's"):
        verify_heads_evidence(honest, POLICY)  # with that `want`, the leaf agrees
    other_rows = dict(evidence, rows=[["fleet-a", 0, 0, evidence["rows"][0][3], "active"]])
    with pytest.raises(HeadsEvidenceError):
        verify_heads_evidence(other_rows, POLICY)
    tampered = dict(evidence, heads_leaf=dict(evidence["heads_leaf"], index=0))
    with pytest.raises(HeadsEvidenceError, match="not proved"):
        verify_heads_evidence(tampered, POLICY)
    with pytest.raises(HeadsEvidenceError, match="fold to another table"):
        verify_heads_evidence(evidence, POLICY, leaves=log.leaves[:2] + log.leaves[:1] + log.leaves[3:])


async def test_a_bundle_after_its_fleets_retirement(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0), bundle("fleet-a", 1, status="retired")])
    (late,) = log.add_bundles([bundle("fleet-a", 2)], apply=False)  # the log should have refused it
    log.add_heads()  # commits to the retirement still
    served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["retired_fleet_bundle"]
    assert alerts[0]["details"] | {"leaf_hash": None} == {
        "fleet_id": "fleet-a", "sequence": 2, "index": late, "leaf_hash": None, "retired_sequence": 1,
        "retired_index": 1}


async def test_a_checkpoint_whose_last_leaf_is_not_a_heads_leaf(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    # A log that ran before HEADS leaves: its checkpoints end with bundles, no finding.
    log.add_bundles([bundle("fleet-a", 0)])
    served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == []
    heads = log.batch([bundle("fleet-b", 0)])
    served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == []
    # From its first HEADS leaf on, every checkpoint must end with one.
    log.add_bundles([bundle("fleet-a", 1)])
    note = served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["heads_missing"]
    details = alerts[0]["details"]
    assert (details["size"], details["index"], details["heads_index"]) == (log.size, log.size - 1, heads)
    assert "not a HEADS leaf" in recheck(alerts[0], log)
    # A client handed the earlier HEADS leaf with this checkpoint refuses it: it is not
    # the checkpoint's last leaf, so it says nothing about the table current at N.
    row = log.table.proved_row(log.table.position("fleet-a"))
    stale_heads = HeadsLeafProof(heads, log.leaves[heads], log.inclusion(heads))
    envelope = bundle("fleet-a", 0).to_dict()
    forged = build_fleet_head_proof("fleet-a", note, stale_heads, row=row,
                                    bundle=BundleProof(envelope, log.inclusion(row.leaf_index)))
    assert parse_fleet_head_proof(forged).heads_leaf.index == heads
    with pytest.raises(HeadsLeafError):
        verify_fleet_head(forged, POLICY, AT)
    # The log catches up with a HEADS leaf: no further finding.
    log.add_heads()
    served.publish()
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts == []


async def test_a_stale_checkpoint(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0)])
    note = served.publish(log_time=NOW - 3600, witness_time=NOW - 3600)
    with pytest.raises(StaleFleetHeadError):
        verify_fleet_head(fleet_head_proof(log, "fleet-a", note), POLICY, AT)
    ok, _, alerts = await poll(served, tmp_path / "m.json", max_checkpoint_age=300)
    assert ok and alerts.kinds() == ["frozen_log"]
    assert alerts[0]["details"]["age_s"] == 3600


async def test_a_checkpoint_without_witness_quorum(served: ServedLog, tmp_path: Path) -> None:
    log = served.log
    log.batch([bundle("fleet-a", 0)])
    note = served.publish(witness_time=None)
    with pytest.raises(WitnessQuorumError):
        verify_fleet_head(fleet_head_proof(log, "fleet-a", note), POLICY, AT)
    ok, _, alerts = await poll(served, tmp_path / "m.json")
    assert ok and alerts.kinds() == ["quorum_failure"]
    assert alerts[0]["details"]["size"] == log.size


def test_the_monitors_fold_is_the_logs_fold() -> None:
    """The fold a third party re-checks with is bundle.heads.fold on an honest log."""
    from logserver.bundle import fold
    from logserver.monitor.heads import fold_leaves

    log = MemoryLog()
    log.batch([bundle("fleet-b", 0), bundle("fleet-a", 3)])
    log.batch([bundle("fleet-b", 1, status="retired")])
    assert fold_leaves(log.leaves).rows == fold(log.leaves).rows == log.table.rows
    assert [r.fleet_id for r in log.table.rows] == ["fleet-b", "fleet-a"]  # first appearance
    assert fold_leaves(log.leaves).root() == log.table.root()
    assert bundle_row(0, log.leaves[0]).fleet_id == "fleet-b"


@pytest.mark.parametrize("mutate, match", [
    (lambda e: e.update(type="other"), "of type"),
    (lambda e: e.update(finding="lies"), "finding"),
    (lambda e: e.update(extra=1), "finding"),
    (lambda e: e.pop("rows"), "finding"),
    (lambda e: e.update(origin="example.com/another-log"), "not a log of the policy"),
    (lambda e: e.update(checkpoint=e["checkpoint"].replace("\n\n", "\n\n\u2014 x y\n", 1)), "checkpoint"),
    (lambda e: e["heads_leaf"].update(leaf="not base64!"), "base64"),
    (lambda e: e["heads_leaf"].update(inclusion_proof=["00" * 32] * 65), "at most 64"),
    (lambda e: e["heads_leaf"].update(inclusion_proof=["zz"]), "inclusion_proof"),
    (lambda e: e["heads_leaf"].update(index=-1), "index"),
    (lambda e: e.update(rows=[["fleet-a", 0, 0, "00" * 32, []]]), "rows"),
    # The rows are the tree's leaves in the order the fleets first appeared (b, a):
    # sorted by fleet id, they give another root.
    (lambda e: e.update(rows=sorted(e["rows"])), "the rows give count 2, root"),
    (lambda e: e["rows"].append(["fleet-z", 0, 99, "00" * 32, "active"]), "not before the HEADS leaf"),
    (lambda e: e.update(want={"previous": 0}), "want"),
])
async def test_malformed_heads_evidence_is_refused(served: ServedLog, tmp_path: Path, mutate, match) -> None:
    log = served.log
    log.batch([bundle("fleet-b", 0), bundle("fleet-a", 0)])
    log.add_bundles([bundle("fleet-a", 1)])
    log.add_heads(HeadsLeaf(0, 2, log.table.root()))  # previous should be 2
    served.publish()
    _, _, alerts = await poll(served, tmp_path / "m.json")
    evidence = alerts[0]["evidence"]
    recheck(alerts[0], log)
    bad = json.loads(json.dumps(evidence))
    mutate(bad)
    with pytest.raises(HeadsEvidenceError, match=match):
        verify_heads_evidence(bad, POLICY)
    with pytest.raises(HeadsEvidenceError):
        verify_heads_evidence(json.dumps(bad), POLICY)  # the JSON text, parsed strictly
