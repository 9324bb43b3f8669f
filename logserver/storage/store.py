"""All of logserver's SQL. The rest of the code sees typed rows, never SQL.

Durability: PostgreSQL is run with its defaults (fsync on, synchronous_commit
on), so a transaction whose COMMIT returned is on disk. When a COMMIT fails
ambiguously (the connection dropped while it was in flight) the transaction may
or may not have committed; callers must then treat its entries as *not
acknowledged* and let the client retry, which the duplicate check makes safe.
"""
from __future__ import annotations

import asyncio
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


class CommitRolledBackError(StorageError):
    """COMMIT answered ROLLBACK: the transaction had been aborted, nothing was stored.

    PostgreSQL does not raise for a COMMIT of an aborted transaction (a statement
    in it failed and its error was caught); it rolls back and says so in the
    command status. Nothing of the batch is durable; the sequencer answers its
    submitters 503 (a retry is safe).
    """


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
        self._releasing: set[asyncio.Future] = set()  # connections on their way back to the pool

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
    async def sequencing(
        self, lock_timeout_ms: int, stall_timeout_ms: int = 5_000, prefetch: "Prefetch | None" = None,
    ) -> AsyncIterator["SequencingTransaction"]:
        """A transaction holding the log_state row lock: the sequencer role.

        Only one transaction at a time can hold it, across every process sharing
        the database; another waits up to `lock_timeout_ms` and then fails with
        asyncpg.LockNotAvailableError. Everything done through the yielded object
        commits atomically at `tx.commit()` (or when the block exits normally
        without it), and is rolled back if the block raises. When commit() returns,
        the commit is durable (synchronous_commit is forced on for this
        transaction, whatever the server's default). If the COMMIT itself fails
        ambiguously (the connection dropped), the batch may or may not be stored:
        see the module docstring.

        A holder that stalls cannot keep the role: PostgreSQL itself ends the
        transaction, releasing the lock to the next waiter, when the holder leaves
        it idle for `stall_timeout_ms` (idle_in_transaction_session_timeout: a
        frozen or stopped process, a lost host; the session is terminated) or when
        one of its statements runs that long (statement_timeout). The stalled
        process's next statement or COMMIT then fails, so it can commit nothing;
        what it already signed stays in its memory, never stored or served.
        Client-side asyncpg timeouts (slightly longer) bound the wait for an
        unresponsive database the same way.

        Round trips are what a busy event loop makes expensive (each reply waits
        behind the requests being served), so a batch takes four: taking the role,
        one read (the checkpoint and, with `prefetch`, everything the batch needs
        to know), one write, COMMIT.
        """
        lock_ms, stall_ms = int(lock_timeout_ms), int(stall_timeout_ms)
        client_timeout = stall_ms / 1000 + 1.0
        conn = await self.pool.acquire()
        committed = False
        tx: SequencingTransaction | None = None
        try:
            # One simple-query message: each statement runs in turn, the lock is
            # taken only once the bounds are set, and the statement bound is then
            # tightened to the stall timeout. The checkpoint is read in a later
            # statement: in READ COMMITTED a statement that waited for the row
            # lock still reads other tables with the snapshot it started with.
            await conn.execute(
                "BEGIN ISOLATION LEVEL READ COMMITTED; "
                f"SET LOCAL lock_timeout = {lock_ms}; "
                f"SET LOCAL statement_timeout = {lock_ms + stall_ms}; "
                f"SET LOCAL idle_in_transaction_session_timeout = {stall_ms}; "
                "SET LOCAL synchronous_commit = on; "
                "SELECT 1 FROM log_state FOR UPDATE; "
                f"SET LOCAL statement_timeout = {stall_ms}",
                timeout=lock_ms / 1000 + client_timeout,
            )
            tx = await SequencingTransaction.start(conn, prefetch, client_timeout)
            yield tx
            if not tx.committed:
                await tx.commit()
            committed = True
        finally:
            # A COMMIT that returned is final, even if the block raised afterwards
            # (post-commit work): there is nothing to roll back.
            if tx is not None and tx.committed:
                committed = True
            if not committed and not conn.is_closed():
                try:
                    await conn.execute("ROLLBACK", timeout=client_timeout)
                except Exception:  # the pool closes a connection it cannot reset
                    pass
            # Returning the connection costs a round trip (the pool resets it); the
            # next batch need not wait for it, it takes another connection.
            # Bounded: a reset that does not finish in time terminates the connection
            # (asyncpg), rather than leaving this task and the connection hanging.
            release = asyncio.ensure_future(self.pool.release(conn, timeout=client_timeout))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)


@dataclass(frozen=True)
class Prefetch:
    """What a batch will read, fetched in the same round trip as the latest checkpoint.

    `tiles` are wanted only if the log is still at `tree_size` (the sequencer's
    last known size); otherwise the caller reads the right ones itself.
    """

    tree_size: int
    tiles: Sequence[TileKey] = ()
    entries: Sequence[tuple[str, int]] = ()
    fleet_ids: Sequence[str] = ()


@dataclass(frozen=True)
class Prefetched:
    tiles: dict[TileKey, bytes] | None  # None: the log was not at Prefetch.tree_size
    entries: dict[tuple[str, int], ExistingEntry]
    fleet_sequences: dict[str, int]


