"""Migration 0008 (migrations/0008_heads_chain.sql; docs/fleet-heads.md, "The heads
tree"), on real PostgreSQL: `fleets.first_idx`, the index of the fleet's first bundle,
orders the chained heads tree.

* A log migrated to 0007 (release 0.2.0's schema), holding fleets, bundles and type-2
  HEADS leaves, gets first_idx = the smallest index of the fleet's bundles;
* the schema holds it: set on insert (the sequencer writes the first bundle's index,
  also for a fleet with several bundles in its first batch), never changed (the
  fleets_forward trigger), unique, not null, not above the fleet's head;
* a kind-2 leaf may start with 3 (the chained layout) or 2 (0.2.0's, kept in old
  logs); a bundle (kind 1) may start with neither.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pg
from bundle_factory import default_authorities, make_envelope, make_payload
from logserver.bundle.admit import admit
from logserver.bundle.heads import HEADS_LEAF_TYPE, LEGACY_HEADS_LEAF_TYPE, decode_heads_leaf, fold, is_heads_leaf
from logserver.keys.log_key import LogKey
from logserver.merkle import leaf_hash
from logserver.storage import FleetHead, NewLeaf, Store, create_pool, migrate
from logserver.storage.migrate import load_migrations, migrations_dir
from logserver.write.outcomes import Appended
from logserver.write.sequencer import Sequencer
from sequencer_support import running

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
H = lambda s: hashlib.sha256(s).digest()  # noqa: E731
KEY = LogKey("example.com/heads-chain-migration", Ed25519PrivateKey.from_private_bytes(b"\x38" * 32))

UP_TO_0007 = [m.name for m in load_migrations() if m.version <= "0007"]

# The log as 0.2.0 left it: (idx, fleet_id or None for a HEADS leaf, sequence). Fleets
# first appear out of byte order (m, c, a), one of them twice before another's first.
OLD_LEAVES = [(0, "m", 0), (1, "c", 0), (2, None, None), (3, "m", 1), (4, "a", 5), (5, "c", 1), (6, None, None),
              (7, "m", 2), (8, None, None)]
OLD_FIRST = {"m": 0, "c": 1, "a": 4}
OLD_HEADS = {"m": (2, 7), "c": (1, 5), "a": (5, 4)}  # fleet -> (sequence, idx)


def bundle_leaf(fleet: str, sequence: int) -> bytes:
    """A stand-in bundle leaf: starts with 1 like one (the schema checks only that byte)."""
    return b"\x01" + f"{fleet}/{sequence}".encode()


def heads_leaf(idx: int, first_byte: int = LEGACY_HEADS_LEAF_TYPE) -> bytes:
    return bytes([first_byte]) + idx.to_bytes(8, "big") * 2 + H(b"root %d" % idx)


@pytest.fixture(scope="module")
async def pool(database_url, tmp_path_factory):
    """The module's database migrated to 0007, filled as 0.2.0 would have, then upgraded."""
    old = tmp_path_factory.mktemp("migrations-to-0007")
    for name in UP_TO_0007:
        with (migrations_dir() / name).open("rb") as src, (old / name).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    pool = await create_pool(database_url)
    async with pool.acquire() as conn:
        assert await migrate(conn, Path(old)) == UP_TO_0007
        assert "first_idx" not in await columns(conn, "fleets")
        store = Store(pool)
        assert await store.initialize_state("cp0\n", H(b""), 1000)
        for idx, fleet, sequence in OLD_LEAVES:
            if fleet is None:
                leaf = heads_leaf(idx)
                await conn.execute("INSERT INTO leaves (idx, leaf_hash, leaf, kind, integrated_at) "
                                   "VALUES ($1, $2, $3, 2, $4)", idx, leaf_hash(leaf), leaf, NOW)
                continue
            leaf = bundle_leaf(fleet, sequence)
            await conn.execute(
                "INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, integrated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)", idx, leaf_hash(leaf), leaf, fleet, sequence, H(leaf), NOW)
            # 0.2.0's statement: insert, or move a known fleet forward.
            await conn.execute("INSERT INTO fleets (fleet_id, sequence, idx) VALUES ($1, $2, $3) "
                               "ON CONFLICT (fleet_id) DO UPDATE SET sequence = EXCLUDED.sequence, idx = EXCLUDED.idx",
                               fleet, sequence, idx)
        size = len(OLD_LEAVES)
        cp = await conn.fetchval("INSERT INTO checkpoints (tree_size, root, signed_at_ms, note) "
                                 "VALUES ($1, $2, 2000, 'cp9\n') RETURNING id", size, H(b"root9"))
        await conn.execute("UPDATE log_state SET tree_size = $1, root = $2, checkpoint_id = $3, signed_at_ms = 2000, "
                           "note = 'cp9\n'", size, H(b"root9"), cp)

        assert await migrate(conn) == ["0008_heads_chain.sql"]
        assert await migrate(conn) == []
        assert [m.name for m in load_migrations()] == [*UP_TO_0007, "0008_heads_chain.sql"]
    yield pool
    await pool.close()


