"""The sequencer's protocol (write/sequencer.py, steps 1-11) under a failure at every
step, before and after the step takes effect, on the in-memory store.

Each case runs the real Sequencer (its queue, run loop and error handling): a
warm-up batch, then a batch of three entries that meets the fault, then the same
three submitted again (what a client does after a 503), then one new entry. It
checks:
* no future resolves to an index that is not durable (committed in the store),
  with the leaf it names;
* no two different roots are signed for one size: every signature the sequencer
  made counts, even one that never left it;
* a retry after an ambiguous failure is a Duplicate of the stored entry, with a
  receipt (inclusion proof at the latest checkpoint) that verifies; a retry of
  what was not stored is appended;
* the next batch starts from the stored state: its entry lands at the stored
  size, with a proof that verifies;
* the fault fired exactly once (the case reached its step), the store saw nothing
  its schema would refuse, and the stored tiles reproduce the stored root.
The table must cover every step marked in Sequencer.integrate, and the test
asserts how many cases ran.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import logserver.write.sequencer as sequencer_module
from logserver.integrity.frontier import check_frontier
from logserver.keys.log_key import LogKey
from logserver.merkle import EMPTY_ROOT, CompactRange, leaf_hash, verify_inclusion
from logserver.read.tree_reader import TreeReader
from logserver.storage import LogStore, Sequencing, TileSource
from logserver.write.outcomes import (
    Appended,
    DatabaseUnavailableError,
    Duplicate,
    IntegrityError,
    ReceiptUnavailableError,
    SequencerError,
)
from logserver.write.sequencer import Sequencer
from memory_store import InjectedOutage, MemoryStore
from sequencer_support import running

KEY = LogKey("example.com/sequencer-faults", Ed25519PrivateKey.from_private_bytes(b"\x0f" * 32))

# (step of the protocol, fault point, where it is injected)
STEPS = [
    (1, "lock", "store"),
    (2, "snapshot", "store"),
    (3, "read_tiles", "store"),  # the pre-sign check's read, when the tiles were not prefetched
    (3, "check_frontier", "sequencer"),
    (4, "classify", "sequencer"),
    (5, "read_heads", "store"),  # the heads table's read, when the sequencer does not know it
    (5, "grow", "sequencer"),
    (6, "sign", "sequencer"),  # the log key
    (7, "append", "store"),
    (8, "commit", "store"),  # "after": committed, yet COMMIT raised
    (10, "on_commit", "sequencer"),  # the commit hook: caches, checkpoint file, publisher
    (11, "answer", "sequencer"),  # building the receipt's inclusion proof
]
# Step 0 (drop the entries whose submitter gave up) neither reads nor writes: there is
# nothing to fail (tests/test_server_commit_timeout.py covers a submitter giving up).
# Step 9 only wakes the static publisher, whose own steps 9.1-9.5 are failed, each
# before and after, by tests/test_publish_faults.py.
NOT_INJECTED = {0, 9}
EXPECTED_CASES = 24


class InjectedBug(RuntimeError):
    """A failure of the sequencer's own code (or of the signer, or the commit hook)."""


class SequencerFaults:
    """One armed fault for the sequencer-side points: functions of write/sequencer.py,
    the signer and the commit hook, each wrapped to fail before or after it runs."""

    def __init__(self):
        self.armed: tuple[str, str] | None = None
        self.fired: list[tuple[str, str]] = []

    def arm(self, point: str, when: str) -> None:
        self.armed = (point, when)

    def _fire(self, point: str, when: str) -> None:
        if self.armed == (point, when):
            self.armed = None
            self.fired.append((point, when))
            raise InjectedBug(f"injected: {point} fails {when} it takes effect")

    def wrap(self, point: str, fn):
        def wrapped(*args, **kwargs):
            self._fire(point, "before")
            result = fn(*args, **kwargs)
            self._fire(point, "after")
            return result

        return wrapped


class Signer:
    """The log key, recording every (size, root) it signs."""

    def __init__(self):
        self.roots: dict[int, set[bytes]] = {}

    def sign(self, size: int, root: bytes, signed_at_ms: int) -> str:
        self.roots.setdefault(size, set()).add(root)
        return KEY.sign_checkpoint(size, root, signed_at_ms)


def entry(n: int) -> tuple[bytes, bytes, str, int, bytes]:
    leaf = b"fault-table leaf %d" % n
    return leaf, leaf_hash(leaf), f"fleet-{n % 2}", n, hashlib.sha256(leaf).digest()


