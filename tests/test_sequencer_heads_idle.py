"""An idle re-sign appends no HEADS leaf (docs/fleet-heads.md, "Invariant": a checkpoint
that changes no head needs no new one), on the real PostgreSQL store: once the
checkpoint is older than the interval, an empty batch and a batch of duplicates only
re-sign the same tree, whose last leaf stays the last batch's HEADS leaf. (It used to
append a HEADS leaf at every re-sign, growing an idle log by one leaf per interval.)"""
from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pg
from logserver.bundle.heads import is_heads_leaf
from logserver.keys.log_key import LogKey
from logserver.write.outcomes import Appended, Duplicate
from logserver.write.sequencer import Sequencer
from sequencer_support import running
from test_sequencer_heads import stored_leaves, submit

KEY = LogKey("example.com/sequencer-heads-idle", Ed25519PrivateKey.from_private_bytes(b"\x2f" * 32))


@pytest.fixture
async def store(pg_admin_url):
    url = await pg.create_database(pg_admin_url, "seqheadsidle")
    store = await pg.open_test_log(url, KEY)
    yield store
    await store.pool.close()


async def test_an_idle_re_sign_appends_no_heads_leaf(store):
    now = [1_800_000_000.0]
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0, checkpoint_interval_s=5,
                    clock=lambda: now[0])
    async with running(seq):
        first = await asyncio.wait_for(submit(seq, "idle", 1), 30)
    assert isinstance(first, Appended)
    before = await store.latest_checkpoint()
    last = (await stored_leaves(store))[-1]
    assert before.tree_size == 2 and is_heads_leaf(last) and last[0] == 3  # the chained layout's type
    now[0] += 60  # the checkpoint is old: the next integrate re-signs
    resigned = await seq.integrate([])
    assert resigned is not None and resigned.signed_at_ms > before.signed_at_ms
    assert (resigned.tree_size, resigned.root) == (before.tree_size, before.root)
    now[0] += 60  # a replay of the logged bundle is a duplicate, and re-signs the same tree too
    async with running(seq):
        again = await asyncio.wait_for(submit(seq, "idle", 1), 30)
    assert isinstance(again, Duplicate)
    latest = await store.latest_checkpoint()
    assert (latest.tree_size, latest.root) == (before.tree_size, before.root)
    leaves = await stored_leaves(store)
    assert len(leaves) == 2 and leaves[-1] == last  # the same HEADS leaf ends the tree
