"""An in-memory log store for tests: the storage seam (logserver/storage/protocols.py)
without PostgreSQL, which can be told to fail at each storage step of a batch.

It keeps the PostgreSQL store's contract (logserver/storage/sequencing.py): one
holder of the sequencer role at a time; a batch's writes are staged and become
visible together at commit(); leaving the block without a commit discards them;
what commit() applied is "durable" (it is what every later read sees). It also
refuses what the schema's triggers refuse (a second root for a size, sizes or
times going back, tiles other than grown by appending, a fleet going back,
indices that are not dense), recording each refusal in `violations` so a test
can say none happened: the sequencer would only see a failed batch.

Faults: `fail(point, when)` arms one failure (it fires once) at a storage step,
`before` it takes effect or `after`:

    point       step (write/sequencer.py)   "after" means
    lock        1 LOCK                       the role was taken (then the connection dropped)
    snapshot    2 SNAPSHOT                   the snapshot was read
    read_tiles  3 PRE-SIGN CHECK's read      the tiles were read
    append      7 WRITE                      the writes are staged in the transaction
    commit      8 COMMIT                     the transaction WAS committed, yet COMMIT raised
                                             (the ambiguous failure; Sunlight's tests call it
                                             failCheckpointButPersist)

The failure is InjectedOutage, a ConnectionResetError: to the sequencer it is a
database that went away, as asyncpg's errors for a dropped connection are.

Why here and not in logserver/storage/: it is a test double. Its fault switches
must not be reachable from a server, nor shipped in the wheel; the protocols it
implements are checked by tests (isinstance with the runtime-checkable protocols).
"""
from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from logserver.merkle import EMPTY_ROOT
from logserver.storage import (
    CheckpointRow,
    ExistingEntry,
    FleetHead,
    HeadsSnapshot,
    LeafRow,
    NewLeaf,
    Prefetch,
    Prefetched,
    TileKey,
)

POINTS = ("lock", "snapshot", "read_tiles", "read_heads", "append", "commit")
WHEN = ("before", "after")


class InjectedOutage(ConnectionResetError):
    """A storage failure a test asked for."""


class SchemaViolation(Exception):
    """What PostgreSQL's constraints or triggers would have refused."""


@dataclass
class _Staged:
    leaves: list[NewLeaf]
    tiles: dict[TileKey, bytes]
    fleets: dict[str, FleetHead]
    checkpoint: CheckpointRow
    integrated_at: dt.datetime
    resign: bool = False  # the size did not change: only the latest signature (log_state) moves


