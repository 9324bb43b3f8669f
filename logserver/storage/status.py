"""The reads behind the status page (GET /v1/status, docs/operations.md "Status page"):
the fleets, a sample of the tree size over time, and when each witness last cosigned.

Anyone may load the page, so no query here grows with the number of entries: primary
key lookups and range scans with a LIMIT, and one pass over the fleets table (a row per
fleet, not per entry) to count the fleets and pick the most recently updated.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class FleetRow:
    fleet_id: str
    sequence: int
    idx: int       # the index of its latest bundle
    retired: bool  # migration 0006: its latest bundle said "status": "retired"


@dataclass(frozen=True)
class FleetsPage:
    count: int              # fleets in the log
    retired: int            # of which retired
    latest: tuple[FleetRow, ...]  # the most recently updated first, at most the limit


@dataclass(frozen=True)
class SizePoint:
    tree_size: int
    signed_at_ms: int


@dataclass(frozen=True)
class WitnessCosigned:
    """The newest stored cosignature of one witness (checkpoint_cosignatures)."""

    tree_size: int
    received_at: dt.datetime


class StatusStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def fleets(self, limit: int) -> FleetsPage:
        """The number of fleets and retired fleets, and the `limit` most recently
        updated (by the index of their latest bundle, newest first)."""
        async with self.pool.acquire() as conn:
            counts = await conn.fetchrow("SELECT count(*) AS n, count(*) FILTER (WHERE retired) AS r FROM fleets")
            rows = await conn.fetch(
                "SELECT fleet_id, sequence, idx, retired FROM fleets ORDER BY idx DESC LIMIT $1", limit)
        return FleetsPage(counts["n"], counts["r"],
                          tuple(FleetRow(r["fleet_id"], r["sequence"], r["idx"], r["retired"]) for r in rows))

    async def size_history(self, points: int) -> list[SizePoint]:
        """At most `points` stored checkpoints spread evenly over the log's history
        (by checkpoint id, which follows signing order), oldest first, the newest
        stored one included: one index lookup per point. A stored checkpoint is the
        first signature of its size (migration 0003), so each point is the time the
        tree reached that size."""
        if points < 2:
            raise ValueError(f"points: got {points}, want at least 2")
        rows = await self.pool.fetch(
            "WITH b AS (SELECT min(id) AS lo, max(id) AS hi FROM checkpoints) "
            "SELECT DISTINCT c.id, c.tree_size, c.signed_at_ms FROM b, generate_series(0, $1 - 1) AS g(i), "
            "LATERAL (SELECT id, tree_size, signed_at_ms FROM checkpoints "
            "         WHERE id <= b.lo + (b.hi - b.lo) * g.i / ($1 - 1) ORDER BY id DESC LIMIT 1) c "
            "WHERE b.lo IS NOT NULL ORDER BY c.id",
            points,
        )
        return [SizePoint(r["tree_size"], r["signed_at_ms"]) for r in rows]

    async def witnesses_cosigned(self, names: Sequence[str], window: int) -> dict[str, WitnessCosigned]:
        """For each witness (policy name) that cosigned one of the `window` newest
        stored checkpoints, its newest such cosignature. The table has no index by
        witness, so the look-back is bounded: a backward range scan of its primary
        key over the last `window` checkpoint ids."""
        if not names:
            return {}
        rows = await self.pool.fetch(
            "SELECT w.name, x.tree_size, x.received_at FROM unnest($1::text[]) AS w(name), "
            "LATERAL (SELECT c.tree_size, s.received_at FROM checkpoint_cosignatures s "
            "         JOIN checkpoints c ON c.id = s.checkpoint_id "
            "         WHERE s.witness = w.name "
            "           AND s.checkpoint_id > (SELECT coalesce(max(id), 0) FROM checkpoints) - $2 "
            "         ORDER BY s.checkpoint_id DESC LIMIT 1) x",
            list(names), window,
        )
        return {r["name"]: WitnessCosigned(r["tree_size"], r["received_at"]) for r in rows}
