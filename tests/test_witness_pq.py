"""`logserver witness` with post-quantum keys and the 2026 tlog-witness additions, over
HTTP against a real witness and its real PostgreSQL: ML-DSA-44 cosignatures (alone or
beside Ed25519 ones), every status of sign-subtree and of the monitoring API, the
size-0 rules, keys added to an existing witness, and the published torchwood vector."""
from __future__ import annotations

import base64
import hashlib
import subprocess
import sys

import pytest

import merkle_reference as ref
import pg
from logserver.formats import (
    AddCheckpointRequest,
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteSigner,
    MLDSA44CosignatureVerifier,
    NoteSignature,
    SignSubtreeRequest,
    Subtree,
    open_note,
    parse_note,
    parse_policy,
    parse_signature_lines,
    parse_vkey,
    sign_checkpoint,
    timestamp_of,
)
from logserver.merkle import EMPTY_ROOT
from logserver.storage import IdentityMismatchError
from pq_vectors import litewitness_vector
from witness_harness import ScriptedLog, start_witness, write_witness_config

ORIGIN = "test.example/pq-log"
IDLE = "test.example/pq-idle"  # followed, never cosigned
EMPTY = "test.example/pq-empty"  # cosigned at size 0


@pytest.fixture(scope="module")
async def logs():
    return {origin: ScriptedLog(origin) for origin in (ORIGIN, IDLE, EMPTY)}


@pytest.fixture(scope="module")
async def log(logs):
    return logs[ORIGIN]


@pytest.fixture(scope="module")
async def witness(tmp_path_factory, database_url, logs):
    cfg = write_witness_config(tmp_path_factory.mktemp("pq"), "witness.test/pq", database_url,
                               [lg.vkey for lg in logs.values()], prefix="/w",
                               algorithms=("ed25519", "ml-dsa-44"), monitoring_prefix="/m")
    w = await start_witness(cfg)
    yield w
    await w.close()


def verifiers(witness) -> tuple[CosignatureVerifier, MLDSA44CosignatureVerifier]:
    ed, pq = witness.cosigner.verifiers()
    assert isinstance(ed, CosignatureVerifier) and isinstance(pq, MLDSA44CosignatureVerifier)
    return ed, pq


async def cosign(witness, log, old: int, new: int) -> list[NoteSignature]:
    status, _, body = await witness.add_checkpoint(log.request(old, new))
    assert status == 200, body
    return list(parse_signature_lines(body))


def subtree_request(log, start: int, end: int, reference: str, *, proof=None, cosignatures=()) -> str:
    size = parse_note(reference).text.split("\n")[1] if "\n\n" in reference else reference.split("\n")[1]
    leaves = log.leaves[: int(size)]
    return SignSubtreeRequest(
        start, end, ref.mth(leaves[start:end]), tuple(cosignatures),
        tuple(ref.subtree_proof(start, end, leaves) if proof is None else proof), reference,
    ).format()


async def test_add_checkpoint_returns_an_ed25519_and_an_ml_dsa_44_cosignature(witness, log):
    log.append(13)
    lines = await cosign(witness, log, 0, 13)
    ed, pq = verifiers(witness)
    assert [(s.name, s.key_id) for s in lines] == [(ed.name, ed.key_id), (pq.name, pq.key_id)]
    body = parse_note(log.checkpoint(13)).text.encode()
    ed.verify(body, lines[0].signature)
    pq.verify(body, lines[1].signature)  # the subtree [0, 13), the checkpoint's root
    assert len(lines[1].signature) == 8 + 2420
    # One time for both, never 0 (tlog-witness: "the timestamp MUST NOT be zero").
    assert timestamp_of(lines[0].signature) == timestamp_of(lines[1].signature) > 0
    # A client's tlog-policy lists the witness's two keys as two witnesses.
    policy = parse_policy(f"log {log.vkey}\nwitness ed {ed.vkey}\nwitness pq {pq.vkey}\n"
                          "group both all ed pq\nquorum both\n")
    note = log.checkpoint(13) + "".join(s.line() for s in lines)
    assert policy.verify_checkpoint(note)[2] == {"ed", "pq"}
    status = await witness.get_json("/status")
    assert status["vkeys"] == [ed.vkey, pq.vkey] and status["sign_subtree"] is True
    assert [parse_vkey(v).sig_type for v in status["vkeys"]] == [0x04, 0x06]


