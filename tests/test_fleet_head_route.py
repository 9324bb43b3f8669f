"""GET /v1/fleets/{id}/head through a real server (real PostgreSQL): the fleet-head proof
of a present, absent and retired fleet verifies under the client's trust policy and
names what the log holds; a malformed id is 400; a proof stays valid at its checkpoint
after the fleet rotates, while the client state refuses to go back to it."""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from bundle_factory import BundleFactory
from logserver.api.keys import READER, STORE
from logserver.bundle import encode_leaf, parse_payload
from logserver.client import ClientState, TrustPolicy
from logserver.client.errors import FleetAbsentError, FleetHeadRollbackError, FleetRetiredError
from logserver.client.fleet_head import open_fleet_head, verify_fleet_head
from logserver.formats.fleet_head import parse_fleet_head_proof
from logserver.read.heads_reader import HeadsAheadError, HeadsReader
from server_harness import start_server, write_config
from test_client_support import log_vkey, submit, write_trust_policy

MAX_AGE_S = 600


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("headroute"), database_url))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy(server, tmp_path_factory) -> TrustPolicy:
    path = write_trust_policy(tmp_path_factory.mktemp("policy"), await log_vkey(server.session))
    path.write_text(path.read_text().replace("\n\n", f"\nmax_age_s = {MAX_AGE_S}\n\n", 1))
    return TrustPolicy.load(path)


async def get_head(server, fleet_id: str) -> tuple[int, bytes, dict[str, str]]:
    async with server.session.get(f"/v1/fleets/{fleet_id}/head") as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_an_empty_log_has_no_heads_leaf_yet(server):
    status, body, _ = await get_head(server, "anything")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "no_heads_leaf"


async def test_present_absent_retired_and_malformed(server, policy):
    # Submitted out of byte order: the heads tree's positions are the order the fleets
    # first appeared (fleet-d 0, fleet-f 1, fleet-b 2), not their sorted order.
    factories = {f: BundleFactory(fleet_id=f) for f in ("fleet-d", "fleet-f", "fleet-b")}
    envelopes = {}
    for _ in range(2):
        for f, factory in factories.items():
            envelopes[f] = factory.envelope()
            await submit(server.session, envelopes[f])

    # Present: the fleet's newest bundle, verified.
    status, body, headers = await get_head(server, "fleet-d")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "public, max-age=5"
    head = verify_fleet_head(body, policy, now(), fleet_id="fleet-d")
    assert head.sequence == parse_payload(envelopes["fleet-d"].payload).sequence == 1
    assert encode_leaf(head.envelope) == encode_leaf(envelopes["fleet-d"])
    parsed = parse_fleet_head_proof(body)
    assert parsed.checkpoint.size == parsed.heads_leaf.index + 1
    assert body == parsed.to_json()  # the canonical bytes of formats/fleet_head.py

    assert head.position == 0
    first_seen = [r["fleet_id"] for r in await server.app[STORE].pool.fetch(
        "SELECT fleet_id FROM fleets ORDER BY first_idx")]
    assert first_seen == ["fleet-d", "fleet-f", "fleet-b"]

    # Absent: one covering row each, whose chain link (fleet id -> next fleet id in byte
    # order, circular) passes over the id: before the first id and after the last, the
    # wrapping link fleet-f -> fleet-b; between two ids, the lower one's link.
    for fleet, want in (("fleet-a", (1, "fleet-f", "fleet-b")), ("fleet-c", (2, "fleet-b", "fleet-d")),
                        ("fleet-e", (0, "fleet-d", "fleet-f")), ("fleet-z", (1, "fleet-f", "fleet-b"))):
        status, body, _ = await get_head(server, fleet)
        assert status == 200, body
        with pytest.raises(FleetAbsentError) as caught:
            verify_fleet_head(body, policy, now(), fleet_id=fleet)
        absence = caught.value.absence
        assert (absence.position, absence.covering.fleet_id, absence.next_fleet_id) == want
        assert absence.covering.sequence == 1  # the covering fleet's newest row
        assert absence.heads.count == 3
        parsed = parse_fleet_head_proof(body)
        assert parsed.row is None and parsed.covering is not None and parsed.covering.position == want[0]
        assert body == parsed.to_json()

    # Retired: its retirement, then a later bundle is refused (409) and the head stays.
    retirement = factories["fleet-f"].envelope(status="retired")
    await submit(server.session, retirement)
    async with server.session.post("/v1/bundles", data=factories["fleet-f"].envelope_json(),
                                   headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "fleet_retired"
    status, body, _ = await get_head(server, "fleet-f")
    assert status == 200, body
    with pytest.raises(FleetRetiredError) as retired:
        verify_fleet_head(body, policy, now(), fleet_id="fleet-f")
    assert encode_leaf(retired.value.head.envelope) == encode_leaf(retirement)
    assert retired.value.head.status == "retired"

    # Malformed ids: 400 bad_fleet_id. ("." and ".." are dot segments, which URL
    # normalisation removes before any route sees them; LogClient refuses to send them.)
    for bad in ("a" * 129, "fleet%20x", "fl%C3%A9et", "a%2Fb", "fleet*"):
        status, body, _ = await get_head(server, bad)
        assert status == 400, (bad, status, body)
        assert json.loads(body)["error"]["code"] == "bad_fleet_id"


async def test_a_rotated_fleet_old_proof_still_verifies_but_the_state_refuses_rollback(server, policy, tmp_path):
    factory = BundleFactory(fleet_id="rotating")
    await submit(server.session, factory.envelope())
    _, old, _ = await get_head(server, "rotating")
    await submit(server.session, factory.envelope())
    _, new, _ = await get_head(server, "rotating")
    assert old != new
    state = ClientState(tmp_path / "state")
    assert verify_fleet_head(new, policy, now(), state=state).sequence == 1
    # The old proof is still a valid statement at its own (older) checkpoint...
    assert open_fleet_head(old, policy, now()).sequence == 0
    # ...but a client that saw the newer head refuses to go back to it.
    with pytest.raises(FleetHeadRollbackError):
        verify_fleet_head(old, policy, now(), state=state)


async def run_cli(*args: str) -> subprocess.CompletedProcess:
    # In a thread: the server runs in this test's event loop.
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "logserver.cli", "verify", *args],
                                   capture_output=True, text=True, timeout=120)


