"""Second review of the chained heads layout (docs/fleet-heads.md): findings, each as a
test that failed before its fix and is kept as a regression test.

1. The sequencer rebuilds the heads table from the store's snapshot (the rows in
   `fleets.first_idx` order, migration 0008) and signed the HEADS leaf of whatever that
   snapshot gave, unchecked. The reader checks its own rebuild against the HEADS leaf
   the log stored ("a database changed underneath, a bug": CRITICAL, no proof served),
   and the sequencer checks the tiles it grows against the last signed root (step 3);
   but a snapshot in another order (a first_idx changed by hand or by a bug such as
   the one d5383e1 fixed) was signed into the log: a HEADS leaf every monitor reports
   as `heads_mismatch`, signed, logged and witnessed, and never retractable. Now the
   sequencer compares the table it rebuilt with the HEADS leaf stored at size - 1 (the
   chained root for type 3, the sorted root for release 0.2.0's type 2) and halts with
   IntegrityError, signing nothing, as it does for a frontier that disagrees.

Kept although it passed before any fix, as no other test checks it: the incremental
table advanced on copies (as the reader does) over tables of hundreds of rows, from an
empty table and from `from_rows`, equals `from_rows` of the same rows.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pg
from bundle_factory import default_authorities, make_envelope, make_payload
from fleet_head_vectors import NOW as VECTORS_NOW
from fleet_head_vectors import MemoryLog, VectorKeys, bundle, chained_tree
from logserver.bundle.admit import admit
from logserver.bundle.heads import HeadsLeaf, HeadsRow, fold
from logserver.client.errors import FleetAbsentError, FleetHeadRootError
from logserver.client.fleet_head import verify_fleet_head
from logserver.formats.fleet_head import HeadsLeafProof, build_fleet_head_proof
from logserver.keys.log_key import LogKey
from logserver.merkle import EMPTY_ROOT, leaf_hash
from logserver.write.outcomes import Appended, IntegrityError
from logserver.write.sequencer import Sequencer
from memory_store import MemoryStore
from sequencer_support import running

KEY = LogKey("example.com/heads-review", Ed25519PrivateKey.from_private_bytes(b"\x5a" * 32))
AUTHORITIES = default_authorities()
NOW = datetime(2025, 6, 1, tzinfo=UTC)  # inside the default validity window


@pytest.fixture
async def store(pg_admin_url):
    url = await pg.create_database(pg_admin_url, "headsreview")
    store = await pg.open_test_log(url, KEY)
    yield store
    await store.pool.close()


def submit(seq: Sequencer, fleet: str, n: int) -> asyncio.Future:
    """A real dual-signed bundle of `fleet`, sequence `n` (the fold decodes it)."""
    envelope = make_envelope(make_payload(fleet_id=fleet, sequence=n), authorities=AUTHORITIES)
    a = admit(envelope.to_json(), AUTHORITIES.authority_set, NOW)
    return seq.submit(a.leaf, leaf_hash(a.leaf), a.fleet_id, a.sequence, a.payload_digest, retired=a.retired)


async def _log_y_then_x(store) -> int:
    """Log y, then x, then y again: positions y=0, x=1 (not the ids' byte order).
    Leaves: y 0, HEADS 1, x 2, HEADS 3, y 4, HEADS 5. Returns the size, 6."""
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        for fleet, n in (("y", 1), ("x", 1), ("y", 2)):
            assert isinstance(await asyncio.wait_for(submit(seq, fleet, n), 30), Appended)
    size = (await store.latest_checkpoint()).tree_size
    assert size == 6
    return size


async def _restarted_batch(store, fleet: str) -> tuple[object, str | None]:
    """A new process (no table in memory) submits one bundle: its outcome or error,
    and why the sequencer halted (None: it did not)."""
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        result = await asyncio.wait_for(asyncio.gather(submit(seq, fleet, 1), return_exceptions=True), 30)
    return result[0], seq.halted


async def test_the_sequencer_refuses_to_sign_over_a_snapshot_that_disagrees_with_the_stored_heads_leaf(store):
    size = await _log_y_then_x(store)
    # Change the fleets' first_idx behind the schema's back (its trigger off for it):
    # x to 1 and y to 3 (existing leaves, unique, at most each fleet's head), so the
    # snapshot lists x before y, the ids' order and not the log's.
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE fleets DISABLE TRIGGER fleets_forward")
        await conn.execute("UPDATE fleets SET first_idx = 3 WHERE fleet_id = 'y'")
        await conn.execute("UPDATE fleets SET first_idx = 1 WHERE fleet_id = 'x'")
        await conn.execute("ALTER TABLE fleets ENABLE TRIGGER fleets_forward")
    async with store.sequencing(5_000) as tx:
        assert [row[0] for row in (await tx.read_heads()).rows] == ["x", "y"]
    outcome, halted = await _restarted_batch(store, "z")
    assert isinstance(outcome, IntegrityError), f"got {outcome!r}, want IntegrityError (nothing signed)"
    assert halted is not None and "HEADS leaf stored at 5" in halted, halted
    assert (await store.latest_checkpoint()).tree_size == size  # nothing appended, nothing signed
    fold(await store.read_leaf_bytes(0, size), check_heads=True)  # the log as it was: clean


async def test_a_snapshot_that_agrees_is_signed_over_after_a_restart(store):
    # The check passes on an honest store: a restarted process continues the table.
    size = await _log_y_then_x(store)
    outcome, halted = await _restarted_batch(store, "a")
    assert isinstance(outcome, Appended) and halted is None, (outcome, halted)
    leaves = await store.read_leaf_bytes(0, size + 2)
    assert [r.fleet_id for r in fold(leaves, check_heads=True)] == ["y", "x", "a"]


async def test_the_memory_store_snapshot_is_checked_too():
    # tests/memory_store.py serves the stored HEADS leaf as the PostgreSQL store does:
    # a snapshot out of order (its fleets dict reordered) halts the sequencer there too.
    store = MemoryStore()
    store.initialize(KEY.sign_checkpoint(0, EMPTY_ROOT, 1000), 1000)
    size = await _log_y_then_x(store)
    store.fleets = dict(sorted(store.fleets.items()))  # x, y: the ids' order
    outcome, halted = await _restarted_batch(store, "z")
    assert isinstance(outcome, IntegrityError), f"got {outcome!r}, want IntegrityError (nothing signed)"
    assert halted is not None and "HEADS leaf stored at 5" in halted, halted
    assert store.size == size


def test_tables_built_either_way_and_copies_advanced_independently_agree_with_from_rows():
    # What no property test does: keep applying to a copy (the reader advances a copy of
    # the table of the last size) while the original goes on too, starting from a
    # from_rows table (the reader's and the sequencer's rebuild) as well as an empty one,
    # over tables of hundreds of rows (several levels of stored subtrees), with roots
    # and proofs read at random points. Each branch must equal from_rows of its rows.
    import random

    from logserver.bundle.heads import HeadsRow, HeadsTable

    rnd = random.Random(20)

    def fleet() -> str:
        while (f := "".join(rnd.choice("AZaz09._:-") for _ in range(rnd.randint(1, 3)))) in (".", ".."):
            pass
        return f

    for trial in range(40):
        rows: dict[str, HeadsRow] = {}
        if trial % 2:
            for i in range(rnd.randint(0, 60)):
                rows.setdefault(f := fleet(), HeadsRow(f, 0, i, bytes([i % 256]) * 32))
            table = HeadsTable.from_rows(list(rows.values()))
        else:
            table = HeadsTable()
        branches: list[tuple[HeadsTable, dict[str, HeadsRow]]] = []
        for step in range(rnd.randint(50, 250)):
            f = fleet() if rnd.random() < 0.6 or not rows else rnd.choice(list(rows))
            old = rows.get(f)
            row = HeadsRow(f, 0 if old is None else old.sequence + 1, 1000 + step, bytes([step % 256]) * 32,
                           "retired" if rnd.random() < 0.05 else "active")
            if old is not None and old.retired:
                continue
            table.apply(row)
            rows[f] = row
            roll = rnd.random()
            if roll < 0.1:
                assert table.root() == HeadsTable.from_rows(list(rows.values())).root(), (trial, step)
            elif roll < 0.2:
                branches.append((table.copy(), dict(rows)))
            elif roll < 0.3 and branches:  # go on with an earlier copy; the current table is kept too
                branches.append((table, rows))
                table, rows = branches.pop(rnd.randrange(len(branches) - 1))
                rows = dict(rows)
        branches.append((table, rows))
        for t, r in branches:
            want = HeadsTable.from_rows(list(r.values()))
            assert (t.count, t.root()) == (want.count, want.root()), trial
            assert [t.row_proof(p) for p in range(t.count)] == [want.row_proof(p) for p in range(want.count)]
            assert [t.next_fleet_id(p) for p in range(t.count)] == [want.next_fleet_id(p) for p in range(t.count)]


def test_a_covering_row_naming_a_leaf_at_or_after_its_heads_leaf_is_refused():
    """The covering row's bundle is only named, not proved: its leaf index must still be
    before the HEADS leaf that commits to it (a lying log's table, validly signed)."""
    keys = VectorKeys()
    at = datetime.fromtimestamp(VECTORS_NOW, UTC)

    def absence(leaf_index_of_a: int | None) -> bytes:
        liar = MemoryLog()
        liar.add_bundles([bundle("fleet-a", 1), bundle("fleet-c", 1)])
        a, c = liar.table.rows
        if leaf_index_of_a is not None:
            a = HeadsRow(a.fleet_id, a.sequence, leaf_index_of_a, a.leaf_hash, a.status)
        root, proved = chained_tree([(a, "fleet-c"), (c, "fleet-a")])
        index = liar.add_heads(HeadsLeaf(0, 2, root))
        heads = HeadsLeafProof(index, liar.leaves[index], liar.inclusion(index))
        return build_fleet_head_proof("fleet-b", liar.checkpoint(keys), heads, absent=True, covering=proved[0])

    # The honest table: fleet-b is absent, covered by fleet-a's link.
    with pytest.raises(FleetAbsentError, match="no bundle"):
        verify_fleet_head(absence(None), keys.policy(), at)
    for bad in (2, 3, 1_000):  # the HEADS leaf is leaf 2
        with pytest.raises(FleetHeadRootError, match=rf"got leaf_index {bad}, want a leaf before the HEADS leaf 2"):
            verify_fleet_head(absence(bad), keys.policy(), at)
