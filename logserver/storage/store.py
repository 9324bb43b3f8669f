"""All of logserver's SQL. The rest of the code sees typed rows, never SQL.

Durability: PostgreSQL is run with its defaults (fsync on, synchronous_commit
on), so a transaction whose COMMIT returned is on disk. When a COMMIT fails
ambiguously (the connection dropped while it was in flight) the transaction may
or may not have committed; callers must then treat its entries as *not
acknowledged* and let the client retry, which the duplicate check makes safe.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import asyncpg

TileKey = tuple[int, int]  # (tile level, tile index); the width is the length of the data / 32


class StorageError(RuntimeError):
    """Base class for storage-level failures that are not plain database outages."""


class IdentityMismatchError(StorageError):
    """The database belongs to another log (origin or public key differ)."""


class ConcurrentUpdateError(StorageError):
    """The compare-and-swap on log_state failed: another sequencer moved the log."""


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    tree_size: int
    root: bytes
    signed_at_ms: int
    note: str


@dataclass(frozen=True)
class LeafRow:
    idx: int
    leaf_hash: bytes
    leaf: bytes
    fleet_id: str
    sequence: int
    payload_digest: bytes
    integrated_at: dt.datetime


@dataclass(frozen=True)
class ExistingEntry:
    """What the log already holds at a (fleet_id, sequence)."""

    idx: int
    leaf_hash: bytes
    payload_digest: bytes


@dataclass(frozen=True)
class NewLeaf:
    idx: int
    leaf_hash: bytes
    leaf: bytes
    fleet_id: str
    sequence: int
    payload_digest: bytes


_LEAF_COLUMNS = "idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, integrated_at"


def _checkpoint(row: asyncpg.Record) -> CheckpointRow:
    return CheckpointRow(row["id"], row["tree_size"], bytes(row["root"]), row["signed_at_ms"], row["note"])


def _leaf(row: asyncpg.Record) -> LeafRow:
    return LeafRow(
        row["idx"], bytes(row["leaf_hash"]), bytes(row["leaf"]), row["fleet_id"],
        row["sequence"], bytes(row["payload_digest"]), row["integrated_at"],
    )


class Store:
    """PostgreSQL storage for one log. Safe to share between tasks (it holds a pool)."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # --- identity and initial state -------------------------------------------------

    async def ensure_identity(self, origin: str, public_key: bytes, vkey: str) -> bool:
        """Record the log identity on first use, or check it matches.

        Returns True when this call created the identity. Raises
        IdentityMismatchError when the database belongs to another origin or key:
        two logs sharing a database (or a test key pointed at production data)
        is how logs end up signing forks.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('logserver.identity'))")
            row = await conn.fetchrow("SELECT origin, public_key, vkey FROM log_identity")
            if row is None:
                await conn.execute(
                    "INSERT INTO log_identity (origin, public_key, vkey) VALUES ($1, $2, $3)",
                    origin, public_key, vkey,
                )
                return True
        if row["origin"] != origin:
            raise IdentityMismatchError(
                f"the database belongs to origin {row['origin']!r}, not {origin!r}; refusing to start"
            )
        if bytes(row["public_key"]) != public_key:
            raise IdentityMismatchError(
                f"the database was created with log key {row['vkey']}, but this server has {vkey}; "
                "refusing to start (a different key would sign a different history)"
            )
        return False

    async def initialize_state(self, signed_empty_checkpoint: str, root: bytes, signed_at_ms: int) -> bool:
        """Create the size-0 log state with its first signed checkpoint, once.

        Atomic: the checkpoint and log_state rows are inserted together. Returns
        False (and inserts nothing) when the state already exists.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('logserver.identity'))")
            if await conn.fetchval("SELECT count(*) FROM log_state"):
                return False
            cp_id = await conn.fetchval(
                "INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES (0, $1, $2, $3) RETURNING id",
                root, signed_at_ms, signed_empty_checkpoint,
            )
            await conn.execute(
                "INSERT INTO log_state (tree_size, root, checkpoint_id) VALUES (0, $1, $2)", root, cp_id
            )
            return True

    # --- reads ----------------------------------------------------------------------

    async def latest_checkpoint(self) -> CheckpointRow | None:
        """The checkpoint log_state points at (the newest signed one), or None before init."""
        row = await self.pool.fetchrow(
            "SELECT c.* FROM log_state s JOIN checkpoints c ON c.id = s.checkpoint_id"
        )
        return _checkpoint(row) if row else None

    async def checkpoints(self, after_id: int = 0, limit: int = 1000) -> list[CheckpointRow]:
        """Signed checkpoints in signing order, for audits and fsck."""
        rows = await self.pool.fetch(
            "SELECT * FROM checkpoints WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
        )
        return [_checkpoint(r) for r in rows]

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        """The stored (widest) data of each requested hash tile; missing tiles are absent."""
        return await _read_tiles(self.pool, keys)

    async def read_leaves(self, start: int, end: int) -> list[LeafRow]:
        """Leaves with start <= idx < end, in order."""
        rows = await self.pool.fetch(
            f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx", start, end
        )
        return [_leaf(r) for r in rows]

    async def read_leaf_bytes(self, start: int, end: int) -> list[bytes]:
        """Only the leaf bytes of start <= idx < end, in order (entry bundles)."""
        rows = await self.pool.fetch(
            "SELECT leaf FROM leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx", start, end
        )
        return [bytes(r["leaf"]) for r in rows]

    async def leaf_by_hash(self, leaf_hash: bytes) -> LeafRow | None:
        row = await self.pool.fetchrow(f"SELECT {_LEAF_COLUMNS} FROM leaves WHERE leaf_hash = $1", leaf_hash)
        return _leaf(row) if row else None

    async def leaf_index(self, leaf_hash: bytes) -> int | None:
        return await self.pool.fetchval("SELECT idx FROM leaves WHERE leaf_hash = $1", leaf_hash)

    async def fleet_latest(self, fleet_id: str) -> LeafRow | None:
        """The fleet's latest logged bundle, or None if the fleet never logged one."""
        row = await self.pool.fetchrow(
            f"SELECT {', '.join('l.' + c for c in _LEAF_COLUMNS.split(', '))} "
            "FROM fleets f JOIN leaves l ON l.idx = f.idx WHERE f.fleet_id = $1",
            fleet_id,
        )
        return _leaf(row) if row else None

    async def find_entries(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ExistingEntry]:
        """Entries already logged at these (fleet_id, sequence) pairs (a read-only pre-check)."""
        return await _find_entries(self.pool, keys)

    # --- sequencing -------------------------------------------------------------------

    @asynccontextmanager
    async def sequencing(self, lock_timeout_ms: int, stall_timeout_ms: int = 5_000) -> AsyncIterator["SequencingTransaction"]:
        """A transaction holding the log_state row lock: the sequencer role.

        Only one transaction at a time can hold it, across every process sharing
        the database; another waits up to `lock_timeout_ms` and then fails with
        asyncpg.LockNotAvailableError. Everything done through the yielded object
        commits atomically when the block exits normally, and is rolled back if
        it raises. When the block returns, the commit is durable (synchronous_commit
        is forced on for this transaction, whatever the server's default).

        A holder that stalls cannot keep the role: PostgreSQL itself ends the
        transaction, releasing the lock to the next waiter, when the holder leaves
        it idle for `stall_timeout_ms` (idle_in_transaction_session_timeout: a
        frozen or stopped process, a lost host; the session is terminated) or when
        one of its statements runs that long (statement_timeout: e.g. a COPY whose
        sender froze). The stalled process's next statement or COMMIT then fails,
        so it can commit nothing; what it already signed stays in its memory, never
        stored or served. Client-side asyncpg timeouts (slightly longer) bound the
        wait for an unresponsive database the same way.
        """
        lock_ms, stall_ms = int(lock_timeout_ms), int(stall_timeout_ms)
        client_timeout = stall_ms / 1000 + 1.0
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                # Before taking the lock, so that no moment of holding it is unbounded.
                # The lock wait itself is bounded by lock_timeout; the statement bound
                # is tightened to the stall timeout once the lock is held.
                await conn.execute(
                    f"SET LOCAL lock_timeout = {lock_ms}; "
                    f"SET LOCAL statement_timeout = {lock_ms + stall_ms}; "
                    f"SET LOCAL idle_in_transaction_session_timeout = {stall_ms}; "
                    "SET LOCAL synchronous_commit = on",
                    timeout=client_timeout,
                )
                # Lock first, then read the checkpoint in a second statement. A joined
                # SELECT ... FOR UPDATE OF s that waited for another sequencer would
                # recheck the join against the new log_state row but the old
                # checkpoints row, and return no row at all.
                checkpoint_id = await conn.fetchval(
                    "SELECT checkpoint_id FROM log_state FOR UPDATE", timeout=lock_ms / 1000 + client_timeout
                )
                if checkpoint_id is None:
                    raise StorageError("log_state is missing: the log was never initialised")
                await conn.execute(f"SET LOCAL statement_timeout = {stall_ms}", timeout=client_timeout)
                row = await conn.fetchrow("SELECT * FROM checkpoints WHERE id = $1", checkpoint_id,
                                          timeout=client_timeout)
                yield SequencingTransaction(conn, _checkpoint(row), client_timeout)


