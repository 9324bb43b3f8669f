"""Client state against running servers: rollback refused, split view detected with
evidence that re-verifies, consistency proved online, state persisted atomically."""
from __future__ import annotations

import json

import pytest

import pg
from bundle_factory import NOW, BundleFactory
from logserver.client import (
    CheckLog,
    ClientState,
    ConsistencyError,
    ConsistencyProof,
    EvidenceError,
    FleetRollbackError,
    LogClient,
    SplitViewError,
    SplitViewEvidence,
    StateError,
    open_state,
    verify_evidence,
    verify_receipt,
    verify_receipt_online,
)
from logserver.keys.log_key import generate_log_key_pem
from server_harness import start_server, write_config
from test_client_support import Proxy, submit, trust_policy_for

KEY_PEM = generate_log_key_pem()


@pytest.fixture(scope="module")
async def log_a(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("log-a"), database_url, key_pem=KEY_PEM))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def log_b(pg_admin_url, tmp_path_factory):
    """Another instance with the SAME key and origin, on its own database: a fork."""
    url = await pg.create_database(pg_admin_url, "t_client_state_fork")
    s = await start_server(write_config(tmp_path_factory.mktemp("log-b"), url, key_pem=KEY_PEM))
    yield s
    await s.close()
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture(scope="module")
async def policy(log_a, tmp_path_factory):
    return (await trust_policy_for(log_a, tmp_path_factory.mktemp("policy")))[0]


async def test_rollback_to_an_older_bundle_is_refused(log_a, policy, tmp_path):
    factory = BundleFactory(fleet_id="rollback-fleet")
    old_env, new_env = factory.envelope(), factory.envelope()
    old_receipt = await submit(log_a.session, old_env)
    new_receipt = await submit(log_a.session, new_env)
    state = ClientState.load(tmp_path / "state.json")
    verify_receipt(new_env, new_receipt, policy, now=NOW, state=state)
    state.save()
    reloaded = ClientState.load(tmp_path / "state.json")
    with pytest.raises(FleetRollbackError) as info:
        verify_receipt(old_env, old_receipt, policy, now=NOW, state=reloaded)
    assert info.value.check == "fleet_rollback"
    # The refused verification changed nothing.
    assert reloaded.dumps() == state.dumps()
    # Without a state the old receipt is still a valid receipt (offline, no history).
    assert verify_receipt(old_env, old_receipt, policy, now=NOW).sequence == 0


async def test_online_check_catches_a_superseded_bundle(log_a, policy):
    factory = BundleFactory(fleet_id="superseded-fleet")
    old_env = factory.envelope()
    old_receipt = await submit(log_a.session, old_env)
    checks = CheckLog()
    async with LogClient(log_a.url) as client:
        await verify_receipt_online(client, old_env, old_receipt, policy, now=NOW, checks=checks)
        assert checks.results[-1].name == "fleet_latest" and checks.results[-1].ok
        await submit(log_a.session, factory.envelope())
        checks = CheckLog()
        with pytest.raises(FleetRollbackError) as info:
            await verify_receipt_online(client, old_env, old_receipt, policy, now=NOW, checks=checks)
    assert info.value.check == "fleet_latest"
    assert "superseded by sequence 1" in str(info.value)
    assert [c.name for c in checks.results if c.ok] == [
        "latest_checkpoint", "receipt_format", "envelope_format", "envelope_signatures", "validity_window",
        "leaf_hash", "checkpoint_signature", "witness_quorum", "inclusion_proof", "consistency_with_latest",
    ]


async def test_same_sequence_with_another_payload_is_refused(log_a, policy, tmp_path):
    factory = BundleFactory(fleet_id="substitute-fleet")
    env = factory.envelope()
    receipt = await submit(log_a.session, env)
    state = ClientState(tmp_path / "s.json")
    state.record_fleet("substitute-fleet", 0, b"\x01" * 32, "elsewhere", 0)
    with pytest.raises(FleetRollbackError):
        verify_receipt(env, receipt, policy, now=NOW, state=state)