async def columns(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
    return {r["column_name"] for r in rows}


async def fleet_rows(pool: asyncpg.Pool) -> dict[str, tuple[int, int, int]]:
    rows = await pool.fetch("SELECT fleet_id, sequence, idx, first_idx FROM fleets ORDER BY first_idx")
    return {r["fleet_id"]: (r["sequence"], r["idx"], r["first_idx"]) for r in rows}


async def first_bundles(pool: asyncpg.Pool) -> dict[str, int]:
    """The smallest index of each fleet's bundles, from the leaves themselves."""
    rows = await pool.fetch("SELECT fleet_id, min(idx) AS first FROM leaves WHERE kind = 1 GROUP BY fleet_id")
    return {r["fleet_id"]: r["first"] for r in rows}


async def test_the_backfill_sets_each_fleets_first_bundle_index(pool):
    rows = await fleet_rows(pool)
    assert rows == {f: (*OLD_HEADS[f], OLD_FIRST[f]) for f in ("m", "c", "a")}
    assert list(rows) == ["m", "c", "a"]  # the heads tree's order: first appearance, not byte order
    assert {f: first for f, (_, _, first) in rows.items()} == await first_bundles(pool)
    # The old HEADS leaves stay, kind 2, type 2.
    heads = await pool.fetch("SELECT idx, leaf FROM leaves WHERE kind = 2 ORDER BY idx")
    assert [(r["idx"], r["leaf"][0]) for r in heads] == [(2, 2), (6, 2), (8, 2)]
    # The column is what the migration says: not null, a leaf index, not above the head.
    info = await pool.fetchrow("SELECT is_nullable, data_type FROM information_schema.columns "
                               "WHERE table_name = 'fleets' AND column_name = 'first_idx'")
    assert (info["is_nullable"], info["data_type"]) == ("NO", "bigint")


async def test_first_idx_is_set_on_insert_to_the_first_bundle_of_the_batch(pool):
    """Store.append (the sequencer's statement): a fleet new in the batch gets its first
    bundle's index even when the batch holds a later one of it (its head) and another new
    fleet's in between; a known fleet's row moves its head and keeps its first_idx."""
    store = Store(pool)
    start = len(OLD_LEAVES)
    batch = [("z", 0), ("b", 0), ("z", 1), ("c", 2)]  # z and b are new; c is known (first_idx 1)
    leaves = [NewLeaf(start + i, leaf_hash(bundle_leaf(f, s)), bundle_leaf(f, s), f, s, H(bundle_leaf(f, s)))
              for i, (f, s) in enumerate(batch)]
    heads = heads_leaf(start + len(batch), HEADS_LEAF_TYPE)
    leaves.append(NewLeaf(start + len(batch), leaf_hash(heads), heads))
    fleets = {"z": FleetHead(1, start + 2), "b": FleetHead(0, start + 1), "c": FleetHead(2, start + 3)}
    size = start + len(leaves)
    async with store.sequencing(1000) as tx:
        await tx.append(leaves, {}, fleets, size, H(b"root-next"), "cp-next\n", 3000, NOW)
        await tx.commit()
    rows = await fleet_rows(pool)
    assert rows["z"] == (1, start + 2, start) and rows["b"] == (0, start + 1, start + 1)
    assert rows["c"] == (2, start + 3, OLD_FIRST["c"]) and rows["m"] == (*OLD_HEADS["m"], OLD_FIRST["m"])
    assert list(rows) == ["m", "c", "a", "z", "b"]
    assert {f: first for f, (_, _, first) in rows.items()} == await first_bundles(pool)
    # The type-3 HEADS leaf went in as kind 2 next to the type-2 ones.
    assert await pool.fetchval("SELECT get_byte(leaf, 0) FROM leaves WHERE idx = $1 AND kind = 2", size - 1) == 3


@pytest.mark.parametrize("first_idx", [
    "3",  # forward, to one of its own later bundles
    "8",  # to its new head
    "2",  # to a HEADS leaf's index
    "NULL",
])
async def test_the_trigger_refuses_changing_first_idx(pool, first_idx):
    """A move of m's head that the trigger's older rules allow (a larger sequence and
    index), refused only because it also changes first_idx."""
    before = await fleet_rows(pool)
    sql = f"UPDATE fleets SET sequence = sequence + 10, idx = 8, first_idx = {first_idx} WHERE fleet_id = 'm'"
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="keeps its first index 0"):
        await pool.execute(sql)
    assert await fleet_rows(pool) == before


