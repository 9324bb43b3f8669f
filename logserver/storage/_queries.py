"""SQL shared by the Store (on its pool) and the sequencing transaction (on its
connection): record-to-row conversion and the two multi-key reads."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from .rows import CheckpointRow, ExistingEntry, LeafRow, TileKey

LEAF_COLUMNS = "idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, integrated_at"
# The latest checkpoint, as a checkpoint row: log_state's slot (the newest signature)
# and the id of the stored row of its size (migrations/0003_checkpoint_slot.sql).
LATEST_COLUMNS = "s.checkpoint_id AS id, s.tree_size, s.root, s.signed_at_ms, s.note"


def checkpoint_row(row: asyncpg.Record) -> CheckpointRow:
    return CheckpointRow(row["id"], row["tree_size"], bytes(row["root"]), row["signed_at_ms"], row["note"])


def leaf_row(row: asyncpg.Record) -> LeafRow:
    return LeafRow(
        row["idx"], bytes(row["leaf_hash"]), bytes(row["leaf"]), row["fleet_id"],
        row["sequence"], None if row["payload_digest"] is None else bytes(row["payload_digest"]),
        row["integrated_at"],
    )


async def read_tiles(conn: asyncpg.Pool | asyncpg.Connection, keys: Iterable[TileKey],
                     timeout: float | None = None) -> dict[TileKey, bytes]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT t.level, t.idx, t.hashes FROM tiles t "
        "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx",
        [k[0] for k in keys], [k[1] for k in keys], timeout=timeout,
    )
    return {(r["level"], r["idx"]): bytes(r["hashes"]) for r in rows}


async def find_entries(conn: asyncpg.Pool | asyncpg.Connection, keys: Sequence[tuple[str, int]],
                       timeout: float | None = None) -> dict[tuple[str, int], ExistingEntry]:
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT l.fleet_id, l.sequence, l.idx, l.leaf_hash, l.payload_digest FROM leaves l "
        "JOIN unnest($1::text[], $2::bigint[]) AS k(fleet_id, sequence) "
        "ON l.fleet_id = k.fleet_id AND l.sequence = k.sequence",
        [k[0] for k in keys], [k[1] for k in keys], timeout=timeout,
    )
    return {
        (r["fleet_id"], r["sequence"]): ExistingEntry(r["idx"], bytes(r["leaf_hash"]), bytes(r["payload_digest"]))
        for r in rows
    }
