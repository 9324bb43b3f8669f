"""The backup and restore runbook, end to end (docs/operations.md, "Backup and restore").

A PostgreSQL server of the test's own (tests/replication.py) holds the log; the log
server runs as a child process. Two backups are taken while it runs, each as the
runbook says: a copy of `data_dir/latest-checkpoint` first, then the database, either
with `pg_basebackup` (the whole server; checked with `pg_verifybackup`) or with
`pg_dump` (the log's database). Entries are added between them. Then the database is
lost, and:

* the *old* backup is restored: the server refuses to start (exit 1), saying the
  database is behind the checkpoint it signed, what to restore instead, and not to
  delete the checkpoint file; the file is left as it was;
* the *newest* backup is restored: the server starts, every receipt handed out
  before the loss verifies against the restored log (its entry at its index, its
  inclusion proof, its checkpoint consistent with the latest), fsck is clean, and the
  log goes on at the next index.
"""
from __future__ import annotations

import asyncio
import json
import shutil

import aiohttp
import asyncpg
import pytest

import replication
from bundle_factory import BundleFactory
from fault_load import Ack, Item, audit_log, run_fsck
from pg_tools import find_pg_program
from server_harness import ServerProcess, run_server_to_exit, write_config

pytestmark = pytest.mark.fault

JSON = {"Content-Type": "application/json"}
DATABASE = "logserver"


class Backups:
    """The runbook's two ways of taking a backup and restoring it onto a new server."""

    def __init__(self, method: str, root, user):
        self.method, self.root, self.user = method, root, user
        self.restored: list[replication.Node] = []

    def take(self, node: replication.Node, name: str) -> None:
        if self.method == "basebackup":
            replication.base_backup(node, self.root / name)
        else:
            node.run([str(find_pg_program("pg_dump")), "--format=custom", "--file", f"/tmp/{name}.dump",
                      "--dbname", node.url(DATABASE)])
            shutil.move(f"/tmp/{name}.dump", self.root / f"{name}.dump")

    def restore(self, name: str) -> replication.Node:
        """A new server holding the backup `name` (the old server is gone), started."""
        if self.method == "basebackup":
            node = replication.node_from_backup(self.root / name, self.root / f"restored-{name}", self.user)
            node.start()
        else:
            node = replication.init_node(self.root / f"restored-{name}", self.user)
            node.start()
            node.run([str(find_pg_program("createdb")), "-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres",
                      DATABASE])
            dump = self.root / f"{name}.dump"
            dump.chmod(0o644)
            node.run([str(find_pg_program("pg_restore")), "--exit-on-error", "--no-owner",
                      "--dbname", node.url(DATABASE), str(dump)])
        self.restored.append(node)
        return node


@pytest.fixture
async def processes():
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.kill_now()


@pytest.mark.parametrize("method", ["basebackup", "pg_dump"])
async def test_old_backup_is_refused_and_the_newest_restores_with_every_proof(method, processes, tmp_path):
    root, user = await asyncio.to_thread(replication.new_root, "logserver-backup-")
    backups = Backups(method, root, user)
    node = await asyncio.to_thread(replication.init_node, root / "original", user)
    try:
        await asyncio.to_thread(node.start)
        conn = await asyncpg.connect(node.url())
        try:
            await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
        await run_runbook(backups, node, processes, tmp_path)
    finally:
        for n in [node, *backups.restored]:
            await asyncio.to_thread(n.stop)
        shutil.rmtree(root, ignore_errors=True)


async def run_runbook(backups: Backups, node: replication.Node, processes, tmp_path) -> None:
    cfg = write_config(tmp_path / "log", node.url(DATABASE), extra="[sequencer]\ncheckpoint_interval_s = 0.5\n")
    checkpoint_file = tmp_path / "log" / "data" / "latest-checkpoint"
    server = ServerProcess(cfg, node.url(DATABASE))
    processes.append(server)
    await server.start()
    factory = BundleFactory(fleet_id="backup-fleet")
    acks: list[Ack] = []

    async def submit(session: aiohttp.ClientSession, url: str, n: int) -> dict:
        body = factory.envelope_json(sequence=n)
        async with session.post(url + "/v1/bundles", data=body, headers=JSON) as resp:
            receipt = await resp.json()
            assert resp.status == 201, receipt
        acks.append(Ack(Item(n, factory.fleet_id, n, body), 201, receipt, url))
        return receipt

    async def backup(name: str) -> int:
        """The runbook's backup, taken while the server runs: the checkpoint file first.

        The file is written just after each commit; the test waits for it to reach the
        last receipt's size so that the sizes below are exact (the runbook needs only
        that the copy is not newer than the database backup taken after it)."""
        want = acks[-1].receipt["tree_size"]
        for _ in range(200):
            if json.loads(checkpoint_file.read_text())["tree_size"] == want:
                break
            await asyncio.sleep(0.05)
        shutil.copy(checkpoint_file, backups.root / f"{name}.latest-checkpoint")
        await asyncio.to_thread(backups.take, node, name)
        return json.loads((backups.root / f"{name}.latest-checkpoint").read_text())["tree_size"]

    async with aiohttp.ClientSession() as session:
        for n in range(3):
            await submit(session, server.url, n)
        old_size = await backup("old")
        for n in range(3, 6):
            await submit(session, server.url, n)
        new_size = await backup("new")
        assert old_size < new_size
        assert await server.stop() == 0, server.output()

        # The database is lost (the checkpoint file, on the log's host, is not).
        await asyncio.to_thread(node.stop)
        saved = checkpoint_file.read_bytes()
        assert json.loads(saved)["tree_size"] == new_size

        # The old backup: refused, saying what to do; the file is left as it was.
        old = await asyncio.to_thread(backups.restore, "old")
        status, out = await run_server_to_exit(cfg, old.url(DATABASE))
        assert status == 1, out
        assert f"database size {old_size}, signed size {new_size}" in out, out
        assert f"Restore a database that holds at least {new_size} entries" in out, out
        assert "do not delete or edit the checkpoint file" in out and "Backup and restore" in out, out
        assert checkpoint_file.read_bytes() == saved
        await asyncio.to_thread(old.stop)

        # The newest backup: it starts, and everything handed out before the loss verifies.
        new = await asyncio.to_thread(backups.restore, "new")
        shutil.rmtree(tmp_path / "log" / "data" / "cache", ignore_errors=True)  # the runbook says so
        restored = ServerProcess(cfg, new.url(DATABASE))
        processes.append(restored)
        await restored.start()
        receipt = await submit(session, restored.url, 6)  # and it goes on, after what it had
        assert receipt["index"] >= new_size
        report = await audit_log(new.url(DATABASE), restored.url, acks, session)
        assert report.receipts_checked == 7 and report.tree_size > new_size
        assert await restored.stop() == 0, restored.output()
    fsck = await asyncio.to_thread(run_fsck, cfg, new.url(DATABASE))
    assert fsck.returncode == 0 and "no problems" in fsck.stdout, fsck.stdout + fsck.stderr
