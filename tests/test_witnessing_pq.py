"""A log whose witness is post-quantum: one ML-DSA-44-only `logserver witness`
(tlog-cosignature v1.1) is the quorum. The log collects its `subtree/v1` line, staples
it to the published checkpoint and the receipt, and a client whose tlog-policy lists
the witness's type 0x06 vkey verifies the receipt with that quorum (issue 21 sections 2
and 4; the log side asks witnesses through formats' generic verifiers)."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

import pg
from bundle_factory import BundleFactory
from logserver.client import TrustPolicy, verify_receipt
from logserver.formats import MLDSA44CosignatureVerifier, parse_note, parse_vkey, timestamp_of
from logserver.keys.log_key import LogKey, generate_log_key_pem
from server_harness import ORIGIN, start_server, write_config
from test_client_support import JSON, write_trust_policy
from witness_harness import start_witness, write_witness_config


@pytest.fixture(scope="module")
async def cluster(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("witnessing-pq")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    db = await pg.create_database(pg_admin_url, "t_witnessing_pq")
    w = await start_witness(write_witness_config(base / "pq", "witness.test/pq", db, [log_vkey], prefix="/wit",
                                                 algorithms=("ml-dsa-44",)))
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(f"witness pq {w.vkey} {w.submission_url}\nquorum pq\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 5\nmax_wait_s = 5\n\n'
             '[sequencer]\ncheckpoint_interval_s = 0.5\n')
    log = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    yield base, log_vkey, w, log
    await log.close()
    await w.close()
    await pg.drop_database(pg_admin_url, db)


async def test_a_receipt_cosigned_by_an_ml_dsa_44_witness_verifies(cluster):
    base, log_vkey, w, log = cluster
    assert parse_vkey(w.vkey).sig_type == 0x06
    body = BundleFactory(fleet_id="pq-fleet").envelope_json()
    async with log.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        receipt = await resp.json()
        assert resp.status == 201, receipt
    [verifier] = w.cosigner.verifiers()
    assert isinstance(verifier, MLDSA44CosignatureVerifier)
    note = parse_note(receipt["checkpoint"])
    [line] = [s for s in note.signatures if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
    verifier.verify(note.text.encode(), line.signature)
    assert timestamp_of(line.signature) > 0
    policy = TrustPolicy.load(write_trust_policy(base / "client", log_vkey, extra_policy=f"witness pq {w.vkey}\n",
                                                 quorum="pq"))
    assert verify_receipt(body, receipt, policy).checkpoint.witnesses == {"pq"}