async def test_monitoring_api_serves_the_latest_cosigned_checkpoint(witness, log):
    status, ctype, body = await witness.monitored_checkpoint(ORIGIN)
    assert status == 200 and ctype.startswith("text/plain"), body
    ed, pq = verifiers(witness)
    opened = open_note(body, [*log.key.verifiers(), ed, pq])
    size = len(log.leaves)
    assert opened.text == parse_note(log.checkpoint(size)).text
    assert {(s.name, s.key_id) for s in opened.verified} == {
        (ORIGIN, log.key.verifiers()[0].key_id), (ed.name, ed.key_id), (pq.name, pq.key_id)}
    # It follows the witness: a new cosigned checkpoint is served at once.
    log.append(3)
    lines = await cosign(witness, log, size, size + 3)
    status, _, body = await witness.monitored_checkpoint(ORIGIN)
    assert status == 200 and parse_note(body).text.split("\n")[1] == str(size + 3)
    assert all(s.line() in body for s in lines)


async def test_monitoring_api_404s(witness):
    # A followed log never cosigned, an origin not followed, a hash not in lowercase.
    for origin in (IDLE, "test.example/not-followed"):
        status, _, body = await witness.monitored_checkpoint(origin)
        assert status == 404 and "unknown_log" in body, body
    upper = hashlib.sha256(ORIGIN.encode()).hexdigest().upper()
    async with witness.session.get(f"{witness.url}/m/{upper}/checkpoint") as resp:
        assert resp.status == 404
    # The route lives under the monitoring prefix only.
    lower = hashlib.sha256(ORIGIN.encode()).hexdigest()
    async with witness.session.get(f"{witness.url}/w/{lower}/checkpoint") as resp:
        assert resp.status == 404


async def test_size_zero_rules(witness, logs, log):
    empty = logs[EMPTY]
    # An empty tree with the empty tree's root is cosigned, and served to monitors.
    note = empty.key.sign_checkpoint(0, EMPTY_ROOT, 1)
    status, _, body = await witness.add_checkpoint(AddCheckpointRequest(0, (), note).format())
    assert status == 200, body
    status, _, served = await witness.monitored_checkpoint(EMPTY)
    assert status == 200 and parse_note(served).text == parse_note(note).text
    # "A checkpoint of size zero MUST have the root hash of the empty tree ... Otherwise,
    # the witness MUST respond with a 422": also when the old size is wrong (the stored
    # size of ORIGIN is not 0), and the log-signed impossible tree is kept as evidence.
    bogus = log.key.sign_checkpoint(0, bytes(32), 2)
    body_text = AddCheckpointRequest(0, (), bogus).format()
    status, _, body = await witness.add_checkpoint(body_text)
    assert status == 422 and "empty tree" in body, body
    evidence = (await witness.get_json("/evidence"))["evidence"]
    assert any(e["request"] == body_text and e["kind"] == "inconsistent_proof" for e in evidence)
    # "The proof MUST be empty if the old size is zero": a proof there is 422 (when the
    # old size is right) and no evidence, since the checkpoint itself may be fine.
    idle = logs[IDLE]
    idle.append(4)
    body_text = AddCheckpointRequest(0, (b"\x01" * 32,), idle.checkpoint(4)).format()
    status, _, body = await witness.add_checkpoint(body_text)
    assert status == 422 and "old size 0" in body, body
    evidence = (await witness.get_json("/evidence"))["evidence"]
    assert not any(e["request"] == body_text for e in evidence)
    # With the wrong old size the 409 comes first.
    status, ctype, body = await witness.add_checkpoint(AddCheckpointRequest(0, (b"\x01" * 32,),
                                                                            log.checkpoint(len(log.leaves))).format())
    assert (status, ctype) == (409, "text/x.tlog.size"), body


