"""The log with three real witnesses and a quorum of two: cosignatures stapled to the
published checkpoint and receipts, one witness down still publishes, two down publish
nothing new and submissions get 503, a witness that lost its state is caught up
through 409, and clients enforce the quorum on receipts."""
from __future__ import annotations

import asyncio
import logging

import pytest
from cryptography.hazmat.primitives import serialization

import pg
from bundle_factory import BundleFactory
from logserver.api.keys import STORE
from logserver.cli.monitor import explain
from logserver.client import TrustPolicy, WitnessQuorumError, verify_receipt
from logserver.client.log_client import LogClient
from logserver.formats import parse_note
from logserver.keys.log_key import LogKey, generate_log_key_pem
from logserver.monitor.monitor import Monitor
from server_harness import ORIGIN, start_server, write_config
from test_client_support import JSON, write_trust_policy
from test_witness_interop import note_body_of, spec_verify_cosignatures
from witness_harness import start_witness, write_witness_config

NAMES = ("w1", "w2", "w3")


class Cluster:
    def __init__(self, base, log_vkey, witnesses, databases):
        self.base, self.log_vkey, self.witnesses, self.databases = base, log_vkey, witnesses, databases
        self.log = None
        self.ports: dict[str, int] = {}
        self.lines = "".join(f"witness {n} {w.vkey} {w.submission_url}\n" for n, w in witnesses.items())

    def policy_lines(self) -> str:
        return self.lines

    async def stop_witness(self, name: str) -> None:
        w = self.witnesses[name]
        self.ports[name] = w.server.port
        await w.close()

    async def start_witness(self, name: str, config_path=None) -> None:
        old = self.witnesses[name]
        self.witnesses[name] = await start_witness(config_path or old.config_path, port=self.ports[name])


