"""Upgrading from the previous release (docs/operations.md, "Releases and upgrades").

The previous release is built from this repository's own history: its commit is the
tag `v<version>` or, where tags did not travel (a merge, a fresh clone of a branch),
the newest line of the tracked file RELEASES that is not this code's own version. `git archive` of that commit is
unpacked into a temporary directory and run with PYTHONPATH pointing at it and this
venv's installed dependencies (the old release's pins are a subset of ours): no
network. The old release creates a log (entries of several fleets, checkpoints,
receipts), then the current code is started on the same database and data directory:

* the migrations the old release did not have apply, and it starts (its start-up
  checks: the identity, the data directory's latest-checkpoint, the stored tiles);
* every receipt the old release handed out still verifies: its entry at its index,
  its inclusion proof against its checkpoint, that checkpoint consistent with the
  current code's latest (proofs from the new server, checked by the independent
  verifier); every old checkpoint row likewise; fsck is clean;
* the old fleets go on: the next sequence of an old fleet is accepted, an old one is
  a rollback (the fleet heads were carried over), and the first new batch ends with a
  HEADS leaf committing to the heads table folded from every leaf, old ones included
  (fault_load.audit_log);
* there is no way back: the old release refuses the upgraded database.

From release 0.2.0 (docs/fleet-heads.md, "The heads tree"): the old release ends each
batch with a type-2 HEADS leaf over the heads rows sorted by fleet id; this code writes
type 3 over the chained layout (fleets in first-appearance order, each entry naming the
next fleet id). The fleets here first appear out of byte order, so the two layouts'
roots differ, and the whole log must still fold clean: each type-2 leaf checked against
the sorted root, each type-3 leaf against the chained one. Migration 0008 backfills
`fleets.first_idx`. Right after the upgrade, before any batch, the published checkpoint
still ends with a type-2 leaf, at which no proof is made: the fleet-head route answers
404 no_heads_leaf; after the first batch a proof verifies under the client's policy.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import aiohttp
import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent / "faults"))  # fault_load's audit, shared with the fault tests

from bundle_factory import BundleFactory, make_key
from fault_load import Ack, Item, audit_log, run_fsck
from logserver.bundle.heads import HEADS_LEAF_TYPE, LEGACY_HEADS_LEAF_TYPE, decode_heads_leaf, fold, is_heads_leaf
from logserver.client import TrustPolicy
from logserver.client.errors import FleetAbsentError
from logserver.client.fleet_head import verify_fleet_head
from logserver.formats.fleet_head import parse_fleet_head_proof
from server_harness import ServerProcess, write_config
from test_client_support import write_trust_policy

REPO = Path(__file__).resolve().parents[1]
JSON = {"Content-Type": "application/json"}


def git(*args: str) -> bytes:
    out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=120)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr.decode(errors='replace')}"
    return out.stdout


def previous_release() -> tuple[str, str]:
    """(version, commit) of the newest release in RELEASES other than this code's own
    version (the release this code was cut as is listed once it is tagged); its tag,
    when present, must agree."""
    import logserver

    lines = [line.split() for line in (REPO / "RELEASES").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    lines = [line for line in lines if line[0] != logserver.__version__]
    assert lines, f"RELEASES lists no release before {logserver.__version__}"
    version, commit, _date = lines[-1]
    tagged = subprocess.run(["git", "-C", str(REPO), "rev-parse", "-q", "--verify", f"v{version}^{{commit}}"],
                            capture_output=True, text=True, timeout=60)
    if tagged.returncode == 0:
        assert tagged.stdout.strip() == commit, f"tag v{version} is {tagged.stdout.strip()}, RELEASES says {commit}"
    return version, commit


def build_release(commit: str, target: Path) -> Path:
    """The release's source tree (what it needs to run: the package, migrations, openapi.yaml)."""
    git("cat-file", "-e", f"{commit}^{{commit}}")  # the history must hold it: a shallow clone fails here
    archive = git("archive", "--format=tar", commit, "logserver", "migrations", "openapi.yaml")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        if hasattr(tarfile, "tar_filter"):  # Python 3.11.4+: refuse members outside `target`
            tar.extractall(target, filter="tar")
        else:  # pragma: no cover - our own repository's archive
            tar.extractall(target)
    return target


@pytest.fixture
async def processes():
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.kill_now()


# First appearance out of byte order: the chained tree's order (c, a, b) is not the sorted one.
FLEETS = ("upgrade-c", "upgrade-a", "upgrade-b")


