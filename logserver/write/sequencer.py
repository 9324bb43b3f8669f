"""The sequencer: group-commit integration of verified bundles into the tree.

Submissions are pooled in a bounded in-memory queue. One task per process takes
everything pending (up to `max_batch_size`) and integrates it in ONE database
transaction that holds the sequencer role. This is the whole story of when an
entry is durable, signed and answered; `integrate` marks each step with its
number ("# [n]"). Storage is reached only through the seam's protocols
(storage/protocols.py), whose contracts (atomic, durable on return, ambiguous
failure) are told in storage/sequencing.py.

 0. DROP the entries whose submitter gave up (its future is done: a commit
    deadline, write/deadlines.py).
 1. LOCK. Store.sequencing takes the log_state row lock: the sequencer role,
    exclusive across every process sharing the database. A holder that stalls
    loses it after `stall_timeout_ms` (PostgreSQL ends its transaction).
 2. SNAPSHOT. One read under the lock: the latest checkpoint and, prefetched,
    the frontier tiles (when the log is at the size this process last left it),
    the batch's existing entries and its fleets' heads. An empty batch ends here
    unless the checkpoint is old (then it is re-signed).
 3. PRE-SIGN CHECK. The frontier is rebuilt from the *stored* tiles (read now if
    they were not prefetched) and must reproduce the signed root
    (integrity/frontier.py, the start-up check too). If not, the sequencer halts:
    it signs nothing more, so a corrupted tile or a database that moved
    underneath stops the log instead of extending a wrong tree.
 4. CLASSIFY (write/classify.py, pure): new, duplicate, rollback or
    equivocation, in arrival order. A batch with nothing new is answered here and
    ends like an empty one: no checkpoint unless the latest is old, so replays of
    logged envelopes cost no signature, no row and no witness request.
 5. HASH. The new bundles, then the batch's HEADS leaf (docs/fleet-heads.md): it
    commits to the heads table after the batch (every fleet's newest bundle, in
    this process's memory, read again under the lock whenever the log is not at
    the size this process left it), so the last leaf of every checkpoint is a
    HEADS leaf. They extend the frontier; the tiles they grow and the new root
    follow.
 6. SIGN the checkpoint (new size, new root) at max(now, last + 1 ms). The
    signature exists only in this process's memory.
 7. WRITE. One statement: leaves, tiles, fleet heads, the checkpoint, and a
    compare-and-swap of log_state. Still nothing durable. A checkpoint row is
    stored only when the size grows; an idle re-sign (same size) updates only
    the latest signature in log_state, so an idle log stores no rows (issue 23,
    docs/reliability.md).
    Until here, a failure or a crash leaves nothing behind: the transaction is
    rolled back (by the block, or by PostgreSQL when the connection goes), the
    submitters get 503 and their retries are appended as if new. What was signed
    in step 6 is never stored or served.
 8. COMMIT. When it returns, the batch and its checkpoint are durable. At this
    point, if we were to crash, recovery would be clean: the next batch, in
    this or another process, starts from this state, and a retry is answered as
    a duplicate with its receipt. If the COMMIT raises, the outcome is
    ambiguous: the batch may or may not be stored. Its submitters get 503 (not
    acknowledged, never a receipt for what may not exist); a retry is appended
    or is a duplicate, whichever is true; this process forgets the size it
    knew, so the next batch reads its frontier from the database.
    From here on nothing may fail the batch: it is stored.
 9. PUBLISH TO STATIC TARGETS (logserver/publish/; docs/deployment.md). The batch
    only wakes the static publisher: submitters never wait for a target, so a 201
    still means durable in PostgreSQL, and a target that is down costs them
    nothing. The publisher's task, one per target, takes the checkpoint the log
    serves (the witness-cosigned one under a witness policy: published after this
    COMMIT, so never ahead of the database) and, in order:
    9.1 READ the target's checkpoint. It must be this log's, signed by its key,
        with the root the database has for its size; anything else HALTS
        publishing to that target (a metric, a critical log line, /readyz).
        Its size is where this pass starts: a wiped target is refilled from 0.
    9.2 OBJECTS. Every hash tile and entry bundle of the new size that the
        target's size lacks (merkle.tiles_between), each created once with a
        conditional create: the same bytes already there are a retry (success),
        other bytes HALT naming the object, which is never overwritten. Then
        the fleet-head proofs due (`fleet-head/<fleet_id>`, docs/fleet-heads.md,
        "Static publication"): mutable objects, replaced whole, not part of the
        tree; before the checkpoint, so none is older than a checkpoint that
        changed its fleet.
    9.3 SYNC. Every object is durable (a directory's entries fsynced; an S3 PUT
        that returned). At this point every object the new checkpoint needs is
        on the target: a crash after this leaves only a pass to redo.
    9.4 CHECKPOINT, last: the readers' commit point. Replaced only if it is still
        what 9.1 read (S3 If-Match on its ETag; a directory's flock and re-read),
        so several publishers (processes, hosts, a failover) only ever move it
        forward: never to a smaller size, never to another root for a size. A
        lost race goes back to 9.1.
    9.5 RECORD the target's progress in PostgreSQL (publication_progress,
        forward-only): lag metrics, /readyz and `fsck --target` read it.
    A failure anywhere in 9 (the target or the database down, a crash, kill -9)
    leaves the target serving a checkpoint whose objects are all there; the pass
    is retried with back-off, by this process or the next, and every step is
    idempotent.
10. PUBLISH LOCALLY. `on_commit` feeds the reader's caches, the checkpoint file
    and the witness publisher. Its failure is logged; they catch up from the
    database.
11. ANSWER. Each submitter's future gets its Appended (with an inclusion proof
    at the new checkpoint) or Duplicate or refusal; if a receipt cannot be built,
    503 saying the entry was stored (a retry gets it as a duplicate). Then the
    transaction's connection goes back to the pool.

Fork-proofing, in depth: the row lock makes the role exclusive and the
log_state update is also a compare-and-swap on its size (step 7); the pre-sign
check (step 3) refuses to sign over a frontier that does not reproduce the
signed root; the schema refuses a second root (or row) for a signed size, any
change to leaves or checkpoints, and a log_state that goes back or names another
root than its size's row (migrations/0001_log.sql, 0003_checkpoint_slot.sql).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..bundle.heads import HeadsError, HeadsRow, HeadsTable, decode_heads_leaf
from ..bundle.payload import ACTIVE, RETIRED
from ..integrity.frontier import Frontier, FrontierError, check_frontier, frontier_tile_keys
from ..merkle import frontier_ids, inclusion_proof, leaf_hash
from ..merkle.tiles import TILE_HEIGHT, append_to_tiles
from ..storage import (
    DATABASE_UNAVAILABLE,
    CheckpointRow,
    HeadsSnapshot,
    LogStore,
    NewLeaf,
    Prefetch,
    Sequencing,
    TileKey,
)
from .classify import classify
from .outcomes import (
    Appended,
    BatchOutcome,
    DatabaseUnavailableError,
    IntegrityError,
    OverloadedError,
    Pending,
    ReceiptUnavailableError,
    SequencerError,
    UnavailableError,
)

log = logging.getLogger(__name__)


@dataclass
class SequencerStats:
    """Hooks for metrics; the API layer plugs Prometheus in here."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_equivocation: Callable[[str, int, bytes, bytes], None] = lambda f, s, old, new: None


