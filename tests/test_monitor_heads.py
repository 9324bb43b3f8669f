"""The monitor's fold of the heads table against a real server on real PostgreSQL: the
sequencer's HEADS leaves (every batch's last leaf) all agree with the fold, through a
retirement and concurrent fleets; the fold is kept in the state file, so a restarted
monitor checks the new HEADS leaves without reading the log again from 0; its table is
the one `bundle.heads.fold` gives from the served entries; the metrics count the checks.
"""
from __future__ import annotations

import json

import pytest

from bundle_factory import make_envelope, make_payload
from logserver.bundle import fold, is_heads_leaf
from logserver.client import LogClient
from logserver.merkle import EntriesTileID, entries_tiles_for_size
from logserver.monitor import Monitor, MonitorState
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
    for bundle in entries_tiles_for_size(size):
        leaves += await client.entry_bundle(EntriesTileID(bundle.index, bundle.width))
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
        assert first.state.heads is not None and first.state.heads.table.rows == table.rows
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
        assert saved["version"] == 2 and len(saved["heads"]["rows"]) == table.count
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


async def test_a_state_from_before_the_fold_does_not_check_heads(server, policy, tmp_path):
    await fill(server, 5, fleets=1, prefix="old-state")
    state_path = tmp_path / "state.json"
    async with LogClient(server.url) as client:
        assert await Monitor(client, policy, state_path).poll_once()
        obj = json.loads(state_path.read_bytes())
        del obj["heads"]
        obj["version"] = 1
        state_path.write_text(json.dumps(obj))
        assert MonitorState.load(state_path).heads is None
        await fill(server, 3, fleets=1, prefix="old-state-2")
        old = Monitor(client, policy, state_path)
        assert await old.poll_once()
        assert old.heads_checked == 0 and old.summary()["heads"] is None
        assert "logserver_monitor_heads_check_enabled 0.0" in old.metrics.render().decode()
        assert json.loads(state_path.read_bytes())["heads"] is None  # saved as version 2, still unknown