async def stored_leaves(database_url: str) -> list[bytes]:
    conn = await asyncpg.connect(database_url)
    try:
        return [bytes(r["leaf"]) for r in await conn.fetch("SELECT leaf FROM leaves ORDER BY idx")]
    finally:
        await conn.close()


async def stored_fleets(database_url: str) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Each fleet's (first_idx, head idx) in first_idx order (migration 0008), and the
    smallest index of each fleet's bundles, from the leaves themselves."""
    conn = await asyncpg.connect(database_url)
    try:
        fleets = {r["fleet_id"]: (r["first_idx"], r["idx"])
                  for r in await conn.fetch("SELECT fleet_id, first_idx, idx FROM fleets ORDER BY first_idx")}
        first = {r["fleet_id"]: r["first"] for r in await conn.fetch(
            "SELECT fleet_id, min(idx) AS first FROM leaves WHERE kind = 1 GROUP BY fleet_id")}
    finally:
        await conn.close()
    return fleets, first


async def get_head(session: aiohttp.ClientSession, url: str, fleet: str) -> tuple[int, bytes]:
    async with session.get(f"{url}/v1/fleets/{fleet}/head") as resp:
        return resp.status, await resp.read()


async def test_the_current_code_takes_over_a_log_made_by_the_previous_release(database_url, processes, tmp_path):
    version, commit = previous_release()
    assert version == "0.2.0", f"the previous release: got {version}, want 0.2.0 (the sorted heads layout)"
    old_tree = build_release(commit, tmp_path / f"logserver-{version}")
    old_env = {"PYTHONPATH": str(old_tree)}
    probe = "import logserver; print(logserver.__version__, logserver.__file__)"
    reported = subprocess.run([sys.executable, "-c", probe],
                              env={"PYTHONPATH": str(old_tree), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert reported.stdout.split() == [version, str(old_tree / "logserver" / "__init__.py")], reported

    cfg = write_config(tmp_path / "log", database_url, extra="[sequencer]\ncheckpoint_interval_s = 0.5\n")
    old = ServerProcess(cfg, database_url, extra_env=old_env, log_path=tmp_path / "old.log")
    processes.append(old)
    await old.start()
    factories = [BundleFactory(fleet_id=f) for f in FLEETS]
    acks: list[Ack] = []
    seen: list[str] = []
    number = 0

    async def submit(session: aiohttp.ClientSession, url: str, f: int, sequence: int,
                     **overrides: object) -> tuple[int, dict]:
        nonlocal number
        body = factories[f].envelope_json(sequence=sequence, **overrides)
        async with session.post(url + "/v1/bundles", data=body, headers=JSON) as resp:
            receipt = await resp.json()
            if resp.status in (200, 201):
                acks.append(Ack(Item(number, factories[f].fleet_id, sequence, body), resp.status, receipt, url))
                number += 1
            return resp.status, receipt

    async with aiohttp.ClientSession() as session:
        for sequence in range(4):
            for f in range(3):
                # Fleet 2 skips sequences 3 and 4: only its head, carried over, refuses 4 later.
                status, receipt = await submit(session, old.url, f, 5 if (f, sequence) == (2, 3) else sequence)
                assert status == 201, receipt
            async with session.get(old.url + "/checkpoint") as resp:
                seen.append(await resp.text())
        old_size = acks[-1].receipt["tree_size"]
        # One bundle a batch, each batch ending with release 0.2.0's HEADS leaf.
        assert [a.receipt["index"] for a in acks] == list(range(0, 24, 2)) and old_size == 24, acks[-1].receipt
        assert await old.stop() == 0, old.output()
        assert "0008_heads_chain" not in old.output()
        leaves = await stored_leaves(database_url)
        assert [leaf[0] for leaf in leaves[1::2]] == [LEGACY_HEADS_LEAF_TYPE] * 12
        fold(leaves, check_heads=True)  # type 2 against the sorted layout's root
        # The layouts differ here: with the rows in first-appearance order the last
        # type-2 leaf's root would be another.
        table = fold(leaves)
        assert decode_heads_leaf(leaves[-1]).root != table.root()

        new = ServerProcess(cfg, database_url, log_path=tmp_path / "new.log")
        processes.append(new)
        await new.start()
        assert "applying migration 0008_heads_chain.sql" in new.output(), new.output()
        assert "applying migration 0006" not in new.output(), new.output()  # 0.2.0 had it
        fleets, first = await stored_fleets(database_url)
        assert fleets == {FLEETS[f]: (2 * f, 18 + 2 * f) for f in range(3)}, fleets  # backfilled, in log order
        assert {f: first_idx for f, (first_idx, _) in fleets.items()} == first

        # Before any batch: the checkpoint still ends with a type-2 leaf, at which no
        # proof is made, for a fleet present or absent. The reader found that leaf
        # consistent with the table (else 503 fleet_heads_unavailable).
        for fleet in ("upgrade-a", "upgrade-never"):
            status, body = await get_head(session, new.url, fleet)
            assert status == 404, body
            error = json.loads(body)["error"]
            assert error["code"] == "no_heads_leaf" and "release 0.2.0" in error["message"], error

        # Every old receipt, checkpoint row and seen checkpoint verifies against the new server.
        report = await audit_log(database_url, new.url, acks, session, seen)
        assert report.tree_size == old_size and report.receipts_checked == 12

        # The old fleets go on where they were.
        status, body = await submit(session, new.url, 2, 4)
        assert (status, body["error"]["code"]) == (409, "rollback"), body
        status, body = await submit(session, new.url, 0, 2, keys=[make_key("hsm-9", "ed25519")])
        assert (status, body["error"]["code"]) == (409, "equivocation"), body
        status, receipt = await submit(session, new.url, 0, 4)
        assert status == 201 and receipt["index"] == old_size, receipt
        assert receipt["tree_size"] == old_size + 2, "the first new batch ends with a HEADS leaf"
        logged = acks[10].item  # an old fleet's latest, submitted again
        async with session.post(new.url + "/v1/bundles", data=logged.body, headers=JSON) as resp:
            receipt = await resp.json()
            assert resp.status == 200 and receipt["duplicate"] is True and receipt["index"] == 20, receipt
        acks.append(Ack(logged, 200, receipt, new.url))
        # A new fleet, sorting before every old one: appended at the end of the tree, and
        # the wrapping link (the greatest id to the smallest) now names it.
        factories.append(BundleFactory(fleet_id="upgrade-0"))
        status, receipt = await submit(session, new.url, 3, 0)
        assert status == 201 and receipt["index"] == old_size + 2, receipt

        leaves = await stored_leaves(database_url)
        fleets, first = await stored_fleets(database_url)
        assert [is_heads_leaf(leaf) and leaf[0] for leaf in leaves[old_size + 1::2]] == [HEADS_LEAF_TYPE] * 2
        table = fold(leaves, check_heads=True)  # types 2 and 3, each against its own layout
        assert [r.fleet_id for r in table] == [*FLEETS, "upgrade-0"] == list(fleets)
        assert {f: first_idx for f, (first_idx, _) in fleets.items()} == first
        assert decode_heads_leaf(leaves[-1]).previous == old_size + 1  # the first type-3 leaf
        assert decode_heads_leaf(leaves[old_size + 1]).previous == old_size - 1  # the last type-2 leaf

        # The current server's fleet-head proofs verify under a client's trust policy.
        async with session.get(new.url + "/v1/log") as resp:
            vkey = (await resp.json())["verifier_key"]
        trust = write_trust_policy(tmp_path / "client", vkey)
        policy = TrustPolicy.load(trust)
        status, body = await get_head(session, new.url, "upgrade-c")
        assert status == 200, body
        head = verify_fleet_head(body, policy, datetime.now(UTC), fleet_id="upgrade-c", max_age=600)
        assert (head.sequence, head.leaf_index, head.position) == (4, old_size, 0)
        assert parse_fleet_head_proof(body).row.next_fleet_id == "upgrade-0"  # c, the greatest, wraps around
        status, body = await get_head(session, new.url, "upgrade-bb")
        assert status == 200, body
        with pytest.raises(FleetAbsentError) as absent:
            verify_fleet_head(body, policy, datetime.now(UTC), fleet_id="upgrade-bb", max_age=600)
        covering = absent.value.absence
        assert (covering.position, covering.covering.fleet_id, covering.next_fleet_id) == (2, "upgrade-b", "upgrade-c")

        report = await audit_log(database_url, new.url, acks, session, seen)
        assert report.receipts_checked == 15
        assert "CRITICAL" not in new.output(), new.output()
        assert await new.stop() == 0, new.output()

    # No downgrade: the old release refuses a database with migrations it does not know.
    again = ServerProcess(cfg, database_url, extra_env=old_env, log_path=tmp_path / "old-again.log")
    processes.append(again)
    with pytest.raises(RuntimeError, match="migrations this logserver does not know"):
        await again.start()
    fsck = await asyncio.to_thread(run_fsck, cfg, database_url)
    assert fsck.returncode == 0 and "no problems" in fsck.stdout, fsck.stdout + fsck.stderr