async def test_sign_subtree_200_stateless_and_stateful(witness, log):
    size = len(log.leaves)
    status, _, cosigned = await witness.monitored_checkpoint(ORIGIN)
    assert status == 200
    _, pq = verifiers(witness)
    # 1. Stateless: the reference carries the witness's own cosignature.
    status, ctype, body = await witness.sign_subtree(subtree_request(log, 8, 13, cosigned))
    assert status == 200 and ctype.startswith("text/plain"), body
    [line] = parse_signature_lines(body)
    assert (line.name, line.key_id) == (pq.name, pq.key_id)
    assert timestamp_of(line.signature) == 0  # "the timestamp MUST be zero"
    pq.verify_subtree(Subtree(ORIGIN, 8, 13, ref.mth(log.leaves[8:13])), line.signature)
    # 2. Stateful: the latest cosigned checkpoint, signatures omitted (body alone).
    bare = parse_note(cosigned).text
    status, _, body = await witness.sign_subtree(subtree_request(log, 0, size, bare))
    assert status == 200, body
    # 3. The same checkpoint signed by the log only.
    status, _, body = await witness.sign_subtree(subtree_request(log, 12, 14, log.checkpoint(size)))
    assert status == 200, body
    # Subtree cosignature lines of unknown keys are ignored ("MUST ignore").
    stranger = NoteSignature("ca.example/other", b"\x00\x01\x02\x03", b"\x00" * 2428)
    status, _, body = await witness.sign_subtree(subtree_request(log, 8, 12, cosigned, cosignatures=[stranger]))
    assert status == 200, body
    # A subtree cosignature by the witness's own key that verifies is accepted too.
    status, _, body = await witness.sign_subtree(subtree_request(log, 8, 12, cosigned,
                                                                 cosignatures=[parse_signature_lines(body)[0]]))
    assert status == 200, body


async def test_sign_subtree_400(witness, log):
    size = len(log.leaves)
    _, _, cosigned = await witness.monitored_checkpoint(ORIGIN)
    leaves = log.leaves[:size]
    h = base64.b64encode(ref.mth(leaves[8:12])).decode()
    bad = [
        f"subtree 8 8\n{h}\n\n{cosigned}",  # start == end
        f"subtree 12 8\n{h}\n\n{cosigned}",  # start > end
        f"subtree 0 {size + 1}\n{h}\n\n{cosigned}",  # end beyond the checkpoint
        f"subtree 2 6\n{h}\n\n{cosigned}",  # not a subtree: 2 is not a multiple of 4
        f"subtree 08 12\n{h}\n\n{cosigned}",  # leading zero
        f"subtree 8 12\n\n{cosigned}",  # no hash line
        f"subtree 8 12 14\n{h}\n\n{cosigned}",
        f"subtree 8 12\n{h}\n" + f"{h}\n" * 64 + f"\n{cosigned}",  # 64 proof lines
        f"subtree 8 12\n{h}\n" + "— x AAAAAAAAAAA=\n" * 9 + f"\n{cosigned}",  # 9 subtree cosignatures
        f"subtree 8 12\n{h}\n{h}\n— x AAAAAAAAAAA=\n\n{cosigned}",  # a cosignature after the proof
        f"subtree 8 12\n{h}\n\n" + cosigned + "".join(f"— x{i} AAAAAAAAAAA=\n" for i in range(7)),  # 10 signatures
        f"subtree 8 12\n{h}\n\nnot a checkpoint\n",
    ]
    for body_text in bad:
        status, _, body = await witness.sign_subtree(body_text)
        assert status == 400, (body_text[:60], body)