async def receipt_verifies(store: MemoryStore, index: int, lh: bytes) -> None:
    """The receipt a duplicate gets (api/submit.py): a proof at the latest checkpoint."""
    latest = store.latest
    proof = await TreeReader(store).inclusion_proof(index, latest.tree_size)
    verify_inclusion(index, latest.tree_size, lh, proof, latest.root)


def watch_durable(fut: asyncio.Future, store: MemoryStore, problems: list[str], label: str) -> None:
    """When `fut` resolves to an index, that index must be committed, with its leaf."""
    def done(f: asyncio.Future) -> None:
        if f.cancelled() or f.exception() is not None:
            return
        r = f.result()
        row = store.entry(r.index)
        if row is None or row.leaf_hash != r.leaf_hash:
            problems.append(f"{label}: resolved to index {r.index}, which is not durable (stored size {store.size})")
        if isinstance(r, Appended) and r.checkpoint not in store.checkpoint_rows:
            problems.append(f"{label}: answered with checkpoint {r.checkpoint.id}, which is not committed")

    fut.add_done_callback(done)


async def run_case(step: int, point: str, where: str, when: str, monkeypatch) -> None:
    label = f"step {step} {point} fails {when}"
    store = MemoryStore()
    store.initialize(KEY.sign_checkpoint(0, EMPTY_ROOT, 1000), 1000)
    signer = Signer()
    faults = SequencerFaults()
    problems: list[str] = []

    def on_commit(cp, tiles) -> None:
        if store.latest != cp:
            problems.append(f"{label}: commit hook ran with checkpoint {cp.id} before it was committed")

    for name in ("check_frontier", "classify", "grow", "inclusion_proof"):
        wrapped = faults.wrap("answer" if name == "inclusion_proof" else name, getattr(sequencer_module, name))
        monkeypatch.setattr(sequencer_module, name, wrapped)

    def sequencer() -> Sequencer:
        return Sequencer(store, faults.wrap("sign", signer.sign), max_batch_delay_ms=0, checkpoint_interval_s=3600,
                         on_commit=faults.wrap("on_commit", on_commit))

    def submit(seq: Sequencer, n: int) -> asyncio.Future:
        fut = seq.submit(*entry(n))
        watch_durable(fut, store, problems, f"{label}, entry {n}")
        return fut

    async def batch(seq: Sequencer, ns) -> list:
        futs = [submit(seq, n) for n in ns]  # no await in between: one batch
        return await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 30)

    warm = sequencer()
    async with running(warm):
        assert all(isinstance(r, Appended) for r in await batch(warm, [1, 2, 3])), label
    # The faulted batch runs on a sequencer that knows the log's size (the prefetched
    # path), except for the tile read, which only a sequencer that does not know it makes
    # (a process that just started, or one that lost track after an ambiguous COMMIT).
    seq = warm if point not in ("read_tiles", "read_heads") else sequencer()
    async with running(seq):
        before = store.size
        if where == "store":
            store.fail(point, when)
        else:
            faults.arm(point, when)
        first = await batch(seq, [4, 5, 6])
        fired = store.fired + faults.fired
        assert fired == [(point, when)], f"{label}: the fault fired {fired}"
        stored = point in ("on_commit", "answer") or (point, when) == ("commit", "after")
        # Three bundles and the batch's HEADS leaf (docs/fleet-heads.md).
        assert store.size == before + (4 if stored else 0), f"{label}: stored size {store.size}, before {before}"

        for n, r in zip([4, 5, 6], first, strict=True):
            if point == "on_commit":
                assert isinstance(r, Appended), f"{label}: {r!r}"  # the hook's failure fails nothing
            elif point == "answer" and n == 4:  # the first receipt built is the one that fails
                assert isinstance(r, ReceiptUnavailableError) and "was stored" in str(r), f"{label}: {r!r}"
            elif point == "answer":
                assert isinstance(r, Appended), f"{label}: {r!r}"
            else:
                assert isinstance(r, SequencerError) and r.status == 503, f"{label}: {r!r}"
                if where == "store":
                    assert isinstance(r, DatabaseUnavailableError), f"{label}: {r!r}"
            if isinstance(r, Appended):
                verify_inclusion(r.index, r.checkpoint.tree_size, r.leaf_hash, r.inclusion_proof, r.checkpoint.root)

        # The client retries what it did not get a receipt for (and, here, the rest too).
        retry = await batch(seq, [4, 5, 6])
        for i, (n, r) in enumerate(zip([4, 5, 6], retry, strict=True)):
            if stored:
                assert r == Duplicate(before + i, entry(n)[1]), f"{label}: retry of entry {n}: {r!r}"
                await receipt_verifies(store, r.index, r.leaf_hash)
            else:
                assert isinstance(r, Appended) and r.index == before + i, f"{label}: retry of entry {n}: {r!r}"
                verify_inclusion(r.index, r.checkpoint.tree_size, r.leaf_hash, r.inclusion_proof, r.checkpoint.root)
        assert store.size == before + 4, label

        # The next batch starts from the stored state.
        size = store.size
        (nxt,) = await batch(seq, [7])
        assert isinstance(nxt, Appended) and nxt.index == size and nxt.checkpoint.tree_size == size + 2, \
            f"{label}: next entry {nxt!r} at stored size {size}"
        verify_inclusion(nxt.index, nxt.checkpoint.tree_size, nxt.leaf_hash, nxt.inclusion_proof, nxt.checkpoint.root)
        assert seq.halted is None, label

    assert problems == [], problems
    assert store.violations == [], f"{label}: {store.violations}"
    forks = {size: roots for size, roots in signer.roots.items() if len(roots) > 1}
    assert not forks, f"{label}: two roots signed for one size: {forks}"
    for cp in store.checkpoint_rows[1:]:
        assert signer.roots[cp.tree_size] == {cp.root}, f"{label}: stored checkpoint {cp.id}"
    check_frontier(store.size, store.latest.root, store.tiles)  # raises if the tiles do not reproduce it
    leaves = CompactRange()
    leaves.extend([row.leaf_hash for row in store.leaves])
    assert [row.idx for row in store.leaves] == list(range(store.size)) and leaves.root() == store.latest.root, label
    for cp in store.checkpoint_rows[1:]:  # every checkpoint ends with a HEADS leaf
        assert store.leaves[cp.tree_size - 1].fleet_id is None, f"{label}: checkpoint {cp.id} ends with a bundle"


