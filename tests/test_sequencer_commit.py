"""What happens after the COMMIT: a stored batch is never answered as "not stored"."""
from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import logserver.write.sequencer as sequencer_module
from logserver.keys.log_key import LogKey
from logserver.merkle import verify_inclusion
from logserver.write.outcomes import Appended, Duplicate, ReceiptUnavailableError
from logserver.write.sequencer import Sequencer
from sequencer_support import running, store_fixture, submit

KEY = LogKey("example.com/sequencer-commit", Ed25519PrivateKey.from_private_bytes(b"\5" * 32))

store = store_fixture(KEY)


async def test_a_failing_commit_hook_still_answers_the_stored_batch(store):
    hooked = []

    def on_commit(cp, tiles):
        hooked.append(cp.tree_size)
        raise RuntimeError("the commit hook broke")

    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0, on_commit=on_commit)
    async with running(seq):
        first = await asyncio.wait_for(submit(seq, "hook", 1), 30)
        assert isinstance(first, Appended), first
        latest = await store.latest_checkpoint()
        # The bundle, then the batch's HEADS leaf (docs/fleet-heads.md).
        assert (latest.tree_size, latest.id) == (first.index + 2, first.checkpoint.id) == (hooked[0], latest.id)
        verify_inclusion(first.index, first.checkpoint.tree_size, first.leaf_hash, first.inclusion_proof,
                         first.checkpoint.root)
        # The next batch works (its frontier is read back from the database).
        second = await asyncio.wait_for(submit(seq, "hook", 2), 30)
        assert isinstance(second, Appended) and second.index == first.index + 2
        assert seq.halted is None


async def test_a_failing_receipt_is_not_reported_as_not_stored(store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inclusion proof broke")

    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=0)
    async with running(seq):
        before = (await store.latest_checkpoint()).tree_size
        monkeypatch.setattr(sequencer_module, "inclusion_proof", broken)
        with pytest.raises(ReceiptUnavailableError, match="was stored"):
            await asyncio.wait_for(submit(seq, "receipt", 1), 30)
        assert (await store.latest_checkpoint()).tree_size == before + 2  # the entry and its HEADS leaf
        monkeypatch.undo()
        again = await asyncio.wait_for(submit(seq, "receipt", 1), 30)  # the retry the error asks for
        assert again == Duplicate(before, again.leaf_hash)