@pytest.fixture(scope="module")
async def cluster(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("witnessing")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    witnesses, databases = {}, []
    for name in NAMES:
        db = await pg.create_database(pg_admin_url, f"t_witnessing_{name}")
        databases.append(db)
        cfg = write_witness_config(base / name, f"witness.test/{name}", db, [log_vkey], prefix="/wit")
        witnesses[name] = await start_witness(cfg)
    c = Cluster(base, log_vkey, witnesses, databases)
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(c.policy_lines() + "group two 2 w1 w2 w3\nquorum two\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 2\nmax_wait_s = 1.5\n\n'
             '[sequencer]\ncheckpoint_interval_s = 0.5\n')
    c.log = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    yield c
    await c.log.close()
    for w in c.witnesses.values():
        if not w.session.closed:
            await w.close()
    for db in databases:
        await pg.drop_database(pg_admin_url, db)


def client_policy(c: Cluster, group: str, quorum: str, name: str) -> TrustPolicy:
    return TrustPolicy.load(write_trust_policy(c.base / "client", c.log_vkey,
                                               extra_policy=c.policy_lines() + group, quorum=quorum, name=name))


async def post(c: Cluster, body: bytes):
    async with c.log.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def published(c: Cluster) -> str:
    async with c.log.session.get("/checkpoint") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


def witness_lines(c: Cluster, note: str) -> set[str]:
    keys = {(w.cosigner.name, w.cosigner.signers[0].key_id): n for n, w in c.witnesses.items()}
    return {keys[(s.name, s.key_id)] for s in parse_note(note).signatures if (s.name, s.key_id) in keys}


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


async def metric(c: Cluster, name: str) -> list[str]:
    async with c.log.session.get("/metrics") as resp:
        return [line for line in (await resp.text()).splitlines() if line.startswith(name)]


FACTORY = BundleFactory(fleet_id="witnessed-fleet")


async def test_receipts_carry_the_witnesses_cosignatures(cluster):
    c = cluster
    body = FACTORY.envelope_json()
    status, _, receipt = await post(c, body)
    assert status == 201, receipt
    note = receipt["checkpoint"]
    assert witness_lines(c, note) == {"w1", "w2", "w3"}
    for w in c.witnesses.values():  # each stapled line verifies from the spec text
        own = "".join(s.line() for s in parse_note(note).signatures if s.name == w.cosigner.name)
        spec_verify_cosignatures(w.vkey, note_body_of(note), own)
    two = client_policy(c, "group two 2 w1 w2 w3\n", "two", "two.toml")
    verified = verify_receipt(body, receipt, two)
    assert verified.checkpoint.witnesses == {"w1", "w2", "w3"}
    assert witness_lines(c, await published(c)) == {"w1", "w2", "w3"}
    assert await metric(c, "logserver_cosigning_quorum_met ") == ["logserver_cosigning_quorum_met 1.0"]
    sizes = await metric(c, "logserver_cosigning_witness_tree_size")
    assert len(sizes) == 3 and all(float(line.split()[-1]) >= receipt["tree_size"] for line in sizes)


async def test_an_idle_witnessed_log_adds_no_rows(cluster):
    """Re-signs of a published size ask no witness and store nothing (issue 23 section 3):
    before, each one stored a checkpoint row, a cosignature row per witness and a
    published row."""
    c = cluster
    status, _, receipt = await post(c, FACTORY.envelope_json())
    assert status == 201, receipt  # published: its round stored its cosignatures first
    store = c.log.app[STORE]

    async def rows() -> tuple[int, int, int]:
        return tuple(await store.pool.fetchrow(
            "SELECT (SELECT count(*) FROM checkpoints), (SELECT count(*) FROM checkpoint_cosignatures), "
            "(SELECT count(*) FROM published_checkpoints)"))

    before = await rows()
    seen = [(await store.latest_checkpoint()).signed_at_ms]
    for _ in range(600):  # a bound on a stuck test (60 s), not a measurement
        if len(seen) > 3:
            break
        await asyncio.sleep(0.1)
        t = (await store.latest_checkpoint()).signed_at_ms
        if t != seen[-1]:
            seen.append(t)
    assert len(seen) > 3, f"re-signs seen: {seen}"  # three re-signs (interval 0.5 s)
    assert await rows() == before
    assert size_of(await published(c)) == receipt["tree_size"]


async def test_one_witness_down_still_publishes(cluster):
    c = cluster
    await c.stop_witness("w3")
    body = FACTORY.envelope_json()
    status, _, receipt = await post(c, body)
    assert status == 201, receipt
    assert witness_lines(c, receipt["checkpoint"]) == {"w1", "w2"}
    verify_receipt(body, receipt, client_policy(c, "group two 2 w1 w2 w3\n", "two", "two.toml"))
    with pytest.raises(WitnessQuorumError):
        verify_receipt(body, receipt, client_policy(c, "group every all w1 w2 w3\n", "every", "all.toml"))
    failures = await metric(c, 'logserver_cosigning_failures_total{reason="unreachable",witness="w3"}')
    assert failures and float(failures[0].split()[-1]) >= 1


async def test_monitor_reports_cosignature_coverage(cluster, tmp_path):
    c = cluster  # w3 is down since the previous test
    policy = client_policy(c, "group two 2 w1 w2 w3\n", "two", "two.toml")
    async with LogClient(c.log.url) as client:
        monitor = Monitor(client, policy, tmp_path / "monitor.json")
        assert await monitor.poll_once()
        status, _, _ = await post(c, FACTORY.envelope_json())
        assert status == 201
        assert await monitor.poll_once()
        coverage = monitor.summary()["cosignature_coverage"]
        assert coverage["checkpoints"] == 2 and coverage["quorum_met"] == 2
        assert {n: w["cosigned"] for n, w in coverage["witnesses"].items()} == {"w1": 2, "w2": 2, "w3": 0}
        text = monitor.metrics.render().decode()
        assert 'logserver_monitor_witness_coverage{witness="w1"} 1.0' in text
        assert 'logserver_monitor_witness_coverage{witness="w3"} 0.0' in text
        assert explain(monitor.summary(), c.log.url, monitor).count("w1 2/2, w2 2/2, w3 0/2") == 1


async def test_two_witnesses_down_publishes_nothing_and_submissions_get_503(cluster, caplog):
    c = cluster
    caplog.set_level(logging.WARNING, logger="logserver.cosigning.publisher")
    await c.stop_witness("w2")
    await asyncio.sleep(1.0)  # let rounds that started before the stop finish
    before = await published(c)
    body = FACTORY.envelope_json()
    status, headers, error = await post(c, body)
    assert status == 503, error
    assert error["error"]["code"] == "witness_quorum_unavailable"
    assert int(headers["Retry-After"]) >= 1
    await asyncio.sleep(1.0)  # several re-signed checkpoints later (interval 0.5 s) ...
    assert await published(c) == before  # ... still nothing new is published
    assert await metric(c, "logserver_cosigning_quorum_met ") == ["logserver_cosigning_quorum_met 0.0"]
    async with c.log.session.get("/v1/log") as resp:
        assert (await resp.json())["checkpoint"] == before
    async with c.log.session.get("/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 503, ready
    assert ready["status"] == "witness_quorum_unavailable" and "w2" in ready["reason"], ready
    # Rounds every 0.5 s failed for w2 (and w3, down all along): one line when w2 went
    # down, none per round, one quorum-lost line.
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if m.startswith("witness 'w2'")]) == 1, lines
    assert len([m for m in lines if "quorum" in m]) <= 1, lines
    # A witness comes back: the entry (committed all along) gets its cosigned receipt.
    await c.start_witness("w2")
    for _ in range(50):
        status, _, receipt = await post(c, body)
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200 and receipt["duplicate"] is True, receipt
    assert witness_lines(c, receipt["checkpoint"]) == {"w1", "w2"}
    async with c.log.session.get("/readyz") as resp:
        assert resp.status == 200, await resp.text()
    assert any("'w2': cosigning again" in r.getMessage() for r in caplog.records)
    assert size_of(receipt["checkpoint"]) > size_of(before)
    verify_receipt(body, receipt, client_policy(c, "group two 2 w1 w2 w3\n", "two", "two.toml"))


