"""Outages around static publication (issue 19, section 4), each with real servers:

* the S3 target (SeaweedFS) is down for 10 s, and a directory target cannot be written
  for 10 s (its file system remounted read-only under nginx): submissions keep getting
  201, the lag metric grows and /readyz says so past its bound, the publisher catches
  up by itself, and every checkpoint a reader saw on the target at any moment checks
  out (tests/static_tree.py);
* PostgreSQL is down: every static read through nginx and the bucket succeeds, and the
  published checkpoint stays the last good one.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

import pg
from logserver.keys.log_key import LogKey
from publish_support import Load, envelopes, submit, tree_paths, wait_for
from server_harness import ORIGIN, ServerProcess, write_config
from static_servers import start_nginx, start_seaweedfs
from static_tree import check_checkpoint
from test_client_support import write_trust_policy
from test_fault_db_outage import PrivatePostgres

pytestmark = pytest.mark.fault

OUTAGE_S = 10.0
MAX_LAG_S = 3
BUCKET = "outage-log"


@pytest.fixture
async def fresh_db(pg_admin_url):
    """A database of this test's own (each test starts a log with a new key)."""
    url = await pg.create_database(pg_admin_url, "t_publish_outage")
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture
def s3_env(monkeypatch):
    # Inherited by the server process (server_harness.server_env copies os.environ).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")


def config_with(directory: Path, database_url: str, targets: str) -> Path:
    return write_config(directory, database_url, extra=(
        f"[publication]\nmax_lag_s = {MAX_LAG_S}\n{targets}\n"
        "[sequencer]\ncheckpoint_interval_s = 1\n"))


def s3_target(endpoint: str) -> str:
    return f'[[publication.targets]]\nname = "bucket"\ntype = "s3"\nbucket = "{BUCKET}"\nendpoint_url = "{endpoint}"\n'


def dir_target(path: Path) -> str:
    return f'[[publication.targets]]\nname = "dir"\ntype = "directory"\npath = "{path}"\n'


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as resp:
        return resp.status, await resp.read()


async def metric(session: aiohttp.ClientSession, server: ServerProcess, name: str, target: str) -> float:
    _, body = await get(session, server.url + "/metrics")
    m = re.search(rf'^{name}{{target="{target}"}} (\S+)$', body.decode(), re.M)
    assert m is not None, f"{name} for {target} not in /metrics"
    return float(m.group(1))


async def first_checkpoint(base: str) -> None:
    """Wait until the target holds a checkpoint (the first pass runs just after start-up)."""
    async with aiohttp.ClientSession() as session:
        async def there() -> bool:
            return (await get(session, base + "/checkpoint"))[0] == 200
        await wait_for(f"a checkpoint at {base}", there)


class Reader:
    """Polls a static checkpoint URL the whole time, keeping every distinct one seen."""

    def __init__(self, url: str):
        self.url = url
        self.seen: list[bytes] = []
        self.failures: list[tuple[int, int]] = []  # (read number, status)
        self.reads = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                self.reads += 1
                try:
                    status, data = await get(session, self.url + "/checkpoint")
                except (TimeoutError, aiohttp.ClientError):
                    status, data = 0, b""
                if status != 200:
                    self.failures.append((self.reads, status))
                elif not self.seen or self.seen[-1] != data:
                    self.seen.append(data)
                await asyncio.sleep(0.02)

    def __enter__(self) -> Reader:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def check_all_seen(reader: Reader, read: Callable[[str], Awaitable[bytes | None]], key: Path) -> None:
    verifiers = LogKey.load(key, ORIGIN).verifiers()
    final = await check_checkpoint(read, reader.seen[-1], verifiers)
    sizes = [(await check_checkpoint(read, note, verifiers, final.leaf_hashes)).size for note in reader.seen]
    assert sizes == sorted(sizes), f"the target's checkpoint went back: {sizes}"


