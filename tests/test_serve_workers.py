"""`logserver serve --workers 2`: two processes on one port, exactly one sequencer.

Submissions land on both processes (the kernel spreads connections over the two
SO_REUSEPORT sockets) and end up in one linear history; killing either worker is
survived: the supervisor restarts it and every submission a client retried is
logged exactly once.
"""
from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
import pytest

import pg
from bundle_factory import BundleFactory
from logserver.client import TrustPolicy
from logserver.client.fleet_head import verify_fleet_head
from logserver.merkle import CompactRange
from logserver.merkle.verify import verify_consistency, verify_inclusion
from server_harness import free_port, server_env, write_config
from test_client_support import write_trust_policy

pytestmark = pytest.mark.fault


class Workers:
    """A `serve --workers 2` supervisor and its two worker processes."""

    def __init__(self, config: Path, database_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config.parent / "workers.log"
        self.config = config
        self.database_url = database_url
        self.proc: subprocess.Popen | None = None

    async def start(self) -> Workers:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "logserver.cli", "serve", "--config", str(self.config), "--workers", "2"],
                env=server_env(self.database_url, self.port), stdout=out, stderr=subprocess.STDOUT,
                cwd=self.config.parent)
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout_s: float = 60) -> None:
        """Both workers up and worker 1 connected to worker 0: 40 readyz 200s in a row, each on
        a new connection (each lands on either worker)."""
        deadline = time.monotonic() + timeout_s
        streak = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            # First both workers listening: the kernel spreads new connections over the
            # sockets bound so far, so before worker 1 binds, every readyz lands on
            # worker 0 and a streak proves nothing about worker 1 (seen once: all 60
            # submissions then went to worker 0).
            seen: set[str] = set()
            while len(seen) < 2:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered:\n" + self.output()
                try:
                    async with s.get(self.url + "/metrics") as r:
                        seen |= {line.split('index="')[1].split('"')[0] for line in (await r.text()).splitlines()
                                 if line.startswith("logserver_worker_info{")}
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            while streak < 40:
                assert self.proc.poll() is None, self.output()
                assert time.monotonic() < deadline, "workers not ready:\n" + self.output()
                try:
                    async with s.get(self.url + "/readyz") as r:
                        streak = streak + 1 if r.status == 200 else 0
                except aiohttp.ClientError:
                    streak = 0
                if streak == 0:
                    await asyncio.sleep(0.05)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self, index: int, timeout_s: float = 10) -> int:
        """The pid of the live worker `index` (a killed one may linger as a zombie
        until the supervisor reaps it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for child in psutil.Process(self.proc.pid).children():
                try:
                    if child.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cmd = child.cmdline()
                except psutil.Error:
                    continue
                if "--worker-index" in cmd and cmd[cmd.index("--worker-index") + 1] == str(index):
                    return child.pid
            time.sleep(0.05)
        raise AssertionError(f"no live worker {index} among the supervisor's children")

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 30)


@pytest.fixture
async def workers(pg_admin_url, tmp_path):
    database_url = await pg.create_database(pg_admin_url, "t_serve_workers")
    w = Workers(write_config(tmp_path, database_url), database_url)
    try:
        await w.start()
        yield w
        if w.proc.poll() is None:
            assert await w.stop() == 0, w.output()
    finally:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        await pg.drop_database(pg_admin_url, database_url)


def unique_bundles(prefix: str, n: int) -> list[bytes]:
    """n bundles of n different fleets: concurrent clients cannot trip the rollback check."""
    return [BundleFactory(fleet_id=f"{prefix}-{i}").envelope_json() for i in range(n)]


async def submit_all(url: str, bodies: list[bytes], *, clients: int = 8,
                     deadline_s: float = 90) -> tuple[list[dict], int]:
    """POST every body (one new connection each), retrying 503s and connection errors until
    it is acknowledged (201, or 200 duplicate). Returns (receipts in body order, retries)."""
    receipts: list[dict | None] = [None] * len(bodies)
    retries = 0
    deadline = time.monotonic() + deadline_s

    async def client(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal retries
        for i in range(k, len(bodies), clients):
            while True:
                assert time.monotonic() < deadline, f"submission {i} never acknowledged"
                try:
                    async with session.post(url + "/v1/bundles", data=bodies[i],
                                            headers={"Content-Type": "application/json"}) as r:
                        if r.status in (200, 201):
                            receipts[i] = await r.json()
                            break
                        assert r.status == 503, (r.status, await r.text())
                        assert r.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientConnectionError):
                    pass
                retries += 1
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        await asyncio.gather(*(client(k, session) for k in range(clients)))
    return receipts, retries  # type: ignore[return-value]


def _root(note: str) -> tuple[int, bytes]:
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])


async def check_one_linear_history(url: str, bodies: list[bytes], receipts: list[dict]) -> None:
    """The log holds exactly these bundles once each, each batch of them followed by its
    HEADS leaf (docs/fleet-heads.md); every receipt proves inclusion in a checkpoint
    consistent with the final one, whose root the entries reproduce."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/checkpoint") as r:
            size, root = _root(await r.text())
        items: list[dict] = []
        while len(items) < size:
            async with s.get(url + f"/v1/entries?start={len(items)}&end={size}") as r:
                items += (await r.json())["entries"]
        leaves = [bytes.fromhex(e["leaf_hash"]) for e in items]
        cr = CompactRange()
        cr.extend(leaves)
        assert cr.root() == root
        bundles = [e["index"] for e in items if "envelope" in e]
        heads = [e for e in items if "heads" in e]
        assert len(bundles) == len(bodies) and len(bundles) + len(heads) == size
        # Every batch ends with its HEADS leaf, so the last leaf is one; with one fleet per
        # body, its table has a row per body.
        assert "heads" in items[-1] and items[-1]["heads"]["count"] == len(bodies), items[-1]
        assert sorted({rc["index"] for rc in receipts}) == bundles  # each bundle once
        for rc in receipts:
            rsize, rroot = _root(rc["checkpoint"])
            lh = bytes.fromhex(rc["leaf_hash"])
            assert leaves[rc["index"]] == lh
            verify_inclusion(rc["index"], rsize, lh, [bytes.fromhex(h) for h in rc["inclusion_proof"]], rroot)
            async with s.get(url + f"/v1/proof/consistency?first={rsize}&second={size}") as r:
                proof = [bytes.fromhex(h) for h in (await r.json())["proof"]]
            verify_consistency(rsize, size, rroot, root, proof)


