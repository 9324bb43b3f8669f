"""Several writers and failover: three servers on one database under concurrent load.

Every server process runs a sequencer; they take turns on the log_state row
lock (the sequencer role). Under load from many submitters spread over all
three, this test:

1. catches the process that holds the role *in the act* (its backend is in an
   open transaction that another sequencer is waiting for), freezes it to make
   sure it still holds the role, and kills it with SIGKILL. The survivors must
   keep accepting and committing: PostgreSQL ends the dead holder's transaction
   when its connection closes.
2. catches the next holder the same way and only freezes it (SIGSTOP). Without
   a bound it would keep the lock forever; with `stall_timeout_ms` PostgreSQL
   terminates its session while it is still frozen, and the survivors commit.
   Then the frozen process is resumed (SIGCONT): it must not commit or sign
   anything inconsistent (its connection is gone, and the CAS and the schema's
   triggers stand behind that), and it must rejoin and serve new submissions.

Progress is asserted against generous deadlines, never timed; the bound itself
(`stall_timeout_ms`) is documented in docs/reliability.md. At the end the whole
log is audited: one linear history, zero forks (every checkpoint row and every
checkpoint seen in a receipt or served by any process, the resumed one included,
is consistent with every later one), nothing acknowledged lost; fsck is clean.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal

import aiohttp
import asyncpg
import pytest

from fault_load import Load, Workload, audit_log, run_fsck, with_application_name
from server_harness import ServerProcess, free_port, write_config

pytestmark = pytest.mark.fault

STALL_TIMEOUT_MS = 1000
CONFIG = f"""[sequencer]
max_batch_delay_ms = 2
checkpoint_interval_s = 1
lock_timeout_ms = 3000
stall_timeout_ms = {STALL_TIMEOUT_MS}
"""
DEADLINE_S = 60.0  # generous deadlines for progress; not measurements
APP_PREFIX = "logserver-failover-"


@pytest.fixture
async def cluster(database_url, tmp_path):
    cfg = write_config(tmp_path, database_url, extra=CONFIG)
    procs = []
    for _ in range(3):
        port = free_port()
        procs.append(ServerProcess(cfg, with_application_name(database_url, f"{APP_PREFIX}{port}"), port=port))
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield cfg, procs
    finally:
        for p in procs:
            if p.proc is not None and p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)  # never leave a stopped process behind
            p.kill_now()


async def role_holder(admin: asyncpg.Connection, procs: list[ServerProcess]):
    """(process, backend pid, transaction start) of a process caught holding the sequencer role.

    The holder is a backend that another backend waits for and that is not itself
    waiting for a lock (a queue of waiters also blocks on the first waiter, which
    holds only the tuple lock). It is frozen with SIGSTOP and kept only if its
    backend is then still idle in the same transaction, i.e. it still holds the
    row lock and PostgreSQL is waiting for it. Otherwise it is resumed and we retry.
    """
    by_port = {p.port: p for p in procs}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while loop.time() < deadline:
        row = await admin.fetchrow(
            "SELECT h.pid, h.application_name, h.xact_start FROM pg_stat_activity w "
            "CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid) "
            "JOIN pg_stat_activity h ON h.pid = b.pid "
            "WHERE w.datname = current_database() AND h.application_name LIKE $1 "
            "AND h.wait_event_type IS DISTINCT FROM 'Lock' AND h.xact_start IS NOT NULL LIMIT 1",
            APP_PREFIX + "%",
        )
        if row is None:
            await asyncio.sleep(0.002)
            continue
        proc = by_port[int(row["application_name"].removeprefix(APP_PREFIX))]
        os.kill(proc.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(0.05)  # anything it had already sent (a COMMIT, say) is processed by now
        still = await admin.fetchrow("SELECT state, xact_start FROM pg_stat_activity WHERE pid = $1", row["pid"])
        if still is not None and still["state"] == "idle in transaction" and still["xact_start"] == row["xact_start"]:
            return proc, row["pid"], row["xact_start"]
        os.kill(proc.proc.pid, signal.SIGCONT)
    raise AssertionError(f"no process was caught holding the sequencer role within {DEADLINE_S}s")


async def eventually(what: str, condition) -> None:
    """Poll `condition()` (async) until true; fail after the generous deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await condition():
        assert loop.time() < deadline, f"not within {DEADLINE_S}s: {what}"
        await asyncio.sleep(0.05)


