"""kill -9 of the server at random points while it publishes under load (issue 19,
section 4). Afterwards every checkpoint ever seen on the target, by a reader polling
it the whole time, is this log's, has all its tiles and entry bundles, and is
consistent with the final tree (tests/static_tree.py, an independent verifier); the
target's checkpoint never went back; and every acknowledged entry is in the final tree."""
from __future__ import annotations

import asyncio
import random
import signal

import aiohttp

from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.keys.log_key import LogKey
from publish_support import Load, read_file, wait_for
from server_harness import ORIGIN, ServerProcess, write_config
from static_tree import check_checkpoint

KILLS = 4


async def test_kill_9_while_publishing_never_shows_a_broken_tree(database_url, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    config = write_config(tmp_path, database_url, extra=(
        "[sequencer]\nmax_batch_delay_ms = 2\n"
        '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n'))
    root = tmp_path / "public"
    server = ServerProcess(config, database_url)
    load = Load(server.url)
    seen: list[bytes] = []  # every distinct checkpoint the reader saw, in order
    watching = True

    async def watch() -> None:
        while watching:
            data = read_file(root, "checkpoint")
            if data is not None and (not seen or seen[-1] != data):
                seen.append(data)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    loader = asyncio.create_task(load.run())
    try:
        for _ in range(KILLS):
            await server.start()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(server.proc.wait)
        await server.start()
        await asyncio.sleep(0.5)
        load.stop()
        await loader

        async def caught_up() -> bool:
            async with aiohttp.ClientSession() as s, s.get(server.url + "/checkpoint") as resp:
                return read_file(root, "checkpoint") == await resp.read()

        await wait_for("the target to catch up after the last restart", caught_up)
    finally:
        watching = False
        load.stop()
        await asyncio.gather(watcher, loader, return_exceptions=True)
        await server.stop()
        server.kill_now()

    verifiers = LogKey.load(tmp_path / "log.key", ORIGIN).verifiers()

    async def read(path: str) -> bytes | None:
        return read_file(root, path)

    final = await check_checkpoint(read, seen[-1], verifiers)
    assert len(load.acknowledged) >= 50, f"seed {seed}: too little load to mean anything"
    for leaf_hash, index in load.acknowledged.items():
        assert index < final.size and final.leaf_hashes[index].hex() == leaf_hash, f"seed {seed}: entry {index}"
    sizes = []
    for note in seen:
        checked = await check_checkpoint(read, note, verifiers, final.leaf_hashes)
        sizes.append(checked.size)
    assert sizes == sorted(sizes), f"seed {seed}: the target's checkpoint went back: {sizes}"
    assert len(seen) >= KILLS, f"seed {seed}: the reader saw only {len(seen)} checkpoints"
    assert parse_checkpoint(parse_note(seen[-1]).text).size == final.size
