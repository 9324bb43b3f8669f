"""Static publication never overwrites: what is on a target and is not this log's
halts publishing to it, loudly (issue 19; write/sequencer.py, steps 9.1 and 9.2).

* An immutable object with other bytes (a tile or an entry bundle, full or partial,
  of any level) on a directory target and on the in-memory target: the publisher
  halts, counts a conflict, logs a CRITICAL line naming the object, writes no
  checkpoint and never touches the object; more entries do not make it try again.
* A target checkpoint that is not this log's: signed by another key, signed without
  the log's timestamp signature, not a note at all, of a size the log never signed,
  or with another root for a size the log signed (a split view): the same halt,
  before any object is written.
* A halt ends the pass at once: its creates not yet started never run.
* What is not a conflict: a target whose checkpoint is absent while its objects are
  there with the same bytes (a pass that died before 9.4) is published again, every
  object found as it was; a target wiped clean is refilled from size 0, on the next
  checkpoint the log signs (an idle log's re-sign is enough).
* A running server answers /readyz 503 `publication_behind` naming each halted target
  and why, exports the conflict and halt metrics, and goes on accepting submissions
  and publishing to its other targets.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logserver.formats.checkpoint import Checkpoint
from logserver.formats.note import Ed25519NoteSigner, sign_note
from logserver.keys.log_key import LogKey
from logserver.merkle import EntriesTileID, TileID, tile_path
from logserver.publish.directory import DirectoryTarget
from logserver.write.sequencer import Sequencer
from memory_target import MemoryBucket, MemoryTarget, needed_paths
from publish_support import (
    PublishLog,
    envelopes,
    publish_log_fixture,
    publishing,
    read_file,
    static_tree,
    submit,
    wait_for,
)
from server_harness import ORIGIN, start_server, write_config

pytestmark = pytest.mark.fault

PRIVATE = Ed25519PrivateKey.from_private_bytes(b"\x20" * 32)
KEY = LogKey(ORIGIN, PRIVATE)  # the server of the last test signs with it too
OTHER_KEY = LogKey(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x21" * 32))
log = publish_log_fixture(KEY)

SIZE = 600  # at least: level-0 tiles and bundles 0 and 1 full, 2 partial; a partial level-1 tile


def kinds(size: int) -> dict[str, str]:
    """A name for each kind of immutable object, and its path at `size` (SIZE or more, not a multiple of 256)."""
    return {
        "full tile": tile_path(TileID(0, 1)),
        "partial tile": tile_path(TileID(0, size // 256, size % 256)),
        "upper-level tile": tile_path(TileID(1, 0, size // 256)),
        "full entry bundle": tile_path(EntriesTileID(0)),
        "partial entry bundle": tile_path(EntriesTileID(size // 256, size % 256)),
    }


class Place:
    """A target of either kind, with the test's own hands on what it holds."""

    def __init__(self, kind: str, name: str, tmp_path: Path):
        self.kind, self.name = kind, name
        self.root = tmp_path / name
        self.bucket = MemoryBucket()

    def target(self):
        return MemoryTarget(self.name, self.bucket) if self.kind == "memory" else DirectoryTarget(self.name, self.root)

    def read(self, path: str) -> bytes | None:
        return self.bucket.get(path) if self.kind == "memory" else read_file(self.root, path)

    def put(self, path: str, data: bytes) -> None:
        if self.kind == "memory":
            if path == "checkpoint":
                self.bucket.set_checkpoint(data)
            else:
                self.bucket.put(path, data)
        else:
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_bytes(data)

    def delete_checkpoint(self) -> None:
        if self.kind == "memory":
            self.bucket.set_checkpoint(None)
        else:
            (self.root / "checkpoint").unlink()

    def wipe(self) -> None:
        if self.kind == "memory":
            self.bucket.wipe()
        else:
            shutil.rmtree(self.root)

    def paths(self) -> set[str]:
        """Every object on the target, the checkpoint included."""
        if self.kind == "memory":
            return set(self.bucket.objects) | ({"checkpoint"} if self.bucket.checkpoint is not None else set())
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}


async def at_least(log: PublishLog, size: int) -> int:
    """Grow the log to `size` or more, and off a multiple of 256 (so that it has partial tiles)."""
    if log.latest.tree_size < size:
        await log.append(size - log.latest.tree_size)
    if log.latest.tree_size % 256 == 0:
        await log.append(1)
    return log.latest.tree_size


def halted_check(publisher):
    async def check() -> bool:
        return publisher.halted is not None

    return check


def critical_lines(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.CRITICAL and f"target {name!r}" in r.getMessage()]