async def test_sign_subtree_404_403_409_422(witness, log, logs):
    size = len(log.leaves)
    _, _, cosigned = await witness.monitored_checkpoint(ORIGIN)
    # 404: a log the witness does not follow.
    other = ScriptedLog("test.example/unfollowed")
    other.append(4)
    status, _, body = await witness.sign_subtree(subtree_request(other, 0, 2, other.checkpoint(4)))
    assert status == 404 and "unknown_log" in body, body
    # 403: a signature by a known key that fails (the witness's own, on another text).
    parsed = parse_note(cosigned)
    tampered = parsed.text.replace(f"\n{size}\n", f"\n{size - 1}\n") + "\n" + "".join(
        s.line() for s in parsed.signatures)
    log_leaves = log.leaves
    status, _, body = await witness.sign_subtree(SignSubtreeRequest(
        0, 4, ref.mth(log_leaves[:4]), (), tuple(ref.subtree_proof(0, 4, log_leaves[: size - 1])),
        tampered).format())
    assert status == 403 and "bad_signature" in body, body
    # 403: a subtree cosignature line by the witness's own ML-DSA-44 key that does not verify.
    _, pq = verifiers(witness)
    forged = NoteSignature(pq.name, pq.key_id, bytes(2428))
    status, _, body = await witness.sign_subtree(subtree_request(log, 8, 12, cosigned, cosignatures=[forged]))
    assert status == 403 and "subtree cosignature" in body, body
    # 403: a log whose checkpoints the witness never cosigned, reference without its cosignature.
    idle = logs[IDLE]
    status, _, body = await witness.sign_subtree(subtree_request(idle, 0, 2, idle.checkpoint(4)))
    assert status == 403 and "unknown_checkpoint" in body, body
    # 409: an older checkpoint, signed by the log but not cosigned: the body is the latest
    # cosigned checkpoint, which the client can resend as the reference.
    status, ctype, body = await witness.sign_subtree(subtree_request(log, 0, 8, log.checkpoint(size - 2)))
    assert status == 409 and ctype.startswith("text/plain"), body
    assert body == cosigned
    status, _, body = await witness.sign_subtree(subtree_request(log, 0, 8, body))
    assert status == 200, body
    # 422: a proof that does not verify.
    proof = ref.subtree_proof(8, 12, log.leaves[:size])
    status, _, body = await witness.sign_subtree(
        subtree_request(log, 8, 12, cosigned, proof=[bytes(32), *proof[1:]]))
    assert status == 422 and "inconsistent_proof" in body, body
    status, _, body = await witness.sign_subtree(subtree_request(log, 8, 12, cosigned, proof=proof[:-1]))
    assert status == 422, body


async def test_sign_subtree_413(witness):
    status, _, body = await witness.sign_subtree(b"subtree 0 1\n" + b"A" * (2 << 20))
    assert status == 413, body


async def test_an_ed25519_only_witness_has_no_sign_subtree(tmp_path, pg_admin_url):
    url = await pg.create_database(pg_admin_url, "t_witness_edonly")
    log = ScriptedLog("test.example/ed-only-log")
    w = await start_witness(write_witness_config(tmp_path, "witness.test/ed", url, [log.vkey]))
    try:
        log.append(2)
        status, _, _ = await w.add_checkpoint(log.request(0, 2))
        assert status == 200
        status, _, body = await w.sign_subtree(subtree_request(log, 0, 1, log.checkpoint(2)))
        assert status == 404, body
        assert (await w.get_json("/status"))["sign_subtree"] is False
    finally:
        await w.close()
        await pg.drop_database(pg_admin_url, url)


async def test_ml_dsa_44_only_witness_and_extension_lines(tmp_path, pg_admin_url):
    """An ML-DSA-44 cosignature does not cover extension lines: an ML-DSA-44-only witness
    refuses (400) such a checkpoint before touching its state, a witness with both keys
    answers with its Ed25519 line only."""
    url = await pg.create_database(pg_admin_url, "t_witness_pqonly")
    log = ScriptedLog("test.example/pq-only-log")
    w = await start_witness(write_witness_config(tmp_path / "pq", "witness.test/pqonly", url, [log.vkey],
                                                 algorithms=("ml-dsa-44",)))
    try:
        log.append(5)
        lines = await cosign(w, log, 0, 5)
        [pq] = w.cosigner.verifiers()
        assert [(s.name, s.key_id) for s in lines] == [(pq.name, pq.key_id)]
        assert parse_vkey(w.vkey).sig_type == 0x06
        signer = Ed25519NoteSigner(log.origin, log.key._private_key)
        extended = sign_checkpoint(Checkpoint(log.origin, 5, log.root(5), ("extension",)), [signer])
        status, _, body = await w.add_checkpoint(AddCheckpointRequest(5, (), extended).format())
        assert status == 400 and "unsupported_checkpoint" in body, body
        status, _, served = await w.monitored_checkpoint(log.origin)
        assert status == 200 and "extension" not in served
    finally:
        await w.close()
        await pg.drop_database(pg_admin_url, url)


