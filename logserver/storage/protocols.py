"""The storage seam: the narrow interfaces the sequencer and the reader use.

The PostgreSQL Store implements them (storage/store.py, storage/sequencing.py);
so does the in-memory, fault-injecting store of the tests (tests/memory_store.py).
They say *what* each step may rely on; the durability contract of each method is
in the PostgreSQL implementation's docstrings, and the in-memory one keeps it.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .rows import CheckpointRow, FleetHead, HeadsSnapshot, NewLeaf, Prefetch, Prefetched, TileKey


@runtime_checkable
class Sequencing(Protocol):
    """One batch's transaction, holding the sequencer role (write/sequencer.py, steps 1-8).

    `latest` and `prefetched` are the snapshot read under the lock. Nothing is
    stored unless commit() is called and returns; leaving the block without it
    rolls back.
    """

    latest: CheckpointRow
    prefetched: Prefetched

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]: ...

    async def read_heads(self) -> HeadsSnapshot: ...

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
    ) -> CheckpointRow: ...

    async def commit(self) -> None: ...


@runtime_checkable
class LogStore(Protocol):
    """What the sequencer needs of storage: the role, as a transaction."""

    def sequencing(
        self, lock_timeout_ms: int, stall_timeout_ms: int = ..., prefetch: Prefetch | None = ...,
    ) -> AbstractAsyncContextManager[Sequencing]: ...


@runtime_checkable
class TileSource(Protocol):
    """What the tree reader needs of storage: the latest checkpoint, hash tiles, leaves."""

    async def latest_checkpoint(self) -> CheckpointRow | None: ...

    async def read_tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, bytes]: ...

    async def read_leaf_bytes(self, start: int, end: int) -> list[bytes]: ...