async def assert_halted(log: PublishLog, pub, place: Place, caplog, *, naming: str, untouched: dict[str, bytes | None],
                        written_before: set[str]) -> None:
    """Halted for good, loudly, over the object `naming`; nothing of `untouched` changed,
    nothing written but `written_before`, no progress recorded."""
    label = f"{place.kind} target {place.name}"
    assert naming in pub.halted, f"{label}: {pub.halted}"
    assert log.metric(pub, "logserver_publication_conflicts_total") == 1, label
    assert log.metric(pub, "logserver_publication_halted") == 1, label
    lines = critical_lines(caplog, place.name)
    assert len(lines) == 1 and naming in lines[0] and "HALTED" in lines[0], f"{label}: {lines}"
    for path, data in untouched.items():
        assert place.read(path) == data, f"{label}: {path} was changed"
    assert place.paths() <= written_before | set(untouched), f"{label}: {place.paths() - written_before}"
    assert await log.progress.progress(place.name) is None, label
    # More entries: it stays halted and writes nothing more (no retry over a conflict).
    await went_around(log, pub)
    assert pub.halted is not None and log.metric(pub, "logserver_publication_conflicts_total") == 1, label
    assert place.paths() <= written_before | set(untouched), f"{label}: {place.paths() - written_before}"
    assert await log.progress.progress(place.name) is None, label
    for path, data in untouched.items():
        assert place.read(path) == data, f"{label}: {path} was changed"


async def went_around(log: PublishLog, pub) -> None:
    """Append entries and wait until `pub`'s loop has seen them (its lag gauge: a halted
    loop still goes around, and skips its pass)."""
    pub.wake()
    cp = await log.append(3)

    async def seen() -> bool:
        return log.metric(pub, "logserver_publication_lag_entries") == cp.tree_size  # nothing published

    await wait_for("the halted publisher's loop to go around", seen)


@pytest.mark.parametrize("target_kind", ["memory", "directory"])
@pytest.mark.parametrize("kind", list(kinds(SIZE + 1)))
async def test_an_object_with_other_bytes_halts_and_is_never_overwritten(log, tmp_path, caplog, target_kind, kind):
    size = await at_least(log, SIZE)
    path = kinds(size)[kind]
    assert path in needed_paths(size)
    objects = static_tree(*await log.leaves(size))
    want = objects[path]
    place = Place(target_kind, f"conflict-{target_kind}-{kind.replace(' ', '-')}", tmp_path)
    # The target holds what a publication of `size` left before its checkpoint, but one object differs.
    for p, data in objects.items():
        place.put(p, data)
    other = bytes([want[0] ^ 1]) + want[1:]
    place.put(path, other)
    before = place.paths()
    pub = log.publisher(place.target())
    log.wakers.append(pub.wake)
    try:
        async with publishing(pub):
            await wait_for(f"{kind} conflict to halt {place.name}", halted_check(pub))
            await assert_halted(log, pub, place, caplog, naming=path, untouched={path: other, "checkpoint": None},
                                written_before=before)
    finally:
        log.wakers.remove(pub.wake)
    assert f"exists with other bytes ({len(other)} bytes, want {len(want)})" in pub.halted


def foreign_checkpoints(log: PublishLog) -> dict[str, bytes]:
    """Checkpoints that are not this log's, each for a size the log has."""
    cp = log.latest
    size, root, now_ms = cp.tree_size, cp.root, cp.signed_at_ms
    plain = Ed25519NoteSigner(ORIGIN, PRIVATE)  # the log's key, without its timestamped cosignature
    other_root = bytes([root[0] ^ 1]) + root[1:]
    return {
        "signed by another key": OTHER_KEY.sign_checkpoint(size, root, now_ms).encode(),
        "without the log's timestamp signature": sign_note(Checkpoint(ORIGIN, size, root).body(), [plain]).encode(),
        "not a note": b"this is not a checkpoint\n",
        "a size the log never signed": KEY.sign_checkpoint(size + 10_000, root, now_ms).encode(),
        "a split view": KEY.sign_checkpoint(size, other_root, now_ms).encode(),
    }


WHY = {
    "signed by another key": "is not a checkpoint of this log signed by its key",
    "without the log's timestamp signature": "no timestamped cosignature by the log's key",
    "not a note": "is not a checkpoint of this log signed by its key",
    "a size the log never signed": "which this log never signed",
    "a split view": "a split view on the target",
}


