"""The sequencer role: one transaction holding the log_state row lock, and the
writes one batch makes in it (Store.sequencing). The numbered protocol of a
batch, which these steps serve, is told in write/sequencer.py.

The transaction's contract:
* atomic: a batch's leaves, tiles, fleet heads, checkpoint and the log_state
  update are one statement in one transaction, stored together or not at all;
* nothing is stored unless the block calls commit(): returning or raising
  without it rolls back (an early return stores nothing);
* durable when commit() returns (synchronous_commit is forced on for this
  transaction, whatever the server's default); the sequencer resolves no
  submitter's future before that (Tessera's rule for its storage drivers too);
* a commit() that raises CommitRolledBackError stored nothing, unambiguously;
  any other failure of commit() (the connection dropped with the COMMIT in
  flight, a timeout) is ambiguous: the batch may or may not be stored. The
  caller must then answer "not acknowledged" (a retry is safe: the duplicate
  check answers it if it was stored) and must not trust what it knows of the
  log's size: the next batch reads it again under the lock.
Every failure before commit() is unambiguous: nothing of the batch is stored.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence

import asyncpg

from . import _queries
from .errors import CommitRolledBackError, ConcurrentUpdateError, StorageError
from .rows import CheckpointRow, ExistingEntry, FleetHead, HeadsSnapshot, NewLeaf, Prefetch, Prefetched, TileKey

_SNAPSHOT = (
    f"SELECT {_queries.LATEST_COLUMNS}, "
    "ARRAY(SELECT ROW(t.level, t.idx, t.hashes) FROM tiles t "
    "      JOIN unnest($2::smallint[], $3::bigint[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx "
    "      WHERE s.tree_size = $1) AS tiles, "
    "ARRAY(SELECT ROW(l.fleet_id, l.sequence, l.idx, l.leaf_hash, l.payload_digest) FROM leaves l "
    "      JOIN unnest($4::text[], $5::bigint[]) AS k(fleet_id, sequence) "
    "      ON l.fleet_id = k.fleet_id AND l.sequence = k.sequence) AS entries, "
    "ARRAY(SELECT ROW(f.fleet_id, f.sequence, f.retired) FROM fleets f WHERE f.fleet_id = ANY($6::text[])) AS fleets "
    "FROM log_state s"
)

_APPEND = (
    "WITH new_leaves AS ("
    "  INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, integrated_at, kind) "
    "  SELECT i, h, l, f, s, d, $7, k FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[], "
    "                                         $5::bigint[], $6::bytea[], $20::smallint[]) AS u(i, h, l, f, s, d, k)), "
    "new_tiles AS ("
    "  INSERT INTO tiles (level, idx, hashes) "
    "  SELECT * FROM unnest($8::smallint[], $9::bigint[], $10::bytea[]) "
    "  ON CONFLICT (level, idx) DO UPDATE SET hashes = EXCLUDED.hashes), "
    "new_heads AS ("
    "  INSERT INTO fleets (fleet_id, sequence, idx, retired, first_idx) "
    "  SELECT * FROM unnest($11::text[], $12::bigint[], $13::bigint[], $21::boolean[], $22::bigint[]) "
    "  ON CONFLICT (fleet_id) DO UPDATE SET sequence = EXCLUDED.sequence, idx = EXCLUDED.idx, "
    "                                       retired = EXCLUDED.retired), "
    "new_checkpoint AS ("
    "  INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($14, $15, $16, $17) RETURNING id) "
    "UPDATE log_state SET tree_size = $14, root = $15, checkpoint_id = (SELECT id FROM new_checkpoint), "
    "                     signed_at_ms = $16, note = $17 "
    "WHERE tree_size = $18 AND checkpoint_id = $19 "
    "RETURNING checkpoint_id"
)

# The heads table's rows (each fleet's newest bundle) in the heads tree's order, the order their
# fleets first appeared (migration 0008), and the newest HEADS leaf: its index and bytes.
_HEADS = (
    "SELECT ARRAY(SELECT ROW(f.fleet_id, f.sequence, f.idx, l.leaf_hash, f.retired) "
    "             FROM fleets f JOIN leaves l ON l.idx = f.idx ORDER BY f.first_idx) AS rows, "
    "       h.idx AS last_heads, h.leaf AS last_heads_leaf "
    "FROM (SELECT 1) AS one LEFT JOIN "
    "     (SELECT idx, leaf FROM leaves WHERE kind = 2 ORDER BY idx DESC LIMIT 1) AS h ON true"
)

# An idle re-sign (the size did not change): only the log_state slot moves; no
# row is stored (migrations/0003_checkpoint_slot.sql).
_RESIGN = (
    "UPDATE log_state SET signed_at_ms = $1, note = $2 "
    "WHERE tree_size = $3 AND checkpoint_id = $4 "
    "RETURNING checkpoint_id"
)


class SequencingTransaction:
    """The reads and writes of one batch, inside the locked transaction of Store.sequencing.

    Implements the seam's Sequencing protocol (storage/protocols.py).
    """

    def __init__(self, conn: asyncpg.Connection, latest: CheckpointRow, prefetched: Prefetched,
                 timeout_s: float = 6.0):
        self.conn = conn
        self.latest = latest  # the checkpoint log_state pointed at when the lock was taken
        self.prefetched = prefetched  # read in the same statement as `latest`
        self.timeout_s = timeout_s  # client-side bound on each statement
        self.committed = False

    @classmethod
    async def start(cls, conn: asyncpg.Connection, prefetch: Prefetch | None,
                    timeout_s: float) -> SequencingTransaction:
        """Read the snapshot (step 2): the latest checkpoint and what `prefetch` asks
        for, in one statement under the lock. Writes nothing."""
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
        latest = _queries.checkpoint_row(row)
        prefetched = Prefetched(
            tiles={(lv, ix): bytes(h) for lv, ix, h in row["tiles"]} if latest.tree_size == p.tree_size else None,
            entries={(f, s): ExistingEntry(i, bytes(h), bytes(d)) for f, s, i, h, d in row["entries"]},
            fleet_sequences={f: s for f, s, _ in row["fleets"]},
            retired=frozenset(f for f, _, retired in row["fleets"] if retired),
        )
        return cls(conn, latest, prefetched, timeout_s)

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        """Stored tiles as this transaction sees them (the committed state it locked).
        Writes nothing; a failure aborts nothing that was stored."""
        return await _queries.read_tiles(self.conn, keys, self.timeout_s)

    async def read_heads(self) -> HeadsSnapshot:
        """Every fleet's head with its leaf hash, and the newest HEADS leaf's index (0 if
        none) and bytes (None if none), as this transaction sees them. Writes nothing."""
        row = await self.conn.fetchrow(_HEADS, timeout=self.timeout_s)
        rows = [(f, s, i, bytes(h), r) for f, s, i, h, r in row["rows"]]
        leaf = row["last_heads_leaf"]
        return HeadsSnapshot(rows, row["last_heads"] or 0, None if leaf is None else bytes(leaf))

    async def append(
        self,
        leaves: Sequence[NewLeaf],
        tiles: dict[TileKey, bytes],
        fleets: dict[str, FleetHead],
        new_size: int,
        new_root: bytes,
        note: str,
        signed_at_ms: int,
        integrated_at: dt.datetime,
    ) -> CheckpointRow:
        """Add a batch: its leaves, grown tiles, fleet heads and the checkpoint that covers it.

        A checkpoint row is stored only when the size changes. With no leaves and
        the size unchanged (an idle re-sign) only the latest signature in
        log_state moves; the returned row keeps the id of the stored row of that
        size, with the new time and note.

        One statement (data-modifying CTEs), atomic. `fleets` maps fleet_id to its
        new head; `leaves` ends with the batch's HEADS leaf (a NewLeaf without a
        fleet). The log_state update is a compare-and-swap on the size and
        checkpoint seen when the lock was taken; if it does not match (it
        cannot while the lock is held, so this is a loud invariant check)
        ConcurrentUpdateError is raised. Nothing is durable before commit(); a
        failure here stores nothing (the transaction is aborted and will not
        commit).
        """
        old = self.latest
        if leaves and (leaves[0].idx != old.tree_size or leaves[-1].idx != new_size - 1):
            raise AssertionError(
                f"batch covers {leaves[0].idx}..{leaves[-1].idx}, want {old.tree_size}..{new_size - 1}"
            )
        if new_size == old.tree_size:
            if leaves or fleets or new_root != old.root:
                raise AssertionError(f"a re-sign of size {new_size} appends {len(leaves)} leaves, "
                                     f"{len(fleets)} fleet heads, root {new_root.hex()} (want {old.root.hex()})")
            cp_id = await self.conn.fetchval(_RESIGN, signed_at_ms, note, old.tree_size, old.id,
                                             timeout=self.timeout_s)
            if cp_id is None:
                raise ConcurrentUpdateError(
                    f"log_state moved under the sequencer lock (expected size {old.tree_size}, checkpoint {old.id})"
                )
            return CheckpointRow(cp_id, new_size, new_root, signed_at_ms, note)
        tile_keys = list(tiles)
        fleet_ids = list(fleets)
        # first_idx (migration 0008) is the index of the fleet's first bundle, which is
        # the heads tree's order: for a fleet new in this batch, its first leaf here,
        # not its head (a batch may hold several of its bundles, and another new fleet's
        # between them). A known fleet's row keeps its stored first_idx (ON CONFLICT
        # leaves the column alone; the fleets_forward trigger refuses changing it).
        first: dict[str, int] = {}
        for x in leaves:
            if x.fleet_id is not None:
                first.setdefault(x.fleet_id, x.idx)
        if missing := [f for f in fleet_ids if f not in first]:
            raise AssertionError(f"fleet heads of {missing[:5]}: got no bundle of theirs in the batch, want one each")
        cp_id = await self.conn.fetchval(
            _APPEND,
            [x.idx for x in leaves], [x.leaf_hash for x in leaves], [x.leaf for x in leaves],
            [x.fleet_id for x in leaves], [x.sequence for x in leaves], [x.payload_digest for x in leaves],
            integrated_at,
            [k[0] for k in tile_keys], [k[1] for k in tile_keys], [tiles[k] for k in tile_keys],
            fleet_ids, [fleets[f].sequence for f in fleet_ids], [fleets[f].idx for f in fleet_ids],
            new_size, new_root, signed_at_ms, note, old.tree_size, old.id,
            [x.kind for x in leaves], [fleets[f].retired for f in fleet_ids], [first[f] for f in fleet_ids],
            timeout=self.timeout_s,
        )
        if cp_id is None:
            raise ConcurrentUpdateError(
                f"log_state moved under the sequencer lock (expected size {old.tree_size}, checkpoint {old.id})"
            )
        return CheckpointRow(cp_id, new_size, new_root, signed_at_ms, note)

    async def commit(self) -> None:
        """COMMIT: durable when it returns.

        Raises CommitRolledBackError when PostgreSQL rolled the transaction back
        instead (it had been aborted by an earlier failed statement): then nothing
        was stored, unambiguously. Any other error is ambiguous: the batch may or
        may not be stored (module docstring).
        """
        # With a synchronous standby (docs/operations.md, "Failover") the COMMIT waits
        # until the standby has flushed the commit record, and while it waits the
        # transaction is still invisible to other sessions and holds the role. If that
        # wait is *cancelled* (statement_timeout, or a cancel request, which is what an
        # asyncpg timeout sends), PostgreSQL only warns ("canceling wait for synchronous
        # replication ... already committed locally") and answers COMMIT: the batch
        # would be acknowledged, and become visible, on the primary's disk alone, and a
        # failover would lose it and sign another root for its size. So the COMMIT runs
        # without statement_timeout, and past the client-side bound the connection is
        # closed without a cancel request: the backend keeps waiting (holding the role,
        # so nothing else commits) until the standby confirms, and this batch is
        # ambiguous (503; a retry is answered as a duplicate once it is visible).
        pending = asyncio.ensure_future(self.conn.execute(
            "SET LOCAL statement_timeout = 0; COMMIT", timeout=self.timeout_s + _NEVER_CANCEL_S))
        pending.add_done_callback(_retrieve)
        try:
            status = await asyncio.wait_for(asyncio.shield(pending), self.timeout_s)
        except asyncpg.InFailedSQLTransactionError:
            # The SET was refused: the transaction had been aborted by an earlier failed
            # statement, and the COMMIT after it was not run. Nothing was stored.
            status = "ROLLBACK"
        except BaseException:  # the bound passed, or this task was cancelled (a shutdown)
            if not pending.done():
                self.conn.terminate()
            raise
        if status != "COMMIT":
            raise CommitRolledBackError(
                f"COMMIT answered {status!r}: the transaction had been aborted and nothing was stored"
            )
        self.committed = True


# asyncpg's own timeout on the COMMIT sends a cancel request when it fires; it is set this
# much beyond the bound at which commit() closes the connection instead, so it never fires.
_NEVER_CANCEL_S = 3600.0


def _retrieve(fut: asyncio.Future) -> None:
    """Mark the outcome of a COMMIT abandoned at its bound as seen (no "never retrieved" noise)."""
    if not fut.cancelled():
        fut.exception()


@contextlib.asynccontextmanager
async def sequencing(
    pool: asyncpg.Pool, releasing: set[asyncio.Future], lock_timeout_ms: int, stall_timeout_ms: int = 5_000,
    prefetch: Prefetch | None = None,
) -> AsyncIterator[SequencingTransaction]:
    """A transaction holding the log_state row lock: the sequencer role (steps 1-2).

    Only one transaction at a time can hold it, across every process sharing
    the database; another waits up to `lock_timeout_ms` and then fails with
    asyncpg.LockNotAvailableError. Everything done through the yielded object
    is stored atomically at `tx.commit()`, durable when it returns; a block
    that leaves without committing (returning or raising) is rolled back. If
    the COMMIT itself fails ambiguously (the connection dropped), the batch may
    or may not be stored: see the module docstring. A failure while taking the
    role or reading the snapshot stores nothing.

    A holder that stalls cannot keep the role: PostgreSQL itself ends the
    transaction, releasing the lock to the next waiter, when the holder leaves
    it idle for `stall_timeout_ms` (idle_in_transaction_session_timeout: a
    frozen or stopped process, a lost host; the session is terminated) or when
    one of its statements before the COMMIT runs that long (statement_timeout;
    the COMMIT is exempt: see SequencingTransaction.commit). The stalled
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
    conn = await pool.acquire()
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
    finally:
        try:
            # Rolled back unless committed. A COMMIT that returned is final, even if
            # the block raised afterwards (post-commit work): nothing to roll back.
            if (tx is None or not tx.committed) and not conn.is_closed():
                with contextlib.suppress(Exception):  # the pool closes a connection it cannot reset
                    await conn.execute("ROLLBACK", timeout=client_timeout)
        except asyncio.CancelledError:
            # Cancelled during the ROLLBACK (a shutdown): the connection's state is
            # unknown, so it is closed rather than reused; the transaction ends with it.
            # Without this the connection was never released and the pool's close()
            # waited for it forever.
            conn.terminate()
            raise
        finally:
            # Returning the connection costs a round trip (the pool resets it); the
            # next batch need not wait for it, it takes another connection.
            # Bounded: a reset that does not finish in time terminates the connection
            # (asyncpg), rather than leaving this task and the connection hanging.
            release = asyncio.ensure_future(pool.release(conn, timeout=client_timeout))
            releasing.add(release)
            release.add_done_callback(releasing.discard)
