"""kill -9 of the server at random points while it publishes under load (issue 19,
section 4), to a directory and to an S3 bucket (SeaweedFS) at once. Afterwards every
checkpoint ever seen on either target, by a reader polling it the whole time, is this
log's, has all its tiles and entry bundles, and is consistent with the final tree
(tests/static_tree.py, an independent verifier); neither target's checkpoint ever went
back; and every acknowledged entry is in the final tree."""
from __future__ import annotations

import asyncio
import random
import signal

import aiohttp
import pytest

from logserver.formats.checkpoint import parse_checkpoint
from logserver.formats.note import parse_note
from logserver.keys.log_key import LogKey
from publish_support import Load, read_file, wait_for
from server_harness import ORIGIN, ServerProcess, write_config
from static_servers import start_seaweedfs
from static_tree import check_checkpoint

KILLS = 4


BUCKET = "killed-log"


@pytest.fixture
def weed(tmp_path):
    server = start_seaweedfs(tmp_path / "weed")
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


async def test_kill_9_while_publishing_never_shows_a_broken_tree(database_url, tmp_path, monkeypatch, weed):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")  # for the server's S3 client (SeaweedFS has no identities)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    config = write_config(tmp_path, database_url, extra=(
        "[sequencer]\nmax_batch_delay_ms = 2\n"
        '[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "public"\n'
        f'[[publication.targets]]\nname = "bucket"\ntype = "s3"\nbucket = "{BUCKET}"\n'
        f'endpoint_url = "{weed.endpoint_url}"\n'))
    root = tmp_path / "public"
    bucket_url = weed.public_url(BUCKET)
    server = ServerProcess(config, database_url)
    load = Load(server.url)
    seen: list[bytes] = []  # every distinct checkpoint the directory's reader saw, in order
    seen_s3: list[bytes] = []  # ... and the bucket's
    watching = True

    async def watch() -> None:
        while watching:
            data = read_file(root, "checkpoint")
            if data is not None and (not seen or seen[-1] != data):
                seen.append(data)
            await asyncio.sleep(0.005)

    async def watch_s3() -> None:
        async with aiohttp.ClientSession() as session:
            while watching:
                async with session.get(bucket_url + "/checkpoint") as resp:
                    data = await resp.read() if resp.status == 200 else None
                if data is not None and (not seen_s3 or seen_s3[-1] != data):
                    seen_s3.append(data)
                await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    watcher_s3 = asyncio.create_task(watch_s3())
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
            async with aiohttp.ClientSession() as s:
                async with s.get(server.url + "/checkpoint") as resp:
                    served = await resp.read()
                async with s.get(bucket_url + "/checkpoint") as resp:
                    in_bucket = await resp.read()
            return read_file(root, "checkpoint") == served == in_bucket

        await wait_for("both targets to catch up after the last restart", caught_up)
        await asyncio.sleep(0.1)  # the readers see it too
    finally:
        watching = False
        load.stop()
        await asyncio.gather(watcher, watcher_s3, loader, return_exceptions=True)
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
    async with aiohttp.ClientSession() as session:
        async def read_s3(path: str) -> bytes | None:
            async with session.get(f"{bucket_url}/{path}") as resp:
                return await resp.read() if resp.status == 200 else None

        sizes_s3 = [(await check_checkpoint(read_s3, note, verifiers, final.leaf_hashes)).size for note in seen_s3]
    assert sizes_s3 == sorted(sizes_s3), f"seed {seed}: the bucket's checkpoint went back: {sizes_s3}"
    assert seen_s3[-1] == seen[-1], f"seed {seed}: the targets ended on different checkpoints"