@dataclass
class MemoryStore:
    """The committed state of one log, and the sequencer role over it."""

    leaves: list[LeafRow] = field(default_factory=list)
    tiles: dict[TileKey, bytes] = field(default_factory=dict)
    fleets: dict[str, FleetHead] = field(default_factory=dict)
    checkpoint_rows: list[CheckpointRow] = field(default_factory=list)  # one per tree size
    latest: CheckpointRow | None = None  # log_state: the latest signature, the id of its size's row
    violations: list[str] = field(default_factory=list)
    fired: list[tuple[str, str]] = field(default_factory=list)  # (point, when) of each fault that fired
    commits: int = 0

    def __post_init__(self) -> None:
        self._role = asyncio.Lock()
        self._armed: dict[tuple[str, str], int] = {}
        self._by_key: dict[tuple[str, int], int] = {}
        self._by_hash: dict[bytes, int] = {}
        self._roots: dict[int, bytes] = {}  # tree size -> the root signed for it

    # --- test controls -------------------------------------------------------------

    def fail(self, point: str, when: str, times: int = 1) -> None:
        """Arm a failure at `point` (POINTS), `when` ("before" or "after") it takes effect."""
        if point not in POINTS or when not in WHEN:
            raise ValueError(f"fault: got ({point!r}, {when!r}), want a point of {POINTS} and one of {WHEN}")
        self._armed[(point, when)] = self._armed.get((point, when), 0) + times

    def _fault(self, point: str, when: str) -> None:
        left = self._armed.get((point, when), 0)
        if left:
            self._armed[(point, when)] = left - 1
            self.fired.append((point, when))
            raise InjectedOutage(f"injected: {point} fails {when} it takes effect")

    @property
    def size(self) -> int:
        """The committed tree size (0 before initialize)."""
        return 0 if self.latest is None else self.latest.tree_size

    def initialize(self, signed_empty_checkpoint: str, signed_at_ms: int) -> None:
        """The size-0 state with its first checkpoint (Store.initialize_state)."""
        assert self.latest is None, "initialised twice"
        self.latest = CheckpointRow(1, 0, EMPTY_ROOT, signed_at_ms, signed_empty_checkpoint)
        self.checkpoint_rows.append(self.latest)
        self._roots[0] = EMPTY_ROOT

    # --- TileSource (what the tree reader uses) ----------------------------------------

    async def latest_checkpoint(self) -> CheckpointRow | None:
        return self.latest

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        return {k: self.tiles[k] for k in keys if k in self.tiles}

    async def read_leaf_bytes(self, start: int, end: int) -> list[bytes]:
        return [row.leaf for row in self.leaves[start:end]]

    async def checkpoints(self, after_id: int = 0, limit: int = 1000) -> list[CheckpointRow]:
        return [c for c in self.checkpoint_rows if c.id > after_id][:limit]

    def entry(self, index: int) -> LeafRow | None:
        return self.leaves[index] if 0 <= index < len(self.leaves) else None

    # --- LogStore (what the sequencer uses) --------------------------------------------

    @asynccontextmanager
    async def sequencing(self, lock_timeout_ms: int, stall_timeout_ms: int = 5_000,
                         prefetch: Prefetch | None = None) -> AsyncIterator[MemorySequencing]:
        self._fault("lock", "before")
        try:
            await asyncio.wait_for(self._role.acquire(), lock_timeout_ms / 1000)
        except TimeoutError:  # PostgreSQL: LockNotAvailableError
            raise TimeoutError(f"the sequencer role was not free within {lock_timeout_ms} ms") from None
        tx: MemorySequencing | None = None
        try:
            await asyncio.sleep(0)  # every storage step lets the event loop run, as a round trip does
            self._fault("lock", "after")
            self._fault("snapshot", "before")
            if self.latest is None:
                raise RuntimeError("the log was never initialised")
            tx = MemorySequencing(self, self.latest, self._prefetched(prefetch or Prefetch(-1)))
            self._fault("snapshot", "after")
            yield tx
        finally:
            if tx is not None:
                tx.staged = None  # rolled back unless committed (a commit already applied it)
            self._role.release()

    def _prefetched(self, p: Prefetch) -> Prefetched:
        assert self.latest is not None
        return Prefetched(
            tiles={k: self.tiles[k] for k in p.tiles if k in self.tiles} if self.latest.tree_size == p.tree_size
            else None,
            entries={k: self._existing(self._by_key[k]) for k in p.entries if k in self._by_key},
            fleet_sequences={f: self.fleets[f].sequence for f in p.fleet_ids if f in self.fleets},
            retired=frozenset(f for f in p.fleet_ids if f in self.fleets and self.fleets[f].retired),
        )

    def _existing(self, idx: int) -> ExistingEntry:
        row = self.leaves[idx]
        return ExistingEntry(row.idx, row.leaf_hash, row.payload_digest)

    def _apply(self, staged: _Staged) -> None:
        """COMMIT: the staged batch becomes the committed state, all of it at once."""
        for leaf in staged.leaves:
            self.leaves.append(LeafRow(leaf.idx, leaf.leaf_hash, leaf.leaf, leaf.fleet_id, leaf.sequence,
                                       leaf.payload_digest, staged.integrated_at))
            if leaf.fleet_id is not None:
                self._by_key[(leaf.fleet_id, leaf.sequence)] = leaf.idx  # type: ignore[index]
            self._by_hash[leaf.leaf_hash] = leaf.idx
        self.tiles.update(staged.tiles)
        self.fleets.update(staged.fleets)
        if not staged.resign:
            self.checkpoint_rows.append(staged.checkpoint)
            self._roots[staged.checkpoint.tree_size] = staged.checkpoint.root
        self.latest = staged.checkpoint
        self.commits += 1

    def _refuse(self, message: str) -> None:
        self.violations.append(message)
        raise SchemaViolation(message)

    def _check(self, old: CheckpointRow, staged: _Staged) -> None:
        """What the schema and Store.append refuse (migrations/0001_log.sql, 0003_checkpoint_slot.sql)."""
        cp, leaves = staged.checkpoint, staged.leaves
        if self.latest != old:
            self._refuse(f"log_state moved under the sequencer lock (expected size {old.tree_size})")
        if staged.resign:  # the slot: forward only, naming the stored row of its size and root
            row = next((c for c in self.checkpoint_rows if c.id == cp.id), None)
            if cp.signed_at_ms <= old.signed_at_ms or row is None or (row.tree_size, row.root) != (
                    cp.tree_size, cp.root) or leaves or staged.fleets:
                self._refuse(f"re-sign ({cp.tree_size}, {cp.signed_at_ms}) does not move log_state forward "
                             f"from ({old.tree_size}, {old.signed_at_ms}) at its stored checkpoint")
            return
        if [leaf.idx for leaf in leaves] != list(range(old.tree_size, cp.tree_size)):
            self._refuse(f"batch indices {[leaf.idx for leaf in leaves]} are not {old.tree_size}..{cp.tree_size - 1}")
        last = self.checkpoint_rows[-1]
        if cp.tree_size < last.tree_size or cp.signed_at_ms < max(last.signed_at_ms, old.signed_at_ms):
            self._refuse(f"checkpoint ({cp.tree_size}, {cp.signed_at_ms}) goes back from "
                         f"({last.tree_size}, {last.signed_at_ms})")
        if cp.tree_size == last.tree_size:
            self._refuse(f"a checkpoint of size {cp.tree_size} is stored already: a re-sign only updates log_state")
        if self._roots.get(cp.tree_size, cp.root) != cp.root:
            self._refuse(f"fork refused: a checkpoint of size {cp.tree_size} with another root exists")
        for leaf in leaves:
            # leaves_kind (migrations/0008_heads_chain.sql): a HEADS leaf is 49 bytes starting
            # with 3 (or release 0.2.0's 2) and has no fleet; no bundle starts with 2 or 3.
            heads = leaf.leaf[:1] in (b"\x02", b"\x03")
            if (leaf.fleet_id is None) != heads or (heads and len(leaf.leaf) != 49):
                self._refuse(f"leaf {leaf.idx}: a HEADS leaf (49 bytes, starting with 2 or 3) has no fleet, "
                             "and only a HEADS leaf starts with 2 or 3")
            if (leaf.fleet_id, leaf.sequence) in self._by_key or leaf.leaf_hash in self._by_hash:
                self._refuse(f"leaf {leaf.idx}: ({leaf.fleet_id}, {leaf.sequence}) or its hash is already logged")
        for key, data in staged.tiles.items():
            old_data = self.tiles.get(key, b"")
            if not data.startswith(old_data) or len(data) % 32 or not 32 <= len(data) <= 8192:
                self._refuse(f"tile {key} may only grow by appending hashes")
        for fleet, head in staged.fleets.items():
            old_head = self.fleets.get(fleet)
            if old_head is not None and (head.sequence <= old_head.sequence or head.idx <= old_head.idx):
                self._refuse(f"fleet {fleet} may only move to a larger sequence")
            if old_head is not None and old_head.retired:
                self._refuse(f"fleet {fleet} is retired: it accepts no later bundle")