class Sequencer:
    # Benchmark-only (bench/heads.py, the A/B of submissions with HEADS leaves on and
    # off): False skips step 5's HEADS leaf, the log of releases before it. Private on
    # purpose, never a configuration key: a log without HEADS leaves gives clients no
    # fleet-head proofs, and a log that stops writing them trips every monitor
    # (heads_missing). Only bench/heads_off.py sets it, in a process of its own.
    _heads_leaves = True

    def __init__(
        self,
        store: LogStore,
        sign_checkpoint: Callable[[int, bytes, int], str],
        *,
        max_batch_size: int = 1024,
        max_batch_delay_ms: float = 5.0,
        max_pending: int = 20_000,
        checkpoint_interval_s: float = 5.0,
        lock_timeout_ms: int = 5_000,
        stall_timeout_ms: int = 5_000,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[CheckpointRow, dict[tuple[int, int], bytes]], None] = lambda cp, tiles: None,
        publish_static: Callable[[], None] | None = None,
        stats: SequencerStats | None = None,
        arriving: Callable[[], int] = lambda: 0,
    ):
        """`sign_checkpoint(size, root, signed_at_ms) -> note text` signs with the log key.

        `on_commit(checkpoint, tiles)` is called after each commit with the new
        checkpoint and the tile data written (it must not block: it runs on the
        event loop). `clock` returns POSIX seconds;
        it is injectable so tests can step it backwards.

        `arriving()` says how many submissions are on their way to `submit` (being
        checked by admission). A batch waits up to `max_batch_delay_ms` to fill, but
        only while some are: waiting when nothing is coming only adds latency.
        """
        self.store = store
        self.sign_checkpoint = sign_checkpoint
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000
        self.max_pending = max_pending
        self.checkpoint_interval = checkpoint_interval_s
        self.lock_timeout_ms = lock_timeout_ms
        self.stall_timeout_ms = stall_timeout_ms
        self.clock = clock
        self.on_commit = on_commit
        self.publish_static = publish_static
        self.stats = stats or SequencerStats()
        self.arriving = arriving
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self.halted: str | None = None  # set when the pre-sign check fails; signing stops
        # The tree size after this process's last commit: the first read of the next
        # batch prefetches the frontier tiles for it (None: unknown, read them after).
        self._known_size: int | None = None
        # The heads table after the leaves of tree size _heads_size, and the index of
        # its HEADS leaf (0: none yet). None: unknown, read again under the lock.
        self._heads: HeadsTable | None = None
        self._heads_size: int | None = None
        self._heads_previous = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, leaf: bytes, leaf_hash: bytes, fleet_id: str, sequence: int,
               payload_digest: bytes, *, retired: bool = False) -> asyncio.Future:
        """Queue a verified entry; the future resolves to Appended or Duplicate, or raises.

        Raises OverloadedError at once when the queue is full, and IntegrityError
        when the sequencer has halted.
        """
        if self.halted:
            raise IntegrityError(self.halted)
        if len(self._queue) >= self.max_pending:
            raise OverloadedError(f"{len(self._queue)} submissions are already pending; retry later")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(leaf, leaf_hash, fleet_id, sequence, payload_digest, fut, retired))
        self._wakeup.set()
        return fut

    async def run(self) -> None:
        """Integrate batches until cancelled. Failures fail their batch, never the loop."""
        while True:
            batch = await self._next_batch()
            try:
                await self.integrate(batch)
            except asyncio.CancelledError:
                _fail(batch, UnavailableError("the server is shutting down"))
                raise
            except IntegrityError as e:
                self.halted = str(e)
                log.critical("sequencer halted, refusing to sign: %s", e)
                _fail(batch, e)
                _fail(self._drain(), e)
            except SequencerError as e:
                _fail(batch, e)
            except Exception as e:  # database outage, lock timeout, ...
                log.warning("batch of %d failed: %r", len(batch), e)
                error_class = DatabaseUnavailableError if isinstance(e, DATABASE_UNAVAILABLE) else UnavailableError
                _fail(batch, error_class("the log database is unavailable; retry later (retries are idempotent)"))
                await asyncio.sleep(0.1)

    def _drain(self) -> list[Pending]:
        items = list(self._queue)
        self._queue.clear()
        return items

    async def _next_batch(self) -> list[Pending]:
        if not self._queue:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.checkpoint_interval)
            except TimeoutError:
                return []  # idle: integrate() re-signs if the checkpoint got old
        if self.max_batch_delay:
            await self._fill(asyncio.get_running_loop().time() + self.max_batch_delay)
        n = min(len(self._queue), self.max_batch_size)
        return [self._queue.popleft() for _ in range(n)]

    async def _fill(self, deadline: float) -> None:
        """Wait until the batch is full, nothing more is arriving, or `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        while len(self._queue) < self.max_batch_size and self.arriving() > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()  # submit() sets it
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def integrate(self, batch: list[Pending], *, with_proofs: bool = True) -> CheckpointRow | None:
        """Append `batch` (possibly empty) in one transaction and sign a checkpoint:
        steps 0-11 of the module docstring.

        With an empty batch a checkpoint is signed only if the latest is older
        than the checkpoint interval. Returns the new checkpoint, or None if none
        was signed. Resolves each pending future after the commit, with an
        inclusion proof unless `with_proofs` is false (the benchmark's bulk loader,
        which integrates millions of synthetic leaves and reads no receipts).
        """
        if self.halted:
            raise IntegrityError(self.halted)
        batch = [p for p in batch if not p.future.done()]  # [0]
        started = time.perf_counter()
        known = self._known_size
        prefetch = Prefetch(
            -1 if known is None else known,
            tiles=[] if known is None else frontier_tile_keys(known),
            entries=[(p.fleet_id, p.sequence) for p in batch],
            fleet_ids=[p.fleet_id for p in batch],
        )
        # [1] LOCK and [2] SNAPSHOT: entering the block.
        async with self.store.sequencing(self.lock_timeout_ms, self.stall_timeout_ms, prefetch) as tx:
            old = tx.latest
            self._known_size = old.tree_size
            now_ms = int(self.clock() * 1000)
            interval_ms = self.checkpoint_interval * 1000
            # Idle: re-sign only when the latest checkpoint is old (maybe signed by
            # another process). A clock far behind the last signing time cannot tell
            # age, so it signs too (the time then advances by 1 ms, see below).
            # Returning without a commit rolls the (read-only) transaction back.
            if not batch and 0 <= now_ms - old.signed_at_ms < interval_ms:
                return None
            prefetched = tx.prefetched

            # [3] PRE-SIGN CHECK
            stored = prefetched.tiles
            if stored is None:  # the log was not at the size this process last left it
                stored = await tx.read_tiles(frontier_tile_keys(old.tree_size))
            try:
                frontier = check_frontier(old.tree_size, old.root, stored, checkpoint="last signed checkpoint")
            except FrontierError as e:
                raise IntegrityError(f"{e}; storage is corrupted or was changed") from None

            # [4] CLASSIFY
            classified = classify(batch, old.tree_size, prefetched.entries, prefetched.fleet_sequences,
                                  prefetched.retired)
            for eq in classified.equivocations:
                self._equivocation(eq.pending, eq.logged_digest)
            accepted = classified.accepted
            if not accepted and 0 <= now_ms - old.signed_at_ms < interval_ms:
                # Nothing to append (duplicates and refusals only): an idle tick. Logged
                # envelopes are public, so replaying them must not make the log sign,
                # store a checkpoint and ask its witnesses each time (issue 23: ~274
                # rows/s from one client). Every outcome refers to committed entries
                # (read under the lock), so it is answered now; the transaction wrote
                # nothing and is rolled back.
                self._answer(classified.outcomes, old, {}, with_proofs)
                return None

            # [5] HASH: the bundles, then the HEADS leaf that ends the batch.
            hashes = [p.leaf_hash for p in accepted]
            heads_index = old.tree_size + len(accepted)
            # An idle re-sign (nothing accepted) changes no head and needs no HEADS leaf
            # (docs/fleet-heads.md, "Invariant"): the size and the last leaf stay.
            heads = await self._heads_leaf(tx, accepted) if self._heads_leaves and accepted else None
            grown = grow(frontier, hashes if heads is None else [*hashes, leaf_hash(heads)])

            # [6] SIGN. Times only move forward, even when the clock steps back.
            signed_at_ms = max(now_ms, old.signed_at_ms + 1)
            note = self.sign_checkpoint(grown.size, grown.root, signed_at_ms)
            # From here to the COMMIT a failure, or a crash, leaves nothing behind: the
            # transaction is rolled back and this signature is never stored or served.

            # [7] WRITE
            leaves = [
                NewLeaf(old.tree_size + i, p.leaf_hash, p.leaf, p.fleet_id, p.sequence, p.payload_digest)
                for i, p in enumerate(accepted)
            ]
            if heads is not None:
                leaves.append(NewLeaf(heads_index, leaf_hash(heads), heads))
            checkpoint = await tx.append(
                leaves, grown.tiles, classified.fleets, grown.size, grown.root, note, signed_at_ms,
                dt.datetime.fromtimestamp(signed_at_ms / 1000, dt.UTC),
            )

            # [8] COMMIT
            self._known_size = None  # unknown if the COMMIT fails ambiguously
            await tx.commit()
            # At this point the batch and its checkpoint are durable. If we were to
            # crash after this, recovery would be clean: the next batch, here or in
            # another process, starts from this state, and a retry is answered as a
            # duplicate. So nothing below may raise out of this block: the batch would
            # be answered "not stored" (and a committed transaction is not rolled back).
            self._known_size = grown.size
            if heads is not None:
                self._heads_size, self._heads_previous = grown.size, heads_index

            # [9] PUBLISH TO STATIC TARGETS: only a wake-up; the publisher's own task runs 9.1-9.5.
            if self.publish_static is not None:
                try:
                    self.publish_static()
                except Exception:
                    log.error("waking the static publisher failed; it polls, and catches up", exc_info=True)

            # [10] PUBLISH LOCALLY
            try:
                self.on_commit(checkpoint, grown.tiles)
            except Exception:
                # The caches it feeds (the reader's tiles and latest checkpoint, the
                # checkpoint file, the publisher) catch up from the database: the
                # latest-checkpoint poll, the next commit. The next batch reads its
                # frontier from the database rather than trusting this process's state.
                self._known_size = None
                log.critical("after committing checkpoint %d (size %d), the commit hook failed; "
                             "the batch is stored and is answered as such", checkpoint.id, grown.size, exc_info=True)

            # [11] ANSWER, before the connection goes back to the pool (one more round trip).
            self._answer(classified.outcomes, checkpoint, grown.nodes, with_proofs)
        try:
            self.stats.on_batch(len(accepted), time.perf_counter() - started)
        except Exception:
            log.error("batch statistics failed", exc_info=True)
        return checkpoint

    async def _heads_leaf(self, tx: Sequencing, accepted: list[Pending]) -> bytes:
        """The HEADS leaf that ends a batch appending `accepted` (step 5): the heads
        table with their rows applied, kept in memory from batch to batch.

        The table is read again under the lock when this process does not know it at
        the log's size (the first batch; another process appended; a batch that
        failed after the table was updated). Until the COMMIT returns it is ahead of
        the database, so it is marked unknown here and known again after the COMMIT.
        """
        size = tx.latest.tree_size
        if self._heads is None or self._heads_size != size:
            snapshot = await tx.read_heads()
            self._heads = None
            rebuilt = HeadsTable.from_rows(
                HeadsRow(f, s, i, h, RETIRED if retired else ACTIVE) for f, s, i, h, retired in snapshot.rows
            )
            _check_rebuilt(rebuilt, snapshot, size)
            self._heads = rebuilt
            self._heads_previous = snapshot.last_heads_index
        table, self._heads_size = self._heads, None
        try:
            for i, p in enumerate(accepted):
                table.apply(HeadsRow(p.fleet_id, p.sequence, size + i, p.leaf_hash, RETIRED if p.retired else ACTIVE))
        except HeadsError as e:
            # classify() refused what the table refuses, from the same committed state:
            # a disagreement means the stored heads are not what the log holds.
            raise IntegrityError(f"the heads table refuses the batch ({e}); storage is corrupted or was changed") \
                from None
        return table.heads_leaf(self._heads_previous).encode()

    def _equivocation(self, p: Pending, logged_digest: bytes) -> None:
        self.stats.on_equivocation(p.fleet_id, p.sequence, logged_digest, p.payload_digest)
        log.warning(
            "equivocation refused: fleet %s sequence %d is logged with payload digest %s, "
            "submitted payload digest %s",
            p.fleet_id, p.sequence, logged_digest.hex(), p.payload_digest.hex(),
        )

    def _answer(self, outcomes: list[BatchOutcome], checkpoint: CheckpointRow,
                nodes: dict[tuple[int, int], bytes], with_proofs: bool) -> None:
        """Resolve the futures of a committed batch (step 11); never raises."""
        read = lambda ids: [nodes[i] for i in ids]  # noqa: E731
        for p, result in outcomes:
            if p.future.done():
                continue
            try:
                if isinstance(result, Exception):
                    p.future.set_exception(result)
                elif isinstance(result, int):  # appended at this index
                    proof = inclusion_proof(result, checkpoint.tree_size, read) if with_proofs else []
                    p.future.set_result(Appended(result, p.leaf_hash, checkpoint, proof))
                else:
                    p.future.set_result(result)
            except Exception:
                log.critical("entry %s was committed (checkpoint %d, size %d) but its answer could not "
                             "be built", result, checkpoint.id, checkpoint.tree_size, exc_info=True)
                if not p.future.done():
                    p.future.set_exception(ReceiptUnavailableError(
                        f"the entry was stored (tree size {checkpoint.tree_size}), but its receipt could not "
                        "be built; retry to get it (the retry is answered as a duplicate)"
                    ))


@dataclass(frozen=True)
class Grown:
    """The tree after a batch's leaves (step 5)."""

    size: int
    root: bytes
    tiles: dict[TileKey, bytes]  # every tile the batch grew, at its new data
    nodes: dict[tuple[int, int], bytes]  # the frontier's and every new complete node: the batch's proofs


