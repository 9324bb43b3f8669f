"""Real PostgreSQL for tests: the embedded server by default, `DATABASE_URL` when set.

Each test module gets a fresh database on that server, dropped afterwards.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
import urllib.parse
from pathlib import Path

import asyncpg


def server_admin_url() -> tuple[str, Path | None]:
    """(URL of a database we may CREATE DATABASE from, embedded data dir or None)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from logserver.storage.embedded import embedded_postgres_uri

    data_dir = Path(tempfile.mkdtemp(prefix="logserver-test-pg-"))
    data_dir.chmod(0o755)  # the embedded server runs as its own user when we are root
    return embedded_postgres_uri(data_dir, database="postgres"), data_dir


def with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


async def create_database(admin_url: str, prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}".lower()
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _postmaster_pid(path: Path) -> int | None:
    """The pid of the embedded server running on `path`, from its postmaster.pid (None if
    there is none, or if the pid now names some other process)."""
    try:
        pid = int((path / "postgres" / "postmaster.pid").read_text().split()[0])
        return pid if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes() else None
    except (OSError, ValueError, IndexError):
        return None


def remove_data_dir(path: Path | None) -> None:
    """Stop the embedded server of `path` (if any), then delete its files.

    The wheel stops its server when the last process that joined it exits, counting
    them in a pid list; a test's server process killed with SIGKILL never takes its pid
    off that list, so the server would outlive the run, its data directory gone. So it
    is stopped here, with PostgreSQL's fast shutdown (SIGINT to the postmaster)."""
    if path is None:
        return
    pid = _postmaster_pid(path)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # ProcessLookupError once it has exited
                time.sleep(0.05)
        except ProcessLookupError:
            pass
    shutil.rmtree(path, ignore_errors=True)


async def open_test_log(url: str, key, **open_log_kwargs):
    """The log of `key` in the database at `url`, opened as the server opens it
    (storage.open_log) on a small pool of its own; close it with `store.pool.close()`."""
    from logserver.storage import create_pool, open_log

    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        return await open_log(pool, key, **open_log_kwargs)
    except BaseException:
        await pool.close()
        raise
