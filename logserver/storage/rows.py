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