def grow(frontier: Frontier, leaf_hashes: Sequence[bytes]) -> Grown:
    """Extend the checked frontier by `leaf_hashes` (its range is extended in place):
    the new size and root, the grown tiles, and the nodes an inclusion proof of a new
    leaf at the new size reads."""
    cr = frontier.range
    nodes: dict[tuple[int, int], bytes] = dict(zip(frontier_ids(cr.size), cr.hashes, strict=True))
    tile_nodes: list[tuple[int, int, bytes]] = []

    def visit(level: int, index: int, h: bytes) -> None:
        nodes[(level, index)] = h
        if level % TILE_HEIGHT == 0:
            tile_nodes.append((level, index, h))

    cr.extend(leaf_hashes, visit)
    return Grown(cr.size, cr.root(), append_to_tiles(frontier.right_edge, tile_nodes), nodes)


def _fail(batch: list[Pending], error: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)


def _check_rebuilt(table: HeadsTable, snapshot: HeadsSnapshot, size: int) -> None:
    """Before a HEADS leaf is signed over a table rebuilt from the store's rows (step 5),
    check it against the HEADS leaf the log stored at `size - 1`, when that is the last
    leaf: the same count and root (the chained root, or for release 0.2.0's type-2 leaf
    the sorted one, docs/fleet-heads.md). Rows in another order than the fleets' first
    appearance (a `fleets.first_idx` changed by hand or by a bug), a missing or stale
    row, would otherwise be signed into the log, a HEADS leaf every monitor reports
    (docs/fleet-heads.md, "Soundness"). The reader makes the same check before it serves
    a proof (read/heads_reader.py). Raises IntegrityError: the sequencer halts."""
    if snapshot.last_heads_leaf is None or snapshot.last_heads_index != size - 1:
        return  # the log ends with a bundle (it predates HEADS leaves): nothing to compare
    try:
        stored = decode_heads_leaf(snapshot.last_heads_leaf)
    except HeadsError as e:
        raise IntegrityError(f"the HEADS leaf stored at {size - 1} does not decode ({e}); storage is corrupted or "
                             "was changed") from None
    want = table.heads_leaf(stored.previous, stored.layout).root
    if (stored.count, stored.root) != (table.count, want):
        raise IntegrityError(
            f"the heads table rebuilt from the stored fleets: got count {table.count}, root {want.hex()}; want the "
            f"HEADS leaf stored at {size - 1} (type {stored.layout}): count {stored.count}, root {stored.root.hex()}; "
            "storage is corrupted or was changed (fleets.first_idx, migration 0008)")
