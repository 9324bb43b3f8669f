"""Helpers for the static publication tests: submitting, waiting for a target,
reading a static tree back, and a log with its publishers but no server
(tests/test_publish_*.py)."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

import independent_merkle as im
from bundle_factory import BundleFactory
from logserver.keys.log_key import LogKey
from logserver.merkle import entries_tiles_for_size, leaf_hash, tile_path, tiles_for_size
from logserver.publish import LogKeyVerifiers, Target, TargetPublisher
from logserver.publish.metrics import PublicationMetrics
from logserver.read.tree_reader import TreeReader
from logserver.storage import CheckpointRow, Store, create_pool, open_log
from logserver.storage.publication import PublicationStore
from logserver.write.outcomes import Appended
from logserver.write.sequencer import Sequencer
from sequencer_support import running

JSON = {"Content-Type": "application/json"}


async def submit(session: ClientSession, base: str, envelopes: list[bytes]) -> list[dict]:
    """POST each envelope (concurrently, so batches hold several); every answer must be 201."""
    async def one(body: bytes) -> dict:
        async with session.post(base + "/v1/bundles", data=body, headers=JSON) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()
    return await asyncio.gather(*(one(b) for b in envelopes))


def envelopes(n: int, fleet: str) -> list[bytes]:
    factory = BundleFactory(fleet_id=fleet)
    return [factory.envelope_json() for _ in range(n)]


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout_s` (a deadline, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def tree_paths(size: int) -> list[str]:
    """Every tile and entry bundle path a checkpoint of `size` needs."""
    return [tile_path(t) for t in (*tiles_for_size(size), *entries_tiles_for_size(size))]


def read_file(root: Path, path: str) -> bytes | None:
    try:
        return (root / path).read_bytes()
    except FileNotFoundError:
        return None


class Load:
    """Submitters that keep going across restarts, remembering every 201."""

    def __init__(self, url: str, clients: int = 6, fleet: str = "load-fleet"):
        self.url = url
        self.clients = clients
        self.fleet = fleet
        self.acknowledged: dict[str, int] = {}  # leaf hash -> index
        self.refused: list[int] = []  # statuses other than 201 from a server that answered
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, n: int) -> None:
        pending = envelopes(400, f"{self.fleet}-{n}")
        while pending and not self._stop.is_set():
            try:
                async with session.post(self.url + "/v1/bundles", data=pending[0], headers=JSON) as resp:
                    if resp.status in (200, 201):
                        receipt = await resp.json()
                        self.acknowledged[receipt["leaf_hash"]] = receipt["index"]
                        pending.pop(0)
                        continue
                    self.refused.append(resp.status)
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.02)  # the server is down or restarting: retry the same envelope

    def stop(self) -> None:
        self._stop.set()


# --- a log to publish, without a server (test_publish_faults.py, _conflicts, _concurrent) ---


def static_tree(leaves: Sequence[bytes], leaf_hashes: Sequence[bytes] | None = None) -> dict[str, bytes]:
    """Every hash tile and entry bundle of the tree of `leaves`, path -> bytes, computed
    from the tlog-tiles text with tests/independent_merkle.py (not logserver.merkle): a
    tile of level L holds the hashes of tree level 8L, left to right, 256 to a full tile;
    an entry bundle holds the leaves, each behind its big-endian uint16 length."""
    nodes = list(leaf_hashes) if leaf_hashes is not None else [im.leaf_hash(e) for e in leaves]
    assert len(nodes) == len(leaves)
    objects: dict[str, bytes] = {}
    level = 0
    while nodes:
        for start in range(0, len(nodes), im.TILE_WIDTH):
            chunk = nodes[start:start + im.TILE_WIDTH]
            objects[im.tile_url_path(level, start // im.TILE_WIDTH, len(chunk))] = b"".join(chunk)
        nodes = [im.subtree_root(nodes[i:i + im.TILE_WIDTH])
                 for i in range(0, len(nodes) - im.TILE_WIDTH + 1, im.TILE_WIDTH)]
        level += 1
    for start in range(0, len(leaves), im.TILE_WIDTH):
        chunk = leaves[start:start + im.TILE_WIDTH]
        objects[im.tile_url_path("entries", start // im.TILE_WIDTH, len(chunk))] = b"".join(
            len(e).to_bytes(2, "big") + e for e in chunk)
    return objects


class PublishLog:
    """A log in the test module's database, grown by a real running Sequencer, with what
    a static publisher needs beside it (docs: logserver/server/app.py, _start_static)."""

    def __init__(self, pool: asyncpg.Pool, store: Store, key: LogKey):
        self.pool, self.store, self.key = pool, store, key
        self.verifiers = LogKeyVerifiers.of(key)
        self.progress = PublicationStore(pool)
        self.reader = TreeReader(store)  # the sequencer's process: what it serves (a publisher's source)
        self.wakers: list[Callable[[], None]] = []  # the sequencer's step 9 wakes these
        self.sequencer = Sequencer(store, key.sign_checkpoint, max_batch_delay_ms=0, checkpoint_interval_s=3600,
                                   on_commit=self._on_commit, publish_static=self._wake)
        self._next = 0
        self._leaves: list[bytes] = []
        self._hashes: list[bytes] = []
        self.registries: dict[TargetPublisher, CollectorRegistry] = {}

    def _on_commit(self, cp: CheckpointRow, tiles: dict) -> None:
        self.reader.remember_tiles(tiles)
        self.reader.set_latest(cp)

    def _wake(self) -> None:
        for wake in self.wakers:
            wake()

    @property
    def latest(self) -> CheckpointRow:
        assert self.reader.latest is not None
        return self.reader.latest

    async def append(self, n: int, fleet: str = "publish") -> CheckpointRow:
        """Append `n` made-up leaves (one batch when they fit); returns the new checkpoint."""
        futures = []
        for _ in range(n):
            self._next += 1
            leaf = b"static publication test leaf %s %d" % (fleet.encode(), self._next)
            futures.append(self.sequencer.submit(leaf, leaf_hash(leaf), fleet, self._next,
                                                 hashlib.sha256(leaf).digest()))
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        assert all(isinstance(r, Appended) for r in results), results
        return self.latest

    async def leaves(self, size: int) -> tuple[list[bytes], list[bytes]]:
        """The first `size` leaves as stored, and their hashes (independent_merkle)."""
        while len(self._leaves) < size:
            start = len(self._leaves)
            more = await self.store.read_leaf_bytes(start, min(size, start + 4096))
            assert more, f"the database has {start} leaves, want {size}"
            self._leaves += more
            self._hashes += [im.leaf_hash(e) for e in more]
        return self._leaves[:size], self._hashes[:size]

    def publisher(self, target: Target, *, source: Callable[[], CheckpointRow | None] | None = None,
                  registry: CollectorRegistry | None = None) -> TargetPublisher:
        """A TargetPublisher as _start_static makes one, with its own tree reader and
        progress store (as another process would have), publishing `source` (default:
        what the sequencer's process serves)."""
        registry = registry or CollectorRegistry()
        publisher = TargetPublisher(
            target, reader=TreeReader(self.store), progress=PublicationStore(self.pool),
            source=source or (lambda: self.reader.latest), verifiers=self.verifiers,
            metrics=PublicationMetrics(registry))
        self.registries[publisher] = registry
        return publisher

    def metric(self, publisher: TargetPublisher, name: str, **labels: str) -> float:
        """A publication metric of `publisher`'s target (0 when never set)."""
        value = self.registries[publisher].get_sample_value(name, {"target": publisher.target.name, **labels})
        return 0.0 if value is None else value

    async def check_published(self, name: str, read: Callable[[str], bytes | None], label: str) -> int | None:
        """What every reader of target `name` relies on, with `read(path)` its object's
        bytes (None if absent). Returns the size of its checkpoint (None if absent).

        * its checkpoint is signed by the log's key, with the database's root for its size;
        * every tile and entry bundle that checkpoint needs is there, with the bytes
          recomputed from the database's leaves (static_tree), and the root computed from
          the target's tiles is the checkpoint's;
        * the PostgreSQL progress row never claims more than the target holds."""
        data = read("checkpoint")
        row = await self.progress.progress(name)
        if data is None:
            assert row is None, f"{label}: no checkpoint on the target, but progress says {row}"
            return None
        cp = self.verifiers.open(data)
        assert await self.progress.root_at(cp.size) == cp.root, f"{label}: root at size {cp.size}"
        leaves, hashes = await self.leaves(cp.size)
        want = static_tree(leaves, hashes)
        for path, data in want.items():
            got = read(path)
            assert got is not None, f"{label}: checkpoint size {cp.size} is missing {path}"
            assert got == data, f"{label}: {path}: got {len(got)} bytes, want {len(data)}"
        tiles = {(level, index): read(im.tile_url_path(level, index, width))
                 for level, index, width in im.tiles_implied(cp.size)}
        assert im.root_from_tiles(cp.size, tiles) == cp.root, label
        if row is not None:
            assert row.tree_size <= cp.size, f"{label}: progress says size {row.tree_size}, target has {cp.size}"
            if row.tree_size == cp.size:
                assert row.root == cp.root, label
        return cp.size


def publish_log_fixture(key: LogKey):
    """A module-scoped `log` fixture: a PublishLog of `key` in the module's fresh
    database, its sequencer running."""
    @pytest.fixture(scope="module")
    async def log(database_url):
        pool = await create_pool(database_url, min_size=1, max_size=8)
        try:
            store = await open_log(pool, key)
            log = PublishLog(pool, store, key)
            await log.reader.refresh_latest()
            async with running(log.sequencer):
                yield log
        finally:
            await pool.close()

    return log


@contextlib.asynccontextmanager
async def publishing(*publishers: TargetPublisher) -> AsyncIterator[None]:
    """Run the publishers' loops for the duration of the block, then stop them."""
    tasks = [asyncio.create_task(p.run()) for p in publishers]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:  # a loop only ever ends by being cancelled
            assert isinstance(outcome, asyncio.CancelledError), outcome