async def test_online_verification_proves_consistency_and_advances_the_state(log_a, policy, tmp_path):
    factory = BundleFactory(fleet_id="advance-fleet")
    first_env = factory.envelope()
    first = await submit(log_a.session, first_env)
    state = ClientState(tmp_path / "s.json")
    verify_receipt(first_env, first, policy, now=NOW, state=state)
    origin = next(iter(policy.tlog.logs))
    assert state.stored_checkpoint(origin).size == first["tree_size"]
    for _ in range(3):
        await submit(log_a.session, BundleFactory(fleet_id="filler").envelope())
    second_env = factory.envelope()
    second = await submit(log_a.session, second_env)
    # Offline, a bigger checkpoint without a consistency proof cannot be accepted.
    with pytest.raises(ConsistencyError):
        verify_receipt(second_env, second, policy, now=NOW, state=state)
    # Online, the proofs are fetched and checked.
    async with LogClient(log_a.url) as client:
        checks = CheckLog()
        await verify_receipt_online(client, second_env, second, policy, now=NOW, state=state, checks=checks)
    by_name = {c.name: c for c in checks.results}
    assert by_name["checkpoint_consistency"].ok and "prefix" in by_name["checkpoint_consistency"].detail
    assert state.stored_checkpoint(origin).size >= second["tree_size"]
    assert state.fleet("advance-fleet").sequence == 1
    # A supplied proof works offline too.
    state2 = ClientState()
    verify_receipt(first_env, first, policy, now=NOW, state=state2)
    async with LogClient(log_a.url) as client:
        hashes = await client.checked_consistency_proof(first["tree_size"], second["tree_size"])
    proof = ConsistencyProof(first["tree_size"], second["tree_size"], tuple(hashes))
    verify_receipt(second_env, second, policy, now=NOW, state=state2, consistency_proofs=[proof])
    assert state2.stored_checkpoint(origin).size == second["tree_size"]


async def tree_size(server) -> int:
    async with server.session.get("/v1/log") as resp:
        return (await resp.json())["tree_size"]