async def test_verify_head_prints_every_check_and_exits_by_outcome(server, tmp_path):
    policy = write_trust_policy(tmp_path, await log_vkey(server.session))
    factory = BundleFactory(fleet_id="cli-fleet")
    await submit(server.session, factory.envelope())
    await submit(server.session, factory.envelope())
    state = tmp_path / "state"

    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--log", server.url,
                         "--max-age", "600", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("fleet_head_format", "fleet_head_fleet", "checkpoint_signature", "witness_quorum",
                  "fleet_head_freshness", "heads_leaf", "heads_row", "head_bundle", "envelope_signatures",
                  "fleet_head_rollback"):
        assert f"[  ok] {check}" in done.stdout, (check, done.stdout)
    assert "CURRENT: fleet 'cli-fleet': sequence 1" in done.stdout, done.stdout
    assert "freshness rests on the log's own clock alone" in done.stdout

    # The same proof, saved and verified offline; then one verified before a newer head
    # was seen by the state is refused as a rollback (exit 1).
    _, old, _ = await get_head(server, "cli-fleet")
    (tmp_path / "head.json").write_bytes(old)
    await submit(server.session, factory.envelope())
    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--log", server.url,
                         "--max-age", "600", "--state", str(state))
    assert done.returncode == 0 and "sequence 2" in done.stdout, done.stdout + done.stderr
    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--head-proof", str(tmp_path / "head.json"),
                         "--max-age", "600")
    assert done.returncode == 0 and "sequence 1" in done.stdout, done.stdout + done.stderr
    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--head-proof", str(tmp_path / "head.json"),
                         "--max-age", "600", "--state", str(state))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[FAIL] fleet_head_rollback" in done.stdout and "FleetHeadRollbackError" in done.stdout, done.stdout

    # Absent: exit 8; retired: exit 7, and the JSON account says so.
    done = await run_cli("--head", "cli-never", "--policy", str(policy), "--log", server.url, "--max-age", "600")
    assert done.returncode == 8, done.stdout + done.stderr
    assert "ABSENT: fleet 'cli-never' has no bundle" in done.stdout
    # Its covering row is cli-fleet's, the greatest id below it, whatever fleet follows.
    assert "link 'cli-fleet' -> " in done.stdout and "passes over it" in done.stdout, done.stdout
    assert "[  ok] fleet_absence" in done.stdout, done.stdout
    await submit(server.session, factory.envelope(status="retired"))
    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--log", server.url, "--max-age", "600",
                         "--json")
    assert done.returncode == 7, done.stdout + done.stderr
    account = json.loads(done.stdout)
    assert account["head"]["outcome"] == "retired" and account["head"]["sequence"] == 3
    assert all(c["ok"] for c in account["checks"])

    # A stale proof (now far after its checkpoint) fails freshness: exit 1.
    done = await run_cli("--head", "cli-fleet", "--policy", str(policy), "--head-proof", str(tmp_path / "head.json"),
                         "--max-age", "60", "--now", "2099-01-01T00:00:00Z")
    assert done.returncode == 1 and "[FAIL] fleet_head_freshness" in done.stdout, done.stdout + done.stderr

    # Usage errors: exit 2.
    for bad in (["--head", "x", "--policy", str(policy)],  # no source
                ["--head", "..", "--policy", str(policy), "--log", server.url, "--max-age", "9"],
                ["--head", "x", "--policy", str(policy), "--log", server.url],  # no max age anywhere
                ["--head-proof", "h.json", "--receipt", "r", "--envelope", "e", "--policy", str(policy)]):
        done = await run_cli(*bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)


