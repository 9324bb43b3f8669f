"""Several publishers on one target (issue 19; write/sequencer.py, step 9.4): the
target's checkpoint only ever moves forward, whoever publishes, and is never
published before every object it needs is durable.

* Two processes, each with its own sequencer, tree reader and publisher, append to
  one log and publish to one directory (two DirectoryTarget instances on one root)
  at once; a sampler reads the directory's checkpoint all along.
* On the in-memory target, a publisher that is deliberately behind (it offers the
  checkpoint of three commits ago) runs beside an up-to-date one; a publisher that
  loses the race for the checkpoint goes back to step 9.1 and finds the newer one;
  an older signature of the same size never replaces a newer one.
* A publisher that finds objects another one created and never synced (it died
  before its step 9.3) makes them durable itself before its checkpoint names them.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import logserver.publish.directory as directory_module
import logserver.publish.publisher as publisher_module
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.keys.log_key import LogKey
from logserver.merkle import tiles_between
from logserver.publish.directory import DirectoryTarget
from logserver.publish.targets import tile_object
from logserver.read.tree_reader import TreeReader
from logserver.write.sequencer import Sequencer
from memory_target import MemoryBucket, MemoryTarget, needed_paths
from publish_support import PublishLog, publish_log_fixture, publishing, read_file, wait_for
from sequencer_support import running

pytestmark = pytest.mark.fault

KEY = LogKey("example.com/publish-concurrent", Ed25519PrivateKey.from_private_bytes(b"\x22" * 32))
log = publish_log_fixture(KEY)


@contextlib.asynccontextmanager
async def polling(*logs: PublishLog):
    """Each process's poll of the latest checkpoint (server/app.py, _poll_latest), often."""
    async def poll(log: PublishLog) -> None:
        while True:
            await asyncio.sleep(0.01)
            await log.reader.refresh_latest()

    tasks = [asyncio.create_task(poll(one)) for one in logs]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Sampler:
    """Reads a target's checkpoint as often as the event loop lets it, and checks each
    one it sees against the last: never a smaller size, never a second root for a size,
    every object it needs already there (objects are immutable: each path is checked
    once)."""

    def __init__(self, read):
        self.read = read
        self.seen: list[tuple[int, bytes]] = []
        self.problems: list[str] = []
        self._present: set[str] = set()
        self._roots: dict[int, bytes] = {}

    def sample(self) -> None:
        data = self.read("checkpoint")
        if data is None:
            return
        cp = parse_checkpoint(parse_note(data).text)
        if self.seen and (cp.size, cp.root) == self.seen[-1]:
            return
        if self.seen and cp.size < self.seen[-1][0]:
            self.problems.append(f"the checkpoint went back from size {self.seen[-1][0]} to {cp.size}")
        if self._roots.setdefault(cp.size, cp.root) != cp.root:
            self.problems.append(f"a second root for size {cp.size}")
        for path in needed_paths(cp.size):
            if path not in self._present:
                if self.read(path) is None:
                    self.problems.append(f"checkpoint of size {cp.size} seen without {path}")
                else:
                    self._present.add(path)
        self.seen.append((cp.size, cp.root))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def sampling(sampler: Sampler):
    task = asyncio.create_task(sampler.run())
    try:
        yield sampler
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sampler.sample()


def published(log: PublishLog, name: str, read, cp):
    async def check() -> bool:
        row = await log.progress.progress(name)
        return read("checkpoint") == cp.note.encode() and row is not None and row.tree_size == cp.tree_size

    return check


