"""The schema's own invariants, checked against real PostgreSQL."""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib

import asyncpg
import pytest

from logserver.storage import (
    CommitRolledBackError,
    FleetHead,
    IdentityMismatchError,
    LogStore,
    NewLeaf,
    Sequencing,
    Store,
    TileSource,
    create_pool,
    migrate,
)
from logserver.storage.migrate import load_migrations

EMPTY = hashlib.sha256(b"").digest()
H = lambda s: hashlib.sha256(s).digest()  # noqa: E731
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
async def pool(database_url):
    pool = await create_pool(database_url)
    async with pool.acquire() as conn:
        applied = await migrate(conn)
        assert applied[:3] == ["0001_log.sql", "0002_cosignatures.sql", "0003_checkpoint_slot.sql"]
        assert applied == [m.name for m in load_migrations()]  # every migration, in order
        assert await migrate(conn) == []  # idempotent
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def store(pool):
    store = Store(pool)
    assert await store.ensure_identity("example.com/log", b"k" * 32, "vkey") is True
    assert await store.initialize_state("cp0\n", EMPTY, 1000) is True
    assert await store.initialize_state("cp0\n", EMPTY, 1000) is False
    return store


async def test_identity_is_checked(store):
    assert await store.ensure_identity("example.com/log", b"k" * 32, "vkey") is False
    with pytest.raises(IdentityMismatchError, match="origin"):
        await store.ensure_identity("example.com/other", b"k" * 32, "vkey")
    with pytest.raises(IdentityMismatchError, match="log key"):
        await store.ensure_identity("example.com/log", b"x" * 32, "vkey2")


async def test_the_store_implements_the_seam(store):
    """The protocols the sequencer and the reader are written against (storage/protocols.py);
    mypy checks the same structurally where the server passes a Store to them."""
    as_log_store: LogStore = store
    as_tile_source: TileSource = store
    assert isinstance(as_log_store, LogStore) and isinstance(as_tile_source, TileSource)
    async with store.sequencing(1000) as tx:
        assert isinstance(tx, Sequencing)


async def test_append_and_read_back(store):
    leaves = [NewLeaf(i, H(b"%d" % i), b"leaf%d" % i, "fleet-a", i, H(b"p%d" % i)) for i in range(3)]
    async with store.sequencing(1000) as tx:
        assert tx.latest.tree_size == 0
        cp = await tx.append(leaves, {(0, 0): b"".join(leaf.leaf_hash for leaf in leaves)},
                             {"fleet-a": FleetHead(2, 2)}, 3, H(b"root3"), "cp3\n", 2000, NOW)
        await tx.commit()
    assert cp.tree_size == 3
    latest = await store.latest_checkpoint()
    assert (latest.tree_size, latest.root, latest.note) == (3, H(b"root3"), "cp3\n")
    assert [leaf.leaf for leaf in await store.read_leaves(0, 10)] == [b"leaf0", b"leaf1", b"leaf2"]
    assert (await store.fleet_latest("fleet-a")).sequence == 2
    assert (await store.read_tiles([(0, 0), (1, 0)])) == {(0, 0): b"".join(leaf.leaf_hash for leaf in leaves)}
    found = await store.find_entries([("fleet-a", 1), ("fleet-a", 9)])
    assert list(found) == [("fleet-a", 1)] and found[("fleet-a", 1)].idx == 1