async def test_the_trigger_still_moves_a_head_forward_and_no_further(pool):
    """0008 replaced logserver_fleets_forward: its older rules still hold."""
    async with rolled_back(pool) as conn:  # the module's rows stay as they are
        await conn.execute("UPDATE fleets SET sequence = 99, idx = 8 WHERE fleet_id = 'a'")
        assert tuple(await conn.fetchrow("SELECT sequence, idx, first_idx FROM fleets WHERE fleet_id = 'a'")) \
            == (99, 8, 4)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="may only move to a larger sequence"):
            await conn.execute("UPDATE fleets SET sequence = 98, idx = 9 WHERE fleet_id = 'a'")
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="may only move to a larger sequence"):
        await pool.execute("DELETE FROM fleets WHERE fleet_id = 'a'")
    assert (await fleet_rows(pool))["a"] == (*OLD_HEADS["a"], OLD_FIRST["a"])


@contextlib.asynccontextmanager
async def rolled_back(pool: asyncpg.Pool):
    """A connection in a transaction that is rolled back at the end of the block."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


@pytest.mark.parametrize("sql, error, match", [
    # Another fleet at m's first index: the unique index.
    ("INSERT INTO fleets (fleet_id, sequence, idx, first_idx) VALUES ('dup', 0, 7, 0)",
     asyncpg.UniqueViolationError, "fleets_by_first_idx"),
    # 0.2.0's insert, without the column: not null.
    ("INSERT INTO fleets (fleet_id, sequence, idx) VALUES ('old-code', 0, 7)",
     asyncpg.NotNullViolationError, "first_idx"),
    # A first bundle after the head.
    ("INSERT INTO fleets (fleet_id, sequence, idx, first_idx) VALUES ('late', 0, 3, 5)",
     asyncpg.CheckViolationError, "fleets_first_idx"),
    # Not an index of the log.
    ("INSERT INTO fleets (fleet_id, sequence, idx, first_idx) VALUES ('nowhere', 0, 7, -1)",
     asyncpg.ForeignKeyViolationError, "fleets_first_idx_fkey"),
])
async def test_the_schema_refuses_a_bad_first_idx(pool, sql, error, match):
    with pytest.raises(error, match=match):
        await pool.execute(sql)
    assert set(await fleet_rows(pool)).isdisjoint({"dup", "old-code", "late", "nowhere"})


LEAF_INSERT = ("INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, kind, integrated_at) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7, now())")


@pytest.mark.parametrize("first_byte", [HEADS_LEAF_TYPE, LEGACY_HEADS_LEAF_TYPE])
async def test_a_heads_leaf_may_start_with_3_or_2(pool, first_byte):
    async with rolled_back(pool) as conn:  # leaves are append-only: the insert is undone by rollback
        idx = await conn.fetchval("SELECT max(idx) + 1 FROM leaves")
        leaf = heads_leaf(idx, first_byte)
        await conn.execute(LEAF_INSERT, idx, leaf_hash(leaf), leaf, None, None, None, 2)
        assert await conn.fetchval("SELECT get_byte(leaf, 0) FROM leaves WHERE idx = $1 AND kind = 2", idx) \
            == first_byte


@pytest.mark.parametrize("kind, first_byte, fleet", [
    (1, 3, "f"), (1, 2, "f"),  # a bundle starting with a HEADS leaf's type
    (2, 1, None), (2, 4, None),  # a HEADS leaf starting with another byte
    (2, 3, "f"),  # a HEADS leaf with a fleet
])
async def test_the_schema_ties_the_kind_to_the_first_byte(pool, kind, first_byte, fleet):
    idx = await pool.fetchval("SELECT max(idx) + 1 FROM leaves")
    leaf = heads_leaf(idx, first_byte)  # 49 bytes either way
    sequence, digest = (1, H(leaf)) if fleet else (None, None)
    with pytest.raises(asyncpg.CheckViolationError, match="leaves_kind"):
        await pool.execute(LEAF_INSERT, idx, leaf_hash(leaf), leaf, fleet, sequence, digest, kind)


# --- the sequencer writes first_idx, and a new process orders its table by it --------------------

AUTHORITIES = default_authorities()
ADMITTED_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)  # inside bundle_factory's default validity window


def submit(seq: Sequencer, fleet: str, n: int) -> asyncio.Future:
    """Submit a real dual-signed bundle of `fleet` with sequence `n` (the fold decodes it)."""
    envelope = make_envelope(make_payload(fleet_id=fleet, sequence=n), authorities=AUTHORITIES)
    a = admit(envelope.to_json(), AUTHORITIES.authority_set, ADMITTED_AT)
    return seq.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest, retired=a.retired)


async def stored_leaves(store) -> list[bytes]:
    latest = await store.latest_checkpoint()
    return await store.read_leaf_bytes(0, latest.tree_size)


@pytest.fixture
async def log_store(pg_admin_url):
    url = await pg.create_database(pg_admin_url, "t_heads_chain_seq")
    store = await pg.open_test_log(url, KEY)
    yield store
    await store.pool.close()
    await pg.drop_database(pg_admin_url, url)


async def test_a_batch_with_new_fleets_interleaved_orders_the_tree_as_the_fold_does(log_store):
    """One batch: y0, x0, y1, w0. The fold appends y then x then w to the heads tree.
    first_idx must say the same (y's first bundle, 0, not its head, 2, which would put
    it after x), or a process that builds its table from the database (a restart,
    another server) orders it otherwise and signs a HEADS leaf the fold refuses."""
    store = log_store
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        batch = [submit(seq, f, n) for f, n in (("y", 0), ("x", 0), ("y", 1), ("w", 0))]
        outcomes = await asyncio.wait_for(asyncio.gather(*batch), 30)
    assert all(isinstance(r, Appended) for r in outcomes)
    assert [r.index for r in outcomes] == [0, 1, 2, 3]  # one batch, its HEADS leaf at 4
    rows = await fleet_rows(store.pool)
    assert {f: r[2] for f, r in rows.items()} == {"y": 0, "x": 1, "w": 3} == await first_bundles(store.pool)
    assert list(rows) == ["y", "x", "w"]

    for n in range(2):  # a new process each time: its table comes from the database
        restarted = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
        async with running(restarted):
            more = [submit(restarted, "x", 5 + n), submit(restarted, f"v{n}", 0)]
            assert all(isinstance(r, Appended) for r in await asyncio.wait_for(asyncio.gather(*more), 30))
    leaves = await stored_leaves(store)
    table = fold(leaves, check_heads=True)  # every HEADS leaf commits to the folded table
    assert [r.fleet_id for r in table] == ["y", "x", "w", "v0", "v1"]
    last = decode_heads_leaf(leaves[-1])
    assert is_heads_leaf(leaves[-1]) and leaves[-1][0] == HEADS_LEAF_TYPE
    assert (last.count, last.root) == (5, table.root())
    assert list(await fleet_rows(store.pool)) == ["y", "x", "w", "v0", "v1"]
    assert {f: r[2] for f, r in (await fleet_rows(store.pool)).items()} == await first_bundles(store.pool)