class MemorySequencing:
    """One batch's transaction over a MemoryStore (the Sequencing protocol)."""

    def __init__(self, store: MemoryStore, latest: CheckpointRow, prefetched: Prefetched):
        self.store = store
        self.latest = latest
        self.prefetched = prefetched
        self.staged: _Staged | None = None
        self.committed = False

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]:
        self.store._fault("read_tiles", "before")
        await asyncio.sleep(0)
        tiles = await self.store.read_tiles(keys)
        self.store._fault("read_tiles", "after")
        return tiles

    async def read_heads(self) -> HeadsSnapshot:
        self.store._fault("read_heads", "before")
        await asyncio.sleep(0)
        # In the order the fleets first appeared, as the PostgreSQL store's ORDER BY
        # first_idx (migration 0008): `fleets` is a dict, and _apply's update() keeps a
        # known fleet where it was and appends a new one (a batch's `fleets` is in the
        # order of its fleets' first bundles, write/classify.py).
        rows = [(f, h.sequence, h.idx, self.store.leaves[h.idx].leaf_hash, h.retired)
                for f, h in self.store.fleets.items()]
        last = max((row.idx for row in self.store.leaves if row.fleet_id is None), default=None)
        self.store._fault("read_heads", "after")
        return HeadsSnapshot(rows, last or 0, None if last is None else self.store.leaves[last].leaf)

    async def append(self, leaves: Sequence[NewLeaf], tiles: dict[TileKey, bytes],
                     fleets: dict[str, FleetHead], new_size: int, new_root: bytes, note: str,
                     signed_at_ms: int, integrated_at: dt.datetime) -> CheckpointRow:
        self.store._fault("append", "before")
        await asyncio.sleep(0)
        assert self.staged is None, "one append per batch"
        resign = new_size == self.latest.tree_size  # Store.append: no row, only log_state's slot
        cp_id = self.latest.id if resign else self.store.checkpoint_rows[-1].id + 1
        cp = CheckpointRow(cp_id, new_size, new_root, signed_at_ms, note)
        staged = _Staged(list(leaves), dict(tiles), dict(fleets), cp, integrated_at, resign)
        self.store._check(self.latest, staged)
        self.staged = staged
        self.store._fault("append", "after")
        return cp

    async def commit(self) -> None:
        self.store._fault("commit", "before")
        await asyncio.sleep(0)
        staged, self.staged = self.staged, None
        if staged is not None:
            self.store._apply(staged)
        self.store._fault("commit", "after")  # committed, but the caller hears a failure
        self.committed = True
