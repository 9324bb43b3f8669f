"""The monitor's fold of the heads table against a real server on real PostgreSQL: the
sequencer's HEADS leaves (every batch's last leaf, type 3) all agree with the fold,
through a retirement and concurrent fleets; the fold is kept in the state file (version
3, its rows in the order the fleets first appeared: the heads tree's), so a restarted
monitor checks the new HEADS leaves without reading the log again from 0; its table is
the one `bundle.heads.fold` gives from the served entries; the metrics count the checks.
A state file of version 1 (no fold) or 2 (release 0.2.0's fold, rows sorted by fleet
id) loads without a fold, and that monitor checks no HEADS leaf.

The pure parts: the state file's version 3 round trip and its refusals, and heads
evidence (`verify_heads_evidence`) over rows in first-appearance order.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bundle_factory import make_envelope, make_payload
from fleet_head_vectors import MemoryLog, VectorKeys, bundle
from logserver.bundle import HeadsLeaf, HeadsTable, bundle_row, decode_heads_leaf, fold, is_heads_leaf
from logserver.client import LogClient, StateError
from logserver.merkle import CompactRange, EntriesTileID, entries_tiles_for_size
from logserver.monitor import Monitor, MonitorState
from logserver.monitor.heads import (
    FoldItem,
    HeadsEvidenceError,
    HeadsFolder,
    mismatch_evidence,
    verify_heads_evidence,
)
from logserver.monitor.state import STATE_VERSION
from server_harness import start_server, write_config
from test_client_support import submit, trust_policy_for
from test_monitor_catchup import Collected, fill


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("monheads"), database_url))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy(server, tmp_path_factory):
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[0]


async def served_leaves(client: LogClient, size: int) -> list[bytes]:
    leaves: list[bytes] = []
    for tile in entries_tiles_for_size(size):
        leaves += await client.entry_bundle(EntriesTileID(tile.index, tile.width))
    return leaves


async def test_the_sequencers_heads_leaves_agree_with_the_fold_across_a_restart(server, policy, tmp_path):
    await fill(server, 40, fleets=8, prefix="heads")
    await submit(server.session, make_envelope(make_payload(fleet_id="heads-retired", sequence=0)))
    await submit(server.session, make_envelope(make_payload(fleet_id="heads-retired", sequence=1, status="retired")))
    alerts = Collected()
    state_path = tmp_path / "state.json"
    async with LogClient(server.url) as client:
        first = Monitor(client, policy, state_path, emit=alerts)
        assert await first.poll_once()
        size = first.state.verified.size
        leaves = await served_leaves(client, size)
        heads_count = sum(map(is_heads_leaf, leaves))
        assert heads_count >= 2 and is_heads_leaf(leaves[-1])
        assert first.heads_checked == heads_count
        table = fold(leaves)  # checks every HEADS leaf too
        assert all(decode_heads_leaf(leaf).layout == 3 for leaf in leaves if is_heads_leaf(leaf))
        assert first.state.heads is not None and first.state.heads.table.rows == table.rows
        # The fold's rows are in the order the fleets first appeared in the served log.
        assert [r.fleet_id for r in table.rows] == first_appearance(leaves)
        assert table.get("heads-retired").retired
        summary = first.summary()["heads"]
        assert summary["fleets"] == table.count and summary["heads_leaves_checked"] == heads_count
        text = first.metrics.render().decode()
        assert f'logserver_monitor_heads_leaves_checked_total{{result="match"}} {float(heads_count)}' in text
        assert 'logserver_monitor_heads_leaves_checked_total{result="mismatch"} 0.0' in text
        assert f"logserver_monitor_heads_fleets {float(table.count)}" in text
        assert "logserver_monitor_heads_check_enabled 1.0" in text

        # The state holds the fold; a new process goes on from it.
        saved = json.loads(state_path.read_bytes())
        assert saved["version"] == 3 and [r[0] for r in saved["heads"]["rows"]] == first_appearance(leaves)
        assert saved["heads"]["previous"] == size - 1
        await fill(server, 10, fleets=3, prefix="heads-after")
        again = Monitor(client, policy, state_path, emit=alerts)
        assert again.state.heads.table.root() == table.root()
        assert await again.poll_once()
        new_size = again.state.verified.size
        assert again.entries_verified == new_size - size  # not from 0
        leaves = await served_leaves(client, new_size)
        assert again.heads_checked == sum(map(is_heads_leaf, leaves[size:])) >= 1
        assert again.state.heads.table.rows == fold(leaves).rows
    assert alerts == []


@pytest.mark.parametrize("version", [1, 2])
async def test_a_state_from_before_the_chained_fold_does_not_check_heads(server, policy, tmp_path, version):
    # Version 1: no fold. Version 2 (release 0.2.0): a fold whose rows are sorted by
    # fleet id; the order they first appeared in, which the chained tree needs, is lost.
    await fill(server, 5, fleets=3, prefix=f"old-state-v{version}")
    state_path = tmp_path / "state.json"
    async with LogClient(server.url) as client:
        assert await Monitor(client, policy, state_path).poll_once()
        obj = json.loads(state_path.read_bytes())
        if version == 1:
            del obj["heads"]
        else:
            obj["heads"]["rows"].sort(key=lambda r: r[0].encode())
        obj["version"] = version
        state_path.write_text(json.dumps(obj))
        assert MonitorState.load(state_path).heads is None
        await fill(server, 3, fleets=1, prefix=f"old-state-v{version}-2")
        old = Monitor(client, policy, state_path)
        assert await old.poll_once()
        assert old.heads_checked == 0 and old.summary()["heads"] is None
        assert "logserver_monitor_heads_check_enabled 0.0" in old.metrics.render().decode()
        saved = json.loads(state_path.read_bytes())
        assert saved["version"] == STATE_VERSION == 3 and saved["heads"] is None  # still unknown


def first_appearance(leaves: list[bytes]) -> list[str]:
    """The fleet ids in the order their first bundles appear among `leaves` (computed
    from the leaves, not with the heads table)."""
    seen: dict[str, None] = {}
    for index, leaf in enumerate(leaves):
        if not is_heads_leaf(leaf):
            seen.setdefault(bundle_row(index, leaf).fleet_id)
    return list(seen)


# --- the state file, version 3 -------------------------------------------------------------------


def _state_with_heads() -> MonitorState:
    """A state whose fold holds fleets that first appeared out of byte order."""
    log = MemoryLog()
    log.batch([bundle("fleet-m", 0), bundle("fleet-c", 0), bundle("fleet-x", 0)])
    log.batch([bundle("fleet-a", 0), bundle("fleet-m", 1, status="retired")])
    state = MonitorState()
    verified = CompactRange()
    verified.extend(log.hashes)
    state.verified = verified
    state.heads = HeadsFolder(log.table.copy(), log.previous, 3)
    return state


def test_state_v3_round_trip_keeps_the_rows_in_first_appearance_order(tmp_path):
    state = _state_with_heads()
    assert state.heads is not None
    path = tmp_path / "state.json"
    state.save(path)
    obj = json.loads(path.read_bytes())
    assert obj["version"] == 3
    assert obj["heads"]["previous"] == 6 and obj["heads"]["first"] == 3
    assert [r[0] for r in obj["heads"]["rows"]] == ["fleet-m", "fleet-c", "fleet-x", "fleet-a"]
    assert obj["heads"]["rows"][0][1:3] == [1, 5] and obj["heads"]["rows"][0][4] == "retired"
    loaded = MonitorState.load(path)
    assert loaded.heads is not None and loaded.dumps() == path.read_bytes()
    assert loaded.heads.table.rows == state.heads.table.rows
    assert loaded.heads.table.root() == state.heads.table.root()
    assert (loaded.heads.previous, loaded.heads.first) == (6, 3)
    # The rows' order is the tree's: the same rows sorted are another table.
    obj["heads"]["rows"].sort(key=lambda r: r[0].encode())
    resorted = MonitorState.loads(json.dumps(obj).encode())
    assert resorted.heads is not None and resorted.heads.table.root() != state.heads.table.root()


def _v(version: int, mutate: Callable[[dict[str, Any]], None] = lambda o: None) -> bytes:
    obj = json.loads(_state_with_heads().dumps())
    obj["version"] = version
    mutate(obj)
    return json.dumps(obj).encode()


def test_state_v2_loads_without_a_fold():
    assert MonitorState.loads(_v(3)).heads is not None
    assert MonitorState.loads(_v(2)).heads is None  # entries verified: the fold is unknown
    assert MonitorState.loads(_v(2, lambda o: o.update(heads=None))).heads is None
    assert MonitorState.loads(_v(2, lambda o: o["heads"]["rows"].sort())).heads is None
    fresh = MonitorState.loads(_v(2, lambda o: o.update(verified={"size": 0, "frontier": []}, heads=None)))
    assert fresh.heads is not None and fresh.heads.table.count == 0  # nothing verified yet: the fold starts at 0


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("mutate", [
    lambda o: o.pop("heads"),
    lambda o: o.update(heads=[]),
    lambda o: o["heads"].pop("first"),
    lambda o: o["heads"].update(previous=-1),
    lambda o: o["heads"].update(rows={}),
    lambda o: o["heads"]["rows"].append(["f", 1, 0, "zz", "active"]),
    lambda o: o["heads"]["rows"].append(["f", 1, 0, "00" * 32, []]),
    lambda o: o["heads"]["rows"].append(["f/x", 1, 0, "00" * 32, "active"]),
    lambda o: o["heads"]["rows"].append(["f", 1, 0, "00" * 32, "gone"]),
    lambda o: o["heads"]["rows"].append(["f", 1, 0, "00" * 32]),
    lambda o: o["heads"]["rows"].extend([["f", 1, 0, "00" * 32, "active"]] * 2),
], ids=["no-heads", "heads-list", "no-first", "previous", "rows-object", "hash", "status-type", "fleet-id",
        "status", "short-row", "duplicate"])
def test_malformed_heads_are_refused_in_v2_and_v3(version, mutate):
    with pytest.raises(StateError, match=r"^heads|want an object with version"):
        MonitorState.loads(_v(version, mutate))


@pytest.mark.parametrize("version", [0, 4, "3", None])
def test_other_state_versions_are_refused(version):
    with pytest.raises(StateError, match="want an object with version 3 \\(or 1 or 2\\)"):
        MonitorState.loads(_v(3, lambda o: o.update(version=version)))


def test_a_v3_state_whose_fold_is_beyond_what_was_verified_is_refused():
    with pytest.raises(StateError, match=r"heads\.previous 99 is beyond the verified size 7"):
        MonitorState.loads(_v(3, lambda o: o["heads"].update(previous=99)))


# --- evidence over rows in first-appearance order -----------------------------------------------


KEYS = VectorKeys()
POLICY = KEYS.policy()


def _lying_log() -> tuple[MemoryLog, Any]:
    """A log whose HEADS leaf 5 commits to its rows sorted by fleet id (the release 0.2.0
    order) under type 3; the mismatch as the monitor's fold finds it."""
    log = MemoryLog()
    log.batch([bundle("fleet-m", 0), bundle("fleet-c", 0)])  # HEADS 2
    log.add_bundles([bundle("fleet-a", 0), bundle("fleet-m", 1)])
    sorted_table = HeadsTable.from_rows(sorted(log.table.rows, key=lambda r: r.key))
    log.add_heads(sorted_table.heads_leaf(log.previous))  # 5
    folder = HeadsFolder()
    mismatch = None
    for index, leaf in enumerate(log.leaves):
        if is_heads_leaf(leaf):
            mismatch = folder.observe(FoldItem(index, heads=leaf)) or mismatch
        else:
            folder.observe(FoldItem(index, row=bundle_row(index, leaf)))
    return log, mismatch


