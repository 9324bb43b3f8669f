"""Static publication (write/sequencer.py, step 9: its steps 9.1-9.5) under a failure
at every step, before and after the step takes effect, on the in-memory target
(tests/memory_target.py) and real PostgreSQL.

Each case runs a real TargetPublisher's loop (its retries and back-off) over entries
appended by the real Sequencer, in one of three scenarios:
* "incremental": the target holds an earlier checkpoint of the log, which grows by
  300 entries; the fault fires in the pass that publishes them;
* "first": the target is empty, the log is not (a first publication: step 9.1 finds
  no checkpoint, so it reads no root from the database);
* "crash": incremental, and at the failure the target's host loses power (what was
  not made durable is gone: what is left must still be a complete tree) and the
  publisher's process dies; a new one is started.
It checks, inside the failed pass (before the loop hears of it) and after the loop
published by itself:
* the fault fired exactly once, the pass failed with it, the loop counted one
  failure, retried and never halted (an outage is not a conflict);
* the target's checkpoint never went back in size, never had a second root for a
  size, and was never replaced before every object it needs was there and durable
  (the memory target checks at each replace);
* the target's checkpoint is signed by the log's key with the database's root for
  its size, and every tile and entry bundle it needs is there with the bytes
  recomputed from the database's leaves by tests/independent_merkle.py, whose tiles
  give the checkpoint's root (PublishLog.check_published);
* the PostgreSQL progress row never claims more than the target holds, and in the
  end it names the checkpoint the target holds.
The table must cover every step marked in TargetPublisher.publish, and the test
asserts how many cases ran.
"""
from __future__ import annotations

import asyncio
import inspect
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import logserver.publish.publisher as publisher_module
from logserver.keys.log_key import LogKey
from logserver.publish import TargetPublisher
from logserver.storage import CheckpointRow
from memory_store import InjectedOutage
from memory_target import InjectedTargetOutage, MemoryBucket, MemoryTarget, needed_paths
from publish_support import PublishLog, publish_log_fixture, publishing, wait_for

pytestmark = pytest.mark.fault

KEY = LogKey("example.com/publish-faults", Ed25519PrivateKey.from_private_bytes(b"\x19" * 32))
log = publish_log_fixture(KEY)

# (step of the protocol, fault point, where it is injected)
STEPS = [
    ("9.1", "read_checkpoint", "target"),
    ("9.1", "root_at", "database"),  # the log's root for the size of the target's checkpoint
    ("9.2", "hash_tile", "database"),  # a hash tile read to be published
    ("9.2", "entry_bundle", "database"),  # an entry bundle read to be published
    ("9.2", "create", "target"),  # at the pass's first create, and at its last
    ("9.3", "sync", "target"),
    ("9.4", "replace_checkpoint", "target"),  # "after": replaced, yet the call raised
    ("9.5", "record", "database"),  # "after": the progress row was written, yet the call raised
]
SCENARIOS = ("incremental", "first", "crash")
GROWTH = 300  # entries appended before the faulted pass: a full tile and bundle, and partial ones
EXPECTED_CASES = 52  # 3 scenarios x 9 points (create twice) x {before, after}, but "first" reads no root


class DatabaseFaults:
    """One armed failure at a database call of one publisher: bound methods of its own
    PublicationStore and TreeReader, wrapped to fail before or after the call."""

    def __init__(self, publisher: TargetPublisher):
        self.armed: tuple[str, str] | None = None
        self.fired: list[tuple[str, str]] = []
        for owner, name in ((publisher.progress, "root_at"), (publisher.progress, "record"),
                            (publisher.reader, "hash_tile"), (publisher.reader, "entry_bundle")):
            setattr(owner, name, self._wrap(name, getattr(owner, name)))

    def arm(self, point: str, when: str) -> None:
        self.armed = (point, when)

    def _fire(self, point: str, when: str) -> None:
        if self.armed == (point, when):
            self.armed = None
            self.fired.append((point, when))
            raise InjectedOutage(f"injected: {point} fails {when} it takes effect")

    def _wrap(self, point: str, fn):
        async def wrapped(*args, **kwargs):
            self._fire(point, "before")
            result = await fn(*args, **kwargs)
            self._fire(point, "after")
            return result

        return wrapped


