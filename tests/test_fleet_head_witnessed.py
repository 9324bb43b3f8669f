"""Fleet-head proofs under a witness policy (real witness, real PostgreSQL): the route
and the static object name the witness-cosigned checkpoint, and a client requiring the
witness's quorum finds the proof fresh by the witness's own timestamp; without the
witness in its policy the same proof is fresh on the log's word alone."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

import pg
from bundle_factory import BundleFactory
from logserver.client import StaleFleetHeadError, TrustPolicy
from logserver.client.fleet_head import verify_fleet_head
from logserver.formats import parse_note
from logserver.formats.fleet_head import parse_fleet_head_proof
from logserver.keys.log_key import LogKey, generate_log_key_pem
from publish_support import read_file, wait_for
from server_harness import ORIGIN, start_server, write_config
from test_client_support import submit, write_trust_policy
from witness_harness import start_witness, write_witness_config


@pytest.fixture(scope="module")
async def witnessed(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("heads-witnessed")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    db = await pg.create_database(pg_admin_url, "t_heads_witness")
    witness = await start_witness(write_witness_config(base / "w1", "witness.test/w1", db, [log_vkey]))
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(f"witness w1 {witness.vkey} {witness.submission_url}\nquorum w1\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 2\nmax_wait_s = 2\n\n'
             '[publication]\nfleet_heads_interval_s = 0.2\n\n'
             '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n')
    server = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    state = {"witness": witness}
    yield server, witness, base, log_vkey, state
    await server.close()
    await state["witness"].close()
    await pg.drop_database(pg_admin_url, db)


def policy(directory, log_vkey: str, witness_vkey: str | None) -> TrustPolicy:
    extra = f"witness w1 {witness_vkey}\n" if witness_vkey else ""
    path = write_trust_policy(directory, log_vkey, extra_policy=extra, quorum="w1" if witness_vkey else "none")
    path.write_text(path.read_text().replace("\n\n", "\nmax_age_s = 300\n\n", 1))
    return TrustPolicy.load(path)


async def test_the_proof_is_cosigned_and_fresh_by_the_witness(witnessed, tmp_path):
    server, witness, base, log_vkey, _ = witnessed
    factory = BundleFactory(fleet_id="witnessed-fleet")
    for _ in range(3):
        await submit(server.session, factory.envelope())
    async with server.session.get("/v1/fleets/witnessed-fleet/head") as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.read()
    proof = parse_fleet_head_proof(data)
    names = {s.name for s in parse_note(proof.checkpoint_note).signatures}
    assert names == {ORIGIN, witness.cosigner.name}  # the published, cosigned checkpoint

    strict = policy(tmp_path / "strict", log_vkey, witness.vkey)
    now = datetime.now(UTC)
    head = verify_fleet_head(data, strict, now, fleet_id="witnessed-fleet")
    assert head.sequence == 2
    assert head.freshness.basis == "witnesses" and set(head.freshness.witness_times) == {"w1"}
    # Past max_age after the witness's cosignature: stale.
    with pytest.raises(StaleFleetHeadError):
        verify_fleet_head(data, strict, now + timedelta(seconds=301 + 60), fleet_id="witnessed-fleet")
    # Without the witness in the client's policy, freshness rests on the log alone.
    alone = verify_fleet_head(data, policy(tmp_path / "alone", log_vkey, None), now, fleet_id="witnessed-fleet")
    assert alone.freshness.rests_on_log_alone

    # The static object is the route's proof at the same cosigned checkpoint.
    root = base / "log" / "public"

    async def same() -> bool:
        async with server.session.get("/v1/fleets/witnessed-fleet/head") as resp:
            return read_file(root, "fleet-head/witnessed-fleet") == await resp.read()

    await wait_for("the directory to hold the route's proof", same)
    static = read_file(root, "fleet-head/witnessed-fleet")
    assert verify_fleet_head(static, strict, datetime.now(UTC), fleet_id="witnessed-fleet").sequence == 2


async def test_a_table_ahead_of_the_cosigned_checkpoint_waits_then_503_then_serves(witnessed, tmp_path):
    """Last in the module: it restarts the witness. A server process that builds its heads
    table while the witness is down builds it at the database's size, beyond the
    published (cosigned) checkpoint: the route waits max_wait_s for that size to be
    cosigned, answers 503, and serves the proof once the witness is back."""
    server, witness, base, log_vkey, state = witnessed
    port = witness.server.port
    await witness.close()
    factory = BundleFactory(fleet_id="ahead-fleet")
    async with server.session.post("/v1/bundles", data=factory.envelope_json(),
                                   headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 503  # committed, not cosigned within max_wait_s
        assert (await resp.json())["error"]["code"] == "witness_quorum_unavailable"
    second = await start_server(base / "log" / "logserver.toml")  # a new process: a new, empty heads table
    try:
        async with second.session.get("/v1/fleets/ahead-fleet/head") as resp:
            body = await resp.json()
            assert resp.status == 503, body
            assert body["error"]["code"] == "witness_quorum_unavailable" and resp.headers["Retry-After"]
        state["witness"] = await start_witness(witness.config_path, port=port)

        async def served() -> bool:
            async with second.session.get("/v1/fleets/ahead-fleet/head") as resp:
                return resp.status == 200

        await wait_for("the proof once the witness cosigns again", served, timeout_s=60)
        async with second.session.get("/v1/fleets/ahead-fleet/head") as resp:
            data = await resp.read()
        strict = policy(tmp_path / "strict", log_vkey, state["witness"].vkey)
        assert verify_fleet_head(data, strict, datetime.now(UTC), fleet_id="ahead-fleet").sequence == 0
    finally:
        await second.close()
