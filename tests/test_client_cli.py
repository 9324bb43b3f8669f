"""`logserver verify` end to end: offline and online accounts, exit codes, state,
and split-view evidence written and re-checked."""
from __future__ import annotations

import asyncio
import json

import pytest

import pg
from bundle_factory import BundleFactory
from logserver.cli import main
from logserver.keys.log_key import generate_log_key_pem
from server_harness import start_server, write_config
from test_client_support import submit, trust_policy_for

KEY_PEM = generate_log_key_pem()


@pytest.fixture(scope="module")
async def server(database_url, tmp_path_factory):
    s = await start_server(write_config(tmp_path_factory.mktemp("cli"), database_url, key_pem=KEY_PEM))
    yield s
    await s.close()


@pytest.fixture(scope="module")
async def policy_path(server, tmp_path_factory):
    return (await trust_policy_for(server, tmp_path_factory.mktemp("policy")))[1]


async def write_bundle(server, directory, fleet: str, factory: BundleFactory | None = None):
    """Submit a new bundle; write envelope.json and receipt.json; return their paths."""
    factory = factory or BundleFactory(fleet_id=fleet)
    env = factory.envelope()
    receipt = await submit(server.session, env)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "envelope.json").write_bytes(env.to_json())
    (directory / "receipt.json").write_text(json.dumps(receipt, indent=2))
    return directory / "envelope.json", directory / "receipt.json"


async def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def verify_args(envelope, receipt, policy, *extra: str) -> list[str]:
    return ["verify", "--envelope", str(envelope), "--receipt", str(receipt), "--policy", str(policy), *extra]


async def test_offline_verification_explains_every_check(server, policy_path, tmp_path, capsys):
    env, rec = await write_bundle(server, tmp_path, "cli-offline")
    code, out, _ = await cli(capsys, *verify_args(env, rec, policy_path))
    assert code == 0, out
    for check in ("receipt_format", "envelope_signatures", "validity_window", "leaf_hash",
                  "checkpoint_signature", "witness_quorum", "inclusion_proof"):
        assert f"[  ok] {check}" in out
    assert "VERIFIED: fleet 'cli-offline' sequence 0" in out


async def test_json_account_and_failure_exit_code(server, policy_path, tmp_path, capsys):
    env, rec = await write_bundle(server, tmp_path, "cli-json")
    code, out, _ = await cli(capsys, *verify_args(env, rec, policy_path, "--json"))
    account = json.loads(out)
    assert code == 0 and account["ok"] and account["error"] is None
    assert account["bundle"]["fleet_id"] == "cli-json"
    receipt = json.loads(rec.read_text())
    receipt["inclusion_proof"][0] = "00" * 32
    rec.write_text(json.dumps(receipt))
    code, out, _ = await cli(capsys, *verify_args(env, rec, policy_path, "--json"))
    account = json.loads(out)
    assert code == 1 and not account["ok"]
    assert account["error"]["type"] == "InclusionError"
    assert account["checks"][-1] == {"check": "receipt_format", "ok": False, "detail": account["error"]["message"]}


async def test_expired_at_the_given_time(server, policy_path, tmp_path, capsys):
    env, rec = await write_bundle(server, tmp_path, "cli-now")
    code, out, _ = await cli(capsys, *verify_args(env, rec, policy_path, "--now", "2100-01-01T00:00:00Z"))
    assert code == 1 and "FAILED: ExpiredError in check 'validity_window'" in out


