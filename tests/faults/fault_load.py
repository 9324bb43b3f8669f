"""Load generation and after-the-fact auditing for the fault tests.

`Workload` precomputes many distinct, validly dual-signed envelopes spread over
several fleets. `Load` posts them with many concurrent submitters, each owning
its fleets and sending each fleet's bundles in sequence order (a fleet's
sequence numbers must only grow), retrying every 503 and every broken or
refused connection until the bundle is acknowledged (2xx). It records every
2xx receipt. `audit_log` then checks the stored log, the API and every receipt
against each other with the independent RFC 6962 verifier.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from bundle_factory import BundleFactory, default_authorities
from independent_merkle import check_consistency, check_inclusion, leaf_hash, mth
from logserver.bundle import encode_leaf, parse_envelope
from logserver.bundle.heads import fold
from logserver.formats.checkpoint import open_checkpoint
from logserver.formats.note import Ed25519NoteVerifier

JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Item:
    """One bundle to log: its request body and the (fleet, sequence) it claims."""

    number: int
    fleet_id: str
    sequence: int
    body: bytes


class Workload:
    """`fleets` fleets with `per_fleet` bundles each (sequences 0, 1, ...), all signed up front."""

    def __init__(self, fleets: int, per_fleet: int, prefix: str = "fault"):
        authorities = default_authorities()  # Ed25519 signer, P-256 countersigner: ~0.3 ms per envelope
        self.queues: list[list[Item]] = []
        number = 0
        for f in range(fleets):
            factory = BundleFactory(authorities, fleet_id=f"{prefix}-{f}")
            queue = []
            for s in range(per_fleet):
                queue.append(Item(number, factory.fleet_id, s, factory.envelope_json(sequence=s)))
                number += 1
            self.queues.append(queue)
        self.items = [item for queue in self.queues for item in queue]


@dataclass(frozen=True)
class Ack:
    item: Item
    status: int
    receipt: dict
    url: str


@dataclass
class Load:
    """Concurrent submitters over `targets` (base URLs); see the module docstring."""

    workload: Workload
    targets: list[str]
    request_timeout_s: float = 20.0
    pause_s: float = 0.0  # each submitter's pause after an acknowledgement (paces a long-running load)
    acks: list[Ack] = field(default_factory=list)
    unexpected: list[tuple[Item, int, str]] = field(default_factory=list)  # anything but 2xx and 503
    retries: int = 0
    _stopping: bool = False
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Until every bundle is acknowledged, or stop() was called."""
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._submitter(session, n, q) for n, q in enumerate(self.workload.queues)))

    def stop(self) -> None:
        self._stopping = True

    @property
    def done(self) -> bool:
        return len(self.acks) == len(self.workload.items)

    async def wait_for_acks(self, count: int, timeout_s: float, what: str = "") -> None:
        """Until at least `count` bundles are acknowledged; fail after a generous deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.acks) < count:
            if self.unexpected:
                raise AssertionError(f"unexpected responses: {self.unexpected[:3]}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no progress to {count} acknowledged bundles within {timeout_s}s "
                                     f"(have {len(self.acks)}) {what}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 1.0))

    def acks_from(self, urls: set[str], after: int = 0) -> list[Ack]:
        return [a for a in self.acks[after:] if a.url in urls]

    async def _submitter(self, session: aiohttp.ClientSession, number: int, queue: list[Item]) -> None:
        rng = random.Random(number)
        for item in queue:
            attempt = 0
            while True:
                if self._stopping:
                    return
                url = self.targets[(number + attempt) % len(self.targets)]
                try:
                    async with session.post(url + "/v1/bundles", data=item.body, headers=JSON) as resp:
                        if resp.status in (200, 201):
                            self.acks.append(Ack(item, resp.status, await resp.json(), url))
                            self._progress.set()
                            if self.pause_s:
                                await asyncio.sleep(self.pause_s)
                            break
                        text = await resp.text()
                        if resp.status != 503 or "Retry-After" not in resp.headers:
                            self.unexpected.append((item, resp.status, text))
                            return
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass  # killed, restarting, frozen: not acknowledged, so retry
                attempt += 1
                self.retries += 1
                await asyncio.sleep(min(0.25, 0.01 * 2 ** min(attempt, 5)) * rng.uniform(0.5, 1.5))


# --- auditing -------------------------------------------------------------------------------


@dataclass
class AuditReport:
    tree_size: int
    bundles: int  # the leaves that are bundles (the others are HEADS leaves)
    checkpoints_checked: int  # distinct (size, root) pairs, from the table and from receipts
    checkpoint_rows: int
    receipts_checked: int


async def audit_log(database_url: str, api_url: str, acks: list[Ack], session: aiohttp.ClientSession,
                    seen_notes: list[str] = (), heads_from: int = 0) -> AuditReport:
    """Check the whole log after the faults; raise AssertionError (with got/want) on any violation.

    * leaves: dense indices, each leaf hash recomputed from the stored bytes, no
      leaf hash and no (fleet, sequence) twice; the API serves the same entries;
    * every acknowledged receipt: its entry is at its index with the same leaf
      hash, that leaf is the submitted envelope's, its inclusion proof verifies
      against its checkpoint, and a bundle never got two indices;
    * every checkpoint ever published (every row of the checkpoints table and
      every checkpoint in a receipt, plus `seen_notes`): signed by the log, one root per size,
      sizes and times in signing order, and consistent with every later one.
    """
    conn = await asyncpg.connect(database_url)
    try:
        leaves = await conn.fetch("SELECT idx, leaf_hash, leaf, fleet_id, sequence FROM leaves ORDER BY idx")
        rows = await conn.fetch("SELECT id, tree_size, root, signed_at_ms, note FROM checkpoints ORDER BY id")
        state = await conn.fetchrow("SELECT tree_size, root, checkpoint_id FROM log_state")
        vkey = await conn.fetchval("SELECT vkey FROM log_identity")
    finally:
        await conn.close()
    verifier = Ed25519NoteVerifier.from_vkey(vkey)
    size = len(leaves)

    # Leaves: one linear, dense history.
    assert [r["idx"] for r in leaves] == list(range(size)), "leaf indices are not 0..n-1"
    hashes = [bytes(r["leaf_hash"]) for r in leaves]
    for r, h in zip(leaves, hashes, strict=True):
        assert leaf_hash(bytes(r["leaf"])) == h, f"leaf {r['idx']}: stored hash is not the hash of its bytes"
    assert len(set(hashes)) == size, "a leaf hash appears twice"
    bundles = [r for r in leaves if r["fleet_id"] is not None]
    assert len({(r["fleet_id"], r["sequence"]) for r in bundles}) == len(bundles), "a (fleet, sequence) appears twice"
    # Every HEADS leaf commits to the heads table folded from the bundles before it
    # (fold raises HeadsMismatchError otherwise; docs/fleet-heads.md).
    fold([bytes(r["leaf"]) for r in leaves], check_heads=True)
    assert state["tree_size"] == size, f"log_state size {state['tree_size']}, leaves {size}"
    root = mth(hashes)
    assert bytes(state["root"]) == root, "log_state root is not the Merkle tree hash of the leaves"

    # The API serves exactly these entries.
    served: list[str] = []
    while len(served) < size:
        async with session.get(api_url + "/v1/entries", params={"start": len(served), "end": size}) as resp:
            assert resp.status == 200, await resp.text()
            page = (await resp.json())["entries"]
        assert page and [e["index"] for e in page] == list(range(len(served), len(served) + len(page)))
        served += [e["leaf_hash"] for e in page]
    assert served == [h.hex() for h in hashes], "the API's entries differ from the stored leaves"

    # Every acknowledged receipt.
    index_of_item: dict[int, int] = {}
    checkpoints: dict[int, bytes] = {}  # size -> root, over everything ever published

    def publish(note: str, where: str) -> tuple[int, bytes]:
        cp, _ = open_checkpoint(note.encode(), [verifier])
        if checkpoints.setdefault(cp.size, cp.root) != cp.root:
            raise AssertionError(f"fork: two roots for size {cp.size} ({where})")
        return cp.size, cp.root

    for ack in acks:
        r, item = ack.receipt, ack.item
        index = r["index"]
        assert r["duplicate"] is (ack.status == 200), r
        assert index_of_item.setdefault(item.number, index) == index, \
            f"bundle {item.fleet_id}/{item.sequence} acknowledged at two indices"
        assert 0 <= index < size, f"acknowledged index {index} is not in the log (size {size}): entry lost"
        row = leaves[index]
        assert r["leaf_hash"] == hashes[index].hex(), \
            f"index {index}: receipt leaf {r['leaf_hash']}, stored {hashes[index].hex()}"
        assert (row["fleet_id"], row["sequence"]) == (item.fleet_id, item.sequence), \
            f"index {index}: stored {(row['fleet_id'], row['sequence'])}, acknowledged {(item.fleet_id, item.sequence)}"
        assert leaf_hash(encode_leaf(parse_envelope(item.body))) == hashes[index], \
            f"index {index}: the stored leaf is not the submitted envelope"
        cp_size, cp_root = publish(r["checkpoint"], f"receipt for index {index}")
        assert cp_size == r["tree_size"]
        check_inclusion(index, cp_size, hashes[index], [bytes.fromhex(h) for h in r["inclusion_proof"]], cp_root)
    assert len(set(index_of_item.values())) == len(index_of_item), "two bundles acknowledged at one index"

    for n, note in enumerate(seen_notes):
        publish(note, f"seen checkpoint {n}")

    # Every checkpoint row: signed, in signing order, one root per size.
    last_size, last_time = -1, -1
    for row in rows:
        cp_size, cp_root = publish(row["note"], f"checkpoint row {row['id']}")
        assert (cp_size, cp_root) == (row["tree_size"], bytes(row["root"])), f"row {row['id']}: note and columns differ"
        assert cp_size >= last_size, f"checkpoint row {row['id']}: size {cp_size} after {last_size}"
        assert row["signed_at_ms"] > last_time, f"checkpoint row {row['id']}: time went back"
        last_size, last_time = cp_size, row["signed_at_ms"]
    assert rows[-1]["id"] == state["checkpoint_id"] and last_size == size
    assert checkpoints[size] == root
    assert max(checkpoints) == size, f"a checkpoint of size {max(checkpoints)} beyond the log's {size} was published"

    # Consistency, by proofs from the API checked with the independent verifier. Each
    # checkpoint is checked against the latest AND against the next larger one. Together
    # these imply every pair is consistent: checkpoints consistent with a common later
    # tree are prefixes of it, hence of each other.
    assert checkpoints.get(0, mth([])) == mth([]), "the size-0 checkpoint is not the empty tree"
    # The invariant of docs/fleet-heads.md. A log made by a release before HEADS leaves
    # (tests/test_upgrade.py) has checkpoints up to `heads_from` that end with a bundle.
    for cp_size in checkpoints:
        assert cp_size <= heads_from or leaves[cp_size - 1]["fleet_id"] is None, \
            f"the checkpoint of size {cp_size} ends with a bundle, want a HEADS leaf"
    sizes = sorted(s for s in checkpoints if s > 0)
    pairs = {(s, size) for s in sizes if s < size} | set(itertools.pairwise(sizes))
    sem = asyncio.Semaphore(16)

    async def consistent(first: int, second: int) -> None:
        async with sem, session.get(api_url + "/v1/proof/consistency",
                                    params={"first": first, "second": second}) as resp:
            assert resp.status == 200, await resp.text()
            proof = [bytes.fromhex(h) for h in (await resp.json())["proof"]]
        check_consistency(first, second, checkpoints[first], checkpoints[second], proof)

    await asyncio.gather(*(consistent(a, b) for a, b in sorted(pairs)))
    return AuditReport(size, len(bundles), len(checkpoints), len(rows), len(acks))


def with_application_name(url: str, name: str) -> str:
    """The database URL with `application_name` set (asyncpg passes it on as a server setting)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k != "application_name"] + [("application_name", name)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def run_fsck(config_path: Path, database_url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "logserver.cli", "fsck", "--config", str(config_path), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)
