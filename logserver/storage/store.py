"""The log's Store: its reads and its one-shot writes. The sequencer's transaction,
the only other writer, is in sequencing.py. All of logserver's SQL lives in this
package; the rest of the code sees typed rows (rows.py), never SQL.

The contract every method states (Sunlight's rule for its backends too: a write
is durable once it returns):
* atomic: what is stored together or not at all;
* durable on return: a write's COMMIT returned, with synchronous_commit on, so
  the data is on disk whatever the server's default;
* an ambiguous failure: the connection dropped with a COMMIT in flight, so the
  write may or may not be stored. Every write here is idempotent, so the caller
  retries it; the sequencer instead answers "not acknowledged" and lets the
  client's retry find a duplicate.
Reads write nothing: a failed read changes nothing and may be repeated.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg

from ..formats.vkey import parse_vkey
from . import _queries
from ._queries import LATEST_COLUMNS, LEAF_COLUMNS, checkpoint_row, leaf_row
from .errors import IdentityMismatchError
from .identity import Identity, IdentityTable, ensure_identity
from .rows import (
    CheckpointRow,
    ExistingEntry,
    HeadsChange,
    HeadsSnapshot,
    LeafRow,
    Prefetch,
    SizedHeadsSnapshot,
    TileKey,
)
from .sequencing import SequencingTransaction, sequencing

# Also taken by initialize_state: processes starting together create one log.
_IDENTITY_LOCK = "logserver.identity"


def _identity_mismatch(stored: Identity, want: Identity) -> str:
    if stored.name != want.name:
        return f"the database belongs to origin {stored.name!r}, not {want.name!r}; refusing to start"
    return (f"the database was created with log key {stored.vkey}, but this server has {want.vkey}; "
            "refusing to start (a different key would sign a different history)")


_KEY_KINDS = {1: "Ed25519 signed-note", 4: "Ed25519 cosignature/v1", 6: "ML-DSA-44 subtree/v1 cosignature"}


def _dropped_key_message(vkey: str, sig_type: int) -> str:
    what = _KEY_KINDS.get(sig_type, f"type 0x{sig_type:02x}")
    setting = "log_key_mldsa44" if sig_type == 6 else "log_key"
    return (f"the log has published its {what} key {vkey[:64]}..., which this configuration does not "
            f"have; refusing to start (clients that pin it would reject the log's checkpoints): set "
            f"{setting} to that key's file (docs/operations.md, \"Adding an ML-DSA-44 key to a log\")")


# The heads table's rows and the tree size they belong to (Store.heads_snapshot).
_HEADS_SNAPSHOT = (
    "SELECT s.tree_size, "
    "       ARRAY(SELECT ROW(f.fleet_id, f.sequence, f.idx, l.leaf_hash, f.retired) "
    "             FROM fleets f JOIN leaves l ON l.idx = f.idx ORDER BY f.first_idx) AS rows, "
    "       (SELECT max(idx) FROM leaves WHERE kind = 2) AS last_heads "
    "FROM log_state s"
)
# A bundle retired its fleet iff the fleet's row is retired and names this leaf: the
# row of a retired fleet never moves again (migration 0006).
_HEADS_CHANGES = (
    "SELECT l.idx, l.fleet_id, l.sequence, l.leaf_hash, "
    "       coalesce(f.retired AND f.idx = l.idx, false) AS retired "
    "FROM leaves l LEFT JOIN fleets f ON f.fleet_id = l.fleet_id "
    "WHERE l.idx >= $1 AND l.idx < $2 ORDER BY l.idx"
)

LOG_IDENTITY = IdentityTable("log_identity", "origin", _IDENTITY_LOCK, _identity_mismatch)


class Store:
    """PostgreSQL storage for one log. Safe to share between tasks (it holds a pool).

    Implements the seam's protocols (storage/protocols.py): LogStore for the
    sequencer, TileSource for the reader.
    """

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._releasing: set[asyncio.Future] = set()  # connections on their way back to the pool

    # --- identity and initial state (open_log, at start-up) ---------------------------

    async def ensure_identity(self, origin: str, public_key: bytes, vkey: str) -> bool:
        """Record the log identity on first use, or check it matches.

        Returns True when this call created the identity. Raises
        IdentityMismatchError when the database belongs to another origin or key:
        two logs sharing a database (or a test key pointed at production data)
        is how logs end up signing forks. Atomic, durable on return, and safe to
        repeat after an ambiguous failure (storage/identity.py).
        """
        return await ensure_identity(self.pool, LOG_IDENTITY, Identity(origin, public_key, vkey))

    async def ensure_published_keys(self, vkeys: Sequence[str]) -> list[str]:
        """Record the log's checkpoint keys `vkeys` (the configured ones, docs/operations.md,
        "Adding an ML-DSA-44 key to a log"), refusing a configuration that lacks a key the
        log already signed with.

        Returns the vkeys recorded now. Raises IdentityMismatchError naming the first
        dropped key: its holders' clients pin it (and may demand its signature), so a log
        that stopped signing with it would look broken to them, or be taken for another.
        Atomic under the identity lock, durable on return, safe to repeat.
        """
        wanted = {v: parse_vkey(v).sig_type for v in vkeys}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _IDENTITY_LOCK)
            rows = await conn.fetch("SELECT vkey, sig_type FROM log_keys ORDER BY created_at, vkey")
            for row in rows:
                if row["vkey"] not in wanted:
                    raise IdentityMismatchError(_dropped_key_message(row["vkey"], row["sig_type"]))
            recorded = {row["vkey"] for row in rows}
            added = [v for v in vkeys if v not in recorded]
            for vkey in added:
                await conn.execute("INSERT INTO log_keys (vkey, sig_type) VALUES ($1, $2)", vkey, wanted[vkey])
        return added

    async def published_keys(self) -> list[str]:
        """The vkeys the log has recorded as published, oldest first."""
        return [r["vkey"] for r in await self.pool.fetch("SELECT vkey FROM log_keys ORDER BY created_at, vkey")]

    async def initialize_state(self, signed_empty_checkpoint: str, root: bytes, signed_at_ms: int) -> bool:
        """Create the size-0 log state with its first signed checkpoint, once.

        Returns False (and inserts nothing) when the state already exists.
        Atomic: the checkpoint and log_state rows are inserted together, under the
        identity lock. Durable on return (synchronous_commit is forced on). After
        an ambiguous failure the state exists or not; calling again is safe (a
        second call finds it and returns False, or creates it).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _IDENTITY_LOCK)
            if await conn.fetchval("SELECT count(*) FROM log_state"):
                return False
            cp_id = await conn.fetchval(
                "INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES (0, $1, $2, $3) RETURNING id",
                root, signed_at_ms, signed_empty_checkpoint,
            )
            await conn.execute(
                "INSERT INTO log_state (tree_size, root, checkpoint_id, signed_at_ms, note) VALUES (0, $1, $2, $3, $4)",
                root, cp_id, signed_at_ms, signed_empty_checkpoint,
            )
            return True

    # --- reads: one statement each, committed data only; nothing is written ------------

    async def latest_checkpoint(self) -> CheckpointRow | None:
        """The newest signed checkpoint, or None before init: log_state's slot (the
        latest signature, maybe an idle re-sign), with the id of the stored row of its size."""
        row = await self.pool.fetchrow(f"SELECT {LATEST_COLUMNS} FROM log_state s")
        return checkpoint_row(row) if row else None

    async def checkpoints(self, after_id: int = 0, limit: int = 1000) -> list[CheckpointRow]:
        """Stored checkpoints in signing order, for audits and fsck: the first
        signature of each size (and, from before migration 0003, re-signs of one
        size). The latest re-sign is latest_checkpoint()."""
        rows = await self.pool.fetch(
            "SELECT * FROM checkpoints WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
        )
        return [checkpoint_row(r) for r in rows]

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        """The stored (widest) data of each requested hash tile; missing tiles are absent.

        One statement: the tiles returned are of one committed state of the log."""
        return await _queries.read_tiles(self.pool, keys)

    async def read_leaves(self, start: int, end: int) -> list[LeafRow]:
        """Leaves with start <= idx < end, in order."""
        rows = await self.pool.fetch(
            f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx", start, end
        )
        return [leaf_row(r) for r in rows]

    async def read_leaf_bytes(self, start: int, end: int) -> list[bytes]:
        """Only the leaf bytes of start <= idx < end, in order (entry bundles)."""
        rows = await self.pool.fetch(
            "SELECT leaf FROM leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx", start, end
        )
        return [bytes(r["leaf"]) for r in rows]

    async def leaf_by_hash(self, leaf_hash: bytes) -> LeafRow | None:
        """The leaf with this leaf hash, or None."""
        row = await self.pool.fetchrow(f"SELECT {LEAF_COLUMNS} FROM leaves WHERE leaf_hash = $1", leaf_hash)
        return leaf_row(row) if row else None

    async def leaf_index(self, leaf_hash: bytes) -> int | None:
        """The index of the leaf with this leaf hash, or None."""
        return await self.pool.fetchval("SELECT idx FROM leaves WHERE leaf_hash = $1", leaf_hash)

    async def fleet_latest(self, fleet_id: str) -> LeafRow | None:
        """The fleet's latest logged bundle, or None if the fleet never logged one."""
        row = await self.pool.fetchrow(
            f"SELECT {', '.join('l.' + c for c in LEAF_COLUMNS.split(', '))} "
            "FROM fleets f JOIN leaves l ON l.idx = f.idx WHERE f.fleet_id = $1",
            fleet_id,
        )
        return leaf_row(row) if row else None

    async def heads_snapshot(self) -> SizedHeadsSnapshot:
        """Every fleet's head (fleet, sequence, index, leaf hash, retired), the newest
        HEADS leaf's index (0: none) and the tree size they belong to, in one statement:
        one committed state (the sequencer writes fleets and log_state together)."""
        row = await self.pool.fetchrow(_HEADS_SNAPSHOT)
        if row is None:
            raise RuntimeError("log_state is missing: the log was never initialised")
        rows = [(f, s, i, bytes(h), r) for f, s, i, h, r in row["rows"]]
        return SizedHeadsSnapshot(row["tree_size"], HeadsSnapshot(rows, row["last_heads"] or 0))

    async def heads_changes(self, start: int, end: int) -> list[HeadsChange]:
        """The leaves of [start, end) as the heads table needs them, in order: a bundle's
        fleet, sequence, leaf hash and whether it retired its fleet (a retired fleet's row
        never changes again, so it names its retirement), or a HEADS leaf. No leaf bytes."""
        rows = await self.pool.fetch(_HEADS_CHANGES, start, end)
        return [HeadsChange(r["idx"], r["fleet_id"], r["sequence"], bytes(r["leaf_hash"]), r["retired"])
                for r in rows]

    async def leaves_at(self, indices: Sequence[int]) -> dict[int, LeafRow]:
        """The leaves at these indices (those that exist), by index."""
        rows = await self.pool.fetch(
            f"SELECT {LEAF_COLUMNS} FROM leaves WHERE idx = ANY($1::bigint[])", list(set(indices))
        )
        return {r["idx"]: leaf_row(r) for r in rows}

    async def find_entries(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ExistingEntry]:
        """Entries already logged at these (fleet_id, sequence) pairs (a read-only pre-check)."""
        return await _queries.find_entries(self.pool, keys)

    # --- sequencing -------------------------------------------------------------------

    def sequencing(
        self, lock_timeout_ms: int, stall_timeout_ms: int = 5_000, prefetch: Prefetch | None = None,
    ) -> AbstractAsyncContextManager[SequencingTransaction]:
        """The sequencer role: a transaction holding the log_state row lock.

        Nothing done through the yielded SequencingTransaction is stored unless the
        block calls its commit(); a block that returns or raises without it is
        rolled back. Atomicity, durability and the ambiguous COMMIT: see
        storage/sequencing.py.
        """
        return sequencing(self.pool, self._releasing, lock_timeout_ms, stall_timeout_ms, prefetch)
