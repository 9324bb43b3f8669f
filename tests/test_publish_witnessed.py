"""Under a witness policy the static tree's checkpoint is the witness-cosigned one
(issue 19, section 1): the directory's checkpoint is the bytes of /checkpoint, with the
witness's cosignature line, and no checkpoint without it ever appears there."""
from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives import serialization

import pg
from logserver.formats import parse_note
from logserver.keys.log_key import LogKey, generate_log_key_pem
from publish_support import envelopes, read_file, submit, wait_for
from server_harness import ORIGIN, start_server, write_config
from witness_harness import start_witness, write_witness_config


@pytest.fixture(scope="module")
async def witnessed(pg_admin_url, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("publish-witnessed")
    pem = generate_log_key_pem()
    log_vkey = LogKey(ORIGIN, serialization.load_pem_private_key(pem, None)).vkey
    db = await pg.create_database(pg_admin_url, "t_publish_witness")
    witness = await start_witness(write_witness_config(base / "w1", "witness.test/w1", db, [log_vkey], prefix="/wit"))
    (base / "log").mkdir()
    (base / "log" / "witnesses.policy").write_text(
        f"witness w1 {witness.vkey} {witness.submission_url}\nquorum w1\n")
    extra = ('witness_policy = "witnesses.policy"\n\n[witnessing]\nrequest_timeout_s = 2\nmax_wait_s = 5\n\n'
             '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n')
    server = await start_server(write_config(base / "log", database_url, extra=extra, key_pem=pem))
    yield server, witness, base / "log" / "public"
    await server.close()
    await witness.close()
    await pg.drop_database(pg_admin_url, db)


async def test_the_published_checkpoint_is_the_cosigned_one(witnessed):
    server, witness, root = witnessed
    seen: list[bytes] = []
    watching = True

    async def watch() -> None:
        while watching:
            data = read_file(root, "checkpoint")
            if data is not None and (not seen or seen[-1] != data):
                seen.append(data)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        for chunk in range(3):
            await submit(server.session, server.url, envelopes(20, f"witnessed-{chunk}"))

        async def caught_up() -> bool:
            async with server.session.get("/checkpoint") as resp:
                return read_file(root, "checkpoint") == await resp.read()

        await wait_for("the directory to hold the cosigned checkpoint", caught_up)
    finally:
        watching = False
        await watcher
    final = read_file(root, "checkpoint")
    if final is not None and (not seen or seen[-1] != final):
        seen.append(final)  # the watcher's last look may have come just before the last write
    # 60 bundles, and one HEADS leaf per batch they came in (docs/fleet-heads.md).
    assert seen and 60 < int(seen[-1].split(b"\n")[1]) <= 120
    for note in seen:
        names = {s.name for s in parse_note(note).signatures}
        assert names == {ORIGIN, witness.cosigner.name}, f"a checkpoint without the witness's line: {note!r}"