async def test_the_role_holder_killed_or_frozen_mid_load_the_others_take_over_without_a_fork(cluster, database_url):
    cfg, procs = cluster
    workload = Workload(fleets=30, per_fleet=300, prefix="failover")  # more than the test needs: it stops the load
    load = Load(workload, [p.url for p in procs], request_timeout_s=5.0, pause_s=0.15)
    admin = await asyncpg.connect(database_url)
    seen_notes: list[str] = []

    async def backend_gone(pid: int) -> bool:
        return not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

    async def max_checkpoint_id() -> int:
        return await admin.fetchval("SELECT max(id) FROM checkpoints")

    load_task = asyncio.create_task(load.run())
    try:
        await load.wait_for_acks(200, DEADLINE_S, "before the first fault")
        per_process = {p.url: len(load.acks_from({p.url})) for p in procs}
        assert all(per_process.values()), f"every process answers submissions: {per_process}"

        # 1. kill -9 the holder of the sequencer role.
        victim, backend, _ = await role_holder(admin, procs)
        victim.kill_now()  # SIGKILL while stopped and holding the lock
        survivors = {p.url for p in procs if p is not victim}
        mark_acks, mark_cp = len(load.acks), await max_checkpoint_id()
        await eventually("PostgreSQL ends the killed holder's session", lambda: backend_gone(backend))
        await load.wait_for_acks(mark_acks + 100, DEADLINE_S, "after the kill")
        assert load.acks_from(survivors, mark_acks), "the survivors acknowledge submissions"
        assert await max_checkpoint_id() > mark_cp, "the survivors sign and commit new checkpoints"
        await victim.start()  # back to three

        # 2. freeze (SIGSTOP) the next holder: PostgreSQL must cut it off while it is frozen.
        frozen, backend, _xact_start = await role_holder(admin, procs)
        survivors = {p.url for p in procs if p is not frozen}
        mark_acks, mark_cp = len(load.acks), await max_checkpoint_id()
        await eventually(f"PostgreSQL terminates the frozen holder's session (stall_timeout_ms={STALL_TIMEOUT_MS})",
                         lambda: backend_gone(backend))
        assert frozen.proc.poll() is None  # still there, still frozen: PostgreSQL acted alone
        await load.wait_for_acks(mark_acks + 100, DEADLINE_S, "while a holder is frozen")
        assert load.acks_from(survivors, mark_acks), "the survivors acknowledge submissions"
        assert await max_checkpoint_id() > mark_cp, "the survivors sign and commit new checkpoints"
        assert not load.acks_from({frozen.url}, mark_acks), "a frozen process answered"

        # Resume it. It must rejoin (serve and sequence again) without committing or
        # signing anything that conflicts with what the survivors did meanwhile.
        output_before = len(frozen.output())
        os.kill(frozen.proc.pid, signal.SIGCONT)
        resumed_at = len(load.acks)
        await eventually("the resumed process acknowledges submissions again",
                         lambda: _true(bool(load.acks_from({frozen.url}, resumed_at))))
        # Its batch, interrupted while it held the role, failed on the closed connection
        # (its submitters got no 2xx for it); the audit below shows nothing of it was stored.
        assert re.search(r"batch of \d+ failed", frozen.output()[output_before:]), frozen.output()[output_before:]
        async with aiohttp.ClientSession() as session:
            for p in procs:
                async with session.get(p.url + "/checkpoint") as resp:
                    assert resp.status == 200
                    seen_notes.append(await resp.text())
        await load.wait_for_acks(len(load.acks) + 100, DEADLINE_S, "after the resume")
    finally:
        load.stop()
        await asyncio.wait_for(load_task, DEADLINE_S)
        await admin.close()
    assert not load.unexpected, load.unexpected[:3]

    async with aiohttp.ClientSession() as session:
        report = await audit_log(database_url, procs[0].url, load.acks, session, seen_notes)
    assert report.bundles >= len({a.item.number for a in load.acks})
    for p in procs:
        assert await p.stop() == 0, p.output()  # the resumed process too shuts down cleanly
    fsck = await asyncio.to_thread(run_fsck, cfg, database_url)
    assert fsck.returncode == 0 and "no problems" in fsck.stdout, fsck.stdout + fsck.stderr


async def _true(value: bool) -> bool:
    return value
