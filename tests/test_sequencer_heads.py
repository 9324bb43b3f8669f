"""The sequencer's HEADS leaves (write/sequencer.py step 5; docs/fleet-heads.md) on the
real PostgreSQL store: every checkpoint ends with a type-3 HEADS leaf that commits to
the table folded from the bundles before it (rows in the order the fleets first
appeared), whichever process appended them, and however the process rebuilt the table
from the store's snapshot (ordered by `fleets.first_idx`, migration 0008); a retired
fleet accepts no later bundle."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pg
from bundle_factory import default_authorities, make_envelope, make_payload
from logserver.bundle.admit import admit
from logserver.bundle.heads import HEADS_LEAF_SIZE, HEADS_LEAF_TYPE, decode_heads_leaf, fold, is_heads_leaf
from logserver.keys.log_key import LogKey
from logserver.merkle import leaf_hash
from logserver.write.outcomes import Appended, Duplicate, RetiredFleetError
from logserver.write.sequencer import Sequencer
from sequencer_support import running

KEY = LogKey("example.com/sequencer-heads", Ed25519PrivateKey.from_private_bytes(b"\x2e" * 32))


@pytest.fixture
async def store(pg_admin_url):
    url = await pg.create_database(pg_admin_url, "seqheads")
    store = await pg.open_test_log(url, KEY)
    yield store
    await store.pool.close()


AUTHORITIES = default_authorities()
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside the default validity window


def submit(seq: Sequencer, fleet: str, n: int, **payload: object) -> asyncio.Future:
    """Submit a real dual-signed bundle of `fleet` with sequence `n` (the fold decodes it)."""
    envelope = make_envelope(make_payload(fleet_id=fleet, sequence=n, **payload), authorities=AUTHORITIES)
    a = admit(envelope.to_json(), AUTHORITIES.authority_set, NOW)
    return seq.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest, retired=a.retired)


def heads_fold(leaves: list[bytes]):
    """The table folded from the log; fold() checks every HEADS leaf against it."""
    return fold(leaves, check_heads=True)


async def stored_leaves(store) -> list[bytes]:
    latest = await store.latest_checkpoint()
    return await store.read_leaf_bytes(0, latest.tree_size)


async def every_checkpoint_ends_with_heads(store) -> list[int]:
    leaves = await stored_leaves(store)
    sizes = [cp.tree_size for cp in await store.checkpoints() if cp.tree_size > 0]
    for size in sizes:
        assert is_heads_leaf(leaves[size - 1]), f"checkpoint of size {size} ends with a bundle"
    return sizes


async def test_each_batch_ends_with_a_heads_leaf_that_commits_to_the_folded_table(store):
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        first = await asyncio.wait_for(asyncio.gather(submit(seq, "b", 1), submit(seq, "a", 1)), 30)
        second = await asyncio.wait_for(asyncio.gather(submit(seq, "a", 2), submit(seq, "c", 5)), 30)
    assert all(isinstance(r, Appended) for r in first + second)
    leaves = await stored_leaves(store)
    assert len(leaves) == 6 and [is_heads_leaf(x) for x in leaves] == [False, False, True] * 2
    table = heads_fold(leaves)
    # Positions are first appearance: b (leaf 0), a (leaf 1), c (leaf 4); a's newer
    # row (leaf 3) replaced its entry in place.
    assert [(r.fleet_id, r.sequence, r.leaf_index) for r in table] == [("b", 1, 0), ("a", 2, 3), ("c", 5, 4)]
    assert [table.next_fleet_id(p) for p in range(3)] == ["c", "b", "a"]
    last = decode_heads_leaf(leaves[5])
    assert (last.layout, last.previous, last.count, last.root) == (HEADS_LEAF_TYPE, 2, 3, table.root())
    assert leaves[2][0] == leaves[5][0] == 3 and decode_heads_leaf(leaves[2]).previous == 0
    # The order is kept in the schema: each fleet's first bundle (migration 0008).
    firsts = await store.pool.fetch("SELECT fleet_id, first_idx, idx FROM fleets ORDER BY first_idx")
    assert [tuple(r) for r in firsts] == [("b", 0, 0), ("a", 1, 3), ("c", 4, 4)]
    assert await every_checkpoint_ends_with_heads(store) == [3, 6]
    # The HEADS leaf is stored as its own kind, with no fleet (migration 0006).
    rows = await store.pool.fetch("SELECT idx, kind, fleet_id, octet_length(leaf) AS n FROM leaves WHERE kind = 2")
    assert [(r["idx"], r["fleet_id"], r["n"]) for r in rows] == [(2, None, HEADS_LEAF_SIZE), (5, None, 49)]


async def test_a_new_process_and_another_process_continue_the_same_table(store):
    one = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    two = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    # The two take turns: each finds the log moved under it and rebuilds the table from
    # the store's snapshot. "y" appears first: the tree's order is not the ids' order,
    # so a snapshot in any other order gives another root, and the fold below refuses it.
    for n in range(1, 4):
        for seq, fleet in ((one, "y"), (two, "x"), (one, "w")):
            async with running(seq):
                assert isinstance(await asyncio.wait_for(submit(seq, fleet, n), 30), Appended)
    restarted = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(restarted):
        assert isinstance(await asyncio.wait_for(submit(restarted, "x", 9), 30), Appended)
    leaves = await stored_leaves(store)
    table = heads_fold(leaves)  # every HEADS leaf, `previous` included, matches the fold
    assert [(r.fleet_id, r.sequence) for r in table] == [("y", 3), ("x", 9), ("w", 3)]
    assert await every_checkpoint_ends_with_heads(store) == list(range(2, len(leaves) + 1, 2))


async def test_the_snapshot_is_in_first_appearance_order(store):
    # Neither the fleet ids' order nor their newest bundles' (idx): the order of their
    # first bundles, which the sequencer (read_heads) and the reader (heads_snapshot)
    # rebuild the heads tree in.
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        # One batch: m's first bundle (leaf 0), z's (1), then m's newer one (2), so m's
        # head is after z's first bundle while m appeared first.
        batch = await asyncio.wait_for(asyncio.gather(submit(seq, "m", 1), submit(seq, "z", 1),
                                                      submit(seq, "m", 2)), 30)
        assert [r.index for r in batch] == [0, 1, 2]
        for fleet, n in (("a", 1), ("z", 2), ("b", 1)):
            assert isinstance(await asyncio.wait_for(submit(seq, fleet, n), 30), Appended)
    want = [r.fleet_id for r in heads_fold(await stored_leaves(store))]
    assert want == ["m", "z", "a", "b"]
    firsts = await store.pool.fetch("SELECT fleet_id, first_idx FROM fleets ORDER BY first_idx")
    assert [tuple(r) for r in firsts] == [("m", 0), ("z", 1), ("a", 4), ("b", 8)]
    async with store.sequencing(5_000) as tx:
        snapshot = await tx.read_heads()
    assert [row[0] for row in snapshot.rows] == want
    assert [row[0] for row in (await store.heads_snapshot()).heads.rows] == want
    # A new process rebuilds the table from that snapshot: its HEADS leaf must agree.
    restarted = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(restarted):
        assert isinstance(await asyncio.wait_for(submit(restarted, "c", 1), 30), Appended)
    assert [r.fleet_id for r in heads_fold(await stored_leaves(store))] == [*want, "c"]


async def test_a_batch_that_fails_after_updating_the_table_does_not_leak_into_the_next(store, monkeypatch):
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        assert isinstance(await asyncio.wait_for(submit(seq, "f", 1), 30), Appended)
        real_sign = seq.sign_checkpoint

        def broken(*args):
            raise RuntimeError("the signer failed")

        seq.sign_checkpoint = broken  # after the heads table took the batch's row
        failed = await asyncio.wait_for(asyncio.gather(submit(seq, "f", 2), return_exceptions=True), 30)
        assert failed[0].status == 503
        seq.sign_checkpoint = real_sign
        # Another bundle of the fleet: the table must not still hold sequence 2.
        assert isinstance(await asyncio.wait_for(submit(seq, "f", 3), 30), Appended)
    table = heads_fold(await stored_leaves(store))
    assert [(r.fleet_id, r.sequence) for r in table] == [("f", 3)]


async def test_a_retired_fleet_refuses_later_bundles_and_the_schema_holds_it(store):
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)

    def retire(fleet: str, n: int) -> asyncio.Future:
        return submit(seq, fleet, n, status="retired")

    async with running(seq):
        assert isinstance(await asyncio.wait_for(submit(seq, "old", 1), 30), Appended)
        retired = await asyncio.wait_for(retire("old", 2), 30)
        assert isinstance(retired, Appended)
        with pytest.raises(RetiredFleetError, match="retired by its bundle of sequence 2") as refused:
            await asyncio.wait_for(submit(seq, "old", 3), 30)
        assert (refused.value.status, refused.value.code) == (409, "fleet_retired")
        # A replay of the retirement itself is still a duplicate, with its index.
        again = await asyncio.wait_for(retire("old", 2), 30)
        assert again == Duplicate(retired.index, retired.leaf_hash)
    table = heads_fold(await stored_leaves(store))
    assert [(r.fleet_id, r.sequence, r.status) for r in table] == [("old", 2, "retired")]
    assert await store.pool.fetchval("SELECT retired FROM fleets WHERE fleet_id = 'old'") is True
    # The schema refuses moving a retired fleet, whatever the application does.
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="is retired"):
        await store.pool.execute("UPDATE fleets SET sequence = 9, idx = idx + 1 WHERE fleet_id = 'old'")


@pytest.mark.parametrize("sql", [
    # A HEADS leaf must be 49 bytes starting with 3 (or 0.2.0's 2) and have no fleet; a
    # bundle must start with neither (migration 0008).
    "INSERT INTO leaves (idx, leaf_hash, leaf, kind, integrated_at) VALUES (100, '\\x{h}', '\\x03', 2, now())",
    "INSERT INTO leaves (idx, leaf_hash, leaf, kind, integrated_at) VALUES (100, '\\x{h}', '\\x{other}', 2, now())",
    "INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, kind, integrated_at) "
    "VALUES (100, '\\x{h}', '\\x{heads}', 'f', 1, '\\x{h}', 2, now())",
    "INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, kind, integrated_at) "
    "VALUES (100, '\\x{h}', '\\x02ff', 'f', 1, '\\x{h}', 1, now())",
    "INSERT INTO leaves (idx, leaf_hash, leaf, fleet_id, sequence, payload_digest, kind, integrated_at) "
    "VALUES (100, '\\x{h}', '\\x03ff', 'f', 1, '\\x{h}', 1, now())",
    "INSERT INTO leaves (idx, leaf_hash, leaf, kind, integrated_at) VALUES (100, '\\x{h}', '\\x01ff', 1, now())",
], ids=["heads-short", "heads-type-4", "heads-with-fleet", "bundle-starting-2", "bundle-starting-3",
        "bundle-without-fleet"])
async def test_the_schema_ties_a_leaf_kind_to_its_first_byte(store, sql):
    h, heads, other = "ab" * 32, "03" + "00" * 48, "04" + "00" * 48
    with pytest.raises(asyncpg.CheckViolationError):
        await store.pool.execute(sql.format(h=h, heads=heads, other=other))
