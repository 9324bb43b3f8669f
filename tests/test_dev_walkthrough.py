"""The README walk-through, command by command, against `logserver serve --dev`.

A newcomer's path: the dev server creates keys, config, a sample payload and a
client trust policy; the CLI signs twice, submits, verifies the receipt offline
and online, and monitors the log. Each step runs as the README shows it (a child
process, exit status checked), on a fresh database of the test server.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

from server_harness import free_port, wait_ready

CLI = [sys.executable, "-m", "logserver.cli"]


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
async def dev_server(database_url, tmp_path):
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*CLI, "serve", "--dev", "--data-dir", "data", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(proc, url, (tmp_path / "serve.log").read_text)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def test_readme_walkthrough(dev_server, tmp_path):
    url, cwd, data = dev_server, tmp_path, tmp_path / "data"
    for name in ("log.key", "log.mldsa44.key", "signer.key", "countersigner.key", "pq-countersigner.key",
                 "sample-payload.json", "trust.toml", "log.policy"):
        assert (data / name).exists(), name
    policy = (data / "log.policy").read_text()
    assert f" {url}\n" in policy and "quorum none" in policy, policy
    instructions = (cwd / "serve.log").read_text()
    assert "verify --receipt receipt.json" in instructions and "monitor --log" in instructions, instructions

    steps = [
        ("sign", "--key", "data/signer.key", "--payload", "data/sample-payload.json", "--out", "bundle.json"),
        ("sign", "--key", "data/countersigner.key", "--envelope", "bundle.json", "--out", "bundle.json"),
        ("submit", "--log", url, "--envelope", "bundle.json", "--receipt", "receipt.json"),
    ]
    await asyncio.to_thread(_run_all, cwd, steps)
    receipt = json.loads((cwd / "receipt.json").read_text())
    assert receipt["index"] == 0 and receipt["duplicate"] is False, receipt

    offline = await asyncio.to_thread(
        run, cwd, "verify", "--receipt", "receipt.json", "--envelope", "bundle.json", "--policy", "data/trust.toml")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    for check in ("envelope_signatures", "validity_window", "leaf_hash", "inclusion_proof", "checkpoint_signature"):
        assert f"[  ok] {check}" in offline.stdout, offline.stdout
    # Both of the log's signatures verified (the dev trust policy requires the ML-DSA-44 one).
    for line in ("log signature Ed25519 signed-note (0x01): verified",
                 "log signature Ed25519 cosignature/v1 (0x04): verified",
                 "log signature ML-DSA-44 subtree/v1 cosignature (0x06): verified",
                 "post-quantum: required by the trust policy (require_log_mldsa44), met"):
        assert line in offline.stdout, offline.stdout

    online = await asyncio.to_thread(
        run, cwd, "verify", "--receipt", "receipt.json", "--envelope", "bundle.json", "--policy", "data/trust.toml",
        "--state", "client-state", "--log", url)
    assert online.returncode == 0, online.stdout + online.stderr
    assert "[  ok] fleet_latest" in online.stdout, online.stdout

    monitor = await asyncio.to_thread(
        run, cwd, "monitor", "--log", url, "--policy", "data/trust.toml", "--state", "monitor-state", "--once")
    assert monitor.returncode == 0, monitor.stdout + monitor.stderr
    assert (cwd / "monitor-state").is_dir()
    assert "root recomputed from the entries themselves" in monitor.stderr, monitor.stderr
    assert "no alerts" in monitor.stderr, monitor.stderr
    # The bundle and the HEADS leaf that ends its batch (docs/fleet-heads.md).
    assert json.loads(monitor.stdout.splitlines()[-1])["entries_verified"] == 2, monitor.stdout

    # Step 8: the published static tree (data/public), served by a plain file server,
    # read by verify (with the API for what it lacks) and by the monitor alone.
    assert "--tiles http://127.0.0.1:8081" in instructions, instructions
    public = data / "public"

    async def published() -> bool:
        return (public / "checkpoint").exists() and int((public / "checkpoint").read_text().split("\n")[1]) == 2

    deadline = asyncio.get_running_loop().time() + 30
    while not await published():
        assert asyncio.get_running_loop().time() < deadline, "data/public never got the size-2 checkpoint"
        await asyncio.sleep(0.05)
    files_port = free_port()
    files = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                              str(public), str(files_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tiles_url = f"http://127.0.0.1:{files_port}"
        await _wait_http(tiles_url + "/checkpoint")
        tiles = await asyncio.to_thread(
            run, cwd, "verify", "--receipt", "receipt.json", "--envelope", "bundle.json", "--policy",
            "data/trust.toml", "--log", url, "--tiles", tiles_url)
        assert tiles.returncode == 0, tiles.stdout + tiles.stderr
        tiles_monitor = await asyncio.to_thread(
            run, cwd, "monitor", "--tiles", tiles_url, "--policy", "data/trust.toml", "--state", "monitor-tiles",
            "--once")
        assert tiles_monitor.returncode == 0, tiles_monitor.stdout + tiles_monitor.stderr
        assert "(tiles only, no JSON API)" in tiles_monitor.stderr, tiles_monitor.stderr
        assert json.loads(tiles_monitor.stdout.splitlines()[-1])["entries_verified"] == 2, tiles_monitor.stdout
    finally:
        files.terminate()
        files.wait(30)

    # Step 9: the ML-DSA-44 countersigner signs the fleet's next bundle.
    sed = subprocess.run(["sed", 's/"sequence": 1,/"sequence": 2,/', "data/sample-payload.json"],
                         cwd=cwd, capture_output=True, text=True, check=True)
    assert '"sequence": 2,' in sed.stdout and '"algorithm": "ml-kem-768"' in sed.stdout, sed.stdout
    (cwd / "payload-2.json").write_text(sed.stdout)
    await asyncio.to_thread(_run_all, cwd, [
        ("sign", "--key", "data/signer.key", "--payload", "payload-2.json", "--out", "bundle-pq.json"),
        ("sign", "--key", "data/pq-countersigner.key", "--envelope", "bundle-pq.json", "--out", "bundle-pq.json"),
        ("submit", "--log", url, "--envelope", "bundle-pq.json", "--receipt", "receipt-pq.json"),
    ])
    assert json.loads((cwd / "receipt-pq.json").read_text())["index"] > receipt["index"]
    pq = await asyncio.to_thread(
        run, cwd, "verify", "--receipt", "receipt-pq.json", "--envelope", "bundle-pq.json",
        "--policy", "data/trust.toml")
    assert pq.returncode == 0, pq.stdout + pq.stderr
    assert "signed by signer 'demo-signer' (ed25519, keyid" in pq.stdout, pq.stdout
    assert "countersigner 'demo-pq-countersigner' (ml-dsa-44, keyid" in pq.stdout, pq.stdout
    # The witness section resubmits bundle.json: still answered as the logged duplicate.
    again = await asyncio.to_thread(run, cwd, "submit", "--log", url, "--envelope", "bundle.json",
                                    "--receipt", "receipt.json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((cwd / "receipt.json").read_text())["duplicate"] is True

    # Step 10: the fleet-head proof, from the route and on the static tree, verified; a
    # receipt carrying it verifies offline as the fleet's current head.
    async with ClientSession() as session, session.get(url + "/v1/fleets/demo-fleet/head") as resp:
        assert resp.status == 200, await resp.text()
        pq_index = json.loads((cwd / "receipt-pq.json").read_text())["index"]
        proof = json.loads(await resp.read())
        assert proof["row"]["leaf_index"] == pq_index
        # Proof format 2, the chained layout: the lone row links to itself.
        assert proof["version"] == 2 and proof["row"]["next_fleet_id"] == "demo-fleet", proof
    head = await asyncio.to_thread(run, cwd, "verify", "--head", "demo-fleet", "--policy", "data/trust.toml",
                                   "--log", url, "--max-age", "600")
    assert head.returncode == 0, head.stdout + head.stderr
    assert "[  ok] heads_row" in head.stdout and "CURRENT: fleet 'demo-fleet': sequence 2" in head.stdout, head.stdout
    # A fleet never logged: the lone row's link to itself passes over every other id.
    absent = await asyncio.to_thread(run, cwd, "verify", "--head", "other-fleet", "--policy", "data/trust.toml",
                                     "--log", url, "--max-age", "600")
    assert absent.returncode == 8, absent.stdout + absent.stderr
    assert "[  ok] fleet_absence" in absent.stdout, absent.stdout
    assert "row 0's link 'demo-fleet' -> 'demo-fleet' passes over it" in absent.stdout, absent.stdout
    deadline = asyncio.get_running_loop().time() + 30
    while not (public / "fleet-head" / "demo-fleet").exists():
        assert asyncio.get_running_loop().time() < deadline, "data/public never got fleet-head/demo-fleet"
        await asyncio.sleep(0.05)
    steps = [("submit", "--log", url, "--envelope", "bundle-pq.json", "--receipt", "receipt-head.json", "--with-head")]
    await asyncio.to_thread(_run_all, cwd, steps)
    carried = await asyncio.to_thread(
        run, cwd, "verify", "--receipt", "receipt-head.json", "--envelope", "bundle-pq.json", "--policy",
        "data/trust.toml", "--max-age", "600")
    assert carried.returncode == 0, carried.stdout + carried.stderr
    assert "[  ok] fleet_head_current" in carried.stdout, carried.stdout

    # Step 11: retire the fleet; a later bundle is refused, and verify --head says retired.
    sample = json.loads((data / "sample-payload.json").read_text())
    assert sample["fleet_id"] == "demo-fleet" and sample["sequence"] == 1, sample
    (cwd / "retire.json").write_text(json.dumps({**sample, "sequence": 3, "status": "retired"}))
    (cwd / "later.json").write_text(json.dumps({**sample, "sequence": 4}))
    steps = [
        ("sign", "--key", "data/signer.key", "--payload", "retire.json", "--out", "retired-bundle.json"),
        ("sign", "--key", "data/countersigner.key", "--envelope", "retired-bundle.json", "--out",
         "retired-bundle.json"),
        ("submit", "--log", url, "--envelope", "retired-bundle.json", "--receipt", "retired-receipt.json"),
        ("sign", "--key", "data/signer.key", "--payload", "later.json", "--out", "later-bundle.json"),
        ("sign", "--key", "data/countersigner.key", "--envelope", "later-bundle.json", "--out", "later-bundle.json"),
    ]
    await asyncio.to_thread(_run_all, cwd, steps)
    later = await asyncio.to_thread(run, cwd, "submit", "--log", url, "--envelope", "later-bundle.json")
    assert later.returncode == 1 and "409 fleet_retired" in later.stderr, later.stdout + later.stderr
    retired = await asyncio.to_thread(run, cwd, "verify", "--head", "demo-fleet", "--policy", "data/trust.toml",
                                      "--log", url, "--max-age", "600")
    assert retired.returncode == 7, retired.stdout + retired.stderr
    assert "RETIRED: fleet 'demo-fleet': sequence 3" in retired.stdout, retired.stdout

    # The trust policy really pins something: another log key makes verify fail.
    # Both log lines (the Ed25519 key and the ML-DSA-44 key) name the other keys: either
    # alone still verifies the log's checkpoints (one log key suffices, tlog-policy).
    words = policy.split()
    ours = [words[i + 1] for i, w in enumerate(words) if w == "log"]
    assert len(ours) == 2, policy
    for mine, other in zip(ours, _other_vkeys(cwd), strict=True):
        policy = policy.replace(mine, other)
    (data / "log.policy").write_text(policy)
    refused = await asyncio.to_thread(
        run, cwd, "verify", "--receipt", "receipt.json", "--envelope", "bundle.json", "--policy", "data/trust.toml")
    assert refused.returncode != 0, refused.stdout


def _run_all(cwd: Path, steps) -> None:
    for argv in steps:
        done = run(cwd, *argv)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"


def _other_vkeys(cwd: Path) -> list[str]:
    """The vkeys of a new log key pair of the dev origin: Ed25519 (0x01), then ML-DSA-44 (0x06)."""
    out = run(cwd, "keygen", "log", "--origin", "localhost/logserver-dev", "--out", "other-log.key")
    assert out.returncode == 0, out.stderr
    vkeys = [w for w in (out.stdout + out.stderr).split() if w.startswith("localhost/logserver-dev+")]
    assert len(vkeys) == 2, out.stdout + out.stderr
    return vkeys


async def _wait_http(url: str) -> None:
    from aiohttp import ClientError, ClientSession

    deadline = asyncio.get_running_loop().time() + 30
    async with ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"{url} never answered 200"
            await asyncio.sleep(0.05)