async def run_cli_command(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "logserver.cli", *args],
                                   capture_output=True, text=True, timeout=120)


async def test_a_receipt_carrying_the_head_verifies_offline_as_current(server, tmp_path):
    policy = write_trust_policy(tmp_path, await log_vkey(server.session))
    factory = BundleFactory(fleet_id="receipt-head")
    first, second = factory.envelope(), factory.envelope()
    (tmp_path / "first.json").write_bytes(first.to_json())
    (tmp_path / "second.json").write_bytes(second.to_json())

    done = await run_cli_command("submit", "--log", server.url, "--envelope", str(tmp_path / "first.json"),
                                 "--receipt", str(tmp_path / "receipt.json"), "--with-head")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "with the fleet-head proof of fleet 'receipt-head'" in done.stderr
    receipt = json.loads((tmp_path / "receipt.json").read_text())
    assert parse_fleet_head_proof(json.dumps(receipt["fleet_head"])).row.leaf_index == receipt["index"]

    verify = ["verify", "--receipt", str(tmp_path / "receipt.json"), "--envelope", str(tmp_path / "first.json"),
              "--policy", str(policy)]
    done = await run_cli_command(*verify, "--max-age", "600")
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("inclusion_proof", "fleet_head_freshness", "heads_leaf", "heads_row", "head_bundle",
                  "fleet_head_current"):
        assert f"[  ok] {check}" in done.stdout, (check, done.stdout)
    assert "CURRENT: the receipt's fleet-head proof shows it is the fleet's newest bundle" in done.stdout
    # With a client state, twice: the receipt and its head agree with what was recorded.
    for _ in range(2):
        done = await run_cli_command(*verify, "--max-age", "600", "--state", str(tmp_path / "state"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[  ok] fleet_head_rollback" in done.stdout and "[  ok] fleet_rollback" in done.stdout, done.stdout
    # No freshness bound anywhere: a usage error, not a pass.
    done = await run_cli_command(*verify)
    assert done.returncode == 2, done.stdout + done.stderr

    # The fleet rotates; the first receipt with a head fetched after that is not current.
    await submit(server.session, second)
    _, newer, _ = await get_head(server, "receipt-head")
    receipt["fleet_head"] = json.loads(newer)
    (tmp_path / "stale-receipt.json").write_text(json.dumps(receipt))
    done = await run_cli_command("verify", "--receipt", str(tmp_path / "stale-receipt.json"), "--envelope",
                                 str(tmp_path / "first.json"), "--policy", str(policy), "--max-age", "600")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[FAIL] fleet_head_current" in done.stdout and "NotCurrentHeadError" in done.stdout, done.stdout

    # A head proof that does not parse makes the receipt malformed.
    receipt["fleet_head"] = {"version": 1}
    (tmp_path / "bad-receipt.json").write_text(json.dumps(receipt))
    done = await run_cli_command("verify", "--receipt", str(tmp_path / "bad-receipt.json"), "--envelope",
                                 str(tmp_path / "first.json"), "--policy", str(policy), "--max-age", "600")
    assert done.returncode == 1 and "[FAIL] receipt_format" in done.stdout, done.stdout + done.stderr


async def test_a_table_ahead_of_the_checkpoint_and_one_that_disagrees_with_the_log(server, caplog):
    """Last in the module: it corrupts the database's fleet heads."""
    store, reader = server.app[STORE], server.app[READER]
    latest = await store.latest_checkpoint()
    fresh = HeadsReader(store, reader)
    assert (await fresh.at(latest.tree_size)).size == latest.tree_size  # built once, at the database's size
    with pytest.raises(HeadsAheadError) as ahead:
        await fresh.at(latest.tree_size - 1)
    assert ahead.value.size == latest.tree_size

    # A fleets row that names another leaf than the fleet's newest bundle: the table folded
    # from the database no longer matches the HEADS leaf the log signed.
    await store.pool.execute(
        "UPDATE fleets SET sequence = sequence + 1000, idx = (SELECT max(idx) FROM leaves) WHERE fleet_id = $1",
        "fleet-b")
    second = await start_server(server.config.log_key.parent / "logserver.toml")
    try:
        with caplog.at_level(logging.CRITICAL, logger="logserver.read.heads_reader"):
            async with second.session.get("/v1/fleets/fleet-d/head") as resp:
                assert resp.status == 503
                body = await resp.json()
                assert resp.headers["Retry-After"]
        assert body["error"]["code"] == "fleet_heads_unavailable"
        assert any(r.levelno == logging.CRITICAL and "HEADS leaf stored at" in r.getMessage()
                   for r in caplog.records), caplog.text
    finally:
        await second.close()
