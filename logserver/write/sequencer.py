"""The sequencer: group-commit integration of verified bundles into the tree.

Submissions are pooled in a bounded in-memory queue. One task per process takes
everything pending (up to `max_batch_size`) and integrates it in ONE database
transaction that holds the log_state row lock: its leaves, the hash tiles they
grow, the fleets' new heads and the checkpoint that covers them. Only after that
transaction has committed are the submitters answered, so an acknowledged entry
is durable and covered by a signed checkpoint.

Fork-proofing, in depth:
* the row lock makes the sequencer role exclusive across every process sharing
  the database; the log_state update is also a compare-and-swap on its size;
  a holder that stalls (a frozen process, a lost host) loses the role after
  `stall_timeout_ms`: PostgreSQL aborts its transaction (Store.sequencing);
* before signing, the frontier is recomputed from the *stored* tiles and must
  reproduce the root of the last signed checkpoint (the pre-sign check), so a
  corrupted tile or a database that moved underneath stops signing instead of
  extending a wrong tree;
* the schema refuses a second root for a signed size and any change to leaves
  or checkpoints (migrations/0001_log.sql).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..merkle import CompactRange, frontier_ids, inclusion_proof
from ..merkle.tiles import TILE_HEIGHT, append_to_tiles, hashes_from_tiles, tiles_for_nodes
from ..storage import DATABASE_UNAVAILABLE, CheckpointRow, NewLeaf, Prefetch, Prefetched, Store

log = logging.getLogger(__name__)


class SequencerError(Exception):
    """Base for outcomes the HTTP layer turns into error responses."""

    status = 503
    code = "unavailable"


class OverloadedError(SequencerError):
    code = "overloaded"


class UnavailableError(SequencerError):
    code = "unavailable"


class DatabaseUnavailableError(UnavailableError):
    """The batch failed because the database could not be reached (or timed out)."""

    code = "database_unavailable"


class IntegrityError(SequencerError):
    """The pre-sign check failed: stored state does not reproduce the signed tree."""

    code = "integrity_check_failed"


class ReceiptUnavailableError(UnavailableError):
    """The entry was committed, but building its answer failed (a bug, logged).

    Still 503 `unavailable`: a retry is answered as a duplicate, with the
    receipt of the stored entry."""


class RollbackError(SequencerError):
    status = 409
    code = "rollback"


class EquivocationError(SequencerError):
    status = 409
    code = "equivocation"


@dataclass
class Pending:
    """One verified submission waiting for integration."""

    leaf: bytes
    leaf_hash: bytes
    fleet_id: str
    sequence: int
    payload_digest: bytes
    future: asyncio.Future = field(repr=False)


@dataclass(frozen=True)
class Appended:
    """The entry was added by this submission: index, and a proof at `checkpoint`."""

    index: int
    leaf_hash: bytes
    checkpoint: CheckpointRow
    inclusion_proof: list[bytes]


@dataclass(frozen=True)
class Duplicate:
    """An identical payload was already logged at `index` (its leaf may differ in signatures)."""

    index: int
    leaf_hash: bytes


@dataclass
class SequencerStats:
    """Hooks for metrics; the API layer plugs Prometheus in here."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_equivocation: Callable[[str, int, bytes, bytes], None] = lambda f, s, old, new: None


