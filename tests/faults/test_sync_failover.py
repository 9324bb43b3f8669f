"""Failover to a synchronous standby with nothing acknowledged lost (docs/operations.md, "Failover").

A primary PostgreSQL and one synchronous standby (tests/replication.py: both real
servers, streaming over 127.0.0.1) hold the log. A 201 is answered only after the
COMMIT returned, and with `synchronous_standby_names` set the COMMIT returns only once
the standby has flushed it, so every acknowledged entry is on both servers' disks.

1. Under load, the primary is killed with SIGKILL (postmaster and backends: the
   machine is gone), the standby is promoted, and the log process is restarted with
   the standby's URL on the same port and data directory; the submitters keep
   retrying. Every acknowledged entry is at its index on the new primary, every
   checkpoint anyone was handed (receipts, `/checkpoint` polled throughout, the
   table) is consistent with the final tree, no size has two roots, and the restarted
   server's start-up check against `data_dir/latest-checkpoint` passes: the standby
   is not behind anything the log signed.
2. With the standby down, a submission is not acknowledged: the COMMIT waits for the
   standby, the submitter gets 503 `commit_timeout`, the entry is not visible on the
   primary and nothing else commits; once the standby is back the waiting COMMIT
   completes and the retry is answered with the receipt.
"""
from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
import asyncpg
import pytest

import replication
from bundle_factory import BundleFactory
from fault_load import Ack, Item, Load, Workload, audit_log, run_fsck
from server_harness import ServerProcess, free_port, write_config

pytestmark = pytest.mark.fault

DEADLINE_S = 60.0  # generous deadlines for progress; not measurements
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def pair():
    pair = await asyncio.to_thread(replication.start_pair)
    try:
        conn = await asyncpg.connect(pair.primary.url())
        try:
            await conn.execute("CREATE DATABASE logserver")
        finally:
            await conn.close()
        yield pair
    finally:
        await asyncio.to_thread(pair.close)


@pytest.fixture
async def processes():
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.kill_now()


async def poll_checkpoints(url: str, notes: list[str]) -> None:
    """Every checkpoint the log hands out, as a client polling /checkpoint sees them."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with session.get(url + "/checkpoint") as resp:
                    if resp.status == 200:
                        note = await resp.text()
                        if not notes or notes[-1] != note:
                            notes.append(note)
            await asyncio.sleep(0.05)


async def test_kill_9_of_the_primary_then_failover_to_the_synchronous_standby_loses_nothing(
        pair, processes, tmp_path):
    primary_url, standby_url = pair.primary.url("logserver"), pair.standby.url("logserver")
    cfg = write_config(tmp_path, primary_url, extra="""[sequencer]
max_batch_delay_ms = 2
checkpoint_interval_s = 1
lock_timeout_ms = 2000
stall_timeout_ms = 2000
""")
    port = free_port()
    server = ServerProcess(cfg, primary_url, port=port)
    processes.append(server)
    await server.start()

    workload = Workload(fleets=16, per_fleet=400, prefix="syncrep")  # more than needed: the load is stopped
    load = Load(workload, [server.url], request_timeout_s=10.0, pause_s=0.01)
    seen: list[str] = []
    poller = asyncio.create_task(poll_checkpoints(server.url, seen))
    load_task = asyncio.create_task(load.run())
    try:
        await load.wait_for_acks(300, DEADLINE_S, "before the primary is killed")
        conn = await asyncpg.connect(primary_url)
        try:  # the premise: the primary waits for this standby on every commit
            assert await conn.fetchval(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                replication.STANDBY_NAME) == "sync"
        finally:
            await conn.close()

        # The primary's machine is gone, in the middle of the load.
        acked_before, retries_before = len(load.acks), load.retries
        await asyncio.to_thread(pair.primary.kill_9)
        # The operator (or Patroni) promotes the standby and restarts the log against it.
        server.kill_now()
        await asyncio.to_thread(pair.standby.promote)
        new_server = ServerProcess(cfg, standby_url, port=port)
        processes.append(new_server)
        await new_server.start()  # its start-up checks passed: the standby is not behind latest-checkpoint

        await load.wait_for_acks(len(load.acks) + 300, DEADLINE_S, "after the failover")
        assert len(load.acks) > acked_before
        assert load.retries > retries_before, "the kill interrupted no submission"
    finally:
        load.stop()
        await asyncio.wait_for(load_task, DEADLINE_S)
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    assert not load.unexpected, load.unexpected[:3]
    assert len(seen) > 2, seen

    async with aiohttp.ClientSession() as session:
        report = await audit_log(standby_url, new_server.url, load.acks, session, seen)
    assert report.receipts_checked == len(load.acks)
    assert report.tree_size >= len({a.item.number for a in load.acks})
    print(f"failover: {len(load.acks)} acknowledged ({acked_before} before the kill), {load.retries} retries, "
          f"tree size {report.tree_size}, {report.checkpoints_checked} checkpoints checked ({len(seen)} polled)")
    assert await new_server.stop() == 0, new_server.output()
    fsck = await asyncio.to_thread(run_fsck, cfg, standby_url)
    assert fsck.returncode == 0 and "no problems" in fsck.stdout, fsck.stdout + fsck.stderr


async def test_with_the_standby_down_nothing_is_acknowledged_until_it_is_back(pair, processes, tmp_path):
    primary_url = pair.primary.url("logserver")
    stall_ms = 1000
    cfg = write_config(tmp_path, primary_url, extra=f"""[sequencer]
