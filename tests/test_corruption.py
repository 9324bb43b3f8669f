"""Bit flips in storage: fsck locates them exactly, and the sequencer refuses to sign over them."""
from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest

from bundle_factory import BundleFactory
from logserver.integrity.fsck import fsck
from server_harness import start_server, write_config

N = 300  # one full level-0 tile and a partial one


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("corrupt"), database_url))
    factory = BundleFactory(fleet_id="corruption")
    bodies = [factory.envelope_json() for _ in range(N)]
    sem = asyncio.Semaphore(32)

    async def post(body):
        async with sem:
            r = await s.session.post("/v1/bundles", data=body, headers={"Content-Type": "application/json"})
            assert r.status == 201, await r.text()

    await asyncio.gather(*(post(b) for b in bodies))
    yield s
    await s.close()


async def _fsck(server):
    from logserver.api.keys import LOG_KEY, STORE
    return await fsck(server.app[STORE], server.app[LOG_KEY].verifiers())


async def _flip(database_url: str, sql: str, *args) -> None:
    """Run an UPDATE that the append-only triggers would refuse (as a disk error would)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")  # triggers off for this session
        status = await conn.execute(sql, *args)
        assert status == "UPDATE 1", status
    finally:
        await conn.close()


async def _tree_size(server) -> int:
    return (await (await server.session.get("/v1/log")).json())["tree_size"]


async def test_clean_log_passes(server):
    report = await _fsck(server)
    assert report.ok, report.problems
    # N bundles and one HEADS leaf per batch they were integrated in (docs/fleet-heads.md).
    assert report.leaves_checked == report.tree_size == await _tree_size(server) > N
    assert report.tiles_checked >= 2 and report.checkpoints_checked >= 2


async def test_flipped_leaf_bit_is_located(server, database_url):
    flip = "UPDATE leaves SET leaf = set_byte(leaf, 10, get_byte(leaf, 10) # 1) WHERE idx = $1"
    await _flip(database_url, flip, 123)
    try:
        report = await _fsck(server)
        assert not report.ok
        assert report.problems[0].startswith("leaf 123:"), report.problems
    finally:
        await _flip(database_url, flip, 123)  # flip it back
    assert (await _fsck(server)).ok


async def test_flipped_tile_bit_is_located(server, database_url):
    flip = ("UPDATE tiles SET hashes = set_byte(hashes, 77 * 32 + 5, get_byte(hashes, 77 * 32 + 5) # 4) "
            "WHERE level = 0 AND idx = 0")
    await _flip(database_url, flip)
    try:
        report = await _fsck(server)
        assert any(p.startswith("tile 0/0 hash 77 (leaf 77)") for p in report.problems), report.problems
    finally:
        await _flip(database_url, flip)
    assert (await _fsck(server)).ok


async def test_fsck_command_checks_the_tile_cache_file_and_drops_stale_slots(server):
    from logserver.api.keys import READER
    from logserver.merkle.tiles import expand_tile

    await server.app[READER].warm_tile_file()  # (the start-up warming ran at size 0)
    tile_file = server.app[READER].tile_file
    good = tile_file.get(0)
    assert good is not None
    config_path = server.config.data_dir.parent / "logserver.toml"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    async def run_fsck() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logserver.cli", "fsck", "--config", str(config_path), "--quiet",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    assert "1 slots checked, 0 stale ones dropped" in await run_fsck()
    # A slot that checks out (its checksum) but was made from other data, as from a
    # corrupted tile that was repaired since: fsck drops it.
    tile_file.put(0, expand_tile(bytes(32 * 256)))
    assert "1 slots checked, 1 stale ones dropped (first: tile 0)" in await run_fsck()
    assert tile_file.get(0) is None


async def test_presign_check_refuses_to_sign_over_corruption(server, database_url):
    """Last: it halts the sequencer for the rest of this server's life."""
    before = await _tree_size(server)
    assert "logserver_sequencer_halted 0.0" in await (await server.session.get("/metrics")).text()
    # Position 10 of the partial right-edge tile 0/1: part of the frontier the next batch extends.
    await _flip(database_url, "UPDATE tiles SET hashes = set_byte(hashes, 10 * 32, get_byte(hashes, 10 * 32) # 128) "
                              "WHERE level = 0 AND idx = 1")
    body = BundleFactory(fleet_id="after-corruption").envelope_json()
    r = await server.session.post("/v1/bundles", data=body, headers={"Content-Type": "application/json"})
    assert r.status == 503
    err = (await r.json())["error"]
    assert err["code"] == "integrity_check_failed"
    assert "do not reproduce the last signed checkpoint" in err["message"]
    ready = await server.session.get("/readyz")
    assert ready.status == 503 and (await ready.json())["status"] == "halted"
    # What alert LogserverSequencerHalted watches (deploy/prometheus/alerts.yml).
    assert "logserver_sequencer_halted 1.0" in await (await server.session.get("/metrics")).text()
    assert await _tree_size(server) == before  # nothing appended, nothing signed
    r2 = await server.session.post("/v1/bundles", data=body, headers={"Content-Type": "application/json"})
    assert r2.status == 503  # still refusing
