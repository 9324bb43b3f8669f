"""The log's own ML-DSA-44 checkpoint signature (issue 21 §1 and §4).

A log with both keys signs every checkpoint three times (Ed25519 signed-note 0x01,
Ed25519 cosignature/v1 0x04, ML-DSA-44 subtree/v1 0x06, C2SP tlog-checkpoint
"Signatures"), lists the three vkeys at /v1/log, records them in its database and
refuses a later start that drops one. Clients pin the 0x06 key as a second `log` line
and may require it (`require_log_mldsa44`). Witnesses of either kind cosign the
three-signature checkpoint; their lines are stapled to receipts.
"""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

import pg
from bundle_factory import BundleFactory, default_authorities
from logserver.cli import main
from logserver.client import (
    CheckpointVerificationError,
    TrustPolicy,
    TrustPolicyError,
    verify_checkpoint,
    verify_receipt,
)
from logserver.formats import (
    MLDSA44CosignatureVerifier,
    Subtree,
    parse_checkpoint,
    parse_note,
    parse_vkey,
    timestamp_of,
)
from logserver.keys.log_key import LogKey, generate_log_key_pem, generate_mldsa44_key_pem
from logserver.merkle import EMPTY_ROOT
from logserver.storage import IdentityMismatchError
from server_harness import ORIGIN, run_server_to_exit, start_server, write_config
from test_client_support import JSON, write_trust_policy
from witness_harness import start_witness, write_witness_config

ED_PEM = generate_log_key_pem()
PQ_PEM = generate_mldsa44_key_pem()


def _key(ed_pem: bytes = ED_PEM, pq_pem: bytes | None = PQ_PEM, origin: str = ORIGIN) -> LogKey:
    ed = serialization.load_pem_private_key(ed_pem, None)
    pq = None if pq_pem is None else serialization.load_pem_private_key(pq_pem, None)
    assert pq is None or isinstance(pq, MLDSA44PrivateKey)
    return LogKey(origin, ed, pq)  # type: ignore[arg-type]


def _policy(tlog: str, *, require: bool = False) -> TrustPolicy:
    auth = default_authorities()
    return TrustPolicy.from_parts([auth.signer.authority_key(), auth.countersigner.authority_key()], tlog,
                                  require_log_mldsa44=require)


def _both_lines(key: LogKey) -> str:
    return f"log {key.vkey}\nlog {key.mldsa44_vkey}\nquorum none\n"


# --- pure: signing and client verification -------------------------------------------


def test_a_checkpoint_carries_three_log_signatures_in_order():
    key = _key()
    note = parse_note(key.sign_checkpoint(5, b"\x11" * 32, 1_700_000_000_123))
    assert [s.name for s in note.signatures] == [ORIGIN] * 3
    ed, stamp, pq = note.signatures
    assert len(ed.signature) == 64 and len(stamp.signature) == 72 and len(pq.signature) == 2428
    verifier = MLDSA44CosignatureVerifier.from_vkey(key.mldsa44_vkey)
    assert pq.key_id == verifier.key_id != stamp.key_id
    # tlog-cosignature: the subtree [0, size) of the checkpoint, at the log's signing time.
    verifier.verify_subtree(Subtree(ORIGIN, 0, 5, b"\x11" * 32), pq.signature)
    assert timestamp_of(pq.signature) == timestamp_of(stamp.signature) == 1_700_000_000
    assert parse_vkey(key.mldsa44_vkey).sig_type == 0x06
    assert key.vkeys == (key.vkey, key.timestamp_vkey, key.mldsa44_vkey)


def test_the_empty_tree_is_signed_too():
    key = _key()
    note = key.sign_checkpoint(0, EMPTY_ROOT, 1000)
    v = verify_checkpoint(note, _policy(_both_lines(key), require=True))
    assert v.log_signatures == ("ed25519", "ed25519-cosignature", "ml-dsa-44")


