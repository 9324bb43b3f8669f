"""Who a database belongs to: the log's (origin, key) or the witness's (name, key),
recorded on first use and checked on every start. One helper for both: two logs,
or two witnesses, sharing a database is how forks and false cosignatures start."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from .errors import IdentityMismatchError


@dataclass(frozen=True)
class Identity:
    name: str  # the log's origin, or the witness's name
    public_key: bytes
    vkey: str


@dataclass(frozen=True)
class IdentityTable:
    """A one-row identity table with columns (`name_column`, public_key, vkey)."""

    table: str
    name_column: str
    lock: str  # text of the transaction-level advisory lock that serialises first use
    mismatch: Callable[[Identity, Identity], str]  # (stored, wanted) -> the refusal's message


async def ensure_identity(pool: asyncpg.Pool, table: IdentityTable, want: Identity) -> bool:
    """Record `want` on first use, or check that the stored identity is `want`.

    Returns True when this call recorded it. Raises IdentityMismatchError (message
    from `table.mismatch`) when the stored name or public key differ.

    Atomic: one transaction under `table.lock`, so processes starting together
    record one identity. Durable on return (synchronous_commit is forced on).
    An ambiguous failure (the connection dropped during COMMIT) leaves the
    identity recorded or not; calling again is safe, it records or checks.
    """
    sql = f"SELECT {table.name_column}, public_key, vkey FROM {table.table}"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", table.lock)
        row = await conn.fetchrow(sql)
        if row is None:
            await conn.execute(
                f"INSERT INTO {table.table} ({table.name_column}, public_key, vkey) VALUES ($1, $2, $3)",
                want.name, want.public_key, want.vkey,
            )
            return True
    stored = Identity(row[table.name_column], bytes(row["public_key"]), row["vkey"])
    if stored.name != want.name or stored.public_key != want.public_key:
        raise IdentityMismatchError(table.mismatch(stored, want))
    return False
