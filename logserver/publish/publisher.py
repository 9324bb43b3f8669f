"""The static publisher: step 9 of the sequencer's protocol (logserver/write/sequencer.py).

One task per target. A commit only wakes it: no submission ever waits for a target.
Each pass takes the checkpoint the log serves (`source`: the latest signed one, or the
witness-cosigned one under a witness policy) and runs steps 9.1-9.5 of the protocol.
Every step is idempotent, so a pass that fails anywhere (a target down, the database
down, a crash) is simply run again, by this process or any other: what it already
wrote is found again, byte for byte.

What is on the target is the authority for what a pass must write: it resumes from
the size of the target's own checkpoint (a target that was wiped is refilled from 0),
and that checkpoint must be this log's, and agree with the database, before anything is
written next to it. Progress in PostgreSQL (storage/publication.py) is what metrics,
/readyz and `fsck --target` read.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..formats.checkpoint import open_checkpoint
from ..formats.cosignature import timestamp_of
from ..formats.note import NoteVerifier
from ..keys.log_key import LogKey
from ..merkle import EntriesTileID, TileID, tiles_between
from ..read.heads_reader import HeadsAheadError, HeadsReader, HeadsUnavailableError, NoHeadsLeafError
from ..read.tree_reader import TreeReader
from ..storage import CheckpointRow
from ..storage.publication import PublicationStore, TargetProgress
from .metrics import PublicationMetrics
from .targets import ObjectConflictError, Target, fleet_head_object, tile_object

log = logging.getLogger(__name__)

POLL_S = 0.5          # a pass also starts this often without a wake-up (other processes' checkpoints)
RETRY_MIN_S = 0.5     # after a failed pass, wait this long, doubling up to RETRY_MAX_S
RETRY_MAX_S = 30.0
FAILURE_LOG_S = 300.0  # a target that stays down is logged once, then once per this
MAX_RACES = 8          # lost checkpoint races in a row before the pass gives up (and is retried)
RECHECK_S = 60.0       # an up-to-date target's checkpoint is read again this often: a wiped target is refilled


@dataclass(frozen=True)
class TargetCheckpoint:
    """The checkpoint found on a target, verified."""

    size: int
    root: bytes
    timestamp: int  # the log's own cosignature/v1 time (seconds)


class LogKeyVerifiers:
    """The log's verifiers: its signed-note key and its timestamped cosignature key
    (both Ed25519, both required), and its ML-DSA-44 subtree/v1 key when it has one."""

    def __init__(self, origin: str, note: NoteVerifier, stamp: NoteVerifier, mldsa44: NoteVerifier | None = None):
        self.origin, self.note, self.stamp, self.mldsa44 = origin, note, stamp, mldsa44

    @classmethod
    def of(cls, key: LogKey) -> LogKeyVerifiers:
        note, stamp = key.verifiers()
        return cls(key.origin, note, stamp, key.mldsa44_verifier())

    def open(self, data: bytes) -> TargetCheckpoint:
        """Verify a checkpoint note; raises ValueError-like errors from formats.

        The ML-DSA-44 line is verified when the note has one (C2SP signed-note: every
        signature by a known key must verify, so a corrupted one refuses the note); a
        note without one is accepted, as a checkpoint signed before the log had the
        key is (docs/operations.md, "Adding an ML-DSA-44 key to a log")."""
        known = [self.note, self.stamp] + ([self.mldsa44] if self.mldsa44 is not None else [])
        cp, opened = open_checkpoint(data, known)
        if cp.origin != self.origin:
            raise ValueError(f"origin: got {cp.origin!r}, want {self.origin!r}")
        if opened.signature_by(self.note) is None:
            raise ValueError("no signed-note signature by the log's key")
        stamp = opened.signature_by(self.stamp)
        if stamp is None:
            raise ValueError("no timestamped cosignature by the log's key")
        return TargetCheckpoint(cp.size, cp.root, timestamp_of(stamp.signature))


class TargetPublisher:
    """Publishes the log's static tree to one target."""

    def __init__(self, target: Target, *, reader: TreeReader, progress: PublicationStore,
                 source: Callable[[], CheckpointRow | None], verifiers: LogKeyVerifiers,
                 metrics: PublicationMetrics, concurrency: int = 16, clock: Callable[[], float] = time.time,
                 min_interval_s: float = 0.0, heads: HeadsReader | None = None,
                 heads_interval_s: float = 60.0):
        self.target = target
        self.reader = reader
        self.progress = progress
        self.source = source
        self.verifiers = verifiers
        self.metrics = metrics
        # Zeroes for this target from the start, so that rate() and increase() see the first
        # failure or conflict (deploy/grafana/logserver.json plots them).
        metrics.failures.labels(target.name)
        metrics.conflicts.labels(target.name)
        self.concurrency = concurrency
        self.clock = clock
        # A pass starts at most this often: under load the commits of the interval are
        # coalesced into one pass, whose cost (a checkpoint read, a few objects, the
        # checkpoint, a progress row) then no longer grows with the commit rate.
        self.min_interval_s = min_interval_s
        # Fleet-head proofs (docs/fleet-heads.md, "Static publication"): every fleet's is
        # rewritten at most once per heads_interval_s, when the checkpoint moved; a fleet
        # whose row changed is written at the next pass. None: not published.
        self.heads = heads
        self.heads_interval_s = heads_interval_s
        self._heads_rows: dict[str, tuple[int, int]] = {}  # fleet -> (sequence, leaf index) on the target
        self._heads_full: tuple[int, int] | None = None  # (size, signed_at_ms) of the last full rewrite
        self._heads_full_at = -float("inf")  # time.monotonic() of it
        self._heads_scanned: tuple[int, int] | None = None  # the checkpoint whose changed rows were handled
        self._written: tuple[bytes, TargetCheckpoint] | None = None  # the checkpoint this process last wrote
        self.published: TargetProgress | None = None  # what this process knows is on the target
        self.halted: str | None = None
        self.last_error = ""
        self._behind_since: float | None = None
        self._wake = asyncio.Event()
        self._failing_since: float | None = None
        self._failure_logged = 0.0
        self._checked_at = -RECHECK_S  # time.monotonic() of the last pass that read the target
        name = target.name
        self._objects_created = metrics.objects.labels(name, "created")
        self._objects_existed = metrics.objects.labels(name, "existed")
        self._heads_written = metrics.fleet_heads.labels(name)

    # --- state and metrics ---------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _is_on_target(self, cp: CheckpointRow) -> bool:
        p = self.published
        return p is not None and (p.tree_size, p.signed_at_ms) >= (cp.tree_size, cp.signed_at_ms)

    def lag(self) -> tuple[int, float]:
        """(entries, seconds) the target is behind the checkpoint the log serves."""
        cp = self.source()
        if cp is None or self._is_on_target(cp):
            self._behind_since = None
            return 0, 0.0
        now = self.clock()
        if self._behind_since is None:
            self._behind_since = now
        published = self.published.tree_size if self.published is not None else 0
        return max(0, cp.tree_size - published), max(0.0, now - self._behind_since)

    def update_metrics(self) -> tuple[int, float]:
        entries, seconds = self.lag()
        name = self.target.name
        self.metrics.lag_entries.labels(name).set(entries)
        self.metrics.lag_seconds.labels(name).set(seconds)
        if self.published is not None:
            self.metrics.published_size.labels(name).set(self.published.tree_size)
        self.metrics.halted.labels(name).set(1 if self.halted else 0)
        return entries, seconds

    async def load(self) -> None:
        """What PostgreSQL says is on the target (a hint: each pass reads the target)."""
        self.published = await self.progress.progress(self.target.name)
        self.update_metrics()

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 0.0
        while True:
            if delay:  # after a failed pass: the back-off, whatever wakes us (commits come often)
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            self.update_metrics()
            cp = self.source()
            recheck = time.monotonic() - self._checked_at >= RECHECK_S
            if self.halted or cp is None or (self._is_on_target(cp) and not recheck and not self._heads_due(cp)):
                continue
            started = time.perf_counter()
            try:
                await self.publish(cp)
            except asyncio.CancelledError:
                raise
            except ObjectConflictError as e:
                self._halt(str(e))
                continue
            except Exception as e:
                self.metrics.failures.labels(self.target.name).inc()
                self._failed(e)
                delay = min(RETRY_MAX_S, max(RETRY_MIN_S, delay * 2))
                continue
            self._checked_at = time.monotonic()
            self.metrics.pass_seconds.labels(self.target.name).observe(time.perf_counter() - started)
            if self._failing_since is not None:
                log.warning("publication target %r (%s): publishing again after %.0f s",
                            self.target.name, self.target.describe(), self.clock() - self._failing_since)
            self._failing_since = None
            self.last_error = ""
            delay = 0.0
            self.update_metrics()
            rest = self.min_interval_s - (time.perf_counter() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    def _halt(self, reason: str) -> None:
        self.halted = reason
        self.metrics.conflicts.labels(self.target.name).inc()
        self.metrics.halted.labels(self.target.name).set(1)
        log.critical("publication to target %r (%s) HALTED: %s. Nothing on it is overwritten; the log "
                     "goes on accepting submissions. Run `logserver fsck --target %s`, repair the target, "
                     "then restart the server", self.target.name, self.target.describe(), reason, self.target.name)

    def _failed(self, e: Exception) -> None:
        now = self.clock()
        self.last_error = f"{type(e).__name__}: {e}"[:300]
        if self._failing_since is None:
            self._failing_since = self._failure_logged = now
            log.warning("publication target %r (%s): publishing failed: %s (retried with back-off; "
                        "logged again every %.0f s while it lasts)", self.target.name, self.target.describe(),
                        self.last_error, FAILURE_LOG_S)
        elif now - self._failure_logged >= FAILURE_LOG_S:
            self._failure_logged = now
            log.warning("publication target %r: still failing after %.0f s: %s",
                        self.target.name, now - self._failing_since, self.last_error)

    # --- one pass: steps 9.1-9.5 ---------------------------------------------------------

    async def publish(self, cp: CheckpointRow) -> None:
        """Publish `cp` with every object it needs; see the sequencer's step 9."""
        note = cp.note.encode()
        for _ in range(MAX_RACES):
            # [9.1] READ the target's checkpoint; it decides where this pass starts.
            data, version = await self.target.read_checkpoint()
            base = 0
            if data is not None:
                current = await self._check_current(data)
                as_fresh = data == note or current.timestamp >= cp.signed_at_ms // 1000
                if current.size > cp.tree_size or (current.size == cp.tree_size and as_fresh):
                    # The target is as new (another publisher, or an earlier pass): nothing to write.
                    self.metrics.checkpoints.labels(self.target.name, "current").inc()
                    if current.size == cp.tree_size:
                        if await self._publish_heads(cp):
                            await self.target.sync()
                        await self._record(cp, max(cp.signed_at_ms, current.timestamp * 1000))
                    else:
                        self.published = TargetProgress(self.target.name, current.size, current.root,
                                                        current.timestamp * 1000)
                    return
                base = current.size
            else:
                self._forget_heads()  # a new or wiped target: every fleet's proof is missing
            # [9.2] OBJECTS: every tile and entry bundle the new size has that the target's lacks,
            # and the fleet-head proofs due (docs/fleet-heads.md, "Static publication").
            await self._publish_objects(base, cp.tree_size)
            await self._publish_heads(cp)
            # [9.3] SYNC: all of them durable before the checkpoint names them.
            await self.target.sync()
            # [9.4] CHECKPOINT, only over what [9.1] read.
            if await self.target.replace_checkpoint(note, version):
                self._written = (note, TargetCheckpoint(cp.tree_size, cp.root, cp.signed_at_ms // 1000))
                self.metrics.checkpoints.labels(self.target.name, "published").inc()
                # [9.5] RECORD the progress.
                await self._record(cp, cp.signed_at_ms)
                return
            self.metrics.checkpoints.labels(self.target.name, "lost_race").inc()
        raise RuntimeError(f"the target's checkpoint changed underneath {MAX_RACES} times in a row")

    async def _check_current(self, data: bytes) -> TargetCheckpoint:
        """The target's checkpoint, which must be this log's and agree with the database."""
        written = self._written
        if written is not None and written[0] == data:
            current = written[1]  # what this process wrote and signed: its signatures need no check
        else:
            try:
                current = self.verifiers.open(data)
            except Exception as e:
                raise ObjectConflictError(self.target.name, "checkpoint",
                                          f"is not a checkpoint of this log signed by its key ({e})") from None
        root = await self.progress.root_at(current.size)
        if root is None:
            raise ObjectConflictError(self.target.name, "checkpoint",
                                      f"has size {current.size}, which this log never signed")
        if root != current.root:
            raise ObjectConflictError(
                self.target.name, "checkpoint",
                f"has size {current.size} with root {current.root.hex()}, but the log signed root {root.hex()} "
                "for that size: a split view on the target")
        return current

    async def _publish_objects(self, base: int, size: int) -> None:
        tiles, bundles = tiles_between(base, size)
        todo: list[TileID | EntriesTileID] = [*tiles, *bundles]
        sem = asyncio.Semaphore(self.concurrency)

        async def one(tile: TileID | EntriesTileID) -> None:
            async with sem:
                if isinstance(tile, TileID):
                    data = await self.reader.hash_tile(tile)
                else:
                    data = await self.reader.entry_bundle(tile)
                created = await self.target.create(tile_object(tile, data))
                (self._objects_created if created else self._objects_existed).inc()

        # In slices, so that a long catch-up does not hold thousands of tasks at once.
        step = self.concurrency * 16
        for i in range(0, len(todo), step):
            tasks = [asyncio.create_task(one(t)) for t in todo[i:i + step]]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                # The pass has failed (or halted on a conflict, or is cancelled): the
                # creates not yet started must not run after it, into a target that is
                # down or not the log's, nor pile up under the next pass's concurrency.
                # (A create already in a directory's thread finishes there: an object in
                # flight, as in a crash.)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    # --- fleet-head proofs -----------------------------------------------------------------

    def _heads_due(self, cp: CheckpointRow) -> bool:
        """Whether every fleet's proof is to be rewritten at `cp`: the checkpoint moved
        since the last full rewrite, at least heads_interval_s ago."""
        return self.heads is not None and self._heads_full != (cp.tree_size, cp.signed_at_ms) \
            and time.monotonic() - self._heads_full_at >= self.heads_interval_s

    def _forget_heads(self) -> None:
        self._heads_rows = {}
        self._heads_full = self._heads_scanned = None
        self._heads_full_at = -float("inf")

    async def _publish_heads(self, cp: CheckpointRow) -> bool:
        """Write the fleet-head proofs due at `cp`: every fleet's when `_heads_due`, else
        those of the fleets whose row changed since their object was written. Returns
        whether anything was written. Written before the checkpoint (step 9.4), so a
        reader never finds a checkpoint newer than the head of a fleet that it changed.

        A table that cannot make proofs at `cp` (already past it, inconsistent with the
        database: logged there, CRITICAL) skips them for this pass; the tiles and the
        checkpoint are still published, and the proofs on the target keep naming an older
        checkpoint, which a client sees as stale."""
        heads = self.heads
        if heads is None:
            return False
        stamp = (cp.tree_size, cp.signed_at_ms)
        full = self._heads_due(cp)
        if not full and self._heads_scanned is not None and self._heads_scanned[0] == cp.tree_size:
            return False  # the same size (a re-sign): the same rows, already written
        try:
            at = await heads.at(cp.tree_size)
        except HeadsAheadError as e:
            log.debug("target %r: fleet-head proofs skipped at size %d: %s", self.target.name, cp.tree_size, e)
            return self._heads_skipped(stamp, full)
        except HeadsUnavailableError as e:
            log.warning("target %r: fleet-head proofs skipped at size %d: %s", self.target.name, cp.tree_size, e)
            return self._heads_skipped(stamp, full)
        rows = {r.fleet_id: (r.sequence, r.leaf_index) for r in at.table}
        fleets = list(rows) if full else [f for f, v in rows.items() if self._heads_rows.get(f) != v]
        step = self.concurrency * 16
        try:
            for i in range(0, len(fleets), step):
                proofs = await heads.proofs(cp, fleets[i:i + step])
                await self.target.put_many([fleet_head_object(f, d) for f, d in proofs])
                for f, _ in proofs:
                    self._heads_rows[f] = rows[f]
                self._heads_written.inc(len(proofs))
        except NoHeadsLeafError:
            # An empty log, or one that predates HEADS leaves: no proof to write at `cp`.
            return self._heads_skipped(stamp, full)
        except HeadsUnavailableError as e:
            log.warning("target %r: fleet-head proofs skipped at size %d: %s", self.target.name, cp.tree_size, e)
            return self._heads_skipped(stamp, full)
        self._heads_skipped(stamp, full)
        return bool(fleets)

    def _heads_skipped(self, stamp: tuple[int, int], full: bool) -> bool:
        """Record that the proofs due at `stamp` were handled, written or not: a checkpoint
        at which none can be made is not tried again every poll, only at the next
        checkpoint or interval. (A failure of the target raises instead, and the pass,
        retried, tries again.)"""
        self._heads_scanned = stamp
        if full:
            self._heads_full, self._heads_full_at = stamp, time.monotonic()
        return False

    async def _record(self, cp: CheckpointRow, signed_at_ms: int) -> None:
        stored = await self.progress.record(TargetProgress(self.target.name, cp.tree_size, cp.root, signed_at_ms))
        self.published = stored
        self.metrics.published_size.labels(self.target.name).set(stored.tree_size)


class StaticPublisher:
    """Every target's publisher, woken together after each commit (sequencer step 9)."""

    def __init__(self, publishers: list[TargetPublisher]):
        self.publishers = publishers

    def wake(self) -> None:
        for p in self.publishers:
            p.wake()

    def update_metrics(self) -> None:
        for p in self.publishers:
            p.update_metrics()

    def behind(self, max_lag_s: float) -> list[str]:
        """A line for each target that is halted or further behind than `max_lag_s`."""
        out = []
        for p in self.publishers:
            entries, seconds = p.update_metrics()
            if p.halted:
                out.append(f"target {p.target.name!r} is halted: {p.halted}")
            elif seconds > max_lag_s:
                why = f"; last error: {p.last_error}" if p.last_error else ""
                out.append(f"target {p.target.name!r} is {entries} entries and {seconds:.0f} s behind "
                           f"(bound {max_lag_s:g} s){why}")
        return out

    async def load(self) -> None:
        for p in self.publishers:
            await p.load()

    async def run(self) -> None:
        await asyncio.gather(*(p.run() for p in self.publishers))

    async def close(self) -> None:
        for p in self.publishers:
            with contextlib.suppress(Exception):
                await p.target.close()