async def test_state_refuses_rollback_and_online_checks_the_log(server, policy_path, tmp_path, capsys):
    factory = BundleFactory(fleet_id="cli-state")
    old_env, old_rec = await write_bundle(server, tmp_path / "old", "cli-state", factory)
    new_env, new_rec = await write_bundle(server, tmp_path / "new", "cli-state", factory)
    state = tmp_path / "state"
    code, out, _ = await cli(capsys, *verify_args(new_env, new_rec, policy_path, "--state", str(state),
                                                  "--log", server.url))
    assert code == 0, out
    for check in ("latest_checkpoint", "fleet_rollback", "checkpoint_consistency", "consistency_with_latest",
                  "fleet_latest"):
        assert f"[  ok] {check}" in out
    assert (state / "client-state.json").exists()
    code, out, _ = await cli(capsys, *verify_args(old_env, old_rec, policy_path, "--state", str(state)))
    assert code == 1 and "FleetRollbackError" in out
    # Without state, online: the log's fleet head shows the old bundle was superseded.
    code, out, _ = await cli(capsys, *verify_args(old_env, old_rec, policy_path, "--log", server.url))
    assert code == 1 and "superseded by sequence 1" in out


async def test_split_view_writes_evidence_that_re_verifies(server, policy_path, pg_admin_url, tmp_path, capsys):
    env, rec = await write_bundle(server, tmp_path / "a", "cli-split")
    state = tmp_path / "state"
    code, out, _ = await cli(capsys, *verify_args(env, rec, policy_path, "--state", str(state)))
    assert code == 0, out
    url = await pg.create_database(pg_admin_url, "t_client_cli_fork")
    fork = await start_server(write_config(tmp_path / "fork", url, key_pem=KEY_PEM))
    try:
        size = json.loads(rec.read_text())["tree_size"]
        for _ in range(size + 2):
            fork_env, fork_rec = await write_bundle(fork, tmp_path / "b", "cli-split-fork",
                                                    BundleFactory(fleet_id=f"fork-{_}"))
        code, out, _ = await cli(capsys, *verify_args(fork_env, fork_rec, policy_path, "--state", str(state),
                                                        "--log", fork.url))
        assert code == 1
        assert "FAILED: SplitViewError" in out and "SPLIT VIEW" in out
        evidence_files = sorted(state.glob("split-view-*.json"))
        assert len(evidence_files) == 1
        code, out, _ = await cli(capsys, "verify", "--evidence", str(evidence_files[0]), "--policy", str(policy_path),
                                 "--log", fork.url)
        assert code == 0, out
        assert "RESULT: the evidence holds" in out and "does not verify either" in out
    finally:
        await fork.close()
        await pg.drop_database(pg_admin_url, url)
    code, out, _ = await cli(capsys, "verify", "--evidence", str(evidence_files[0]), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    evidence = json.loads(evidence_files[0].read_text())
    evidence["checkpoints"].reverse()
    evidence_files[0].write_text(json.dumps(evidence))
    code, out, _ = await cli(capsys, "verify", "--evidence", str(evidence_files[0]))
    assert code == 1 and "does NOT show a split view" in out


async def test_usage_errors(policy_path, tmp_path, capsys):
    code, _, err = await cli(capsys, "verify", "--receipt", str(tmp_path / "r.json"))
    assert code == 2 and "missing --envelope, --policy" in err  # a usage error, as argparse's (issue 23)
    code, _, err = await cli(capsys, *verify_args(tmp_path / "e.json", tmp_path / "r.json", policy_path))
    assert code == 1 and "receipt" in err and "No such file" in err


async def test_submit_names_a_lost_witness_quorum_and_does_not_retry_it(tmp_path, capsys):
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    posts = []

    async def quorum_lost(request):
        posts.append(await request.read())
        return web.json_response({"error": {"code": "witness_quorum_unavailable",
                                            "message": "no checkpoint covering size 3 has a witness quorum yet"}},
                                 status=503, headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/v1/bundles", quorum_lost)
    envelope = tmp_path / "envelope.json"
    envelope.write_bytes(b"{}")
    async with TestServer(app, host="127.0.0.1") as stub:
        code, _, err = await cli(capsys, "submit", "--log", str(stub.make_url("")).rstrip("/"),
                                 "--envelope", str(envelope), "--retries", "5")
    assert code == 1
    assert "witness_quorum_unavailable: the log stored the bundle" in err and "submit again later" in err, err
    assert "retrying" not in err and len(posts) == 1