async def test_keys_may_be_added_never_swapped(tmp_path, pg_admin_url):
    """An Ed25519 witness adds an ML-DSA-44 key on the same database and keeps its state;
    a configuration whose keys are all new is another witness, and refused."""
    url = await pg.create_database(pg_admin_url, "t_witness_keys")
    log = ScriptedLog("test.example/keys-log")
    log.append(6)
    cfg = write_witness_config(tmp_path / "w", "witness.test/keys", url, [log.vkey])
    w = await start_witness(cfg)
    try:
        await cosign(w, log, 0, 6)
    finally:
        await w.close()
    both = write_witness_config(tmp_path / "w", "witness.test/keys", url, [log.vkey],
                                algorithms=("ed25519", "ml-dsa-44"))
    w = await start_witness(both)
    try:
        status, _ctype, body = await w.add_checkpoint(log.request(0, 6))
        assert (status, body) == (409, "6\n")  # the state is the same witness's
        assert len(await cosign(w, log, 6, 6)) == 2
    finally:
        await w.close()
    # Only the new ML-DSA-44 key: still a key this database knows.
    (tmp_path / "w" / "witness.key").rename(tmp_path / "w" / "witness.key.old")
    pq_only = write_witness_config(tmp_path / "w", "witness.test/keys", url, [log.vkey],
                                   algorithms=("ml-dsa-44",))
    w = await start_witness(pq_only)
    await w.close()
    # All keys new: refused.
    with pytest.raises(IdentityMismatchError, match="none of which is configured"):
        await start_witness(write_witness_config(tmp_path / "x", "witness.test/keys", url, [log.vkey],
                                                 algorithms=("ed25519", "ml-dsa-44")))
    await pg.drop_database(pg_admin_url, url)


async def test_cosigns_the_published_ml_dsa_44_log_checkpoint(tmp_path, pg_admin_url):
    """Interop: following the ML-DSA-44 log of filippo.io/torchwood's litewitness test
    (tests/testdata/pq), our witness accepts that exact add-checkpoint request."""
    vector = litewitness_vector()
    url = await pg.create_database(pg_admin_url, "t_witness_vector")
    w = await start_witness(write_witness_config(tmp_path, "witness.test/vector", url, [vector.log_vkey],
                                                 algorithms=("ed25519", "ml-dsa-44")))
    try:
        status, _, body = await w.add_checkpoint(vector.request)
        assert status == 200, body
        ed, pq = w.cosigner.verifiers()
        log_key = MLDSA44CosignatureVerifier.from_vkey(vector.log_vkey)
        status, _, served = await w.monitored_checkpoint("example.com/mldsa-log")
        assert status == 200
        opened = open_note(served, [log_key, ed, pq])
        assert len(opened.verified) == 3
        # A log signature that fails is a 403, as for Ed25519 logs.
        broken = vector.request.replace("td9FxQAAAAAAAAAAkjFv", "td9FxQAAAAAAAAAAkjFw", 1)
        status, _, body = await w.add_checkpoint(broken)
        assert status == 403, body
    finally:
        await w.close()
        await pg.drop_database(pg_admin_url, url)


