"""The sequencer lock across processes: a waiter continues from what the holder committed.

Two pools stand in for two server processes on one database. While one holds the
log_state lock and moves the log to a new checkpoint, the other waits for the lock;
once it gets it, it must see the committed state (not fail, not see the old one).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest

from logserver.storage import Store, create_pool, migrate

EMPTY = hashlib.sha256(b"").digest()
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
async def pools(database_url):
    a, b = await create_pool(database_url), await create_pool(database_url)
    async with a.acquire() as conn:
        await migrate(conn)
    store = Store(a)
    await store.ensure_identity("example.com/lock-test", b"k" * 32, "vkey")
    await store.initialize_state("cp0\n", EMPTY, 1000)
    yield a, b
    await a.close()
    await b.close()


async def wait_until_blocked(pool, timeout_s: float = 10.0) -> None:
    """Until some backend waits for a row lock (the second sequencer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await pool.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
    ):
        assert loop.time() < deadline, "the second sequencer never waited for the lock"
        await asyncio.sleep(0.01)


async def test_waiting_sequencer_sees_the_checkpoint_committed_before_it(pools):
    first, second = Store(pools[0]), Store(pools[1])

    async def second_sequencer():
        async with second.sequencing(10_000) as tx:
            return tx.latest

    async with first.sequencing(10_000) as tx:
        committed = await tx.append([], {}, {}, 0, EMPTY, "cp0 again\n", 2000, NOW)
        waiter = asyncio.create_task(second_sequencer())
        await wait_until_blocked(pools[0])
    seen = await waiter
    assert (seen.id, seen.signed_at_ms, seen.note) == (committed.id, 2000, "cp0 again\n")
