"""The typed rows the storage layer hands out and takes in. No SQL, no I/O: the
sequencer, the reader and the in-memory test store speak in these."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

TileKey = tuple[int, int]  # (tile level, tile index); the width is the length of the data / 32


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    tree_size: int
    root: bytes
    signed_at_ms: int
    note: str


BUNDLE_LEAF = 1
"""A leaf's kind: a bundle (docs/formats.md, "Leaf encoding"), which has a fleet, a
sequence and a payload digest..."""
HEADS_LEAF = 2
"""...or a HEADS leaf (docs/fleet-heads.md), which has none of them."""


@dataclass(frozen=True)
class LeafRow:
    idx: int
    leaf_hash: bytes
    leaf: bytes
    fleet_id: str | None  # None for a HEADS leaf
    sequence: int | None
    payload_digest: bytes | None
    integrated_at: dt.datetime

    @property
    def kind(self) -> int:
        return HEADS_LEAF if self.fleet_id is None else BUNDLE_LEAF


@dataclass(frozen=True)
class ExistingEntry:
    """What the log already holds at a (fleet_id, sequence)."""

    idx: int
    leaf_hash: bytes
    payload_digest: bytes


@dataclass(frozen=True)
class NewLeaf:
    """A leaf to append: a bundle (all fields) or a HEADS leaf (no fleet, sequence or
    payload digest)."""

    idx: int
    leaf_hash: bytes
    leaf: bytes
    fleet_id: str | None = None
    sequence: int | None = None
    payload_digest: bytes | None = None

    @property
    def kind(self) -> int:
        return HEADS_LEAF if self.fleet_id is None else BUNDLE_LEAF


@dataclass(frozen=True)
class FleetHead:
    """A fleet's head as a batch sets it: its newest bundle's sequence and index, and
    whether that bundle retired the fleet."""

    sequence: int
    idx: int
    retired: bool = False


@dataclass(frozen=True)
class HeadsSnapshot:
    """What the sequencer needs to rebuild the heads table (docs/fleet-heads.md): each
    fleet's head with its leaf hash, the index of the newest HEADS leaf (0: none), and
    that leaf's bytes (None: none; the sequencer checks the rebuilt table against it)."""

    # (fleet_id, sequence, idx, leaf_hash, retired), in the order the fleets first appeared
    rows: list[tuple[str, int, int, bytes, bool]]
    last_heads_index: int
    last_heads_leaf: bytes | None = None


@dataclass(frozen=True)
class HeadsChange:
    """A leaf of [start, end) as the reader's heads table needs it (read/heads_reader.py):
    a bundle's row fields, or a HEADS leaf (fleet_id None)."""

    idx: int
    fleet_id: str | None  # None: a HEADS leaf
    sequence: int | None
    leaf_hash: bytes
    retired: bool  # this bundle retired its fleet (the fleet's row is retired and names it)


@dataclass(frozen=True)
class SizedHeadsSnapshot:
    """The heads table's rows as one committed state of the log has them, with that
    state's tree size (read in one statement: log_state and fleets change together)."""

    tree_size: int
    heads: HeadsSnapshot


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
    retired: frozenset[str] = frozenset()  # which of those fleets are retired