def published(log: PublishLog, bucket: MemoryBucket, name: str, cp: CheckpointRow):
    async def check() -> bool:
        row = await log.progress.progress(name)
        return bucket.checkpoint == cp.note.encode() and row is not None and row.tree_size == cp.tree_size

    return check


def publisher_step_markers() -> set[str]:
    """The step numbers marked "# [9.n]" in TargetPublisher.publish."""
    source = inspect.getsource(TargetPublisher.publish)
    return {n for comment in re.findall(r"#.*", source) for n in re.findall(r"\[(9\.\d)\]", comment)}


async def run_case(log: PublishLog, step: str, point: str, where: str, when: str, scenario: str,
                   at: str) -> None:
    label = f"{scenario}: step {step} {point}{' (' + at + ')' if at else ''} fails {when}"
    name = f"f-{scenario}-{point}{'-' + at if at else ''}-{when}"
    bucket = MemoryBucket()
    failures: list[BaseException] = []
    problems: list[str] = []
    failed = asyncio.Event()

    def make() -> TargetPublisher:
        pub = log.publisher(MemoryTarget(name, bucket))
        publish = pub.publish

        async def observed(cp: CheckpointRow) -> None:
            try:
                await publish(cp)
            except Exception as e:  # the state right after the failed pass, before the loop retries
                failures.append(e)
                try:  # (an AssertionError raised here would only be a failed pass to the loop)
                    await log.check_published(name, bucket.get, f"{label}, after the failed pass")
                    assert bucket.violations == [], f"{label}: {bucket.violations}"
                except AssertionError as problem:
                    problems.append(str(problem))
                if scenario == "crash":  # the target's host loses power and this process dies here
                    bucket.crash()
                    try:  # what was durable still serves a complete tree
                        await log.check_published(name, bucket.get, f"{label}, after the power loss")
                    except AssertionError as problem:
                        problems.append(str(problem))
                    failed.set()
                    await asyncio.Event().wait()  # until the test cancels the loop
                failed.set()
                raise

        pub.publish = observed  # type: ignore[method-assign]
        return pub

    pub = make()
    target = pub.target
    assert isinstance(target, MemoryTarget)
    db = DatabaseFaults(pub)
    log.wakers.append(pub.wake)
    try:
        if scenario != "first":
            cp = await log.append(37)
            async with publishing(pub):
                await wait_for(f"{label}: the warm-up publication", published(log, bucket, name, cp))
        base = bucket.size() or 0
        cp = await log.append(GROWTH)  # while no loop runs: the faulted pass is the one that publishes it
        objects = len(set(needed_paths(cp.tree_size)) - set(needed_paths(base)))
        if where == "target":
            target.fail(point, when, nth=objects if at == "last" else 1)
        else:
            db.arm(point, when)
        async with publishing(pub):
            if scenario == "crash":
                await wait_for(f"{label}: the failure", failed_check(failed))
            else:
                done = published(log, bucket, name, cp)

                async def recovered() -> bool:
                    # Published, AND the loop has counted the failed pass: when the fault
                    # came after the last effect (the progress row), the target is whole
                    # before the loop has even seen the error (observed() awaits its checks
                    # first), and leaving then would cancel the loop before it counts it.
                    return await done() and log.metric(pub, "logserver_publication_failures_total") >= 1

                await wait_for(f"{label}: publication after the failure", recovered)
        if scenario == "crash":  # a new process publishes
            log.wakers.remove(pub.wake)
            restarted = log.publisher(MemoryTarget(name, bucket))
            log.wakers.append(restarted.wake)
            await restarted.load()
            async with publishing(restarted):
                await wait_for(f"{label}: publication after the restart", published(log, bucket, name, cp))
            assert restarted.halted is None and log.metric(
                restarted, "logserver_publication_failures_total") == 0, label
            log.wakers.remove(restarted.wake)
        else:
            log.wakers.remove(pub.wake)
    except BaseException:
        if pub.wake in log.wakers:
            log.wakers.remove(pub.wake)
        raise

    assert problems == [], problems
    fired = target.fired + db.fired
    assert fired == [(point, when)], f"{label}: the fault fired {fired}"
    assert len(failures) == 1 and isinstance(failures[0], (InjectedOutage, InjectedTargetOutage)), \
        f"{label}: {failures!r}"
    assert pub.halted is None, f"{label}: halted: {pub.halted}"
    assert log.metric(pub, "logserver_publication_failures_total") == (0 if scenario == "crash" else 1), label
    assert log.metric(pub, "logserver_publication_conflicts_total") == 0, label
    assert bucket.violations == [], f"{label}: {bucket.violations}"
    assert await log.check_published(name, bucket.get, label) == cp.tree_size, label
    row = await log.progress.progress(name)
    assert (row.tree_size, row.root) == (cp.tree_size, cp.root), f"{label}: progress {row}"
    for path, (content_type, cache) in bucket.headers.items():
        partial = ".p/" in path
        assert cache == ("public, max-age=60" if partial else "public, max-age=31536000, immutable"), path
        assert content_type == "application/octet-stream", path


