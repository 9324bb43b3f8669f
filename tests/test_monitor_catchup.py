"""The monitor against a running server: it resumes from its state, reports fleet
events exactly once, policy failures, sequence gaps and a frozen log, and exports
metrics. (The 10,000-entry catch-up is in test_monitor_large.py.)"""
from __future__ import annotations

import asyncio
import time

import pytest

from bundle_factory import BundleFactory, make_authorities, make_envelope, make_payload
from logserver.client import LogClient
from logserver.formats import parse_checkpoint, parse_note
from logserver.monitor import Monitor, MonitorState
from server_harness import start_server, write_config
from test_client_support import submit, trust_policy_for


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("mon"), database_url))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy(server, tmp_path_factory):
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[0]


async def fill(server, count: int, fleets: int = 50, prefix: str = "fill") -> None:
    """Submit `count` bundles over HTTP: fleets in parallel, each fleet's sequence in order."""
    per_fleet = [count // fleets + (1 if i < count % fleets else 0) for i in range(fleets)]
    # Sign first (client-side cost), then submit.
    envelopes = [BundleFactory(fleet_id=f"{prefix}-{i}").many(n) for i, n in enumerate(per_fleet)]

    async def one_fleet(envs):
        for env in envs:
            await submit(server.session, env)

    await asyncio.gather(*(one_fleet(e) for e in envelopes))


async def log_checkpoint(client: LogClient):
    return parse_checkpoint(parse_note(await client.checkpoint()).text)


class Collected(list):
    def __call__(self, alert):
        self.append(alert)

    def kinds(self):
        return [a["kind"] for a in self]


async def test_resume_verifies_only_new_entries(server, policy, tmp_path):
    await fill(server, 20, fleets=4, prefix="resume")
    async with LogClient(server.url) as client:
        first = Monitor(client, policy, tmp_path / "state.json", chunk_bundles=1)
        assert await first.poll_once()
        before = first.state.verified.size
        await fill(server, 300, fleets=3, prefix="resume2")
        again = Monitor(client, policy, tmp_path / "state.json", chunk_bundles=1)
        assert again.state.verified.size == before
        assert await again.poll_once()
        cp = await log_checkpoint(client)
        assert again.entries_verified == again.state.verified.size - before
        assert again.state.verified.root() == parse_checkpoint(parse_note(again.state.checkpoint).text).root
        assert again.state.verified.size <= cp.size
        # The state file holds the frontier, not the entries: O(log n) hashes.
        state = MonitorState.load(tmp_path / "state.json")
        assert len(state.verified.hashes) == bin(state.verified.size).count("1")


async def test_watched_fleet_new_bundle_alerts_exactly_once(server, policy, tmp_path):
    watched = BundleFactory(fleet_id="watched-fleet")
    await submit(server.session, watched.envelope())
    alerts = Collected()
    async with LogClient(server.url) as client:
        monitor = Monitor(client, policy, tmp_path / "s.json", watch=["watched-fleet"], emit=alerts)
        assert await monitor.poll_once()
        alerts.clear()  # the history is reported on the first run; now only what is new
        await submit(server.session, watched.envelope())
        await fill(server, 10, fleets=2, prefix="noise")
        assert await monitor.poll_once()
        assert await monitor.poll_once()  # nothing new: nothing reported again
        resumed = Monitor(client, policy, tmp_path / "s.json", watch=["watched-fleet"], emit=alerts)
        assert await resumed.poll_once()
    assert alerts.kinds() == ["watched_fleet_bundle"]
    assert alerts[0]["details"]["fleet_id"] == "watched-fleet" and alerts[0]["details"]["sequence"] == 1


async def test_sequence_gap_is_reported(server, policy, tmp_path):
    alerts = Collected()
    async with LogClient(server.url) as client:
        monitor = Monitor(client, policy, tmp_path / "s.json", emit=alerts)
        assert await monitor.poll_once()
        await submit(server.session, make_envelope(make_payload(fleet_id="gappy", sequence=0)))
        await submit(server.session, make_envelope(make_payload(fleet_id="gappy", sequence=3)))
        assert await monitor.poll_once()
    assert alerts.kinds() == ["sequence_gap"]
    assert alerts[0]["details"]["previous_sequence"] == 0 and alerts[0]["details"]["sequence"] == 3


async def test_entries_failing_the_monitors_policy_are_reported(server, tmp_path):
    await submit(server.session, BundleFactory(fleet_id="other-policy").envelope())
    other, _ = await trust_policy_for(server, tmp_path, authorities=make_authorities("ecdsa-p256", "ed25519"))
    alerts = Collected()
    async with LogClient(server.url) as client:
        monitor = Monitor(client, other, tmp_path / "s.json", emit=alerts)
        assert await monitor.poll_once()
        size = monitor.state.verified.size
        bundles = [e["index"] for e in await client.entries(0, size) if "envelope" in e]
    assert set(alerts.kinds()) == {"policy_failure"}
    # Every bundle, each once (a HEADS leaf has no signatures to fail).
    assert sorted(a["details"]["index"] for a in alerts) == bundles
    assert {a["details"]["code"] for a in alerts} == {"signer_signature_missing"}


async def test_frozen_log_is_reported_from_the_signed_time(server, policy, tmp_path):
    alerts = Collected()
    async with LogClient(server.url) as client:
        late = Monitor(client, policy, tmp_path / "s.json", emit=alerts, max_checkpoint_age=600,
                       clock=lambda: time.time() + 3600)
        await late.poll_once()
        await late.poll_once()
        frozen = [a for a in alerts if a["kind"] == "frozen_log"]
        assert len(frozen) == 1  # once, not once per poll
        assert frozen[0]["details"]["age_s"] >= 3000
        alerts.clear()
        fresh = Monitor(client, policy, tmp_path / "s2.json", emit=alerts, max_checkpoint_age=600)
        await fresh.poll_once()
    assert "frozen_log" not in alerts.kinds()


async def test_metrics_track_progress(server, policy, tmp_path):
    async with LogClient(server.url) as client:
        monitor = Monitor(client, policy, tmp_path / "s.json")
        assert await monitor.poll_once()
        text = monitor.metrics.render().decode()
    size = monitor.state.verified.size
    assert f"logserver_monitor_entries_verified_total {float(size)}" in text
    assert f"logserver_monitor_tree_size {float(size)}" in text
    assert "logserver_monitor_lag_entries 0.0" in text
    assert 'logserver_monitor_alerts_total{kind="split_view"} 0.0' in text


async def test_missing_witness_quorum_is_reported_once_and_entries_still_checked(server, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from logserver.formats import CosignatureSigner

    witness = CosignatureSigner("witness.example/w", Ed25519PrivateKey.generate())
    strict, _ = await trust_policy_for(server, tmp_path, extra_policy=f"witness w {witness.vkey}\n", quorum="w")
    alerts = Collected()
    async with LogClient(server.url) as client:
        monitor = Monitor(client, strict, tmp_path / "s.json", emit=alerts)
        assert await monitor.poll_once()
        assert await monitor.poll_once()
        assert monitor.state.verified.root() == (await log_checkpoint(client)).root
    quorum = [a for a in alerts if a["kind"] == "quorum_failure"]
    assert len(quorum) == 1 and "witness 'w'" in quorum[0]["message"]


async def test_the_daemon_logs_one_line_per_cycle_and_progress_while_catching_up(server, policy, tmp_path,
                                                                              caplog, monkeypatch):
    import logging

    import logserver.monitor.monitor as monitor_module

    monkeypatch.setattr(monitor_module, "PROGRESS_S", 0.0)
    await fill(server, 600, fleets=6, prefix="daemon")
    caplog.set_level(logging.INFO, logger="logserver.monitor.monitor")
    async with LogClient(server.url) as client:
        size = (await log_checkpoint(client)).size
        monitor = Monitor(client, policy, tmp_path / "s.json", chunk_bundles=1)
        stop = asyncio.Event()
        task = asyncio.ensure_future(monitor.run(0.01, stop=stop))
        for _ in range(500):
            if len([r for r in caplog.records if r.getMessage().startswith("cycle:")]) >= 2:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task
    lines = [r.getMessage() for r in caplog.records]
    cycles = [m for m in lines if m.startswith("cycle:")]
    alerts = sum(monitor.alert_counts.values())
    assert cycles[0] == (f"cycle: log size {size}, verified up to {size}, {size} entries checked, "
                         f"{alerts} new alerts ({alerts} in all)"), cycles
    assert cycles[1] == (f"cycle: log size {size}, verified up to {size}, 0 entries checked, "
                         f"0 new alerts ({alerts} in all)"), cycles
    progress = [m for m in lines if m.startswith("catching up:")]
    assert progress and progress[0] == f"catching up: verified 256 of {size} entries", lines
