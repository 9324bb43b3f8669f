"""The log monitor: tails a log through the C2SP tlog-tiles API and checks everything.

It reads the tiles URL of its `LogClient`: the server itself, or a static copy of the
tree (nginx, an S3 bucket). Everything it needs is there, so it runs without the JSON
API (a client with a tiles URL only); given the log's URL too, it uses the JSON API only
for a consistency proof the tiles cannot give.

One poll (`poll_once`):

1. fetch `checkpoint`; verify it under the trust policy (log signature, witness
   quorum), read the log's signed time (cosignature/v1 line) and check its age;
2. prove it consistent with the stored checkpoint (same size: same root; otherwise an
   RFC 6962 consistency proof computed from the hash tiles of the larger, each tile
   checked against its signed root first (client.tile_proofs), or fetched from the
   JSON API when the tiles do not yield one). A failure is a `split_view` alert with
   self-contained evidence (logserver.client.evidence); a tile that does not hash to
   the signed tree is a `corrupt_tile` alert naming its URL;
3. catch up from the last verified entry to the checkpoint, in chunks of entry bundles
   fetched with their level-0 tiles: decode every entry, verify both authority
   signatures, hash it, compare with the tile, track fleet sequences, and extend the
   monitor's own compact range. A chunk is committed (state saved, alerts emitted) only
   once the root recomputed from the entries matches the signed tree: equal to the
   checkpoint root at its size, or proved a prefix of it by a consistency proof;
4. fold the heads table from the bundles as they are verified and compare every HEADS
   leaf with it; once caught up to the checkpoint, check that its last leaf is a HEADS
   leaf (monitor/heads.py, docs/fleet-heads.md). A finding is an alert whose evidence
   holds the checkpoint and the leaves with their inclusion proofs in its tree.

Corrupted data never crashes the monitor: it raises an alert and stops advancing
until the log serves data that matches its signed checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..bundle.heads import is_heads_leaf
from ..client.checkpoints import VerifiedCheckpoint, log_timestamp, verify_checkpoint
from ..client.consistency import ConsistencyProof, check_consistent, common_log_vkey
from ..client.errors import CheckpointVerificationError, ConsistencyError, SplitViewError, WitnessQuorumError
from ..client.log_client import LogClient, LogClientError, MalformedResponseError
from ..client.policy import TrustPolicy
from ..client.tile_proofs import (
    TileMismatchError,
    locate_tile_faults,
    verified_consistency_proof,
    verified_inclusion_proof,
)
from ..formats import parse_checkpoint, parse_note
from ..merkle import (
    HASH_SIZE,
    TILE_WIDTH,
    CompactRange,
    EntriesTileID,
    MerkleError,
    TileID,
    decode_entry_bundle,
    leaf_hash,
    tile_path,
    verify_consistency,
    verify_inclusion,
)
from . import alerts as kinds
from .alerts import Alert
from .coverage import Coverage
from .entries import BundleResult, EntryVerifier
from .fleets import FleetTracker
from .heads import HeadsFolder, HeadsMismatch, RetiredFleetBundle, mismatch_evidence, missing_evidence
from .metrics import MonitorMetrics
from .state import MonitorState

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BUNDLES = 16
MAX_MISMATCH_ALERTS = 16
PROGRESS_S = 10.0  # a long catch-up logs how far it got at most this often


def _now_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(note: str) -> str:
    return hashlib.sha256(note.encode()).hexdigest()[:16]


@dataclass
class _Chunk:
    """The outcome of reading one chunk: everything is provisional until verified."""

    entries: CompactRange
    tiles: CompactRange
    tracker: FleetTracker
    alerts: list[Alert]
    mismatches: list[dict[str, Any]]
    stop: Alert | None
    heads: HeadsFolder | None = None
    heads_findings: list[HeadsMismatch] = dataclasses.field(default_factory=list)
    heads_mismatches: int = 0
    last_leaf: bytes | None = None


class Monitor:
    """Monitors the log behind `client` with `policy`, keeping its state at `state_path`.

    `emit` receives each alert (and nothing else) as a JSON-ready dict.
    """

    def __init__(
        self,
        client: LogClient,
        policy: TrustPolicy,
        state_path: Path,
        *,
        watch: Iterable[str] = (),
        max_checkpoint_age: float | None = 3600.0,
        emit: Callable[[dict[str, Any]], None] = lambda alert: None,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
        chunk_bundles: int = DEFAULT_CHUNK_BUNDLES,
        verifier: EntryVerifier | None = None,
    ) -> None:
        self.client = client
        self.policy = policy
        self.state_path = Path(state_path)
        self.state = MonitorState.load(self.state_path)
        self.watch = frozenset(watch)
        self.max_checkpoint_age = max_checkpoint_age
        self.emit = emit
        self.metrics = metrics or MonitorMetrics()
        self.clock = clock
        self.chunk_bundles = chunk_bundles
        # Inline unless the caller brings child processes (`monitor --verify-processes`);
        # the caller owns (and closes) a verifier it passes in.
        self.verifier = verifier or EntryVerifier(policy.authorities, 0)
        self._without_quorum = dataclasses.replace(policy, tlog=dataclasses.replace(policy.tlog, quorum="none"))
        self.coverage = Coverage(policy.tlog.witnesses)
        self.alert_counts: Counter[str] = Counter()
        self.entries_verified = 0
        self.latest: VerifiedCheckpoint | None = None
        self.checkpoint_account = "no checkpoint verified yet"
        self._seen: set[str] = set()
        if self.state.checkpoint is not None:
            self.metrics.tree_size.set(self._stored().size)
        self.metrics.verified_size.set(self.state.verified.size)
        self.heads_checked = 0
        self.metrics.heads_check.set(self.state.heads is not None)
        if self.state.heads is None:
            log.warning("%s holds no fold of the heads table in the chained layout (a state file of "
                        "release 0.1.0 or 0.2.0): HEADS leaves are not checked (start with a fresh state "
                        "directory to check them)", self.state_path)
        else:
            self.metrics.heads_fleets.set(self.state.heads.table.count)

    # --- alerts -------------------------------------------------------------------------

    def _alert(self, alert: Alert) -> None:
        if alert.key:
            if alert.key in self._seen:
                return
            self._seen.add(alert.key)
        self.alert_counts[alert.kind] += 1
        self.metrics.alerts.labels(alert.kind).inc()
        self.emit(alert.to_dict(self.state.origin or (self.latest.origin if self.latest else None),
                                _now_text(self.clock())))

    def _save(self) -> None:
        self.state.save(self.state_path)

    def _stored(self) -> VerifiedCheckpoint:
        note = self.state.checkpoint
        assert note is not None
        cp = parse_checkpoint(parse_note(note).text)
        return VerifiedCheckpoint(cp, note, frozenset(), log_timestamp(note, cp.origin, self.policy))

    # --- one poll -----------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """Fetch the latest checkpoint and verify the log up to it. Returns True when
        every entry up to a verified checkpoint has been verified. Raises
        `LogClientError` when the log cannot be read (not an alert: retry later)."""
        note = await self.client.checkpoint()
        latest = self._verify_checkpoint(note)
        if latest is None:
            return False
        self.latest = latest
        self._check_time(latest)
        if not await self._adopt(latest):
            return False
        return await self._catch_up()

    def _verify_checkpoint(self, note: str) -> VerifiedCheckpoint | None:
        quorum_met = True
        try:
            latest = verify_checkpoint(note, self.policy)
        except WitnessQuorumError as exc:
            quorum_met = False
            # Reported once per tree size (the log re-signs the same tree often). The
            # entries are still worth checking against the log's own signature.
            size = parse_checkpoint(parse_note(note).text).size
            self._alert(Alert(kinds.QUORUM_FAILURE, f"checkpoint of size {size} lacks the witness quorum: {exc}",
                              {"quorum": self.policy.tlog.quorum, "size": size}, {"checkpoint": note},
                              key=f"quorum:{size}"))
            latest = verify_checkpoint(note, self._without_quorum)
        except CheckpointVerificationError as exc:
            url = self.client.tiles_url_of("checkpoint")
            self._alert(Alert(kinds.CHECKPOINT_INVALID, f"the checkpoint served at {url} does not verify: {exc}",
                              {"url": url}, {"checkpoint": note}, key=f"checkpoint:{_digest(note)}"))
            return None
        if self.state.origin is not None and latest.origin != self.state.origin:
            self._alert(Alert(
                kinds.CHECKPOINT_INVALID,
                f"the log now serves checkpoints of {latest.origin!r}, this monitor follows {self.state.origin!r}",
                {"origin": latest.origin}, {"checkpoint": note}, key=f"origin:{_digest(note)}"))
            return None
        self.metrics.witnesses.set(len(latest.witnesses))
        if self.coverage.observe(latest, quorum_met):
            self.metrics.checkpoints_seen.inc()
            self.metrics.checkpoints_quorum.inc(quorum_met)
            for name in self.coverage.witnesses:
                self.metrics.checkpoints_cosigned.labels(name).inc(name in latest.witnesses)
                self.metrics.witness_coverage.labels(name).set(self.coverage.fraction(name))
        return latest

    def _check_time(self, latest: VerifiedCheckpoint) -> None:
        now = self.clock()
        if latest.signed_at is not None:
            self.metrics.checkpoint_age.set(max(0.0, now - latest.signed_at))
        if self.max_checkpoint_age is not None:
            if latest.signed_at is None:
                self._alert(Alert(kinds.FROZEN_LOG, "the checkpoint carries no signed time from the log's key",
                                  {"size": latest.size}, {"checkpoint": latest.note},
                                  key=f"frozen:{_digest(latest.note)}"))
            elif now - latest.signed_at > self.max_checkpoint_age:
                age = int(now - latest.signed_at)
                self._alert(Alert(
                    kinds.FROZEN_LOG,
                    f"the log's latest checkpoint (size {latest.size}) was signed {age} s ago, "
                    f"want at most {self.max_checkpoint_age:g} s: the log may be frozen",
                    {"size": latest.size, "signed_at": _now_text(latest.signed_at), "age_s": age},
                    {"checkpoint": latest.note}, key=f"frozen:{latest.signed_at}"))
        if self.state.checkpoint is None:
            return
        stored = self._stored()
        if (stored.signed_at is not None and latest.signed_at is not None and latest.size >= stored.size
                and latest.signed_at < stored.signed_at):
            self._alert(Alert(
                kinds.TIME_REGRESSION,
                f"checkpoint of size {latest.size} signed at {_now_text(latest.signed_at)}, before the earlier "
                f"checkpoint of size {stored.size} ({_now_text(stored.signed_at)})",
                {"size": latest.size, "previous_size": stored.size},
                {"checkpoints": [stored.note, latest.note]}, key=f"time:{_digest(latest.note)}"))

    async def _adopt(self, latest: VerifiedCheckpoint) -> bool:
        """Make `latest` the stored checkpoint if it is consistent with the stored one."""
        if self.state.checkpoint is None:
            self.state.origin = latest.origin
            self.state.checkpoint = latest.note
            self._save()
            self.metrics.tree_size.set(latest.size)
            self.checkpoint_account = "first checkpoint seen: nothing to compare with (trusted on first use)"
            return True
        stored = self._stored()
        proof = None
        if stored.size != latest.size:
            a, b = (stored, latest) if stored.size < latest.size else (latest, stored)
            proof = await self._consistency_proof(a.size, b.size, b.root)
        try:
            account = check_consistent(self.policy, stored, latest, proof)
        except SplitViewError as exc:
            self._alert(Alert(kinds.SPLIT_VIEW, str(exc), {"sizes": sorted([stored.size, latest.size])},
                              exc.evidence.to_dict(), key=f"split:{_digest(latest.note)}"))
            return False
        except ConsistencyError as exc:
            self._alert(Alert(kinds.SPLIT_VIEW, str(exc), {"sizes": sorted([stored.size, latest.size])},
                              {"checkpoints": [stored.note, latest.note]}, key=f"split:{_digest(latest.note)}"))
            return False
        self.checkpoint_account = f"consistent with the stored checkpoint of size {stored.size}: {account}"
        newer_time = (latest.signed_at or 0) > (stored.signed_at or 0)
        if latest.size > stored.size or (latest.size == stored.size and newer_time):
            # A newer signature over the same tree is kept too: its time is what the
            # frozen-log check compares against.
            self.state.checkpoint = latest.note
            self._save()
        self.metrics.tree_size.set(max(latest.size, stored.size))
        return True

    async def _consistency_proof(self, first: int, second: int, root2: bytes) -> ConsistencyProof:
        """A consistency proof from `first` to `second`, whose signed root is `root2`:
        from the tiles of `second`, each checked against `root2` first, else (no tiles,
        or a corrupted one, which is alerted) from the JSON API when the client has one;
        if none verifies, the one to keep as evidence. Raises `LogClientError` when
        there is no proof to be had."""
        errors: list[str] = []
        try:
            hashes = await verified_consistency_proof(self.client, first, second, size=second, root=root2)
        except TileMismatchError as exc:
            self._alert(self._tile_alert(exc))
            errors.append(str(exc))
        except LogClientError as exc:
            errors.append(str(exc))
        else:
            # From tiles tied to the signed root: the tree's own proof, whether or not it verifies.
            return ConsistencyProof(first, second, tuple(hashes), f"tiles of {self.client.tiles_url} at size {second}")
        if self.client.has_api:
            source = "GET " + self.client.api_url_of(f"v1/proof/consistency?first={first}&second={second}")
            try:
                return ConsistencyProof(first, second, tuple(await self.client.consistency_proof(first, second)),
                                        source)
            except LogClientError as exc:
                errors.append(str(exc))
        raise LogClientError(f"no consistency proof from {first} to {second}: {'; '.join(errors)}")

    def _tile_alert(self, exc: TileMismatchError) -> Alert:
        return Alert(kinds.CORRUPT_TILE, str(exc),
                     {"tiles": list(exc.paths), "urls": list(exc.urls), "size": exc.size},
                     key=f"tiles:{exc.size}:{','.join(exc.paths)}")

    # --- catching up --------------------------------------------------------------------

    async def _catch_up(self) -> bool:
        target = self._stored()
        reported = time.monotonic()
        while self.state.verified.size < target.size:
            if not await self._chunk(target):
                return False
            if time.monotonic() - reported >= PROGRESS_S and self.state.verified.size < target.size:
                reported = time.monotonic()
                log.info("catching up: verified %d of %d entries", self.state.verified.size, target.size)
        self._set_progress(target.size)
        return True

    def _set_progress(self, log_size: int) -> None:
        self.metrics.verified_size.set(self.state.verified.size)
        self.metrics.lag_entries.set(max(0, log_size - self.state.verified.size))

    async def _chunk(self, target: VerifiedCheckpoint) -> bool:
        start, size = self.state.verified.size, target.size
        first = start // TILE_WIDTH
        last = min((size - 1) // TILE_WIDTH, first + self.chunk_bundles - 1)
        bundles = [EntriesTileID(i, min(TILE_WIDTH, size - i * TILE_WIDTH)) for i in range(first, last + 1)]
        tasks = [
            (asyncio.ensure_future(self.client.entry_bundle_bytes(b)),
             asyncio.ensure_future(self.client.tile(TileID(0, b.index, b.width))))
            for b in bundles
        ]
        try:
            chunk = await self._read_chunk(bundles, tasks, start)
        finally:
            for pair in tasks:
                for task in pair:
                    task.cancel()
            await asyncio.gather(*(t for pair in tasks for t in pair), return_exceptions=True)
        end = chunk.entries.size
        if end > start:
            proved = await self._proves_prefix(chunk.entries, target)
            if proved:
                await self._heads_alerts(chunk, target)
                self._commit(chunk, end - start)
            else:
                await self._diagnose(chunk, target, start, bundles)
        if chunk.stop is not None:
            self._alert(chunk.stop)
        self._set_progress(size)
        return chunk.stop is None and end > start and self.state.verified.size == end

    async def _read_chunk(
        self, bundles: list[EntriesTileID], tasks: Sequence[tuple[asyncio.Future[bytes], asyncio.Future[bytes]]],
        start: int,
    ) -> _Chunk:
        state = self.state
        chunk = _Chunk(
            state.verified.copy(), state.verified.copy(), FleetTracker(state.fleets, self.watch), [], [], None,
            None if state.heads is None else state.heads.copy(),
        )
        # Each bundle is decoded and verified as soon as it arrives (with verify
        # processes, several at once); the results are then taken in log order.
        checks = [asyncio.ensure_future(self._check_bundle(bundle, bundle_task, start))
                  for bundle, (bundle_task, _) in zip(bundles, tasks, strict=True)]
        try:
            await self._take_in_order(bundles, tasks, checks, start, chunk)
        finally:
            for check in checks:
                check.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
        chunk.alerts.sort(key=lambda a: a.details.get("index", 0))
        return chunk

    async def _check_bundle(
        self, bundle: EntriesTileID, bundle_task: asyncio.Future[bytes], start: int
    ) -> BundleResult:
        """The bundle's entries from `start` on, verified. Raises MerkleError or
        MalformedResponseError when the bundle does not decode."""
        base = bundle.index * TILE_WIDTH
        skip = max(start, base) - base
        leaves = decode_entry_bundle(await bundle_task)
        if len(leaves) != bundle.width and len(leaves) != TILE_WIDTH:
            raise MerkleError(f"got {len(leaves)} entries, want {bundle.width}")
        return await self.verifier.verify(leaves[skip:bundle.width], base + skip)

    async def _take_in_order(
        self,
        bundles: Sequence[EntriesTileID],
        tasks: Sequence[tuple[asyncio.Future[bytes], asyncio.Future[bytes]]],
        checks: Sequence[asyncio.Future[BundleResult]],
        start: int,
        chunk: _Chunk,
    ) -> None:
        for bundle, (_, tile_task), check in zip(bundles, tasks, checks, strict=True):
            base = bundle.index * TILE_WIDTH
            skip = max(start, base) - base
            try:
                result = await check
            except (MerkleError, MalformedResponseError) as exc:
                url = self.client.tiles_url_of(tile_path(bundle))
                chunk.stop = Alert(kinds.MALFORMED_DATA, f"entry bundle {url} does not decode: {exc}",
                                   {"resource": tile_path(bundle), "url": url, "first_index": base + skip},
                                   key=f"bundle:{tile_path(bundle)}:{_digest(str(exc))}")
                break
            tile_hashes = await self._tile_hashes(bundle, tile_task, chunk)
            chunk.alerts.extend(result.failures)
            for entry in result.verified:
                chunk.alerts.extend(chunk.tracker.observe(entry))
            self._fold(chunk, result.fold_items)
            if result.last_leaf is not None:
                chunk.last_leaf = result.last_leaf
            chunk.entries.extend(result.leaf_hashes)
            if tile_hashes is None:
                chunk.tiles.extend(result.leaf_hashes)
            else:
                served = tile_hashes[skip:bundle.width]
                chunk.tiles.extend(served)
                # Both are entries [skip, width) of the bundle: client.tile returns exactly width hashes.
                for offset, (mine, theirs) in enumerate(zip(result.leaf_hashes, served, strict=True)):
                    if mine != theirs:
                        tile = tile_path(TileID(0, bundle.index, bundle.width))
                        chunk.mismatches.append({
                            "index": base + skip + offset,
                            "entry_leaf_hash": mine.hex(),
                            "tile_hash": theirs.hex(),
                            "entry_bundle": tile_path(bundle),
                            "tile": tile,
                            "entry_bundle_url": self.client.tiles_url_of(tile_path(bundle)),
                            "tile_url": self.client.tiles_url_of(tile),
                        })
            await asyncio.sleep(0)  # let the metrics endpoint answer between bundles

    async def _tile_hashes(
        self, bundle: EntriesTileID, tile_task: asyncio.Future[bytes], chunk: _Chunk
    ) -> list[bytes] | None:
        try:
            data = await tile_task
        except MalformedResponseError as exc:
            tile = tile_path(TileID(0, bundle.index, bundle.width))
            url = self.client.tiles_url_of(tile)
            chunk.alerts.append(Alert(kinds.CORRUPT_TILE, f"level-0 tile {url} is malformed: {exc}",
                                      {"tile": tile, "url": url, "index": bundle.index * TILE_WIDTH},
                                      key=f"tile:{tile}:malformed"))
            return None
        except LogClientError as exc:
            # Not served at all: the entries are still verified against the signed root,
            # only the cross-check with the tile is skipped.
            log.warning("level-0 tile for %s unavailable: %s", tile_path(bundle), exc)
            return None
        return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    async def _proves_prefix(self, entries: CompactRange, target: VerifiedCheckpoint) -> bool:
        """True if the tree of `entries` is the signed tree of `target` or a prefix of it.
        Raises `LogClientError` if the log serves no consistency proof to decide."""
        if entries.size == target.size:
            return entries.root() == target.root
        # No proof to be had (LogClientError) is a failed poll, not a finding.
        proof = await self._consistency_proof(entries.size, target.size, target.root)
        try:
            verify_consistency(entries.size, target.size, entries.root(), target.root, list(proof.hashes))
        except MerkleError:
            return False
        return True

    # --- fleet heads (monitor/heads.py) -----------------------------------------------

    def _fold(self, chunk: _Chunk, items: Iterable[Any]) -> None:
        """Fold verified entries into the chunk's heads table; findings wait for the
        chunk to be proved part of the signed tree (`_heads_alerts`)."""
        folder = chunk.heads
        if folder is None:
            return
        for item in items:
            finding = folder.observe(item)
            if isinstance(finding, HeadsMismatch):
                chunk.heads_mismatches += 1
                if len(chunk.heads_findings) < MAX_MISMATCH_ALERTS:
                    chunk.heads_findings.append(finding)
            elif isinstance(finding, RetiredFleetBundle):
                row, old = finding.row, finding.retirement
                chunk.alerts.append(Alert(
                    kinds.RETIRED_FLEET_BUNDLE,
                    f"fleet {row.fleet_id!r} logged sequence {row.sequence} at index {finding.index} after its "
                    f"retirement (sequence {old.sequence}, index {old.leaf_index})",
                    {"fleet_id": row.fleet_id, "sequence": row.sequence, "index": finding.index,
                     "leaf_hash": row.leaf_hash.hex(), "retired_sequence": old.sequence,
                     "retired_index": old.leaf_index},
                    key=f"retired:{finding.index}"))

    async def _proved_leaf(self, index: int, leaf: bytes, target: VerifiedCheckpoint) -> tuple[int, bytes, list[bytes]]:
        """(index, leaf, its inclusion proof in the signed tree of `target`): from the
        tiles, each checked against the signed root, else from the JSON API. Raises
        `LogClientError` when no proof that verifies is to be had (a failed poll)."""
        errors = []
        try:
            proof = await verified_inclusion_proof(self.client, index, target.size, size=target.size,
                                                   root=target.root)
        except TileMismatchError as exc:
            self._alert(self._tile_alert(exc))
            errors.append(str(exc))
        except LogClientError as exc:
            errors.append(str(exc))
        else:
            return index, leaf, proof
        if self.client.has_api:
            try:
                proof = await self.client.inclusion_proof(index, target.size)
                verify_inclusion(index, target.size, leaf_hash(leaf), proof, target.root)
                return index, leaf, proof
            except (LogClientError, MerkleError) as exc:
                errors.append(str(exc))
        raise LogClientError(f"no inclusion proof of leaf {index} at size {target.size}: {'; '.join(errors)}")

    async def _leaf(self, index: int, size: int) -> bytes:
        """Leaf `index` of the tree of `size`, from its entry bundle (the caller proves it)."""
        base = index - index % TILE_WIDTH
        leaves = await self.client.entry_bundle(EntriesTileID(index // TILE_WIDTH, min(TILE_WIDTH, size - base)))
        if len(leaves) <= index - base:
            raise MalformedResponseError(f"entry bundle of leaf {index}: got {len(leaves)} entries")
        return leaves[index - base]

    async def _heads_alerts(self, chunk: _Chunk, target: VerifiedCheckpoint) -> None:
        """The chunk's heads findings as alerts with evidence; and, when the chunk ends
        at the checkpoint, whether its last leaf is a HEADS leaf."""
        folder = chunk.heads
        if folder is None:
            return
        origin = target.origin
        vkey = common_log_vkey(self.policy, origin, [target.note])
        for m in chunk.heads_findings:
            evidence = mismatch_evidence(origin, vkey, target.note, m, (await self._proved_leaf(m.index, m.leaf,
                                                                                                target))[2])
            got = None if m.got is None else {"previous": m.got.previous, "count": m.got.count,
                                              "root": m.got.root.hex()}
            chunk.alerts.append(Alert(
                kinds.HEADS_MISMATCH, f"{m.reason} (checkpoint of size {target.size})",
                {"index": m.index, "size": target.size, "got": got,
                 "want": {"previous": m.want.previous, "count": m.want.count, "root": m.want.root.hex()},
                 "mismatches_in_chunk": chunk.heads_mismatches},
                evidence, key=f"heads:{m.index}"))
        end = chunk.entries.size
        if (end == target.size and folder.first is not None and chunk.last_leaf is not None
                and not is_heads_leaf(chunk.last_leaf)):
            index = folder.previous
            heads = folder.last_heads if folder.last_heads is not None else await self._leaf(index, target.size)
            first = await self._proved_leaf(index, heads, target)
            last = await self._proved_leaf(end - 1, chunk.last_leaf, target)
            chunk.alerts.append(Alert(
                kinds.HEADS_MISSING,
                f"the checkpoint of size {end} ends with leaf {end - 1}, which is not a HEADS leaf; the log wrote "
                f"HEADS leaves from index {folder.first} on (the last one at {index})",
                {"size": end, "index": end - 1, "leaf_hash": leaf_hash(chunk.last_leaf).hex(),
                 "heads_index": index, "first_heads_index": folder.first},
                missing_evidence(origin, vkey, target.note, first, last), key=f"heads_missing:{end}"))

    def _commit(self, chunk: _Chunk, count: int) -> None:
        self.state.verified = chunk.entries
        self.state.fleets = chunk.tracker.heads
        if chunk.heads is not None:
            self.state.heads = chunk.heads
        self._save()
        self.entries_verified += count
        self.metrics.entries_verified.inc(count)
        if chunk.heads is not None:
            checked = chunk.heads.checked
            self.heads_checked += checked
            self.metrics.heads_checked.labels("mismatch").inc(chunk.heads_mismatches)
            self.metrics.heads_checked.labels("match").inc(checked - chunk.heads_mismatches)
            self.metrics.heads_fleets.set(chunk.heads.table.count)
            chunk.heads.checked = 0
        for alert in chunk.alerts:
            self._alert(alert)
        for m in chunk.mismatches:
            # The entries matched the signed tree, so the tile is what is wrong.
            self._alert(Alert(kinds.CORRUPT_TILE,
                              f"level-0 tile {m['tile_url']} has hash {m['tile_hash']} for entry {m['index']}, "
                              f"but the verified entry hashes to {m['entry_leaf_hash']}", m,
                              key=f"tile:{m['tile']}:{m['index']}"))

    async def _diagnose(
        self, chunk: _Chunk, target: VerifiedCheckpoint, start: int, bundles: list[EntriesTileID]
    ) -> None:
        end = chunk.entries.size
        if chunk.mismatches and await self._proves_prefix(chunk.tiles, target):
            for m in chunk.mismatches[:MAX_MISMATCH_ALERTS]:
                self._alert(Alert(
                    kinds.CORRUPT_ENTRY,
                    f"entry {m['index']} served in {m['entry_bundle_url']} hashes to {m['entry_leaf_hash']}, but "
                    f"the signed tree has {m['tile_hash']} there (level-0 tile {m['tile_url']})",
                    {**m, "mismatches_in_chunk": len(chunk.mismatches)},
                    key=f"entry:{m['index']}:{m['entry_leaf_hash']}"))
            return
        suspects = await self._suspects(chunk, target, bundles)
        named = "; ".join(s["message"] for s in suspects)
        self._alert(Alert(
            kinds.ROOT_MISMATCH,
            f"the entries [{start}, {end}) served by the log, on top of the {start} verified before, do not hash "
            f"to the signed tree of size {target.size}" + (f": {named}" if named else ""),
            {"verified_size": start, "chunk_end": end, "computed_root": chunk.entries.root().hex(),
             "tile_mismatches": chunk.mismatches[:MAX_MISMATCH_ALERTS], "suspects": suspects},
            {"checkpoint": target.note, "computed_root": chunk.entries.root().hex(), "computed_size": end},
            key=f"root:{end}:{chunk.entries.root().hex()}"))

    async def _suspects(self, chunk: _Chunk, target: VerifiedCheckpoint,
                        bundles: list[EntriesTileID]) -> list[dict[str, Any]]:
        """The objects to blame when the entries do not hash to the signed tree: each
        level-0 tile of the chunk is checked against the signed root through the tiles
        above it (client.tile_proofs); where one fails and the bundle's entries agree
        with it, the bundle is wrong as well (both replaced together)."""
        tiles = [TileID(0, b.index, b.width) for b in bundles if b.index * TILE_WIDTH < chunk.entries.size]
        try:
            faults = await locate_tile_faults(self.client, tiles, target.size, target.root)
        except LogClientError as exc:
            log.warning("cannot check the level-0 tiles against the signed tree: %s", exc)
            return []
        mismatched = {m["entry_bundle"] for m in chunk.mismatches}
        out = []
        for fault in faults:
            suspect: dict[str, Any] = {"tiles": list(fault.paths), "urls": list(fault.urls), "message": str(fault)}
            # The chunk's bundles whose entries hashed to exactly this failing tile's values.
            agreeing = [EntriesTileID(t.index, t.width) for t in fault.fault.tiles if t in tiles]
            agreeing = [b for b in agreeing if tile_path(b) not in mismatched]
            if agreeing:
                urls = [self.client.tiles_url_of(tile_path(b)) for b in agreeing]
                suspect["entry_bundles"] = [tile_path(b) for b in agreeing]
                suspect["entry_bundle_urls"] = urls
                suspect["message"] += f"; the entry bundle(s) {', '.join(urls)} hash to that tile's values"
            out.append(suspect)
        return out[:MAX_MISMATCH_ALERTS]

    # --- reporting ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        stored = self._stored() if self.state.checkpoint is not None else None
        return {
            "type": "summary",
            "origin": self.state.origin,
            "checkpoint_size": None if stored is None else stored.size,
            "checkpoint_root": None if stored is None else stored.root.hex(),
            "checkpoint_signed_at": None if stored is None or stored.signed_at is None else _now_text(stored.signed_at),
            "witnesses": [] if self.latest is None else sorted(self.latest.witnesses),
            # Which of the log's own signatures verified on the latest checkpoint (docs/client.md).
            "log_signatures": [] if self.latest is None else list(self.latest.log_signatures),
            "cosignature_coverage": self.coverage.to_dict(),
            "checkpoint_check": self.checkpoint_account,
            "verified_size": self.state.verified.size,
            "verified_root": self.state.verified.root().hex(),
            "caught_up": stored is not None and self.state.verified.size == stored.size,
            "entries_verified": self.entries_verified,
            "fleets": len(self.state.fleets),
            "heads": None if self.state.heads is None else {
                "fleets": self.state.heads.table.count,
                "last_heads_leaf": self.state.heads.previous if self.state.heads.first is not None else None,
                "heads_leaves_checked": self.heads_checked,
            },
            "alerts": dict(sorted(self.alert_counts.items())),
        }

    async def run(self, interval_s: float, *, stop: asyncio.Event | None = None) -> None:
        """Poll forever (until `stop` is set); a failed poll is logged and retried."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            verified_before, alerts_before = self.entries_verified, sum(self.alert_counts.values())
            try:
                await self.poll_once()
            except LogClientError as exc:
                self.metrics.errors.inc()
                log.warning("poll failed: %s", exc)
            else:
                # One line per cycle: what an operator tailing the daemon wants to see.
                size = None if self.latest is None else self.latest.size
                log.info("cycle: log size %s, verified up to %d, %d entries checked, %d new alerts (%d in all)",
                         size, self.state.verified.size, self.entries_verified - verified_before,
                         sum(self.alert_counts.values()) - alerts_before, sum(self.alert_counts.values()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