_SNAPSHOT = (
    "SELECT c.*, "
    "ARRAY(SELECT ROW(t.level, t.idx, t.hashes) FROM tiles t "
    "      JOIN unnest($2::smallint[], $3::bigint[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx "
    "      WHERE c.tree_size = $1) AS tiles, "
    "ARRAY(SELECT ROW(l.fleet_id, l.sequence, l.idx, l.leaf_hash, l.payload_digest) FROM leaves l "
    "      JOIN unnest($4::text[], $5::bigint[]) AS k(fleet_id, sequence) "
    "      ON l.fleet_id = k.fleet_id AND l.sequence = k.sequence) AS entries, "
    "ARRAY(SELECT ROW(f.fleet_id, f.sequence) FROM fleets f WHERE f.fleet_id = ANY($6::text[])) AS fleets "
    "FROM log_state s JOIN checkpoints c ON c.id = s.checkpoint_id"
)

_APPEND = (
    "WITH new_leaves AS ("
    "  INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, integrated_at) "
    "  SELECT i, h, l, f, s, d, $7 FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[], "
    "                                         $5::bigint[], $6::bytea[]) AS u(i, h, l, f, s, d)), "
    "new_tiles AS ("
    "  INSERT INTO tiles (level, idx, hashes) "
    "  SELECT * FROM unnest($8::smallint[], $9::bigint[], $10::bytea[]) "
    "  ON CONFLICT (level, idx) DO UPDATE SET hashes = EXCLUDED.hashes), "
    "new_heads AS ("
    "  INSERT INTO fleets (fleet_id, sequence, idx) "
    "  SELECT * FROM unnest($11::text[], $12::bigint[], $13::bigint[]) "
    "  ON CONFLICT (fleet_id) DO UPDATE SET sequence = EXCLUDED.sequence, idx = EXCLUDED.idx), "
    "new_checkpoint AS ("
    "  INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($14, $15, $16, $17) RETURNING id) "
    "UPDATE log_state SET tree_size = $14, root = $15, checkpoint_id = (SELECT id FROM new_checkpoint) "
    "WHERE tree_size = $18 AND checkpoint_id = $19 "
    "RETURNING checkpoint_id"
)


class SequencingTransaction:
    """The writes one batch makes, all inside the locked transaction of Store.sequencing."""

    def __init__(self, conn: asyncpg.Connection, latest: CheckpointRow, timeout_s: float = 6.0,
                 prefetched: Prefetched | None = None):
        self.conn = conn
        self.latest = latest  # the checkpoint log_state pointed at when the lock was taken
        self.timeout_s = timeout_s  # client-side bound on each statement
        self.prefetched = prefetched
        self.committed = False

    @classmethod
    async def start(cls, conn: asyncpg.Connection, prefetch: Prefetch | None,
                    timeout_s: float) -> "SequencingTransaction":
        p = prefetch or Prefetch(-1)
        tile_keys = list(dict.fromkeys(p.tiles))
        entry_keys = list(dict.fromkeys(p.entries))
        row = await conn.fetchrow(
            _SNAPSHOT, p.tree_size, [k[0] for k in tile_keys], [k[1] for k in tile_keys],
            [k[0] for k in entry_keys], [k[1] for k in entry_keys], list(dict.fromkeys(p.fleet_ids)),
            timeout=timeout_s,
        )
        if row is None:
            raise StorageError("log_state is missing: the log was never initialised")
        latest = _checkpoint(row)
        prefetched = None
        if prefetch is not None:
            prefetched = Prefetched(
                tiles={(lv, ix): bytes(h) for lv, ix, h in row["tiles"]} if latest.tree_size == p.tree_size else None,
                entries={(f, s): ExistingEntry(i, bytes(h), bytes(d)) for f, s, i, h, d in row["entries"]},
                fleet_sequences={f: s for f, s in row["fleets"]},
            )
        return cls(conn, latest, timeout_s, prefetched)

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

        One statement (data-modifying CTEs). The log_state update is a
        compare-and-swap on the size and checkpoint seen when the lock was taken;
        if it does not match (it cannot while the lock is held, so this is a loud
        invariant check) ConcurrentUpdateError is raised and the whole transaction
        rolls back. `fleets` maps fleet_id to (sequence, idx). Nothing is durable
        before commit().
        """
        old = self.latest
        if leaves and (leaves[0].idx != old.tree_size or leaves[-1].idx != new_size - 1):
            raise AssertionError(
                f"batch covers {leaves[0].idx}..{leaves[-1].idx}, want {old.tree_size}..{new_size - 1}"
            )
        tile_keys = list(tiles)
        fleet_ids = list(fleets)
        cp_id = await self.conn.fetchval(
            _APPEND,
            [l.idx for l in leaves], [l.leaf_hash for l in leaves], [l.leaf for l in leaves],
            [l.fleet_id for l in leaves], [l.sequence for l in leaves], [l.payload_digest for l in leaves],
            integrated_at,
            [k[0] for k in tile_keys], [k[1] for k in tile_keys], [tiles[k] for k in tile_keys],
            fleet_ids, [fleets[f][0] for f in fleet_ids], [fleets[f][1] for f in fleet_ids],
            new_size, new_root, signed_at_ms, note, old.tree_size, old.id,
            timeout=self.timeout_s,
        )
        if cp_id is None:
            raise ConcurrentUpdateError(
                f"log_state moved under the sequencer lock (expected size {old.tree_size}, checkpoint {old.id})"
            )
        return CheckpointRow(cp_id, new_size, new_root, signed_at_ms, note)

    async def commit(self) -> None:
        """COMMIT. Durable when it returns; an error here may be ambiguous (module docstring).

        Raises CommitRolledBackError when PostgreSQL rolled the transaction back
        instead (it had been aborted by an earlier failed statement): then nothing
        was stored, unambiguously.
        """
        status = await self.conn.execute("COMMIT", timeout=self.timeout_s)
        if status != "COMMIT":
            raise CommitRolledBackError(
                f"COMMIT answered {status!r}: the transaction had been aborted and nothing was stored"
            )
        self.committed = True


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