checkpoint_interval_s = 600
lock_timeout_ms = 1000
stall_timeout_ms = {stall_ms}
commit_timeout_s = 1
""")
    server = ServerProcess(cfg, primary_url)
    processes.append(server)
    await server.start()
    factory = BundleFactory(fleet_id="standby-down")
    bodies = [factory.envelope_json(sequence=s) for s in range(2)]
    acks: list[Ack] = []

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE_S)) as session:
        async def submit(n: int) -> tuple[int, dict]:
            async with session.post(server.url + "/v1/bundles", data=bodies[n], headers=JSON) as resp:
                body = await resp.json()
                if resp.status in (200, 201):
                    acks.append(Ack(Item(n, factory.fleet_id, n, bodies[n]), resp.status, body, server.url))
                return resp.status, body

        status, body = await submit(0)
        assert status == 201, body

        await asyncio.to_thread(pair.standby.stop)
        admin = await asyncpg.connect(primary_url)
        try:
            size = await admin.fetchval("SELECT tree_size FROM log_state")  # the entry and its HEADS leaf
            assert await admin.fetchval("SELECT count(*) FROM leaves") == size
            # The COMMIT waits for the standby; the submitter is answered at commit_timeout_s.
            status, body = await submit(1)
            assert (status, body["error"]["code"]) == (503, "commit_timeout"), body

            # The batch's own bound (stall_timeout_ms + 1 s) passes: the server gives up on
            # the COMMIT. Had that cancelled the wait for the standby, PostgreSQL would
            # have committed the batch on the primary alone; the backend must instead still
            # be waiting for the standby, the entry invisible.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while not re.search(r"batch of \d+ failed", server.output()):
                assert await admin.fetchval("SELECT count(*) FROM leaves") == size, \
                    "the entry became visible on the primary while the standby was down"
                assert loop.time() < deadline, "the batch never gave up on its COMMIT"
                await asyncio.sleep(0.1)
            waiting = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND datname = 'logserver'")
            assert waiting == 1, "the COMMIT no longer waits for the standby"
            assert await admin.fetchval("SELECT count(*) FROM leaves") == size
            assert await admin.fetchval("SELECT tree_size FROM log_state") == size

            async with session.get(server.url + "/readyz") as resp:  # the database answers
                assert resp.status == 200, await resp.text()

            # A retry meanwhile is not acknowledged either (the role is held by the waiting COMMIT).
            status, body = await submit(1)
            assert status == 503 and body["error"]["code"] in ("commit_timeout", "database_unavailable",
                                                               "unavailable"), body

            # The standby is back: the waiting COMMIT completes, on both servers.
            await asyncio.to_thread(pair.standby.start)
            await asyncio.to_thread(replication.wait_for_sync_standby, pair.primary)
            while True:
                status, body = await submit(1)
                if status in (200, 201):
                    break
                assert status == 503, body
                assert loop.time() < deadline, body
                await asyncio.sleep(0.2)
            # Committed by the COMMIT that waited: the retry finds it, at the next index.
            assert status == 200 and body["duplicate"] is True and body["index"] == size, body
        finally:
            await admin.close()

        standby = await asyncpg.connect(pair.standby.url("logserver"))
        try:
            assert await standby.fetchval("SELECT count(*) FROM leaves") > size
        finally:
            await standby.close()
        report = await audit_log(primary_url, server.url, acks, session)
    assert report.tree_size > size and report.receipts_checked == 2