def integrate_step_markers() -> set[int]:
    """The step numbers marked "# [n]" in Sequencer.integrate."""
    source = inspect.getsource(Sequencer.integrate)
    return {int(n) for comment in re.findall(r"#.*", source) for n in re.findall(r"\[(\d+)\]", comment)}


async def test_every_step_fails_before_and_after_and_nothing_breaks(monkeypatch):
    markers = integrate_step_markers()
    assert markers == set(range(12)), markers  # the protocol block's steps 0-11, all marked in the code
    assert {step for step, _, _ in STEPS} == markers - NOT_INJECTED
    ran = []
    for step, point, where in STEPS:
        for when in ("before", "after"):
            with monkeypatch.context() as m:
                await run_case(step, point, where, when, m)
            ran.append((point, when))
    assert len(ran) == len(set(ran)) == EXPECTED_CASES


async def test_the_memory_store_and_its_transaction_implement_the_seam():
    store = MemoryStore()
    assert isinstance(store, LogStore) and isinstance(store, TileSource)
    store.initialize("cp0\n", 1000)
    async with store.sequencing(1000) as tx:
        assert isinstance(tx, Sequencing)


async def test_a_corrupted_frontier_halts_the_sequencer_and_nothing_is_signed():
    """The pre-sign check on the in-memory store (tests/test_corruption.py does it on
    PostgreSQL, through the server)."""
    store = MemoryStore()
    store.initialize(KEY.sign_checkpoint(0, EMPTY_ROOT, 1000), 1000)
    signer = Signer()
    seq = Sequencer(store, signer.sign, max_batch_delay_ms=0, checkpoint_interval_s=3600)
    async with running(seq):
        for n in (1, 2, 3):
            assert isinstance(await asyncio.wait_for(seq.submit(*entry(n)), 30), Appended)
        data = bytearray(store.tiles[(0, 0)])
        data[32] ^= 1  # leaf 1's hash, under the frontier at size 6 (three batches: a bundle and a HEADS leaf each)
        store.tiles[(0, 0)] = bytes(data)
        signed = {size: set(roots) for size, roots in signer.roots.items()}
        with pytest.raises(IntegrityError, match="do not reproduce the last signed checkpoint") as info:
            await asyncio.wait_for(seq.submit(*entry(4)), 30)
        assert f"want {store.latest.root.hex()}" in str(info.value)
        assert seq.halted and store.size == 6 and signer.roots == signed
        with pytest.raises(IntegrityError):
            seq.submit(*entry(5))


def test_injected_outages_are_what_the_sequencer_calls_the_database_unavailable():
    from logserver.storage import DATABASE_UNAVAILABLE

    assert issubclass(InjectedOutage, DATABASE_UNAVAILABLE)
