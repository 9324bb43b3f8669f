"""How a batch fills: it waits for submissions still being checked, and only for those."""
from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.keys.log_key import LogKey
from logserver.write.outcomes import Appended
from logserver.write.sequencer import Sequencer
from sequencer_support import running, store_fixture, submit

KEY = LogKey("example.com/sequencer-batching", Ed25519PrivateKey.from_private_bytes(b"\6" * 32))
# Far longer than any test waits: a batch that waited for the delay would time the test out.
LONG_DELAY_MS = 600_000

store = store_fixture(KEY)


async def test_a_batch_does_not_wait_when_nothing_else_is_arriving(store):
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=LONG_DELAY_MS, arriving=lambda: 0)
    async with running(seq):
        result = await asyncio.wait_for(submit(seq, "idle", 1), 30)
        assert isinstance(result, Appended), result


async def test_a_batch_waits_for_submissions_still_being_checked(store):
    being_checked = [1]
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_delay_ms=LONG_DELAY_MS, arriving=lambda: being_checked[0])
    async with running(seq):
        first = submit(seq, "wait", 1)
        for _ in range(20):  # let the sequencer run: it must keep waiting for the one being checked
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert not first.done() and seq.pending == 1
        being_checked[0] = 0  # its check finished: it is submitted now, and nothing else is coming
        second = submit(seq, "wait", 2)
        a, b = await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert isinstance(a, Appended) and isinstance(b, Appended)
        assert b.index == a.index + 1
        assert a.checkpoint.id == b.checkpoint.id  # one batch, one checkpoint


async def test_a_full_batch_does_not_wait(store):
    seq = Sequencer(store, KEY.sign_checkpoint, max_batch_size=2, max_batch_delay_ms=LONG_DELAY_MS,
                    arriving=lambda: 1)  # always more arriving: only the size limit ends the wait
    async with running(seq):
        a, b = await asyncio.wait_for(asyncio.gather(submit(seq, "full", 1), submit(seq, "full", 2)), 30)
        assert a.checkpoint.id == b.checkpoint.id and b.index == a.index + 1