async def test_two_processes_publishing_to_one_directory_only_move_its_checkpoint_forward(log, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setattr(publisher_module, "POLL_S", 0.01)  # more passes, more races
    root = tmp_path / "shared"
    other = PublishLog(log.pool, log.store, KEY)  # the second process: its own sequencer, reader, publisher
    await other.reader.refresh_latest()
    mine = log.publisher(DirectoryTarget("shared", root))
    theirs = other.publisher(DirectoryTarget("shared", root))
    sampler = Sampler(lambda path: read_file(root, path))
    log.wakers.append(mine.wake)
    other.wakers.append(theirs.wake)
    try:
        async with running(other.sequencer), polling(log, other), sampling(sampler), publishing(mine, theirs):
            # Each process publishes at least once (its own commit, waited for), then both at once.
            cp = await log.append(5, fleet="mine")
            await wait_for("the first process's publication", published(log, "shared", sampler.read, cp))
            cp = await other.append(5, fleet="theirs")
            await wait_for("the second process's publication", published(log, "shared", sampler.read, cp))
            for i in range(30):
                await asyncio.gather(log.append(1 + i % 7, fleet="mine"), other.append(1 + (i * 5) % 11,
                                                                                      fleet="theirs"))
            await log.reader.refresh_latest()
            await other.reader.refresh_latest()
            last = log.latest
            assert other.latest == last
            await wait_for("both to have published the last checkpoint", published(log, "shared", sampler.read, last))
    finally:
        log.wakers.remove(mine.wake)
        other.wakers.remove(theirs.wake)
    assert sampler.problems == [], sampler.problems
    assert len(sampler.seen) >= 3 and sampler.seen[-1] == (last.tree_size, last.root), sampler.seen
    assert mine.halted is None and theirs.halted is None
    assert log.metric(mine, "logserver_publication_checkpoints_total", outcome="published") >= 1
    assert other.metric(theirs, "logserver_publication_checkpoints_total", outcome="published") >= 1
    assert await log.check_published("shared", sampler.read, "shared directory") == last.tree_size
    assert [str(p) for p in root.rglob(".tmp-*")] == []


async def test_a_publisher_that_is_behind_never_moves_the_checkpoint_back(log, monkeypatch):
    monkeypatch.setattr(publisher_module, "POLL_S", 0.01)
    bucket = MemoryBucket()
    history: collections.deque = collections.deque(maxlen=4)  # the last checkpoints the log committed

    def behind():
        return history[0] if history else None  # three commits ago

    def remember() -> None:
        history.append(log.latest)

    current = log.publisher(MemoryTarget("behind", bucket))
    late = log.publisher(MemoryTarget("behind", bucket), source=behind)
    sampler = Sampler(bucket.get)
    log.wakers += [current.wake, late.wake]
    try:
        async with sampling(sampler), publishing(current, late):
            for i in range(40):
                await log.append(1 + (i * 7) % 13)
                remember()
            last = log.latest
            await wait_for("the up-to-date publisher to publish the last checkpoint",
                           published(log, "behind", bucket.get, last))
        # Its pass, once more, to see what it does: it finds the target ahead, and writes nothing.
        assert behind().tree_size < last.tree_size
        calls = dict(late.target.calls)
        await late.publish(behind())
        assert late.target.calls["replace_checkpoint"] == calls["replace_checkpoint"]
        assert late.target.calls["create"] == calls["create"]
    finally:
        log.wakers.remove(current.wake)
        log.wakers.remove(late.wake)
    assert bucket.violations == [] and sampler.problems == [], (bucket.violations, sampler.problems)
    sizes = [size for size, _ in bucket.history]
    assert sizes == sorted(sizes), sizes
    assert bucket.checkpoint == last.note.encode()
    assert late.halted is None and current.halted is None
    assert log.metric(late, "logserver_publication_checkpoints_total", outcome="current") >= 1
    assert await log.check_published("behind", bucket.get, "behind") == last.tree_size


async def test_a_publisher_that_loses_the_race_goes_back_to_step_9_1(log):
    """B read the target at size s1 and wrote its objects for s2; before its step 9.4, A
    publishes s3 > s2. B's replace (only over what it read) fails; it reads again,
    finds s3, and stops: s2 is never the target's checkpoint."""
    bucket = MemoryBucket()
    a = log.publisher(MemoryTarget("race", bucket))
    cp1 = await log.append(10)
    await a.publish(cp1)
    cp2 = await log.append(300)
    cp3 = await log.append(20)
    b = log.publisher(MemoryTarget("race", bucket), source=lambda: cp2)

    async def a_publishes_first() -> None:
        await a.publish(cp3)

    b.target.intercept("replace_checkpoint", a_publishes_first)
    await b.publish(cp2)
    assert [size for size, _ in bucket.history] == [cp1.tree_size, cp3.tree_size]
    assert bucket.checkpoint == cp3.note.encode() and bucket.violations == []
    assert b.target.calls["replace_checkpoint"] == 1 and b.target.calls["read_checkpoint"] == 2
    assert log.metric(b, "logserver_publication_checkpoints_total", outcome="lost_race") == 1
    assert log.metric(b, "logserver_publication_checkpoints_total", outcome="current") == 1
    assert b.published.tree_size == cp3.tree_size  # what it now knows the target holds
    row = await log.progress.progress("race")
    assert (row.tree_size, row.root) == (cp3.tree_size, cp3.root)
    assert await log.check_published("race", bucket.get, "race") == cp3.tree_size


async def test_an_older_signature_of_the_same_size_does_not_replace_a_newer_one(log):
    bucket = MemoryBucket()
    cp = await log.append(3)
    older = log.latest
    seq = Sequencer(log.store, KEY.sign_checkpoint, checkpoint_interval_s=0.001, on_commit=log._on_commit)
    while (newer := await seq.integrate([])) is None:  # an idle re-sign: the same size, signed later
        pass
    assert (newer.tree_size, newer.root) == (cp.tree_size, cp.root) and newer.signed_at_ms > older.signed_at_ms
    a = log.publisher(MemoryTarget("resigned", bucket))
    b = log.publisher(MemoryTarget("resigned", bucket), source=lambda: older)
    await a.publish(newer)
    await b.publish(older)
    assert bucket.checkpoint == newer.note.encode() and len(bucket.history) == 1
    assert log.metric(b, "logserver_publication_checkpoints_total", outcome="current") == 1
    assert b.target.calls["replace_checkpoint"] == 0


async def test_objects_another_publisher_created_but_never_synced_are_made_durable(log, tmp_path, monkeypatch):
    """Publisher A created every object of a size and died before its step 9.3: their
    directory entries (and those of the directories it made) may not be durable. B finds
    them all with the same bytes; before its checkpoint names them, every directory on
    their paths must be fsynced, by B."""
    root = tmp_path / "durable"
    fsynced: list[Path] = []
    real = directory_module._fsync_dirs

    def recording(dirs: list[Path]) -> None:
        fsynced.extend(dirs)
        real(dirs)

    monkeypatch.setattr(directory_module, "_fsync_dirs", recording)
    cp = await log.append(300)
    a = DirectoryTarget("durable", root)
    tiles, bundles = tiles_between(0, cp.tree_size)
    reader = TreeReader(log.store)
    for tile in tiles:
        await a.create(tile_object(tile, await reader.hash_tile(tile)))
    for bundle in bundles:
        await a.create(tile_object(bundle, await reader.entry_bundle(bundle)))
    assert fsynced == []  # A never synced: it died here
    target = DirectoryTarget("durable", root)
    replace = target._replace_checkpoint
    before_checkpoint: list[Path] = []

    def replacing(data: bytes, version: object) -> bool:  # what was fsynced when the checkpoint is written
        before_checkpoint.extend(fsynced)
        return replace(data, version)

    target._replace_checkpoint = replacing  # type: ignore[method-assign]
    b = log.publisher(target)
    await b.publish(cp)
    assert log.metric(b, "logserver_publication_objects_total", outcome="existed") == len(tiles) + len(bundles)
    needed = set()
    for path in needed_paths(cp.tree_size):
        d = (root / path).parent
        while d != root.parent:
            needed.add(d)
            d = d.parent
    missed = needed - set(before_checkpoint)
    assert missed == set(), f"not fsynced before the checkpoint named them: {sorted(map(str, missed))}"
    assert await log.check_published("durable", lambda p: read_file(root, p), "durable") == cp.tree_size
