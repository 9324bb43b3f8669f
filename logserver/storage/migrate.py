"""Ordered SQL migrations from `migrations/`, each applied once in its own transaction."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same in every logserver process.
_MIGRATION_LOCK = 0x6C6F6773_6D696772  # "logsmigr"


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree, or one failed."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Traversable:
    """The package's `migrations/`: package data in a wheel; in a checkout (and an
    editable install) `logserver/migrations` is a symlink to the top-level `migrations/`
    (see CONTRIBUTING.md, "Package data")."""
    return files("logserver") / "migrations"


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} not found: is logserver installed completely?")
    found = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".sql"):
            continue
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(m.group(1), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {directory}: {versions}")
    return found


async def migrate(
    conn: asyncpg.Connection,
    directory: Traversable | None = None,
    *,
    table: str = "schema_migrations",
    lock: int = _MIGRATION_LOCK,
) -> list[str]:
    """Apply every pending migration; return the names applied.

    `table` records what was applied. The witness (`logserver witness`) keeps its
    own migrations in `migrations/witness/` and its own table and lock, so a log
    and a witness may even share one database without their versions colliding.

    Idempotent and safe to run from several processes at once: an advisory lock
    serialises them, each migration runs in its own transaction together with
    its row in `schema_migrations`, and an already-applied migration whose file
    has changed since is an error rather than silently skipped.
    """
    migrations = load_migrations(directory)
    if re.fullmatch(r"[a-z_]{1,63}", table) is None:
        raise ValueError(f"migrations table: got {table!r}, want a plain lowercase identifier")
    await conn.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"]: r for r in await conn.fetch(f"SELECT * FROM {table}")}
        known = {m.version for m in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations this logserver does not know: {unknown}; "
                "is it newer than this code?"
            )
        done = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.name} changed after it was applied "
                        f"(checksum got {m.checksum[:12]}, want {row['checksum'][:12]})"
                    )
                continue
            log.info("applying migration %s", m.name)
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    f"INSERT INTO {table} (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )
            done.append(m.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock)
