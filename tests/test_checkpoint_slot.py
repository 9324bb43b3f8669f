"""The checkpoint slot (migrations/0003_checkpoint_slot.sql, issue 23 section 3), in SQL.

A log that applied 0001 and 0002 stored a checkpoint row per re-sign. After 0003
a row is stored only when the size changes, the latest signature lives in
log_state, and the schema itself refuses a second row of the last size and a
slot that goes back or names another root than its size's stored row.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from logserver.storage import CheckpointRow, FleetHead, NewLeaf, Store, create_pool, migrate
from logserver.storage.migrate import load_migrations, migrations_dir

EMPTY = hashlib.sha256(b"").digest()
H = lambda s: hashlib.sha256(s).digest()  # noqa: E731
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
async def pool(database_url, tmp_path_factory):
    """A log as it was in the field before 0003: two rows for size 0 (a re-sign)."""
    old = tmp_path_factory.mktemp("migrations-0001-0002")
    for name in ("0001_log.sql", "0002_cosignatures.sql"):
        with (migrations_dir() / name).open("rb") as src, (old / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    pool = await create_pool(database_url)
    async with pool.acquire() as conn:
        assert await migrate(conn, Path(old)) == ["0001_log.sql", "0002_cosignatures.sql"]
        first = await conn.fetchval("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) "
                                    "VALUES (0, $1, 1000, 'cp0\n') RETURNING id", EMPTY)
        await conn.execute("INSERT INTO log_state (tree_size, root, checkpoint_id) VALUES (0, $1, $2)", EMPTY, first)
        again = await conn.fetchval("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) "
                                    "VALUES (0, $1, 2000, 'cp0 re-signed\n') RETURNING id", EMPTY)
        await conn.execute("UPDATE log_state SET checkpoint_id = $1", again)
        # 0003 and every later migration (0004 publication, 0005 refresh) apply over it.
        applied = await migrate(conn)
        assert applied[0] == "0003_checkpoint_slot.sql"
        assert applied == [m.name for m in load_migrations()][2:]
    yield pool
    await pool.close()


async def test_the_migration_keeps_history_and_fills_the_slot(pool):
    rows = await Store(pool).checkpoints()
    assert [(r.tree_size, r.signed_at_ms, r.note) for r in rows] == [(0, 1000, "cp0\n"), (0, 2000, "cp0 re-signed\n")]
    assert await Store(pool).latest_checkpoint() == CheckpointRow(rows[1].id, 0, EMPTY, 2000, "cp0 re-signed\n")


async def test_a_resign_moves_the_slot_and_stores_no_row(pool):
    store = Store(pool)
    before = await store.checkpoints()
    latest = await store.latest_checkpoint()
    for n in range(1, 4):
        async with store.sequencing(1000) as tx:
            cp = await tx.append([], {}, {}, latest.tree_size, latest.root, f"cp0 re-sign {n}\n",
                                 latest.signed_at_ms + n, NOW)
            await tx.commit()
        assert cp == CheckpointRow(latest.id, latest.tree_size, latest.root, latest.signed_at_ms + n, cp.note)
        assert await store.latest_checkpoint() == cp
    assert await store.checkpoints() == before
    # A batch that appends stores its size's row and sets the slot to it.
    async with store.sequencing(1000) as tx:
        leaf = NewLeaf(0, H(b"leaf0"), b"leaf0", "fleet-a", 0, H(b"p0"))
        grown = await tx.append([leaf], {(0, 0): leaf.leaf_hash}, {"fleet-a": FleetHead(0, 0)}, 1, H(b"root1"), "cp1\n",
                                latest.signed_at_ms + 10, NOW)
        await tx.commit()
    assert (await store.checkpoints())[-1] == grown == await store.latest_checkpoint()
    assert grown.id > latest.id


async def test_a_second_row_of_the_last_size_is_refused(pool):
    latest = await Store(pool).latest_checkpoint()
    with pytest.raises(asyncpg.PostgresError, match="stored already"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, $3, 'x')",
                           latest.tree_size, latest.root, latest.signed_at_ms + 1)
    with pytest.raises(asyncpg.PostgresError, match="fork"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, $3, 'x')",
                           latest.tree_size, H(b"other"), latest.signed_at_ms + 1)
    # A new size must not be signed before the slot's (re-signed) time either.
    rows = await Store(pool).checkpoints()
    with pytest.raises(asyncpg.PostgresError, match="before"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, $3, 'x')",
                           latest.tree_size + 1, H(b"next"), rows[-1].signed_at_ms - 1)


@pytest.mark.parametrize("sql, match", [
    ("UPDATE log_state SET signed_at_ms = signed_at_ms - 1", "forward"),  # time goes back
    ("UPDATE log_state SET note = 'same time'", "forward"),  # a re-sign must be newer
    ("UPDATE log_state SET root = '\\x" + "00" * 32 + "', signed_at_ms = signed_at_ms + 1", "must name"),
    ("UPDATE log_state SET tree_size = tree_size + 1, signed_at_ms = signed_at_ms + 1", "must name"),
    ("UPDATE log_state SET tree_size = 0, signed_at_ms = signed_at_ms + 1", "forward"),  # size goes back
    ("UPDATE log_state SET checkpoint_id = (SELECT min(id) FROM checkpoints), signed_at_ms = signed_at_ms + 1",
     "forward"),
    ("DELETE FROM log_state", "forward"),
])
async def test_the_slot_only_moves_forward_at_its_stored_row(pool, sql, match):
    before = await Store(pool).latest_checkpoint()
    assert before.tree_size == 1  # after test_a_resign_moves_the_slot_and_stores_no_row
    with pytest.raises(asyncpg.PostgresError, match=match):
        await pool.execute(sql)
    assert await Store(pool).latest_checkpoint() == before