@pytest.mark.parametrize("target_kind", ["memory", "directory"])
@pytest.mark.parametrize("case", list(WHY))
async def test_a_checkpoint_that_is_not_this_logs_halts_before_anything_is_written(log, tmp_path, caplog,
                                                                                   target_kind, case):
    await at_least(log, SIZE)
    place = Place(target_kind, f"foreign-{target_kind}-{case.replace(' ', '-').replace(chr(39), '')}", tmp_path)
    seeded = foreign_checkpoints(log)[case]
    place.put("checkpoint", seeded)
    pub = log.publisher(place.target())
    log.wakers.append(pub.wake)
    try:
        async with publishing(pub):
            await wait_for(f"{case} to halt {place.name}", halted_check(pub))
            assert WHY[case] in pub.halted, pub.halted
            lines = critical_lines(caplog, place.name)
            assert len(lines) == 1 and "object checkpoint" in lines[0], lines
            assert log.metric(pub, "logserver_publication_conflicts_total") == 1
            assert log.metric(pub, "logserver_publication_halted") == 1
            assert place.paths() == {"checkpoint"} and place.read("checkpoint") == seeded
            await went_around(log, pub)
            assert pub.halted and place.paths() == {"checkpoint"} and place.read("checkpoint") == seeded
            assert await log.progress.progress(place.name) is None
    finally:
        log.wakers.remove(pub.wake)


@pytest.mark.parametrize("target_kind", ["memory", "directory"])
async def test_objects_already_there_with_the_same_bytes_are_a_retry(log, tmp_path, target_kind):
    """A pass that died after its objects, before the checkpoint: the next one finds them all."""
    await at_least(log, SIZE)
    place = Place(target_kind, f"absent-checkpoint-{target_kind}", tmp_path)
    pub = log.publisher(place.target())
    log.wakers.append(pub.wake)
    try:
        async with publishing(pub):
            cp = log.latest
            await wait_for("the first publication", published(log, place, cp))
        objects = {p for p in place.paths() if p != "checkpoint" and not p.startswith(".")}
        assert objects == set(needed_paths(cp.tree_size))
        place.delete_checkpoint()
        again = log.publisher(place.target())
        await again.publish(cp)  # what the next pass (or process) does
    finally:
        log.wakers.remove(pub.wake)
    assert again.halted is None and place.read("checkpoint") == cp.note.encode()
    assert log.metric(again, "logserver_publication_objects_total", outcome="existed") == len(objects)
    assert log.metric(again, "logserver_publication_objects_total", outcome="created") == 0
    assert log.metric(again, "logserver_publication_conflicts_total") == 0
    assert await log.check_published(place.name, place.read, place.name) == cp.tree_size


def published(log: PublishLog, place: Place, cp):
    async def check() -> bool:
        row = await log.progress.progress(place.name)
        return place.read("checkpoint") == cp.note.encode() and row is not None and row.tree_size == cp.tree_size

    return check


async def resign(log: PublishLog) -> None:
    """An idle log's re-sign: a new checkpoint of the same size (its step 9 wakes the publishers)."""
    seq = Sequencer(log.store, log.key.sign_checkpoint, checkpoint_interval_s=0.001, on_commit=log._on_commit,
                    publish_static=log._wake)
    before = log.latest
    while (cp := await seq.integrate([])) is None:  # (None only within the millisecond of the last signature)
        pass
    assert (cp.tree_size, cp.root) == (before.tree_size, before.root) and cp.signed_at_ms > before.signed_at_ms


@pytest.mark.parametrize("target_kind", ["memory", "directory"])
async def test_a_wiped_target_is_refilled_from_zero_by_itself(log, tmp_path, target_kind):
    await at_least(log, SIZE)
    place = Place(target_kind, f"wiped-{target_kind}", tmp_path)
    pub = log.publisher(place.target())
    log.wakers.append(pub.wake)
    try:
        async with publishing(pub):
            await wait_for("the first publication", published(log, place, log.latest))
            created = log.metric(pub, "logserver_publication_objects_total", outcome="created")
            assert created == len(needed_paths(log.latest.tree_size))
            place.wipe()
            await resign(log)  # no new entry: an idle log's next checkpoint
            await wait_for("the wiped target to be refilled", published(log, place, log.latest))
    finally:
        log.wakers.remove(pub.wake)
    assert log.metric(pub, "logserver_publication_objects_total", outcome="created") == 2 * created  # all again
    assert log.metric(pub, "logserver_publication_objects_total", outcome="existed") == 0
    assert pub.halted is None
    assert await log.check_published(place.name, place.read, place.name) == log.latest.tree_size
    if target_kind == "memory":
        assert place.bucket.violations == []