async def worker_submission_counts(url: str) -> dict[str, float]:
    """`logserver_submissions_total{outcome="appended"}` of each worker, by scraping /metrics
    on new connections until both workers answered."""
    seen: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(200):
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            index = next(line.split('index="')[1].split('"')[0] for line in text.splitlines()
                         if line.startswith("logserver_worker_info{"))
            seen[index] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith('logserver_submissions_total{outcome="appended"}'))
            if len(seen) == 2:
                return seen
    raise AssertionError(f"/metrics only ever reached workers {sorted(seen)}")


async def test_two_workers_one_linear_history(workers, tmp_path):
    bodies = unique_bundles("workers-a", 60)
    receipts, _ = await submit_all(workers.url, bodies)
    assert all(not r["duplicate"] for r in receipts)
    await check_fleet_heads_from_both_workers(workers.url, receipts, tmp_path)
    await check_one_linear_history(workers.url, bodies, receipts)
    counts = await worker_submission_counts(workers.url)
    # Both processes took submissions (60 connections over two sockets), one sequencer
    # appended them all: the forwarder's count is what it forwarded and got appended.
    assert counts["0"] > 0 and counts["1"] > 0, counts
    assert counts["0"] + counts["1"] == 60, counts


async def check_fleet_heads_from_both_workers(url: str, receipts: list[dict], tmp_path: Path) -> None:
    """Each worker builds its own heads table (read/heads_reader.py): fleet-head proofs
    fetched on new connections verify, whichever worker answered, and both did."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        async with s.get(url + "/v1/log") as r:
            vkey = (await r.json())["verifier_key"]
        trust = write_trust_policy(tmp_path / "client", vkey)
        policy = TrustPolicy.load(trust)
        for i in range(40):
            fleet = f"workers-a-{i % 60}"
            async with s.get(url + f"/v1/fleets/{fleet}/head") as r:
                assert r.status == 200, await r.text()
                data = await r.read()
            head = verify_fleet_head(data, policy, datetime.now(UTC), fleet_id=fleet, max_age=600)
            assert head.leaf_index == receipts[i % 60]["index"]
        served: dict[str, float] = {}
        for _ in range(200):
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            index = next(line.split('index="')[1].split('"')[0] for line in text.splitlines()
                         if line.startswith("logserver_worker_info{"))
            served[index] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                if line.startswith("logserver_http_request_seconds_count{")
                                and 'route="/v1/fleets/{fleet_id}/head"' in line and 'status="200"' in line)
            if len(served) == 2:
                break
        assert sorted(served) == ["0", "1"] and all(served.values()), served


@pytest.mark.parametrize("victim", [1, 0], ids=["forwarder", "sequencer"])
async def test_a_killed_worker_is_restarted_and_nothing_is_lost(workers, victim):
    bodies = unique_bundles(f"workers-kill-{victim}", 120)
    old_pid = workers.worker_pid(victim)

    async def kill_soon():
        await asyncio.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_soon())
    receipts, _retries = await submit_all(workers.url, bodies)
    await killer
    await workers.wait_ready()
    new_pid = workers.worker_pid(victim)
    assert new_pid != old_pid
    assert f"worker {victim} exited with -9; restarting it" in workers.output()
    # Every submission was acknowledged exactly once in the log (a retry of an entry that
    # had committed before its answer was lost comes back as a duplicate of it).
    await check_one_linear_history(workers.url, bodies, receipts)
    # The server keeps serving new submissions through both workers after the restart.
    more = unique_bundles(f"workers-after-{victim}", 20)
    more_receipts, _ = await submit_all(workers.url, more)
    assert [r["index"] for r in more_receipts] and all(r["index"] >= 120 for r in more_receipts)


async def test_a_refused_start_up_stops_the_supervisor(tmp_path):
    """A worker that cannot start (here: no database) is not restarted in a loop: the
    server exits with the worker's status, like a single process would."""
    bogus = "postgresql://logserver@127.0.0.1:1/nothing"
    config = write_config(tmp_path, bogus)
    proc = subprocess.run(
        [sys.executable, "-m", "logserver.cli", "serve", "--config", str(config), "--workers", "2"],
        env=server_env(bogus, free_port()), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "during start-up; stopping the server" in proc.stderr, proc.stderr[-2000:]
    assert "restarting" not in proc.stderr
