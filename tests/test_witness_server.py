"""`logserver witness`: every add-checkpoint outcome of C2SP tlog-witness, the
atomic old-size check (the spec's rollback race), evidence and persistence."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import asyncpg
import pytest

import pg
from logserver.formats import AddCheckpointRequest, parse_signature_lines, timestamp_of
from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.witness.app import WITNESS_STORE
from witness_harness import ScriptedLog, start_witness, write_witness_config

ORIGIN = "test.example/witnessed-log"


@pytest.fixture(scope="module")
async def log():
    return ScriptedLog(ORIGIN)


@pytest.fixture(scope="module")
async def witness(tmp_path_factory, database_url, log):
    cfg = write_witness_config(tmp_path_factory.mktemp("w1"), "witness.test/w1", database_url, [log.vkey],
                               prefix="/w")
    w = await start_witness(cfg)
    yield w
    await w.close()


def cosigner_verifies(witness, note: str, lines: str) -> None:
    """The response verifies with the logserver cosignature verifier (the independent
    check from the spec text is in test_witness_interop.py)."""
    sigs = parse_signature_lines(lines)
    assert [s.name for s in sigs] == [witness.cosigner.name]
    [verifier] = witness.cosigner.verifiers()
    body = parse_note(note).text.encode()
    for s in sigs:
        assert s.key_id == verifier.key_id
        verifier.verify(body, s.signature)


async def stored_size(witness, origin=ORIGIN) -> int:
    status = await witness.get_json("/status")
    return {entry["origin"]: entry["tree_size"] for entry in status["logs"]}[origin]


async def test_first_checkpoint_then_extension(witness, log):
    log.append(5)
    note = log.checkpoint(5)
    status, _ctype, body = await witness.add_checkpoint(AddCheckpointRequest(0, (), note).format())
    assert status == 200, body
    cosigner_verifies(witness, note, body)
    assert await stored_size(witness) == 5
    log.append(7)
    body_text = log.request(5, 12)
    status, _, body = await witness.add_checkpoint(body_text)
    assert status == 200, body
    cosigner_verifies(witness, log.checkpoint(12), body)
    assert await stored_size(witness) == 12
    # Same size, same root: cosigned again (an idempotent retry).
    status, _, body = await witness.add_checkpoint(log.request(12, 12))
    assert status == 200, body


async def test_wrong_old_size_is_409_with_the_size(witness, log):
    size = await stored_size(witness)
    log.append(3)
    for old in (0, size - 1, size + 1):
        status, ctype, body = await witness.add_checkpoint(log.request(old, len(log.leaves)))
        assert status == 409, body
        assert ctype == "text/x.tlog.size"
        assert body == f"{size}\n"
    assert await stored_size(witness) == size


async def test_forged_checkpoint_is_403(witness, log):
    size = await stored_size(witness)
    impostor = ScriptedLog(ORIGIN)  # same origin, another key
    impostor.leaves = list(log.leaves)
    status, _, body = await witness.add_checkpoint(impostor.request(size, len(log.leaves)))
    assert status == 403, body
    # A trusted key's signature line over another text: the known key fails, 403 too.
    note = log.checkpoint(len(log.leaves))
    parsed = parse_note(note)
    tampered = parsed.text.replace(str(len(log.leaves)), str(len(log.leaves) + 1), 1) + "\n" + "".join(
        s.line() for s in parsed.signatures)
    # (The proof is missing too: the signature check comes first.)
    status, _, body = await witness.add_checkpoint(f"old {size}\n\n{tampered}")
    assert status == 403, body
    assert await stored_size(witness) == size


async def test_unknown_origin_is_404(witness):
    other = ScriptedLog("test.example/unknown-log")
    other.append(2)
    status, _, body = await witness.add_checkpoint(other.request(0, 2))
    assert status == 404, body
    assert "unknown_log" in body


async def test_bad_proof_is_422_and_kept_as_evidence(witness, log):
    size = await stored_size(witness)
    log.append(4)
    new = len(log.leaves)
    proof = list(log.proof(size, new))
    proof[0] = bytes(32)
    body_text = AddCheckpointRequest(size, tuple(proof), log.checkpoint(new)).format()
    status, _, body = await witness.add_checkpoint(body_text)
    assert status == 422, body
    assert await stored_size(witness) == size
    evidence = (await witness.get_json("/evidence"))["evidence"]
    kept = [e for e in evidence if e["kind"] == "inconsistent_proof"]
    assert kept and kept[-1]["request"] == body_text
    assert kept[-1]["cosigned_size"] == size and kept[-1]["checkpoint_size"] == new
    # A tree that does not extend the cosigned one: a correct proof of the other tree
    # still fails against the root the witness holds.
    forked = [b"fork" + leaf for leaf in log.leaves]
    status, _, body = await witness.add_checkpoint(log.request(size, new, forked))
    assert status == 422, body


async def test_other_root_at_the_cosigned_size_is_409_and_evidence(witness, log):
    size = await stored_size(witness)
    forked = [b"fork2" + leaf for leaf in log.leaves]
    body_text = AddCheckpointRequest(size, (), log.checkpoint(size, forked)).format()
    status, ctype, body = await witness.add_checkpoint(body_text)
    assert (status, ctype, body) == (409, "text/x.tlog.size", f"{size}\n")
    evidence = (await witness.get_json("/evidence"))["evidence"]
    assert any(e["kind"] == "root_conflict" and e["request"] == body_text for e in evidence)
    # Kept once however often it is sent.
    await witness.add_checkpoint(body_text)
    evidence = (await witness.get_json("/evidence"))["evidence"]
    assert sum(e["request"] == body_text for e in evidence) == 1


@pytest.mark.parametrize("body", [
    b"",
    b"old 1\n",
    b"old 01\n\nx\n",
    b"old -1\n\n",
    b"new 0\n\n",
    b"\xff\xfe",
    b"old 0\nAAAA\n\n",
])
async def test_malformed_bodies_are_400(witness, body):
    status, _, text = await witness.add_checkpoint(body)
    assert status == 400, text


async def test_old_size_above_checkpoint_size_is_400(witness, log):
    size = len(log.leaves)
    status, _, body = await witness.add_checkpoint(f"old {size + 1}\n\n{log.checkpoint(size)}")
    assert status == 400, body


async def test_rollback_race_never_rolls_back(witness, log):
    """tlog-witness's race: requests for sizes N and N+K checked concurrently against
    the same stored size. Exactly one wins each round; the stored size never drops."""
    for _ in range(8):
        base = await stored_size(witness)
        log.append(9)
        n, nk = base + 3, base + 9
        bodies = [log.request(base, n), log.request(base, nk)] * 3
        results = await asyncio.gather(*(witness.add_checkpoint(b) for b in bodies))
        statuses = [r[0] for r in results]
        assert statuses.count(200) == 1, statuses
        winner = bodies[statuses.index(200)]
        win_size = parse_checkpoint(parse_note(winner.split("\n\n", 1)[1]).text).size
        for (status, ctype, body) in results:
            if status != 200:
                assert (status, ctype) == (409, "text/x.tlog.size")
                assert body in (f"{base}\n", f"{win_size}\n")
        assert await stored_size(witness) == win_size >= base
        if win_size == n:
            # The loser may now extend from the winner: N -> N+K with a proof.
            status, _, body = await witness.add_checkpoint(log.request(n, nk))
            assert status == 200, body
        assert await stored_size(witness) == nk


async def test_state_is_durable_and_only_moves_forward(witness, log, database_url, tmp_path):
    size = await stored_size(witness)
    # A restarted witness on the same database continues from the committed state.
    again = await start_witness(witness.config_path)
    try:
        status, _ctype, body = await again.add_checkpoint(log.request(0, size))
        assert (status, body) == (409, f"{size}\n")
    finally:
        await again.close()
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("UPDATE witness_logs SET tree_size = tree_size - 1 WHERE origin = $1", ORIGIN)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await conn.execute("DELETE FROM witness_evidence")
    finally:
        await conn.close()


async def test_another_key_on_the_same_database_refuses_to_start(witness, tmp_path):
    text = witness.config_path.read_text()
    other = tmp_path / "other"
    other.mkdir()
    url = text.split('database_url = "')[1].split('"')[0]
    cfg = write_witness_config(other, "witness.test/w1", url, [ScriptedLog(ORIGIN).vkey])
    from logserver.storage import IdentityMismatchError
    with pytest.raises(IdentityMismatchError):
        await start_witness(cfg)


async def test_shares_a_database_with_a_log(pg_admin_url, tmp_path):
    """Separate migration table and numbering: the log's migrations and the witness's
    both apply to one database."""
    from logserver.storage import migrate
    from logserver.witness.store import migrate_witness

    url = await pg.create_database(pg_admin_url, "t_witness_shared")
    try:
        conn = await asyncpg.connect(url)
        try:
            log_applied = await migrate(conn)
            witness_applied = await migrate_witness(conn)
            assert log_applied and witness_applied
            assert await migrate(conn) == [] and await migrate_witness(conn) == []
        finally:
            await conn.close()
    finally:
        await pg.drop_database(pg_admin_url, url)


async def test_a_smaller_tree_is_never_stamped_after_a_larger_one(pg_admin_url, tmp_path):
    """tlog-cosignature: a cosignature states that "as of the specified time" its tree
    is the largest the witness has observed. Request A commits size 4; before A goes
    on, request B commits size 10 and is cosigned while the clock moves on. A's
    cosignature must not carry a later time than B's."""
    url = await pg.create_database(pg_admin_url, "t_witness_time")
    log = ScriptedLog("test.example/timed-log")
    log.append(10)
    clock_now = [1_700_000_000.0]
    w = await start_witness(write_witness_config(tmp_path, "witness.test/timed", url, [log.vkey]),
                            clock=lambda: clock_now[0])
    try:
        store = w.server.app[WITNESS_STORE]
        real_locked = store.locked
        pending, b_results = [log.request(4, 10)], []

        @asynccontextmanager
        async def locked(origin):
            async with real_locked(origin) as tx:
                yield tx
            if pending:  # A's state is committed: run B to the end before A continues
                clock_now[0] += 10
                b_results.append(await w.add_checkpoint(pending.pop()))
                clock_now[0] += 10

        store.locked = locked
        status_a, _, lines_a = await w.add_checkpoint(log.request(0, 4))
        [(status_b, _, lines_b)] = b_results
        assert (status_a, status_b) == (200, 200), (lines_a, lines_b)
        time_a = timestamp_of(parse_signature_lines(lines_a)[0].signature)
        time_b = timestamp_of(parse_signature_lines(lines_b)[0].signature)
        assert time_a <= time_b == 1_700_000_010
        assert await stored_size(w, "test.example/timed-log") == 10
    finally:
        await w.close()
        await pg.drop_database(pg_admin_url, url)
