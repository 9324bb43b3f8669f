"""The witness's PostgreSQL state: its identity, the latest cosigned checkpoint per
followed log, and the evidence it keeps. All of the witness's SQL lives here.

Durability as for the log (logserver/storage/store.py): a transaction whose COMMIT
returned is on disk. The witness answers add-checkpoint only after the commit
that recorded the new checkpoint, so a cosignature is never ahead of the state.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from ..storage import migrate
from ..storage.embedded import embedded_postgres_uri
from ..storage.errors import IdentityMismatchError
from ..storage.migrate import migrations_dir

MIGRATIONS_TABLE = "witness_schema_migrations"
_MIGRATION_LOCK = 0x6C6F6773_7769746E  # "logswitn": not the log's lock, the tables differ too


EMBEDDED_DATABASE = "witness"

_IDENTITY_LOCK = "logserver.witness.identity"  # serialises first use of a database


def resolve_witness_database_url(configured: str | None, data_dir: Path) -> tuple[str, bool]:
    """(url, embedded): the configured server (the config already applied
    $WITNESS_DATABASE_URL), else the embedded PostgreSQL in `data_dir`. Blocking."""
    if configured:
        return configured, False
    return embedded_postgres_uri(data_dir, database=EMBEDDED_DATABASE), True


def witness_migrations_dir() -> Traversable:
    """The package's `migrations/witness/`."""
    return migrations_dir() / "witness"


async def migrate_witness(conn: asyncpg.Connection) -> list[str]:
    """Apply the witness's migrations (its own directory, table and lock)."""
    return await migrate(conn, witness_migrations_dir(), table=MIGRATIONS_TABLE, lock=_MIGRATION_LOCK)


@dataclass(frozen=True)
class LogState:
    """The latest checkpoint cosigned for `origin`; `root` and `note` are None (and
    `tree_size` 0) until the first one."""

    origin: str
    tree_size: int
    root: bytes | None
    note: str | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class Evidence:
    id: int
    origin: str
    kind: str
    old_size: int
    checkpoint_size: int
    stored_size: int
    stored_note: str | None
    request: str
    detail: str
    received_at: dt.datetime


def _state(row: asyncpg.Record) -> LogState:
    root = row["root"]
    return LogState(row["origin"], row["tree_size"], None if root is None else bytes(root), row["note"],
                    row["updated_at"])


class WitnessStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def ensure_keys(self, name: str, keys: Sequence[tuple[int, bytes, str]]) -> list[str]:
        """Record the witness's name and keys on first use, or check that the database
        belongs to this witness; returns the vkeys added now.

        `keys` are (signature type, public key, vkey). The name must be the stored one,
        and unless the database knows no key yet, at least one configured key must be a
        recorded one: a witness may add a key (an ML-DSA-44 key beside its Ed25519 one)
        or later drop one, never swap its whole key set. Raises IdentityMismatchError
        otherwise: the state here is what those other keys cosigned. Atomic (one
        transaction under an advisory lock), durable on return, safe to repeat.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _IDENTITY_LOCK)
            row = await conn.fetchrow("SELECT name, vkey FROM witness_identity")
            if row is None:
                _, public_key, vkey = keys[0]
                await conn.execute("INSERT INTO witness_identity (name, public_key, vkey) VALUES ($1, $2, $3)",
                                   name, public_key, vkey)
            elif row["name"] != name:
                raise IdentityMismatchError(
                    f"the database belongs to witness {row['name']!r} ({row['vkey']}), not {name!r}; refusing to start")
            known = {r["vkey"] for r in await conn.fetch("SELECT vkey FROM witness_keys")}
            wanted = [vkey for _, _, vkey in keys]
            if known and known.isdisjoint(wanted):
                raise IdentityMismatchError(
                    f"the database belongs to witness {name!r} with keys {sorted(known)}, none of which is "
                    f"configured (got {wanted}); refusing to start")
            added = []
            for sig_type, public_key, vkey in keys:
                if vkey not in known:
                    await conn.execute("INSERT INTO witness_keys (vkey, sig_type, public_key) VALUES ($1, $2, $3)",
                                       vkey, sig_type, public_key)
                    added.append(vkey)
            return added

    async def ensure_logs(self, origins: Iterable[str]) -> None:
        """Create the size-0 row of each followed log that has none (idempotent)."""
        origins = sorted(set(origins))
        await self.pool.execute(
            "INSERT INTO witness_logs (origin, tree_size) SELECT unnest($1::text[]), 0 "
            "ON CONFLICT (origin) DO NOTHING",
            origins,
        )

    async def states(self) -> list[LogState]:
        rows = await self.pool.fetch("SELECT * FROM witness_logs ORDER BY origin")
        return [_state(r) for r in rows]

    async def state(self, origin: str) -> LogState | None:
        """The latest cosigned checkpoint of `origin` (None for a log without a row), read
        without a lock: sign-subtree and the monitoring API only read, and stale state is
        safe for them (tlog-witness)."""
        row = await self.pool.fetchrow("SELECT * FROM witness_logs WHERE origin = $1", origin)
        return _state(row) if row else None

    @asynccontextmanager
    async def locked(self, origin: str) -> AsyncIterator[LockedLog]:
        """A transaction holding the row lock of `origin`'s state.

        Concurrent add-checkpoint calls for one log run one after the other from the
        read of the stored size to the commit, which closes the rollback race of
        tlog-witness ("checking the old size ... and persisting the new checkpoint
        must be performed atomically"). Everything done through the yielded object
        commits when the block exits normally (durable on exit) and rolls back if
        it raises. Raises KeyError for an origin without a row.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM witness_logs WHERE origin = $1 FOR UPDATE", origin)
            if row is None:
                raise KeyError(origin)
            yield LockedLog(conn, _state(row))

    async def evidence(self, after_id: int = 0, limit: int = 100) -> list[Evidence]:
        rows = await self.pool.fetch(
            "SELECT * FROM witness_evidence WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
        )
        return [Evidence(r["id"], r["origin"], r["kind"], r["old_size"], r["checkpoint_size"], r["stored_size"],
                         r["stored_note"], r["request"], r["detail"], r["received_at"]) for r in rows]


class LockedLog:
    """Writes to one log's state inside `WitnessStore.locked`."""

    def __init__(self, conn: asyncpg.Connection, state: LogState):
        self.conn = conn
        self.state = state

    async def advance(self, tree_size: int, root: bytes, note: str) -> None:
        """Record a newly cosigned checkpoint; `note` is the cosigned note served to
        monitors. The caller has checked it extends the state; the table's trigger
        refuses a rollback or a second root regardless."""
        status = await self.conn.execute(
            "UPDATE witness_logs SET tree_size = $2, root = $3, note = $4, updated_at = now() "
            "WHERE origin = $1 AND tree_size = $5",
            self.state.origin, tree_size, root, note, self.state.tree_size,
        )
        if status != "UPDATE 1":
            raise AssertionError(f"witness_logs row of {self.state.origin!r} moved under its lock")

    async def record_evidence(self, kind: str, old_size: int, checkpoint_size: int, request: str,
                              detail: str) -> None:
        """Keep a refused, log-signed request (once per distinct request body)."""
        await self.conn.execute(
            "INSERT INTO witness_evidence (origin, kind, old_size, checkpoint_size, stored_size, stored_note, "
            "request, request_sha256, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (request_sha256) DO NOTHING",
            self.state.origin, kind, old_size, checkpoint_size, self.state.tree_size, self.state.note,
            request, hashlib.sha256(request.encode("utf-8")).digest(), detail,
        )
