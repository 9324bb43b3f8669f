"""Shared by the sequencer's own tests: a log store per test module, a running
sequencer, and one submission of a made-up leaf."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from logserver.keys.log_key import LogKey
from logserver.merkle import leaf_hash
from logserver.write.sequencer import Sequencer
from pg import open_test_log


def store_fixture(key: LogKey):
    """A module-scoped `store` fixture: the log of `key` in the module's fresh database."""
    @pytest.fixture(scope="module")
    async def store(database_url):
        store = await open_test_log(database_url, key)
        yield store
        await store.pool.close()

    return store


@contextlib.asynccontextmanager
async def running(seq: Sequencer):
    """Run `seq` for the duration of the block, then stop it."""
    task = asyncio.create_task(seq.run())
    try:
        yield seq
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def submit(seq: Sequencer, fleet: str, n: int) -> asyncio.Future:
    """Submit a leaf made from (fleet, n), with n as its sequence."""
    leaf = b"leaf %s %d" % (fleet.encode(), n)
    return seq.submit(leaf, leaf_hash(leaf), fleet, n, hashlib.sha256(leaf).digest())


async def grow(store, key: LogKey, size: int) -> None:
    """Grow the log of `key` to `size` made-up leaves (nothing to do if it has them),
    submitted through a running sequencer in batches of at most 500."""
    latest = await store.latest_checkpoint()
    seq = Sequencer(store, key.sign_checkpoint, max_batch_size=500)
    async with running(seq):
        await asyncio.gather(*(submit(seq, "grow", n) for n in range(latest.tree_size, size)))
