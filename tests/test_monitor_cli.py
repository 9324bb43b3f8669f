"""`logserver monitor` end to end: --once summaries and exit codes, and a long-running
monitor process serving Prometheus metrics."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from aiohttp import ClientSession

from bundle_factory import BundleFactory
from logserver.cli import main
from server_harness import free_port, start_server, write_config
from test_client_support import submit, trust_policy_for
from test_monitor_catchup import fill


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("moncli"), database_url))
    await fill(s, 40, fleets=4, prefix="moncli")
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy_path(server, tmp_path_factory):
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[1]


async def cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize("processes", ["0", "2"])
async def test_once_catches_up_and_explains(server, policy_path, tmp_path, capsys, processes):
    args = ["monitor", "--log", server.url, "--policy", str(policy_path), "--state", str(tmp_path), "--once",
            "--verify-processes", processes]
    code, lines, err = await cli(capsys, *args)
    assert code == 0, err
    assert len(lines) == 1 and lines[0]["type"] == "summary"
    summary = lines[0]
    assert summary["caught_up"] and summary["alerts"] == {}
    assert summary["verified_root"] == summary["checkpoint_root"]
    assert summary["entries_verified"] == summary["verified_size"] == summary["checkpoint_size"] >= 40
    assert "root recomputed from the entries themselves" in err and "no alerts" in err
    # Every HEADS leaf the sequencer wrote was compared with the table folded from the bundles.
    assert summary["heads"]["heads_leaves_checked"] >= 1 and summary["heads"]["last_heads_leaf"] is not None
    assert "HEADS leaves compared with it this run" in err
    # A second run resumes: nothing new to verify.
    code, lines, _ = await cli(capsys, *args)
    assert code == 0 and lines[-1]["entries_verified"] == 0


async def test_verify_processes_is_checked(policy_path, tmp_path, capsys):
    code, _, err = await cli(capsys, "monitor", "--log", "http://127.0.0.1:9", "--policy", str(policy_path),
                             "--state", str(tmp_path), "--once", "--verify-processes", "-1")
    assert code != 0 and "--verify-processes: want 0 to 256, got -1" in err


async def test_once_exits_nonzero_on_an_alert(server, policy_path, tmp_path, capsys):
    args = ["monitor", "--log", server.url, "--policy", str(policy_path), "--state", str(tmp_path), "--once",
            "--watch-fleet", "moncli-watched"]
    code, lines, _ = await cli(capsys, *args)
    assert code == 0
    await submit(server.session, BundleFactory(fleet_id="moncli-watched").envelope())
    code, lines, err = await cli(capsys, *args)
    assert code == 1
    assert [line.get("kind") for line in lines] == ["watched_fleet_bundle", None]
    assert lines[0]["details"]["fleet_id"] == "moncli-watched"
    assert lines[-1]["alerts"] == {"watched_fleet_bundle": 1}
    assert "ALERTS: watched_fleet_bundle x1" in err


async def test_once_against_an_unreachable_log(policy_path, tmp_path, capsys):
    code, lines, err = await cli(capsys, "monitor", "--log", f"http://127.0.0.1:{free_port()}", "--policy",
                                 str(policy_path), "--state", str(tmp_path), "--once")
    assert code == 2
    assert lines[-1]["error"] and "ERROR" in err


async def test_long_running_monitor_serves_metrics_and_stops_on_sigterm(server, policy_path, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "logserver.cli", "monitor", "--log", server.url, "--policy", str(policy_path),
         "--state", str(tmp_path), "--metrics-listen", f"127.0.0.1:{port}", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 30
        verified = tree = None
        async with ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                                  if line.startswith("logserver_monitor_") and "{" not in line)
                    verified = float(values["logserver_monitor_entries_verified_total"])
                    tree = float(values["logserver_monitor_tree_size"])
                    if verified and verified == tree:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        assert verified and verified == tree, (verified, tree)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b""  # no alerts
