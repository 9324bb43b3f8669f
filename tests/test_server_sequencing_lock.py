"""The sequencer lock across processes: a waiter continues from what the holder committed.

Two pools stand in for two server processes on one database. While one holds the
log_state lock and moves the log to a new checkpoint, the other waits for the lock;
once it gets it, it must see the committed state (not fail, not see the old one).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from dataclasses import dataclass

import asyncpg
import pytest

from logserver.storage import Store, create_pool, open_log

EMPTY = hashlib.sha256(b"").digest()
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class FakeKey:
    """Enough of a log key for open_log; the notes are placeholders, never verified here."""

    origin: str = "example.com/lock-test"
    public_key_bytes: bytes = b"k" * 32
    vkey: str = "vkey"
    vkeys: tuple[str, ...] = ()  # no checkpoint keys to record

    def sign_checkpoint(self, size: int, root: bytes, signed_at_ms: int) -> str:
        return "cp0\n"


@pytest.fixture(scope="module")
async def pools(database_url):
    a, b = await create_pool(database_url), await create_pool(database_url)
    await open_log(a, FakeKey(), clock=lambda: 1.0)  # the first checkpoint is signed at 1000 ms
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
        await tx.commit()
    seen = await waiter
    assert (seen.id, seen.signed_at_ms, seen.note) == (committed.id, 2000, "cp0 again\n")


@pytest.mark.fault
async def test_a_stalled_holder_loses_the_role_and_can_commit_nothing(pools):
    """A holder that stops talking (a frozen process) is cut off by PostgreSQL after the stall timeout.

    The first sequencer takes the lock and then stalls, as a SIGSTOPped process
    would: it sends nothing more. The second, waiting with a lock timeout far
    longer than the stall timeout, must get the role (PostgreSQL terminated the
    staller's session) and commit. When the staller wakes up, its append fails
    and nothing of it is stored.
    """
    first, second = Store(pools[0]), Store(pools[1])
    stall_ms = 300

    async def second_sequencer():
        async with second.sequencing(60_000, stall_ms) as tx:
            old = tx.latest
            cp = await tx.append([], {}, {}, old.tree_size, old.root, "cp by the survivor\n",
                                 old.signed_at_ms + 10, NOW)
            await tx.commit()
            return cp

    with pytest.raises(Exception) as failed:
        async with first.sequencing(60_000, stall_ms) as tx:
            staller_latest = tx.latest
            survivor = asyncio.create_task(second_sequencer())
            # Stall: no statement, no COMMIT, until the survivor has committed (it can
            # only do so once PostgreSQL ended this transaction). A generous deadline,
            # not a measurement.
            committed = await asyncio.wait_for(survivor, 60)
            await tx.append([], {}, {}, staller_latest.tree_size, staller_latest.root, "cp by the staller\n",
                            staller_latest.signed_at_ms + 20, NOW)
            await tx.commit()
    assert isinstance(failed.value, (asyncpg.PostgresError, asyncpg.InterfaceError)), repr(failed.value)
    latest = await second.latest_checkpoint()
    # Same-size re-signs are stored in log_state's slot, not as rows (migration 0003).
    notes = [r.note for r in await second.checkpoints()] + [latest.note]
    assert "cp by the survivor\n" in notes and "cp by the staller\n" not in notes
    assert (latest.id, latest.note) == (committed.id, "cp by the survivor\n")