async def _fork(log_a, log_b, size: int) -> tuple[tuple, tuple]:
    """Grow both logs to exactly `size` leaves with different histories; return
    (envelope, receipt) of each one's last bundle. Each bundle is submitted alone, so
    each adds two leaves: it and its batch's HEADS leaf (docs/fleet-heads.md)."""
    out = []
    for server, fleet in ((log_a, "fork-a"), (log_b, "fork-b")):
        factory = BundleFactory(fleet_id=fleet + str(size))
        receipt = env = None
        missing = size - await tree_size(server)
        assert missing > 0 and missing % 2 == 0, (size, missing)
        for _ in range(missing // 2):
            env = factory.envelope()
            receipt = await submit(server.session, env)
        assert receipt is not None and (receipt["index"], receipt["tree_size"]) == (size - 2, size), receipt
        out.append((env, receipt))
    return out[0], out[1]


async def test_split_view_same_size_raises_with_conclusive_evidence(log_a, log_b, policy, tmp_path):
    size = max(await tree_size(log_a), await tree_size(log_b)) + 2
    (env_a, rec_a), (env_b, rec_b) = await _fork(log_a, log_b, size)
    state = ClientState(tmp_path / "s.json")
    verify_receipt(env_a, rec_a, policy, now=NOW, state=state)
    before = state.dumps()
    with pytest.raises(SplitViewError) as info:
        verify_receipt(env_b, rec_b, policy, now=NOW, state=state)
    assert state.dumps() == before
    evidence = info.value.evidence
    verdict = verify_evidence(evidence, policy)
    assert verdict.conclusive
    # The JSON form re-verifies on its own, and the text report embeds it.
    text = evidence.to_json()
    assert verify_evidence(text).conclusive
    assert verify_evidence(json.loads(text), policy).conclusive
    report = evidence.report()
    assert "SPLIT VIEW" in report and text.strip() in report


async def test_split_view_with_different_sizes_is_caught_online(log_a, log_b, policy, tmp_path):
    size = max(await tree_size(log_a), await tree_size(log_b)) + 2
    (env_a, rec_a), _ = await _fork(log_a, log_b, size)
    state = ClientState(tmp_path / "s.json")
    verify_receipt(env_a, rec_a, policy, now=NOW, state=state)
    # Log B grows on its own history; its receipt is for a larger tree.
    later = BundleFactory(fleet_id="fork-b-later")
    for _ in range(2):
        env_b = later.envelope()
        rec_b = await submit(log_b.session, env_b)
    assert rec_b["tree_size"] > size
    async with LogClient(log_b.url) as client:
        checks = CheckLog()
        with pytest.raises(SplitViewError) as info:
            await verify_receipt_online(client, env_b, rec_b, policy, now=NOW, state=state, checks=checks)
        assert checks.results[-1].name == "checkpoint_consistency" and not checks.results[-1].ok
        evidence = info.value.evidence
        verdict = verify_evidence(evidence, policy)
        assert not verdict.conclusive
        assert evidence.proof is not None and evidence.proof_source.startswith("GET ")
        # A fresh proof from the same log fails as well: the evidence stands.
        first, second = verdict.checkpoints
        fresh = await client.consistency_proof(first.size, second.size)
        verify_evidence(evidence.to_json(), policy, fresh_proof=fresh)


async def test_evidence_that_does_not_show_a_split_is_refused(log_a, policy):
    env = BundleFactory(fleet_id="honest").envelope()
    first = await submit(log_a.session, env)
    second = await submit(log_a.session, BundleFactory(fleet_id="honest2").envelope())
    async with LogClient(log_a.url) as client:
        proof = await client.consistency_proof(first["tree_size"], second["tree_size"])
        vkey = (await client.log_info())["verifier_key"]
    origin = vkey.split("+")[0]
    honest = SplitViewEvidence(origin, vkey, first["checkpoint"], second["checkpoint"], tuple(proof),
                               "test", "x", "now")
    with pytest.raises(EvidenceError):
        verify_evidence(honest, policy)
    bad_proof = SplitViewEvidence(origin, vkey, first["checkpoint"], second["checkpoint"], (b"\0" * 32,), "t", "x", "n")
    verify_evidence(bad_proof, policy)  # the bad proof alone "shows" a split...
    with pytest.raises(EvidenceError):  # ...until a fresh, valid proof refutes it
        verify_evidence(bad_proof, policy, fresh_proof=proof)
    same = SplitViewEvidence(origin, vkey, first["checkpoint"], first["checkpoint"], None, "t", "x", "n")
    with pytest.raises(EvidenceError):
        verify_evidence(same, policy)
    # A checkpoint whose size was edited no longer carries a valid signature.
    edited = second["checkpoint"].replace(f"\n{second['tree_size']}\n", f"\n{first['tree_size']}\n", 1)
    assert edited != second["checkpoint"]
    forged = SplitViewEvidence(origin, vkey, first["checkpoint"], edited, None, "t", "x", "n")
    with pytest.raises(EvidenceError):
        verify_evidence(forged, policy)


async def test_state_file_round_trip_lock_and_corruption(log_a, policy, tmp_path):
    env = BundleFactory(fleet_id="persist").envelope()
    receipt = await submit(log_a.session, env)
    with open_state(tmp_path) as state:
        verify_receipt(env, receipt, policy, now=NOW, state=state)
        state.save()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["client-state.json", "client-state.lock"]  # no temp file left behind
    loaded = ClientState.load(tmp_path / "client-state.json")
    assert loaded.fleet("persist").sequence == 0
    assert loaded.dumps() == (tmp_path / "client-state.json").read_bytes()
    for bad in (b"{", b"[]", json.dumps({"version": 2, "logs": {}, "fleets": {}}).encode(),
                json.dumps({"version": 1, "logs": {"x": {"checkpoint": "nope"}}, "fleets": {}}).encode(),
                json.dumps({"version": 1, "logs": {}, "fleets": {"f": {"sequence": -1}}}).encode()):
        (tmp_path / "bad.json").write_bytes(bad)
        with pytest.raises(StateError):
            ClientState.load(tmp_path / "bad.json")


async def test_a_newer_bundle_not_yet_valid_does_not_supersede(log_a, policy):
    factory = BundleFactory(fleet_id="future-fleet")
    current = factory.envelope()
    receipt = await submit(log_a.session, current)
    await submit(log_a.session, factory.envelope(not_before="2099-01-01T00:00:00Z"))
    checks = CheckLog()
    async with LogClient(log_a.url) as client:
        await verify_receipt_online(client, current, receipt, policy, now=NOW, checks=checks)
    assert checks.results[-1].name == "fleet_latest" and "still current" in checks.results[-1].detail


async def test_a_log_answering_with_another_fleet_is_misbehaving(log_a, policy):
    from logserver.client import LogMisbehaviourError

    env = BundleFactory(fleet_id="asked-fleet").envelope()
    receipt = await submit(log_a.session, env)
    await submit(log_a.session, BundleFactory(fleet_id="other-fleet").envelope())
    async with LogClient(log_a.url) as direct:
        other_entry = await direct.fleet("other-fleet")
    proxy = Proxy(log_a.url)
    url = await proxy.start()
    # The fleet lookup is answered with another fleet's entry (valid in itself).
    proxy.rules.append((lambda p: p == "/v1/fleets/asked-fleet", lambda b: json.dumps(other_entry).encode()))
    try:
        async with LogClient(url) as client:
            with pytest.raises(LogMisbehaviourError) as info:
                await verify_receipt_online(client, env, receipt, policy, now=NOW)
    finally:
        await proxy.close()
    assert info.value.check == "fleet_latest" and "other-fleet" in str(info.value)
