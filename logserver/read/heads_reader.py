"""Fleet-head proofs for the route and the static publisher (docs/fleet-heads.md).

A proof is made at one checkpoint of size N, whose last leaf (N - 1) is a HEADS leaf,
from the heads table at N: every fleet's newest bundle among the first N leaves.
`HeadsReader` keeps that table in memory, per process (each `serve --workers` worker
has its own, as it has its own TreeReader):

* built once, on first use, from the database's `fleets` rows and the tree size they
  belong to (one statement: `Store.heads_snapshot`), O(fleets);
* advanced from M to N by reading only the leaves of [M, N) (`Store.heads_changes`:
  fleet, sequence, index, leaf hash and retired flag, no leaf bytes), applied to a copy
  (`HeadsTable.copy`, pointer copies) so the tables of the last few sizes stay usable
  while a request or a static pass still builds proofs at them: never by folding the
  whole log per request;
* checked, at every size it reaches, against the HEADS leaf the log stored at N - 1: the
  same count and root, or a loud CRITICAL log line and no proof at all (a proof from an
  inconsistent table would be refused by every verifier and reported by every monitor,
  but the log must not serve it in the first place). The snapshots are then dropped,
  so the next request rebuilds from the database.

The table can be *ahead* of the checkpoint a caller wants: built at the database's
size while the published (witness-cosigned) checkpoint is older. It never goes back;
`HeadsAheadError` names the size to wait for (the route waits for its publication,
bounded, like a receipt does, and answers 503 past that).
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from ..bundle import decode_leaf
from ..bundle.heads import HeadsError, HeadsRow, HeadsTable, decode_heads_leaf, is_heads_leaf
from ..bundle.payload import ACTIVE, RETIRED
from ..formats.checkpoint import parse_checkpoint
from ..formats.fleet_head import BundleProof, HeadsLeafProof, build_fleet_head_proof
from ..formats.note import parse_note
from ..storage import CheckpointRow, Store
from .tree_reader import TreeReader

log = logging.getLogger(__name__)

KEEP_SIZES = 4         # the tables of this many of the newest sizes are kept
CHANGES_PAGE = 10_000  # leaves read per statement while advancing
ENVELOPES_PAGE = 256   # bundle leaves read per statement for many proofs at once


class HeadsUnavailableError(Exception):
    """No fleet-head proof can be made now (the route answers 503)."""


class HeadsAheadError(HeadsUnavailableError):
    """The table is already past the checkpoint asked for: wait for `size` to be published."""

    def __init__(self, size: int, wanted: int):
        super().__init__(f"the heads table is at tree size {size}, beyond the checkpoint's {wanted}; "
                         f"waiting for a published checkpoint of size {size}")
        self.size = size


class HeadsInconsistentError(HeadsUnavailableError):
    """The table folded from the database does not match the HEADS leaf the log stored."""


class NoHeadsLeafError(Exception):
    """The checkpoint's last leaf is not a HEADS leaf: the log is empty, or it predates
    HEADS leaves and has not appended a batch since (docs/fleet-heads.md, "The HEADS leaf")."""


@dataclass(frozen=True)
class HeadsAt:
    """The heads table at `size`, with the stored leaf at `size - 1` if it is a HEADS leaf
    (checked to commit to `table`)."""

    size: int
    table: HeadsTable
    last_heads: int  # index of the newest HEADS leaf below `size` (0: none)
    heads_leaf: bytes | None  # the 49 bytes at size - 1, None if that leaf is no HEADS leaf


class HeadsReader:
    def __init__(self, store: Store, tree: TreeReader, *, keep: int = KEEP_SIZES):
        self.store = store
        self.tree = tree
        self.keep = keep
        self._sizes: OrderedDict[int, HeadsAt] = OrderedDict()  # oldest first
        self._lock = asyncio.Lock()

    async def at(self, size: int) -> HeadsAt:
        """The heads table at tree size `size`. Raises HeadsAheadError when the table is
        already past it, HeadsInconsistentError when the database disagrees with itself."""
        held = self._sizes.get(size)
        if held is not None:
            return held
        async with self._lock:
            held = self._sizes.get(size)
            if held is not None:
                return held
            if not self._sizes:
                await self._build()
            newest = self._sizes[next(reversed(self._sizes))]
            if newest.size > size:
                if size in self._sizes:
                    return self._sizes[size]
                raise HeadsAheadError(newest.size, size)
            if newest.size < size:
                await self._advance(newest, size)
            return self._sizes[size]

    async def _build(self) -> None:
        snapshot = await self.store.heads_snapshot()
        try:
            table = HeadsTable.from_rows(
                HeadsRow(f, s, i, h, RETIRED if retired else ACTIVE) for f, s, i, h, retired in snapshot.heads.rows
            )
        except HeadsError as e:
            self._inconsistent(f"the stored fleet heads do not make a table ({e})")
        await self._adopt(snapshot.tree_size, table, snapshot.heads.last_heads_index)

    async def _advance(self, base: HeadsAt, size: int) -> None:
        table = base.table.copy()
        last_heads = base.last_heads
        at = base.size
        while at < size:
            end = min(size, at + CHANGES_PAGE)
            changes = await self.store.heads_changes(at, end)
            if len(changes) != end - at:
                raise RuntimeError(f"storage returned {len(changes)} leaves for [{at}, {end})")
            for c in changes:
                if c.fleet_id is None:
                    last_heads = c.idx
                    continue
                assert c.sequence is not None
                try:
                    table.apply(HeadsRow(c.fleet_id, c.sequence, c.idx, c.leaf_hash, RETIRED if c.retired else ACTIVE))
                except HeadsError as e:
                    self._inconsistent(f"leaf {c.idx} cannot enter the heads table folded from the database ({e})")
            at = end
        await self._adopt(size, table, last_heads)

    async def _adopt(self, size: int, table: HeadsTable, last_heads: int) -> None:
        """Check the table against the stored leaf at size - 1 and keep it."""
        heads_leaf: bytes | None = None
        if size > 0:
            leaf = (await self.store.leaves_at([size - 1])).get(size - 1)
            if leaf is None:
                raise RuntimeError(f"storage has no leaf {size - 1} below its tree size {size}")
            if is_heads_leaf(leaf.leaf):
                stored = decode_heads_leaf(leaf.leaf)
                # A release 0.2.0 leaf commits to the sorted layout: checked as such, but
                # no proof is made at it (the format's verifiers refuse its type).
                want = table.heads_leaf(stored.previous, stored.layout).root
                if (stored.count, stored.root) != (table.count, want):
                    self._inconsistent(
                        f"the HEADS leaf stored at {size - 1} (type {stored.layout}) says count {stored.count}, "
                        f"root {stored.root.hex()}; the heads table folded from the database has count "
                        f"{table.count}, root {want.hex()}")
                heads_leaf = None if stored.legacy else leaf.leaf
        table.root()  # brings every stored subtree hash up to date: proofs then only read
        self._sizes[size] = HeadsAt(size, table, last_heads, heads_leaf)
        while len(self._sizes) > self.keep:
            self._sizes.popitem(last=False)

    def _inconsistent(self, message: str) -> NoReturn:
        self._sizes.clear()  # the next request rebuilds from the database
        log.critical("fleet heads: %s; no fleet-head proof is served until they agree (run `logserver fsck`)",
                     message)
        raise HeadsInconsistentError(message)

    # --- proofs -------------------------------------------------------------------------

    async def proof(self, fleet_id: str, cp: CheckpointRow) -> bytes:
        """The canonical fleet-head proof of `fleet_id` at `cp` (formats/fleet_head.py):
        its row and bundle, its retirement, or its absence."""
        heads = await self.at(cp.tree_size)
        leaf_proof = await self._heads_leaf_proof(heads)
        return (await self._build_many([fleet_id], heads, cp, leaf_proof))[0][1]

    async def proofs(self, cp: CheckpointRow, fleet_ids: Iterable[str] | None = None) \
            -> list[tuple[str, bytes]]:
        """The proofs of the given fleets (default: every fleet with a row) at `cp`, the
        static publisher's objects; envelopes are read a page at a time."""
        heads = await self.at(cp.tree_size)
        leaf_proof = await self._heads_leaf_proof(heads)
        wanted = [r.fleet_id for r in heads.table] if fleet_ids is None else list(fleet_ids)
        out: list[tuple[str, bytes]] = []
        for i in range(0, len(wanted), ENVELOPES_PAGE):
            out += await self._build_many(wanted[i:i + ENVELOPES_PAGE], heads, cp, leaf_proof)
        return out

    async def _heads_leaf_proof(self, heads: HeadsAt) -> HeadsLeafProof:
        if heads.heads_leaf is None:
            raise NoHeadsLeafError(
                f"the checkpoint of size {heads.size} does not end with a HEADS leaf of this release"
                + (" (the log is empty)" if heads.size == 0 else
                   " (the log predates HEADS leaves, or ends with one of release 0.2.0's: its next batch "
                   "appends one)"))
        index = heads.size - 1
        path = await self.tree.inclusion_proof(index, heads.size)
        return HeadsLeafProof(index, heads.heads_leaf, tuple(path))

    async def _build_many(self, fleet_ids: Sequence[str], heads: HeadsAt, cp: CheckpointRow,
                          leaf_proof: HeadsLeafProof) -> list[tuple[str, bytes]]:
        table = heads.table
        positions = {f: table.position(f) for f in fleet_ids}
        indices = [table.row(p).leaf_index for p in positions.values() if p is not None]
        leaves = await self.store.leaves_at(indices) if indices else {}
        # The checkpoint is parsed once; the first proof of the page is parsed back (the
        # builder's own check), the others are made the same way from checked rows.
        checkpoint = parse_checkpoint(parse_note(cp.note).text)
        out: list[tuple[str, bytes]] = []
        for fleet_id, position in positions.items():
            check = not out
            if position is None:
                covering = table.covering(fleet_id)
                data = build_fleet_head_proof(fleet_id, cp.note, leaf_proof, absent=True,
                                              covering=None if covering is None else table.proved_row(covering),
                                              checkpoint=checkpoint, check=check)
            else:
                row = table.proved_row(position)
                stored = leaves.get(row.leaf_index)
                if stored is None or stored.leaf_hash != row.leaf_hash:
                    self._inconsistent(f"fleet {fleet_id!r}: its row names leaf {row.leaf_index} with hash "
                                       f"{row.leaf_hash.hex()}, which the database does not hold")
                path = await self.tree.inclusion_proof(row.leaf_index, heads.size)
                bundle = BundleProof(decode_leaf(stored.leaf).to_dict(), tuple(path))
                data = build_fleet_head_proof(fleet_id, cp.note, leaf_proof, row=row, bundle=bundle,
                                              checkpoint=checkpoint, check=check)
            out.append((fleet_id, data))
        return out