def test_a_log_without_an_ml_dsa_44_key_signs_as_before():
    key = _key(pq_pem=None)
    note = parse_note(key.sign_checkpoint(1, b"\x22" * 32, 5000))
    assert len(note.signatures) == 2 and key.mldsa44_vkey is None and len(key.vkeys) == 2


def test_a_client_reports_which_log_signatures_verified():
    key = _key()
    note = key.sign_checkpoint(3, b"\x33" * 32, 9_000)
    assert verify_checkpoint(note, _policy(_both_lines(key))).log_signatures == (
        "ed25519", "ed25519-cosignature", "ml-dsa-44")
    # Pinning the Ed25519 key only: the ML-DSA-44 line is an unknown key, ignored (signed-note).
    assert verify_checkpoint(note, _policy(f"log {key.vkey}\nquorum none\n")).log_signatures == (
        "ed25519", "ed25519-cosignature")
    # Pinning the ML-DSA-44 key only: it alone makes the checkpoint the log's.
    only_pq = verify_checkpoint(note, _policy(f"log {key.mldsa44_vkey}\nquorum none\n"))
    assert only_pq.log_signatures == ("ml-dsa-44",) and only_pq.signed_at is None


def test_post_quantum_required_refuses_a_checkpoint_without_the_ml_dsa_44_signature():
    key = _key()
    policy = _policy(_both_lines(key), require=True)
    ed_only = _key(pq_pem=None).sign_checkpoint(3, b"\x33" * 32, 9_000)
    with pytest.raises(CheckpointVerificationError) as info:
        verify_checkpoint(ed_only, policy)
    assert "got no verified ML-DSA-44 signature by the log (verified: ed25519)" in str(info.value)
    assert "require_log_mldsa44" in str(info.value)
    # The same without the requirement verifies on the Ed25519 signature.
    assert verify_checkpoint(ed_only, _policy(_both_lines(key))).log_signatures == ("ed25519", "ed25519-cosignature")


def test_post_quantum_required_refuses_a_bad_ml_dsa_44_signature():
    key = _key()
    note = key.sign_checkpoint(3, b"\x33" * 32, 9_000)
    lines = note.splitlines(keepends=True)
    last = lines[-1]
    # Flip a bit of the ML-DSA-44 signature: a known key's bad signature rejects the note.
    prefix, b64 = last.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    lines[-1] = f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint("".join(lines), _policy(_both_lines(key), require=True))


def test_post_quantum_required_needs_an_ml_dsa_44_log_key_in_the_policy():
    key = _key()
    with pytest.raises(TrustPolicyError, match="require_log_mldsa44: the tlog-policy lists no ML-DSA-44 key"):
        _policy(f"log {key.vkey}\nquorum none\n", require=True)


def test_the_trust_policy_file_reads_require_log_mldsa44(tmp_path):
    key = _key()
    path = write_trust_policy(tmp_path, key.vkey, extra_policy=f"log {key.mldsa44_vkey}\n")
    path.write_text("require_log_mldsa44 = true\n" + path.read_text())
    assert TrustPolicy.load(path).require_log_mldsa44 is True
    path.write_text(path.read_text().replace("= true", '= "yes"'))
    with pytest.raises(TrustPolicyError, match="require_log_mldsa44: got 'yes', want true or false"):
        TrustPolicy.load(path)


# --- the database records the published keys -----------------------------------------


@pytest.fixture
async def fresh_db(pg_admin_url, request):
    url = await pg.create_database(pg_admin_url, "t_logpq")
    yield url
    await pg.drop_database(pg_admin_url, url)


