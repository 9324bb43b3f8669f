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