async def test_a_halt_stops_the_pass_at_once_nothing_more_is_written(log, caplog):
    """The objects of a pass are created by concurrent tasks: when one meets a conflict,
    the pass ends, and the tasks that have not written yet must not write after the halt
    (into what may be another log's target). One at a time here (concurrency 1), the
    conflict at the first object: nothing else may ever be created."""
    size = await at_least(log, SIZE)
    objects = static_tree(*await log.leaves(size))
    bucket = MemoryBucket()
    bucket.put("tile/0/000", bytes(len(objects["tile/0/000"])))  # the first object a pass creates
    pub = log.publisher(MemoryTarget("halt-stops", bucket))
    pub.concurrency = 1
    before = asyncio.all_tasks()
    log.wakers.append(pub.wake)
    try:
        async with publishing(pub):
            await wait_for("the conflict to halt the publisher", halted_check(pub))
            started = [t for t in asyncio.all_tasks() - before
                       if t is not asyncio.current_task() and "TargetPublisher.run" not in repr(t.get_coro())]
            if started:  # whatever the pass left running, let it finish
                await asyncio.wait(started, timeout=30)
            assert all(t.done() for t in started)
    finally:
        log.wakers.remove(pub.wake)
    assert "tile/0/000" in pub.halted
    assert set(bucket.objects) == {"tile/0/000"} and pub.target.calls["create"] == 1, sorted(bucket.objects)


# --- a running server ------------------------------------------------------------------------


def directory_target(name: str, path: Path) -> str:
    return f'[[publication.targets]]\nname = "{name}"\ntype = "directory"\npath = "{path}"\n'


async def test_a_running_server_halts_a_conflicting_target_and_says_so_in_readyz(log, database_url, tmp_path,
                                                                                  caplog):
    """Last in the module: the server shares the module's log (the same key and database)."""
    await at_least(log, SIZE)
    cp = log.latest
    roots = {name: tmp_path / "public" / name for name in ("objconflict", "splitview", "foreign", "good")}
    junk_tile = bytes(8192)  # tile/0/000 with other bytes
    (roots["objconflict"] / "tile" / "0").mkdir(parents=True)
    (roots["objconflict"] / "tile" / "0" / "000").write_bytes(junk_tile)
    roots["splitview"].mkdir(parents=True)
    split = foreign_checkpoints(log)["a split view"]
    (roots["splitview"] / "checkpoint").write_bytes(split)
    roots["foreign"].mkdir(parents=True)
    foreign = foreign_checkpoints(log)["signed by another key"]
    (roots["foreign"] / "checkpoint").write_bytes(foreign)
    pem = PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # No fleet-head objects: this log's made-up leaves (publish_support) are no bundles to prove.
    config = write_config(tmp_path / "server", database_url, key_pem=pem,
                          extra="[publication]\nfleet_heads_interval_s = 0\n"
                          + "".join(directory_target(n, p) for n, p in roots.items()))
    server = await start_server(config)
    try:
        async def all_halted() -> bool:
            async with server.session.get("/readyz") as resp:
                reason = (await resp.json()).get("reason", "")
            return all(f"target {n!r} is halted" in reason for n in ("objconflict", "splitview", "foreign"))

        await wait_for("/readyz to name the three halted targets", all_halted)
        async with server.session.get("/readyz") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"]
            body = await resp.json()
        assert set(body) == {"status", "reason"} and body["status"] == "publication_behind", body
        reason = body["reason"]
        assert "tile/0/000" in reason and "a split view on the target" in reason, reason
        assert "is not a checkpoint of this log signed by its key" in reason and "'good'" not in reason, reason
        async with server.session.get("/metrics") as resp:
            metrics = await resp.text()
        for name in ("objconflict", "splitview", "foreign"):
            assert f'logserver_publication_conflicts_total{{target="{name}"}} 1.0' in metrics, name
            assert f'logserver_publication_halted{{target="{name}"}} 1.0' in metrics, name
            assert critical_lines(caplog, name), name
        assert 'logserver_publication_halted{target="good"} 0.0' in metrics
        assert any("tile/0/000" in line for line in critical_lines(caplog, "objconflict"))

        # Submissions go on, the good target follows them, the halted ones are untouched.
        await submit(server.session, server.url, envelopes(3, "readyz-fleet"))
        async with server.session.get("/checkpoint") as resp:
            served = await resp.read()

        async def good_caught_up() -> bool:
            return read_file(roots["good"], "checkpoint") == served

        await wait_for("the good target to publish the new entries", good_caught_up)
        assert read_file(roots["objconflict"], "tile/0/000") == junk_tile
        assert read_file(roots["objconflict"], "checkpoint") is None
        assert read_file(roots["splitview"], "checkpoint") == split
        assert read_file(roots["foreign"], "checkpoint") == foreign
        assert cp.tree_size + 3 <= log.verifiers.open(served).size
    finally:
        await server.close()
