"""A fresh monitor catches up over 10,000 entries submitted concurrently over HTTP
and its root, recomputed from the entries themselves, equals the log's.

Measured on the 2-core CI machine: submitting takes about 13 s, the catch-up about
3.5 s (some 3,000 entries/s verified, two signatures each, on one core).
"""
from __future__ import annotations

import time

import pytest

from logserver.client import LogClient
from logserver.formats import parse_checkpoint, parse_note
from logserver.monitor import Monitor
from server_harness import start_server, write_config
from test_client_support import trust_policy_for
from test_monitor_catchup import Collected, fill

ENTRIES = 10_000


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("large"), database_url))
    yield s
    await s.close()


async def test_fresh_catch_up_over_ten_thousand_entries(server, tmp_path):
    policy, _ = await trust_policy_for(server, tmp_path / "policy")
    started = time.perf_counter()
    await fill(server, ENTRIES, fleets=100, prefix="large")
    submitted = time.perf_counter()
    alerts = Collected()
    async with LogClient(server.url) as client:
        monitor = Monitor(client, policy, tmp_path / "state.json", emit=alerts)
        assert await monitor.poll_once()
        done = time.perf_counter()
        served = parse_checkpoint(parse_note(await client.checkpoint()).text)
    cp = parse_checkpoint(parse_note(monitor.state.checkpoint).text)
    # ENTRIES bundles, each batch ended by its HEADS leaf (docs/fleet-heads.md).
    assert cp.size == served.size > ENTRIES
    assert monitor.state.verified.size == cp.size
    assert monitor.state.verified.root() == cp.root == served.root
    assert monitor.entries_verified == cp.size
    assert len(monitor.state.fleets) == 100
    assert all(head.sequence == ENTRIES // 100 - 1 for head in monitor.state.fleets.values())
    assert alerts == []
    print(f"\n{ENTRIES} entries: submitted in {submitted - started:.1f}s, monitor caught up in "
          f"{done - submitted:.1f}s ({ENTRIES / (done - submitted):.0f} entries/s)")