class SequencingTransaction:
    """The writes one batch makes, all inside the locked transaction of Store.sequencing."""

    def __init__(self, conn: asyncpg.Connection, latest: CheckpointRow, timeout_s: float = 6.0):
        self.conn = conn
        self.latest = latest  # the checkpoint log_state pointed at when the lock was taken
        self.timeout_s = timeout_s  # client-side bound on each statement

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        return await _read_tiles(self.conn, keys, self.timeout_s)

    async def find_entries(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ExistingEntry]:
        return await _find_entries(self.conn, keys, self.timeout_s)

    async def fleet_sequences(self, fleet_ids: Sequence[str]) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT fleet_id, sequence FROM fleets WHERE fleet_id = ANY($1::text[])", list(fleet_ids),
            timeout=self.timeout_s,
        )
        return {r["fleet_id"]: r["sequence"] for r in rows}

    async def append(
        self,
        leaves: Sequence[NewLeaf],
        tiles: dict[TileKey, bytes],
        fleets: dict[str, tuple[int, int]],
        new_size: int,
        new_root: bytes,
        note: str,
        signed_at_ms: int,
        integrated_at: dt.datetime,
    ) -> CheckpointRow:
        """Add a batch: its leaves, grown tiles, fleet heads and the checkpoint that covers it.

        The log_state update is a compare-and-swap on the size and checkpoint seen
        when the lock was taken; if it does not match (it cannot while the lock is
        held, so this is a loud invariant check) ConcurrentUpdateError is raised and
        the whole transaction rolls back. `fleets` maps fleet_id to (sequence, idx).
        """
        old = self.latest
        if leaves:
            if leaves[0].idx != old.tree_size or leaves[-1].idx != new_size - 1:
                raise AssertionError(
                    f"batch covers {leaves[0].idx}..{leaves[-1].idx}, want {old.tree_size}..{new_size - 1}"
                )
            await self.conn.copy_records_to_table(
                "leaves",
                columns=["idx", "leaf_hash", "leaf", "fleet_id", "sequence", "payload_digest", "integrated_at"],
                records=[
                    (l.idx, l.leaf_hash, l.leaf, l.fleet_id, l.sequence, l.payload_digest, integrated_at)
                    for l in leaves
                ],
                timeout=self.timeout_s,
            )
        if tiles:
            keys = list(tiles)
            await self.conn.execute(
                "INSERT INTO tiles (level, idx, hashes) "
                "SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[]) "
                "ON CONFLICT (level, idx) DO UPDATE SET hashes = EXCLUDED.hashes",
                [k[0] for k in keys], [k[1] for k in keys], [tiles[k] for k in keys],
                timeout=self.timeout_s,
            )
        if fleets:
            ids = list(fleets)
            await self.conn.execute(
                "INSERT INTO fleets (fleet_id, sequence, idx) "
                "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) "
                "ON CONFLICT (fleet_id) DO UPDATE SET sequence = EXCLUDED.sequence, idx = EXCLUDED.idx",
                ids, [fleets[f][0] for f in ids], [fleets[f][1] for f in ids],
                timeout=self.timeout_s,
            )
        cp_id = await self.conn.fetchval(
            "INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, $3, $4) RETURNING id",
            new_size, new_root, signed_at_ms, note, timeout=self.timeout_s,
        )
        status = await self.conn.execute(
            "UPDATE log_state SET tree_size = $1, root = $2, checkpoint_id = $3 "
            "WHERE tree_size = $4 AND checkpoint_id = $5",
            new_size, new_root, cp_id, old.tree_size, old.id, timeout=self.timeout_s,
        )
        if status != "UPDATE 1":
            raise ConcurrentUpdateError(
                f"log_state moved under the sequencer lock (expected size {old.tree_size}, checkpoint {old.id})"
            )
        return CheckpointRow(cp_id, new_size, new_root, signed_at_ms, note)


async def _read_tiles(conn, keys: Iterable[TileKey], timeout: float | None = None) -> dict[TileKey, bytes]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT t.level, t.idx, t.hashes FROM tiles t "
        "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx",
        [k[0] for k in keys], [k[1] for k in keys], timeout=timeout,
    )
    return {(r["level"], r["idx"]): bytes(r["hashes"]) for r in rows}


async def _find_entries(conn, keys: Sequence[tuple[str, int]],
                        timeout: float | None = None) -> dict[tuple[str, int], ExistingEntry]:
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT l.fleet_id, l.sequence, l.idx, l.leaf_hash, l.payload_digest FROM leaves l "
        "JOIN unnest($1::text[], $2::bigint[]) AS k(fleet_id, sequence) "
        "ON l.fleet_id = k.fleet_id AND l.sequence = k.sequence",
        [k[0] for k in keys], [k[1] for k in keys], timeout=timeout,
    )
    return {
        (r["fleet_id"], r["sequence"]): ExistingEntry(r["idx"], bytes(r["leaf_hash"]), bytes(r["payload_digest"]))
        for r in rows
    }