class Sequencer:
    def __init__(
        self,
        store: Store,
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
        self.stats = stats or SequencerStats()
        self.arriving = arriving
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self.halted: str | None = None  # set when the pre-sign check fails; signing stops
        # The tree size after this process's last commit: the first read of the next
        # batch prefetches the frontier tiles for it (None: unknown, read them after).
        self._known_size: int | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, leaf: bytes, leaf_hash: bytes, fleet_id: str, sequence: int, payload_digest: bytes) -> asyncio.Future:
        """Queue a verified entry; the future resolves to Appended or Duplicate, or raises.

        Raises OverloadedError at once when the queue is full, and IntegrityError
        when the sequencer has halted.
        """
        if self.halted:
            raise IntegrityError(self.halted)
        if len(self._queue) >= self.max_pending:
            raise OverloadedError(f"{len(self._queue)} submissions are already pending; retry later")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(leaf, leaf_hash, fleet_id, sequence, payload_digest, fut))
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
            except asyncio.TimeoutError:
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
            except asyncio.TimeoutError:
                return

    async def integrate(self, batch: list[Pending], *, with_proofs: bool = True) -> CheckpointRow | None:
        """Append `batch` (possibly empty) in one transaction and sign a checkpoint.

        With an empty batch a checkpoint is signed only if the latest is older
        than the checkpoint interval. Returns the new checkpoint, or None if none
        was signed. Resolves each pending future after the commit, with an
        inclusion proof unless `with_proofs` is false (the benchmark's bulk loader,
        which integrates millions of synthetic leaves and reads no receipts).
        """
        if self.halted:
            raise IntegrityError(self.halted)
        batch = [p for p in batch if not p.future.done()]  # the submitter gave up
        started = time.perf_counter()
        known = self._known_size
        prefetch = Prefetch(
            -1 if known is None else known,
            tiles=[] if known is None else [(t.level, t.index) for t in tiles_for_nodes(frontier_ids(known), known)],
            entries=[(p.fleet_id, p.sequence) for p in batch],
            fleet_ids=[p.fleet_id for p in batch],
        )
        async with self.store.sequencing(self.lock_timeout_ms, self.stall_timeout_ms, prefetch) as tx:
            old = tx.latest
            self._known_size = old.tree_size
            now_ms = int(self.clock() * 1000)
            interval_ms = self.checkpoint_interval * 1000
            # Idle: re-sign only when the latest checkpoint is old (maybe signed by
            # another process). A clock far behind the last signing time cannot tell
            # age, so it signs too (the time then advances by 1 ms, see below).
            if not batch and 0 <= now_ms - old.signed_at_ms < interval_ms:
                return None
            prefetched = tx.prefetched
            frontier, right_edge = await self._presign_check(tx, old, prefetched.tiles)
            results, accepted, fleets = await self._classify(tx, batch, old.tree_size, prefetched)

            nodes: dict[tuple[int, int], bytes] = dict(zip(frontier_ids(old.tree_size), frontier.hashes))
            tile_nodes: list[tuple[int, int, bytes]] = []

            def visit(level: int, index: int, h: bytes) -> None:
                nodes[(level, index)] = h
                if level % TILE_HEIGHT == 0:
                    tile_nodes.append((level, index, h))

            frontier.extend([p.leaf_hash for p in accepted], visit)
            new_size, new_root = frontier.size, frontier.root()
            tiles = append_to_tiles(right_edge, tile_nodes)
            # Times only move forward, even when the clock steps back.
            signed_at_ms = max(now_ms, old.signed_at_ms + 1)
            note = self.sign_checkpoint(new_size, new_root, signed_at_ms)
            leaves = [
                NewLeaf(old.tree_size + i, p.leaf_hash, p.leaf, p.fleet_id, p.sequence, p.payload_digest)
                for i, p in enumerate(accepted)
            ]
            checkpoint = await tx.append(
                leaves, tiles, fleets, new_size, new_root, note, signed_at_ms,
                dt.datetime.fromtimestamp(signed_at_ms / 1000, dt.timezone.utc),
            )
            self._known_size = None  # unknown if the COMMIT fails ambiguously
            await tx.commit()
            # Committed and durable from here on: nothing below may raise out of this
            # block (the batch would be answered "not stored", and Store.sequencing
            # does not roll back a committed transaction anyway). The submitters are
            # answered before the connection goes back to the pool (one more round trip).
            self._known_size = new_size
            try:
                self.on_commit(checkpoint, tiles)
            except Exception:
                # The caches it feeds (the reader's tiles and latest checkpoint, the
                # checkpoint file, the publisher) catch up from the database: the
                # latest-checkpoint poll, the next commit. The next batch reads its
                # frontier from the database rather than trusting this process's state.
                self._known_size = None
                log.critical("after committing checkpoint %d (size %d), the commit hook failed; "
                             "the batch is stored and is answered as such", checkpoint.id, new_size, exc_info=True)
            self._answer(results, checkpoint, nodes, with_proofs)
        try:
            self.stats.on_batch(len(accepted), time.perf_counter() - started)
        except Exception:
            log.error("batch statistics failed", exc_info=True)
        return checkpoint

    def _answer(self, results, checkpoint: CheckpointRow, nodes: dict[tuple[int, int], bytes],
                with_proofs: bool) -> None:
        """Resolve the futures of a committed batch; never raises."""
        read = lambda ids: [nodes[i] for i in ids]  # noqa: E731
        for p, result in results:
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

    async def _presign_check(self, tx, old: CheckpointRow, prefetched: dict[tuple[int, int], bytes] | None = None,
                             ) -> tuple[CompactRange, dict[tuple[int, int], bytes]]:
        """Rebuild the frontier from stored tiles; it must reproduce the signed root.

        Returns the frontier and the right-edge tiles (trimmed to their width at
        the old size), which the batch then grows. `prefetched` are those tiles
        as read under the lock in the transaction's first read, when the log was
        at the size the sequencer expected.
        """
        ids = frontier_ids(old.tree_size)
        keys = [(t.level, t.index) for t in tiles_for_nodes(ids, old.tree_size)]
        stored = prefetched if prefetched is not None else await tx.read_tiles(keys)
        tiles = {}
        for t in tiles_for_nodes(ids, old.tree_size):
            data = stored.get((t.level, t.index))
            if data is None or len(data) < 32 * t.width:
                raise IntegrityError(
                    f"tile {t.level}/{t.index} is missing or short in storage "
                    f"(got {0 if data is None else len(data) // 32} hashes, want {t.width}) at tree size {old.tree_size}"
                )
            tiles[t] = data
        frontier = CompactRange(old.tree_size, hashes_from_tiles(ids, old.tree_size, tiles))
        root = frontier.root()
        if root != old.root:
            raise IntegrityError(
                f"stored tiles do not reproduce the last signed checkpoint (size {old.tree_size}): "
                f"root got {root.hex()}, want {old.root.hex()}; storage is corrupted or was changed"
            )
        right_edge = {(t.level, t.index): data[: 32 * t.width] for t, data in tiles.items()}
        return frontier, right_edge

    async def _classify(self, tx, batch: list[Pending], first_index: int, prefetched: Prefetched | None = None):
        """Decide, in arrival order, which entries are new, duplicates, rollbacks or equivocations."""
        results: list[tuple[Pending, object]] = []
        accepted: list[Pending] = []
        fleets: dict[str, tuple[int, int]] = {}
        if not batch:
            return results, accepted, fleets
        if prefetched is not None:  # read under the lock, for exactly this batch
            existing, heads = prefetched.entries, prefetched.fleet_sequences
        else:
            existing = await tx.find_entries(list({(p.fleet_id, p.sequence) for p in batch}))
            heads = await tx.fleet_sequences(list({p.fleet_id for p in batch}))
        in_batch: dict[tuple[str, int], tuple[int, Pending]] = {}
        for p in batch:
            key = (p.fleet_id, p.sequence)
            prior = existing.get(key)
            if prior is None and key in in_batch:
                idx, first = in_batch[key]
                prior_digest, prior_hash, prior_idx = first.payload_digest, first.leaf_hash, idx
            elif prior is not None:
                prior_digest, prior_hash, prior_idx = prior.payload_digest, prior.leaf_hash, prior.idx
            else:
                prior_digest = None
            if prior_digest is not None:
                if prior_digest == p.payload_digest:
                    results.append((p, Duplicate(prior_idx, prior_hash)))
                else:
                    self.stats.on_equivocation(p.fleet_id, p.sequence, prior_digest, p.payload_digest)
                    log.warning(
                        "equivocation refused: fleet %s sequence %d is logged with payload digest %s, "
                        "submitted payload digest %s",
                        p.fleet_id, p.sequence, prior_digest.hex(), p.payload_digest.hex(),
                    )
                    results.append((p, EquivocationError(
                        f"fleet {p.fleet_id!r} sequence {p.sequence} is already logged with a different "
                        f"payload (logged digest {prior_digest.hex()}, submitted {p.payload_digest.hex()})"
                    )))
                continue
            head = fleets[p.fleet_id][0] if p.fleet_id in fleets else heads.get(p.fleet_id)
            if head is not None and p.sequence <= head:
                results.append((p, RollbackError(
                    f"fleet {p.fleet_id!r} sequence {p.sequence} is not greater than the latest "
                    f"logged sequence {head}"
                )))
                continue
            idx = first_index + len(accepted)
            accepted.append(p)
            in_batch[key] = (idx, p)
            fleets[p.fleet_id] = (p.sequence, idx)
            results.append((p, idx))
        return results, accepted, fleets


def _fail(batch: list[Pending], error: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)