def url_reader(session: aiohttp.ClientSession, base: str) -> Callable[[str], Awaitable[bytes | None]]:
    async def read(path: str) -> bytes | None:
        status, data = await get(session, f"{base}/{path}")
        return data if status == 200 else None
    return read


async def ride_out_outage(server: ServerProcess, target: str, load: Load, down: Callable[[], None],
                          up: Callable[[], None]) -> None:
    """Take the target down for OUTAGE_S under load, check lag and /readyz, bring it back,
    and wait until the target has caught up."""
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(1.0)  # some publishing first
        before = len(load.acknowledged)
        await asyncio.to_thread(down)
        try:
            await asyncio.sleep(MAX_LAG_S + 2)
            assert await metric(session, server, "logserver_publication_lag_entries", target) > 0
            assert await metric(session, server, "logserver_publication_lag_seconds", target) > MAX_LAG_S
            status, body = await get(session, server.url + "/readyz")
            assert status == 503 and b"publication_behind" in body and target.encode() in body, body
            await asyncio.sleep(OUTAGE_S - MAX_LAG_S - 2)
            assert len(load.acknowledged) > before, "no submission was acknowledged during the outage"
        finally:
            await asyncio.to_thread(up)

        async def caught_up() -> bool:
            return await metric(session, server, "logserver_publication_lag_entries", target) == 0 \
                and (await get(session, server.url + "/readyz"))[0] == 200

        await wait_for(f"target {target} to catch up", caught_up, timeout_s=60)
        assert await metric(session, server, "logserver_publication_failures_total", target) > 0


async def test_s3_target_down_for_10_s(fresh_db, tmp_path, s3_env):
    database_url = fresh_db
    weed = start_seaweedfs(tmp_path / "weed")
    server = None
    try:
        weed.create_bucket(BUCKET)
        server = ServerProcess(config_with(tmp_path, database_url, s3_target(weed.endpoint_url)), database_url)
        await server.start()
        load = Load(server.url, clients=4, fleet="s3-outage")
        loading = asyncio.create_task(load.run())
        await first_checkpoint(weed.public_url(BUCKET))
        with Reader(weed.public_url(BUCKET)) as reader:
            await ride_out_outage(server, "bucket", load, weed.stop, weed.start)
            load.stop()
            await loading
            await asyncio.sleep(0.5)
        assert load.refused == [], f"submissions refused while the target was down: {load.refused}"
        async with aiohttp.ClientSession() as session:
            await check_all_seen(reader, url_reader(session, weed.public_url(BUCKET)), tmp_path / "log.key")
    finally:
        if server is not None:
            await server.stop()
            server.kill_now()
        weed.stop()


