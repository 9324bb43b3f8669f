"""Storage of witness cosignatures and published (cosigned) checkpoints
(migrations/0002_cosignatures.sql). Used only when the log has a witness policy."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ._queries import checkpoint_row
from .rows import CheckpointRow


@dataclass(frozen=True)
class CosignatureLine:
    witness: str      # the witness's name in the policy
    key_id: bytes
    line: str         # the verified note signature line, newline included


class CosignatureStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def add(self, checkpoint_id: int, lines: Sequence[CosignatureLine]) -> None:
        """Keep verified cosignatures of a checkpoint (a repeat is ignored). Atomic."""
        if not lines:
            return
        await self.pool.execute(
            "INSERT INTO checkpoint_cosignatures (checkpoint_id, witness, key_id, line) "
            "SELECT $1, * FROM unnest($2::text[], $3::bytea[], $4::text[]) ON CONFLICT DO NOTHING",
            checkpoint_id, [c.witness for c in lines], [c.key_id for c in lines], [c.line for c in lines],
        )

    async def witness_sizes(self) -> dict[str, int]:
        """The largest tree size each witness (by policy name) is known to have cosigned."""
        rows = await self.pool.fetch(
            "SELECT s.witness, max(c.tree_size) AS size FROM checkpoint_cosignatures s "
            "JOIN checkpoints c ON c.id = s.checkpoint_id GROUP BY s.witness"
        )
        return {r["witness"]: r["size"] for r in rows}

    async def publish(self, checkpoint: CheckpointRow, note: str, quorum_met: bool) -> bool:
        """Publish `note` (the checkpoint with cosignature lines) unless a checkpoint at
        least as new is published already. Returns whether it was inserted; durable on return."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Serialise publishers across processes: the forward-only check reads the
            # last published row, which a concurrent uncommitted insert would not show.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('logserver.publish'))")
            status = await conn.execute(
                "INSERT INTO published_checkpoints (checkpoint_id, tree_size, note, quorum_met) "
                "SELECT $1, $2, $3, $4 WHERE NOT EXISTS "
                "(SELECT 1 FROM published_checkpoints WHERE checkpoint_id >= $1 OR tree_size > $2)",
                checkpoint.id, checkpoint.tree_size, note, quorum_met,
            )
        return status == "INSERT 0 1"

    async def stored(self, checkpoint: CheckpointRow) -> CheckpointRow:
        """The stored row of `checkpoint`'s size: its first signature, which is what
        is cosigned and published (a re-sign lives only in log_state; migrations/
        0003_checkpoint_slot.sql). `checkpoint` itself when it is that row."""
        row = await self.pool.fetchrow("SELECT * FROM checkpoints WHERE id = $1", checkpoint.id)
        if row is None:
            raise LookupError(f"checkpoint {checkpoint.id} (size {checkpoint.tree_size}) is not stored")
        stored = checkpoint_row(row)
        if (stored.tree_size, stored.root) != (checkpoint.tree_size, checkpoint.root):
            raise AssertionError(
                f"checkpoint {checkpoint.id}: stored size {stored.tree_size} root {stored.root.hex()}, "
                f"offered size {checkpoint.tree_size} root {checkpoint.root.hex()}")
        return stored

    async def publish_refresh(self, resign: CheckpointRow, note: str, quorum_met: bool) -> bool:
        """Publish `note`, a re-sign of a published size with cosignature lines added,
        unless a refresh signed as late or later is there already (migration 0005).
        Returns whether it was stored; durable on return."""
        status = await self.pool.execute(
            "INSERT INTO published_refresh AS r (checkpoint_id, tree_size, signed_at_ms, note, quorum_met) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (singleton) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id, "
            "tree_size = EXCLUDED.tree_size, signed_at_ms = EXCLUDED.signed_at_ms, note = EXCLUDED.note, "
            "quorum_met = EXCLUDED.quorum_met, published_at = now() "
            "WHERE (r.tree_size, r.signed_at_ms) < (EXCLUDED.tree_size, EXCLUDED.signed_at_ms)",
            resign.id, resign.tree_size, resign.signed_at_ms, note, quorum_met,
        )
        return status == "INSERT 0 1"

    async def latest_published(self) -> CheckpointRow | None:
        """The newest published checkpoint, its note carrying the cosignatures: the last
        published size's first signature, or its cosigned refresh if there is one."""
        row = await self.pool.fetchrow(
            "SELECT c.id, c.tree_size, c.root, "
            "CASE WHEN r.signed_at_ms > c.signed_at_ms THEN r.signed_at_ms ELSE c.signed_at_ms END AS signed_at_ms, "
            "CASE WHEN r.signed_at_ms > c.signed_at_ms THEN r.note ELSE p.note END AS note "
            "FROM published_checkpoints p JOIN checkpoints c ON c.id = p.checkpoint_id "
            "LEFT JOIN published_refresh r ON r.checkpoint_id = p.checkpoint_id "
            "ORDER BY p.checkpoint_id DESC LIMIT 1"
        )
        if row is None:
            return None
        return CheckpointRow(row["id"], row["tree_size"], bytes(row["root"]), row["signed_at_ms"], row["note"])