async def test_an_existing_log_adds_an_ml_dsa_44_key_and_cannot_drop_it(fresh_db):
    ed_only, both = _key(pq_pem=None), _key()
    store = await pg.open_test_log(fresh_db, ed_only)
    try:
        assert set(await store.published_keys()) == {ed_only.vkey, ed_only.timestamp_vkey}
    finally:
        await store.pool.close()
    store = await pg.open_test_log(fresh_db, both)  # same origin, same Ed25519 key, one key more
    try:
        assert set(await store.published_keys()) == set(both.vkeys)
    finally:
        await store.pool.close()
    with pytest.raises(IdentityMismatchError, match=r"ML-DSA-44 subtree/v1 cosignature key .* set log_key_mldsa44"):
        await pg.open_test_log(fresh_db, ed_only)
    other_pq = _key(pq_pem=generate_mldsa44_key_pem())
    with pytest.raises(IdentityMismatchError, match="refusing to start"):
        await pg.open_test_log(fresh_db, other_pq)


async def test_serve_refuses_a_config_that_drops_the_ml_dsa_44_key(fresh_db, tmp_path):
    directory = tmp_path / "log"
    cfg = write_config(directory, fresh_db, key_pem=ED_PEM, extra='log_key_mldsa44 = "log.mldsa44.key"\n')
    (directory / "log.mldsa44.key").write_bytes(PQ_PEM)
    (directory / "log.mldsa44.key").chmod(0o600)
    log = await start_server(cfg)
    async with log.session.get("/v1/log") as resp:
        info = await resp.json()
    await log.close()
    assert info["verifier_keys"] == list(_key().vkeys)
    cfg.write_text(cfg.read_text().replace('log_key_mldsa44 = "log.mldsa44.key"\n', ""))
    code, out = await run_server_to_exit(cfg, fresh_db)
    lines = [line for line in out.splitlines() if line.startswith("logserver serve: error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in out, out
    assert "has published its ML-DSA-44 subtree/v1 cosignature key" in lines[0], out


# --- end to end: witnesses of both kinds, a receipt with everything ------------------


@pytest.fixture(scope="module")
async def cluster(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("log-pq")
    key = _key()
    db_pq = await pg.create_database(pg_admin_url, "t_logpq_wit_pq")
    db_ed = await pg.create_database(pg_admin_url, "t_logpq_wit_ed")
    # The post-quantum witness follows the log by its ML-DSA-44 key, the Ed25519 one by its Ed25519 key.
    w_pq = await start_witness(write_witness_config(base / "wpq", "witness.test/pq", db_pq, [key.mldsa44_vkey],
                                                    algorithms=("ml-dsa-44",)))
    w_ed = await start_witness(write_witness_config(base / "wed", "witness.test/ed", db_ed, [key.vkey]))
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(
        f"log {key.vkey}\nlog {key.mldsa44_vkey}\n"
        f"witness pq {w_pq.vkey} {w_pq.submission_url}\nwitness ed {w_ed.vkey} {w_ed.submission_url}\n"
        "group both all pq ed\nquorum both\n")
    (base / "log" / "log.mldsa44.key").write_bytes(PQ_PEM)
    (base / "log" / "log.mldsa44.key").chmod(0o600)
    extra = ('log_key_mldsa44 = "log.mldsa44.key"\nwitness_policy = "witnesses.policy"\n\n'
             '[witnessing]\nrequest_timeout_s = 5\nmax_wait_s = 5\n\n[sequencer]\ncheckpoint_interval_s = 0.5\n')
    log = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=ED_PEM))
    yield base, key, w_pq, w_ed, log
    await log.close()
    await w_pq.close()
    await w_ed.close()
    await pg.drop_database(pg_admin_url, db_pq)
    await pg.drop_database(pg_admin_url, db_ed)


async def test_a_receipt_carries_both_log_signatures_and_both_witness_kinds(cluster):
    base, key, w_pq, w_ed, log = cluster
    body = BundleFactory(fleet_id="log-pq-fleet").envelope_json()
    async with log.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        receipt = await resp.json()
        assert resp.status == 201, receipt
    note = parse_note(receipt["checkpoint"])
    assert parse_checkpoint(note.text).size == receipt["tree_size"]
    sizes = sorted(len(s.signature) for s in note.signatures)
    assert sizes == [64, 72, 72, 2428, 2428], sizes  # log 0x01, 0x04 (log and witness), 0x06 (log and witness)
    policy = TrustPolicy.load(write_trust_policy(
        base / "client", key.vkey,
        extra_policy=f"log {key.mldsa44_vkey}\nwitness pq {w_pq.vkey}\nwitness ed {w_ed.vkey}\ngroup both all pq ed\n",
        quorum="both"))
    policy = TrustPolicy(policy.authorities, policy.tlog, require_log_mldsa44=True)
    result = verify_receipt(body, receipt, policy)
    assert result.checkpoint.witnesses == {"pq", "ed"}
    assert result.checkpoint.log_signatures == ("ed25519", "ed25519-cosignature", "ml-dsa-44")
    assert result.to_dict()["checkpoint"]["log_signatures"] == ["ed25519", "ed25519-cosignature", "ml-dsa-44"]
    # The published checkpoint (what /checkpoint serves) is the witnessed one, all five lines.
    async with log.session.get("/checkpoint") as resp:
        published = await resp.text()
    assert len(parse_note(published).signatures) == 5
    verify_checkpoint(published, policy)


async def test_verify_and_the_monitor_report_both_log_signatures(cluster, capsys):
    """The CLI: `verify` prints a line per kind of the log's signature, the monitor's
    summary lists them; both with a trust policy that requires ML-DSA-44."""
    base, key, w_pq, _, log = cluster
    body = BundleFactory(fleet_id="log-pq-cli").envelope_json()
    async with log.session.post("/v1/bundles", data=body, headers=JSON) as resp:
        receipt = await resp.text()
        assert resp.status == 201, receipt
    client = base / "cli"
    path = write_trust_policy(client, key.vkey, extra_policy=f"log {key.mldsa44_vkey}\nwitness pq {w_pq.vkey}\n",
                              quorum="pq")
    path.write_text("require_log_mldsa44 = true\n" + path.read_text())
    (client / "bundle.json").write_bytes(body)
    (client / "receipt.json").write_text(receipt)
    code = await asyncio.to_thread(main, ["verify", "--receipt", str(client / "receipt.json"), "--envelope",
                                          str(client / "bundle.json"), "--policy", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    for line in ("log signature Ed25519 signed-note (0x01): verified",
                 "log signature Ed25519 cosignature/v1 (0x04): verified",
                 "log signature ML-DSA-44 subtree/v1 cosignature (0x06): verified",
                 "post-quantum: required by the trust policy (require_log_mldsa44), met"):
        assert line in out, out
    code = await asyncio.to_thread(main, ["monitor", "--log", log.url, "--policy",
                                          str(path), "--state", str(client / "monitor"), "--once"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["log_signatures"] == ["ed25519", "ed25519-cosignature", "ml-dsa-44"], summary
    assert "log signatures verified: ed25519, ed25519-cosignature, ml-dsa-44 (ML-DSA-44 required" in captured.err
    # Pinning only the Ed25519 key, verify says the ML-DSA-44 line was not checked.
    ed_only = write_trust_policy(base / "cli-ed", key.vkey)
    code = await asyncio.to_thread(main, ["verify", "--receipt", str(client / "receipt.json"), "--envelope",
                                          str(client / "bundle.json"), "--policy", str(ed_only)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("log signature ML-DSA-44 subtree/v1 cosignature (0x06): not checked: the trust policy lists no "
            "ML-DSA-44 key for this log") in out, out


# --- interop: the reference implementation's log-signed checkpoint ---------------------


def test_the_client_accepts_torchwood_s_ml_dsa_44_log_checkpoint_as_post_quantum():
    """filippo.io/torchwood's vector (tests/testdata/pq/SOURCES.md) is a checkpoint signed
    by its log's ML-DSA-44 key alone: a trust policy pinning that key, with
    require_log_mldsa44, accepts it; a changed root or a changed key is refused."""
    from logserver.formats import parse_add_checkpoint_request
    from pq_vectors import litewitness_vector

    vector = litewitness_vector()
    note = parse_add_checkpoint_request(vector.request).checkpoint
    policy = _policy(f"log {vector.log_vkey}\nquorum none\n", require=True)
    verified = verify_checkpoint(note, policy)
    assert verified.log_signatures == ("ml-dsa-44",) and verified.origin == "example.com/mldsa-log"
    assert verified.signed_at is None  # no Ed25519 cosignature/v1 line: no signed time
    root_line = note.split("\n")[2]
    forged = note.replace(root_line, base64.b64encode(b"\x00" * 32).decode(), 1)
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(forged, policy)
    other = _key(origin="example.com/mldsa-log")
    with pytest.raises(CheckpointVerificationError):
        verify_checkpoint(note, _policy(f"log {other.mldsa44_vkey}\nquorum none\n", require=True))


# --- fleet-head verification ------------------------------------------------------------


def test_fleet_head_verification_reports_and_requires_the_log_s_ml_dsa_44_signature():
    """`verify_fleet_head` verifies the proof's checkpoint like a receipt's: with both log
    keys pinned it reports the three log signatures, and with `require_log_mldsa44` a
    checkpoint signed by the Ed25519 key alone is refused."""
    from datetime import UTC, datetime

    from fleet_head_vectors import (
        MAX_AGE_S,
        NOW,
        WITNESS,
        WITNESSED_AT,
        MemoryLog,
        VectorKeys,
        bundle,
        fleet_head_proof,
    )
    from fleet_head_vectors import ORIGIN as HEADS_ORIGIN
    from logserver.client import verify_fleet_head
    from logserver.formats import Checkpoint as Cp
    from logserver.formats import CosignatureSigner
    from logserver.formats.note import NoteSignature

    keys = VectorKeys()
    log = MemoryLog()
    log.batch([bundle("fleet-a", 1), bundle("fleet-c", 1)])
    ed_note = log.checkpoint(keys)  # the vectors' log key: Ed25519 lines and the witness's
    cp = parse_checkpoint(parse_note(ed_note).text)
    both = LogKey(HEADS_ORIGIN, keys.log, serialization.load_pem_private_key(PQ_PEM, None))  # type: ignore[arg-type]
    witness = CosignatureSigner(WITNESS, keys.witness)
    body = Cp(HEADS_ORIGIN, cp.size, cp.root).body()
    witness_line = NoteSignature(WITNESS, witness.key_id, witness.sign_at(body.encode(), WITNESSED_AT)).line()
    pq_note = both.sign_checkpoint(cp.size, cp.root, (WITNESSED_AT - 5) * 1000) + witness_line
    auth = [a.authority_key() for a in keys.authorities.all]
    tlog = f"log {both.vkey}\nlog {both.mldsa44_vkey}\nwitness w1 {keys.witness_vkey}\nquorum w1\n"
    now = datetime.fromtimestamp(NOW, UTC)
    required = TrustPolicy.from_parts(auth, tlog, max_age_s=MAX_AGE_S, require_log_mldsa44=True)
    head = verify_fleet_head(fleet_head_proof(log, "fleet-a", pq_note), required, now)
    assert head.checkpoint.log_signatures == ("ed25519", "ed25519-cosignature", "ml-dsa-44")
    assert head.to_dict()["checkpoint"]["log_signatures"] == ["ed25519", "ed25519-cosignature", "ml-dsa-44"]
    with pytest.raises(CheckpointVerificationError, match="got no verified ML-DSA-44 signature by the log"):
        verify_fleet_head(fleet_head_proof(log, "fleet-a", ed_note), required, now)
    lenient = TrustPolicy.from_parts(auth, tlog, max_age_s=MAX_AGE_S)
    assert verify_fleet_head(fleet_head_proof(log, "fleet-a", ed_note), lenient, now).checkpoint.log_signatures == (
        "ed25519", "ed25519-cosignature")