class ReadOnlyMount:
    """A tmpfs of our own whose file system can be made read-only and writable again
    (as root: the tests run as root here; nginx reads it throughout)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="logserver-ro-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(self.path)], check=True)

    def read_only(self) -> None:
        # The kernel refuses the remount (EBUSY, "mount point is busy") while a file on
        # it is open for writing: the publisher may be between creating a temp file and
        # closing it. Its writes take milliseconds, so try again for a few seconds.
        for _ in range(100):
            done = subprocess.run(["mount", "-o", "remount,ro", str(self.path)], capture_output=True, text=True)
            if done.returncode == 0:
                return
            if "busy" not in done.stderr:
                break
            time.sleep(0.05)
        raise AssertionError(f"remounting {self.path} read-only failed: {done.stderr.strip()}")

    def writable(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)

    def remove(self) -> None:
        subprocess.run(["umount", str(self.path)], check=False)
        os.rmdir(self.path)


async def test_directory_target_unwritable_for_10_s(fresh_db, tmp_path):
    database_url = fresh_db
    assert os.geteuid() == 0, "mounting a tmpfs needs root (CI here runs as root)"
    mount = ReadOnlyMount()
    server = nginx = None
    try:
        public = mount.path / "public"
        server = ServerProcess(config_with(tmp_path, database_url, dir_target(public)), database_url)
        await server.start()
        nginx = start_nginx(public, tmp_path / "nginx")
        load = Load(server.url, clients=4, fleet="dir-outage")
        loading = asyncio.create_task(load.run())
        await first_checkpoint(nginx.url)
        with Reader(nginx.url) as reader:
            await ride_out_outage(server, "dir", load, mount.read_only, mount.writable)
            load.stop()
            await loading
            await asyncio.sleep(0.5)
        assert load.refused == [], f"submissions refused while the target was down: {load.refused}"
        assert reader.failures == [], f"of {reader.reads} reads through nginx, these failed: {reader.failures}"
        async with aiohttp.ClientSession() as session:
            await check_all_seen(reader, url_reader(session, nginx.url), tmp_path / "log.key")
    finally:
        if nginx is not None:
            nginx.stop()
        if server is not None:
            await server.stop()
            server.kill_now()
        mount.remove()


async def test_static_reads_survive_a_database_outage(tmp_path, s3_env):
    pg = await asyncio.to_thread(PrivatePostgres)
    weed = start_seaweedfs(tmp_path / "weed")
    server = nginx = None
    try:
        weed.create_bucket(BUCKET)
        config = config_with(tmp_path, pg.url, s3_target(weed.endpoint_url) + dir_target(tmp_path / "public"))
        server = ServerProcess(config, pg.url)
        await server.start()
        nginx = start_nginx(tmp_path / "public", tmp_path / "nginx")
        bases = [nginx.url, weed.public_url(BUCKET)]
        async with aiohttp.ClientSession() as session:
            await submit(session, server.url, envelopes(300, "pg-outage"))

            async def caught_up() -> bool:
                served = (await get(session, server.url + "/checkpoint"))[1]
                return [(await get(session, b + "/checkpoint"))[1] for b in bases] == [served, served]

            await wait_for("both targets to hold the served checkpoint", caught_up)
            last_good = (await get(session, bases[0] + "/checkpoint"))[1]
            # 300 bundles and a HEADS leaf per batch: the tree the served checkpoint names.
            size = int(last_good.split(b"\n")[1])
            assert size > 300
            paths = ["checkpoint", *tree_paths(size)]
            await asyncio.to_thread(pg.stop)
            try:
                statuses = [(await get(session, f"{b}/{p}"))[0] for _ in range(3) for b in bases for p in paths]
                status, _ = await get(session, server.url + "/readyz")
                assert status == 503  # the log's own readiness says the database is gone ...
                assert statuses == [200] * len(statuses)  # ... while every static read succeeds
                key = LogKey.load(tmp_path / "log.key", ORIGIN)
                policy = write_trust_policy(tmp_path / "client", key.vkey)
                for i, b in enumerate(bases):
                    assert (await get(session, b + "/checkpoint"))[1] == last_good
                    await check_checkpoint(url_reader(session, b), last_good, key.verifiers())
                    # The monitor, pointed at the static tree alone, verifies the whole log.
                    done = await asyncio.to_thread(subprocess.run, [
                        sys.executable, "-m", "logserver.cli", "monitor", "--tiles", b, "--policy", str(policy),
                        "--state", str(tmp_path / f"monitor-{i}"), "--once"], capture_output=True, text=True,
                        timeout=120)
                    assert done.returncode == 0, done.stdout + done.stderr
                    summary = json.loads(done.stdout.splitlines()[-1])
                    assert summary["alerts"] == {} and summary["caught_up"], summary
                    assert summary["verified_size"] == size and summary["entries_verified"] == size, summary
            finally:
                await asyncio.to_thread(pg.start)
    finally:
        if nginx is not None:
            nginx.stop()
        if server is not None:
            await server.stop()
            server.kill_now()
        weed.stop()
        await asyncio.to_thread(pg.remove)