def test_keygen_witness_ml_dsa_44(tmp_path):
    out = tmp_path / "w.key"
    done = subprocess.run([sys.executable, "-m", "logserver.cli", "keygen", "witness", "--name",
                           "witness.example/pq", "--algorithm", "ml-dsa-44", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    vkey = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("vkey:"))
    parsed = parse_vkey(vkey)
    assert (parsed.name, parsed.sig_type, len(parsed.public_key)) == ("witness.example/pq", 0x06, 1312)
    assert out.stat().st_mode & 0o077 == 0
    done = subprocess.run([sys.executable, "-m", "logserver.cli", "keygen", "witness", "--name",
                           "witness.example/pq", "--algorithm", "ecdsa-p256", "--out", str(tmp_path / "x.key")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "want ed25519 or ml-dsa-44" in done.stderr


async def test_a_version_1_witness_database_upgrades_with_its_key(tmp_path, pg_admin_url):
    """Migration 0002 on a database a version-1 witness (one Ed25519 key) used: the key
    becomes a recorded key, so the same witness starts, adds an ML-DSA-44 key and keeps
    its state."""
    import shutil

    import asyncpg

    from logserver.storage import migrate
    from logserver.witness.store import MIGRATIONS_TABLE, witness_migrations_dir

    url = await pg.create_database(pg_admin_url, "t_witness_upgrade")
    log = ScriptedLog("test.example/upgrade-log")
    log.append(3)
    v1 = tmp_path / "v1"
    v1.mkdir()
    shutil.copy(str(witness_migrations_dir() / "0001_witness.sql"), v1 / "0001_witness.sql")
    cfg = write_witness_config(tmp_path / "w", "witness.test/upgrade", url, [log.vkey])
    from logserver.witness import Cosigner, load_witness_config
    cosigner = Cosigner.load(load_witness_config(cfg, environ={}).keys, "witness.test/upgrade")
    [(_, public_key, vkey)] = cosigner.public_keys()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, v1, table=MIGRATIONS_TABLE, lock=0x6C6F6773_7769746E)
        await conn.execute("INSERT INTO witness_identity (name, public_key, vkey) VALUES ($1, $2, $3)",
                           "witness.test/upgrade", public_key, vkey)
        await conn.execute("INSERT INTO witness_logs (origin, tree_size, root, note) VALUES ($1, 3, $2, $3)",
                           log.origin, log.root(3), log.checkpoint(3))
    finally:
        await conn.close()
    both = write_witness_config(tmp_path / "w", "witness.test/upgrade", url, [log.vkey],
                                algorithms=("ed25519", "ml-dsa-44"))
    w = await start_witness(both)
    try:
        status, _, body = await w.add_checkpoint(log.request(0, 3))
        assert (status, body) == (409, "3\n")
        assert len(await cosign(w, log, 3, 3)) == 2
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM witness_keys") == 2
        finally:
            await conn.close()
    finally:
        await w.close()
        await pg.drop_database(pg_admin_url, url)


@pytest.mark.parametrize(("change", "match"), [
    ({"key": []}, "key: want a key file path or a list of one or two"),
    ({"key": ["a.key", "b.key", "c.key"]}, "list of one or two"),
    ({"key": ["a.key", "a.key"]}, "listed twice"),
    ({"monitoring_prefix": "m/"}, "monitoring_prefix"),
])
def test_witness_config_errors(tmp_path, change, match):
    from logserver.config import ConfigError
    from logserver.witness.config import witness_config_from_dict

    raw = {"name": "witness.test/cfg", "key": "a.key", "logs": [{"vkey": ScriptedLog("test.example/c").vkey}]}
    raw.update(change)
    with pytest.raises(ConfigError, match=match):
        witness_config_from_dict(raw, base=tmp_path)


def test_witness_follows_ed25519_and_ml_dsa_44_log_keys_only(tmp_path):
    from logserver.config import ConfigError
    from logserver.witness.config import witness_config_from_dict

    log = ScriptedLog("test.example/keys")
    vector = litewitness_vector()
    cfg = witness_config_from_dict({"name": "w.test/x", "key": "a.key",
                                    "logs": [{"vkey": log.vkey}, {"vkey": vector.log_vkey}]}, base=tmp_path)
    assert cfg.monitoring_prefix == cfg.prefix == ""
    assert {origin for origin, _ in cfg.logs} == {"test.example/keys", "example.com/mldsa-log"}
    with pytest.raises(ConfigError, match="want one of 0x01, 0x06"):
        witness_config_from_dict({"name": "w.test/x", "key": "a.key",
                                  "logs": [{"vkey": log.key.timestamp_vkey}]}, base=tmp_path)


async def test_ml_dsa_44_line_checks_out_with_a_verifier_written_from_the_spec(witness, log):
    """The witness's ML-DSA-44 line verified without logserver.formats: the vkey and the
    line decoded by hand, the cosigned_message built from the tlog-cosignature struct."""
    import struct

    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PublicKey

    size = len(log.leaves)
    log.append(1)
    status, _, body = await witness.add_checkpoint(log.request(size, size + 1))
    assert status == 200, body
    name, _, key_data = witness.cosigner.vkeys[1].split("+", 2)
    raw_key = base64.b64decode(key_data)
    assert raw_key[0] == 0x06
    key_id = hashlib.sha256(name.encode() + b"\n" + raw_key).digest()[:4]
    line = body.splitlines()[1]
    assert line.startswith("\u2014 " + name + " ")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == key_id and len(raw) == 4 + 8 + 2420
    timestamp = struct.unpack(">Q", raw[4:12])[0]
    origin = log.origin.encode()
    message = (b"subtree/v1\n\x00" + bytes([len(name)]) + name.encode() + struct.pack(">Q", timestamp)
               + bytes([len(origin)]) + origin + struct.pack(">QQ", 0, size + 1) + log.root(size + 1))
    MLDSA44PublicKey.from_public_bytes(raw_key[1:]).verify(raw[12:], message)