def test_evidence_rows_are_in_first_appearance_order_and_recheck():
    log, mismatch = _lying_log()
    assert mismatch is not None and mismatch.index == 5
    assert [r.fleet_id for r in mismatch.rows] == ["fleet-m", "fleet-c", "fleet-a"]
    assert mismatch.want == log.table.heads_leaf(2) and mismatch.got == decode_heads_leaf(log.leaves[5])
    note = log.checkpoint(KEYS)
    evidence = mismatch_evidence("example.com/fleet-heads-vectors", KEYS.log_vkey, note, mismatch,
                                 log.inclusion(5))
    assert [r[0] for r in evidence["rows"]] == ["fleet-m", "fleet-c", "fleet-a"]
    text = verify_heads_evidence(evidence, POLICY, leaves=log.leaves)
    assert "HEADS leaf 5" in text and "type 3" in text
    # The same rows sorted give the lying leaf: that evidence shows no misbehaviour.
    resorted = dict(evidence, rows=sorted(evidence["rows"]), want={
        "previous": 2, "count": 3, "root": mismatch.got.root.hex()})
    with pytest.raises(HeadsEvidenceError, match="is the fold's"):
        verify_heads_evidence(resorted, POLICY)
    # And the sorted rows with the fold's want do not give it.
    with pytest.raises(HeadsEvidenceError, match="the rows give count 3"):
        verify_heads_evidence(dict(evidence, rows=sorted(evidence["rows"])), POLICY)
    # Refolding the leaves pins the order: sorted rows that happen to give `want` are
    # still not the log's table.
    with pytest.raises(HeadsEvidenceError, match="fold to another table"):
        verify_heads_evidence(resorted, POLICY, leaves=log.leaves)


def test_evidence_of_a_type_2_heads_leaf_is_checked_in_the_sorted_layout():
    log = MemoryLog()
    log.add_bundles([bundle("fleet-m", 0), bundle("fleet-c", 0)])
    wrong = HeadsLeaf(0, 2, log.table.root(), 2)  # type 2 with the chained root
    log.add_heads(wrong)
    folder = HeadsFolder()
    for index in (0, 1):
        folder.observe(FoldItem(index, row=bundle_row(index, log.leaves[index])))
    mismatch = folder.observe(FoldItem(2, heads=log.leaves[2]))
    assert mismatch is not None and mismatch.want.layout == 2 and mismatch.want.root != wrong.root
    evidence = mismatch_evidence("example.com/fleet-heads-vectors", KEYS.log_vkey, log.checkpoint(KEYS), mismatch,
                                 log.inclusion(2))
    assert "type 2" in verify_heads_evidence(evidence, POLICY, leaves=log.leaves)