async def test_a_witness_that_lost_its_state_is_caught_up_through_409(cluster, pg_admin_url):
    """w3 comes back with an empty database: the log sends the old size it knows, gets
    409 with size 0 (text/x.tlog.size) and resends from there."""
    c = cluster
    fresh = await pg.create_database(pg_admin_url, "t_witnessing_w3_fresh")
    c.databases.append(fresh)
    old_cfg = c.witnesses["w3"].config_path
    text = old_cfg.read_text()
    url = text.split('database_url = "')[1].split('"')[0]
    old_cfg.write_text(text.replace(url, fresh))
    await c.start_witness("w3")
    body = FACTORY.envelope_json()
    status, _, receipt = await post(c, body)
    assert status == 201, receipt
    for _ in range(50):  # the next round includes w3
        note = await published(c)
        if "w3" in witness_lines(c, note):
            break
        await asyncio.sleep(0.2)
    assert witness_lines(c, note) == {"w1", "w2", "w3"}
    status_w3 = await c.witnesses["w3"].get_json("/status")
    assert status_w3["logs"][0]["tree_size"] >= size_of(note)
    async with c.witnesses["w3"].session.get(c.witnesses["w3"].url + "/metrics") as resp:
        text = await resp.text()
    assert f'logserver_witness_add_checkpoint_total{{origin="{ORIGIN}",status="409"}}' in text


async def test_restarted_log_keeps_serving_the_published_checkpoint(cluster):
    c = cluster
    note = await published(c)
    cfg = c.log.config
    await c.log.close()
    c.log = await start_server(c.base / "log" / "logserver.toml")
    served = await published(c)
    assert size_of(served) >= size_of(note) and len(witness_lines(c, served)) >= 2
    assert c.log.config.witnessing == cfg.witnessing


async def test_fail_open_publishes_without_a_quorum(cluster):
    """Only when explicitly configured: then receipts come without a quorum, and a
    client requiring one rejects them."""
    c = cluster
    cfg_path = c.base / "log" / "logserver.toml"
    cfg_path.write_text(cfg_path.read_text().replace("max_wait_s = 1.5\n", "max_wait_s = 1.5\nfail_open = true\n"))
    await c.log.close()
    c.log = await start_server(cfg_path)
    assert c.log.config.witnessing.fail_open
    await c.stop_witness("w1")
    await c.stop_witness("w2")
    body = FACTORY.envelope_json()
    status, _, receipt = await post(c, body)
    assert status == 201, receipt
    assert witness_lines(c, receipt["checkpoint"]) <= {"w3"}
    with pytest.raises(WitnessQuorumError):
        verify_receipt(body, receipt, client_policy(c, "group two 2 w1 w2 w3\n", "two", "two.toml"))
    await c.start_witness("w1")
    await c.start_witness("w2")