def failed_check(event: asyncio.Event):
    async def check() -> bool:
        return event.is_set()

    return check


async def test_every_step_fails_before_and_after_and_the_target_stays_whole(log, monkeypatch):
    markers = publisher_step_markers()
    assert markers == {"9.1", "9.2", "9.3", "9.4", "9.5"}, markers  # the protocol block's steps 9.1-9.5
    assert {step for step, _, _ in STEPS} == markers
    monkeypatch.setattr(publisher_module, "RETRY_MIN_S", 0.01)  # the back-off, not what is tested
    monkeypatch.setattr(publisher_module, "POLL_S", 0.05)
    ran = []
    for scenario in SCENARIOS:
        for step, point, where in STEPS:
            if scenario == "first" and point == "root_at":
                continue  # an empty target: step 9.1 has no size to read a root for
            for at in ("first", "last") if point == "create" else ("",):
                for when in ("before", "after"):
                    await run_case(log, step, point, where, when, scenario, at)
                    ran.append((scenario, point, at, when))
    assert len(ran) == len(set(ran)) == EXPECTED_CASES


async def test_the_memory_target_implements_the_target_contract():
    from logserver.publish import StaticObject, Target

    target = MemoryTarget("contract")
    methods = {n for n, v in vars(Target).items() if callable(v) and not n.startswith("_")}
    assert methods == {"describe", "check", "create", "put_many", "sync", "read", "read_checkpoint",
                       "replace_checkpoint", "close"}
    for n in methods:  # the same parameters, and coroutines where the contract has them
        ours, theirs = getattr(MemoryTarget, n), getattr(Target, n)
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), n
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), n
    obj = StaticObject("tile/0/000.p/1", b"\1" * 32, "public, max-age=60")
    assert await target.create(obj) is True
    assert await target.create(obj) is False  # a retry
    assert target.bucket.durable == set()
    await target.sync()
    assert target.bucket.durable == {obj.path}
    target.fail("create", "after")
    with pytest.raises(InjectedTargetOutage):
        await target.create(StaticObject("tile/entries/000.p/1", b"\0\1x", "public, max-age=60"))
    assert "tile/entries/000.p/1" in target.bucket.objects  # failed, but persisted
    target.bucket.crash()
    assert "tile/entries/000.p/1" not in target.bucket.objects and obj.path in target.bucket.objects
    data, version = await target.read_checkpoint()
    assert data is None
    assert await target.replace_checkpoint(b"x", version + 1) is False
