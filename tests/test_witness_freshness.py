"""Cosigned freshness (issue 20, section 4): an idle witnessed log keeps its published
checkpoint fresh. Once the published checkpoint was signed `witnessing.refresh_s` ago,
the log asks its witness to cosign its newest re-sign of the same size; the published
checkpoint (/checkpoint, and the static target's) then carries newer witness
timestamps for the same tree, stored in the one forward-only refresh row (migration
0005), with no new published row; the schema refuses a refresh that goes back or that
re-signs another tree."""
from __future__ import annotations

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization

import pg
from logserver.api.keys import STORE
from logserver.formats import parse_note
from logserver.formats.cosignature import timestamp_of
from logserver.keys.log_key import LogKey, generate_log_key_pem
from publish_support import envelopes, read_file, submit, wait_for
from server_harness import ORIGIN, start_server, write_config
from witness_harness import start_witness, write_witness_config


@pytest.fixture(scope="module")
async def fresh_log(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("freshness")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    db = await pg.create_database(pg_admin_url, "t_freshness_witness")
    witness = await start_witness(write_witness_config(base / "w1", "witness.test/w1", db, [log_vkey], prefix="/wit"))
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(
        f"witness w1 {witness.vkey} {witness.submission_url}\nquorum w1\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 2\nmax_wait_s = 5\n'
             'refresh_s = 1\n\n[sequencer]\ncheckpoint_interval_s = 0.2\n\n'
             '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n')
    server = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    yield server, witness, base / "log" / "public"
    await server.close()
    await witness.close()
    await pg.drop_database(pg_admin_url, db)


def witness_time(note: str, witness) -> int:
    (line,) = [s for s in parse_note(note).signatures if s.name == witness.cosigner.name]
    return timestamp_of(line.signature)


async def served(server) -> str:
    async with server.session.get("/checkpoint") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def test_an_idle_witnessed_log_refreshes_its_cosigned_checkpoint(fresh_log):
    server, witness, public = fresh_log
    receipts = await submit(server.session, server.url, envelopes(5, "fresh-fleet"))
    first = await served(server)
    size = int(first.split("\n")[1])
    # The five bundles, each batch of them followed by its HEADS leaf (docs/fleet-heads.md).
    assert size == max(r["tree_size"] for r in receipts)
    async with server.session.get("/v1/entries", params={"start": 0, "end": size}) as resp:
        items = (await resp.json())["entries"]
    assert len(items) == size and "heads" in items[-1]
    assert sorted(i["index"] for i in items if "envelope" in i) == sorted(r["index"] for r in receipts)
    assert len(receipts) == 5 and size > 5
    pool = server.app[STORE].pool
    published_rows = await pool.fetchval("SELECT count(*) FROM published_checkpoints")

    async def refreshed_twice() -> bool:
        note = await served(server)
        return witness_time(note, witness) >= witness_time(first, witness) + 2

    await wait_for("two refreshes of the cosigned checkpoint", refreshed_twice, timeout_s=30)
    now = await served(server)
    assert now.split("\n\n")[0] == first.split("\n\n")[0]  # the same tree (origin, size, root)
    assert await pool.fetchval("SELECT count(*) FROM published_checkpoints") == published_rows
    row = await pool.fetchrow("SELECT * FROM published_refresh")
    assert row["tree_size"] == size and row["quorum_met"]

    async def static_refreshed() -> bool:
        data = read_file(public, "checkpoint")
        return data is not None and witness_time(data.decode(), witness) > witness_time(first, witness)

    await wait_for("the static target to carry a refreshed checkpoint", static_refreshed)

    # The log grows: a new size is published with its first signature, cosigned.
    await submit(server.session, server.url, envelopes(1, "fresh-fleet-2"))
    grown = await served(server)
    # A bundle submitted alone: it and its batch's HEADS leaf.
    assert int(grown.split("\n")[1]) == size + 2 and witness_time(grown, witness) >= witness_time(now, witness)


async def test_the_refresh_row_only_moves_forward_and_names_a_stored_tree(fresh_log):
    server, _, _ = fresh_log
    pool = server.app[STORE].pool
    row = await pool.fetchrow("SELECT * FROM published_refresh")
    assert row is not None
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="only moves forward"):
        await pool.execute("UPDATE published_refresh SET signed_at_ms = signed_at_ms - 1")
    other = await pool.fetchrow("SELECT id, note FROM checkpoints WHERE tree_size = 0")
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="must re-sign stored checkpoint"):
        await pool.execute("UPDATE published_refresh SET note = $1, signed_at_ms = signed_at_ms + 1000000",
                           other["note"])
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="forbidden"):
        await pool.execute("DELETE FROM published_refresh")
