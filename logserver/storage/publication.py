"""Publication progress per static target (migrations/0004_publication.sql).

Written by the static publisher (logserver/publish/) after a target's checkpoint
object is replaced, never inside the sequencing transaction; read by metrics,
/readyz and `logserver fsck --target`.
"""
from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class TargetProgress:
    """The checkpoint a target is known to hold, with every object it needs."""

    target: str
    tree_size: int
    root: bytes
    signed_at_ms: int


class PublicationStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def progress(self, target: str) -> TargetProgress | None:
        row = await self.pool.fetchrow(
            "SELECT target, tree_size, root, signed_at_ms FROM publication_progress WHERE target = $1", target)
        return None if row is None else _progress(row)

    async def all_progress(self) -> dict[str, TargetProgress]:
        rows = await self.pool.fetch("SELECT target, tree_size, root, signed_at_ms FROM publication_progress")
        return {r["target"]: _progress(r) for r in rows}

    async def record(self, progress: TargetProgress) -> TargetProgress:
        """Move the target's progress forward to `progress`, unless it is there already
        (another process published as far, or further). Returns the stored progress.
        Atomic; durable on return. The schema refuses a size and root that no stored
        checkpoint has (IntegrityConstraintViolationError)."""
        row = await self.pool.fetchrow(
            "INSERT INTO publication_progress AS p (target, tree_size, root, signed_at_ms) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (target) DO UPDATE SET tree_size = EXCLUDED.tree_size, root = EXCLUDED.root, "
            "signed_at_ms = EXCLUDED.signed_at_ms, updated_at = now() "
            "WHERE (p.tree_size, p.signed_at_ms) < (EXCLUDED.tree_size, EXCLUDED.signed_at_ms) "
            "RETURNING target, tree_size, root, signed_at_ms",
            progress.target, progress.tree_size, progress.root, progress.signed_at_ms,
        )
        if row is not None:
            return _progress(row)
        stored = await self.progress(progress.target)
        assert stored is not None, "the conflicting row exists"
        return stored

    async def root_at(self, tree_size: int) -> bytes | None:
        """The root the log signed for `tree_size`, or None if it signed no checkpoint of that size."""
        root = await self.pool.fetchval("SELECT root FROM checkpoints WHERE tree_size = $1 LIMIT 1", tree_size)
        return None if root is None else bytes(root)


def _progress(row: asyncpg.Record) -> TargetProgress:
    return TargetProgress(row["target"], row["tree_size"], bytes(row["root"]), row["signed_at_ms"])