@pytest.mark.parametrize("sql", [
    "UPDATE leaves SET leaf = 'x' WHERE idx = 0",
    "DELETE FROM leaves WHERE idx = 0",
    "UPDATE checkpoints SET note = 'x'",
    "DELETE FROM checkpoints",
    "UPDATE log_identity SET origin = 'x'",
    "UPDATE tiles SET hashes = substring(hashes FROM 33)",
    "UPDATE tiles SET hashes = overlay(hashes PLACING '\\x00'::bytea FROM 1 FOR 1)",
    "DELETE FROM tiles",
    "UPDATE log_state SET tree_size = 1",
    "UPDATE fleets SET sequence = 1",
    "INSERT INTO leaves VALUES (-1, '\\x00', 'x', 'f', 0, '\\x00', now())",
    "INSERT INTO leaves VALUES (5, decode(repeat('ab', 32), 'hex'), 'x', 'bad fleet id', 0, "
    "decode(repeat('ab', 32), 'hex'), now())",
])
async def test_schema_refuses_history_rewrites(store, pool, sql):
    # The rewrites must hit rows: a statement that matches none would "pass" vacuously
    # (e.g. when this test runs without test_append_and_read_back before it).
    if (await store.latest_checkpoint()).tree_size == 0:
        leaves = [NewLeaf(i, H(b"%d" % i), b"leaf%d" % i, "fleet-a", i, H(b"p%d" % i)) for i in range(3)]
        async with store.sequencing(1000) as tx:
            await tx.append(leaves, {(0, 0): b"".join(leaf.leaf_hash for leaf in leaves)},
                            {"fleet-a": FleetHead(2, 2)}, 3, H(b"root3"), "cp3\n", 2000, NOW)
            await tx.commit()
    for table in ("leaves", "checkpoints", "tiles", "fleets", "log_identity", "log_state"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") > 0, table
    before = await pool.fetchval("SELECT count(*) FROM leaves")
    with pytest.raises(asyncpg.PostgresError):
        await pool.execute(sql)
    assert await pool.fetchval("SELECT count(*) FROM leaves") == before


async def test_checkpoints_cannot_fork_or_go_back(store, pool):
    latest = await store.latest_checkpoint()
    with pytest.raises(asyncpg.PostgresError, match="fork"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, $3, 'x')",
                           latest.tree_size, H(b"other"), latest.signed_at_ms + 1)
    with pytest.raises(asyncpg.PostgresError, match="below"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES (1, $1, $2, 'x')",
                           H(b"r"), latest.signed_at_ms + 1)
    with pytest.raises(asyncpg.PostgresError, match="before"):
        await pool.execute("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) VALUES ($1, $2, 1, 'x')",
                           latest.tree_size, latest.root)


async def test_sequencer_lock_is_exclusive(store):
    async with store.sequencing(1000):
        with pytest.raises(asyncpg.LockNotAvailableError):
            async with store.sequencing(100):
                pass


async def append_one(tx, name: bytes, fleet: str):
    """Append one leaf named `name` (sequence 1 of `fleet`) and a checkpoint over it."""
    n = tx.latest.tree_size
    leaf = NewLeaf(n, H(name), name, fleet, 1, H(b"p-" + name))
    return await tx.append([leaf], {}, {fleet: FleetHead(1, n)}, n + 1, H(b"root-" + name), f"cp-{name.decode()}\n",
                           tx.latest.signed_at_ms + 1, NOW)


async def test_commit_of_an_aborted_transaction_raises_and_stores_nothing(store, pool):
    """PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK, without an
    error: commit() must raise, or a rolled-back batch would be acknowledged."""
    before = await store.latest_checkpoint()
    n = before.tree_size
    for explicit in (True, False):
        # Without the commit() call, leaving the block rolls back (it used to commit,
        # and then raised the same way): nothing to raise, nothing stored.
        with pytest.raises(CommitRolledBackError, match="ROLLBACK") if explicit else contextlib.nullcontext():
            async with store.sequencing(1000) as tx:
                await append_one(tx, b"aborted", "fleet-b")
                # A failed statement whose error is caught: the transaction is aborted.
                with contextlib.suppress(asyncpg.DivisionByZeroError):
                    await tx.conn.execute("SELECT 1 / 0")
                if explicit:
                    await tx.commit()
        assert not tx.committed
    assert await store.latest_checkpoint() == before
    assert await pool.fetchval("SELECT count(*) FROM leaves") == n
    async with store.sequencing(1000) as tx:  # the role and the connections are fine afterwards
        assert tx.latest == before


async def test_a_block_that_does_not_commit_stores_nothing(store, pool):
    """Store.sequencing rolls back unless the block commits: a block that appends and
    returns, or appends and raises, leaves the log as it was."""
    before = await store.latest_checkpoint()
    n = before.tree_size
    for raises in (False, True):
        with pytest.raises(RuntimeError, match="after the append") if raises else contextlib.nullcontext():
            async with store.sequencing(1000) as tx:
                cp = await append_one(tx, b"uncommitted", "fleet-c")
                assert cp.tree_size == n + 1  # the statement succeeded
                if raises:
                    raise RuntimeError("a failure after the append")
        assert not tx.committed
        assert await store.latest_checkpoint() == before
        assert await pool.fetchval("SELECT count(*) FROM leaves") == n
        assert await store.find_entries([("fleet-c", 1)]) == {}
